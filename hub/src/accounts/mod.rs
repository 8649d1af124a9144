//! Accounts and sign-in: local accounts (argon2id, email verification and password reset by a
//! one-time link), OpenID Connect sign-in ([`oidc`]), browser sessions (secure cookies) and
//! personal access tokens for the API. Sign-in, registration and reset are rate limited per
//! client address, and an account locks for a while after repeated failed sign-ins; unknown
//! email and wrong password get the same answer.

pub mod auth_pages;
pub mod db;
pub mod oidc;
pub mod pages;
pub mod password;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use axum_extra::extract::CookieJar;
use axum_extra::extract::cookie::{Cookie, SameSite};
use ferry_schemas::{Account, ApiToken, Credentials, NewToken, Registration};
use serde::Deserialize;

use crate::access::{Principal, SESSION_COOKIE, tokens};
use crate::db::{is_unique_violation, now_ms};
use crate::error::{ApiJson, AppError, AppResult};
use crate::http::RateLimit;
use crate::mail::Mail;
use crate::state::AppState;

const DAY_MS: i64 = 24 * 3600 * 1000;
const VERIFY_LINK_MS: i64 = 3 * DAY_MS;
const RESET_LINK_MS: i64 = 3600 * 1000;
const SETUP_LINK_MS: i64 = DAY_MS;

/// The same words for unknown email, wrong password and a locked account.
pub const SIGN_IN_FAILED: &str = "email or password is wrong (after repeated failures the account is locked for a while)";

pub fn router(state: &AppState) -> Router<AppState> {
    let limited = Router::new()
        .route("/api/v1/auth/register", post(api_register))
        .route("/api/v1/auth/login", post(api_login))
        .route("/api/v1/auth/password-reset", post(api_request_reset))
        .route("/api/v1/auth/password-reset/confirm", post(api_reset))
        .route("/api/v1/auth/verify", post(api_verify))
        .route("/api/v1/auth/setup", post(api_setup));
    Router::new()
        .merge(state.auth_limit.wrap(limited))
        .route("/api/v1/auth/logout", post(api_logout))
        .route("/api/v1/me", get(api_me))
        .route("/api/v1/tokens", get(api_list_tokens).post(api_create_token))
        .route("/api/v1/tokens/{id}", delete(api_revoke_token))
}

/// The per-address rate limit of the sign-in, registration, reset and token endpoints: a burst
/// of `auth.rate_burst` requests, then one every `auth.rate_period_ms`. One limiter serves every
/// route it wraps, so the JSON API, the web forms and the token endpoint draw on the same budget
/// of an address.
pub fn auth_limit(auth: &crate::config::AuthConfig) -> RateLimit {
    RateLimit::with(auth.rate_burst, auth.rate_period_ms)
}

/// Only paths on this site, else `default`: an open redirect after sign-in or a language switch
/// would help phishing. Browsers drop tabs and newlines from a URL and read a backslash as a
/// slash, so `/\t/evil.example` or `/\\evil.example` would lead to another host as `//…` does:
/// a path must start with exactly one `/` and hold no control character and no backslash at all
/// (which also keeps it a valid `Location` header, never a 500).
pub fn local_path(path: Option<&str>, default: &str) -> String {
    match path {
        Some(p) if is_local_path(p) => p.to_string(),
        _ => default.into(),
    }
}

fn is_local_path(p: &str) -> bool {
    p.starts_with('/') && !p.starts_with("//") && !p.chars().any(|c| c.is_control() || c == '\\')
}

/// Lower-cased, trimmed; checked for the shape of an address (the verification link proves it).
pub fn normalize_email(email: &str) -> AppResult<String> {
    let e = email.trim().to_lowercase();
    let valid = e.len() <= 254
        && !e.chars().any(|c| c.is_whitespace() || c.is_control())
        && e.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !domain.ends_with('.') && !domain.contains('@')
        });
    if valid { Ok(e) } else { Err(AppError::BadRequest("that is not an email address".into())) }
}

fn clean(s: &str, max: usize, what: &str) -> AppResult<String> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(AppError::BadRequest(format!("{what} is too long (at most {max} characters)")));
    }
    if s.chars().any(|c| c.is_control() && c != '\n') {
        return Err(AppError::BadRequest(format!("{what} contains control characters")));
    }
    Ok(s.to_string())
}

