//! SQL of the connectors feature (hub side): tokens, heartbeats, claims with their lease,
//! acknowledgements, reports and each PACS target's progress.

use ferry_schemas::{ClaimedInstance, Heartbeat, TargetProgress, Uid};

use crate::db::{Db, now_ms};

/// The connector a live access token belongs to: (connector id, community id).
pub async fn agent_by_token_hash(db: &Db, hash: &str) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT c.id, c.community_id FROM connector_tokens t JOIN connectors c ON c.id = t.connector_id \
         WHERE t.token_hash = $1 AND t.expires_at > $2 AND c.revoked_at IS NULL",
    )
    .bind(hash)
    .bind(now_ms())
    .fetch_optional(db)
    .await
}

/// The id of the connector with these client credentials, unless revoked.
pub async fn connector_by_secret(db: &Db, client_id: &str, secret_hash: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM connectors WHERE client_id = $1 AND secret_hash = $2 AND revoked_at IS NULL")
        .bind(client_id)
        .bind(secret_hash)
        .fetch_optional(db)
        .await
}

/// Stores a new access token (and forgets the expired ones).
pub async fn store_token(db: &Db, hash: &str, connector: &str, expires_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM connector_tokens WHERE expires_at < $1").bind(now_ms()).execute(db).await?;
    sqlx::query("INSERT INTO connector_tokens (token_hash, connector_id, expires_at) VALUES ($1, $2, $3)")
        .bind(hash)
        .bind(connector)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// (connector name, community code, community name).
pub async fn describe(db: &Db, connector: &str) -> Result<(String, String, String), sqlx::Error> {
    sqlx::query_as("SELECT c.name, m.code, m.name FROM connectors c JOIN communities m ON m.id = c.community_id WHERE c.id = $1")
        .bind(connector)
        .fetch_one(db)
        .await
}

pub async fn heartbeat(db: &Db, connector: &str, h: &Heartbeat, targets_json: &str) -> Result<(), sqlx::Error> {
    let last_error = h.last_error.chars().take(500).collect::<String>();
    sqlx::query(
        "UPDATE connectors SET last_seen_at = $1, version = $2, queue_depth = $3, last_error = $4, last_error_at = $5, targets = $6 \
         WHERE id = $7",
    )
    .bind(now_ms())
    .bind(h.version.chars().take(50).collect::<String>())
    .bind(h.queue_depth)
    .bind(&last_error)
    .bind(if last_error.is_empty() { None } else { Some(h.last_error_at.unwrap_or_else(now_ms)) })
    .bind(targets_json)
    .bind(connector)
    .execute(db)
    .await?;
    Ok(())
}

/// The next transfer of the community a claim may take: waiting (sent), or received with a lease
/// that ran out. Urgent ones first, then the oldest. Transfers a connector holds with a live
/// lease are never handed out again: it works on them from its own state.
pub async fn claim_candidate(db: &Db, community: &str, now: i64) -> Result<Option<(String, String)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, state FROM transfers WHERE community_id = $1 \
         AND (state = 'sent' OR (state = 'received' AND lease_until < $2)) \
         ORDER BY CASE WHEN urgency = 'urgent' THEN 0 ELSE 1 END, sent_at, id LIMIT 1",
    )
    .bind(community)
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Takes the lease; the conditional UPDATE is the lock (of two connectors only one changes the
/// row). True when this call took it.
pub async fn take_lease(db: &Db, id: &str, owner: &str, lease_until: i64, now: i64) -> Result<bool, sqlx::Error> {
    let taken = sqlx::query(
        "UPDATE transfers SET state = 'received', lease_owner = $1, lease_until = $2, updated_at = $3 \
         WHERE id = $4 AND (state = 'sent' OR (state = 'received' AND lease_until < $3))",
    )
    .bind(owner)
    .bind(lease_until)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(taken.rows_affected() == 1)
}

/// The instances of a claimed transfer, with what the connector needs to fetch and verify them.
pub async fn claimed_instances(db: &Db, id: &str) -> Result<Vec<ClaimedInstance>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, String, i64)> = sqlx::query_as(
        "SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.size, i.sha256, \
         (SELECT COUNT(*) FROM transfer_acks a WHERE a.transfer_id = ti.transfer_id AND a.sop_instance_uid = ti.sop_instance_uid) \
         FROM transfer_instances ti JOIN instances i ON i.origin = ti.origin AND i.sop_instance_uid = ti.sop_instance_uid \
         WHERE ti.transfer_id = $1 ORDER BY i.study_uid, i.series_uid, i.instance_number, i.sop_instance_uid",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    let uid = |s: String| Uid::new(s).map_err(|e| sqlx::Error::Decode(Box::new(e)));
    rows.into_iter()
        .map(|(study_uid, series_uid, sop_instance_uid, size, sha256, acks)| {
            Ok(ClaimedInstance {
                study_uid: uid(study_uid)?,
                series_uid: uid(series_uid)?,
                sop_instance_uid: uid(sop_instance_uid)?,
                size: size as u64,
                sha256,
                acked: acks > 0,
            })
        })
        .collect()
}

