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
    (6, "shares and audit", include_str!("../migrations/0006_shares.sql")),
    (7, "audit chain", include_str!("../migrations/0007_audit_chain.sql")),
    (8, "tenant index", include_str!("../migrations/0008_tenant_index.sql")),
    (9, "connector targets", include_str!("../migrations/0009_connector_targets.sql")),
];

/// The OpenAPI document of the hub's own (non-DICOMweb) API.
/// Header by which a connector process names itself (a random id kept in its state directory), so
/// a restarted process resumes the transfers it held while another process never shares them.
pub const CONNECTOR_INSTANCE_HEADER: &str = "ferry-connector-instance";

pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");

/// A DICOM UID (PS3.5 §9.1): 1 to 64 characters, digits and dots. Deserialising checks it, so a
/// body naming a malformed UID is refused before any handler sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Uid(String);

impl Uid {
    /// Whether `s` is a UID as DICOM allows it.
    pub fn is_valid(s: &str) -> bool {
        !s.is_empty() && s.len() <= 64 && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
    }

    pub fn new(s: impl Into<String>) -> Result<Uid, InvalidUid> {
        let s = s.into();
        if Uid::is_valid(&s) { Ok(Uid(s)) } else { Err(InvalidUid) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Not a UID: more than 64 characters, or something other than digits and dots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidUid;

impl std::fmt::Display for InvalidUid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a UID is 1 to 64 characters, digits and dots")
    }
}

impl std::error::Error for InvalidUid {}

impl TryFrom<String> for Uid {
    type Error = InvalidUid;
    fn try_from(s: String) -> Result<Uid, InvalidUid> {
        Uid::new(s)
    }
}

impl From<Uid> for String {
    fn from(u: Uid) -> String {
        u.0
    }
}

impl std::ops::Deref for Uid {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for Uid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl PartialEq<str> for Uid {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Uid {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// Defines a string enum of the contract: serde names, `as_str`, `from_name` and `Display`.
macro_rules! names {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
        pub enum $name {
            $($(#[$vm])* #[serde(rename = $text)] $variant),+
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// The value a stored name stands for; `None` for a name the contract does not know.
            pub fn from_name(s: &str) -> Option<$name> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

names! {
    /// Where a transfer stands: the sender drafts and sends it, the clinic's connector receives
    /// and stores it (or it fails), the clinic marks it done or rejects it.
    TransferState {
        Draft = "draft",
        Sent = "sent",
        Received = "received",
        Stored = "stored",
        Failed = "failed",
        Done = "done",
        Rejected = "rejected",
    }
}

names! {
    /// How urgent a transfer is; connectors claim urgent ones first.
    Urgency { Routine = "routine", Urgent = "urgent" }
}

names! {
    /// A share's state as the clinic sees it: a draft takes files; an active code opens it until it
    /// expires; the clinic revokes it, the holder deletes it.
    ShareState { Draft = "draft", Active = "active", Expired = "expired", Revoked = "revoked", Deleted = "deleted" }
}

names! {
    /// A referrer's request to send to a community that approves its senders.
    ApprovalStatus { Pending = "pending", Approved = "approved", Rejected = "rejected" }
}

names! {
    /// A member's role in a community: admins manage members, connectors and settings.
    Role { Admin = "admin", Member = "member" }
}

names! {
    /// A connector's outcome for a transfer (`POST /api/v1/connector/transfers/{id}/state`).
    Outcome { Stored = "stored", Failed = "failed" }
}

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
    pub role: Role,
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
    pub state: TransferState,
    #[serde(default)]
    pub state_message: String,
    pub community: String,
    pub community_name: String,
    pub sender_name: String,
    #[serde(default)]
    pub sender_practice: String,
    pub reason: String,
    pub appointment: String,
    pub urgency: Urgency,
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
    /// Where the receiving site's connector stands with each of its PACS targets (empty until a
    /// connector reports; only on a single transfer, not in lists).
    #[serde(default)]
    pub targets: Vec<TargetProgress>,
}

names! {
    /// One PACS target's part of a transfer, as the connector reports it.
    TargetState {
        /// Every instance is in this target.
        Stored = "stored",
        /// Instances wait their turn (another transfer is being stored, or the download runs).
        Pending = "pending",
        /// The target could not be reached or refused; the connector retries (see `since`).
        Retrying = "retrying",
        /// The connector gave up on this target (refused too often, or unreachable too long).
        Failed = "failed",
    }
}

/// `PUT /api/v1/connector/transfers/{id}/targets` (a list), and `Transfer::targets`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct TargetProgress {
    /// The connector's name for the target, e.g. `pacs` or `archive`.
    pub target: String,
    /// A required target must hold every instance before the transfer counts as stored; an
    /// optional one (e.g. an archive) is filled as it can be, also after that.
    pub required: bool,
    pub state: TargetState,
    /// Instances this target confirmed, of `total`.
    pub stored: u64,
    pub total: u64,
    /// Unix ms since when the connector retries (state `retrying`).
    #[serde(default)]
    pub since: Option<i64>,
    /// The target's last answer when it was not a success (e.g. "connection refused").
    #[serde(default)]
    pub message: String,
    /// Unix ms of the report (set by the hub).
    #[serde(default)]
    pub updated_at: i64,
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
    pub role: Role,
}

/// `PUT /api/v1/communities/{code}/members`: adds a registered account or changes its role.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct NewMember {
    pub email: String,
    pub role: Role,
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
    pub status: ApprovalStatus,
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
    /// Unix ms at which the connector met `last_error`.
    #[serde(default)]
    pub last_error_at: Option<i64>,
    /// `healthy`, `degraded` (a target retries or the last heartbeat carried an error),
    /// `unreachable` (no heartbeat for two minutes) or `unknown` (never seen).
    #[serde(default)]
    pub health: ConnectorHealth,
    /// Each PACS target's state from the last heartbeat.
    #[serde(default)]
    pub targets: Vec<TargetHealth>,
}

names! {
    /// A connector's health as its community's admins see it, derived from its heartbeats.
    #[derive(Default)]
    ConnectorHealth {
        Healthy = "healthy",
        Degraded = "degraded",
        Unreachable = "unreachable",
        #[default]
        Unknown = "unknown",
    }
}

/// One PACS target as the connector's heartbeat describes it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct TargetHealth {
    pub target: String,
    #[serde(default)]
    pub required: bool,
    /// True while the target is unreachable or refusing and the connector retries.
    #[serde(default)]
    pub retrying: bool,
    /// Unix ms since when it retries.
    #[serde(default)]
    pub since: Option<i64>,
    /// The target's last answer when it was not a success.
    #[serde(default)]
    pub last_answer: String,
    /// Instances waiting for this target, over every transfer the connector holds.
    #[serde(default)]
    pub queue_depth: i64,
    /// Unix ms at which the oldest transfer waiting for this target was claimed.
    #[serde(default)]
    pub oldest_waiting_at: Option<i64>,
    /// Unix ms of the target's last confirmed store.
    #[serde(default)]
    pub last_success_at: Option<i64>,
}

/// `GET /api/v1/connector/me`: which connector the credentials belong to, and its community.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectorSelf {
    pub id: String,
    pub name: String,
    /// The community's public code (what share and transfer requests name).
    pub community: String,
    pub community_name: String,
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
    /// Unix ms at which `last_error` happened.
    #[serde(default)]
    pub last_error_at: Option<i64>,
    #[serde(default)]
    pub targets: Vec<TargetHealth>,
}

/// One instance of a claimed transfer: what to download and how to verify it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ClaimedInstance {
    pub study_uid: Uid,
    pub series_uid: Uid,
    pub sop_instance_uid: Uid,
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
    pub sop_instance_uid: Uid,
    /// The PACS's DIMSE status (0x0000 success; warnings 0xB000, 0xB006, 0xB007 are recorded).
    #[serde(default)]
    pub status: u16,
}

/// `POST /api/v1/connector/transfers/{id}/state`: `stored` (every instance acknowledged) or
/// `failed` with the reason the sender sees.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ConnectorReport {
    pub state: Outcome,
    #[serde(default)]
    pub message: String,
}

/// `POST /api/v1/shares`: an access code for studies a community holds. With `studies` or
/// `patient_id` the code is issued at once; with neither the share starts as a draft that takes
/// files (`POST /api/v1/shares/{id}/files`) and is issued by `POST /api/v1/shares/{id}/issue`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct NewShare {
    /// The community's public code.
    pub community: String,
    /// Study Instance UIDs the community holds.
    #[serde(default)]
    pub studies: Vec<String>,
    /// Instead of `studies`: every study of this patient ID at the community.
    #[serde(default)]
    pub patient_id: Option<String>,
    #[serde(flatten)]
    pub options: ShareOptions,
}

