//! Index writes with group commit. Every received instance becomes visible in a transaction
//! together with its study and series rows, and its `pending_blobs` entry goes in the same
//! transaction. One writer task per hub takes whatever jobs are queued (pending-blob
//! registrations, instances, forgotten blobs) and runs them in one transaction, each job inside
//! its own savepoint, so one commit — one WAL fsync on SQLite — serves many instances while each
//! job still succeeds or fails on its own. Nobody is answered before the commit is durable.

use std::sync::Arc;

use tokio::sync::{Mutex, mpsc, oneshot};

use super::describe::Described;
use super::{Failure, Outcome, reason};
use crate::db::{Db, Dialect, is_unique_violation, now_ms};
use crate::index::Origin;
use crate::storage::crypto::Key;
use crate::storage::pending;

#[derive(Clone)]
pub struct NewBlob {
    pub path: String,
    pub key: Key,
    pub size: u64,
    pub sha256: String,
}

/// Jobs taken into one transaction at most.
const MAX_BATCH: usize = 64;

enum Job {
    /// Lists a blob in `pending_blobs` before any of its bytes reach the store.
    Register { path: String, reply: oneshot::Sender<Result<(), sqlx::Error>> },
    /// Indexes an instance whose blob is durable.
    Insert { row: Arc<NewRow>, reply: oneshot::Sender<Result<Outcome, InsertError>> },
    /// Removes the `pending_blobs` entry of a blob that was deleted.
    Forget { path: String, reply: oneshot::Sender<Result<(), sqlx::Error>> },
}

/// The queue of the index writer tasks (one on SQLite, whose writes are serial anyway; a few on
/// PostgreSQL so that per-statement round trips overlap).
#[derive(Clone)]
pub struct IndexWriter {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for IndexWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IndexWriter")
    }
}

impl IndexWriter {
    /// Starts the writer tasks on `db` (the write pool). They end when every handle is dropped.
    pub fn start(db: Db, dialect: Dialect) -> Self {
        let (tx, rx) = mpsc::channel::<Job>(4 * MAX_BATCH);
        let rx = Arc::new(Mutex::new(rx));
        let writers = match dialect {
            Dialect::Sqlite => 1,
            Dialect::Postgres => 4,
        };
        for _ in 0..writers {
            let (db, rx) = (db.clone(), rx.clone());
            tokio::spawn(async move {
                loop {
                    let batch = {
                        let mut rx = rx.lock().await;
                        let Some(first) = rx.recv().await else { return };
                        let mut batch = vec![first];
                        while batch.len() < MAX_BATCH {
                            match rx.try_recv() {
                                Ok(job) => batch.push(job),
                                Err(_) => break,
                            }
                        }
                        batch
                    };
                    // A panic would fail this batch's jobs (their answers are dropped), not stop
                    // the writer: on SQLite it is the only one.
                    let run = std::panic::AssertUnwindSafe(run_batch(&db, dialect, batch));
                    if futures_util::FutureExt::catch_unwind(run).await.is_err() {
                        tracing::error!("the index writer's batch panicked; its uploads failed");
                    }
                }
            });
        }
        Self { tx }
    }

    /// Lists `path` in `pending_blobs`; durable when this returns.
    pub async fn register(&self, path: String) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Register { path, reply }).await.map_err(|_| anyhow::anyhow!("the index writer stopped"))?;
        rx.await
            .map_err(|_| anyhow::anyhow!("the index writer stopped"))?
            .map_err(|e| anyhow::Error::new(e).context("cannot register pending blob"))
    }

    /// Removes `path` from `pending_blobs` (after the blob itself was deleted).
    pub async fn forget(&self, path: String) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Forget { path, reply }).await.map_err(|_| anyhow::anyhow!("the index writer stopped"))?;
        rx.await.map_err(|_| anyhow::anyhow!("the index writer stopped"))?.map_err(anyhow::Error::new)
    }

    /// Indexes `row` in the next batch; answers after the commit.
    pub async fn insert(&self, row: Arc<NewRow>) -> Result<Outcome, InsertError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Job::Insert { row, reply }).await.map_err(|_| InsertError::Db(sqlx::Error::PoolClosed))?;
        rx.await.map_err(|_| InsertError::Db(sqlx::Error::PoolClosed))?
    }
}