/// (state, lease owner) of a transfer.
pub async fn lease(db: &Db, id: &str) -> Result<(String, Option<String>), sqlx::Error> {
    sqlx::query_as("SELECT state, lease_owner FROM transfers WHERE id = $1").bind(id).fetch_one(db).await
}

pub async fn is_part(tx: &mut sqlx::AnyConnection, id: &str, sop: &str) -> Result<bool, sqlx::Error> {
    let known: Option<i64> = sqlx::query_scalar("SELECT 1 FROM transfer_instances WHERE transfer_id = $1 AND sop_instance_uid = $2")
        .bind(id)
        .bind(sop)
        .fetch_optional(&mut *tx)
        .await?;
    Ok(known.is_some())
}

pub async fn insert_ack(tx: &mut sqlx::AnyConnection, id: &str, sop: &str, status: u16, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO transfer_acks (transfer_id, sop_instance_uid, status, acked_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (transfer_id, sop_instance_uid) DO NOTHING",
    )
    .bind(id)
    .bind(sop)
    .bind(i64::from(status))
    .bind(now)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

pub async fn renew_lease(tx: &mut sqlx::AnyConnection, id: &str, until: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE transfers SET lease_until = $1 WHERE id = $2").bind(until).bind(id).execute(&mut *tx).await?;
    Ok(())
}

/// Instances of the transfer no acknowledgement names yet.
pub async fn unacknowledged(db: &Db, id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM transfer_instances ti WHERE ti.transfer_id = $1 AND NOT EXISTS \
         (SELECT 1 FROM transfer_acks a WHERE a.transfer_id = ti.transfer_id AND a.sop_instance_uid = ti.sop_instance_uid)",
    )
    .bind(id)
    .fetch_one(db)
    .await
}

/// Ends the lease with the connector's outcome.
pub async fn finish(db: &Db, id: &str, state: &str, message: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE transfers SET state = $1, state_message = $2, lease_owner = NULL, lease_until = 0, updated_at = $3 WHERE id = $4")
        .bind(state)
        .bind(message)
        .bind(now_ms())
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// Replaces what the connector last said about each target of the transfer.
pub async fn replace_targets(db: &Db, id: &str, targets: &[TargetProgress]) -> Result<(), sqlx::Error> {
    let now = now_ms();
    let mut tx = db.begin().await?;
    sqlx::query("DELETE FROM transfer_targets WHERE transfer_id = $1").bind(id).execute(&mut *tx).await?;
    for t in targets {
        sqlx::query(
            "INSERT INTO transfer_targets (transfer_id, target, required, state, stored, total, since, message, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(id)
        .bind(&t.target)
        .bind(i64::from(t.required))
        .bind(t.state.as_str())
        .bind(t.stored as i64)
        .bind(t.total as i64)
        .bind(t.since)
        .bind(&t.message)
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await
}
