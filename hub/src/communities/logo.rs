//! A community's optional logo: PNG or JPEG up to 256 KiB and 1024×1024 pixels, checked by
//! decoding its header, set by the community's or the hub's admins, shown in the directory.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;

use crate::access::Principal;
use crate::db::{Db, now_ms};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub const MAX_BYTES: usize = 256 * 1024;
const MAX_SIDE: u32 = 1024;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/communities/{code}/logo", get(api_get).put(api_put).delete(api_delete))
}

/// Checks that `bytes` are a PNG or JPEG of a sensible size; returns its content type.
pub fn check(bytes: &[u8]) -> AppResult<&'static str> {
    if bytes.len() > MAX_BYTES {
        return Err(AppError::PayloadTooLarge(format!("a logo may have at most {} KiB", MAX_BYTES / 1024)));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| AppError::BadRequest(format!("cannot read the logo: {e}")))?;
    let ct = match reader.format() {
        Some(image::ImageFormat::Png) => "image/png",
        Some(image::ImageFormat::Jpeg) => "image/jpeg",
        _ => return Err(AppError::UnsupportedMediaType("a logo is a PNG or JPEG image".into())),
    };
    let (w, h) = reader.into_dimensions().map_err(|e| AppError::BadRequest(format!("the logo is not a valid image: {e}")))?;
    if w == 0 || h == 0 || w > MAX_SIDE || h > MAX_SIDE {
        return Err(AppError::BadRequest(format!("a logo is at most {MAX_SIDE}×{MAX_SIDE} pixels")));
    }
    Ok(ct)
}

pub async fn store(db_write: &Db, community_id: &str, bytes: &[u8]) -> AppResult<()> {
    let ct = check(bytes)?;
    super::db::store_logo(db_write, community_id, ct, base64::engine::general_purpose::STANDARD.encode(bytes), now_ms()).await?;
    Ok(())
}

async fn api_get(State(state): State<AppState>, _who: Principal, Path(code): Path<String>) -> AppResult<Response> {
    let super::db::Logo { content_type: ct, data } =
        super::db::logo(&state.db, &code).await?.ok_or_else(|| AppError::NotFound("this community has no logo".into()))?;
    let bytes = base64::engine::general_purpose::STANDARD.decode(data).map_err(|e| AppError::Internal(e.into()))?;
    let mut r = bytes.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_str(&ct).map_err(|e| AppError::Internal(e.into()))?);
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
    r.headers_mut().insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    Ok(r)
}

async fn api_put(
    State(state): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    _headers: HeaderMap,
    body: Bytes,
) -> AppResult<StatusCode> {
    let id = super::staff::administered(&state, &who, &code).await?;
    store(&state.db_write, &id, &body).await?;
    touch(&state.db_write, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_delete(State(state): State<AppState>, who: Principal, Path(code): Path<String>) -> AppResult<StatusCode> {
    let id = super::staff::administered(&state, &who, &code).await?;
    super::db::delete_logo(&state.db_write, &id).await?;
    touch(&state.db_write, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Marks the community changed, so directory caches reload it.
async fn touch(db_write: &Db, id: &str) -> AppResult<()> {
    Ok(super::db::touch(db_write, id, now_ms()).await?)
}
