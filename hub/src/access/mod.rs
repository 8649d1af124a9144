//! Who is asking, and what they may see. Every request is authenticated here (operator token,
//! personal access token, or browser session), and every DICOMweb search and retrieve restricts
//! its SQL through [`StudyScope::condition`] — the single access check of the hub. It matches
//! index rows by origin and UID (the tenancy model of [`crate::index`]).
//!
//! What a signed-in user sees: the instances of the transfers they sent, and the instances of
//! the transfers (no longer drafts) sent to a community they are a member of. Hub admins manage
//! accounts and communities but see patient data only through their own memberships.

pub mod account;
pub mod guard;
pub mod headers;
pub mod tokens;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;

use crate::db::now_ms;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "ferry_session";
/// The cookie of an access-code holder's browser session (set by `shares`).
pub const SHARE_COOKIE: &str = "ferry_share";

/// Why a bearer token was refused for an account or credential change.
pub const SESSION_NEEDED: &str = "account and credential changes need a signed-in browser session; a bearer token cannot make them";

/// How a user proved who they are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Session,
    Token,
}

/// A signed-in account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub hub_admin: bool,
    pub via: Via,
}

/// A clinic's site connector, acting for its community.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectorAgent {
    pub id: String,
    pub community_id: String,
}

/// The holder of a redeemed access code (browser session or DLX bearer token): reads the
/// studies of that one share, nothing else.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareAccess {
    pub share_id: String,
}

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Holder of the operator token from the configuration: sees and stores everything. Meant
    /// for operations and automation, not for people.
    Admin,
    User(User),
    Connector(ConnectorAgent),
    Share(ShareAccess),
}

pub use crate::index::scope::StudyScope;

impl Principal {
    pub fn study_scope(&self) -> StudyScope {
        match self {
            Principal::Admin => StudyScope::All,
            Principal::User(u) => StudyScope::Transfers { user_id: u.id.clone() },
            Principal::Connector(c) => StudyScope::Community { community_id: c.community_id.clone() },
            Principal::Share(h) => StudyScope::Share { share_id: h.share_id.clone() },
        }
    }

    /// Manages accounts and communities (operator token or a hub admin account).
    pub fn is_admin(&self) -> bool {
        match self {
            Principal::Admin => true,
            Principal::User(u) => u.hub_admin,
            Principal::Connector(_) | Principal::Share(_) => false,
        }
    }

