//! Report PDFs of a share: uploaded with the share or later, encrypted like instances (a blob key
//! wrapped by the study's data key), shown to the holder from their release time on.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use ferry_schemas::ShareReport;
use futures_util::TryStreamExt;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::db::ShareRow;
use crate::access::Principal;
use crate::audit::{self, Event};
use crate::db::now_ms;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use crate::storage::crypto::Key;

pub const MAX_BYTES: usize = 50 << 20;

#[derive(Deserialize, Default)]
pub struct ReportQuery {
    /// The study it reports on (default: the share's only study).
    pub study: Option<String>,
    /// Released from then on (Unix ms); or `release_in_hours`; default now.
    pub release_at: Option<i64>,
    pub release_in_hours: Option<u32>,
    /// A name for staff lists (default `report.pdf`).
    pub name: Option<String>,
}

/// Stores `pdf` as a report of the share.
pub async fn attach(state: &AppState, actor: &str, share: &ShareRow, q: &ReportQuery, pdf: Vec<u8>) -> AppResult<ShareReport> {
    if !matches!(share.state.as_str(), "active" | "draft") {
        return Err(AppError::Conflict(format!("a {} share takes no reports", share.state)));
    }
    if !pdf.starts_with(b"%PDF-") {
        return Err(AppError::UnsupportedMediaType("a report must be a PDF file".into()));
    }
    let studies: Vec<String> =
        crate::index::linked_studies(&state.db, crate::index::Holding::Share, &share.id).await?.into_iter().map(|s| s.study_uid).collect();
    let study = match (&q.study, studies.as_slice()) {
        (Some(s), _) if studies.contains(s) => s.clone(),
        (Some(_), _) => return Err(AppError::NotFound("the share holds no such study".into())),
        (None, [one]) => one.clone(),
        (None, []) => return Err(AppError::Conflict("add the images before the report".into())),
        (None, _) => return Err(AppError::BadRequest("the share holds several studies: name the study (?study=UID)".into())),
    };
    let now = now_ms();
    let release_at = match (q.release_at, q.release_in_hours) {
        (Some(_), Some(_)) => return Err(AppError::BadRequest("give release_at or release_in_hours, not both".into())),
        (Some(t), None) => t,
        (None, Some(h)) => now + h as i64 * 3_600_000,
        (None, None) => now,
    };
    let name = q.name.as_deref().map(str::trim).filter(|n| !n.is_empty()).unwrap_or("report.pdf");
    if name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest("the report's name is too long or has control characters".into()));
    }
    // The share's own data key for the study: purging the share shreds the report with it.
    let key_id = crate::index::Holding::Share.origin(&share.id).key_id(&study);
    let blob_key = Key::random();
    let wrapped = state.keys.wrap_blob_key(&state.db, &state.db_write, &key_id, &blob_key).await?;
    let blob_path = format!("reports/{}", uuid::Uuid::new_v4().simple());
    state.blobs.write_listed(&state.db_write, &blob_path, &blob_key, &pdf).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = state.db_write.begin().await?;
    let report = super::db::NewReport {
        id: &id,
        share_id: &share.id,
        study_uid: &study,
        name,
        size: pdf.len() as i64,
        sha256: &hex::encode(Sha256::digest(&pdf)),
        blob_path: &blob_path,
        blob_key: &wrapped,
        key_id: &key_id,
        release_at,
        created_at: now,
    };
    super::db::insert_report(&mut tx, &report).await?;
    crate::storage::pending::settle(&mut tx, &blob_path).await?;
    tx.commit().await?;
    audit::record(
        &state.db_write,
        Event {
            actor,
            client_addr: "",
            action: "share.report.attach",
            object_kind: "share",
            object_id: &share.id,
            result: "ok",
            detail: &id,
        },
    )
    .await?;
    Ok(ShareReport { id, study_uid: study, name: name.into(), size: pdf.len() as u64, release_at, released: release_at <= now })
}

pub async fn api_upload(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    crate::error::ApiQuery(q): crate::error::ApiQuery<ReportQuery>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<(StatusCode, Json<ShareReport>)> {
    let share = super::managed(&state, &who, &id).await?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.starts_with("application/pdf") {
        return Err(AppError::UnsupportedMediaType("send the report as application/pdf".into()));
    }
    let mut pdf = Vec::new();
    let mut stream = body.into_data_stream();
    while let Some(chunk) = stream.try_next().await.map_err(|e| AppError::BadRequest(format!("reading the upload: {e}")))? {
        if pdf.len() + chunk.len() > MAX_BYTES {
            return Err(AppError::PayloadTooLarge(format!("a report may have at most {} MB", MAX_BYTES >> 20)));
        }
        pdf.extend_from_slice(&chunk);
    }
    let r = attach(&state, &super::actor(&who), &share, &q, pdf).await?;
    Ok((StatusCode::CREATED, Json(r)))
}
