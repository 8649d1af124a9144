//! DICOM Link Exchange (DLX, DIN/TS 19455) v1: how a program — a PACS, a viewer, another portal,
//! a clinic's connector — fetches what an access code unlocks.
//!
//! `GET /dlx/v1/api_info`; `GET /dlx/v1/token/{code}` always answers 200 with the question (for
//! a code that doesn't exist a decoy that looks like a real code's, so codes cannot be
//! enumerated; the lookup draws on the same per-address budget as answers and is audited);
//! `POST /dlx/v1/tokentfa/{code}` answers a JWT (`application/jwt`), 401 for an unknown code or a
//! wrong answer alike, 403 only for right answers to an expired share; with the JWT as bearer
//! token `GET /dlx/v1/list`, `/download/{id}` (a study as a ZIP in IHE PDI layout, a report as its
//! PDF) and `/downloadall`. The same bearer token reads the shared studies through WADO-RS.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_schemas::dlx::{ApiInfo, DataItem, DataList, Question, TfaAnswers, TokenInfo};

use crate::audit;
use crate::error::{AppError, AppResult};
use crate::shares::code::AccessCode;
use crate::shares::factor;
use crate::shares::holder::{self, ShareHolder};
use crate::shares::redeem::{self, Outcome, SessionKind};
use crate::state::AppState;

pub fn router(state: &AppState) -> Router<AppState> {
    // Looking a code up and answering draw on one budget per client address.
    let limited = Router::new().route("/dlx/v1/tokentfa/{value}", post(tokentfa)).route("/dlx/v1/token/{value}", get(token));
    Router::new()
        .merge(state.redeem_limit.wrap(limited))
        .route("/dlx/v1/api_info", get(api_info))
        .route("/dlx/v1/list", get(list))
        .route("/dlx/v1/download/{id}", get(download))
        .route("/dlx/v1/downloadall", get(download_all))
}

pub fn info(state: &AppState) -> ApiInfo {
    ApiInfo {
        dlx_version: "v1".into(),
        vendor_information: format!("Ferry {}", env!("CARGO_PKG_VERSION")),
        api_base_path: format!("{}/dlx/v1", state.base_url),
    }
}

async fn api_info(State(state): State<AppState>) -> Json<ApiInfo> {
    Json(info(&state))
}

/// What a lookup found, for the audit trail.
enum Found {
    Share(String),
    Unknown,
    Typo,
}

/// The question for a code: a share's own; for a well-formed code that names no share a decoy
/// ([`factor::decoy_type`]: the same texts as real codes', chosen by the code's keyed hash, so
/// the same on every lookup); for a malformed code (public arithmetic tells it) the birth date.
async fn question_for(state: &AppState, value: &str) -> AppResult<(Question, Found)> {
    Ok(match AccessCode::parse(value) {
        Ok(code) => match redeem::lookup(state, &code).await? {
            Some(s) => (factor::question(&s.question_type, &s.question_text), Found::Share(s.id)),
            None => (factor::question(factor::decoy_type(state.secret.decoy_seed(code.as_str())), ""), Found::Unknown),
        },
        Err(_) => (factor::question(factor::BIRTH_DATE, ""), Found::Typo),
    })
}

fn token_info(state: &AppState, q: Question) -> TokenInfo {
    TokenInfo { api_info: vec![info(state)], tfa_question: vec![q] }
}

/// The question for a code, for a page that shows it again after an answer (that answer was
/// rate limited and audited already).
pub async fn questions(state: &AppState, value: &str) -> AppResult<TokenInfo> {
    Ok(token_info(state, question_for(state, value).await?.0))
}

/// An outsider looks a code up (`/dlx/v1/token/{code}`, the redeem link): the question, with an
/// audit record (share if known, client address; never the code). The routes are rate limited
/// with the answers, so a lookup costs what a guess costs and tells no more.
pub async fn lookup_questions(state: &AppState, value: &str, client: &str) -> AppResult<TokenInfo> {
    let (q, found) = question_for(state, value).await?;
    let (share_id, detail) = match &found {
        Found::Share(id) => (id.as_str(), ""),
        Found::Unknown => ("", "unknown code"),
        Found::Typo => ("", "typo"),
    };
    audit::record(
        &state.db_write,
        audit::Event {
            actor: "anonymous",
            client_addr: client,
            action: "share.lookup",
            object_kind: "share",
            object_id: share_id,
            result: "ok",
            detail,
        },
    )
    .await?;
    Ok(token_info(state, q))
}

async fn token(State(state): State<AppState>, ci: ConnectInfo<SocketAddr>, Path(value): Path<String>) -> AppResult<Json<TokenInfo>> {
    Ok(Json(lookup_questions(&state, &value, &crate::http::client_addr(&ci)).await?))
}

/// DLX errors carry no body beyond the status (401 and 403 have fixed meanings).
fn status(code: StatusCode) -> Response {
    crate::error::problem(code, None)
}

