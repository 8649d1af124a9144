//! Who is asking, and what they may see. Every DICOMweb search and retrieve goes through
//! [`Principal::study_scope`] / [`Principal::can_read_study`], so per-user scoping (referrers,
//! community members, share holders) plugs in here without touching the handlers.

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::header;
use secrecy::ExposeSecret;

use crate::error::AppError;
use crate::state::AppState;

/// The authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Holder of the configured admin token: sees and stores everything.
    Admin,
}

/// The set of studies a principal may see, as a filter the queries apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StudyScope {
    All,
    /// Only these Study Instance UIDs.
    Only(Vec<String>),
}

impl Principal {
    pub fn study_scope(&self) -> StudyScope {
        match self {
            Principal::Admin => StudyScope::All,
        }
    }

    pub fn can_read_study(&self, study_uid: &str) -> bool {
        match self.study_scope() {
            StudyScope::All => true,
            StudyScope::Only(uids) => uids.iter().any(|u| u == study_uid),
        }
    }

    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    pub fn can_store(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// A stable identifier for logs and audit (never personal data).
    pub fn log_id(&self) -> &'static str {
        match self {
            Principal::Admin => "admin",
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

impl FromRequestParts<AppState> for Principal {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let auth = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .ok_or(AppError::Unauthorized)?;
        let token = auth
            .strip_prefix("Bearer ")
            .or_else(|| auth.strip_prefix("bearer "))
            .ok_or(AppError::Unauthorized)?
            .trim();
        if token_matches(token, state.admin_token.expose_secret()) {
            tracing::Span::current().record("principal", "admin");
            return Ok(Principal::Admin);
        }
        Err(AppError::Unauthorized)
    }
}
