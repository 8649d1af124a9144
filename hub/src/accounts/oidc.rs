//! OpenID Connect sign-in (authorization code + PKCE, nonce, state) with any number of
//! configured identity providers (a hospital's Keycloak, Entra ID, …). An account is linked by
//! issuer + subject: the first sign-in creates an account (or links the signed-in one when
//! started from the account page), later ones find it. Where a provider is configured with
//! `accept_access_tokens`, its access tokens also work as API bearer tokens (checked at its
//! userinfo endpoint, cached for a minute).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use axum_extra::extract::CookieJar;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AccessToken, AsyncHttpClient, AuthorizationCode, ClientId, ClientSecret, CsrfToken, HttpRequest, HttpResponse, IssuerUrl, Nonce,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, TokenResponse,
};
use serde::{Deserialize, Serialize};
use tokio::sync::RwLock;

use super::db;
use crate::access::{MaybePrincipal, Principal, User, Via};
use crate::config::OidcProvider;
use crate::db::{is_unique_violation, now_ms};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

const LOGIN_TTL_MS: i64 = 10 * 60 * 1000;
const METADATA_TTL: Duration = Duration::from_secs(600);
const ACCESS_TOKEN_TTL: Duration = Duration::from_secs(60);

/// When an access token was checked, and the account it belongs to (if any).
type CachedToken = (Instant, Option<String>);

/// Discovered provider metadata and recently checked access tokens.
#[derive(Clone, Default)]
pub struct OidcCache {
    metadata: Arc<RwLock<HashMap<String, (Instant, CoreProviderMetadata)>>>,
    access_tokens: Arc<RwLock<HashMap<String, CachedToken>>>,
}

pub fn router() -> Router<AppState> {
    Router::new().route("/auth/oidc/{provider}/start", get(start)).route("/auth/oidc/{provider}/callback", get(callback))
}

/// reqwest 0.13 as openidconnect's HTTP client. Redirects are not followed (the token and
/// userinfo endpoints must answer themselves), and answers are capped in size.
struct Http(reqwest::Client);

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct HttpError(String);

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let resp = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(format!("{e}")))?;
            let mut builder = axum::http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                builder = builder.header(k, v);
            }
            if resp.content_length().is_some_and(|n| n > 1 << 20) {
                return Err(HttpError("answer of the identity provider is too large".into()));
            }
            let bytes = resp.bytes().await.map_err(|e| HttpError(format!("{e}")))?;
            builder.body(bytes.to_vec()).map_err(|e| HttpError(format!("{e}")))
        })
    }
}

fn http() -> AppResult<Http> {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(15))
        .build()
        .map(Http)
        .map_err(|e| AppError::Internal(e.into()))
}

fn provider<'a>(state: &'a AppState, id: &str) -> AppResult<&'a OidcProvider> {
    state.config.auth.oidc.iter().find(|p| p.id == id).ok_or_else(|| AppError::NotFound("no such sign-in provider".into()))
}

fn unavailable(e: impl std::fmt::Display) -> AppError {
    tracing::warn!(error = %e, "identity provider unavailable");
    AppError::Unavailable("the identity provider cannot be reached".into())
}

async fn metadata(state: &AppState, p: &OidcProvider, http: &Http) -> AppResult<CoreProviderMetadata> {
    if let Some((at, m)) = state.feature::<OidcCache>()?.metadata.read().await.get(&p.id)
        && at.elapsed() < METADATA_TTL
    {
        return Ok(m.clone());
    }
    let issuer = IssuerUrl::new(p.issuer.clone()).map_err(|e| AppError::Internal(anyhow::anyhow!("issuer URL of {}: {e}", p.id)))?;
    let m = CoreProviderMetadata::discover_async(issuer, http).await.map_err(unavailable)?;
    state.feature::<OidcCache>()?.metadata.write().await.insert(p.id.clone(), (Instant::now(), m.clone()));
    Ok(m)
}

/// The client for the code flow: the provider's endpoints, our credentials and redirect URI.
fn sign_in_client(
    state: &AppState,
    p: &OidcProvider,
    meta: CoreProviderMetadata,
) -> AppResult<
    CoreClient<
        openidconnect::EndpointSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointNotSet,
        openidconnect::EndpointMaybeSet,
        openidconnect::EndpointMaybeSet,
    >,
> {
    let secret = p.client_secret.as_ref().map(|s| ClientSecret::new(secrecy::ExposeSecret::expose_secret(s).to_string()));
    let redirect = RedirectUrl::new(format!("{}/auth/oidc/{}/callback", state.base_url, p.id)).map_err(|e| AppError::Internal(e.into()))?;
    Ok(CoreClient::from_provider_metadata(meta, ClientId::new(p.client_id.clone()), secret).set_redirect_uri(redirect))
}