async fn tokentfa(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    Path(value): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Response> {
    let answers: TfaAnswers = crate::error::parse_json(&body)
        .map_err(|e| AppError::BadRequest(format!("expected {{\"tfaAnswer\": [{{\"questionId\", \"answer\"}}]}}: {e}")))?;
    let client = crate::http::client_addr(&ci);
    Ok(match redeem::redeem(&state, &value, &answers.tfa_answer, SessionKind::Dlx, &client).await? {
        Outcome::Granted { token, .. } => {
            let mut r = token.into_response();
            r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/jwt"));
            r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        // A malformed code is just another code that doesn't exist.
        Outcome::Denied | Outcome::Typo(_) => status(StatusCode::UNAUTHORIZED),
        Outcome::Expired => status(StatusCode::FORBIDDEN),
    })
}

/// The holder of a DLX bearer token; 401 otherwise (a browser cookie does not count here).
async fn bearer(state: &AppState, headers: &HeaderMap) -> Result<ShareHolder, Response> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|a| a.strip_prefix("Bearer ").or_else(|| a.strip_prefix("bearer ")))
        .map(str::trim);
    let unauthorized = || {
        let mut r = status(StatusCode::UNAUTHORIZED);
        r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"dlx\""));
        r
    };
    let Some(token) = token else { return Err(unauthorized()) };
    match holder::by_jwt(state, token).await {
        Ok(Some(h)) => Ok(h),
        Ok(None) => Err(unauthorized()),
        Err(e) => Err(e.into_response()),
    }
}

async fn list(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let h = match bearer(&state, &headers).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    match items(&state, &h).await {
        Ok(items) => Json(DataList { data_item: items }).into_response(),
        Err(e) => e.into_response(),
    }
}

/// One item per study (ZIP) and per released report (PDF). Ids: the Study Instance UID for a
/// study, the report's id for a report.
async fn items(state: &AppState, h: &ShareHolder) -> AppResult<Vec<DataItem>> {
    let view = holder::view(state, &h.share).await?;
    let mut out = Vec::new();
    for s in &view.studies {
        out.push(DataItem {
            id: s.study_uid.clone(),
            mime_type: "application/zip".into(),
            description: if s.description.is_empty() { "DICOM study".into() } else { s.description.clone() },
            study_instance_uid: Some(s.study_uid.clone()),
            date: s.study_date.clone(),
            modalities: Some(s.modalities.join("\\")),
            patients_name: s.patient_name.clone(),
            patients_birthdate: s.patient_birth_date.clone(),
            patients_sex: sex_of(state, &h.share.id, &s.study_uid).await?,
            file_count: Some(s.instances),
        });
    }
    for r in view.reports.iter().filter(|r| r.released) {
        let study = view.studies.iter().find(|s| s.study_uid == r.study_uid);
        out.push(DataItem {
            id: r.id.clone(),
            mime_type: "application/pdf".into(),
            description: "Befund / Report".into(),
            study_instance_uid: Some(r.study_uid.clone()),
            date: study.map(|s| s.study_date.clone()).unwrap_or_default(),
            modalities: None,
            patients_name: study.map(|s| s.patient_name.clone()).unwrap_or_default(),
            patients_birthdate: study.map(|s| s.patient_birth_date.clone()).unwrap_or_default(),
            patients_sex: String::new(),
            file_count: None,
        });
    }
    Ok(out)
}

/// The patient's sex as the share's own study rows say it (not another tenant's rows of the
/// same UID).
async fn sex_of(state: &AppState, share_id: &str, study: &str) -> AppResult<String> {
    Ok(super::db::patient_sex(&state.db, share_id, study).await?.unwrap_or_default())
}

async fn download(State(state): State<AppState>, ci: ConnectInfo<SocketAddr>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let h = match bearer(&state, &headers).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let client = crate::http::client_addr(&ci);
    let result = async {
        let view = holder::view(&state, &h.share).await?;
        if view.studies.iter().any(|s| s.study_uid == id) {
            let Some(slot) = slot(&state) else { return Ok(busy()) };
            return holder::download(&state, &h, Some(&id), &client).await.map(|r| holding(r, slot));
        }
        if view.reports.iter().any(|r| r.id == id && r.released) {
            return holder::report(&state, &h, &id, &client).await;
        }
        Err(AppError::BadRequest("no such data item".into()))
    }
    .await;
    result.unwrap_or_else(IntoResponse::into_response)
}

async fn download_all(State(state): State<AppState>, ci: ConnectInfo<SocketAddr>, headers: HeaderMap) -> Response {
    let h = match bearer(&state, &headers).await {
        Ok(h) => h,
        Err(r) => return r,
    };
    let Some(slot) = slot(&state) else { return busy() };
    holder::download(&state, &h, None, &crate::http::client_addr(&ci))
        .await
        .map(|r| holding(r, slot))
        .unwrap_or_else(IntoResponse::into_response)
}

/// Seconds a DLX client is asked to wait when every download slot is taken.
const BUSY_SECS: u64 = 10;

fn slot(state: &AppState) -> Option<tokio::sync::OwnedSemaphorePermit> {
    state.dlx_downloads.clone().try_acquire_owned().ok()
}

/// 503 with `timeOutInSeconds` (and Retry-After), as DLX answers a busy server.
fn busy() -> Response {
    let body = Json(ferry_schemas::dlx::Busy { time_out_in_seconds: BUSY_SECS });
    (StatusCode::SERVICE_UNAVAILABLE, [(axum::http::header::RETRY_AFTER, BUSY_SECS.to_string())], body).into_response()
}

/// The slot stays taken until the response body is sent (or the client goes away).
fn holding(r: Response, slot: tokio::sync::OwnedSemaphorePermit) -> Response {
    use futures_util::StreamExt;
    let (parts, body) = r.into_parts();
    let stream = body.into_data_stream().map(move |chunk| {
        let _held = &slot;
        chunk
    });
    Response::from_parts(parts, axum::body::Body::from_stream(stream))
}
