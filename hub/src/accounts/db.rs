//! SQL of the accounts feature.

use ferry_schemas::ApiToken;

use crate::db::{Db, now_ms};

pub struct LoginRow {
    pub id: String,
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub disabled: bool,
}

/// A [`LoginRow`] as stored (flags as integers).
#[derive(sqlx::FromRow)]
struct StoredLogin {
    id: String,
    password_hash: Option<String>,
    email_verified: i64,
    failed_logins: i64,
    locked_until: i64,
    disabled: i64,
}

pub async fn login_row(db: &Db, email: &str) -> Result<Option<LoginRow>, sqlx::Error> {
    let row: Option<StoredLogin> =
        sqlx::query_as("SELECT id, password_hash, email_verified, failed_logins, locked_until, disabled FROM users WHERE email = $1")
            .bind(email)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|r| LoginRow {
        id: r.id,
        password_hash: r.password_hash,
        email_verified: r.email_verified != 0,
        failed_logins: r.failed_logins,
        locked_until: r.locked_until,
        disabled: r.disabled != 0,
    }))
}

pub async fn user_id_by_email(db: &Db, email: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM users WHERE email = $1").bind(email).fetch_optional(db).await
}

pub struct NewUser<'a> {
    pub email: Option<&'a str>,
    pub email_verified: bool,
    pub password_hash: Option<&'a str>,
    pub name: &'a str,
    pub practice: &'a str,
    pub address: &'a str,
    pub phone: &'a str,
    pub hub_admin: bool,
}

pub async fn insert_user(db: &Db, u: &NewUser<'_>) -> Result<String, sqlx::Error> {
    let id = uuid::Uuid::new_v4().to_string();
    sqlx::query(
        "INSERT INTO users (id, email, email_verified, password_hash, name, practice, address, phone, \
         is_hub_admin, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&id)
    .bind(u.email)
    .bind(u.email_verified as i64)
    .bind(u.password_hash)
    .bind(u.name)
    .bind(u.practice)
    .bind(u.address)
    .bind(u.phone)
    .bind(u.hub_admin as i64)
    .bind(now_ms())
    .execute(db)
    .await?;
    Ok(id)
}

/// A sign-in attempt, claimed before its password is checked.
pub struct LoginAttempt {
    /// This attempt locked the account (it reached the limit; the count starts again after the lock).
    pub locks: bool,
}

/// Claims one sign-in attempt before the password is checked: counts it as a failure and, when
/// the count reaches `max_failed`, locks the account until `lock_until` (the count starts again
/// for the time after) — in one conditional statement, so sign-ins that arrive together are
/// counted one by one and none is checked past the lock. `None`: the account is locked or
/// disabled, and the password must not be checked.
pub async fn claim_login(db: &Db, id: &str, now: i64, max_failed: i64, lock_until: i64) -> Result<Option<LoginAttempt>, sqlx::Error> {
    let locked_until: Option<i64> = sqlx::query_scalar(
        "UPDATE users SET \
         failed_logins = CASE WHEN failed_logins + 1 >= $3 THEN 0 ELSE failed_logins + 1 END, \
         locked_until = CASE WHEN failed_logins + 1 >= $3 THEN $4 ELSE locked_until END \
         WHERE id = $1 AND disabled = 0 AND locked_until <= $2 \
         RETURNING locked_until",
    )
    .bind(id)
    .bind(now)
    .bind(max_failed)
    .bind(lock_until)
    .fetch_optional(db)
    .await?;
    Ok(locked_until.map(|l| LoginAttempt { locks: l > now }))
}

/// A right password: the count starts again, and a lock its own attempt set is lifted.
pub async fn reset_logins(db: &Db, id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET failed_logins = 0, locked_until = 0 WHERE id = $1").bind(id).execute(db).await?;
    Ok(())
}

pub async fn insert_session(db: &Db, token_hash: &str, user_id: &str, expires_at: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO sessions (token_hash, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(user_id)
        .bind(now_ms())
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn delete_session(db: &Db, token_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE token_hash = $1").bind(token_hash).execute(db).await?;
    Ok(())
}

/// Stores a one-time link token (`verify`, `reset` or `setup`).
pub async fn insert_email_token(
    db: &Db,
    token_hash: &str,
    user_id: Option<&str>,
    purpose: &str,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO email_tokens (token_hash, user_id, purpose, expires_at) VALUES ($1, $2, $3, $4)")
        .bind(token_hash)
        .bind(user_id)
        .bind(purpose)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// Uses up a one-time token: returns its user (None for setup tokens) when it was valid. The
/// UPDATE's row count makes a token usable exactly once even when two requests race.
pub async fn consume_email_token(db: &Db, token_hash: &str, purpose: &str) -> Result<Option<Option<String>>, sqlx::Error> {
    let now = now_ms();
    let user: Option<Option<String>> = sqlx::query_scalar(
        "SELECT user_id FROM email_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3",
    )
    .bind(token_hash)
    .bind(purpose)
    .bind(now)
    .fetch_optional(db)
    .await?;
    let Some(user) = user else { return Ok(None) };
    let done = sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
        .bind(now)
        .bind(token_hash)
        .execute(db)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    Ok(Some(user))
}

pub async fn email_token_valid(db: &Db, token_hash: &str, purpose: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM email_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3")
        .bind(token_hash)
        .bind(purpose)
        .bind(now_ms())
        .fetch_optional(db)
        .await?
        .is_some())
}

pub async fn has_hub_admin(db: &Db) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE is_hub_admin = 1 LIMIT 1").fetch_optional(db).await?.is_some())
}

pub use crate::access::account::{account, memberships};

pub async fn set_email_verified(db: &Db, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET email_verified = 1 WHERE id = $1").bind(user_id).execute(db).await?;
    Ok(())
}

/// A new password from a reset link: the address is thereby proven and the lockout lifted.
pub async fn set_password(db: &Db, user_id: &str, password_hash: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE users SET password_hash = $1, email_verified = 1, failed_logins = 0, locked_until = 0 WHERE id = $2")
        .bind(password_hash)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(())
}

/// Ends every session of an account.
pub async fn delete_sessions_of(db: &Db, user_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1").bind(user_id).execute(db).await?;
    Ok(())
}

pub async fn insert_token(
    db: &Db,
    id: &str,
    user_id: &str,
    name: &str,
    token_hash: &str,
    created_at: i64,
    expires_at: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO api_tokens (id, user_id, name, token_hash, created_at, expires_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(id)
        .bind(user_id)
        .bind(name)
        .bind(token_hash)
        .bind(created_at)
        .bind(expires_at)
        .execute(db)
        .await?;
    Ok(())
}

/// A personal access token as its owner sees it (never the secret).
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    name: String,
    created_at: i64,
    expires_at: i64,
    last_used_at: Option<i64>,
}

/// An account's tokens that are neither revoked nor expired, newest first.
pub async fn tokens(db: &Db, user_id: &str, now: i64) -> Result<Vec<ApiToken>, sqlx::Error> {
    let rows: Vec<TokenRow> = sqlx::query_as(
        "SELECT id, name, created_at, expires_at, last_used_at FROM api_tokens \
         WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > $2 ORDER BY created_at DESC",
    )
    .bind(user_id)
    .bind(now)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| ApiToken {
            id: r.id,
            name: r.name,
            created_at: r.created_at,
            expires_at: r.expires_at,
            last_used_at: r.last_used_at,
            token: None,
        })
        .collect())
}

