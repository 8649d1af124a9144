//! The holder's side of a share, after a right answer: who holds it (browser cookie or DLX
//! bearer token), what they see, the downloads, the reports, deleting and forwarding.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use ferry_schemas::{ForwardShare, IssuedShare, Redeem, SharedView};
use jwt::{SignWithKey, VerifyWithKey};
use serde::{Deserialize, Serialize};

use super::db::{self, ShareRow};
use super::redeem::{self, Outcome, SHARE_COOKIE, SessionKind};
use crate::access::tokens;
use crate::access::{Principal, ShareAccess};
use crate::audit::{self, Event};
use crate::db::now_ms;
use crate::error::{ApiJson, AppError, AppResult};
use crate::index::{Holding, linked_studies};
use crate::state::AppState;

pub fn router(state: &AppState) -> Router<AppState> {
    let limited = Router::new().route("/api/v1/redeem", post(api_redeem));
    Router::new()
        .merge(state.redeem_limit.wrap(limited))
        .route("/api/v1/share", get(api_view).delete(api_delete))
        .route("/api/v1/share/download", get(api_download_all))
        .route("/api/v1/share/studies/{study}/download", get(api_download_study))
        .route("/api/v1/share/reports/{id}", get(api_report))
        .route("/api/v1/share/forward", post(api_forward))
        .route("/api/v1/share/logout", post(api_logout))
}

#[derive(Serialize, Deserialize)]
struct Claims {
    iss: String,
    sub: String,
    jti: String,
    iat: i64,
    exp: i64,
}

/// A DLX bearer token: HS256 over the share id and the session id.
pub fn sign_jwt(state: &AppState, share_id: &str, jti: &str, iat: i64, exp: i64) -> AppResult<String> {
    let claims = Claims { iss: state.base_url.clone(), sub: share_id.into(), jti: jti.into(), iat, exp };
    claims.sign_with_key(&state.secret.jwt_key()).map_err(|e| AppError::Internal(anyhow::anyhow!("signing a token: {e}")))
}

/// Whoever holds an open share: the share and how they got in.
#[derive(Debug, Clone)]
pub struct ShareHolder {
    pub share: ShareRow,
    pub via: SessionKind,
}

/// The share of a session key, if the session and the share are both still open.
async fn by_session(state: &AppState, key: &str, kind: SessionKind) -> AppResult<Option<ShareHolder>> {
    let now = now_ms();
    let Some(session) = db::session(&state.db, key, now).await? else { return Ok(None) };
    let (share_id, last_seen) = (session.share_id, session.last_seen_at);
    if kind == SessionKind::Browser && now - last_seen > state.config.shares.session_idle_secs as i64 * 1000 {
        return Ok(None);
    }
    let Some(share) = db::find(&state.db, &share_id).await? else { return Ok(None) };
    if !share.is_open(now) {
        return Ok(None);
    }
    // Kept at most every 30 s, so reading images does not turn into writes.
    if now - last_seen > 30_000 {
        let _ = db::session_seen(&state.db_write, key, now).await;
    }
    Ok(Some(ShareHolder { share, via: kind }))
}

/// A DLX bearer token's holder (signature, expiry and session checked).
pub async fn by_jwt(state: &AppState, token: &str) -> AppResult<Option<ShareHolder>> {
    let Ok(claims) = VerifyWithKey::<Claims>::verify_with_key(token, &state.secret.jwt_key()) else { return Ok(None) };
    if claims.exp * 1000 <= now_ms() {
        return Ok(None);
    }
    let holder = by_session(state, &tokens::hash(&claims.jti), SessionKind::Dlx).await?;
    Ok(holder.filter(|h| h.share.id == claims.sub))
}

/// A browser's holder, from the share cookie.
pub async fn by_cookie(state: &AppState, jar: &CookieJar) -> AppResult<Option<ShareHolder>> {
    match jar.get(SHARE_COOKIE) {
        Some(c) => by_session(state, &tokens::hash(c.value()), SessionKind::Browser).await,
        None => Ok(None),
    }
}

/// The resolver of DLX bearer tokens (JWTs the hub signed): they read their share's studies.
pub fn resolve_bearer<'a>(state: &'a AppState, token: &'a str) -> futures_util::future::BoxFuture<'a, AppResult<Option<Principal>>> {
    Box::pin(async move {
        if token.matches('.').count() != 2 {
            return Ok(None);
        }
        Ok(by_jwt(state, token).await?.map(|h| Principal::Share(ShareAccess { share_id: h.share.id })))
    })
}

