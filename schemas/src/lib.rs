//! Ferry's contract between hub, connector and clients: the SQL migrations the hub runs, the
//! OpenAPI document it serves, and the wire types both sides (de)serialise.

use serde::{Deserialize, Serialize};

/// The SQL migrations, in order: `(version, description, sql)`. The same SQL runs on SQLite and
/// PostgreSQL. Never edit an applied migration; add a new one.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (2, "communities", include_str!("../migrations/0002_communities.sql")),
];

/// The OpenAPI document of the hub's own (non-DICOMweb) API.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// An RFC 9457 problem document, as every non-DICOMweb error of the hub is rendered.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Problem {
    #[serde(rename = "type")]
    pub type_: String,
    pub title: String,
    pub status: u16,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// What became of one file of an upload (ZIP, folder or DICOMDIR).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadedFile {
    /// The file's path inside the upload (ZIP entry name or form file name).
    pub path: String,
    /// `stored`, `duplicate` (same instance with the same bytes was already there), `skipped`
    /// (not a DICOM file, e.g. a README on a CD) or `failed`.
    pub outcome: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sop_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub study_instance_uid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// The answer of `POST /api/v1/uploads`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct UploadReport {
    pub stored: u64,
    pub duplicates: u64,
    pub skipped: u64,
    pub failed: u64,
    /// Study Instance UIDs that received at least one instance.
    pub studies: Vec<String>,
    pub files: Vec<UploadedFile>,
}

/// `GET /healthz` and `GET /readyz`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Health {
    pub status: String,
    pub version: String,
}

/// A community (institution) as the directory shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Community {
    pub code: String,
    pub name: String,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub contact: String,
    #[serde(default = "yes")]
    pub accepts_inbound: bool,
}

fn yes() -> bool {
    true
}

/// `POST /api/v1/communities`: a new community; the code is generated when not given.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewCommunity {
    pub name: String,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub city: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub departments: Vec<String>,
    #[serde(default)]
    pub contact: String,
    #[serde(default)]
    pub accepts_inbound: Option<bool>,
}
