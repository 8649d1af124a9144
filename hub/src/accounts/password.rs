//! Password hashing with argon2id (the crate's defaults: 19 MiB, 2 passes), on a blocking thread
//! so a burst of sign-ins cannot stall the async workers.

use std::sync::OnceLock;

use argon2::password_hash::SaltString;
use argon2::password_hash::rand_core::OsRng;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};

use crate::error::{AppError, AppResult};

pub const MIN_LEN: usize = 10;
pub const MAX_LEN: usize = 256;

/// Checks a new password's length (NIST SP 800-63B: length, not composition rules).
pub fn check_new(password: &str) -> AppResult<()> {
    let n = password.chars().count();
    if n < MIN_LEN {
        return Err(AppError::BadRequest(format!("a password needs at least {MIN_LEN} characters")));
    }
    if n > MAX_LEN {
        return Err(AppError::BadRequest(format!("a password may have at most {MAX_LEN} characters")));
    }
    Ok(())
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("hashing a password: {e}"))
}

/// argon2 takes 19 MiB and most of a core per hash: at most one per core runs at a time, so a
/// burst of sign-ins or code redemptions queues instead of taking gigabytes of memory.
fn slots() -> &'static tokio::sync::Semaphore {
    static SLOTS: OnceLock<tokio::sync::Semaphore> = OnceLock::new();
    SLOTS.get_or_init(|| tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2)))
}

pub async fn hash(password: String) -> AppResult<String> {
    let _slot = slots().acquire().await.map_err(|e| AppError::Internal(e.into()))?;
    tokio::task::spawn_blocking(move || hash_blocking(&password))
        .await
        .map_err(|e| AppError::Internal(e.into()))?
        .map_err(AppError::Internal)
}

/// A hash of a password nobody knows: verifying against it costs as much as a real check, so an
/// unknown email answers as slowly as a wrong password.
fn decoy() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_blocking(&crate::access::tokens::new_secret("")).unwrap_or_default())
}

/// Verifies `password` against `stored` (or against the decoy when there is no account).
pub async fn verify(password: String, stored: Option<String>) -> bool {
    let Ok(_slot) = slots().acquire().await else { return false };
    tokio::task::spawn_blocking(move || {
        let real = stored.is_some();
        let stored = stored.unwrap_or_else(|| decoy().to_string());
        let ok = PasswordHash::new(&stored).map(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok()).unwrap_or(false);
        ok && real
    })
    .await
    .unwrap_or(false)
}