/// Runs one batch in one transaction and answers every job after the commit.
async fn run_batch(db: &Db, dialect: Dialect, mut batch: Vec<Job>) {
    // Registrations first, then instances by study and series: batches of several hubs on one
    // PostgreSQL then take the study/series row locks in the same order.
    batch.sort_by(|a, b| job_order(a).cmp(&job_order(b)));
    let mut results: Vec<Option<Result<JobOk, sqlx::Error>>> = (0..batch.len()).map(|_| None).collect();
    let outcome: Result<(), sqlx::Error> = async {
        let begin = match dialect {
            // Take the write lock up front: a deferred transaction that reads first could fail
            // to upgrade under WAL when another writer committed in between.
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        let mut tx = db.begin_with(begin).await?;
        // Registrations and forgotten blobs: one statement each for the whole batch.
        for (insert, kind) in [(true, 0u8), (false, 1u8)] {
            let idx: Vec<usize> = (0..batch.len()).filter(|&i| job_order(&batch[i]).0 == kind).collect();
            for part in idx.chunks(200) {
                let paths: Vec<&str> = part
                    .iter()
                    .filter_map(|&i| match &batch[i] {
                        Job::Register { path, .. } | Job::Forget { path, .. } => Some(path.as_str()),
                        Job::Insert { .. } => None,
                    })
                    .collect();
                // In a savepoint: a failure is theirs alone and does not abort the transaction.
                sqlx::query("SAVEPOINT part").execute(&mut *tx).await?;
                let r = pending::mark_all(&mut tx, insert, &paths).await;
                if r.is_err() {
                    sqlx::query("ROLLBACK TO SAVEPOINT part").execute(&mut *tx).await?;
                }
                sqlx::query("RELEASE SAVEPOINT part").execute(&mut *tx).await?;
                for &i in part {
                    results[i] = Some(r.as_ref().map(|_| JobOk::Done).map_err(copy_error));
                }
            }
        }
        // Instances. What the batch already made sure of (a study row, a series and its study, a
        // study's modality) is not written again; a job that writes only its instance row needs
        // no savepoint on SQLite (a failing statement undoes itself there, while on PostgreSQL
        // it aborts the whole transaction).
        let mut known = Known::default();
        let mut stored_paths = Vec::new();
        // Jobs whose rows are linked to their holding after the loop: (job, stored).
        let mut to_link: Vec<(usize, bool)> = Vec::new();
        for (i, job) in batch.iter().enumerate() {
            let Job::Insert { row, .. } = job else { continue };
            let plan = known.plan(row);
            let guarded = dialect == Dialect::Postgres || plan.writes_more_than_the_instance();
            if guarded {
                sqlx::query("SAVEPOINT job").execute(&mut *tx).await?;
            }
            let r = try_insert(&mut tx, row, &plan).await;
            let keep = r.is_ok();
            let stored = matches!(r, Ok(Outcome::Stored));
            // A duplicate is linked too: a retried upload links what it stored before.
            if keep && row.link.is_some() {
                to_link.push((i, stored));
            }
            if guarded {
                if keep {
                    sqlx::query("RELEASE SAVEPOINT job").execute(&mut *tx).await?;
                } else {
                    sqlx::query("ROLLBACK TO SAVEPOINT job").execute(&mut *tx).await?;
                    sqlx::query("RELEASE SAVEPOINT job").execute(&mut *tx).await?;
                }
            }
            if stored {
                known.learn(row);
                stored_paths.push(row.blob.path.as_str());
            }
            results[i] = Some(match r {
                Ok(Outcome::Stored) => Ok(JobOk::Stored),
                Ok(Outcome::Duplicate) => Ok(JobOk::Duplicate),
                Err(InsertError::Failure(f)) => Ok(JobOk::Refused(f)),
                Err(InsertError::Db(e)) => Err(e),
            });
        }
        // Links to the holdings, one statement per holding kind and chunk. Should one fail (a
        // draft discarded while its upload was being indexed), each of its rows is linked on its
        // own and the jobs whose holding is gone fail, their rows undone.
        for holding in [crate::index::Holding::Transfer, crate::index::Holding::Share] {
            let jobs: Vec<(usize, bool)> = to_link
                .iter()
                .copied()
                .filter(|(i, _)| matches!(&batch[*i], Job::Insert { row, .. } if row.link.as_ref().is_some_and(|(h, _)| *h == holding)))
                .collect();
            for part in jobs.chunks(100) {
                let rows: Vec<(&str, crate::index::RowRef)> = part.iter().filter_map(|(i, _)| link_of(&batch[*i])).collect();
                sqlx::query("SAVEPOINT links").execute(&mut *tx).await?;
                let all = crate::index::insert_link_rows(&mut tx, holding, &rows).await;
                if all.is_ok() {
                    sqlx::query("RELEASE SAVEPOINT links").execute(&mut *tx).await?;
                    continue;
                }
                sqlx::query("ROLLBACK TO SAVEPOINT links").execute(&mut *tx).await?;
                sqlx::query("RELEASE SAVEPOINT links").execute(&mut *tx).await?;
                for (i, stored) in part {
                    let Some(one) = link_of(&batch[*i]) else { continue };
                    sqlx::query("SAVEPOINT link").execute(&mut *tx).await?;
                    match crate::index::insert_link_rows(&mut tx, holding, std::slice::from_ref(&one)).await {
                        Ok(()) => {
                            sqlx::query("RELEASE SAVEPOINT link").execute(&mut *tx).await?;
                        }
                        Err(e) => {
                            sqlx::query("ROLLBACK TO SAVEPOINT link").execute(&mut *tx).await?;
                            sqlx::query("RELEASE SAVEPOINT link").execute(&mut *tx).await?;
                            if *stored {
                                unindex(&mut tx, &one.1).await?;
                                if let Job::Insert { row, .. } = &batch[*i] {
                                    stored_paths.retain(|p| *p != row.blob.path.as_str());
                                }
                            }
                            results[*i] = Some(Err(e));
                        }
                    }
                }
            }
        }
        // The stored instances' blobs are no longer pending.
        for part in stored_paths.chunks(200) {
            pending::mark_all(&mut tx, false, part).await?;
        }
        tx.commit().await
    }
    .await;
    for (i, job) in batch.into_iter().enumerate() {
        let r: Result<JobOk, sqlx::Error> = match (&outcome, results.get_mut(i).and_then(Option::take)) {
            (Ok(()), Some(r)) => r,
            (Err(e), _) => Err(copy_error(e)),
            (Ok(()), None) => Err(sqlx::Error::WorkerCrashed),
        };
        match job {
            Job::Register { reply, .. } | Job::Forget { reply, .. } => {
                let _ = reply.send(r.map(|_| ()));
            }
            Job::Insert { reply, .. } => {
                let _ = reply.send(match r {
                    Ok(JobOk::Stored) | Ok(JobOk::Done) => Ok(Outcome::Stored),
                    Ok(JobOk::Duplicate) => Ok(Outcome::Duplicate),
                    Ok(JobOk::Refused(f)) => Err(InsertError::Failure(f)),
                    Err(e) => Err(InsertError::Db(e)),
                });
            }
        }
    }
}

/// What a batch has already made sure of, so later instances of the same study and series
/// write only their own row.
#[derive(Default)]
struct Known {
    /// (origin, study UID)
    studies: std::collections::HashSet<(String, String)>,
    /// (origin, series UID) → its study UID
    series: std::collections::HashMap<(String, String), String>,
    /// (origin, study UID, modality)
    modalities: std::collections::HashSet<(String, String, String)>,
}

/// The writes one instance needs besides its own row.
struct Plan {
    study_row: bool,
    /// `Some(study)` when the batch knows the series' study already.
    series_owner: Option<String>,
    modality: bool,
}

impl Plan {
    fn writes_more_than_the_instance(&self) -> bool {
        self.study_row || self.series_owner.is_none() || self.modality
    }
}

impl Known {
    fn plan(&self, row: &NewRow) -> Plan {
        let (o, d) = (&row.origin, &row.described);
        Plan {
            study_row: !self.studies.contains(&(o.clone(), d.study_uid.clone())),
            series_owner: self.series.get(&(o.clone(), d.series_uid.clone())).cloned(),
            modality: !d.series.modality.is_empty()
                && !self.modalities.contains(&(o.clone(), d.study_uid.clone(), d.series.modality.clone())),
        }
    }

    /// After an instance was stored (its writes kept).
    fn learn(&mut self, row: &NewRow) {
        let (o, d) = (&row.origin, &row.described);
        self.studies.insert((o.clone(), d.study_uid.clone()));
        self.series.insert((o.clone(), d.series_uid.clone()), d.study_uid.clone());
        if !d.series.modality.is_empty() {
            self.modalities.insert((o.clone(), d.study_uid.clone(), d.series.modality.clone()));
        }
    }
}

fn job_order(job: &Job) -> (u8, &str, &str, &str) {
    match job {
        Job::Register { .. } => (0, "", "", ""),
        Job::Forget { .. } => (1, "", "", ""),
        Job::Insert { row, .. } => (2, &row.origin, &row.described.study_uid, &row.described.series_uid),
    }
}

/// What a job came to inside the batch.
enum JobOk {
    Done,
    Stored,
    Duplicate,
    Refused(Failure),
}

/// The commit failed: every job of the batch gets the error (sqlx errors are not Clone).
fn copy_error(e: &sqlx::Error) -> sqlx::Error {
    match e {
        sqlx::Error::Io(io) => sqlx::Error::Io(std::io::Error::new(io.kind(), io.to_string())),
        sqlx::Error::PoolTimedOut => sqlx::Error::PoolTimedOut,
        sqlx::Error::PoolClosed => sqlx::Error::PoolClosed,
        other => sqlx::Error::Protocol(format!("the batch's transaction failed: {other}")),
    }
}

/// An instance to index: what was described, its durable blob, the data key that wraps the
/// blob's key, and who wrote it.
pub struct NewRow {
    origin: String,
    /// The holding the upload went into, linked in the same transaction.
    link: Option<(crate::index::Holding, String)>,
    key_id: String,
    wrapped_key: String,
    described: Arc<Described>,
    blob: NewBlob,
}

impl NewRow {
    /// A row of `origin`, its blob key wrapped (`wrapped_key`) by the data key `key_id`; linked to
    /// the holding when the origin is a transfer or share.
    pub fn new(origin: &Origin, key_id: String, wrapped_key: String, described: Arc<Described>, blob: NewBlob) -> Self {
        let link = match origin {
            Origin::Hub => None,
            Origin::Transfer(id) => Some((crate::index::Holding::Transfer, id.clone())),
            Origin::Share(id) => Some((crate::index::Holding::Share, id.clone())),
        };
        Self { origin: origin.as_string(), link, key_id, wrapped_key, described, blob }
    }
}

/// Unique violations (another hub stored the same instance meanwhile), deadlocks and
/// serialization failures: trying again can succeed.
pub fn retryable(e: &sqlx::Error) -> bool {
    is_unique_violation(e) || matches!(e, sqlx::Error::Database(db) if db.code().is_some_and(|c| matches!(c.as_ref(), "40P01" | "40001")))
}

/// Why a row was not indexed: a refusal with its DICOM reason, or the database.
pub enum InsertError {
    Failure(Failure),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for InsertError {
    fn from(e: sqlx::Error) -> Self {
        InsertError::Db(e)
    }
}

/// Indexes one instance inside the batch's transaction. Refusals are decided before anything
/// is written where possible; the caller rolls back the job's savepoint unless it is `Stored`.
async fn try_insert(tx: &mut sqlx::Transaction<'static, sqlx::Any>, row: &NewRow, plan: &Plan) -> Result<Outcome, InsertError> {
    let (origin, d, blob) = (&row.origin, &*row.described, &row.blob);
    let now = now_ms();
    let owner = match &plan.series_owner {
        Some(o) => Some(o.clone()),
        None => series_owner(tx, origin, &d.series_uid).await?,
    };
    if owner.as_ref().is_some_and(|o| *o != d.study_uid) {
        return Err(mismatch());
    }
    if plan.study_row {
        let s = &d.study;
        sqlx::query(
            "INSERT INTO studies (origin, study_uid, patient_id, patient_name, patient_name_norm, \
             patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id, \
             study_description, referring_physician, referring_physician_norm, modalities, attrs, \
             created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, '|', $15, $16, $16) \
             ON CONFLICT (study_uid, origin) DO NOTHING",
        )
        .bind(origin)
        .bind(&d.study_uid)
        .bind(&s.patient_id)
        .bind(&s.patient_name)
        .bind(s.patient_name.to_uppercase())
        .bind(&s.patient_birth_date)
        .bind(&s.patient_sex)
        .bind(&s.study_date)
        .bind(&s.study_time)
        .bind(&s.accession_number)
        .bind(&s.study_id)
        .bind(&s.study_description)
        .bind(&s.referring_physician)
        .bind(s.referring_physician.to_uppercase())
        .bind(&d.metadata)
        .bind(now)
        .execute(&mut **tx)
        .await?;
    }
    if owner.is_none() {
        let se = &d.series;
        sqlx::query(
            "INSERT INTO series (origin, series_uid, study_uid, modality, series_number, series_description, \
             series_date, series_time, attrs, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (series_uid, origin) DO NOTHING",
        )
        .bind(origin)
        .bind(&d.series_uid)
        .bind(&d.study_uid)
        .bind(&se.modality)
        .bind(&se.series_number)
        .bind(&se.series_description)
        .bind(&se.series_date)
        .bind(&se.series_time)
        .bind(&d.metadata)
        .bind(now)
        .execute(&mut **tx)
        .await?;
        // Another hub may have created the series meanwhile, for another study.
        if series_owner(tx, origin, &d.series_uid).await?.is_some_and(|o| o != d.study_uid) {
            return Err(mismatch());
        }
    }
    if plan.modality {
        sqlx::query(
            "UPDATE studies SET modalities = modalities || $3 || '|', updated_at = $4 \
             WHERE origin = $1 AND study_uid = $2 AND modalities NOT LIKE $5",
        )
        .bind(origin)
        .bind(&d.study_uid)
        .bind(&d.series.modality)
        .bind(now)
        .bind(format!("%|{}|%", d.series.modality.replace(['%', '_'], "")))
        .execute(&mut **tx)
        .await?;
    }
    let layout = d.pixel.as_ref().and_then(|p| serde_json::to_string(p).ok());
    let inserted = sqlx::query(
        "INSERT INTO instances (origin, sop_instance_uid, series_uid, study_uid, sop_class_uid, \
         instance_number, transfer_syntax, size, sha256, blob_path, blob_key, key_id, pixel_layout, \
         number_of_frames, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (sop_instance_uid, origin) DO NOTHING",
    )
    .bind(origin)
    .bind(&d.sop_instance_uid)
    .bind(&d.series_uid)
    .bind(&d.study_uid)
    .bind(&d.sop_class_uid)
    .bind(d.instance_number)
    .bind(&d.transfer_syntax)
    .bind(blob.size as i64)
    .bind(&blob.sha256)
    .bind(&blob.path)
    .bind(&row.wrapped_key)
    .bind(&row.key_id)
    .bind(layout)
    .bind(d.number_of_frames)
    .bind(&d.metadata)
    .bind(now)
    .execute(&mut **tx)
    .await?
    .rows_affected();
    let outcome = if inserted == 1 {
        Outcome::Stored
    } else {
        // Already stored by this origin: the same bytes are a success, other bytes are refused.
        let sha: String = sqlx::query_scalar("SELECT sha256 FROM instances WHERE origin = $1 AND sop_instance_uid = $2")
            .bind(origin)
            .bind(&d.sop_instance_uid)
            .fetch_one(&mut **tx)
            .await?;
        if sha != blob.sha256 {
            return Err(InsertError::Failure(Failure::new(
                reason::DUPLICATE_DIFFERENT,
                "SOP Instance UID already stored with different content",
            )));
        }
        Outcome::Duplicate
    };
    Ok(outcome)
}

/// The holding id and row a job links.
fn link_of(job: &Job) -> Option<(&str, crate::index::RowRef)> {
    let Job::Insert { row, .. } = job else { return None };
    let (_, id) = row.link.as_ref()?;
    let d = &row.described;
    Some((
        id.as_str(),
        crate::index::RowRef {
            origin: row.origin.clone(),
            sop_instance_uid: d.sop_instance_uid.clone(),
            series_uid: d.series_uid.clone(),
            study_uid: d.study_uid.clone(),
        },
    ))
}

/// Takes back a row stored in this transaction whose holding is gone: the instance, and its
/// series and study rows when nothing else is left in them.
async fn unindex(tx: &mut sqlx::Transaction<'static, sqlx::Any>, r: &crate::index::RowRef) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM instances WHERE origin = $1 AND sop_instance_uid = $2")
        .bind(&r.origin)
        .bind(&r.sop_instance_uid)
        .execute(&mut **tx)
        .await?;
    crate::index::drop_empty(tx, &r.origin, &r.study_uid).await
}

async fn series_owner(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    origin: &str,
    series_uid: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT study_uid FROM series WHERE origin = $1 AND series_uid = $2")
        .bind(origin)
        .bind(series_uid)
        .fetch_optional(&mut **tx)
        .await
}

fn mismatch() -> InsertError {
    InsertError::Failure(Failure::new(reason::DATASET_MISMATCH, "the Series Instance UID already belongs to another study"))
}
