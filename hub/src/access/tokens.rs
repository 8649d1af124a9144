//! Secrets handed to clients (session cookies, personal access tokens, one-time links): random,
//! and stored only as their SHA-256, so a database leak does not give anyone a working token.

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Personal access tokens start with this, so they are recognisable in a secret scanner.
pub const PAT_PREFIX: &str = "fpat_";

/// 32 random bytes, hex, behind `prefix`.
pub fn new_secret(prefix: &str) -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("{prefix}{}", hex::encode(bytes))
}

pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}
