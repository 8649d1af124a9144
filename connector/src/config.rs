//! The connector's configuration: defaults → `ferry-connector.toml` (or `--config FILE`) →
//! `FERRY_CONNECTOR_` environment variables (`__` separates sections, e.g.
//! `FERRY_CONNECTOR_HUB__CLIENT_SECRET`). See `deploy/ferry-connector.example.toml`.

use std::path::{Path, PathBuf};

use anyhow::bail;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Config {
    pub hub: HubConfig,
    /// Where the connector keeps its state database and spool of downloaded instances.
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// How often the hub is asked for new transfers, in seconds.
    #[serde(default = "default_poll_secs")]
    pub poll_secs: u64,
    /// The PACS targets (and other DICOM peers, e.g. a worklist) this connector talks to.
    #[serde(default)]
    pub pacs: Vec<Target>,
    #[serde(default)]
    pub inbound: Inbound,
    #[serde(default)]
    pub outbound: Outbound,
}

/// Outbound, PACS → hub: the connector's own Storage SCP and the rules that decide what becomes
/// of a study the PACS sends to it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outbound {
    /// Where the Storage SCP listens, e.g. `0.0.0.0:11112`; no SCP when empty.
    #[serde(default)]
    pub listen: String,
    /// The connector's AE title as the PACS calls it.
    #[serde(default = "default_calling_ae")]
    pub ae_title: String,
    /// Calling AE titles allowed to send (any when empty).
    #[serde(default)]
    pub allowed_callers: Vec<String>,
    /// A study counts as complete when no instance of it arrived for this long (seconds).
    #[serde(default = "default_settle_secs")]
    pub settle_secs: u64,
    /// Tried in order; the first that matches decides.
    #[serde(default)]
    pub routes: Vec<Route>,
}

impl Default for Outbound {
    fn default() -> Self {
        Self {
            listen: String::new(),
            ae_title: default_calling_ae(),
            allowed_callers: vec![],
            settle_secs: default_settle_secs(),
            routes: vec![],
        }
    }
}

/// A routing rule: which studies it takes (calling AE title, a tag's value) and what it does.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Route {
    pub name: String,
    /// Only studies sent by this calling AE title.
    #[serde(default)]
    pub calling_ae: Option<String>,
    /// Only studies whose first instance has this attribute (keyword such as `StudyDescription`,
    /// or `0008,1030`) matching `value`.
    #[serde(default)]
    pub tag: Option<String>,
    /// The pattern for `tag`: `*` any characters, `?` one; case does not matter.
    #[serde(default)]
    pub value: Option<String>,
    #[serde(flatten)]
    pub action: RouteAction,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "lowercase")]
