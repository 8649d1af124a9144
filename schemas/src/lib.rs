//! Ferry's contract between hub, connector and clients: the SQL migrations the hub runs, the
//! OpenAPI document it serves, and the wire types both sides (de)serialise.

use serde::{Deserialize, Serialize};

/// The SQL migrations, in order: `(version, description, sql)`. The same SQL runs on SQLite and
/// PostgreSQL. Never edit an applied migration; add a new one.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "core", include_str!("../migrations/0001_core.sql")),
    (2, "communities", include_str!("../migrations/0002_communities.sql")),
    (3, "accounts and transfers", include_str!("../migrations/0003_accounts_transfers.sql")),
    (4, "community logos", include_str!("../migrations/0004_community_logos.sql")),
    (5, "connectors", include_str!("../migrations/0005_connectors.sql")),
];

/// The OpenAPI document of the hub's own (non-DICOMweb) API.
/// Header by which a connector process names itself (a random id kept in its state directory), so
/// a restarted process resumes the transfers it held while another process never shares them.
pub const CONNECTOR_INSTANCE_HEADER: &str = "ferry-connector-instance";

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
    /// Only referrers the community's admins approved may send to it.
    #[serde(default)]
    pub requires_approval: bool,
    /// Default lifetime of the access codes the community issues, in days.
    #[serde(default = "ninety")]
    pub default_share_days: u32,
    /// Whether `GET /api/v1/communities/{code}/logo` has an image.
    #[serde(default)]
    pub has_logo: bool,
}

fn ninety() -> u32 {
    90
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

/// `POST /api/v1/auth/register`: a referrer's account with what a clinic needs to trust them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Registration {
    pub email: String,
    pub password: String,
    pub name: String,
    #[serde(default)]
    pub practice: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub phone: String,
}

/// `POST /api/v1/auth/login`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Credentials {
    pub email: String,
    pub password: String,
}

/// A community role of the signed-in user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Membership {
    pub community: String,
    pub community_name: String,
    /// `admin` or `member`.
    pub role: String,
}

/// `GET /api/v1/me`: the signed-in account.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Account {
    pub id: String,
    pub email: Option<String>,
    pub email_verified: bool,
    pub name: String,
    #[serde(default)]
    pub practice: String,
    #[serde(default)]
    pub address: String,
    #[serde(default)]
    pub phone: String,
    pub hub_admin: bool,
    #[serde(default)]
    pub memberships: Vec<Membership>,
}

/// `POST /api/v1/tokens`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewToken {
    pub name: String,
    /// Days until the token expires (1 to 365, default 90).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// A personal access token as listed; `token` is only present in the answer that created it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub created_at: i64,
    pub expires_at: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `POST /api/v1/transfers`: opens a transfer (state `draft`) to a community.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewTransfer {
    /// The community's public code, e.g. `bM1X`.
    pub community: String,
    #[serde(default)]
    pub reason: String,
    /// The patient's appointment, free text or a date (`2026-12-01`).
    #[serde(default)]
    pub appointment: String,
    /// `routine` (default) or `urgent`.
    #[serde(default)]
    pub urgency: Option<String>,
}

/// One series of a study in a transfer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferSeries {
    pub series_uid: String,
    pub modality: String,
    pub description: String,
    pub instances: u64,
}

/// One study of a transfer, with the patient it belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferStudy {
    pub study_uid: String,
    pub patient_name: String,
    pub patient_id: String,
    pub patient_birth_date: String,
    pub study_date: String,
    pub description: String,
    pub modalities: Vec<String>,
    pub instances: u64,
    pub bytes: u64,
    #[serde(default)]
    pub series: Vec<TransferSeries>,
}

/// A state change of a transfer.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TransferEvent {
    pub at: i64,
    pub state: String,
    #[serde(default)]
    pub message: String,
}

/// A transfer as its sender and the receiving community see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Transfer {
    pub id: String,
    /// `draft`, `sent`, `received`, `stored`, `failed`, `done` or `rejected`.
    pub state: String,
    #[serde(default)]
    pub state_message: String,
    pub community: String,
    pub community_name: String,
    pub sender_name: String,
    #[serde(default)]
    pub sender_practice: String,
    pub reason: String,
    pub appointment: String,
    pub urgency: String,
    pub instances: u64,
    pub bytes: u64,
    pub created_at: i64,
    #[serde(default)]
    pub sent_at: Option<i64>,
    pub updated_at: i64,
    #[serde(default)]
    pub studies: Vec<TransferStudy>,
    #[serde(default)]
    pub events: Vec<TransferEvent>,
}

/// `POST /api/v1/transfers/{id}/done` and `/reject`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Decision {
    #[serde(default)]
    pub message: String,
}

/// A member of a community as its admins see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Member {
    pub user_id: String,
    pub email: Option<String>,
    pub name: String,
    /// `admin` or `member`.
    pub role: String,
}

/// `PUT /api/v1/communities/{code}/members`: adds a registered account or changes its role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewMember {
    pub email: String,
    pub role: String,
}

/// A referrer asking to send to a community that approves its senders.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ReferrerApproval {
    pub user_id: String,
    pub name: String,
    pub email: Option<String>,
    pub practice: String,
    pub address: String,
    pub phone: String,
    /// `pending`, `approved` or `rejected`.
    pub status: String,
}

/// `PATCH /api/v1/communities/{code}`: what a community admin may change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct CommunitySettings {
    #[serde(default)]
    pub requires_approval: Option<bool>,
    #[serde(default)]
    pub default_share_days: Option<u32>,
    #[serde(default)]
    pub accepts_inbound: Option<bool>,
    #[serde(default)]
    pub contact: Option<String>,
    #[serde(default)]
    pub address: Option<String>,
    #[serde(default)]
    pub departments: Option<Vec<String>>,
}

/// `POST /api/v1/communities/{code}/connectors`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewConnector {
    pub name: String,
}

/// A registered connector as its community's admins see it; `client_secret` only in the answer
/// that created or rotated it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Connector {
    pub id: String,
    pub name: String,
    pub client_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    pub created_at: i64,
    #[serde(default)]
    pub revoked: bool,
    #[serde(default)]
    pub last_seen_at: Option<i64>,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub queue_depth: i64,
    #[serde(default)]
    pub last_error: String,
}

/// `POST /api/v1/connector/heartbeat`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Heartbeat {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub queue_depth: i64,
    #[serde(default)]
    pub last_error: String,
}

/// One instance of a claimed transfer: what to download and how to verify it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedInstance {
    pub study_uid: String,
    pub series_uid: String,
    pub sop_instance_uid: String,
    pub size: u64,
    pub sha256: String,
    /// Already confirmed by the PACS in an earlier attempt.
    #[serde(default)]
    pub acked: bool,
}

/// The answer of `POST /api/v1/connector/claim`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Claim {
    pub transfer: Transfer,
    /// Unix milliseconds until which this connector holds the transfer.
    pub lease_until: i64,
    pub instances: Vec<ClaimedInstance>,
}

/// `POST /api/v1/connector/transfers/{id}/acks`: instances the PACS confirmed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Ack {
    pub sop_instance_uid: String,
    /// The PACS's DIMSE status (0x0000 success; warnings 0xB000, 0xB006, 0xB007 are recorded).
    #[serde(default)]
    pub status: u16,
}

/// `POST /api/v1/connector/transfers/{id}/state`: `stored` (every instance acknowledged) or
/// `failed` with the reason the sender sees.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectorReport {
    pub state: String,
    #[serde(default)]
    pub message: String,
}
