//! The study index and its tenancy model: which rows exist, who wrote them, and which holdings
//! link them.
//!
//! A UID is chosen by whoever wrote the file: never a secret, never proof. So every instance,
//! series and study row is keyed by its [`Origin`] — the holding whose upload wrote it (a
//! transfer, a share, or the operator's own `hub` uploads) — together with its UID. Two tenants
//! that send the same UIDs get separate rows, blobs and data keys; neither's upload changes what
//! the other sees or learns. Transfers and shares are **holdings**: they link rows (by origin and
//! UID), and what a caller may see is exactly the rows its holdings link
//! ([`scope::StudyScope`]). Study and series attributes come from rows of one origin, so they
//! are derived only from files of the tenant that wrote them.
//!
//! A holding links whole studies of an origin: a transfer or share links what was uploaded into
//! it, and a share made from a community's holdings (or forwarded) takes whole studies. So a
//! study row's summary (its modalities) describes rows its viewer may read.
//!
//! Releasing a holding ([`release`]) removes its links and then every row, blob and data key that
//! no other holding links any more.

pub mod instances;
pub mod scope;

use ferry_schemas::{TransferSeries, TransferStudy};

use crate::db::Db;

/// Who wrote a row: the holding an upload went into.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Origin {
    /// The operator's STOW-RS and uploads (the operator token); they belong to no community.
    Hub,
    Transfer(String),
    Share(String),
}

impl Origin {
    /// The stored form: `hub`, `transfer:<id>`, `share:<id>`.
    pub fn as_string(&self) -> String {
        match self {
            Origin::Hub => "hub".into(),
            Origin::Transfer(id) => format!("transfer:{id}"),
            Origin::Share(id) => format!("share:{id}"),
        }
    }

    /// The data key that wraps the blobs of this origin's rows of one study.
    pub fn key_id(&self, study_uid: &str) -> String {
        format!("{}|{study_uid}", self.as_string())
    }
}

/// A transfer or a share: what links instance rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holding {
    Transfer,
    Share,
}

impl Holding {
    /// The link table.
    pub fn table(self) -> &'static str {
        match self {
            Holding::Transfer => "transfer_instances",
            Holding::Share => "share_instances",
        }
    }

    /// Its column naming the transfer or share.
    pub fn key(self) -> &'static str {
        match self {
            Holding::Transfer => "transfer_id",
            Holding::Share => "share_id",
        }
    }

    /// The origin of what is uploaded into holding `id`.
    pub fn origin(self, id: &str) -> Origin {
        match self {
            Holding::Transfer => Origin::Transfer(id.to_string()),
            Holding::Share => Origin::Share(id.to_string()),
        }
    }
}

/// One instance row, named the way links name it (read from the columns origin,
/// sop_instance_uid, series_uid, study_uid).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct RowRef {
    pub origin: String,
    pub sop_instance_uid: String,
    pub series_uid: String,
    pub study_uid: String,
}

/// Links instance rows to a transfer or share; already linked SOP Instance UIDs are skipped
/// (a holding shows one instance per UID).
pub async fn insert_links(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    holding: Holding,
    id: &str,
    rows: &[RowRef],
) -> Result<(), sqlx::Error> {
    // 500 rows (2,500 parameters) a statement stays well within both databases' limits.
    for part in rows.chunks(500) {
        let pairs: Vec<(&str, RowRef)> = part.iter().map(|r| (id, r.clone())).collect();
        insert_link_rows(tx, holding, &pairs).await?;
    }
    Ok(())
}