#[derive(Deserialize)]
struct StartParams {
    return_to: Option<String>,
    /// Link the provider to the signed-in account instead of signing in.
    link: Option<String>,
}

async fn start(
    State(state): State<AppState>,
    MaybePrincipal(who): MaybePrincipal,
    Path(id): Path<String>,
    crate::error::ApiQuery(q): crate::error::ApiQuery<StartParams>,
) -> AppResult<Response> {
    let p = provider(&state, &id)?.clone();
    // Linking a provider to an account is a credential change: a browser session only.
    let link_user = match (q.link.is_some(), &who) {
        (true, Some(w)) => Some(w.require_session_user()?.id.clone()),
        (true, None) => return Err(AppError::Unauthorized),
        (false, _) => None,
    };
    let http = http()?;
    let meta = metadata(&state, &p, &http).await?;
    let client = sign_in_client(&state, &p, meta)?;
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut req = client.authorize_url(CoreAuthenticationFlow::AuthorizationCode, CsrfToken::new_random, Nonce::new_random);
    for s in ["email", "profile"] {
        req = req.add_scope(Scope::new(s.into()));
    }
    let (url, csrf, nonce) = req.set_pkce_challenge(challenge).url();
    db::delete_expired_oidc_logins(&state.db_write, now_ms()).await?;
    db::insert_oidc_login(
        &state.db_write,
        &db::NewOidcLogin {
            state: &crate::access::tokens::hash(csrf.secret()),
            provider: &p.id,
            nonce: nonce.secret(),
            pkce_verifier: verifier.secret(),
            return_to: &crate::accounts::local_path(q.return_to.as_deref(), "/app"),
            link_user_id: link_user,
            expires_at: now_ms() + LOGIN_TTL_MS,
        },
    )
    .await?;
    Ok(Redirect::to(url.as_str()).into_response())
}

