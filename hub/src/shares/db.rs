//! SQL of the shares feature.

use ferry_schemas::{Share, ShareReport};

use crate::db::{Db, now_ms};
use crate::index::{Holding, RowRef, linked_studies};

/// A share row as the handlers need it ([`COLUMNS`]).
#[derive(Debug, Clone, sqlx::FromRow)]
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
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shares WHERE id = $1"))).bind(id).fetch_optional(db).await
}

pub async fn find_by_code_hash(db: &Db, hash: &str) -> Result<Option<ShareRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM shares WHERE code_hash = $1"))).bind(hash).fetch_optional(db).await
}

/// The id of the community with this code.
pub async fn community_id(db: &Db, code: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM communities WHERE code = $1").bind(code).fetch_optional(db).await
}

/// The ids of the communities `user_id` is a member of.
pub async fn member_communities(db: &Db, user_id: &str) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT community_id FROM memberships WHERE user_id = $1").bind(user_id).fetch_all(db).await
}

/// The days a community's shares live unless told otherwise.
pub async fn default_share_days(db: &Db, community_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT default_share_days FROM communities WHERE id = $1").bind(community_id).fetch_one(db).await
}

/// A community's shares that are not purged, newest first, at most `limit`.
pub async fn of_community(db: &Db, community_id: &str, limit: i64) -> Result<Vec<ShareRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM shares WHERE community_id = $1 AND purged_at IS NULL ORDER BY created_at DESC LIMIT $2"
    )))
    .bind(community_id)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// A new share in state `draft` (its instances are linked in the same transaction).
pub async fn insert_draft(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    community_id: &str,
    created_by: &str,
    parent_id: Option<&str>,
    note: &str,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO shares (id, community_id, created_by, parent_id, question_type, state, note, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, 'PAT_BIRTH_DATE', 'draft', $5, $6, $6)",
    )
    .bind(id)
    .bind(community_id)
    .bind(created_by)
    .bind(parent_id)
    .bind(note)
    .bind(now)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a share that is still a draft (its links are released first).
pub async fn delete_draft(tx: &mut sqlx::Transaction<'static, sqlx::Any>, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM shares WHERE id = $1 AND state = 'draft'").bind(id).execute(&mut **tx).await?;
    Ok(())
}

/// What issuing a draft sets.
pub struct Issue<'a> {
    pub code_hash: &'a str,
    pub question_type: &'a str,
    pub question_text: &'a str,
    pub answer_hash: &'a str,
    pub issued_at: i64,
    pub expires_at: i64,
    pub patient_id: &'a str,
    pub note: &'a str,
}

/// Issues a draft share (makes it `active`); false when it is no draft (any more).
pub async fn issue(db: &Db, id: &str, i: &Issue<'_>) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE shares SET code_hash = $1, question_type = $2, question_text = $3, answer_hash = $4, state = 'active', \
         issued_at = $5, expires_at = $6, patient_id = $7, note = $8 WHERE id = $9 AND state = 'draft'",
    )
    .bind(i.code_hash)
    .bind(i.question_type)
    .bind(i.question_text)
    .bind(i.answer_hash)
    .bind(i.issued_at)
    .bind(i.expires_at)
    .bind(i.patient_id)
    .bind(i.note)
    .bind(id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Ends an active or revoked share: state `to`, and the time in `column` (`revoked_at` or
/// `deleted_at`).
pub async fn set_ended(db: &Db, id: &str, to: &str, column: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE shares SET state = $1, {column} = $2 WHERE id = $3 AND state IN ('active', 'revoked')"
    )))
    .bind(to)
    .bind(now)
    .bind(id)
    .execute(db)
    .await?;
    Ok(())
}

/// Ends every session of a share.
pub async fn end_sessions(db: &Db, share_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM share_sessions WHERE share_id = $1").bind(share_id).execute(db).await?;
    Ok(())
}

pub async fn set_expiry(db: &Db, id: &str, until: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET expires_at = $1 WHERE id = $2").bind(until).bind(id).execute(db).await?;
    Ok(())
}

/// Lifts a lock and starts the count of wrong answers again.
pub async fn unlock(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET failed_attempts = 0, locked_until = 0 WHERE id = $1").bind(id).execute(db).await?;
    Ok(())
}

/// A new code (and answer) for a share; a lock is lifted.
pub async fn set_code(db: &Db, id: &str, code_hash: &str, answer_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET code_hash = $1, answer_hash = $2, failed_attempts = 0, locked_until = 0 WHERE id = $3")
        .bind(code_hash)
        .bind(answer_hash)
        .bind(id)
        .execute(db)
        .await?;
    Ok(())
}