/// How a share is protected and how long it lives.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ShareOptions {
    /// `birth_date` (default), `password` (a one-time password printed on a separate slip),
    /// `study_date` or `custom` (with `question` and `answer`).
    #[serde(default)]
    pub second_factor: Option<String>,
    /// The birth date to ask for (YYYYMMDD) when the images' PatientBirthDate is empty or wrong.
    #[serde(default)]
    pub birth_date: Option<String>,
    #[serde(default)]
    pub question: Option<String>,
    #[serde(default)]
    pub answer: Option<String>,
    /// Lifetime in days (default: the community's default, 90); or `expires_at` (Unix ms).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// A note for the clinic's staff (never shown to the patient).
    #[serde(default)]
    pub note: Option<String>,
}

/// A report PDF of a share.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ShareReport {
    pub id: String,
    pub study_uid: String,
    pub name: String,
    pub size: u64,
    /// From then on the patient sees it (Unix ms).
    pub release_at: i64,
    pub released: bool,
}

/// A share as the clinic's staff see it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Share {
    pub id: String,
    /// `expired` when active but past `expires_at`.
    pub state: ShareState,
    pub community: String,
    pub community_name: String,
    pub patient_id: String,
    pub patient_name: String,
    /// `PAT_BIRTH_DATE`, `PASSWORD`, `STUDY_DATE` or `CUSTOM`.
    pub question_type: String,
    pub created_by: String,
    pub created_at: i64,
    #[serde(default)]
    pub issued_at: Option<i64>,
    pub expires_at: i64,
    #[serde(default)]
    pub last_access_at: Option<i64>,
    pub failed_attempts: u64,
    /// Locked after too many wrong answers; staff can unlock.
    pub locked: bool,
    #[serde(default)]
    pub locked_until: Option<i64>,
    /// Set for a code a patient forwarded.
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub note: String,
    #[serde(default)]
    pub studies: Vec<TransferStudy>,
    #[serde(default)]
    pub reports: Vec<ShareReport>,
}