    /// May store through STOW-RS directly (people send through transfers instead).
    pub fn can_store(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    pub fn user(&self) -> Option<&User> {
        match self {
            Principal::User(u) => Some(u),
            Principal::Admin | Principal::Connector(_) | Principal::Share(_) => None,
        }
    }

    /// The signed-in account, or 403 for the operator token (which has no account).
    pub fn require_user(&self) -> Result<&User, AppError> {
        self.user().ok_or(AppError::Forbidden)
    }

    /// The signed-in account when it came with a browser session, else 403: account and
    /// credential changes (tokens, linked sign-in providers) are never made with a bearer token,
    /// so a leaked token can neither mint a credential that outlives its revocation nor take
    /// the account over. The session's requests pass the cross-site checks ([`guard`]).
    pub fn require_session_user(&self) -> Result<&User, AppError> {
        let user = self.require_user()?;
        if user.via != Via::Session {
            return Err(AppError::ForbiddenBecause(SESSION_NEEDED.into()));
        }
        Ok(user)
    }

    /// A stable identifier for logs and audit (never personal data).
    pub fn log_id(&self) -> String {
        match self {
            Principal::Admin => "admin".into(),
            Principal::User(u) => format!("user:{}", u.id),
            Principal::Connector(c) => format!("connector:{}", c.id),
            Principal::Share(h) => format!("share:{}", h.share_id),
        }
    }
}

/// Compares in constant time so the token can't be guessed byte by byte from response timing.
fn token_matches(given: &str, expected: &str) -> bool {
    use sha2::{Digest, Sha256};
    let a = Sha256::digest(given.as_bytes());
    let b = Sha256::digest(expected.as_bytes());
    a.iter().zip(b.iter()).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Turns a bearer token into a principal, for a kind of token a feature issues (connectors'
/// tokens, access-code holders' DLX tokens, an identity provider's access tokens): `Ok(None)` when
/// the token is not of its kind, an error when it is but is refused.
pub type ResolveBearer = for<'a> fn(&'a AppState, &'a str) -> BoxFuture<'a, Result<Option<Principal>, AppError>>;
/// Turns a request's cookies into a principal (the access-code holder's browser session).
pub type ResolveCookies = for<'a> fn(&'a AppState, &'a CookieJar) -> BoxFuture<'a, Result<Option<Principal>, AppError>>;

/// The credential resolvers of the features, registered at start-up (`startup` puts them into
/// [`AppState::features`]): this module knows the operator token, personal access tokens and
/// browser sessions itself, and asks the resolvers about everything else, in order.
#[derive(Clone, Default)]
pub struct Resolvers {
    pub bearer: Vec<ResolveBearer>,
    pub cookies: Vec<ResolveCookies>,
}

/// Authenticates a request: `Ok(None)` for an anonymous one (no credentials, or a stale session
/// cookie), an error for a bearer token that is wrong.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Principal>, AppError> {
    let resolvers = state.feature::<Resolvers>()?;
    if let Some(auth) = parts.headers.get(header::AUTHORIZATION) {
        let auth = auth.to_str().map_err(|_| AppError::Unauthorized)?;
        let token = auth.strip_prefix("Bearer ").or_else(|| auth.strip_prefix("bearer ")).ok_or(AppError::Unauthorized)?.trim();
        if token_matches(token, state.admin_token.expose_secret()) {
            record("admin");
            return Ok(Some(Principal::Admin));
        }
        if token.starts_with(tokens::PAT_PREFIX)
            && let Some(user) = user_by_token(state, token).await?
        {
            record(&format!("user:{}", user.id));
            return Ok(Some(Principal::User(user)));
        }
        for resolve in &resolvers.bearer {
            if let Some(p) = resolve(state, token).await? {
                record(&p.log_id());
                return Ok(Some(p));
            }
        }
        return Err(AppError::Unauthorized);
    }
    let jar = CookieJar::from_headers(&parts.headers);
    if let Some(cookie) = jar.get(SESSION_COOKIE)
        && let Some(user) = user_by_session(state, cookie.value()).await?
    {
        record(&format!("user:{}", user.id));
        return Ok(Some(Principal::User(user)));
    }
    for resolve in &resolvers.cookies {
        if let Some(p) = resolve(state, &jar).await? {
            record(&p.log_id());
            return Ok(Some(p));
        }
    }
    Ok(None)
}

fn record(id: &str) {
    tracing::Span::current().record("principal", id);
}

async fn user_by_token(state: &AppState, token: &str) -> Result<Option<User>, AppError> {
    let now = now_ms();
    let row: Option<TokenUser> = sqlx::query_as(
        "SELECT u.id AS user_id, u.is_hub_admin, t.id AS token_id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2 AND u.disabled = 0",
    )
    .bind(tokens::hash(token))
    .bind(now)
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let (token_id, last_used) = (row.token_id, row.last_used_at);
    // Recorded at most once a minute, so API traffic does not turn every read into a write.
    if last_used.is_none_or(|t| now - t > 60_000) {
        let _ =
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2").bind(now).bind(&token_id).execute(&state.db_write).await;
    }
    Ok(Some(User { id: row.user_id, hub_admin: row.is_hub_admin != 0, via: Via::Token }))
}

/// The account of a personal access token, and the token.
#[derive(sqlx::FromRow)]
struct TokenUser {
    user_id: String,
    is_hub_admin: i64,
    token_id: String,
    last_used_at: Option<i64>,
}

/// The account of a browser session.
#[derive(sqlx::FromRow)]
struct SessionUser {
    id: String,
    is_hub_admin: i64,
}

async fn user_by_session(state: &AppState, token: &str) -> Result<Option<User>, AppError> {
    let row: Option<SessionUser> = sqlx::query_as(
        "SELECT u.id, u.is_hub_admin FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
    )
    .bind(tokens::hash(token))
    .bind(now_ms())
    .fetch_optional(&state.db)
    .await?;
    Ok(match row {
        Some(r) => Some(User { id: r.id, hub_admin: r.is_hub_admin != 0, via: Via::Session }),
        None => None,
    })
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(p.clone());
        }
        let p = authenticate(parts, state).await?.ok_or(AppError::Unauthorized)?;
        parts.extensions.insert(p.clone());
        Ok(p)
    }
}

/// The caller if signed in; pages use it to show the anonymous variant instead of an error.
pub struct MaybePrincipal(pub Option<Principal>);

impl FromRequestParts<AppState> for MaybePrincipal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        // A wrong bearer token on a page is treated as anonymous (pages use cookies).
        if let Some(p) = parts.extensions.get::<Principal>() {
            return Ok(MaybePrincipal(Some(p.clone())));
        }
        let p = authenticate(parts, state).await.ok().flatten();
        if let Some(p) = &p {
            parts.extensions.insert(p.clone());
        }
        Ok(MaybePrincipal(p))
    }
}

/// The role of a user in a community (`admin`, `member`) if any.
pub async fn community_role(db: &crate::db::Db, community_id: &str, user_id: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT role FROM memberships WHERE community_id = $1 AND user_id = $2")
        .bind(community_id)
        .bind(user_id)
        .fetch_optional(db)
        .await
}

/// The community's id, if the principal administers it (community admin or hub admin).
/// Non-admins get 403 when they are members, 404 otherwise.
pub async fn administered(state: &AppState, who: &Principal, code: &str) -> AppResult<String> {
    let id = community_id(state, code).await?;
    if who.is_admin() {
        return Ok(id);
    }
    let user = who.require_user()?;
    match community_role(&state.db, &id, &user.id).await?.as_deref() {
        Some("admin") => Ok(id),
        Some(_) => Err(AppError::ForbiddenBecause("only the community's admins can do this".into())),
        None => Err(AppError::Forbidden),
    }
}

pub async fn community_id(state: &AppState, code: &str) -> AppResult<String> {
    community_id_in(&state.db, code).await
}

pub async fn community_id_in(db: &crate::db::Db, code: &str) -> AppResult<String> {
    sqlx::query_scalar("SELECT id FROM communities WHERE code = $1")
        .bind(code)
        .fetch_optional(db)
        .await?
        .ok_or_else(|| AppError::NotFound("no such community".into()))
}
