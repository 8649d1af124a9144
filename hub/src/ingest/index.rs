//! Index writes: one transaction per instance makes it visible together with its study and
//! series rows, and removes its `pending_blobs` entry.

use sqlx::Row;

use super::describe::Described;
use super::{Failure, Outcome, reason};
use crate::db::{Dialect, is_unique_violation, now_ms};
use crate::state::AppState;
use crate::storage::crypto::Key;

pub struct NewBlob {
    pub path: String,
    pub key: Key,
    pub size: u64,
    pub sha256: String,
}

/// Policy for a SOP Instance UID that is already stored: the same bytes again is a success
/// (`Duplicate`, nothing changes); different bytes are refused with 0x0111 and the stored
/// instance stays as it is — an instance is immutable once stored.
pub async fn insert(state: &AppState, d: &Described, blob: &NewBlob) -> Result<Outcome, Failure> {
    for attempt in 0..3 {
        match try_insert(state, d, blob).await {
            Ok(o) => return Ok(o),
            Err(InsertError::Failure(f)) => return Err(f),
            Err(InsertError::Db(e)) if is_unique_violation(&e) && attempt < 2 => {
                // A concurrent upload of the same instance won; look again.
                continue;
            }
            Err(InsertError::Db(e)) => {
                tracing::error!(error = %e, "indexing failed");
                return Err(Failure::new(reason::OUT_OF_RESOURCES, "the hub's database is unavailable"));
            }
        }
    }
    Err(Failure::new(reason::OUT_OF_RESOURCES, "the hub's database is busy"))
}

enum InsertError {
    Failure(Failure),
    Db(sqlx::Error),
}

impl From<sqlx::Error> for InsertError {
    fn from(e: sqlx::Error) -> Self {
        InsertError::Db(e)
    }
}

async fn try_insert(state: &AppState, d: &Described, blob: &NewBlob) -> Result<Outcome, InsertError> {
    // The study key exists before the transaction (created race-free on its own).
    let study_key = state
        .keys
        .study_key_or_create(&state.db, &state.db_write, &d.study_uid)
        .await
        .map_err(|e| {
            tracing::error!(error = %format!("{e:#}"), "study key unavailable");
            InsertError::Failure(Failure::new(reason::OUT_OF_RESOURCES, "the hub's key service is unavailable"))
        })?;
    let wrapped_blob_key = study_key.wrap(&blob.key.0, b"ferry-blob-key");
    let begin = match state.dialect {
        // Take the write lock up front: a deferred transaction that reads first could fail to
        // upgrade under WAL when another writer committed in between.
        Dialect::Sqlite => "BEGIN IMMEDIATE",
        Dialect::Postgres => "BEGIN",
    };
    let mut tx = state.db_write.begin_with(begin).await?;
    if let Some(row) = sqlx::query("SELECT sha256 FROM instances WHERE sop_instance_uid = $1")
        .bind(&d.sop_instance_uid)
        .fetch_optional(&mut *tx)
        .await?
    {
        let sha: String = row.try_get(0)?;
        tx.rollback().await?;
        return if sha == blob.sha256 {
            Ok(Outcome::Duplicate)
        } else {
            Err(InsertError::Failure(Failure::new(
                reason::DUPLICATE_DIFFERENT,
                "SOP Instance UID already stored with different content",
            )))
        };
    }
    let now = now_ms();
    let s = &d.study;
    sqlx::query(
        "INSERT INTO studies (study_uid, patient_id, patient_name, patient_name_norm, \
         patient_birth_date, patient_sex, study_date, study_time, accession_number, study_id, \
         study_description, referring_physician, referring_physician_norm, modalities, attrs, \
         created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, '|', $14, $15, $15) \
         ON CONFLICT (study_uid) DO NOTHING",
    )
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
    .execute(&mut *tx)
    .await?;
    let se = &d.series;
    sqlx::query(
        "INSERT INTO series (series_uid, study_uid, modality, series_number, series_description, \
         series_date, series_time, attrs, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (series_uid) DO NOTHING",
    )
    .bind(&d.series_uid)
    .bind(&d.study_uid)
    .bind(&se.modality)
    .bind(&se.series_number)
    .bind(&se.series_description)
    .bind(&se.series_date)
    .bind(&se.series_time)
    .bind(&d.metadata)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let owner: String = sqlx::query("SELECT study_uid FROM series WHERE series_uid = $1")
        .bind(&d.series_uid)
        .fetch_one(&mut *tx)
        .await?
        .try_get(0)?;
    if owner != d.study_uid {
        tx.rollback().await?;
        return Err(InsertError::Failure(Failure::new(
            reason::DATASET_MISMATCH,
            "the Series Instance UID already belongs to another study",
        )));
    }
    if !se.modality.is_empty() {
        sqlx::query(
            "UPDATE studies SET modalities = modalities || $2 || '|', updated_at = $3 \
             WHERE study_uid = $1 AND modalities NOT LIKE $4",
        )
        .bind(&d.study_uid)
        .bind(&se.modality)
        .bind(now)
        .bind(format!("%|{}|%", se.modality.replace(['%', '_'], "")))
        .execute(&mut *tx)
        .await?;
    }
    let layout = d.pixel.as_ref().and_then(|p| serde_json::to_string(p).ok());
    sqlx::query(
        "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, \
         instance_number, transfer_syntax, size, sha256, blob_path, blob_key, pixel_layout, \
         number_of_frames, metadata, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(&d.sop_instance_uid)
    .bind(&d.series_uid)
    .bind(&d.study_uid)
    .bind(&d.sop_class_uid)
    .bind(d.instance_number)
    .bind(&d.transfer_syntax)
    .bind(blob.size as i64)
    .bind(&blob.sha256)
    .bind(&blob.path)
    .bind(&wrapped_blob_key)
    .bind(layout)
    .bind(d.number_of_frames)
    .bind(&d.metadata)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    sqlx::query("DELETE FROM pending_blobs WHERE blob_path = $1")
        .bind(&blob.path)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Outcome::Stored)
}
