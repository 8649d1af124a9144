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
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`. Default: SQLite at `<data_dir>/ferry.db`.
    pub url: Option<String>,
    pub max_connections: Option<u32>,
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
    /// The local key-encryption key (32 random bytes, hex). Created on first start when missing.
    /// Default `<data_dir>/keys/kek.hex`. Keep it apart from the database and blob backups.
    pub kek_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct AuthConfig {
    /// Bearer token that grants the admin principal (full DICOMweb access). When unset, one is
    /// generated on first start, stored in `<data_dir>/admin-token` and printed.
    #[serde(skip_serializing)]
    pub admin_token: Option<SecretString>,
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
        let fig = fig
            .merge(Env::prefixed("FERRY_").split("__"))
            .merge(Serialized::defaults(cli));
        let config: Config =
            fig.extract().map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
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

    pub fn kek_file(&self) -> PathBuf {
        self.keys.kek_file.clone().unwrap_or_else(|| self.data_dir.join("keys").join("kek.hex"))
    }
}
