//! STOW-RS: `POST /studies[/{study}]` with `multipart/related; type="application/dicom"`.
//! Each part is stored independently; the response lists stored instances in
//! ReferencedSOPSequence and refused ones in FailedSOPSequence with their failure reason.

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::TryStreamExt;
use serde_json::{Value, json};

use super::{DICOM_JSON, base_url};
use crate::access::Principal;
use crate::error::AppError;
use crate::ingest::{Failure, Stored, describe::valid_uid, reason};
use crate::state::AppState;
use crate::uploads::receive;

pub async fn store(State(state): State<AppState>, principal: Principal, headers: HeaderMap, body: Body) -> Result<Response, AppError> {
    store_impl(state, principal, headers, None, body).await
}

pub async fn store_in_study(
    State(state): State<AppState>,
    principal: Principal,
    Path(study): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, AppError> {
    if !valid_uid(&study) {
        return Err(AppError::BadRequest("the Study Instance UID in the URL is not a valid UID".into()));
    }
    store_impl(state, principal, headers, Some(study), body).await
}

/// Extracts the multipart boundary from a `multipart/related` content type, checking that the
/// parts are DICOM files.
pub fn multipart_boundary(headers: &HeaderMap) -> Result<String, AppError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| AppError::UnsupportedMediaType("missing Content-Type; send multipart/related; type=\"application/dicom\"".into()))?;
    let mime =
        crate::http::accept::parse_content_type(ct).ok_or_else(|| AppError::UnsupportedMediaType("malformed Content-Type".into()))?;
    if mime.essence != "multipart/related" {
        return Err(AppError::UnsupportedMediaType(format!(
            "Content-Type {} is not supported; send multipart/related; type=\"application/dicom\"",
            mime.essence
        )));
    }
    if let Some(t) = mime.param("type")
        && !t.eq_ignore_ascii_case("application/dicom")
    {
        return Err(AppError::UnsupportedMediaType(format!("parts of type {t} are not supported; only application/dicom")));
    }
    mime.param("boundary")
        .map(str::to_string)
        .filter(|b| !b.is_empty())
        .ok_or_else(|| AppError::BadRequest("the multipart Content-Type has no boundary".into()))
}

async fn store_impl(
    state: AppState,
    principal: Principal,
    headers: HeaderMap,
    study: Option<String>,
    body: Body,
) -> Result<Response, AppError> {
    if !principal.can_store() {
        return Err(AppError::Forbidden);
    }
    let boundary = multipart_boundary(&headers)?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut multipart = multer::Multipart::new(stream, boundary);
    // Only the operator stores through STOW-RS; its rows belong to no community.
    let mut pipeline = receive::Pipeline::<()>::new(&state, crate::index::Origin::Hub);
    let mut failed: Vec<Failure> = Vec::new();
    let mut parts = 0usize;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) if parts == 0 => {
                return Err(AppError::BadRequest(format!("malformed multipart body: {e}")));
            }
            Err(e) => {
                failed.push(Failure::new(reason::CANNOT_UNDERSTAND, format!("malformed multipart body: {e}")));
                break;
            }
        };
        parts += 1;
        let part_type = field.content_type().map(|m| m.essence_str().to_string());
        let mut field = field;
        if let Some(t) = part_type.filter(|t| t != "application/dicom") {
            while let Ok(Some(_)) = field.chunk().await {}
            failed.push(Failure::new(reason::CANNOT_UNDERSTAND, format!("part of type {t} is not application/dicom")));
            continue;
        }
        match receive::receive(&state, &mut field, study.as_deref()).await {
            Ok(r) => pipeline.push((), r).await,
            Err(f) => {
                let fatal = f.fatal;
                failed.push(f);
                if fatal {
                    break;
                }
            }
        }
    }
    let mut stored: Vec<Stored> = Vec::new();
    for (_, r) in pipeline.finish().await {
        match r {
            Ok(s) => stored.push(s),
            Err(f) => failed.push(f),
        }
    }
    if parts == 0 {
        return Err(AppError::BadRequest("the request contains no DICOM parts".into()));
    }
    tracing::info!(principal = principal.log_id(), stored = stored.len(), failed = failed.len(), "STOW-RS request handled");
    let base = base_url(&state, &headers);
    Ok(stow_response(&base, study.as_deref(), &stored, &failed))
}

