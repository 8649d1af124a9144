//! Shared application state handed to every handler.

use std::sync::Arc;

use secrecy::SecretString;

use crate::config::Config;
use crate::db::{Db, Dialect};
use crate::storage::BlobStore;
use crate::storage::keys::Keyring;

#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    /// Reads (and, on PostgreSQL, writes).
    pub db: Db,
    /// Writes: one connection on SQLite so writers queue instead of spinning on the lock.
    pub db_write: Db,
    pub dialect: Dialect,
    /// The group-commit writer of the instance index (ingest's database writes).
    pub index: crate::ingest::index::IndexWriter,
    pub blobs: BlobStore,
    pub keys: Keyring,
    pub admin_token: SecretString,
    /// Limits concurrent CPU-heavy renderings so they cannot starve the I/O paths.
    pub render_slots: Arc<tokio::sync::Semaphore>,
    /// The hub's own URL (`public_url`, else the bound address): links in mails and redirect URIs
    /// are built from it, never from a request's Host header.
    pub base_url: String,
    pub mailer: crate::mail::Mailer,
    pub auth_limit: crate::http::RateLimit,
    /// The rate limit of code redemption per client address.
    pub redeem_limit: crate::http::RateLimit,
    pub secret: crate::storage::keys::HubSecret,
    /// Slots for DLX ZIP downloads (`shares.dlx_parallel_downloads`).
    pub dlx_downloads: Arc<tokio::sync::Semaphore>,
    /// DICOMweb reads recorded lately (one audit record per reader, study and window).
    pub audit_recent: crate::audit::Recent,
    /// What features keep for themselves, by type, put there at start-up: the directory's
    /// cache, the sign-in providers' metadata, the OHIF viewer's files, the credential resolvers.
    /// This module names no feature (see ARCHITECTURE.md).
    pub features: Arc<axum::http::Extensions>,
}

impl AppState {
    /// A feature's own state (see [`AppState::features`]); 500 when start-up did not put it there.
    pub fn feature<T: Send + Sync + 'static>(&self) -> Result<&T, crate::error::AppError> {
        self.features.get::<T>().ok_or_else(|| {
            crate::error::AppError::Internal(anyhow::anyhow!("{} is missing from the hub's state", std::any::type_name::<T>()))
        })
    }
}
