//! SQL of the shares feature.

use ferry_schemas::{Share, ShareReport};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::{Db, now_ms};
use crate::index::{Holding, RowRef, linked_studies};

/// A share row as the handlers need it.
#[derive(Debug, Clone)]
pub struct ShareRow {
    pub id: String,
    pub community_id: String,
    pub created_by: String,
    pub parent_id: Option<String>,
    pub patient_id: String,
    pub question_type: String,
    pub question_text: String,
    pub answer_hash: String,
    pub state: String,
    pub note: String,
    pub created_at: i64,
    pub issued_at: Option<i64>,
    pub expires_at: i64,
    pub purged_at: Option<i64>,
    pub failed_attempts: i64,
    pub locked_until: i64,
    pub last_access_at: Option<i64>,
}

pub const COLUMNS: &str = "id, community_id, created_by, parent_id, patient_id, question_type, question_text, answer_hash, \
     state, note, created_at, issued_at, expires_at, purged_at, failed_attempts, locked_until, last_access_at";

pub fn from_row(r: &AnyRow) -> Result<ShareRow, sqlx::Error> {
    Ok(ShareRow {
        id: r.try_get(0)?,
        community_id: r.try_get(1)?,
        created_by: r.try_get(2)?,
        parent_id: r.try_get(3)?,
        patient_id: r.try_get(4)?,
        question_type: r.try_get(5)?,
        question_text: r.try_get(6)?,
        answer_hash: r.try_get(7)?,
        state: r.try_get(8)?,
        note: r.try_get(9)?,
        created_at: r.try_get(10)?,
        issued_at: r.try_get(11)?,
        expires_at: r.try_get(12)?,
        purged_at: r.try_get(13)?,
        failed_attempts: r.try_get(14)?,
        locked_until: r.try_get(15)?,
        last_access_at: r.try_get(16)?,
    })
}

impl ShareRow {
    /// Active, not expired, not purged: the code opens it.
    pub fn is_open(&self, now: i64) -> bool {
        self.state == "active" && self.expires_at > now && self.purged_at.is_none()
    }

    pub fn is_locked(&self, now: i64) -> bool {
        self.locked_until > now
    }

    /// The state staff see (`expired` for an active share past its time).
    pub fn shown_state(&self, now: i64) -> &str {
        if self.state == "active" && self.expires_at <= now { "expired" } else { &self.state }
    }
}

pub async fn find(db: &Db, id: &str) -> Result<Option<ShareRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shares WHERE id = $1")))
        .bind(id)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

pub async fn find_by_code_hash(db: &Db, hash: &str) -> Result<Option<ShareRow>, sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shares WHERE code_hash = $1")))
        .bind(hash)
        .fetch_optional(db)
        .await?
        .as_ref()
        .map(from_row)
        .transpose()
}

/// A report with where its blob is and the data key that wraps its key.
pub struct StoredReport {
    pub report: ShareReport,
    pub blob_path: String,
    pub blob_key: String,
    pub key_id: String,
}

/// Claims one attempt at a code's answer before the answer is checked: counts it as a wrong
/// answer in a row and, when that count reaches `max_failed`, locks the code at once (until
/// `lock_until`, the shortest lock) — all in one conditional statement, so however many requests
/// arrive together, the database hands out attempts one at a time and none past the lock. The
/// returned count is this attempt's place in the row; `None`: the code is locked or its share is
/// not active, and the answer must not be checked. See `redeem::redeem` for the rest.
pub async fn claim_attempt(db: &Db, id: &str, now: i64, max_failed: i64, lock_until: i64) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query(
        "UPDATE shares SET failed_attempts = failed_attempts + 1, \
         locked_until = CASE WHEN failed_attempts + 1 >= $3 THEN $4 ELSE locked_until END \
         WHERE id = $1 AND state = 'active' AND purged_at IS NULL AND locked_until <= $2 \
         RETURNING failed_attempts",
    )
    .bind(id)
    .bind(now)
    .bind(max_failed)
    .bind(lock_until)
    .fetch_optional(db)
    .await?
    .map(|r| r.try_get(0))
    .transpose()
}

/// A claimed attempt was wrong: the lock it earned (see `redeem::lock_until`), unless a right
/// answer has reset the count since (then the row is no longer `failed` long).
pub async fn lock_after_wrong(db: &Db, id: &str, failed: i64, lock_until: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET locked_until = $1 WHERE id = $2 AND failed_attempts >= $3 AND locked_until < $1")
        .bind(lock_until)
        .bind(id)
        .bind(failed)
        .execute(db)
        .await?;
    Ok(())
}

/// A right answer: the count starts again and a lock its own attempt set is lifted.
pub async fn reset_attempts(db: &Db, id: &str, accessed_at: Option<i64>) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET failed_attempts = 0, locked_until = 0, last_access_at = COALESCE($1, last_access_at) WHERE id = $2")
        .bind(accessed_at)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The reports of a share, in upload order.