async fn send_link(state: &AppState, to: &str, user_id: Option<&str>, purpose: &str, valid_ms: i64) -> AppResult<()> {
    let token = tokens::new_secret("");
    db::insert_email_token(&state.db_write, &tokens::hash(&token), user_id, purpose, now_ms() + valid_ms).await?;
    let base = &state.base_url;
    let (subject, body) = match purpose {
        "verify" => (
            "Ferry: confirm your email address / E-Mail-Adresse bestätigen",
            format!(
                "Open this link to confirm your email address:\nÖffnen Sie diesen Link, um Ihre E-Mail-Adresse zu bestätigen:\n\n{base}/verify?token={token}\n\nThe link is valid for 3 days."
            ),
        ),
        _ => (
            "Ferry: reset your password / Passwort zurücksetzen",
            format!(
                "Open this link to choose a new password:\nÖffnen Sie diesen Link, um ein neues Passwort zu wählen:\n\n{base}/reset?token={token}\n\nThe link is valid for one hour. If you did not ask for it, ignore this mail."
            ),
        ),
    };
    state.mailer.send(Mail { to: to.into(), subject: subject.into(), body }).await;
    Ok(())
}

/// Registers a referrer. The answer is the same whether the address is new or taken; a taken
/// address gets a mail saying so instead of a second account.
pub async fn register(state: &AppState, r: Registration) -> AppResult<()> {
    let email = normalize_email(&r.email)?;
    password::check_new(&r.password)?;
    let name = clean(&r.name, 200, "the name")?;
    if name.is_empty() {
        return Err(AppError::BadRequest("please give your name".into()));
    }
    let practice = clean(&r.practice, 200, "the practice")?;
    let address = clean(&r.address, 500, "the address")?;
    let phone = clean(&r.phone, 50, "the phone number")?;
    let hash = password::hash(r.password).await?;
    let inserted = db::insert_user(
        &state.db_write,
        &db::NewUser {
            email: Some(&email),
            email_verified: false,
            password_hash: Some(&hash),
            name: &name,
            practice: &practice,
            address: &address,
            phone: &phone,
            hub_admin: false,
        },
    )
    .await;
    match inserted {
        Ok(id) => send_link(state, &email, Some(&id), "verify", VERIFY_LINK_MS).await,
        Err(e) if is_unique_violation(&e) => {
            let base = &state.base_url;
            state
                .mailer
                .send(Mail {
                    to: email,
                    subject: "Ferry: you already have an account / Sie haben bereits ein Konto".into(),
                    body: format!("Someone (perhaps you) tried to register with this address, which already has an account.\nSign in at {base}/login or reset your password at {base}/forgot."),
                })
                .await;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

pub async fn verify_email(state: &AppState, token: &str) -> AppResult<()> {
    let user = db::consume_email_token(&state.db_write, &tokens::hash(token), "verify")
        .await?
        .flatten()
        .ok_or_else(|| AppError::BadRequest("this link is not valid (any more); sign in to get a new one".into()))?;
    db::set_email_verified(&state.db_write, &user).await?;
    tracing::info!(user = %user, "email verified");
    Ok(())
}

/// Checks credentials and opens a session; returns the session token.
pub async fn login(state: &AppState, email: &str, password_given: String) -> AppResult<(String, String)> {
    let email = email.trim().to_lowercase();
    let row = db::login_row(&state.db, &email).await?;
    let now = now_ms();
    let auth = &state.config.auth;
    // The attempt is counted (and the account locked when it reaches the limit) before the
    // password is checked; without a claimed attempt it is not checked at all.
    let attempt = match &row {
        Some(r) => {
            let lock = now + (auth.lockout_secs as i64) * 1000;
            db::claim_login(&state.db_write, &r.id, now, (auth.max_failed_logins as i64).max(1), lock).await?
        }
        None => None,
    };
    let stored = row.as_ref().filter(|_| attempt.is_some()).and_then(|r| r.password_hash.clone());
    // One argon2 verification in every case (the decoy where nothing is to be checked).
    let ok = password::verify(password_given, stored).await;
    let Some(row) = row else {
        audit_account(state, "", "account.sign_in", "denied", "unknown account").await?;
        return Err(AppError::SignInFailed(SIGN_IN_FAILED.into()));
    };
    let Some(attempt) = attempt else {
        audit_account(state, &row.id, "account.sign_in", "denied", if row.disabled { "disabled" } else { "locked" }).await?;
        return Err(AppError::SignInFailed(SIGN_IN_FAILED.into()));
    };
    if !ok {
        audit_account(state, &row.id, "account.sign_in", "denied", "wrong password").await?;
        if attempt.locks {
            tracing::warn!(user = %row.id, "account locked after repeated failed sign-ins");
        }
        return Err(AppError::SignInFailed(SIGN_IN_FAILED.into()));
    }
    db::reset_logins(&state.db_write, &row.id).await?;
    if !row.email_verified {
        send_link(state, &email, Some(&row.id), "verify", VERIFY_LINK_MS).await?;
        return Err(AppError::ForbiddenBecause("please confirm your email address first: we have sent you a new link".into()));
    }
    let token = start_session(state, &row.id).await?;
    tracing::info!(user = %row.id, "signed in");
    audit_account(state, &row.id, "account.sign_in", "ok", "password").await?;
    Ok((row.id, token))
}

/// Records what happened to an account (never its email or name).
pub(crate) async fn audit_account(state: &AppState, user_id: &str, action: &str, result: &str, detail: &str) -> AppResult<()> {
    let actor = if user_id.is_empty() || action == "account.sign_in" { "anonymous".to_string() } else { format!("user:{user_id}") };
    crate::audit::record(
        &state.db_write,
        crate::audit::Event { actor: &actor, client_addr: "", action, object_kind: "account", object_id: user_id, result, detail },
    )
    .await?;
    Ok(())
}

pub async fn start_session(state: &AppState, user_id: &str) -> AppResult<String> {
    let token = tokens::new_secret("");
    let expires = now_ms() + state.config.auth.session_days as i64 * DAY_MS;
    db::insert_session(&state.db_write, &tokens::hash(&token), user_id, expires).await?;
    Ok(token)
}

/// The session cookie: HttpOnly, SameSite=Lax (the OpenID Connect callback arrives from another
/// site), Secure when the hub is served over TLS.
pub fn session_cookie(state: &AppState, token: String) -> Cookie<'static> {
    Cookie::build((SESSION_COOKIE, token))
        .http_only(true)
        .same_site(SameSite::Lax)
        .secure(state.base_url.starts_with("https://"))
        .path("/")
        .max_age(cookie_duration(state.config.auth.session_days as i64))
        .build()
}

fn cookie_duration(days: i64) -> time::Duration {
    time::Duration::days(days)
}

pub async fn logout(state: &AppState, jar: CookieJar) -> AppResult<CookieJar> {
    if let Some(c) = jar.get(SESSION_COOKIE) {
        db::delete_session(&state.db_write, &tokens::hash(c.value())).await?;
    }
    Ok(jar.remove(Cookie::build(SESSION_COOKIE).path("/")))
}

pub async fn request_reset(state: &AppState, email: &str) -> AppResult<()> {
    let Ok(email) = normalize_email(email) else { return Ok(()) };
    if let Some(id) = db::user_id_by_email(&state.db, &email).await? {
        send_link(state, &email, Some(&id), "reset", RESET_LINK_MS).await?;
    }
    Ok(())
}

/// Sets a new password from a reset link; the address is thereby proven, the lockout lifted,
/// and every open session of the account ends.
pub async fn reset_password(state: &AppState, token: &str, new_password: String) -> AppResult<()> {
    password::check_new(&new_password)?;
    let user = db::consume_email_token(&state.db_write, &tokens::hash(token), "reset")
        .await?
        .flatten()
        .ok_or_else(|| AppError::BadRequest("this reset link is not valid (any more); ask for a new one".into()))?;
    let hash = password::hash(new_password).await?;
    db::set_password(&state.db_write, &user, &hash).await?;
    db::delete_sessions_of(&state.db_write, &user).await?;
    tracing::info!(user = %user, "password reset");
    Ok(())
}

/// A new one-time link to create the first hub admin, while the hub has none.
pub async fn setup_link(state: &AppState) -> anyhow::Result<Option<String>> {
    if db::has_hub_admin(&state.db).await? {
        return Ok(None);
    }
    let token = tokens::new_secret("");
    db::insert_email_token(&state.db_write, &tokens::hash(&token), None, "setup", now_ms() + SETUP_LINK_MS).await?;
    tracing::warn!("no hub admin account yet: a one-time setup link was printed");
    Ok(Some(format!("{}/setup?token={token}", state.base_url)))
}

/// Creates the first hub admin from a setup link.
pub async fn setup_admin(state: &AppState, token: &str, r: Registration) -> AppResult<String> {
    let email = normalize_email(&r.email)?;
    password::check_new(&r.password)?;
    let name = clean(&r.name, 200, "the name")?;
    if db::has_hub_admin(&state.db).await? {
        return Err(AppError::Conflict("the hub already has an admin account".into()));
    }
    if db::consume_email_token(&state.db_write, &tokens::hash(token), "setup").await?.is_none() {
        return Err(AppError::BadRequest("this setup link is not valid (any more); restart the hub for a new one".into()));
    }
    let hash = password::hash(r.password).await?;
    let id = db::insert_user(
        &state.db_write,
        &db::NewUser {
            email: Some(&email),
            email_verified: true,
            password_hash: Some(&hash),
            name: &name,
            practice: "",
            address: "",
            phone: "",
            hub_admin: true,
        },
    )
    .await
    .map_err(|e| if is_unique_violation(&e) { AppError::Conflict("an account with this email exists".into()) } else { e.into() })?;
    tracing::info!(user = %id, "first hub admin created");
    Ok(id)
}

/// Creates a verified account from the command line (`ferry-hub admin create-user`).
pub async fn create_user_cli(db_write: &crate::db::Db, email: &str, name: &str, password: String, hub_admin: bool) -> AppResult<String> {
    let email = normalize_email(email)?;
    password::check_new(&password)?;
    let hash = password::hash(password).await?;
    db::insert_user(
        db_write,
        &db::NewUser {
            email: Some(&email),
            email_verified: true,
            password_hash: Some(&hash),
            name: name.trim(),
            practice: "",
            address: "",
            phone: "",
            hub_admin,
        },
    )
    .await
    .map_err(|e| if is_unique_violation(&e) { AppError::Conflict("an account with this email exists".into()) } else { e.into() })
}

pub async fn account(state: &AppState, user_id: &str) -> AppResult<Account> {
    db::account(&state.db, user_id).await?.ok_or(AppError::Unauthorized)
}

// ---- JSON API ----

#[derive(Deserialize)]
struct TokenBody {
    token: String,
}

#[derive(Deserialize)]
struct EmailBody {
    email: String,
}

#[derive(Deserialize)]
struct ResetBody {
    token: String,
    password: String,
}

#[derive(Deserialize)]
struct SetupBody {
    token: String,
    #[serde(flatten)]
    account: Registration,
}

fn accepted(message: &str) -> Response {
    (StatusCode::ACCEPTED, Json(serde_json::json!({ "status": message }))).into_response()
}

async fn api_register(State(state): State<AppState>, ApiJson(r): ApiJson<Registration>) -> AppResult<Response> {
    register(&state, r).await?;
    Ok(accepted("check your email for the confirmation link"))
}

async fn api_verify(State(state): State<AppState>, ApiJson(b): ApiJson<TokenBody>) -> AppResult<Response> {
    verify_email(&state, &b.token).await?;
    Ok(Json(serde_json::json!({ "status": "email confirmed" })).into_response())
}

async fn api_login(State(state): State<AppState>, jar: CookieJar, ApiJson(c): ApiJson<Credentials>) -> AppResult<Response> {
    let (user, token) = login(&state, &c.email, c.password).await?;
    let account = account(&state, &user).await?;
    Ok((jar.add(session_cookie(&state, token)), Json(account)).into_response())
}

async fn api_logout(State(state): State<AppState>, jar: CookieJar) -> AppResult<Response> {
    let jar = logout(&state, jar).await?;
    Ok((jar, StatusCode::NO_CONTENT).into_response())
}

async fn api_request_reset(State(state): State<AppState>, ApiJson(b): ApiJson<EmailBody>) -> AppResult<Response> {
    request_reset(&state, &b.email).await?;
    Ok(accepted("if an account has this address, a reset link is on its way"))
}

async fn api_reset(State(state): State<AppState>, ApiJson(b): ApiJson<ResetBody>) -> AppResult<Response> {
    reset_password(&state, &b.token, b.password).await?;
    Ok(Json(serde_json::json!({ "status": "password changed; sign in again" })).into_response())
}

async fn api_setup(State(state): State<AppState>, ApiJson(b): ApiJson<SetupBody>) -> AppResult<Response> {
    let id = setup_admin(&state, &b.token, b.account).await?;
    Ok((StatusCode::CREATED, Json(account(&state, &id).await?)).into_response())
}

async fn api_me(State(state): State<AppState>, who: Principal) -> AppResult<Json<Account>> {
    let user = who.require_user()?;
    Ok(Json(account(&state, &user.id).await?))
}

async fn api_create_token(State(state): State<AppState>, who: Principal, ApiJson(n): ApiJson<NewToken>) -> AppResult<Response> {
    // A leaked token must not be able to mint more tokens.
    let user = who.require_session_user()?;
    let t = create_token(&state, &user.id, &n).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

pub async fn create_token(state: &AppState, user_id: &str, n: &NewToken) -> AppResult<ApiToken> {
    let name = clean(&n.name, 100, "the token name")?;
    if name.is_empty() {
        return Err(AppError::BadRequest("give the token a name (what it is for)".into()));
    }
    let days = n.expires_in_days.unwrap_or(90);
    if !(1..=365).contains(&days) {
        return Err(AppError::BadRequest("a token lives 1 to 365 days".into()));
    }
    let token = tokens::new_secret(tokens::PAT_PREFIX);
    let id = uuid::Uuid::new_v4().to_string();
    let now = now_ms();
    let expires_at = now + days as i64 * DAY_MS;
    db::insert_token(&state.db_write, &id, user_id, &name, &tokens::hash(&token), now, expires_at).await?;
    tracing::info!(user = %user_id, token_id = %id, "personal access token created");
    audit_account(state, user_id, "account.token.create", "ok", &id).await?;
    Ok(ApiToken { id, name, created_at: now, expires_at, last_used_at: None, token: Some(token) })
}

pub async fn list_tokens(state: &AppState, user_id: &str) -> AppResult<Vec<ApiToken>> {
    Ok(db::tokens(&state.db, user_id, now_ms()).await?)
}

pub async fn revoke_token(state: &AppState, user_id: &str, id: &str) -> AppResult<()> {
    if !db::revoke_token(&state.db_write, user_id, id, now_ms()).await? {
        return Err(AppError::NotFound("no such token".into()));
    }
    tracing::info!(user = %user_id, token_id = %id, "personal access token revoked");
    audit_account(state, user_id, "account.token.revoke", "ok", id).await?;
    Ok(())
}

async fn api_list_tokens(State(state): State<AppState>, who: Principal) -> AppResult<Json<Vec<ApiToken>>> {
    let user = who.require_user()?;
    Ok(Json(list_tokens(&state, &user.id).await?))
}

async fn api_revoke_token(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<StatusCode> {
    let user = who.require_session_user()?;
    revoke_token(&state, &user.id, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::local_path;

    #[test]
    fn only_paths_on_this_site_are_redirect_targets() {
        for ok in ["/app", "/transfers/1?x=2#y", "/a/b//c", "/s/view/1.2.3", "/%2F%2Fevil.example", "/ä"] {
            assert_eq!(local_path(Some(ok), "/app"), ok, "{ok:?}");
        }
        let off_site = [
            "//evil.example",
            "/\t/evil.example",
            "/\n/evil.example",
            "/\r\n/evil.example",
            "\t//evil.example",
            "/\\evil.example",
            "\\\\evil.example",
            "/\\/evil.example",
            "https://evil.example/",
            "evil.example",
            " //evil.example",
            "/\u{7f}/evil.example",
            "/\u{85}/evil.example",
            "/x\r\nSet-Cookie: a=b",
            "",
        ];
        for bad in off_site {
            assert_eq!(local_path(Some(bad), "/app"), "/app", "{bad:?}");
        }
        assert_eq!(local_path(None, "/"), "/");
    }
}