#[derive(Deserialize)]
struct CallbackParams {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// What the provider told about the person.
#[derive(Debug, Clone, Serialize)]
struct Claims {
    issuer: String,
    subject: String,
    email: Option<String>,
    email_verified: bool,
    name: String,
}

async fn callback(
    State(state): State<AppState>,
    jar: CookieJar,
    Path(id): Path<String>,
    Query(q): Query<CallbackParams>,
) -> AppResult<Response> {
    let p = provider(&state, &id)?.clone();
    if let Some(err) = q.error {
        let why = q.error_description.unwrap_or(err);
        return Err(AppError::ForbiddenBecause(format!("the identity provider refused the sign-in: {why}")));
    }
    let (Some(code), Some(csrf)) = (q.code, q.state) else {
        return Err(AppError::BadRequest("the sign-in answer lacks code or state".into()));
    };
    let state_hash = crate::access::tokens::hash(&csrf);
    let login = db::oidc_login(&state.db_write, &state_hash, &p.id, now_ms())
        .await?
        .ok_or_else(|| AppError::BadRequest("this sign-in has expired or was already used; start again".into()))?;
    // One use only, even if the same answer is replayed.
    if !db::use_oidc_login(&state.db_write, &state_hash).await? {
        return Err(AppError::BadRequest("this sign-in was already used; start again".into()));
    }
    let db::OidcLogin { nonce, pkce_verifier: verifier, return_to, link_user_id: link_user } = login;

    let http = http()?;
    let meta = metadata(&state, &p, &http).await?;
    let client = sign_in_client(&state, &p, meta)?;
    let tokens = client
        .exchange_code(AuthorizationCode::new(code))
        .map_err(|e| AppError::Internal(e.into()))?
        .set_pkce_verifier(PkceCodeVerifier::new(verifier))
        .request_async(&http)
        .await
        .map_err(|e| {
            tracing::warn!(provider = %p.id, error = %format!("{e:?}"), "code exchange failed");
            AppError::ForbiddenBecause("the identity provider did not confirm the sign-in".into())
        })?;
    let id_token = tokens.id_token().ok_or_else(|| AppError::ForbiddenBecause("the identity provider sent no ID token".into()))?;
    let verifier = client.id_token_verifier();
    let c = id_token.claims(&verifier, &Nonce::new(nonce)).map_err(|e| {
        tracing::warn!(provider = %p.id, error = %e, "ID token rejected");
        AppError::ForbiddenBecause("the ID token of the identity provider is not valid".into())
    })?;
    let claims = Claims {
        issuer: c.issuer().to_string(),
        subject: c.subject().to_string(),
        email: c.email().map(|e| e.to_string().to_lowercase()),
        email_verified: c.email_verified().unwrap_or(false),
        name: c
            .name()
            .and_then(|n| n.get(None))
            .map(|n| n.to_string())
            .or_else(|| c.preferred_username().map(|u| u.to_string()))
            .unwrap_or_default(),
    };
    let user = link_or_create(&state, &claims, link_user.as_deref()).await?;
    let token = crate::accounts::start_session(&state, &user).await?;
    tracing::info!(user = %user, provider = %p.id, "signed in through OpenID Connect");
    crate::accounts::audit_account(&state, &user, "account.sign_in", "ok", &format!("oidc:{}", p.id)).await?;
    Ok((jar.add(crate::accounts::session_cookie(&state, token)), Redirect::to(&return_to)).into_response())
}

async fn link_or_create(state: &AppState, c: &Claims, link_user: Option<&str>) -> AppResult<String> {
    let existing = db::oidc_user(&state.db, &c.issuer, &c.subject).await?;
    if let Some(user) = existing {
        if link_user.is_some_and(|l| l != user) {
            return Err(AppError::Conflict("this identity is already linked to another account".into()));
        }
        if db::is_disabled(&state.db, &user).await? {
            return Err(AppError::ForbiddenBecause("this account is disabled".into()));
        }
        return Ok(user);
    }
    let user = match link_user {
        Some(u) => u.to_string(),
        None => {
            let email = c.email.as_deref().filter(|_| c.email_verified);
            if let Some(e) = email
                && crate::accounts::db::user_id_by_email(&state.db, e).await?.is_some()
            {
                return Err(AppError::Conflict(
                    "an account with this email address exists: sign in with its password, then link the provider on your account page"
                        .into(),
                ));
            }
            let name = if c.name.trim().is_empty() { "?".to_string() } else { c.name.trim().chars().take(200).collect() };
            crate::accounts::db::insert_user(
                &state.db_write,
                &crate::accounts::db::NewUser {
                    email,
                    email_verified: email.is_some(),
                    password_hash: None,
                    name: &name,
                    practice: "",
                    address: "",
                    phone: "",
                    hub_admin: false,
                },
            )
            .await?
        }
    };
    db::link_identity(&state.db_write, &c.issuer, &c.subject, &user, now_ms())
        .await
        .map_err(|e| if is_unique_violation(&e) { AppError::Conflict("this identity is already linked".into()) } else { e.into() })?;
    Ok(user)
}

/// A bearer token from a provider that allows access tokens for the API: asks its userinfo
/// endpoint who it belongs to and finds the linked account.
pub async fn user_by_access_token(state: &AppState, token: &str) -> AppResult<Option<User>> {
    let providers: Vec<OidcProvider> = state.config.auth.oidc.iter().filter(|p| p.accept_access_tokens).cloned().collect();
    if providers.is_empty() {
        return Ok(None);
    }
    let key = crate::access::tokens::hash(token);
    if let Some((at, user)) = state.feature::<OidcCache>()?.access_tokens.read().await.get(&key)
        && at.elapsed() < ACCESS_TOKEN_TTL
    {
        return user_row(state, user.as_deref()).await;
    }
    let http = http()?;
    let mut found = None;
    for p in &providers {
        let Ok(meta) = metadata(state, p, &http).await else { continue };
        let issuer = meta.issuer().to_string();
        let client = CoreClient::from_provider_metadata(meta, ClientId::new(p.client_id.clone()), None);
        let Ok(req) = client.user_info(AccessToken::new(token.to_string()), None) else { continue };
        let info: Result<openidconnect::core::CoreUserInfoClaims, _> = req.request_async(&http).await;
        if let Ok(info) = info {
            found = db::oidc_user(&state.db, &issuer, info.subject().as_str()).await?;
            break;
        }
    }
    let mut cache = state.feature::<OidcCache>()?.access_tokens.write().await;
    cache.retain(|_, (at, _)| at.elapsed() < ACCESS_TOKEN_TTL);
    cache.insert(key, (Instant::now(), found.clone()));
    drop(cache);
    user_row(state, found.as_deref()).await
}

/// The resolver of identity providers' access tokens (providers with `accept_access_tokens`).
pub fn resolve_bearer<'a>(state: &'a AppState, token: &'a str) -> futures_util::future::BoxFuture<'a, AppResult<Option<Principal>>> {
    Box::pin(async move { Ok(user_by_access_token(state, token).await?.map(Principal::User)) })
}

async fn user_row(state: &AppState, user: Option<&str>) -> AppResult<Option<User>> {
    let Some(user) = user else { return Ok(None) };
    let row = db::enabled_user(&state.db, user).await?;
    Ok(row.map(|r| User { id: r.id, hub_admin: r.is_hub_admin != 0, via: Via::Token }))
}
