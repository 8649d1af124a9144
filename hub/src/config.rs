//! Layered configuration: built-in defaults → `ferry-hub.toml` → `FERRY_` environment variables
//! (`__` separates nesting, e.g. `FERRY_DATABASE__URL`) → command-line flags.
//!
//! Zero configuration gives a working hub on 127.0.0.1:8080 with SQLite and local files under
//! `./ferry-data`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use secrecy::SecretString;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Address the HTTP server binds to. Port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where the embedded defaults keep their state (SQLite database, blobs, key file).
    pub data_dir: PathBuf,
    /// The URL clients reach the hub at (behind a reverse proxy). Used for absolute URLs such as
    /// BulkDataURI and RetrieveURL; when unset they are derived from the request's Host header.
    pub public_url: Option<String>,
    pub database: DatabaseConfig,
    pub storage: StorageConfig,
    pub keys: KeysConfig,
    pub auth: AuthConfig,
    pub limits: LimitsConfig,
    pub log: LogConfig,
    pub sweep: SweepConfig,
    pub mail: MailConfig,
    pub connectors: ConnectorsConfig,
    pub shares: SharesConfig,
    pub retention: RetentionConfig,
    pub viewer: ViewerConfig,
}

/// The clinician viewer (OHIF), served under `/ohif/` when installed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ViewerConfig {
    /// The `dist/` folder of the `@ohif/app` npm package (`deploy/ohif/fetch.sh` fetches the
    /// pinned version). Unset: no OHIF viewer, the hub runs without it.
    pub ohif_dir: Option<PathBuf>,
}

/// Access codes: lifetimes, the brute-force guard and the sessions after a right answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SharesConfig {
    /// The longest a share may live (days), also after extensions.
    pub max_days: u32,
    /// Wrong answers to a code before it is locked for `lockout_secs`; every further wrong answer
    /// doubles the lock (at most a day).
    pub max_failed: u32,
    pub lockout_secs: u64,
    /// After this many wrong answers the code stays locked until the clinic unlocks it.
    pub hard_lock_after: u32,
    /// Browser session after a right answer: closed after `session_idle_secs` without a request,
    /// and after `session_max_secs` in any case.
    pub session_idle_secs: u64,
    pub session_max_secs: u64,
    /// Lifetime of a DLX bearer token (JWT).
    pub dlx_token_secs: u64,
    /// Rate limit of code redemption per client address: a burst, then one per period.
    pub rate_burst: u32,
    pub rate_period_ms: u64,
    /// ZIP downloads by DLX clients at the same time; beyond it DLX answers 503 with
    /// `timeOutInSeconds` (as the DLX interface provides) instead of slowing everybody down.
    pub dlx_parallel_downloads: u32,
}

impl Default for SharesConfig {
    fn default() -> Self {
        Self {
            max_days: 730,
            max_failed: 5,
            lockout_secs: 300,
            hard_lock_after: 20,
            session_idle_secs: 1800,
            session_max_secs: 12 * 3600,
            dlx_token_secs: 3600,
            rate_burst: 10,
            rate_period_ms: 6000,
            dlx_parallel_downloads: 8,
        }
    }
}

