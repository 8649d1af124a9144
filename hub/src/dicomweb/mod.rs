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
        .route("/studies/{study}", post(stow::store_in_study).get(wado::retrieve_study))
        .route("/studies/{study}/metadata", get(wado::study_metadata))
        .route("/studies/{study}/thumbnail", get(render::study_thumbnail))
        .route("/studies/{study}/series", get(qido::search_study_series))
        .route("/studies/{study}/instances", get(qido::search_study_instances))
        .route("/studies/{study}/series/{series}", get(wado::retrieve_series))
        .route("/studies/{study}/series/{series}/metadata", get(wado::series_metadata))
        .route("/studies/{study}/series/{series}/thumbnail", get(render::series_thumbnail))
        .route("/studies/{study}/series/{series}/rendered", get(render::series_rendered))
        .route("/studies/{study}/series/{series}/instances", get(qido::search_series_instances))
        .route("/studies/{study}/series/{series}/instances/{instance}", get(wado::retrieve_instance))
        .route("/studies/{study}/series/{series}/instances/{instance}/metadata", get(wado::instance_metadata))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}", get(wado::retrieve_frames))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/rendered", get(render::frame_rendered))
        .route("/studies/{study}/series/{series}/instances/{instance}/frames/{frames}/thumbnail", get(render::frame_thumbnail))
        .route("/studies/{study}/series/{series}/instances/{instance}/rendered", get(render::instance_rendered))
        .route("/studies/{study}/series/{series}/instances/{instance}/thumbnail", get(render::instance_thumbnail))
        .route("/studies/{study}/series/{series}/instances/{instance}/bulk/{tag}", get(wado::retrieve_bulk))
        .route("/series", get(qido::search_all_series))
        .route("/instances", get(qido::search_all_instances))
        .layer(DefaultBodyLimit::disable())
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