pub async fn reports(db: &Db, share_id: &str) -> Result<Vec<StoredReport>, sqlx::Error> {
    let now = now_ms();
    let rows = sqlx::query(
        "SELECT id, study_uid, name, size, release_at, blob_path, blob_key, key_id FROM share_reports WHERE share_id = $1 ORDER BY created_at, id",
    )
    .bind(share_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| {
            let release_at: i64 = r.try_get(4)?;
            Ok(StoredReport {
                report: ShareReport {
                    id: r.try_get(0)?,
                    study_uid: r.try_get(1)?,
                    name: r.try_get(2)?,
                    size: r.try_get::<i64, _>(3)? as u64,
                    release_at,
                    released: release_at <= now,
                },
                blob_path: r.try_get(5)?,
                blob_key: r.try_get(6)?,
                key_id: r.try_get(7)?,
            })
        })
        .collect()
}

/// The share as staff see it, with studies and reports.
pub async fn load(db: &Db, row: &ShareRow) -> Result<Share, sqlx::Error> {
    let now = now_ms();
    let c = sqlx::query("SELECT code, name FROM communities WHERE id = $1").bind(&row.community_id).fetch_one(db).await?;
    let studies = linked_studies(db, Holding::Share, &row.id).await?;
    let reports = reports(db, &row.id).await?.into_iter().map(|r| r.report).collect();
    let patient_name = studies.first().map(|s| s.patient_name.clone()).unwrap_or_default();
    Ok(Share {
        id: row.id.clone(),
        state: row.shown_state(now).to_string(),
        community: c.try_get(0)?,
        community_name: c.try_get(1)?,
        patient_id: row.patient_id.clone(),
        patient_name,
        question_type: row.question_type.clone(),
        created_by: row.created_by.clone(),
        created_at: row.created_at,
        issued_at: row.issued_at,
        expires_at: row.expires_at,
        last_access_at: row.last_access_at,
        failed_attempts: row.failed_attempts.max(0) as u64,
        locked: row.is_locked(now),
        locked_until: (row.locked_until > now).then_some(row.locked_until),
        parent_id: row.parent_id.clone(),
        note: row.note.clone(),
        studies,
        reports,
    })
}

/// The ids of a share and every share derived from it (forwarded codes, and theirs).
pub async fn with_descendants(db: &Db, id: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut all = vec![id.to_string()];
    let mut i = 0;
    while i < all.len() {
        let rows = sqlx::query("SELECT id FROM shares WHERE parent_id = $1").bind(&all[i]).fetch_all(db).await?;
        for r in rows {
            all.push(r.try_get(0)?);
        }
        i += 1;
    }
    Ok(all)
}

/// Instance rows of the given studies (or of one patient's studies) that a community holds: what
/// came to it by transfer, and what it shared itself (issued shares whose data is still there).
/// The patient is looked up in the study rows of those holdings only.
pub async fn held_instances(db: &Db, community_id: &str, studies: &[String], patient_id: Option<&str>) -> Result<Vec<RowRef>, sqlx::Error> {
    let mut binds: Vec<String> = vec![community_id.to_string()];
    let which = match patient_id {
        Some(p) => {
            binds.push(p.to_string());
            "(i.origin, i.study_uid) IN (SELECT origin, study_uid FROM studies WHERE patient_id = $2)".to_string()
        }
        None => {
            let list: Vec<String> = studies
                .iter()
                .map(|s| {
                    binds.push(s.clone());
                    format!("${}", binds.len())
                })
                .collect();
            format!("i.study_uid IN ({})", list.join(", "))
        }
    };
    let sql = format!(
        "SELECT i.origin, i.sop_instance_uid, i.series_uid, i.study_uid FROM instances i WHERE {which} AND \
         ((i.origin, i.sop_instance_uid) IN (SELECT ti.origin, ti.sop_instance_uid FROM transfer_instances ti \
           JOIN transfers t ON t.id = ti.transfer_id WHERE t.community_id = $1 AND t.state <> 'draft') \
          OR (i.origin, i.sop_instance_uid) IN (SELECT si.origin, si.sop_instance_uid FROM share_instances si \
           JOIN shares s ON s.id = si.share_id WHERE s.community_id = $1 AND s.state <> 'draft' AND s.purged_at IS NULL)) \
         ORDER BY i.study_uid, i.series_uid, i.sop_instance_uid, i.origin"
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    q.fetch_all(db).await?.iter().map(crate::index::row_ref).collect()
}

/// (patient id, birth date, study date) of each study a share links, from the study rows of
/// the origins it links (never from what other tenants stored under the same UIDs).
pub async fn study_facts(db: &Db, share_id: &str) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    sqlx::query(
        "SELECT s.patient_id, s.patient_birth_date, s.study_date FROM studies s \
         WHERE (s.origin, s.study_uid) IN (SELECT l.origin, l.study_uid FROM share_instances l WHERE l.share_id = $1) \
         ORDER BY s.study_uid, s.origin",
    )
    .bind(share_id)
    .fetch_all(db)
    .await?
    .iter()
    .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
    .collect()
}