/// The deletion of expired shares and of the data nothing else holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    /// How often the retention job runs.
    pub interval_secs: u64,
    /// How long an expired or revoked share (and its data) is kept before deletion, so the
    /// clinic can still extend it. Shares the patient deleted go at once.
    pub grace_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { interval_secs: 600, grace_secs: 7 * 86400 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct ConnectorsConfig {
    /// Lifetime of a connector's access token from the token endpoint.
    pub token_secs: u64,
    /// How long a claimed transfer stays with one connector without news from it; then another
    /// connector instance may claim it.
    pub lease_secs: u64,
}

impl Default for ConnectorsConfig {
    fn default() -> Self {
        Self { token_secs: 600, lease_secs: 300 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`. Default: SQLite at `<data_dir>/ferry.db`.
    pub url: Option<String>,
    pub max_connections: Option<u32>,
    /// How long a request waits for a database connection before it fails with 503 (default
    /// 15 s). While the database is unreachable, the hub keeps trying to reconnect for that
    /// long, so a short outage only delays requests.
    pub acquire_timeout_secs: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageBackend {
    Local,
    S3,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct StorageConfig {
    pub backend: StorageBackend,
    /// Local backend: the folder of the blobs. Default `<data_dir>/blobs`.
    pub path: Option<PathBuf>,
    pub s3: S3Config,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct S3Config {
    pub bucket: String,
    /// e.g. `http://127.0.0.1:8333` for SeaweedFS; unset for AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
    pub access_key_id: Option<String>,
    #[serde(skip_serializing)]
    pub secret_access_key: Option<SecretString>,
    /// Allow plain-HTTP endpoints (test and lab setups).
    pub allow_http: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct KeysConfig {
    /// Where the key-encryption key lives: `local` (the key file below) or `transit` (an external
    /// key service: OpenBao or Vault transit, `[keys.transit]`).
    pub provider: KeyProviderKind,
    pub transit: TransitConfig,
    /// The local key-encryption key (32 random bytes, hex). Created on first start when missing.
    /// Default `<data_dir>/keys/kek.hex`. Keep it apart from the database and blob backups.
    pub kek_file: Option<PathBuf>,
    /// The hub secret (32 random bytes, hex): keys the hashes of access codes and signs DLX
    /// tokens. Created on first start when missing. Default `<data_dir>/keys/hub-secret.hex`.
    /// Several hubs of one system share it.
    pub secret_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyProviderKind {
    #[default]
    Local,
    Transit,
}

/// The transit secrets engine of OpenBao or HashiCorp Vault holding the key-encryption key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TransitConfig {
    /// The service's address, e.g. `https://bao.example.org:8200`.
    pub url: String,
    /// Where the transit engine is mounted.
    pub mount: String,
    /// The transit key's name (type `aes256-gcm96`; created by the operator).
    pub key: String,
    /// A token allowed to encrypt and decrypt with the key (and, for `ferry-hub keys rotate`, to
    /// rotate it and set `min_decryption_version`). Prefer `token_file` or
    /// `FERRY_KEYS__TRANSIT__TOKEN`.
    #[serde(skip_serializing)]
    pub token: Option<SecretString>,
    pub token_file: Option<PathBuf>,
    /// Enterprise/OpenBao namespace (`X-Vault-Namespace`), if any.
    pub namespace: Option<String>,
    pub timeout_secs: u64,
}

impl Default for TransitConfig {
    fn default() -> Self {
        Self {
            url: "http://127.0.0.1:8200".into(),
            mount: "transit".into(),
            key: "ferry-kek".into(),
            token: None,
            token_file: None,
            namespace: None,
            timeout_secs: 10,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AuthConfig {
    /// Bearer token that grants the operator principal (full DICOMweb access). When unset, one
    /// is generated on first start and stored in `<data_dir>/admin-token`.
    #[serde(skip_serializing)]
    pub admin_token: Option<SecretString>,
    /// Consecutive failed sign-ins that lock an account, and for how long.
    pub max_failed_logins: u32,
    pub lockout_secs: u64,
    /// How long a browser session lasts.
    pub session_days: u32,
    /// Rate limit of the sign-in, registration and reset endpoints per client address: a burst
    /// of `rate_burst` requests, then one per `rate_period_ms`.
    pub rate_burst: u32,
    pub rate_period_ms: u64,
    /// OpenID Connect identity providers (`[[auth.oidc]]` tables).
    pub oidc: Vec<OidcProvider>,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            admin_token: None,
            max_failed_logins: 5,
            lockout_secs: 900,
            session_days: 14,
            rate_burst: 10,
            rate_period_ms: 6000,
            oidc: vec![],
        }
    }
}

/// One OpenID Connect provider. Its redirect URI is `<public_url>/auth/oidc/<id>/callback`.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct OidcProvider {
    /// Short name used in URLs, e.g. `klinikum`.
    pub id: String,
    /// What the sign-in button says, e.g. "Klinikum-Login".
    pub label: String,
    /// The issuer URL (discovery at `<issuer>/.well-known/openid-configuration`).
    pub issuer: String,
    pub client_id: String,
    #[serde(skip_serializing)]
    pub client_secret: Option<SecretString>,
    /// Accept this provider's access tokens as API bearer tokens (checked at its userinfo
    /// endpoint) for accounts linked to it.
    pub accept_access_tokens: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct MailConfig {
    /// Sender address of the hub's mails.
    pub from: Option<String>,
    /// SMTP server: `smtp://host:25`, `smtp://user:pass@host:587?tls=required` (STARTTLS) or
    /// `smtps://user:pass@host:465`. Unset: mails go to the console and the outbox folder.
    #[serde(skip_serializing)]
    pub smtp_url: Option<SecretString>,
    /// Folder where mails are kept when no SMTP server is configured. Default `<data_dir>/outbox`.
    pub outbox: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LimitsConfig {
    /// Largest single DICOM file accepted (one STOW part or one upload entry).
    pub max_instance_bytes: u64,
    /// Largest upload body (ZIP, folder) accepted in one request.
    pub max_upload_bytes: u64,
    /// Largest part of a DICOM file before the pixel data that the hub parses in memory.
    pub max_header_bytes: u64,
    /// Most entries a ZIP upload may have.
    pub max_zip_entries: u64,
    /// Largest expansion ratio of a compressed ZIP entry (ZIP bomb guard).
    pub max_zip_ratio: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct LogConfig {
    /// `text` (readable, development) or `json` (production).
    pub format: String,
    /// `tracing` filter directives; `RUST_LOG` overrides.
    pub filter: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct SweepConfig {
    /// A blob still pending after this many seconds belongs to an upload that died: delete it.
    pub orphan_age_secs: u64,
    /// How often the orphan sweeper runs.
    pub interval_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./ferry-data"),
            public_url: None,
            database: DatabaseConfig::default(),
            storage: StorageConfig::default(),
            keys: KeysConfig::default(),
            auth: AuthConfig::default(),
            limits: LimitsConfig::default(),
            log: LogConfig::default(),
            sweep: SweepConfig::default(),
            mail: MailConfig::default(),
            connectors: ConnectorsConfig::default(),
            shares: SharesConfig::default(),
            retention: RetentionConfig::default(),
            viewer: ViewerConfig::default(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self { backend: StorageBackend::Local, path: None, s3: S3Config::default() }
    }
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_instance_bytes: 4 << 30,
            max_upload_bytes: 64 << 30,
            max_header_bytes: 64 << 20,
            max_zip_entries: 100_000,
            max_zip_ratio: 200,
        }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: "text".into(), filter: "info,sqlx=warn".into() }
    }
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self { orphan_age_secs: 3600, interval_secs: 300 }
    }
}

/// Values given on the command line; they win over every other layer.
#[derive(Debug, Default, Serialize)]
pub struct CliOverrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data_dir: Option<PathBuf>,
}

impl Config {
    /// Loads the layered configuration. `file` defaults to `ferry-hub.toml` in the working
    /// directory (a missing default file is fine; a missing named file is an error).
    pub fn load(file: Option<&Path>, cli: CliOverrides) -> anyhow::Result<Self> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                anyhow::ensure!(path.exists(), "config file {} does not exist", path.display());
                fig = fig.merge(Toml::file_exact(path));
            }
            None => fig = fig.merge(Toml::file("ferry-hub.toml")),
        }
        let fig = fig.merge(Env::prefixed("FERRY_").split("__")).merge(Serialized::defaults(cli));
        let config: Config = fig.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
        Ok(config)
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("ferry.db").display()),
        }
    }

    pub fn blob_dir(&self) -> PathBuf {
        self.storage.path.clone().unwrap_or_else(|| self.data_dir.join("blobs"))
    }

    pub fn secret_file(&self) -> PathBuf {
        self.keys.secret_file.clone().unwrap_or_else(|| self.data_dir.join("keys").join("hub-secret.hex"))
    }

    pub fn kek_file(&self) -> PathBuf {
        self.keys.kek_file.clone().unwrap_or_else(|| self.data_dir.join("keys").join("kek.hex"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The configurations shipped in `deploy/` load (a renamed or mistyped key fails here).
    #[test]
    fn the_shipped_configurations_load() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["deploy/ferry-hub.example.toml", "deploy/compose/ferry-hub.toml", "deploy/helm/ferry/files/ferry-hub.toml"] {
            let c = Config::load(Some(&root.join(file)), CliOverrides::default());
            assert!(c.is_ok(), "{file}: {:?}", c.err());
        }
        let Ok(compose) = Config::load(Some(&root.join("deploy/compose/ferry-hub.toml")), CliOverrides::default()) else {
            panic!("compose")
        };
        assert_eq!(compose.auth.oidc.len(), 1);
    }
}
