//! Who is asking, and what they may see. Every request is authenticated here (operator token,
//! personal access token, or browser session), and every DICOMweb search and retrieve restricts
//! its SQL through [`StudyScope::condition`] — the single access check of the hub. It matches
//! index rows by origin and UID (the tenancy model of [`crate::index`]).
//!
//! What a signed-in user sees: the instances of the transfers they sent, and the instances of
//! the transfers (no longer drafts) sent to a community they are a member of. Hub admins manage
//! accounts and communities but see patient data only through their own memberships.

pub mod guard;
pub mod headers;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use axum_extra::extract::CookieJar;
use secrecy::ExposeSecret;
use sqlx::Row;

use crate::accounts::tokens;
use crate::db::now_ms;
use crate::error::AppError;
use crate::state::AppState;

pub const SESSION_COOKIE: &str = "ferry_session";

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

/// Which column of `transfer_instances` a scoped column holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Study,
    Series,
    Instance,
}

impl Level {
    fn column(self) -> &'static str {
        match self {
            Level::Study => "study_uid",
            Level::Series => "series_uid",
            Level::Instance => "sop_instance_uid",
        }
    }
}

/// The set of instances a principal may see, as a filter the queries apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudyScope {
    All,
    /// What the transfers of this user (sent, or received by their communities) carry.
    Transfers {
        user_id: String,
    },
    /// What the (sent) transfers to one community carry: its connector's view.
    Community {
        community_id: String,
    },
    /// What one share holds: its holder's view.
    Share {
        share_id: String,
    },
}

impl StudyScope {
    /// An SQL condition restricting the row named by (`origin`, `column`) — a row of the given
    /// level, keyed by its origin and UID — to the rows this scope's holdings link, or `None` when
    /// unrestricted. Rows are matched by origin *and* UID: a UID alone proves nothing, since
    /// anyone can write any UID into a file (see [`crate::index`]). `bind` adds a text parameter
    /// and returns its placeholder.
    pub fn condition(&self, origin: &str, column: &str, level: Level, bind: &mut dyn FnMut(String) -> String) -> Option<String> {
        let field = level.column();
        let row = format!("({origin}, {column})");
        match self {
            StudyScope::All => None,
            StudyScope::Transfers { user_id } => {
                let sender = bind(user_id.clone());
                let member = bind(user_id.clone());
                let staff = bind(user_id.clone());
                Some(format!(
                    "({row} IN (SELECT ti.origin, ti.{field} FROM transfer_instances ti \
                     JOIN transfers t ON t.id = ti.transfer_id \
                     WHERE t.sender_id = {sender} OR (t.state <> 'draft' AND t.community_id IN \
                     (SELECT m.community_id FROM memberships m WHERE m.user_id = {member}))) \
                     OR {row} IN (SELECT si.origin, si.{field} FROM share_instances si JOIN shares s ON s.id = si.share_id \
                     WHERE s.purged_at IS NULL AND s.community_id IN \
                     (SELECT m.community_id FROM memberships m WHERE m.user_id = {staff})))"
                ))
            }
            StudyScope::Community { community_id } => {
                let c = bind(community_id.clone());
                Some(format!(
                    "{row} IN (SELECT ti.origin, ti.{field} FROM transfer_instances ti \
                     JOIN transfers t ON t.id = ti.transfer_id WHERE t.state <> 'draft' AND t.community_id = {c})"
                ))
            }
            StudyScope::Share { share_id } => {
                let sh = bind(share_id.clone());
                Some(format!("{row} IN (SELECT si.origin, si.{field} FROM share_instances si WHERE si.share_id = {sh})"))
            }
        }
    }
}

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

/// Authenticates a request: `Ok(None)` for an anonymous one (no credentials, or a stale session
/// cookie), an error for a bearer token that is wrong.
pub async fn authenticate(parts: &Parts, state: &AppState) -> Result<Option<Principal>, AppError> {
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
        if token.starts_with(crate::connectors::TOKEN_PREFIX) {
            if let Some(agent) = crate::connectors::agent_by_token(state, token).await? {
                record(&format!("connector:{}", agent.id));
                return Ok(Some(Principal::Connector(agent)));
            }
            return Err(AppError::Unauthorized);
        }
        // A DLX bearer token (a JWT the hub signed) reads its share's studies.
        if token.matches('.').count() == 2
            && let Some(h) = crate::shares::holder::by_jwt(state, token).await?
        {
            record(&format!("share:{}", h.share.id));
            return Ok(Some(Principal::Share(ShareAccess { share_id: h.share.id })));
        }
        if let Some(user) = crate::accounts::oidc::user_by_access_token(state, token).await? {
            record(&format!("user:{}", user.id));
            return Ok(Some(Principal::User(user)));
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
    if let Some(h) = crate::shares::holder::by_cookie(state, &jar).await? {
        record(&format!("share:{}", h.share.id));
        return Ok(Some(Principal::Share(ShareAccess { share_id: h.share.id })));
    }
    Ok(None)
}

fn record(id: &str) {
    tracing::Span::current().record("principal", id);
}

async fn user_by_token(state: &AppState, token: &str) -> Result<Option<User>, AppError> {
    let now = now_ms();
    let row = sqlx::query(
        "SELECT u.id, u.is_hub_admin, t.id, t.last_used_at FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND t.expires_at > $2 AND u.disabled = 0",
    )
    .bind(tokens::hash(token))
    .bind(now)
    .fetch_optional(&state.db)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let token_id: String = row.try_get(2)?;
    let last_used: Option<i64> = row.try_get(3)?;
    // Recorded at most once a minute, so API traffic does not turn every read into a write.
    if last_used.is_none_or(|t| now - t > 60_000) {
        let _ =
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2").bind(now).bind(&token_id).execute(&state.db_write).await;
    }
    Ok(Some(User { id: row.try_get(0)?, hub_admin: row.try_get::<i64, _>(1)? != 0, via: Via::Token }))
}

async fn user_by_session(state: &AppState, token: &str) -> Result<Option<User>, AppError> {
    let row = sqlx::query(
        "SELECT u.id, u.is_hub_admin FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0",
    )
    .bind(tokens::hash(token))
    .bind(now_ms())
    .fetch_optional(&state.db)
    .await?;
    Ok(match row {
        Some(r) => Some(User { id: r.try_get(0)?, hub_admin: r.try_get::<i64, _>(1)? != 0, via: Via::Session }),
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
