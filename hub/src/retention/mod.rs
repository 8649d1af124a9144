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

use crate::audit::{self, Event};
use crate::db::now_ms;
use crate::state::AppState;

/// Purges every share that is due. Returns how many were purged.
pub async fn run_once(state: &AppState) -> anyhow::Result<u64> {
    let now = now_ms();
    let grace = state.config.retention.grace_secs as i64 * 1000;
    let due: Vec<String> = sqlx::query_scalar(
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
    for id in due {
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
    let claimed =
        sqlx::query("UPDATE shares SET purged_at = $1 WHERE id = $2 AND purged_at IS NULL").bind(now).bind(id).execute(&mut *tx).await?;
    if claimed.rows_affected() != 1 {
        tx.rollback().await?;
        return Ok(false);
    }
    #[derive(sqlx::FromRow)]
    struct Report {
        blob_path: String,
        study_uid: String,
        key_id: String,
    }
    let reports: Vec<Report> =
        sqlx::query_as("SELECT blob_path, study_uid, key_id FROM share_reports WHERE share_id = $1").bind(id).fetch_all(&mut *tx).await?;
    let mut report_blobs = Vec::new();
    let mut report_keys = Vec::new();
    for r in reports {
        report_blobs.push(r.blob_path);
        report_keys.push((r.study_uid, r.key_id));
    }
    for sql in ["DELETE FROM share_sessions WHERE share_id = $1", "DELETE FROM share_reports WHERE share_id = $1"] {
        sqlx::query(sql).bind(id).execute(&mut *tx).await?;
    }
    let released = crate::index::release(&mut tx, crate::index::Holding::Share, id, report_blobs, report_keys).await?;
    // The row stays for the audit trail (who made it, when it was issued, expired, purged), but
    // nothing of the patient: no ID, no note, no question, no answer.
    sqlx::query("UPDATE shares SET patient_id = '', note = '', question_text = '', answer_hash = '' WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    state.blobs.delete_released(&state.db_write, &released.blobs).await;
    let (blobs, shredded) = (released.blobs, released.shredded);
    audit::record(
        &state.db_write,
        Event {
            actor: "system",
            client_addr: "",
            action: "share.purge",
            object_kind: "share",
            object_id: id,
            result: "ok",
            detail: &format!("{} blobs deleted, {shredded} studies shredded", blobs.len()),
        },
    )
    .await?;
    crate::db::reclaim_deleted(&state.db_write, state.dialect).await;
    tracing::info!(share = %id, blobs = blobs.len(), shredded, "share purged");
    Ok(true)
}
