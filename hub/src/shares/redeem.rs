//! Redeeming a code: the brute-force guard, the sessions that follow a right answer.
//!
//! - A code is parsed first: a typo (wrong check symbol, wrong length) is answered at once and
//!   never counts as a guess; it reveals nothing, since the check is public arithmetic.
//! - An unknown code, a wrong answer, a locked code and a revoked or deleted share all get the
//!   same answer, and all cost one argon2 verification (against a decoy hash where there is no
//!   share), so neither the body nor the timing tells them apart. Only a right answer to an
//!   expired share is told apart (DLX wants 403 there), since the holder has proven both factors.
//! - Wrong answers count per code. From `max_failed` on, each one locks the code for
//!   `lockout_secs`, doubling with every further failure (at most a day); from
//!   `hard_lock_after` on it stays locked until the clinic unlocks it. Requests per client
//!   address are limited separately (tower-governor), and every attempt is audited.
//! - The count and the lock are decided in the database before the answer is checked: each
//!   attempt first claims its place in the row ([`db::claim_attempt`], one conditional UPDATE),
//!   which locks the code when it reaches `max_failed`. Answers that arrive together are thus
//!   handed out one at a time, and once the limit is reached none is checked until the lock
//!   ends — not even a right one. A right answer then resets the count.

use ferry_schemas::dlx::Answer;

use super::code::{AccessCode, CodeError};
use super::db::{self, ShareRow};
use super::factor;
use crate::access::tokens;
use crate::accounts::password;
use crate::audit::{self, Event};
use crate::db::now_ms;
use crate::error::AppResult;
use crate::state::AppState;

pub use crate::access::SHARE_COOKIE;

/// What a redemption came to.
pub enum Outcome {
    /// Right answer: a session for the share.
    Granted { share_id: String, token: String, expires_at: i64 },
    /// Unknown code, wrong answer, locked or ended: one answer for all.
    Denied,
    /// Right answer, but the share has expired.
    Expired,
    /// Not a well-formed code (no lookup was made).
    Typo(CodeError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionKind {
    Browser,
    Dlx,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::Browser => "browser",
            SessionKind::Dlx => "dlx",
        }
    }
}

/// The share a code names, if any (whatever its state).
pub async fn lookup(state: &AppState, code: &AccessCode) -> AppResult<Option<ShareRow>> {
    Ok(db::find_by_code_hash(&state.db, &state.secret.code_hash(code.as_str())).await?)
}

/// Checks `answers` (DLX question ids; the share asks question "1") for `code`.
pub async fn redeem(state: &AppState, code_input: &str, answers: &[Answer], kind: SessionKind, client: &str) -> AppResult<Outcome> {
    let code = match AccessCode::parse(code_input) {
        Ok(c) => c,
        Err(e) => {
            return audited(state, client, "", "typo", "", Outcome::Typo(e)).await;
        }
    };
    let share = lookup(state, &code).await?;
    let now = now_ms();
    let cfg = &state.config.shares;
    // The attempt is counted (and the code locked when it reaches the limit) before its answer
    // is checked; without a claimed attempt the answer is not checked at all.
    let attempt = match &share {
        Some(s) => {
            let first_lock = now + (cfg.lockout_secs.max(1) as i64) * 1000;
            db::claim_attempt(&state.db_write, &s.id, now, (cfg.max_failed as i64).max(1), first_lock).await?
        }
        None => None,
    };
    let given = answers.iter().find(|a| a.question_id.trim() == "1").map(|a| a.answer.as_str()).unwrap_or("");
    let (stored, normalized) = match &share {
        Some(s) => (attempt.map(|_| s.answer_hash.clone()), factor::normalize(&s.question_type, given)),
        None => (None, factor::normalize(factor::BIRTH_DATE, given)),
    };
    // Always one argon2 verification, whatever the case (against the decoy where the answer is
    // not to be checked), so the timing tells nothing either.
    let right = password::verify(normalized, stored).await;
    let Some(share) = share else {
        return audited(state, client, "", "denied", "unknown code", Outcome::Denied).await;
    };
    let deny = |detail: String| audited(state, client, &share.id, "denied", detail, Outcome::Denied);
    let Some(failed) = attempt else {
        if share.purged_at.is_some() || !matches!(share.state.as_str(), "active") {
            return deny(format!("share {}", share.state)).await;
        }
        return deny("locked".into()).await;
    };
    if !right {
        let lock = lock_until(failed, now, cfg.max_failed as i64, cfg.lockout_secs as i64, cfg.hard_lock_after as i64);
        if lock > 0 {
            crate::metrics::lockout();
            db::lock_after_wrong(&state.db_write, &share.id, failed, lock).await?;
        }
        return deny(format!("wrong answer ({failed} in a row)")).await;
    }
    if share.expires_at <= now {
        db::reset_attempts(&state.db_write, &share.id, None).await?;
        return audited(state, client, &share.id, "expired", "", Outcome::Expired).await;
    }
    db::reset_attempts(&state.db_write, &share.id, Some(now)).await?;
    let (token, expires_at) = open_session(state, &share, kind).await?;
    let granted = Outcome::Granted { share_id: share.id.clone(), token, expires_at };
    audited(state, client, &share.id, "ok", kind.as_str(), granted).await
}

