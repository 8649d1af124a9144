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
    /// The folded directory texts, kept in memory between searches.
    pub directory: crate::communities::DirectoryCache,
    /// The hub's own URL (`public_url`, else the bound address): links in mails and redirect URIs
    /// are built from it, never from a request's Host header.
    pub base_url: String,
    pub mailer: crate::accounts::mail::Mailer,
    pub oidc: crate::accounts::oidc::OidcCache,
    pub auth_limit: crate::accounts::AuthLimit,
    /// The rate limit of code redemption per client address.
    pub redeem_limit: crate::accounts::AuthLimit,
    pub secret: crate::storage::keys::HubSecret,
    /// Slots for DLX ZIP downloads (`shares.dlx_parallel_downloads`).
    pub dlx_downloads: Arc<tokio::sync::Semaphore>,
    /// DICOMweb reads recorded lately (one audit record per reader, study and window).
    pub audit_recent: crate::audit::Recent,
    /// The OHIF viewer's distribution, when `viewer.ohif_dir` names one.
    pub ohif: Option<Arc<crate::ohif::Ohif>>,
}