/// The resolver of the access-code holder's browser session.
pub fn resolve_cookies<'a>(state: &'a AppState, jar: &'a CookieJar) -> futures_util::future::BoxFuture<'a, AppResult<Option<Principal>>> {
    Box::pin(async move { Ok(by_cookie(state, jar).await?.map(|h| Principal::Share(ShareAccess { share_id: h.share.id }))) })
}

/// The holder from a bearer token (DLX) or the share cookie.
pub async fn from_parts(parts: &Parts, state: &AppState) -> AppResult<Option<ShareHolder>> {
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok())
        && let Some(token) = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer "))
    {
        return by_jwt(state, token.trim()).await;
    }
    by_cookie(state, &CookieJar::from_headers(&parts.headers)).await
}

impl FromRequestParts<AppState> for ShareHolder {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        from_parts(parts, state).await?.ok_or(AppError::Unauthorized)
    }
}

/// The session cookie of a share: HttpOnly, SameSite=Strict, no expiry (it dies with the
/// browser; the server ends it after the idle time or the maximum in any case).
pub fn cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build((SHARE_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Strict)
        .secure(state.base_url.starts_with("https://"))
        .path("/")
        .build()
}

/// The answer to a failed redemption, the same for every reason (see [`redeem`]).
pub fn denied() -> AppError {
    AppError::SignInFailed("the code or the answer is wrong, or the code is locked after too many wrong answers".into())
}

async fn api_redeem(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    jar: CookieJar,
    ApiJson(r): ApiJson<Redeem>,
) -> AppResult<Response> {
    let answers = [ferry_schemas::dlx::Answer { question_id: "1".into(), answer: r.answer }];
    match redeem::redeem(&state, &r.code, &answers, SessionKind::Browser, &crate::http::client_addr(&ci)).await? {
        Outcome::Granted { token, expires_at, .. } => {
            Ok((jar.add(cookie(&state, token)), Json(serde_json::json!({"session_expires_at": expires_at}))).into_response())
        }
        Outcome::Denied => Err(denied()),
        Outcome::Expired => Err(AppError::ForbiddenBecause("this share has expired; ask the clinic to extend it".into())),
        Outcome::Typo(e) => Err(AppError::BadRequest(e.to_string())),
    }
}

/// What the holder sees.
pub async fn view(state: &AppState, share: &ShareRow) -> AppResult<SharedView> {
    let name = db::community_name(&state.db, &share.community_id).await?;
    Ok(SharedView {
        community_name: name,
        expires_at: share.expires_at,
        studies: linked_studies(&state.db, Holding::Share, &share.id).await?,
        reports: db::reports(&state.db, &share.id).await?.into_iter().map(|r| r.report).collect(),
        can_forward: share.parent_id.is_none(),
    })
}

async fn api_view(State(state): State<AppState>, h: ShareHolder) -> AppResult<Json<SharedView>> {
    Ok(Json(view(&state, &h.share).await?))
}

/// The share (or one study of it) as a ZIP in IHE PDI layout, with the released reports.
pub async fn download(state: &AppState, h: &ShareHolder, study: Option<&str>, client: &str) -> AppResult<Response> {
    let items = crate::archive::pdi::items(state, Holding::Share, &h.share.id, study).await?;
    if items.is_empty() {
        return Err(AppError::NotFound("no such study in this share".into()));
    }
    let reports = db::reports(&state.db, &h.share.id)
        .await?
        .into_iter()
        .filter(|r| r.report.released && study.is_none_or(|s| s == r.report.study_uid))
        .map(|r| crate::archive::pdi::Report {
            study_uid: r.report.study_uid,
            size: r.report.size,
            blob_path: r.blob_path,
            blob_key: r.blob_key,
            key_id: r.key_id,
        })
        .collect();
    let title = "Medizinische Bilder / Medical images";
    let plan = crate::archive::pdi::plan(state, items, reports, title).await?;
    audit::record(
        &state.db_write,
        Event {
            actor: &format!("share:{}", h.share.id),
            client_addr: client,
            action: "share.download",
            object_kind: "share",
            object_id: &h.share.id,
            result: "ok",
            detail: study.unwrap_or("all"),
        },
    )
    .await?;
    let _ = db::accessed(&state.db_write, &h.share.id, now_ms()).await;
    plan.into_response(state.blobs.clone(), "images.zip")
}