pub enum RouteAction {
    /// Create a patient access code for the study at the connector's own community and put the
    /// printable sheet (PDF) into `sheet_dir`; `print_command` (e.g. `["lp", "-d", "Empfang"]`)
    /// is run with the sheet's path appended.
    Share {
        sheet_dir: PathBuf,
        #[serde(default)]
        print_command: Vec<String>,
        /// `birth_date` (default) or `password` (printed on the sheet's second page).
        #[serde(default)]
        second_factor: Option<String>,
        #[serde(default)]
        expires_in_days: Option<u32>,
        #[serde(default)]
        note: Option<String>,
    },
    /// Send the study to another community as a transfer, in the name of the account whose
    /// personal access token is `sender_token` (e.g. the department's shared sending account).
    Transfer {
        community: String,
        #[serde(default)]
        sender_token: String,
        #[serde(default)]
        note: String,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct HubConfig {
    pub url: String,
    #[serde(default)]
    pub client_id: String,
    /// Better given as `FERRY_CONNECTOR_HUB__CLIENT_SECRET` or in a file only root can read.
    #[serde(default)]
    pub client_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// A short name used in rules and messages, e.g. `main`.
    pub name: String,
    /// For inbound studies: a transfer counts as stored (and the sender hears so) once every
    /// required target holds every instance. An optional target (`required = false`, e.g. an
    /// archive) is filled as it can be, also after that; it never holds a transfer up.
    #[serde(default = "yes")]
    pub required: bool,
    #[serde(flatten)]
    pub kind: TargetKind,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TargetKind {
    /// DICOM DIMSE (C-STORE, C-ECHO, C-FIND).
    Dimse {
        host: String,
        port: u16,
        /// The PACS's AE title.
        called_ae: String,
        /// The connector's AE title towards this PACS.
        #[serde(default = "default_calling_ae")]
        calling_ae: String,
        /// Associations used in parallel when storing.
        #[serde(default = "default_associations")]
        associations: usize,
    },
    /// DICOMweb (STOW-RS); `url` is the DICOMweb root, e.g. `http://pacs:8042/dicom-web`.
    Dicomweb { url: String },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Inbound {
    /// Names of the targets every inbound instance is stored into (all `pacs` targets when empty).
    #[serde(default)]
    pub targets: Vec<String>,
    /// Times the PACS may refuse an instance before the transfer is reported failed.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// How long an unreachable PACS is waited for before the transfer is reported failed (seconds).
    #[serde(default = "default_give_up_secs")]
    pub give_up_after_secs: u64,
    /// Longest pause between retries of a target (the pause doubles from 2 s up to this), in
    /// seconds. Each target backs off on its own.
    #[serde(default = "default_retry_max_secs")]
    pub retry_max_secs: u64,
    /// Transfers worked on at once. A transfer that only waits for a target that is down does
    /// not count (it is parked, up to ten times this many).
    #[serde(default = "default_parallel_transfers")]
    pub parallel_transfers: usize,
    #[serde(default)]
    pub reconcile: Reconcile,
}

impl Default for Inbound {
    fn default() -> Self {
        Self {
            targets: vec![],
            max_attempts: default_max_attempts(),
            give_up_after_secs: default_give_up_secs(),
            retry_max_secs: default_retry_max_secs(),
            parallel_transfers: default_parallel_transfers(),
            reconcile: Reconcile::default(),
        }
    }
}

/// Import reconciliation (IHE IRWF.b): what happens to the sender's patient identifiers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Reconcile {
    /// `keep`, `prefix`, `mapping` (a CSV table) or `worklist` (a Modality Worklist C-FIND).
    #[serde(default)]
    pub patient_id: PatientIdRule,
    /// For `prefix`, and for `unmatched = "prefix"`.
    #[serde(default)]
    pub prefix: String,
    /// For `mapping`: CSV lines `sender_patient_id,local_patient_id` (a header line is allowed).
    #[serde(default)]
    pub mapping_file: Option<PathBuf>,
    /// For `worklist`: the name of a `dimse` target that answers Modality Worklist C-FIND.
    #[serde(default)]
    pub worklist: Option<String>,
    /// When `mapping` or `worklist` finds no single match: `prefix`, `keep` or `fail`.
    #[serde(default)]
    pub unmatched: Unmatched,
    /// IssuerOfPatientID written with a changed Patient ID (the clinic's own issuer).
    #[serde(default)]
    pub issuer: String,
    /// Keep the sender's Patient ID (and issuer) in OtherPatientIDsSequence when it changes.
    #[serde(default = "yes")]
    pub keep_original: bool,
    /// AccessionNumber: `keep`, `clear`, or `worklist` (from the matched worklist entry).
    #[serde(default)]
    pub accession: AccessionRule,
}

impl Default for Reconcile {
    fn default() -> Self {
        Self {
            patient_id: PatientIdRule::Keep,
            prefix: String::new(),
            mapping_file: None,
            worklist: None,
            unmatched: Unmatched::Prefix,
            issuer: String::new(),
            keep_original: true,
            accession: AccessionRule::Keep,
        }
    }
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum PatientIdRule {
    #[default]
    Keep,
    Prefix,
    Mapping,
    Worklist,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Unmatched {
    #[default]
    Prefix,
    Keep,
    Fail,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Default)]
#[serde(rename_all = "lowercase")]
pub enum AccessionRule {
    #[default]
    Keep,
    Clear,
    Worklist,
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("ferry-connector-data")
}
fn default_poll_secs() -> u64 {
    5
}
fn default_calling_ae() -> String {
    "FERRY".into()
}
fn default_settle_secs() -> u64 {
    10
}
fn default_associations() -> usize {
    1
}
fn default_max_attempts() -> u32 {
    5
}
fn default_give_up_secs() -> u64 {
    24 * 3600
}
fn default_parallel_transfers() -> usize {
    4
}
fn default_retry_max_secs() -> u64 {
    60
}
fn yes() -> bool {
    true
}

impl Config {
    /// Loads `path` (or `ferry-connector.toml` when present) and the environment, and checks it.
    pub fn load(path: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::default("state_dir", default_state_dir()));
        match path {
            Some(p) => {
                if !p.exists() {
                    bail!("the configuration file {} does not exist", p.display());
                }
                fig = fig.merge(Toml::file_exact(p));
            }
            None => fig = fig.merge(Toml::file("ferry-connector.toml")),
        }
        let c: Config = fig
            .merge(Env::prefixed("FERRY_CONNECTOR_").split("__"))
            .extract()
            .map_err(|e| anyhow::anyhow!("the configuration is not valid: {e}"))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> anyhow::Result<()> {
        if !self.hub.url.starts_with("http://") && !self.hub.url.starts_with("https://") {
            bail!("hub.url must be the hub's http(s) URL, e.g. https://ferry.example.org");
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.pacs {
            if !names.insert(t.name.as_str()) {
                bail!("two PACS targets are called {:?}; names must differ", t.name);
            }
            if let TargetKind::Dimse { called_ae, calling_ae, associations, .. } = &t.kind {
                for ae in [called_ae, calling_ae] {
                    if ae.is_empty() || ae.len() > 16 || !ae.is_ascii() || ae.contains('\\') {
                        bail!("PACS target {:?}: AE title {ae:?} must be 1–16 ASCII characters", t.name);
                    }
                }
                if *associations == 0 || *associations > 16 {
                    bail!("PACS target {:?}: associations must be 1–16", t.name);
                }
            }
        }
        for n in &self.inbound.targets {
            if self.target(n).is_none() {
                bail!("inbound.targets names {n:?}, but no [[pacs]] target has that name");
            }
        }
        for t in &self.pacs {
            if t.name.is_empty() || t.name.chars().count() > 64 || t.name.chars().any(char::is_control) {
                bail!("a PACS target's name takes 1 to 64 printable characters");
            }
        }
        let inbound = self.inbound_targets();
        if !inbound.is_empty() && !inbound.iter().any(|t| t.required) {
            bail!("at least one inbound PACS target must be required (required = false is for archives beside the PACS)");
        }
        if self.inbound.parallel_transfers == 0 || self.inbound.parallel_transfers > 64 {
            bail!("inbound.parallel_transfers must be 1–64");
        }
        let r = &self.inbound.reconcile;
        match r.patient_id {
            PatientIdRule::Prefix if r.prefix.is_empty() => bail!("reconcile.patient_id = \"prefix\" needs reconcile.prefix"),
            PatientIdRule::Mapping if r.mapping_file.is_none() => bail!("reconcile.patient_id = \"mapping\" needs reconcile.mapping_file"),
            PatientIdRule::Worklist => match r.worklist.as_deref().and_then(|w| self.target(w)) {
                Some(Target { kind: TargetKind::Dimse { .. }, .. }) => {}
                _ => bail!("reconcile.patient_id = \"worklist\" needs reconcile.worklist naming a dimse [[pacs]] target"),
            },
            _ => {}
        }
        if r.unmatched == Unmatched::Prefix
            && matches!(r.patient_id, PatientIdRule::Mapping | PatientIdRule::Worklist)
            && r.prefix.is_empty()
        {
            bail!("reconcile.unmatched = \"prefix\" needs reconcile.prefix (or set unmatched to keep or fail)");
        }
        if r.accession == AccessionRule::Worklist && r.patient_id != PatientIdRule::Worklist {
            bail!("reconcile.accession = \"worklist\" works only with patient_id = \"worklist\"");
        }
        self.validate_outbound()
    }

    fn validate_outbound(&self) -> anyhow::Result<()> {
        let o = &self.outbound;
        if o.listen.is_empty() {
            return Ok(());
        }
        if o.listen.parse::<std::net::SocketAddr>().is_err() {
            bail!("outbound.listen must be an address and port such as 0.0.0.0:11112, not {:?}", o.listen);
        }
        if o.ae_title.is_empty() || o.ae_title.len() > 16 || !o.ae_title.is_ascii() || o.ae_title.contains('\\') {
            bail!("outbound.ae_title {:?} must be 1–16 ASCII characters", o.ae_title);
        }
        if o.routes.is_empty() {
            bail!("outbound.listen is set but no [[outbound.routes]] says what to do with the studies the PACS sends");
        }
        for r in &o.routes {
            if r.tag.is_some() != r.value.is_some() {
                bail!("route {:?}: tag and value go together", r.name);
            }
            if let Some(t) = &r.tag
                && crate::outbound::parse_tag(t).is_none()
            {
                bail!("route {:?}: {t:?} is neither a DICOM keyword (e.g. StudyDescription) nor a tag like 0008,1030", r.name);
            }
            match &r.action {
                RouteAction::Share { second_factor, .. } => {
                    if let Some(f) = second_factor
                        && !["birth_date", "password"].contains(&f.as_str())
                    {
                        bail!("route {:?}: second_factor is birth_date or password", r.name);
                    }
                }
                RouteAction::Transfer { community, sender_token, .. } => {
                    if community.trim().is_empty() {
                        bail!("route {:?}: a transfer route needs the receiving community's code", r.name);
                    }
                    if sender_token.is_empty() {
                        bail!("route {:?}: a transfer route needs sender_token, a personal access token of the sending account", r.name);
                    }
                }
            }
        }
        Ok(())
    }

    pub fn target(&self, name: &str) -> Option<&Target> {
        self.pacs.iter().find(|t| t.name == name)
    }

    /// The targets inbound instances go to.
    pub fn inbound_targets(&self) -> Vec<&Target> {
        if self.inbound.targets.is_empty() {
            self.pacs.iter().filter(|t| Some(t.name.as_str()) != self.inbound.reconcile.worklist.as_deref()).collect()
        } else {
            self.inbound.targets.iter().filter_map(|n| self.target(n)).collect()
        }
    }
}

#[cfg(test)]
mod shipped {
    /// The connector configurations shipped in `deploy/` load and pass the checks.
    #[test]
    fn the_shipped_configurations_load() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        for file in ["deploy/ferry-connector.example.toml", "deploy/compose/ferry-connector.toml"] {
            let c = super::Config::load(Some(&root.join(file)));
            assert!(c.is_ok(), "{file}: {:?}", c.err());
        }
    }
}