/// Links rows to holdings of one kind in one statement: (holding id, row) pairs; already linked
/// SOP Instance UIDs are skipped.
pub async fn insert_link_rows(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    holding: Holding,
    rows: &[(&str, RowRef)],
) -> Result<(), sqlx::Error> {
    if rows.is_empty() {
        return Ok(());
    }
    let (table, key) = (holding.table(), holding.key());
    let values: Vec<String> =
        (0..rows.len()).map(|i| format!("(${}, ${}, ${}, ${}, ${})", 5 * i + 1, 5 * i + 2, 5 * i + 3, 5 * i + 4, 5 * i + 5)).collect();
    let sql = format!(
        "INSERT INTO {table} ({key}, origin, sop_instance_uid, series_uid, study_uid) VALUES {} \
         ON CONFLICT ({key}, sop_instance_uid) DO NOTHING",
        values.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for (id, r) in rows {
        q = q
            .bind(id.to_string())
            .bind(r.origin.clone())
            .bind(r.sop_instance_uid.clone())
            .bind(r.series_uid.clone())
            .bind(r.study_uid.clone());
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// The rows a holding links.
pub async fn linked_rows(db: &Db, holding: Holding, id: &str) -> Result<Vec<RowRef>, sqlx::Error> {
    let sql = format!(
        "SELECT origin, sop_instance_uid, series_uid, study_uid FROM {} WHERE {} = $1 \
         ORDER BY study_uid, series_uid, sop_instance_uid",
        holding.table(),
        holding.key()
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(id).fetch_all(db).await
}

/// A series of a study linked to a holding, as [`linked_studies`] reads it.
#[derive(sqlx::FromRow)]
struct LinkedSeries {
    study_uid: String,
    patient_name: String,
    patient_id: String,
    patient_birth_date: String,
    study_date: String,
    study_description: String,
    series_uid: String,
    modality: String,
    series_description: String,
    instances: i64,
    bytes: i64,
}

/// The studies (with their series) of the rows linked to a transfer or a share. Rows of several
/// origins under one Study Instance UID are shown as one study (attributes of the first origin).
pub async fn linked_studies(db: &Db, holding: Holding, id: &str) -> Result<Vec<TransferStudy>, sqlx::Error> {
    let rows: Vec<LinkedSeries> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT s.study_uid, s.patient_name, s.patient_id, s.patient_birth_date, s.study_date, s.study_description, \
         se.series_uid, se.modality, se.series_description, COUNT(*) AS instances, CAST(SUM(i.size) AS BIGINT) AS bytes, s.origin \
         FROM {} l \
         JOIN instances i ON i.origin = l.origin AND i.sop_instance_uid = l.sop_instance_uid \
         JOIN series se ON se.origin = i.origin AND se.series_uid = i.series_uid \
         JOIN studies s ON s.origin = i.origin AND s.study_uid = i.study_uid \
         WHERE l.{} = $1 \
         GROUP BY s.origin, s.study_uid, s.patient_name, s.patient_id, s.patient_birth_date, s.study_date, s.study_description, \
         se.series_uid, se.modality, se.series_description \
         ORDER BY s.study_uid, s.origin, se.series_uid",
        holding.table(),
        holding.key()
    )))
    .bind(id)
    .fetch_all(db)
    .await?;
    let mut out: Vec<TransferStudy> = Vec::new();
    for r in rows {
        let series = TransferSeries {
            series_uid: r.series_uid,
            modality: r.modality,
            description: r.series_description,
            instances: r.instances as u64,
        };
        let bytes = r.bytes as u64;
        if out.last().is_none_or(|s| s.study_uid != r.study_uid) {
            out.push(TransferStudy {
                study_uid: r.study_uid,
                patient_name: r.patient_name,
                patient_id: r.patient_id,
                patient_birth_date: r.patient_birth_date,
                study_date: r.study_date,
                description: r.study_description,
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
            match s.series.iter_mut().find(|x| x.series_uid == series.series_uid) {
                Some(x) => x.instances += series.instances,
                None => s.series.push(series),
            }
        }
    }
    out.sort_by(|a, b| a.study_date.cmp(&b.study_date).then_with(|| a.study_uid.cmp(&b.study_uid)));
    Ok(out)
}

/// What [`release`] left for after the commit.
#[derive(Debug, Default)]
pub struct Released {
    /// Blobs no row names any more, listed in `pending_blobs` (due at once) in the same
    /// transaction: delete them after the commit, or the sweeper will.
    pub blobs: Vec<String>,
    /// Data keys deleted (crypto-shredded).
    pub shredded: u64,
}

/// An instance row [`release`] deleted: its blob and the data key that wrapped the blob's key.
#[derive(sqlx::FromRow)]
struct Unlinked {
    blob_path: String,
    key_id: String,
}

/// Unlinks every row of holding `id` and deletes, inside `tx`, each row that no other holding
/// links any more — the data key first where none of its rows is left, so the blobs can never be
/// decrypted again — then the series and study rows left empty. Rows other holdings still link
/// stay, whoever wrote them. `extra_blobs` and `extra_keys` (study UID, key id) are blobs and
/// keys of the holding's own (reports) that go with it.
pub async fn release(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    holding: Holding,
    id: &str,
    extra_blobs: Vec<String>,
    extra_keys: Vec<(String, String)>,
) -> Result<Released, sqlx::Error> {
    let (table, key) = (holding.table(), holding.key());
    let linked: Vec<RowRef> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT origin, sop_instance_uid, series_uid, study_uid FROM {table} WHERE {key} = $1"
    )))
    .bind(id)
    .fetch_all(&mut **tx)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE {key} = $1"))).bind(id).execute(&mut **tx).await?;
    let mut out = Released { blobs: extra_blobs, shredded: 0 };
    let mut keys: Vec<(String, String)> = extra_keys;
    let mut studies: Vec<(String, String)> = Vec::new();
    for r in &linked {
        let gone: Option<Unlinked> = sqlx::query_as(
            "DELETE FROM instances WHERE origin = $1 AND sop_instance_uid = $2 \
             AND NOT EXISTS (SELECT 1 FROM transfer_instances l WHERE l.origin = $1 AND l.sop_instance_uid = $2) \
             AND NOT EXISTS (SELECT 1 FROM share_instances l WHERE l.origin = $1 AND l.sop_instance_uid = $2) \
             RETURNING blob_path, key_id",
        )
        .bind(&r.origin)
        .bind(&r.sop_instance_uid)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(gone) = gone {
            out.blobs.push(gone.blob_path);
            keys.push((r.study_uid.clone(), gone.key_id));
            studies.push((r.origin.clone(), r.study_uid.clone()));
        }
    }
    keys.sort();
    keys.dedup();
    studies.sort();
    studies.dedup();
    // A data key wraps blobs of one study UID only (its rows' and reports'), so the rows that
    // could still use it are found by the study.
    for (study, k) in &keys {
        let n = sqlx::query(
            "DELETE FROM study_keys WHERE key_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM instances WHERE study_uid = $2 AND key_id = $1) \
             AND NOT EXISTS (SELECT 1 FROM share_reports WHERE study_uid = $2 AND key_id = $1)",
        )
        .bind(k)
        .bind(study)
        .execute(&mut **tx)
        .await?;
        out.shredded += n.rows_affected();
    }
    for (origin, uid) in &studies {
        drop_empty(tx, origin, uid).await?;
    }
    // Listed for the sweeper (as due at once) before the rows that named them are gone.
    crate::storage::pending::list_due(tx, &out.blobs).await?;
    Ok(out)
}

/// Deletes the series rows of one origin's study that have no instances left, then the study row
/// if it has none left either.
pub async fn drop_empty(tx: &mut sqlx::Transaction<'static, sqlx::Any>, origin: &str, study_uid: &str) -> Result<(), sqlx::Error> {
    sqlx::query(
        "DELETE FROM series WHERE origin = $1 AND study_uid = $2 AND NOT EXISTS \
         (SELECT 1 FROM instances i WHERE i.origin = $1 AND i.series_uid = series.series_uid)",
    )
    .bind(origin)
    .bind(study_uid)
    .execute(&mut **tx)
    .await?;
    sqlx::query(
        "DELETE FROM studies WHERE origin = $1 AND study_uid = $2 \
         AND NOT EXISTS (SELECT 1 FROM instances WHERE origin = $1 AND study_uid = $2)",
    )
    .bind(origin)
    .bind(study_uid)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
