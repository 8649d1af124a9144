//! Retention: what has expired is deleted for good.
//!
//! A share is due when the patient deleted it (at once), when it expired or was revoked more than
//! `retention.grace_secs` ago (the grace lets the clinic still extend it), or when it is a draft
//! left for a day. Purging a share removes its sessions, its reports and its links to instances;
//! then every instance of its studies that nothing else holds (no transfer, no other share) is
//! deleted — in one transaction the study's data key goes first when no instance of the study is
//! left (crypto-shredding: the blobs can never be decrypted again), then the index rows; the
//! blobs follow, listed in `pending_blobs` first so that the orphan sweeper finishes the job if
//! the hub dies in between.
//!
//! Safe on several hubs at once: a share is claimed by stamping `purged_at` inside the purge's
//! transaction, so exactly one hub purges it; running it again finds nothing to do.

use sqlx::Row;

use crate::audit::{self, Event};
use crate::db::now_ms;
use crate::state::AppState;

/// Purges every share that is due. Returns how many were purged.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    let now = now_ms();
    let grace = state.config.retention.grace_secs as i64 * 1000;
    let rows = sqlx::query(
        "SELECT id FROM shares WHERE purged_at IS NULL AND ( \
           state = 'deleted' \
           OR (state = 'active' AND expires_at + $1 <= $2) \
           OR (state = 'revoked' AND (revoked_at + $1 <= $2 OR expires_at + $1 <= $2)) \
           OR (state = 'draft' AND created_at + 86400000 <= $2)) \
         ORDER BY expires_at LIMIT 200",
    )
    .bind(grace)
    .bind(now)
    .fetch_all(&state.db)
    .await?;
    let mut purged = 0;
    for r in rows {
        let id: String = r.try_get(0)?;
        if purge_share(state, &id).await? {
            purged += 1;
        }
    }
    if purged > 0 {
        tracing::info!(purged, "retention purged shares");
    }
    Ok(purged)
}

/// Purges one share and the data only it held. `false` when it was already purged.
pub async fn purge_share(state: &AppState, id: &str) -> anyhow::Result<bool> {
    let now = now_ms();
    let mut tx = state.db_write.begin().await?;
    let claimed = sqlx::query("UPDATE shares SET purged_at = $1 WHERE id = $2 AND purged_at IS NULL")
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    if claimed.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    let studies: Vec<String> = sqlx::query_scalar("SELECT DISTINCT study_uid FROM share_instances WHERE share_id = $1").bind(id).fetch_all(&mut *tx).await?;
    let mut blobs: Vec<String> = sqlx::query_scalar("SELECT blob_path FROM share_reports WHERE share_id = $1").bind(id).fetch_all(&mut *tx).await?;
    for sql in [
        "DELETE FROM share_sessions WHERE share_id = $1",
        "DELETE FROM share_reports WHERE share_id = $1",
        "DELETE FROM share_instances WHERE share_id = $1",
    ] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    let mut shredded = 0;
    for study in &studies {
        let unheld = sqlx::query(
            "SELECT sop_instance_uid, blob_path FROM instances WHERE study_uid = $1 \
             AND sop_instance_uid NOT IN (SELECT sop_instance_uid FROM transfer_instances WHERE study_uid = $1) \
             AND sop_instance_uid NOT IN (SELECT sop_instance_uid FROM share_instances WHERE study_uid = $1)",
        )
        .bind(study)
        .fetch_all(&mut *tx)
        .await?;
        if unheld.is_empty() {
            continue;
        }
        let total: i64 = sqlx::query("SELECT COUNT(*) FROM instances WHERE study_uid = $1").bind(study).fetch_one(&mut *tx).await?.try_get(0)?;
        let whole_study = total as usize == unheld.len();
        if whole_study {
            // The data key first: from this commit on, no blob of the study can be decrypted.
            sqlx::query("DELETE FROM study_keys WHERE study_uid = $1").bind(study).execute(&mut *tx).await?;
            shredded += 1;
        }
        for r in &unheld {
            let sop: String = r.try_get(0)?;
            let path: String = r.try_get(1)?;
            sqlx::query("DELETE FROM instances WHERE sop_instance_uid = $1").bind(&sop).execute(&mut *tx).await?;
            blobs.push(path);
        }
        sqlx::query("DELETE FROM series WHERE study_uid = $1 AND series_uid NOT IN (SELECT series_uid FROM instances WHERE study_uid = $1)")
            .bind(study)
            .execute(&mut *tx)
            .await?;
        if whole_study {
            sqlx::query("DELETE FROM studies WHERE study_uid = $1").bind(study).execute(&mut *tx).await?;
        }
    }
    // Listed for the sweeper (as due at once) before the rows that named them are gone.
    for path in &blobs {
        sqlx::query("INSERT INTO pending_blobs (blob_path, created_at) VALUES ($1, 0) ON CONFLICT (blob_path) DO NOTHING")
            .bind(path)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    for path in &blobs {
        if state.blobs.delete(path).await.is_ok() {
            let _ = sqlx::query("DELETE FROM pending_blobs WHERE blob_path = $1").bind(path).execute(&state.db_write).await;
        }
    }
    audit::record(&state.db_write, Event {
        actor: "system",
        client_addr: "",
        action: "share.purge",
        object_kind: "share",
        object_id: id,
        result: "ok",
        detail: &format!("{} blobs deleted, {shredded} studies shredded", blobs.len()),
    })
    .await?;
    tracing::info!(share = %id, blobs = blobs.len(), shredded, "share purged");
    Ok(true)
}
