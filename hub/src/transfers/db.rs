//! SQL of the transfers feature.

use ferry_schemas::{Transfer, TransferEvent, TransferSeries, TransferStudy};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, now_ms};

/// The bits of a transfer row the access checks need.
#[derive(Debug, Clone)]
pub struct TransferRef {
    pub id: String,
    pub sender_id: String,
    pub community_id: String,
    pub state: String,
}

pub async fn find_ref(db: &Db, id: &str) -> Result<Option<TransferRef>, sqlx::Error> {
    let row = sqlx::query("SELECT id, sender_id, community_id, state FROM transfers WHERE id = $1")
        .bind(id)
        .fetch_optional(db)
        .await?;
    row.map(|r| Ok(TransferRef { id: r.try_get(0)?, sender_id: r.try_get(1)?, community_id: r.try_get(2)?, state: r.try_get(3)? }))
        .transpose()
}

pub const COLUMNS: &str = "t.id, t.state, t.state_message, c.code, c.name, u.name, u.practice, t.reason, \
     t.appointment, t.urgency, t.instance_count, t.bytes, t.created_at, t.sent_at, t.updated_at, t.summary";
pub const FROM: &str = "FROM transfers t JOIN communities c ON c.id = t.community_id JOIN users u ON u.id = t.sender_id";

pub fn from_row(r: &AnyRow) -> Result<Transfer, sqlx::Error> {
    let summary: String = r.try_get(15)?;
    Ok(Transfer {
        id: r.try_get(0)?,
        state: r.try_get(1)?,
        state_message: r.try_get(2)?,
        community: r.try_get(3)?,
        community_name: r.try_get(4)?,
        sender_name: r.try_get(5)?,
        sender_practice: r.try_get(6)?,
        reason: r.try_get(7)?,
        appointment: r.try_get(8)?,
        urgency: r.try_get(9)?,
        instances: r.try_get::<i64, _>(10)? as u64,
        bytes: r.try_get::<i64, _>(11)? as u64,
        created_at: r.try_get(12)?,
        sent_at: r.try_get(13)?,
        updated_at: r.try_get(14)?,
        studies: serde_json::from_str(&summary).unwrap_or_default(),
        events: vec![],
    })
}

pub async fn load(db: &Db, id: &str) -> Result<Option<Transfer>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} {FROM} WHERE t.id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut t = from_row(&row)?;
    if t.state == "draft" {
        // A draft's contents change with every upload: computed, not stored.
        t.studies = studies(db, id).await?;
        t.instances = t.studies.iter().map(|s| s.instances).sum();
        t.bytes = t.studies.iter().map(|s| s.bytes).sum();
    }
    t.events = events(db, id).await?;
    Ok(Some(t))
}

pub async fn events(db: &Db, id: &str) -> Result<Vec<TransferEvent>, sqlx::Error> {
    let rows = sqlx::query("SELECT at, state, message FROM transfer_events WHERE transfer_id = $1 ORDER BY at, id")
        .bind(id)
        .fetch_all(db)
        .await?;
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
    crate::audit::record(db, crate::audit::Event { actor: &actor, client_addr: "", action: &action, object_kind: "transfer", object_id: id, result: "ok", detail: "" }).await
}

/// The studies, series and sizes of what a transfer carries, from the index.
pub async fn studies(db: &Db, id: &str) -> Result<Vec<TransferStudy>, sqlx::Error> {
    linked_studies(db, Linked::Transfer, id).await
}

/// A table that links instances to a transfer or a share.
#[derive(Debug, Clone, Copy)]
pub enum Linked {
    Transfer,
    Share,
}

impl Linked {
    /// The link table.
    pub fn table(self) -> &'static str {
        match self {
            Linked::Transfer => "transfer_instances",
            Linked::Share => "share_instances",
        }
    }

    /// Its column naming the transfer or share.
    pub fn key(self) -> &'static str {
        match self {
            Linked::Transfer => "transfer_id",
            Linked::Share => "share_id",
        }
    }
}