fn us(v: u16) -> Value {
    json!({"vr": "US", "Value": [v]})
}

fn ui(v: &str) -> Value {
    json!({"vr": "UI", "Value": [v]})
}

/// Builds the PS3.18 STOW-RS response: 200 all stored, 202 some failed, 409 none stored.
pub fn stow_response(base: &str, study: Option<&str>, stored: &[Stored], failed: &[Failure]) -> Response {
    let mut body = serde_json::Map::new();
    let retrieve_study = study.or_else(|| stored.first().map(|s| s.study_uid.as_str()));
    let one_study = stored.iter().all(|s| Some(s.study_uid.as_str()) == retrieve_study);
    if let (Some(st), true) = (retrieve_study, one_study) {
        body.insert("00081190".into(), json!({"vr": "UR", "Value": [format!("{base}/studies/{st}")]}));
    }
    if !failed.is_empty() {
        let items: Vec<Value> = failed
            .iter()
            .map(|f| {
                let mut item = serde_json::Map::new();
                if let Some(c) = &f.sop_class_uid {
                    item.insert("00081150".into(), ui(c));
                }
                if let Some(i) = &f.sop_instance_uid {
                    item.insert("00081155".into(), ui(i));
                }
                item.insert("00081197".into(), us(f.reason));
                // Human-readable reason (ErrorComment); never contains patient data.
                item.insert("00000902".into(), json!({"vr": "LO", "Value": [truncate(&f.message, 64)]}));
                Value::Object(item)
            })
            .collect();
        body.insert("00081198".into(), json!({"vr": "SQ", "Value": items}));
    }
    if !stored.is_empty() {
        let items: Vec<Value> = stored
            .iter()
            .map(|s| {
                json!({
                    "00081150": ui(&s.sop_class_uid),
                    "00081155": ui(&s.sop_instance_uid),
                    "00081190": {"vr": "UR", "Value": [format!(
                        "{base}/studies/{}/series/{}/instances/{}",
                        s.study_uid, s.series_uid, s.sop_instance_uid
                    )]},
                })
            })
            .collect();
        body.insert("00081199".into(), json!({"vr": "SQ", "Value": items}));
    }
    let status = if failed.is_empty() {
        StatusCode::OK
    } else if stored.is_empty() {
        StatusCode::CONFLICT
    } else {
        StatusCode::ACCEPTED
    };
    (status, [(header::CONTENT_TYPE, DICOM_JSON)], Value::Object(body).to_string()).into_response()
}

/// At most `max` bytes (an LO value holds 64), cut after a whole word with "…" when it is longer:
/// never mid-word ("…unavailabl").
fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let ellipsis = "…";
    let mut end = max.saturating_sub(ellipsis.len());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    let cut = match s[..end].rfind(' ') {
        Some(space) if space > 0 => &s[..space],
        _ => &s[..end],
    };
    format!("{}{ellipsis}", cut.trim_end_matches([' ', ',', ';', ':']))
}

#[cfg(test)]
mod tests {
    #[test]
    fn comments_are_cut_after_a_word() {
        assert_eq!(super::truncate("short", 64), "short");
        let long = "the object store is unavailable: connection refused while writing the blob";
        let cut = super::truncate(long, 64);
        assert!(cut.len() <= 64, "{cut}");
        assert_eq!(cut, "the object store is unavailable: connection refused while…");
        let one = "x".repeat(100);
        assert!(super::truncate(&one, 64).len() <= 64);
    }
}
