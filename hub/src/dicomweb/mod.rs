//! DICOMweb (PS3.18): STOW-RS, QIDO-RS and WADO-RS on axum, under `/dicomweb`. Every search and
//! retrieve asks the caller's [`Principal`](crate::access::Principal) which studies it may see.

pub mod audit;
pub mod qido;
pub mod render;
pub mod stow;
pub mod wado;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::routing::{get, post};

use crate::state::AppState;

pub const DICOM_JSON: &str = "application/dicom+json";

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/studies", post(stow::store).get(qido::search_studies))
        .route("/studies/{study}", post(stow::store_in_study).get(wado::retrieve))
        .route("/studies/{study}/metadata", get(wado::metadata))
        .route("/studies/{study}/thumbnail", get(render::thumbnail))
        .route("/studies/{study}/series", get(qido::search_series))
        .route("/studies/{study}/instances", get(qido::search_instances))
        .route("/studies/{study}/series/{series}", get(wado::retrieve))
        .route("/studies/{study}/series/{series}/metadata", get(wado::metadata))
        .route("/studies/{study}/series/{series}/thumbnail", get(render::thumbnail))
        .route("/studies/{study}/series/{series}/rendered", get(render::rendered))
        .route("/studies/{study}/series/{series}/instances", get(qido::search_instances))
        .route("/studies/{study}/series/{series}/instances/{instance}", get(wado::retrieve))
        .route("/studies/{study}/series/{series}/instances/{instance}/metadata", get(wado::metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", get(wado::retrieve_frames))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered", get(render::rendered))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail", get(render::thumbnail))
        .route("/studies/{study}/series/{series}/instances/{instance}/rendered", get(render::rendered))
        .route("/studies/{study}/series/{series}/instances/{instance}/thumbnail", get(render::thumbnail))
        .route("/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}", get(wado::retrieve_bulk))
        .route("/series", get(qido::search_series))
        .route("/instances", get(qido::search_instances))
        .layer(DefaultBodyLimit::disable())
}

/// The study, series and instance a DICOMweb path names (those the route has), each checked to
/// be a UID: one extractor for every level instead of a wrapper handler per route.
#[derive(Debug, Default)]
pub struct DicomPath {
    pub study: Option<String>,
    pub series: Option<String>,
    pub instance: Option<String>,
}

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for DicomPath {
    type Rejection = crate::error::AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, Self::Rejection> {
        let invalid = || crate::error::AppError::BadRequest("a UID in the path is not valid".into());
        let params = match axum::extract::RawPathParams::from_request_parts(parts, state).await {
            Ok(params) => params,
            // A route without parameters (`/series`, `/instances`) names no study.
            Err(axum::extract::rejection::RawPathParamsRejection::MissingPathParams(_)) => return Ok(DicomPath::default()),
            Err(_) => return Err(invalid()),
        };
        let mut p = DicomPath::default();
        for (name, value) in &params {
            let slot = match name {
                "study" => &mut p.study,
                "series" => &mut p.series,
                "instance" => &mut p.instance,
                _ => continue,
            };
            if !crate::ingest::describe::valid_uid(value) {
                return Err(invalid());
            }
            *slot = Some(value.to_string());
        }
        Ok(p)
    }
}

/// The absolute DICOMweb base URL (`…/dicomweb`) as clients reach it: the configured public URL,
/// else the request's Host.
pub fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(public) = &state.config.public_url {
        return format!("{}/dicomweb", public.trim_end_matches('/'));
    }
    let host = headers.get(axum::http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("localhost");
    let proto = headers.get("x-forwarded-proto").and_then(|h| h.to_str().ok()).filter(|p| *p == "https" || *p == "http").unwrap_or("http");
    format!("{proto}://{host}/dicomweb")
}

/// A fresh multipart boundary.
pub fn boundary() -> String {
    format!("ferry-{}", uuid::Uuid::new_v4().simple())
}
