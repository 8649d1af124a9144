//! SQL of the accounts feature.

use sqlx::Row;

use crate::db::{Db, now_ms};

pub struct LoginRow {
    pub id: String,
    pub password_hash: Option<String>,
    pub email_verified: bool,
    pub failed_logins: i64,
    pub locked_until: i64,
    pub disabled: bool,
}

pub async fn login_row(db: &Db, email: &str) -> Result<Option<LoginRow>, sqlx::Error> {
    let row = sqlx::query("SELECT id, password_hash, email_verified, failed_logins, locked_until, disabled FROM users WHERE email = $1")
        .bind(email)
        .fetch_optional(db)
        .await?;
    row.map(|r| {
        Ok(LoginRow {
            id: r.try_get(0)?,
            password_hash: r.try_get(1)?,
            email_verified: r.try_get::<i64, _>(2)? != 0,
            failed_logins: r.try_get(3)?,
            locked_until: r.try_get(4)?,
            disabled: r.try_get::<i64, _>(5)? != 0,
        })
    })
    .transpose()
}

pub async fn user_id_by_email(db: &Db, email: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query("SELECT id FROM users WHERE email = $1").bind(email).fetch_optional(db).await?.map(|r| r.try_get(0)).transpose()
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
    let row = sqlx::query(
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
    row.map(|r| Ok(LoginAttempt { locks: r.try_get::<i64, _>(0)? > now })).transpose()
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
    let row =
        sqlx::query("SELECT user_id FROM email_tokens WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3")
            .bind(token_hash)
            .bind(purpose)
            .bind(now)
            .fetch_optional(db)
            .await?;
    let Some(row) = row else { return Ok(None) };
    let done = sqlx::query("UPDATE email_tokens SET used_at = $1 WHERE token_hash = $2 AND used_at IS NULL")
        .bind(now)
        .bind(token_hash)
        .execute(db)
        .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    Ok(Some(row.try_get(0)?))
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