/// The studies (with their series) of the instances linked to a transfer or a share.
pub async fn linked_studies(db: &Db, linked: Linked, id: &str) -> Result<Vec<TransferStudy>, sqlx::Error> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT s.study_uid, s.patient_name, s.patient_id, s.patient_birth_date, s.study_date, s.study_description, \
         se.series_uid, se.modality, se.series_description, COUNT(*), CAST(SUM(i.size) AS BIGINT) \
         FROM {} ti \
         JOIN instances i ON i.sop_instance_uid = ti.sop_instance_uid \
         JOIN series se ON se.series_uid = i.series_uid \
         JOIN studies s ON s.study_uid = i.study_uid \
         WHERE ti.{} = $1 \
         GROUP BY s.study_uid, s.patient_name, s.patient_id, s.patient_birth_date, s.study_date, s.study_description, \
         se.series_uid, se.modality, se.series_description \
         ORDER BY s.study_date, s.study_uid, se.series_uid",
        linked.table(),
        linked.key()
    )))
    .bind(id)
    .fetch_all(db)
    .await?;
    let mut out: Vec<TransferStudy> = Vec::new();
    for r in &rows {
        let study_uid: String = r.try_get(0)?;
        let series = TransferSeries {
            series_uid: r.try_get(6)?,
            modality: r.try_get(7)?,
            description: r.try_get(8)?,
            instances: r.try_get::<i64, _>(9)? as u64,
        };
        let bytes = r.try_get::<i64, _>(10)? as u64;
        if out.last().is_none_or(|s| s.study_uid != study_uid) {
            out.push(TransferStudy {
                study_uid,
                patient_name: r.try_get(1)?,
                patient_id: r.try_get(2)?,
                patient_birth_date: r.try_get(3)?,
                study_date: r.try_get(4)?,
                description: r.try_get(5)?,
                modalities: vec![],
                instances: 0,
                bytes: 0,
                series: vec![],
            });
        }
        if let Some(s) = out.last_mut() {
            s.instances += series.instances;
            s.bytes += bytes;
            if !series.modality.is_empty() && !s.modalities.contains(&series.modality) {
                s.modalities.push(series.modality.clone());
            }
            s.series.push(series);
        }
    }
    Ok(out)
}

/// Links stored instances to a transfer (idempotent: a retried upload links nothing twice).
pub async fn link_instances(db: &Db, id: &str, instances: &[(String, String, String)]) -> Result<(), sqlx::Error> {
    let mut tx = db.begin().await?;
    insert_links(&mut tx, Linked::Transfer, id, instances).await?;
    sqlx::query("UPDATE transfers SET updated_at = $1 WHERE id = $2").bind(now_ms()).bind(id).execute(&mut *tx).await?;
    tx.commit().await
}

/// Links (SOP, series, study) triples to a transfer or share; already linked ones are skipped.
pub async fn insert_links(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    linked: Linked,
    id: &str,
    instances: &[(String, String, String)],
) -> Result<(), sqlx::Error> {
    let (table, key) = (linked.table(), linked.key());
    let sql = format!(
        "INSERT INTO {table} ({key}, sop_instance_uid, series_uid, study_uid) VALUES ($1, $2, $3, $4) \
         ON CONFLICT ({key}, sop_instance_uid) DO NOTHING"
    );
    for (sop, series, study) in instances {
        sqlx::query(sqlx::AssertSqlSafe(sql.clone())).bind(id).bind(sop).bind(series).bind(study).execute(&mut **tx).await?;
    }
    Ok(())
}

/// The role of a user in a community (`admin`, `member`) if any.
pub async fn community_role(db: &Db, community_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT role FROM memberships WHERE community_id = $1 AND user_id = $2")
        .bind(community_id)
        .bind(user_id)
        .fetch_optional(db)
        .await?
        .map(|r| r.try_get(0))
        .transpose()
}