/// The answer to issuing a share: the code and password are shown this once.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct IssuedShare {
    pub share: Share,
    /// `XXXX-XXXX-XXXX` (Crockford base32, the last character a check character).
    pub code: String,
    /// The one-time password, when that is the second factor.
    #[serde(default)]
    pub password: Option<String>,
    /// What the QR code on the sheet encodes.
    pub redeem_url: String,
}

/// `POST /api/v1/shares/{id}/extend`: by `days` from the current expiry, or to `until` (Unix ms).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ExtendShare {
    #[serde(default)]
    pub days: Option<u32>,
    #[serde(default)]
    pub until: Option<i64>,
}

/// `POST /api/v1/shares/{id}/sheet`: the printable sheet needs the code (only its hash is kept).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct SheetRequest {
    pub code: String,
    #[serde(default)]
    pub password: Option<String>,
}

/// One entry of the audit trail.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuditEvent {
    pub at: i64,
    pub actor: String,
    pub client_addr: String,
    pub action: String,
    pub object_kind: String,
    pub object_id: String,
    pub result: String,
    #[serde(default)]
    pub detail: String,
    /// The record's place in the hash chain (`ferry-hub audit verify`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
}

/// The DICOM Link Exchange interface (DIN/TS 19455), v1: what a program gets when it redeems an
/// access code.
pub mod dlx {
    use serde::{Deserialize, Serialize};