/// The hash of a share's current code (none for a draft).
pub async fn code_hash(db: &Db, id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT code_hash FROM shares WHERE id = $1").bind(id).fetch_one(db).await
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
    sqlx::query_scalar(
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
    .await
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

/// A row of `share_reports` as [`reports`] reads it.
#[derive(sqlx::FromRow)]
struct ReportRow {
    id: String,
    study_uid: String,
    name: String,
    size: i64,
    release_at: i64,
    blob_path: String,
    blob_key: String,
    key_id: String,
}

/// The reports of a share, in upload order.
pub async fn reports(db: &Db, share_id: &str) -> Result<Vec<StoredReport>, sqlx::Error> {
    let now = now_ms();
    let rows: Vec<ReportRow> = sqlx::query_as(
        "SELECT id, study_uid, name, size, release_at, blob_path, blob_key, key_id FROM share_reports WHERE share_id = $1 ORDER BY created_at, id",
    )
    .bind(share_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| StoredReport {
            report: ShareReport {
                id: r.id,
                study_uid: r.study_uid,
                name: r.name,
                size: r.size as u64,
                release_at: r.release_at,
                released: r.release_at <= now,
            },
            blob_path: r.blob_path,
            blob_key: r.blob_key,
            key_id: r.key_id,
        })
        .collect())
}

/// A community's code and name.
#[derive(sqlx::FromRow)]
struct CommunityNames {
    code: String,
    name: String,
}

/// The share as staff see it, with studies and reports.
pub async fn load(db: &Db, row: &ShareRow) -> Result<Share, sqlx::Error> {
    let now = now_ms();
    let c: CommunityNames =
        sqlx::query_as("SELECT code, name FROM communities WHERE id = $1").bind(&row.community_id).fetch_one(db).await?;
    let studies = linked_studies(db, Holding::Share, &row.id).await?;
    let reports = reports(db, &row.id).await?.into_iter().map(|r| r.report).collect();
    let patient_name = studies.first().map(|s| s.patient_name.clone()).unwrap_or_default();
    Ok(Share {
        id: row.id.clone(),
        state: {
            let shown = row.shown_state(now);
            ferry_schemas::ShareState::from_name(shown)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown share state {shown:?}").into()))?
        },
        community: c.code,
        community_name: c.name,
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
        let children: Vec<String> = sqlx::query_scalar("SELECT id FROM shares WHERE parent_id = $1").bind(&all[i]).fetch_all(db).await?;
        all.extend(children);
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
    let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql));
    for b in binds {
        q = q.bind(b);
    }
    q.fetch_all(db).await
}

/// What a share's studies say about its patient (see [`study_facts`]).
#[derive(sqlx::FromRow)]
struct StudyFacts {
    patient_id: String,
    patient_birth_date: String,
    study_date: String,
}

/// (patient id, birth date, study date) of each study a share links, from the study rows of
/// the origins it links (never from what other tenants stored under the same UIDs).
pub async fn study_facts(db: &Db, share_id: &str) -> Result<Vec<(String, String, String)>, sqlx::Error> {
    let rows: Vec<StudyFacts> = sqlx::query_as(
        "SELECT s.patient_id, s.patient_birth_date, s.study_date FROM studies s \
         WHERE (s.origin, s.study_uid) IN (SELECT l.origin, l.study_uid FROM share_instances l WHERE l.share_id = $1) \
         ORDER BY s.study_uid, s.origin",
    )
    .bind(share_id)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(|r| (r.patient_id, r.patient_birth_date, r.study_date)).collect())
}

/// The patient's sex as the share's own study rows say it (the oldest row of the study that
/// the share links).
pub async fn patient_sex(db: &Db, share_id: &str, study: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT s.patient_sex FROM studies s WHERE s.study_uid = $2 AND (s.origin, s.study_uid) IN \
         (SELECT l.origin, l.study_uid FROM share_instances l WHERE l.share_id = $1) ORDER BY s.created_at, s.origin",
    )
    .bind(share_id)
    .bind(study)
    .fetch_optional(db)
    .await
}

/// An open session of a share (browser cookie or DLX token).
#[derive(sqlx::FromRow)]
pub struct Session {
    pub share_id: String,
    pub last_seen_at: i64,
}

/// The unexpired session of this key (the hash of its cookie or token id).
pub async fn session(db: &Db, key: &str, now: i64) -> Result<Option<Session>, sqlx::Error> {
    sqlx::query_as("SELECT share_id, last_seen_at FROM share_sessions WHERE token_hash = $1 AND expires_at > $2")
        .bind(key)
        .bind(now)
        .fetch_optional(db)
        .await
}

/// Notes that a session was used now.
pub async fn session_seen(db: &Db, key: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE share_sessions SET last_seen_at = $1 WHERE token_hash = $2").bind(now).bind(key).execute(db).await?;
    Ok(())
}

/// Ends the session of this key.
pub async fn end_session(db: &Db, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM share_sessions WHERE token_hash = $1").bind(key).execute(db).await?;
    Ok(())
}

/// Notes that the holder accessed the share now.
pub async fn accessed(db: &Db, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE shares SET last_access_at = $1 WHERE id = $2").bind(now).bind(id).execute(db).await?;
    Ok(())
}

/// A community's name.
pub async fn community_name(db: &Db, community_id: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT name FROM communities WHERE id = $1").bind(community_id).fetch_one(db).await
}

/// Opens a session of a share (`kind`: browser or DLX) under the hash of its cookie or token id.
pub async fn insert_session(db: &Db, key: &str, share_id: &str, kind: &str, now: i64, expires_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO share_sessions (token_hash, share_id, kind, created_at, last_seen_at, expires_at) VALUES ($1, $2, $3, $4, $4, $5)",
    )
    .bind(key)
    .bind(share_id)
    .bind(kind)
    .bind(now)
    .bind(expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A report attached to a share; its blob is written (and listed as pending) before.
pub struct NewReport<'a> {
    pub id: &'a str,
    pub share_id: &'a str,
    pub study_uid: &'a str,
    pub name: &'a str,
    pub size: i64,
    pub sha256: &'a str,
    pub blob_path: &'a str,
    /// The blob key, wrapped by the data key `key_id`.
    pub blob_key: &'a str,
    pub key_id: &'a str,
    pub release_at: i64,
    pub created_at: i64,
}

pub async fn insert_report(tx: &mut sqlx::Transaction<'static, sqlx::Any>, r: &NewReport<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO share_reports (id, share_id, study_uid, name, size, sha256, blob_path, blob_key, key_id, release_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(r.id)
    .bind(r.share_id)
    .bind(r.study_uid)
    .bind(r.name)
    .bind(r.size)
    .bind(r.sha256)
    .bind(r.blob_path)
    .bind(r.blob_key)
    .bind(r.key_id)
    .bind(r.release_at)
    .bind(r.created_at)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
