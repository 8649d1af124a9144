//! SQL of the transfers feature.

use ferry_schemas::{TargetProgress, TargetState, Transfer, TransferEvent, TransferState, TransferStudy, Urgency};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, now_ms};
use crate::index::Holding;

/// The bits of a transfer row the access checks need.
#[derive(Debug, Clone)]
pub struct TransferRef {
    pub id: String,
    pub sender_id: String,
    pub community_id: String,
    pub state: String,
}

pub async fn find_ref(db: &Db, id: &str) -> Result<Option<TransferRef>, sqlx::Error> {
    let row = sqlx::query("SELECT id, sender_id, community_id, state FROM transfers WHERE id = $1").bind(id).fetch_optional(db).await?;
    row.map(|r| Ok(TransferRef { id: r.try_get(0)?, sender_id: r.try_get(1)?, community_id: r.try_get(2)?, state: r.try_get(3)? }))
        .transpose()
}

pub const COLUMNS: &str = "t.id, t.state, t.state_message, c.code, c.name, u.name, u.practice, t.reason, \
     t.appointment, t.urgency, t.instance_count, t.bytes, t.created_at, t.sent_at, t.updated_at, t.summary";
pub const FROM: &str = "FROM transfers t JOIN communities c ON c.id = t.community_id JOIN users u ON u.id = t.sender_id";

pub fn from_row(r: &AnyRow) -> Result<Transfer, sqlx::Error> {
    let summary: String = r.try_get(15)?;
    let state: String = r.try_get(1)?;
    let urgency: String = r.try_get(9)?;
    let unknown = |what: &str, v: &str| sqlx::Error::Decode(format!("unknown transfer {what} {v:?}").into());
    Ok(Transfer {
        id: r.try_get(0)?,
        state: TransferState::from_name(&state).ok_or_else(|| unknown("state", &state))?,
        state_message: r.try_get(2)?,
        community: r.try_get(3)?,
        community_name: r.try_get(4)?,
        sender_name: r.try_get(5)?,
        sender_practice: r.try_get(6)?,
        reason: r.try_get(7)?,
        appointment: r.try_get(8)?,
        urgency: Urgency::from_name(&urgency).ok_or_else(|| unknown("urgency", &urgency))?,
        instances: r.try_get::<i64, _>(10)? as u64,
        bytes: r.try_get::<i64, _>(11)? as u64,
        created_at: r.try_get(12)?,
        sent_at: r.try_get(13)?,
        updated_at: r.try_get(14)?,
        studies: serde_json::from_str(&summary).unwrap_or_default(),
        events: vec![],
        targets: vec![],
    })
}

pub async fn load(db: &Db, id: &str) -> Result<Option<Transfer>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} {FROM} WHERE t.id = $1"))).bind(id).fetch_optional(db).await?;
    let Some(row) = row else { return Ok(None) };
    let mut t = from_row(&row)?;
    if t.state == TransferState::Draft {
        // A draft's contents change with every upload: computed, not stored.
        t.studies = studies(db, id).await?;
        t.instances = t.studies.iter().map(|s| s.instances).sum();
        t.bytes = t.studies.iter().map(|s| s.bytes).sum();
    }
    t.events = events(db, id).await?;
    t.targets = targets(db, id).await?;
    Ok(Some(t))
}

/// Each PACS target's part of the transfer as the receiving connector last reported it (written
/// by `connectors`), required targets first.
pub async fn targets(db: &Db, id: &str) -> Result<Vec<TargetProgress>, sqlx::Error> {
    type Row = (String, i64, String, i64, i64, Option<i64>, String, i64);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT target, required, state, stored, total, since, message, updated_at FROM transfer_targets \
         WHERE transfer_id = $1 ORDER BY required DESC, target",
    )
    .bind(id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(target, required, state, stored, total, since, message, updated_at)| TargetProgress {
            target,
            required: required != 0,
            state: TargetState::from_name(&state),
            stored: stored as u64,
            total: total as u64,
            since,
            message,
            updated_at,
        })
        .collect())
}

pub async fn events(db: &Db, id: &str) -> Result<Vec<TransferEvent>, sqlx::Error> {
    let rows =
        sqlx::query("SELECT at, state, message FROM transfer_events WHERE transfer_id = $1 ORDER BY at, id").bind(id).fetch_all(db).await?;
    rows.iter().map(|r| Ok(TransferEvent { at: r.try_get(0)?, state: r.try_get(1)?, message: r.try_get(2)? })).collect()
}

/// Records a change of the transfer's state for the sender's timeline, and in the audit trail
/// (there without the message, which is free text).
pub async fn add_event(db: &Db, id: &str, state: &str, message: &str, who: &crate::access::Principal) -> anyhow::Result<()> {
    sqlx::query("INSERT INTO transfer_events (id, transfer_id, at, state, message, actor_id) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(uuid::Uuid::new_v4().to_string())
        .bind(id)
        .bind(now_ms())
        .bind(state)
        .bind(message)
        .bind(who.user().map(|u| u.id.as_str()))
        .execute(db)
        .await?;
    let action = format!("transfer.{state}");
    let actor = who.log_id();
    crate::audit::record(
        db,
        crate::audit::Event {
            actor: &actor,
            client_addr: "",
            action: &action,
            object_kind: "transfer",
            object_id: id,
            result: "ok",
            detail: "",
        },
    )
    .await
}

/// The studies, series and sizes of what a transfer carries, from the index.
pub async fn studies(db: &Db, id: &str) -> Result<Vec<TransferStudy>, sqlx::Error> {
    crate::index::linked_studies(db, Holding::Transfer, id).await
}

/// Marks a transfer as changed now.
pub async fn touch(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE transfers SET updated_at = $1 WHERE id = $2").bind(now_ms()).bind(id).execute(db).await?;
    Ok(())
}