    /// The header that marks a request as a DLX client's.
    pub const HEADER: &str = "x-dicom-link-exchange";

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct ApiInfo {
        pub dlx_version: String,
        pub vendor_information: String,
        pub api_base_path: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    pub struct Text {
        pub text: String,
        pub language: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct Question {
        pub question_id: String,
        /// `PAT_BIRTH_DATE`, `STUDY_DATE`, `PASSWORD` or `CUSTOM`.
        pub question_type: String,
        /// `DATE` (YYYYMMDD) or `STRING`.
        pub answer_format: String,
        pub question: Vec<Text>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct TokenInfo {
        pub api_info: Vec<ApiInfo>,
        pub tfa_question: Vec<Question>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct Answer {
        pub question_id: String,
        pub answer: String,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct TfaAnswers {
        pub tfa_answer: Vec<Answer>,
    }

    /// One item a code unlocks: a study (as a ZIP in IHE PDI layout) or a report (a PDF).
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct DataItem {
        pub id: String,
        /// `application/zip` for a study, `application/pdf` for a report.
        pub mime_type: String,
        pub description: String,
        #[serde(rename = "studyInstanceUID", default, skip_serializing_if = "Option::is_none")]
        pub study_instance_uid: Option<String>,
        /// YYYYMMDD (the study date).
        #[serde(default)]
        pub date: String,
        /// Modalities in the study, DICOM style (`CT\\SR`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub modalities: Option<String>,
        #[serde(default)]
        pub patients_name: String,
        #[serde(default)]
        pub patients_birthdate: String,
        #[serde(default)]
        pub patients_sex: String,
        /// Files in the ZIP of a study.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        pub file_count: Option<u64>,
    }

    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct DataList {
        pub data_item: Vec<DataItem>,
    }

    /// 503 from a download when the server is busy.
    #[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
    #[serde(rename_all = "camelCase")]
    pub struct Busy {
        pub time_out_in_seconds: u64,
    }
}

/// What the holder of a redeemed code sees (`GET /api/v1/share`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct SharedView {
    pub community_name: String,
    pub expires_at: i64,
    pub studies: Vec<TransferStudy>,
    /// Reports, released or not yet (`released: false`, nothing to download yet).
    pub reports: Vec<ShareReport>,
    /// Whether this code may be forwarded (a forwarded code can't be forwarded again).
    pub can_forward: bool,
}

/// `POST /api/v1/redeem`: a code and the answer to its question.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct Redeem {
    pub code: String,
    pub answer: String,
}

/// `POST /api/v1/share/forward`: a derived code for another doctor, for the same or fewer studies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
pub struct ForwardShare {
    /// Study Instance UIDs of the share (default: all).
    #[serde(default)]
    pub studies: Vec<String>,
    #[serde(flatten)]
    pub options: ShareOptions,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn uids_are_checked_when_read() {
        assert!(Uid::new("1.2.840.10008.5.1.4.1.1.2").is_ok());
        for bad in ["", "1.2.a", "1.2 3", &"1".repeat(65)] {
            assert_eq!(Uid::new(bad), Err(InvalidUid), "{bad:?}");
        }
        let ack: Result<Ack, _> = serde_json::from_str(r#"{"sop_instance_uid": "1.2.3<script>"}"#);
        assert!(ack.is_err(), "a malformed UID is refused while reading the body");
        let ack: Ack = serde_json::from_str(r#"{"sop_instance_uid": "1.2.3"}"#).unwrap();
        assert_eq!(ack.sop_instance_uid, "1.2.3");
        assert_eq!(serde_json::to_string(&ack.sop_instance_uid).unwrap(), r#""1.2.3""#);
    }

    #[test]
    fn states_read_and_write_their_names() {
        assert_eq!(serde_json::to_string(&TransferState::Received).unwrap(), r#""received""#);
        assert_eq!(TransferState::from_name("rejected"), Some(TransferState::Rejected));
        assert_eq!(TransferState::from_name("lost"), None);
        assert!(serde_json::from_str::<Outcome>(r#""done""#).is_err(), "a connector reports stored or failed only");
        assert_eq!(Urgency::Urgent.as_str(), "urgent");
    }
}