/// Records a redemption attempt in the audit trail and passes its outcome on.
async fn audited(
    state: &AppState,
    client: &str,
    share_id: &str,
    result: &str,
    detail: impl AsRef<str>,
    outcome: Outcome,
) -> AppResult<Outcome> {
    crate::metrics::redemption(result);
    audit::record(
        &state.db_write,
        Event {
            actor: "anonymous",
            client_addr: client,
            action: "share.redeem",
            object_kind: "share",
            object_id: share_id,
            result,
            detail: detail.as_ref(),
        },
    )
    .await?;
    Ok(outcome)
}

/// Locked until when after `failed` wrong answers in a row (0: not locked).
pub fn lock_until(failed: i64, now: i64, max_failed: i64, lockout_secs: i64, hard_after: i64) -> i64 {
    if failed >= hard_after.max(1) {
        // Until the clinic unlocks it.
        return i64::MAX / 2;
    }
    if failed < max_failed.max(1) {
        return 0;
    }
    let doublings = (failed - max_failed).min(20) as u32;
    let secs = (lockout_secs.max(1) << doublings).min(86_400);
    now + secs * 1000
}

/// Opens a session for a share. Browser sessions get a random token (the cookie); DLX sessions a
/// signed JWT whose id is the session key.
async fn open_session(state: &AppState, share: &ShareRow, kind: SessionKind) -> AppResult<(String, i64)> {
    let cfg = &state.config.shares;
    let now = now_ms();
    let (token, key, expires_at) = match kind {
        SessionKind::Browser => {
            let t = tokens::new_secret("fsh_");
            let h = tokens::hash(&t);
            (t, h, now + cfg.session_max_secs as i64 * 1000)
        }
        SessionKind::Dlx => {
            let jti = tokens::new_secret("");
            let exp = (now + cfg.dlx_token_secs as i64 * 1000).min(share.expires_at);
            let jwt = super::holder::sign_jwt(state, &share.id, &jti, now / 1000, exp / 1000)?;
            (jwt, tokens::hash(&jti), exp)
        }
    };
    super::db::insert_session(&state.db_write, &key, &share.id, kind.as_str(), now, expires_at).await?;
    Ok((token, expires_at))
}

#[cfg(test)]
mod tests {
    use super::lock_until;

    #[test]
    fn locks_grow_and_end_in_a_hard_lock() {
        let now = 1_000_000;
        assert_eq!(lock_until(4, now, 5, 300, 20), 0);
        assert_eq!(lock_until(5, now, 5, 300, 20), now + 300_000);
        assert_eq!(lock_until(6, now, 5, 300, 20), now + 600_000);
        assert_eq!(lock_until(14, now, 5, 300, 20), now + 86_400_000);
        assert_eq!(lock_until(20, now, 5, 300, 20), i64::MAX / 2);
    }
}