/// Revokes one of the account's tokens; false when it has no such (unrevoked) token.
pub async fn revoke_token(db: &Db, user_id: &str, id: &str, now: i64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE id = $2 AND user_id = $3 AND revoked_at IS NULL")
        .bind(now)
        .bind(id)
        .bind(user_id)
        .execute(db)
        .await?;
    Ok(done.rows_affected() != 0)
}

// ---- OpenID Connect ----

/// A sign-in started at an identity provider, until its answer comes back.
pub struct NewOidcLogin<'a> {
    /// The hash of the state parameter.
    pub state: &'a str,
    pub provider: &'a str,
    pub nonce: &'a str,
    pub pkce_verifier: &'a str,
    pub return_to: &'a str,
    /// The signed-in account that links the identity (none: a sign-in).
    pub link_user_id: Option<String>,
    pub expires_at: i64,
}

pub async fn delete_expired_oidc_logins(db: &Db, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM oidc_logins WHERE expires_at < $1").bind(now).execute(db).await?;
    Ok(())
}

pub async fn insert_oidc_login(db: &Db, l: &NewOidcLogin<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO oidc_logins (state, provider, nonce, pkce_verifier, return_to, link_user_id, expires_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(l.state)
    .bind(l.provider)
    .bind(l.nonce)
    .bind(l.pkce_verifier)
    .bind(l.return_to)
    .bind(l.link_user_id.clone())
    .bind(l.expires_at)
    .execute(db)
    .await?;
    Ok(())
}

/// A started sign-in, as the provider's answer finds it.
#[derive(sqlx::FromRow)]
pub struct OidcLogin {
    pub nonce: String,
    pub pkce_verifier: String,
    pub return_to: String,
    pub link_user_id: Option<String>,
}

/// The unexpired sign-in of this state (hash) at this provider.
pub async fn oidc_login(db: &Db, state: &str, provider: &str, now: i64) -> Result<Option<OidcLogin>, sqlx::Error> {
    sqlx::query_as(
        "SELECT nonce, pkce_verifier, return_to, link_user_id FROM oidc_logins \
         WHERE state = $1 AND provider = $2 AND expires_at > $3",
    )
    .bind(state)
    .bind(provider)
    .bind(now)
    .fetch_optional(db)
    .await
}

/// Uses up a started sign-in; false when another request used it first.
pub async fn use_oidc_login(db: &Db, state: &str) -> Result<bool, sqlx::Error> {
    let used = sqlx::query("DELETE FROM oidc_logins WHERE state = $1").bind(state).execute(db).await?;
    Ok(used.rows_affected() == 1)
}

/// The account linked to a provider's identity.
pub async fn oidc_user(db: &Db, issuer: &str, subject: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM oidc_identities WHERE issuer = $1 AND subject = $2")
        .bind(issuer)
        .bind(subject)
        .fetch_optional(db)
        .await
}

/// Links a provider's identity to an account; a unique violation when it is linked already.
pub async fn link_identity(db: &Db, issuer: &str, subject: &str, user_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO oidc_identities (issuer, subject, user_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(issuer)
        .bind(subject)
        .bind(user_id)
        .bind(now)
        .execute(db)
        .await?;
    Ok(())
}

pub async fn is_disabled(db: &Db, user_id: &str) -> Result<bool, sqlx::Error> {
    let disabled: i64 = sqlx::query_scalar("SELECT disabled FROM users WHERE id = $1").bind(user_id).fetch_one(db).await?;
    Ok(disabled != 0)
}

/// An account that is not disabled, with its hub admin flag.
#[derive(sqlx::FromRow)]
pub struct EnabledUser {
    pub id: String,
    pub is_hub_admin: i64,
}

pub async fn enabled_user(db: &Db, user_id: &str) -> Result<Option<EnabledUser>, sqlx::Error> {
    sqlx::query_as("SELECT id, is_hub_admin FROM users WHERE id = $1 AND disabled = 0").bind(user_id).fetch_optional(db).await
}
