//! The audit trail: who did what to which object, from where, with what result. Every access to
//! a share (code redemption attempts included, failed ones too), every download and every change
//! by staff is recorded. Records hold identifiers only, never patient demographics.

use ferry_schemas::AuditEvent;
use sqlx::Row;

use crate::db::{Db, now_ms};

/// One thing that happened.
pub struct Event<'a> {
    pub actor: &'a str,
    pub client_addr: &'a str,
    pub action: &'a str,
    pub object_kind: &'a str,
    pub object_id: &'a str,
    /// `ok`, `denied`, `failed`, …
    pub result: &'a str,
    pub detail: &'a str,
}

/// Appends an event. A failure to audit is logged and reported to the caller: an access that
/// cannot be audited should not go ahead where the caller can still refuse it.
pub async fn record(db: &Db, e: Event<'_>) -> anyhow::Result<()> {
    let r = sqlx::query(
        "INSERT INTO audit_events (id, at, actor, client_addr, action, object_kind, object_id, result, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(now_ms())
    .bind(e.actor)
    .bind(e.client_addr)
    .bind(e.action)
    .bind(e.object_kind)
    .bind(e.object_id)
    .bind(e.result)
    .bind(e.detail)
    .execute(db)
    .await;
    if let Err(err) = &r {
        tracing::error!(error = %err, action = e.action, object = e.object_id, "audit record failed");
    }
    r.map(|_| ())?;
    Ok(())
}

/// The events of one object, newest first.
pub async fn of_object(db: &Db, kind: &str, id: &str, limit: i64) -> Result<Vec<AuditEvent>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT at, actor, client_addr, action, object_kind, object_id, result, detail FROM audit_events \
         WHERE object_kind = $1 AND object_id = $2 ORDER BY at DESC, id LIMIT $3",
    )
    .bind(kind)
    .bind(id)
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(AuditEvent {
                at: r.try_get(0)?,
                actor: r.try_get(1)?,
                client_addr: r.try_get(2)?,
                action: r.try_get(3)?,
                object_kind: r.try_get(4)?,
                object_id: r.try_get(5)?,
                result: r.try_get(6)?,
                detail: r.try_get(7)?,
            })
        })
        .collect()
}