async fn api_download_all(State(state): State<AppState>, ci: ConnectInfo<SocketAddr>, h: ShareHolder) -> AppResult<Response> {
    download(&state, &h, None, &crate::http::client_addr(&ci)).await
}

async fn api_download_study(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    h: ShareHolder,
    Path(study): Path<String>,
) -> AppResult<Response> {
    download(&state, &h, Some(&study), &crate::http::client_addr(&ci)).await
}

/// A released report of the share, as the PDF.
pub async fn report(state: &AppState, h: &ShareHolder, id: &str, client: &str) -> AppResult<Response> {
    let all = db::reports(&state.db, &h.share.id).await?;
    let stored = all.into_iter().find(|r| r.report.id == id).ok_or_else(|| AppError::NotFound("no such report".into()))?;
    let (r, path) = (&stored.report, &stored.blob_path);
    if !r.released {
        return Err(AppError::NotFound("the report is not yet available".into()));
    }
    let blob_key = crate::storage::keys::KeyCache::default().blob_key(&state.keys, &state.db, &stored.key_id, &stored.blob_key).await?;
    let body = axum::body::Body::from_stream(state.blobs.read(path, blob_key, r.size, 0..r.size));
    audit::record(
        &state.db_write,
        Event {
            actor: &format!("share:{}", h.share.id),
            client_addr: client,
            action: "share.report",
            object_kind: "share",
            object_id: &h.share.id,
            result: "ok",
            detail: &r.id,
        },
    )
    .await?;
    let mut resp = Response::new(body);
    let hd = resp.headers_mut();
    hd.insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/pdf"));
    hd.insert(header::CONTENT_LENGTH, header::HeaderValue::from(r.size));
    hd.insert(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
    hd.insert(header::CONTENT_DISPOSITION, header::HeaderValue::from_static("inline; filename=\"report.pdf\""));
    Ok(resp)
}

async fn api_report(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    h: ShareHolder,
    Path(id): Path<String>,
) -> AppResult<Response> {
    report(&state, &h, &id, &crate::http::client_addr(&ci)).await
}

/// The holder deletes the share (and codes forwarded from it); the data goes at once where
/// nothing else holds it.
pub async fn delete(state: &AppState, h: &ShareHolder, client: &str) -> AppResult<()> {
    let ids = db::with_descendants(&state.db_write, &h.share.id).await?;
    super::end(state, &h.share.id, "deleted").await?;
    audit::record(
        &state.db_write,
        Event {
            actor: &format!("share:{}", h.share.id),
            client_addr: client,
            action: "share.delete",
            object_kind: "share",
            object_id: &h.share.id,
            result: "ok",
            detail: "",
        },
    )
    .await?;
    for id in ids {
        crate::retention::purge_share(state, &id).await.map_err(AppError::Internal)?;
    }
    Ok(())
}

async fn api_delete(State(state): State<AppState>, ci: ConnectInfo<SocketAddr>, jar: CookieJar, h: ShareHolder) -> AppResult<Response> {
    delete(&state, &h, &crate::http::client_addr(&ci)).await?;
    Ok((without_cookie(jar), StatusCode::NO_CONTENT).into_response())
}

async fn api_forward(
    State(state): State<AppState>,
    ci: ConnectInfo<SocketAddr>,
    h: ShareHolder,
    ApiJson(f): ApiJson<ForwardShare>,
) -> AppResult<(StatusCode, Json<IssuedShare>)> {
    let issued = super::forward(&state, &h.share, &f.studies, &f.options, &crate::http::client_addr(&ci)).await?;
    Ok((StatusCode::CREATED, Json(issued)))
}

/// Ends the browser session of the share cookie, if any.
pub async fn end_session(state: &AppState, jar: &CookieJar) -> AppResult<()> {
    if let Some(c) = jar.get(SHARE_COOKIE) {
        db::end_session(&state.db_write, &tokens::hash(c.value())).await?;
    }
    Ok(())
}

/// The jar with the share cookie removed.
pub fn without_cookie(jar: CookieJar) -> CookieJar {
    jar.remove(Cookie::build(SHARE_COOKIE).path("/"))
}

async fn api_logout(State(state): State<AppState>, jar: CookieJar) -> AppResult<Response> {
    end_session(&state, &jar).await?;
    Ok((without_cookie(jar), StatusCode::NO_CONTENT).into_response())
}
