//! SQL of the transfers feature.

use ferry_schemas::{TargetProgress, TargetState, Transfer, TransferEvent, TransferState, TransferStudy, Urgency};
use sqlx::FromRow;
use sqlx::any::AnyRow;

use crate::db::{Db, now_ms};
use crate::index::Holding;

/// The bits of a transfer row the access checks need.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TransferRef {
    pub id: String,
    pub sender_id: String,
    pub community_id: String,
    pub state: String,
}

pub async fn find_ref(db: &Db, id: &str) -> Result<Option<TransferRef>, sqlx::Error> {
    sqlx::query_as("SELECT id, sender_id, community_id, state FROM transfers WHERE id = $1").bind(id).fetch_optional(db).await
}

pub const COLUMNS: &str = "t.id, t.state, t.state_message, c.code AS community, c.name AS community_name, u.name AS sender_name, \
     u.practice AS sender_practice, t.reason, t.appointment, t.urgency, t.instance_count, t.bytes, t.created_at, t.sent_at, \
     t.updated_at, t.summary";
pub const FROM: &str = "FROM transfers t JOIN communities c ON c.id = t.community_id JOIN users u ON u.id = t.sender_id";

/// A transfer row as [`COLUMNS`] selects it.
#[derive(sqlx::FromRow)]
struct TransferRow {
    id: String,
    state: String,
    state_message: String,
    community: String,
    community_name: String,
    sender_name: String,
    sender_practice: String,
    reason: String,
    appointment: String,
    urgency: String,
    instance_count: i64,
    bytes: i64,
    created_at: i64,
    sent_at: Option<i64>,
    updated_at: i64,
    summary: String,
}

pub fn from_row(r: &AnyRow) -> Result<Transfer, sqlx::Error> {
    let r = TransferRow::from_row(r)?;
    let unknown = |what: &str, v: &str| sqlx::Error::Decode(format!("unknown transfer {what} {v:?}").into());
    Ok(Transfer {
        state: TransferState::from_name(&r.state).ok_or_else(|| unknown("state", &r.state))?,
        urgency: Urgency::from_name(&r.urgency).ok_or_else(|| unknown("urgency", &r.urgency))?,
        id: r.id,
        state_message: r.state_message,
        community: r.community,
        community_name: r.community_name,
        sender_name: r.sender_name,
        sender_practice: r.sender_practice,
        reason: r.reason,
        appointment: r.appointment,
        instances: r.instance_count as u64,
        bytes: r.bytes as u64,
        created_at: r.created_at,
        sent_at: r.sent_at,
        updated_at: r.updated_at,
        studies: serde_json::from_str(&r.summary).unwrap_or_default(),
        events: vec![],
        targets: vec![],
    })
}

/// Transfers matching every clause (SQL over [`COLUMNS`] with `$n` placeholders for `binds`),
/// newest first.
pub async fn list(db: &Db, clauses: &[String], binds: Vec<String>, limit: u32, offset: u32) -> Result<Vec<Transfer>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} {FROM} WHERE {} ORDER BY COALESCE(t.sent_at, t.created_at) DESC, t.id LIMIT {limit} OFFSET {offset}",
        clauses.join(" AND ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        query = query.bind(b);
    }
    query.fetch_all(db).await?.iter().map(from_row).collect()
}

/// What decides whether a referrer may send to a community.
#[derive(sqlx::FromRow)]
pub struct SendingRules {
    pub id: String,
    pub accepts_inbound: i64,
    pub requires_approval: i64,
}

const RULES: &str = "SELECT id, accepts_inbound, requires_approval FROM communities";

pub async fn rules_by_code(db: &Db, code: &str) -> Result<Option<SendingRules>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{RULES} WHERE code = $1"))).bind(code).fetch_optional(db).await
}

pub async fn rules(db: &Db, community_id: &str) -> Result<SendingRules, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("{RULES} WHERE id = $1"))).bind(community_id).fetch_one(db).await
}

/// The referrer's approval at a community: `pending`, `approved`, `denied`, or none.
pub async fn approval(db: &Db, community_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM referrer_approvals WHERE community_id = $1 AND user_id = $2")
        .bind(community_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// A new draft.
pub struct Draft<'a> {
    pub id: &'a str,
    pub sender_id: &'a str,
    pub community_id: &'a str,
    pub reason: &'a str,
    pub appointment: &'a str,
    pub urgency: Urgency,
}

pub async fn insert_draft(db: &Db, d: &Draft<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO transfers (id, sender_id, community_id, reason, appointment, urgency, state, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'draft', $7, $7)",
    )
    .bind(d.id)
    .bind(d.sender_id)
    .bind(d.community_id)
    .bind(d.reason)
    .bind(d.appointment)
    .bind(d.urgency.as_str())
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(())
}

/// The sender's name and practice and the transfer's reason (for the search text).
#[derive(sqlx::FromRow)]
pub struct SenderWords {
    pub name: String,
    pub practice: String,
    pub reason: String,
}

pub async fn sender_words(db: &Db, id: &str) -> Result<SenderWords, sqlx::Error> {
    sqlx::query_as("SELECT u.name, u.practice, t.reason FROM transfers t JOIN users u ON u.id = t.sender_id WHERE t.id = $1")
        .bind(id)
        .fetch_one(db)
        .await
}

/// What sending fixes: the studies' summary, the search text and the totals.
pub struct Sent<'a> {
    pub summary: &'a str,
    pub search_text: &'a str,
    pub instances: u64,
    pub bytes: u64,
}

/// Draft → sent; false when it was no draft any more.
pub async fn mark_sent(db: &Db, id: &str, s: &Sent<'_>) -> Result<bool, sqlx::Error> {
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE transfers SET state = 'sent', summary = $1, search_text = $2, instance_count = $3, bytes = $4, \
         sent_at = $5, updated_at = $5 WHERE id = $6 AND state = 'draft'",
    )
    .bind(s.summary)
    .bind(s.search_text)
    .bind(s.instances as i64)
    .bind(s.bytes as i64)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// `from` → `to` with the clinic's message; false when the state changed meanwhile.
pub async fn decide(db: &Db, id: &str, from: &str, to: &str, message: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE transfers SET state = $1, state_message = $2, updated_at = $3 WHERE id = $4 AND state = $5")
        .bind(to)
        .bind(message)
        .bind(now_ms())
        .bind(id)
        .bind(from)
        .execute(db)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a draft's own rows (its images go through `index::release` first); false when it is
/// no draft.
pub async fn delete_draft(tx: &mut sqlx::AnyConnection, id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM transfer_events WHERE transfer_id = $1").bind(id).execute(&mut *tx).await?;
    let gone = sqlx::query("DELETE FROM transfers WHERE id = $1 AND state = 'draft'").bind(id).execute(&mut *tx).await?;
    Ok(gone.rows_affected() == 1)
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
            state: TargetState::from_name(&state).unwrap_or(TargetState::Pending),
            stored: stored as u64,
            total: total as u64,
            since,
            message,
            updated_at,
        })
        .collect())
}

pub async fn events(db: &Db, id: &str) -> Result<Vec<TransferEvent>, sqlx::Error> {
    let rows: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT at, state, message FROM transfer_events WHERE transfer_id = $1 ORDER BY at, id")
            .bind(id)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|(at, state, message)| TransferEvent { at, state, message }).collect())
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
