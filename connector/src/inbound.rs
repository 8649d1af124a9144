//! Inbound, hub → PACS. The connector holds several transfers at once (urgent ones are claimed
//! first, then the oldest) and every (transfer, target) pair progresses on its own: each PACS
//! target has one storing task at a time and its own back-off, so a target that is down or keeps
//! refusing one instance holds up nothing else. A step: take finished storing tasks in, renew
//! leases, claim more work, download what is missing into the spool (WADO-RS, size and SHA-256
//! checked), reconcile, acknowledge to the hub what every *required* target confirmed, report
//! transfers stored (or failed, with the target's answer), start storing tasks where a target is
//! free, and tell the hub where each target stands. Optional targets (`required = false`, e.g. an
//! archive) are filled as they can be, also after the transfer was reported stored.
//!
//! Crash safety: a confirmation is written to the state database before the hub hears of it, and
//! a spool file gets its name only after its checksum matched. After `kill -9` at any point, the
//! next start resumes the transfers it held (the claim is kept in the state database), skips what
//! each target confirmed and re-acknowledges what the hub missed; at worst the one instance in
//! flight is stored again under the same SOP Instance UID, which a PACS keeps once.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use ferry_schemas::{Ack, Claim, ClaimedInstance, ConnectorReport, Outcome, TargetHealth, TargetProgress, TargetState, Uid, Urgency};
use futures_util::StreamExt;
use tokio::task::JoinSet;

use crate::config::{Config, Target, TargetKind};
use crate::dimse::{self, Outgoing, Peer, Stored};
use crate::hub::{Hub, LeaseLost};
use crate::reconcile::Reconciler;
use crate::state::{State, now_ms};

/// At most this many instances per storing task, so that an urgent transfer gets its turn at a
/// target between two parts of a large routine one.
const PASS_MAX: usize = 256;

/// What a step did, for the service loop and `run --once`.
#[derive(Debug, Default)]
pub struct Step {
    /// Transfers reported to the hub in this step: (id, stored, message).
    pub finished: Vec<(String, bool, String)>,
    /// Nothing is held, nothing runs, and the hub had nothing to claim.
    pub idle: bool,
    /// Work is held, but nothing runs or can start before a retry is due: why.
    pub waiting: Option<String>,
    /// The hub could not be reached (or answered oddly) in this step.
    pub hub_error: Option<String>,
    /// The next step is due after this long at the latest.
    pub next_in: Duration,
}

/// One PACS target: its storing task, back-off and health.
struct Slot {
    target: Target,
    busy: bool,
    backoff: u32,
    next_at: Instant,
    /// Unix ms since when the target is unreachable (None while it answers).
    retrying_since: Option<i64>,
    last_answer: String,
    last_success_at: Option<i64>,
}

/// One (transfer, target) pair.
#[derive(Default)]
struct Pair {
    busy: bool,
    refusals: u32,
    next_at: Option<Instant>,
    /// Unix ms since when this pair fails in a row (unreachable or refused).
    failing_since: Option<i64>,
    last_answer: String,
    failed: bool,
    /// Instances this target holds, of the transfer's (refreshed every step).
    stored: usize,
}

/// A transfer this process holds.
struct Held {
    claim: Claim,
    urgent: bool,
    claimed_at: i64,
    /// The spooled (and reconciled) instances not yet in every target; None until downloaded.
    files: Option<Vec<Outgoing>>,
    pairs: HashMap<String, Pair>,
    /// Some(true) once reported stored (optional targets may still be filled), Some(false) failed.
    reported: Option<bool>,
    lease_renewed: Instant,
    lease_span: Duration,
    /// What the hub last heard about the targets.
    sent: Option<Vec<TargetProgress>>,
}

impl Held {
    fn id(&self) -> &str {
        &self.claim.transfer.id
    }

    fn total(&self) -> usize {
        self.claim.instances.len()
    }
}

/// What a storing task did.
struct PassResult {
    transfer: String,
    target: String,
    stored: usize,
    refused: Option<String>,
    unreachable: Option<String>,
    /// The state database failed (the step fails; nothing is lost, the next one retries).
    local: Option<String>,
}

pub struct Inbound {
    cfg: Config,
    state: State,
    pub hub: Hub,
    reconciler: Reconciler,
    http: reqwest::Client,
    slots: Vec<Slot>,
    held: Vec<Held>,
    passes: JoinSet<PassResult>,
    /// What each running storing task works on: (target, transfer).
    running: HashMap<tokio::task::Id, (String, String)>,
    done: Vec<Result<PassResult, tokio::task::JoinError>>,
    resumed: bool,
    /// No claim before this (the hub had nothing at the last ask).
    claim_after: Option<Instant>,
    hub_error: Option<String>,
    /// The last transfer that failed, until the next one is stored: (message, unix ms).
    last_failure: Option<(String, i64)>,
}

pub fn peer(t: &Target) -> Option<Peer> {
    match &t.kind {
        TargetKind::Dimse { host, port, called_ae, calling_ae, .. } => {
            Some(Peer { host: host.clone(), port: *port, called_ae: called_ae.clone(), calling_ae: calling_ae.clone() })
        }
        TargetKind::Dicomweb { .. } => None,
    }
}

fn backoff(n: u32, max_secs: u64) -> Duration {
    Duration::from_secs(1u64 << n.clamp(1, 12)).min(Duration::from_secs(max_secs.max(1)))
}

/// Whether a target holds an instance: it confirmed it, or (a required target) the hub has it
/// acknowledged, which only happens once every required target confirmed it.
fn in_target(sop: &str, required: bool, delivered: &HashSet<String>, acked: &HashSet<String>) -> bool {
    delivered.contains(sop) || (required && acked.contains(sop))
}

fn lease_lost(e: &anyhow::Error) -> bool {
    e.downcast_ref::<LeaseLost>().is_some()
}

impl Inbound {
    pub async fn new(cfg: &Config, state: &State) -> anyhow::Result<Inbound> {
        if cfg.inbound_targets().is_empty() {
            bail!("no PACS target is configured for inbound studies ([[pacs]] in the configuration)");
        }
        let instance = state.instance_id().await?;
        let hub = Hub::new(&cfg.hub.url, &cfg.hub.client_id, &cfg.hub.client_secret, &instance)?;
        let worklist = cfg.inbound.reconcile.worklist.as_deref().and_then(|w| cfg.target(w)).and_then(peer);
        let slots = cfg
            .inbound_targets()
            .into_iter()
            .map(|t| Slot {
                target: t.clone(),
                busy: false,
                backoff: 0,
                next_at: Instant::now(),
                retrying_since: None,
                last_answer: String::new(),
                last_success_at: None,
            })
            .collect();
        Ok(Inbound {
            cfg: cfg.clone(),
            state: state.clone(),
            hub,
            reconciler: Reconciler::new(&cfg.inbound.reconcile, worklist)?,
            http: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            slots,
            held: vec![],
            passes: JoinSet::new(),
            running: HashMap::new(),
            done: vec![],
            resumed: false,
            claim_after: None,
            hub_error: None,
            last_failure: None,
        })
    }

    fn required(&self) -> Vec<String> {
        self.slots.iter().filter(|s| s.target.required).map(|s| s.target.name.clone()).collect()
    }

    /// Waits up to `pause`, or until a storing task finishes.
    pub async fn wait(&mut self, pause: Duration) {
        if self.passes.is_empty() {
            tokio::time::sleep(pause).await;
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            Some(r) = self.passes.join_next_with_id() => self.done.push(r.map(|(_, r)| r)),
        }
    }

    /// One step (see the module's documentation).
    pub async fn step(&mut self) -> anyhow::Result<Step> {
        let mut step = Step::default();
        self.hub_error = None;
        while let Some(r) = self.passes.try_join_next_with_id() {
            self.done.push(r.map(|(_, r)| r));
        }
        let mut local = None;
        for r in std::mem::take(&mut self.done) {
            let r = match r {
                Ok(r) => r,
                // A storing task that panicked: its target and transfer are free again.
                Err(e) => {
                    let (target, transfer) = self.running.remove(&e.id()).unwrap_or_default();
                    PassResult {
                        transfer,
                        target,
                        stored: 0,
                        refused: None,
                        unreachable: None,
                        local: Some(format!("a storing task failed: {e}")),
                    }
                }
            };
            self.running.retain(|_, (t, id)| !(*t == r.target && *id == r.transfer));
            if let Some(e) = &r.local {
                local.get_or_insert(e.clone());
            }
            self.apply(r).await?;
        }
        if let Some(e) = local {
            bail!("{e}");
        }
        if !self.resumed {
            self.resume().await?;
            self.resumed = true;
        }
        self.renew_leases().await?;
        let asked = self.claim_more().await?;
        self.prepare(&mut step).await?;
        self.refresh_counts().await?;
        self.flush_and_decide(&mut step).await?;
        let started = self.schedule().await?;
        self.send_progress().await?;

        step.hub_error = self.hub_error.clone();
        step.idle = self.held.is_empty() && self.passes.is_empty() && asked == Some(false);
        if !self.held.is_empty() && self.passes.is_empty() && started == 0 && self.hub_error.is_none() {
            step.waiting = Some(self.waiting_reason());
        }
        let now = Instant::now();
        let mut next = Duration::from_secs(self.cfg.poll_secs.max(1));
        for s in &self.slots {
            next = next.min(s.next_at.saturating_duration_since(now));
        }
        for h in &self.held {
            for p in h.pairs.values() {
                if let Some(at) = p.next_at {
                    next = next.min(at.saturating_duration_since(now));
                }
            }
        }
        if !self.passes.is_empty() || started > 0 {
            next = next.min(Duration::from_secs(1));
        }
        step.next_in = next.max(Duration::from_millis(50));
        Ok(step)
    }

    fn waiting_reason(&self) -> String {
        for h in &self.held {
            for (t, p) in &h.pairs {
                if !p.failed && !p.last_answer.is_empty() {
                    return format!("transfer {}: {t}: {}", h.id(), p.last_answer);
                }
            }
        }
        self.slots
            .iter()
            .find(|s| s.retrying_since.is_some())
            .map(|s| s.last_answer.clone())
            .unwrap_or_else(|| "not every instance was confirmed".into())
    }

    /// A hub error that is not about one transfer's lease: noted, the step goes on without the hub.
    fn hub_trouble(&mut self, e: anyhow::Error) {
        let msg = format!("{e:#}");
        tracing::warn!(error = %msg, "the hub could not be reached");
        self.hub_error.get_or_insert(msg);
    }

    /// Picks up, after a start, the transfers this process held when it stopped.
    async fn resume(&mut self) -> anyhow::Result<()> {
        for (claim, claimed_at, reported) in self.state.working().await? {
            if self.held.iter().any(|h| h.id() == claim.transfer.id) {
                continue;
            }
            let mut pairs: HashMap<String, Pair> = HashMap::new();
            for (target, refusals, failing_since, last_answer, failed) in self.state.pairs(&claim.transfer.id).await? {
                pairs.insert(target, Pair { refusals: refusals as u32, failing_since, last_answer, failed, ..Pair::default() });
            }
            tracing::info!(transfer = %claim.transfer.id, "resuming a transfer held before the restart");
            self.held.push(Held {
                urgent: claim.transfer.urgency == Urgency::Urgent,
                claimed_at,
                files: None,
                pairs,
                reported: (reported == "stored").then_some(true),
                // Renewed at once: the hub says whether this process still holds it.
                lease_renewed: Instant::now() - Duration::from_secs(24 * 3600),
                lease_span: Duration::from_secs(60),
                sent: None,
                claim,
            });
        }
        self.sort();
        Ok(())
    }

    /// Urgent first, then in the order claimed.
    fn sort(&mut self) {
        self.held.sort_by(|a, b| b.urgent.cmp(&a.urgent).then(a.claimed_at.cmp(&b.claimed_at)));
    }

    /// Forgets a transfer the hub no longer lets this process work on.
    async fn drop_lost(&mut self, id: &str) -> anyhow::Result<()> {
        tracing::warn!(transfer = %id, "the lease was lost; another connector process works on the transfer");
        self.state.finish_transfer(id, "lost", "the lease ran out and the hub gave the transfer to another process").await?;
        self.state.event("lost", &format!("transfer {id}: the lease was lost")).await?;
        self.held.retain(|h| h.id() != id);
        Ok(())
    }

    /// Renews the lease of every held, unreported transfer well before it runs out.
    async fn renew_leases(&mut self) -> anyhow::Result<()> {
        let due: Vec<String> = self
            .held
            .iter()
            .filter(|h| h.reported.is_none() && h.lease_renewed.elapsed() > h.lease_span / 3)
            .map(|h| h.id().to_string())
            .collect();
        for id in due {
            if self.hub_error.is_some() {
                return Ok(());
            }
            match self.hub.ack(&id, &[]).await {
                Ok(()) => {
                    if let Some(h) = self.held.iter_mut().find(|h| h.id() == id) {
                        h.lease_renewed = Instant::now();
                    }
                }
                Err(e) if lease_lost(&e) => self.drop_lost(&id).await?,
                Err(e) => self.hub_trouble(e),
            }
        }
        Ok(())
    }

    /// True when the transfer only waits for targets that are down or in back-off (it does not
    /// count against `parallel_transfers`).
    fn parked(&self, h: &Held) -> bool {
        if h.reported.is_some() {
            return true;
        }
        if h.files.is_none() {
            return false;
        }
        let now = Instant::now();
        self.slots.iter().all(|s| {
            let p = h.pairs.get(&s.target.name);
            let done = p.is_some_and(|p| p.failed || p.stored >= h.total());
            let waits = s.retrying_since.is_some() || p.is_some_and(|p| p.next_at.is_some_and(|at| at > now));
            done || waits
        })
    }

    /// Claims transfers while fewer than `parallel_transfers` are being worked on. Some(false)
    /// when the hub had nothing, None when it was not asked.
    async fn claim_more(&mut self) -> anyhow::Result<Option<bool>> {
        let parallel = self.cfg.inbound.parallel_transfers.max(1);
        let mut asked = None;
        loop {
            let active = self.held.iter().filter(|h| !self.parked(h)).count();
            if active >= parallel || self.held.len() >= parallel * 10 || self.hub_error.is_some() {
                return Ok(asked);
            }
            if self.claim_after.is_some_and(|t| Instant::now() < t) {
                return Ok(asked);
            }
            let claim = match self.hub.claim().await {
                Ok(c) => c,
                Err(e) => {
                    self.hub_trouble(e);
                    return Ok(asked);
                }
            };
            let Some(claim) = claim else {
                self.claim_after = Some(Instant::now() + Duration::from_secs(self.cfg.poll_secs.max(1)));
                return Ok(Some(false));
            };
            asked = Some(true);
            let id = claim.transfer.id.clone();
            self.state.begin_transfer(&claim).await?;
            let hub_acked: Vec<String> = claim.instances.iter().filter(|i| i.acked).map(|i| i.sop_instance_uid.to_string()).collect();
            self.state.record_acks(&id, &hub_acked).await?;
            let span = Duration::from_millis((claim.lease_until - now_ms()).max(3000) as u64);
            tracing::info!(transfer = %id, urgent = claim.transfer.urgency == Urgency::Urgent, instances = claim.instances.len(), "transfer claimed");
            self.held.retain(|h| h.id() != id);
            self.held.push(Held {
                urgent: claim.transfer.urgency == Urgency::Urgent,
                claimed_at: now_ms(),
                files: None,
                pairs: HashMap::new(),
                reported: None,
                lease_renewed: Instant::now(),
                lease_span: span,
                sent: None,
                claim,
            });
            self.sort();
        }
    }

    /// Downloads and reconciles what held transfers still need, most urgent first.
    async fn prepare(&mut self, step: &mut Step) -> anyhow::Result<()> {
        let ids: Vec<String> = self.held.iter().filter(|h| h.files.is_none()).map(|h| h.id().to_string()).collect();
        for id in ids {
            if self.hub_error.is_some() {
                return Ok(());
            }
            let Some(i) = self.held.iter().position(|h| h.id() == id) else { continue };
            match self.prepare_one(i).await {
                Ok(Ok(files)) => self.held[i].files = Some(files),
                Ok(Err(reconcile)) => step.finished.extend(self.report(&id, false, &format!("import reconciliation: {reconcile}")).await?),
                Err(e) if lease_lost(&e) => self.drop_lost(&id).await?,
                Err(e) => {
                    self.state.event("error", &format!("transfer {id}: {e:#}")).await?;
                    self.hub_trouble(e);
                }
            }
        }
        Ok(())
    }

    /// The spooled files of the instances some target still lacks. Err: the download failed;
    /// Ok(Err): reconciliation refused (the transfer fails).
    async fn prepare_one(&mut self, i: usize) -> anyhow::Result<Result<Vec<Outgoing>, String>> {
        let id = self.held[i].id().to_string();
        let (acked, delivered) = self.holdings(&id).await?;
        let pairs = &self.held[i].pairs;
        let needed: Vec<ClaimedInstance> = self.held[i]
            .claim
            .instances
            .iter()
            .filter(|inst| {
                self.slots.iter().zip(&delivered).any(|(s, d)| {
                    let failed = pairs.get(&s.target.name).is_some_and(|p| p.failed);
                    !failed && !in_target(&inst.sop_instance_uid, s.target.required, d, &acked)
                })
            })
            .cloned()
            .collect();
        let spool = self.state.spool(&id);
        tokio::fs::create_dir_all(&spool).await?;
        let missing: Vec<&ClaimedInstance> =
            needed.iter().filter(|i| !spool.join(format!("{}.dcm", i.sop_instance_uid)).exists()).collect();
        if !missing.is_empty() {
            self.download(&id, &missing, &spool).await?;
        }
        let mut files = Vec::with_capacity(needed.len());
        for inst in &needed {
            let original = spool.join(format!("{}.dcm", inst.sop_instance_uid));
            let out = spool.join(format!("{}.reconciled.dcm", inst.sop_instance_uid));
            let path = match self.reconciler.prepare(&inst.study_uid, original, out).await {
                Ok(p) => p,
                Err(e) => return Ok(Err(format!("{e:#}"))),
            };
            files.push(tokio::task::spawn_blocking(move || Outgoing::read(path)).await??);
        }
        Ok(Ok(files))
    }

    /// Counts, per pair, what each target holds (the state database is the truth).
    async fn refresh_counts(&mut self) -> anyhow::Result<()> {
        for i in 0..self.held.len() {
            let (acked, delivered) = self.holdings(self.held[i].id()).await?;
            let h = &mut self.held[i];
            for (s, d) in self.slots.iter().zip(&delivered) {
                let n = h.claim.instances.iter().filter(|i| in_target(&i.sop_instance_uid, s.target.required, d, &acked)).count();
                h.pairs.entry(s.target.name.clone()).or_default().stored = n;
            }
        }
        Ok(())
    }

    /// What the state database knows of a transfer: the instances acknowledged to the hub, and
    /// those each target confirmed (in the order of `slots`).
    async fn holdings(&self, id: &str) -> anyhow::Result<(HashSet<String>, Vec<HashSet<String>>)> {
        let acked = self.state.acked(id).await?;
        let mut delivered = Vec::with_capacity(self.slots.len());
        for s in &self.slots {
            delivered.push(self.state.delivered(id, &s.target.name).await?);
        }
        Ok((acked, delivered))
    }

    /// Acknowledges what every required target confirmed; reports transfers stored or failed;
    /// forgets those with nothing left to do.
    async fn flush_and_decide(&mut self, step: &mut Step) -> anyhow::Result<()> {
        let required = self.required();
        let ids: Vec<String> = self.held.iter().map(|h| h.id().to_string()).collect();
        for id in ids {
            let Some(i) = self.held.iter().position(|h| h.id() == id) else { continue };
            if self.held[i].reported.is_none() {
                if self.hub_error.is_none() {
                    match self.flush_acks(&id, &required).await {
                        Ok(()) => {}
                        Err(e) if lease_lost(&e) => {
                            self.drop_lost(&id).await?;
                            continue;
                        }
                        Err(e) => self.hub_trouble(e),
                    }
                }
                let h = &self.held[i];
                let acked = self.state.acked(&id).await?;
                let left = h.claim.instances.iter().filter(|i| !acked.contains(i.sop_instance_uid.as_str())).count();
                let given_up = self
                    .slots
                    .iter()
                    .filter(|s| s.target.required)
                    .find_map(|s| h.pairs.get(&s.target.name).filter(|p| p.failed).map(|p| p.last_answer.clone()));
                if left == 0 || given_up.is_some() {
                    if self.hub_error.is_some() {
                        continue;
                    }
                    let summary = format!("{} of {} instance(s) stored", h.total() - left, h.total());
                    let (stored, message) = match given_up {
                        None => (true, String::new()),
                        Some(why) => (false, format!("{summary}; {why}")),
                    };
                    self.send_progress_of(i).await?;
                    step.finished.extend(self.report(&id, stored, &message).await?);
                }
            }
            // Reported: keep it while an optional target still lacks instances.
            let Some(i) = self.held.iter().position(|h| h.id() == id) else { continue };
            let h = &self.held[i];
            if h.reported == Some(true) && !h.pairs.values().any(|p| p.busy || (!p.failed && p.stored < h.total())) {
                self.send_progress_of(i).await?;
                self.state.finish_transfer(&id, "stored", "").await?;
                self.held.remove(i);
                self.claim_after = None;
            }
        }
        Ok(())
    }

    /// Reports the outcome to the hub; the sender sees it.
    async fn report(&mut self, id: &str, stored: bool, message: &str) -> anyhow::Result<Option<(String, bool, String)>> {
        let state = if stored { Outcome::Stored } else { Outcome::Failed };
        match self.hub.report(id, &ConnectorReport { state, message: message.into() }).await {
            Ok(()) => {}
            Err(e) if lease_lost(&e) => {
                self.drop_lost(id).await?;
                return Ok(None);
            }
            Err(e) => {
                self.hub_trouble(e);
                return Ok(None);
            }
        }
        self.state.mark_reported(id, state.as_str()).await?;
        let h = self.held.iter().position(|h| h.id() == id);
        if stored {
            let n = h.map(|i| self.held[i].total()).unwrap_or(0);
            self.state.event("stored", &format!("transfer {id}: {n} instance(s) stored")).await?;
            self.last_failure = None;
            if let Some(i) = h {
                self.held[i].reported = Some(true);
            }
        } else {
            // Optional targets stop too; a storing task still running ends on its own.
            self.state.event("failed", &format!("transfer {id}: {message}")).await?;
            self.state.finish_transfer(id, "failed", message).await?;
            self.last_failure = Some((message.to_string(), now_ms()));
            self.held.retain(|h| h.id() != id);
            self.claim_after = None;
        }
        Ok(Some((id.to_string(), stored, message.to_string())))
    }

    /// Acknowledges to the hub what every required target confirmed, then notes it locally.
    async fn flush_acks(&mut self, id: &str, required: &[String]) -> anyhow::Result<()> {
        let ready = self.state.unacked_delivered(id, required).await?;
        for chunk in ready.chunks(500) {
            let acks: Vec<Ack> = chunk
                .iter()
                .map(|(sop, status)| Ok(Ack { sop_instance_uid: Uid::new(sop.as_str())?, status: *status as u16 }))
                .collect::<anyhow::Result<_>>()?;
            self.hub.ack(id, &acks).await?;
            let sops: Vec<String> = chunk.iter().map(|(s, _)| s.clone()).collect();
            self.state.record_acks(id, &sops).await?;
            if let Some(h) = self.held.iter_mut().find(|h| h.id() == id) {
                h.lease_renewed = Instant::now();
            }
        }
        Ok(())
    }

    /// Starts a storing task on every free target whose back-off is over, with the most urgent
    /// transfer that has work for it. Returns how many started.
    async fn schedule(&mut self) -> anyhow::Result<usize> {
        let now = Instant::now();
        let mut started = 0;
        for si in 0..self.slots.len() {
            if self.slots[si].busy || self.slots[si].next_at > now {
                continue;
            }
            let name = self.slots[si].target.name.clone();
            for hi in 0..self.held.len() {
                let h = &self.held[hi];
                let Some(files) = &h.files else { continue };
                if h.reported == Some(false) {
                    continue;
                }
                let p = h.pairs.get(&name);
                if p.is_some_and(|p| p.failed || p.busy || p.next_at.is_some_and(|at| at > now) || p.stored >= h.total()) {
                    continue;
                }
                let delivered = self.state.delivered(h.id(), &name).await?;
                let todo: Vec<Outgoing> = files.iter().filter(|f| !delivered.contains(&f.sop_instance)).take(PASS_MAX).cloned().collect();
                if todo.is_empty() {
                    continue;
                }
                let (id, target) = (h.id().to_string(), self.slots[si].target.clone());
                let (state, http) = (self.state.clone(), self.http.clone());
                let task = self.passes.spawn(pass(state, target, http, id.clone(), todo));
                self.running.insert(task.id(), (name.clone(), id));
                self.slots[si].busy = true;
                let p = self.held[hi].pairs.entry(name.clone()).or_default();
                p.busy = true;
                p.next_at = None;
                started += 1;
                break;
            }
        }
        Ok(started)
    }

    /// Takes a finished storing task's outcome in: back-off per target on unreachable, per pair
    /// on refusal; giving up after `max_attempts` refusals or `give_up_after_secs` unreachable.
    async fn apply(&mut self, r: PassResult) -> anyhow::Result<()> {
        let now = now_ms();
        let (retry_max, max_attempts) = (self.cfg.inbound.retry_max_secs, self.cfg.inbound.max_attempts.max(1));
        let give_up_ms = self.cfg.inbound.give_up_after_secs as i64 * 1000;
        let Some(si) = self.slots.iter().position(|s| s.target.name == r.target) else { return Ok(()) };
        self.slots[si].busy = false;
        if r.local.is_some() {
            if let Some(p) = self.held.iter_mut().find(|h| h.id() == r.transfer).and_then(|h| h.pairs.get_mut(&r.target)) {
                p.busy = false;
            }
            return Ok(());
        }
        let kind = target_kind(&self.slots[si].target);
        if r.stored > 0 {
            self.slots[si].last_success_at = Some(now);
            self.state.pair_progress(&r.transfer, &r.target).await?;
        }
        if let Some(msg) = &r.unreachable {
            let slot = &mut self.slots[si];
            slot.backoff = (slot.backoff + 1).min(12);
            slot.next_at = Instant::now() + backoff(slot.backoff, retry_max);
            slot.retrying_since.get_or_insert(now);
            slot.last_answer = msg.clone();
            tracing::warn!(target_name = %r.target, answer = %msg, "PACS target unreachable; retrying");
            // Every transfer waiting for this target waits since now (or earlier).
            for h in &mut self.held {
                let (this, total, prepared) = (h.claim.transfer.id == r.transfer, h.claim.instances.len(), h.files.is_some());
                let p = h.pairs.entry(r.target.clone()).or_default();
                if this {
                    p.busy = false;
                }
                if p.failed || p.stored >= total || !prepared && !this {
                    continue;
                }
                let since = self.state.pair_unreachable(&h.claim.transfer.id, &r.target, msg).await?;
                p.failing_since = Some(since);
                p.last_answer = msg.clone();
                if now - since > give_up_ms {
                    p.failed = true;
                    p.last_answer = format!("{msg} (given up after {} minutes)", (now - since) / 60_000);
                    self.state.pair_failed(&h.claim.transfer.id, &r.target).await?;
                }
            }
            self.state.event("unreachable", &format!("transfer {}: {msg}", r.transfer)).await?;
            return Ok(());
        }
        let slot = &mut self.slots[si];
        slot.backoff = 0;
        slot.retrying_since = None;
        slot.last_answer.clear();
        slot.next_at = Instant::now();
        let Some(h) = self.held.iter_mut().find(|h| h.id() == r.transfer) else { return Ok(()) };
        let p = h.pairs.entry(r.target.clone()).or_default();
        p.busy = false;
        match &r.refused {
            Some(msg) => {
                let n = self.state.pair_refused(&r.transfer, &r.target, msg).await?;
                p.refusals = n;
                p.failing_since.get_or_insert(now);
                p.last_answer = msg.clone();
                if n >= max_attempts {
                    p.failed = true;
                    self.state.pair_failed(&r.transfer, &r.target).await?;
                } else {
                    p.next_at = Some(Instant::now() + backoff(n, retry_max));
                }
                tracing::warn!(transfer = %r.transfer, target_name = %r.target, kind, attempt = n, answer = %msg, "the PACS refused instances");
                self.state.event("refused", &format!("transfer {} (attempt {n}): {msg}", r.transfer)).await?;
            }
            None => {
                p.failing_since = None;
                if p.refusals == 0 {
                    p.last_answer.clear();
                }
            }
        }
        Ok(())
    }

    fn progress_of(&self, h: &Held) -> Vec<TargetProgress> {
        self.slots
            .iter()
            .map(|s| {
                let p = h.pairs.get(&s.target.name);
                let stored = p.map_or(0, |p| p.stored);
                let state = match p {
                    _ if stored >= h.total() => TargetState::Stored,
                    Some(p) if p.failed => TargetState::Failed,
                    Some(p) if p.failing_since.is_some() => TargetState::Retrying,
                    _ => TargetState::Pending,
                };
                TargetProgress {
                    target: s.target.name.clone(),
                    required: s.target.required,
                    state,
                    stored: stored as u64,
                    total: h.total() as u64,
                    since: p.and_then(|p| p.failing_since).filter(|_| state == TargetState::Retrying),
                    message: if state == TargetState::Stored {
                        String::new()
                    } else {
                        p.map(|p| p.last_answer.clone()).unwrap_or_default()
                    },
                    updated_at: 0,
                }
            })
            .collect()
    }

    /// Tells the hub where each target stands, for every held transfer where that changed.
    async fn send_progress(&mut self) -> anyhow::Result<()> {
        for i in 0..self.held.len() {
            if self.hub_error.is_some() {
                return Ok(());
            }
            self.send_progress_of(i).await?;
        }
        Ok(())
    }

    async fn send_progress_of(&mut self, i: usize) -> anyhow::Result<()> {
        let now = self.progress_of(&self.held[i]);
        if self.held[i].sent.as_ref() == Some(&now) || self.hub_error.is_some() {
            return Ok(());
        }
        let id = self.held[i].id().to_string();
        match self.hub.targets(&id, &now).await {
            Ok(()) => self.held[i].sent = Some(now),
            // The clinic closed the transfer meanwhile (done/rejected): nobody listens any more.
            Err(e) if lease_lost(&e) => self.held[i].sent = Some(now),
            Err(e) => self.hub_trouble(e),
        }
        Ok(())
    }

    /// Instances not yet acknowledged over every held transfer (for heartbeats).
    pub fn queue_depth(&self) -> i64 {
        self.held
            .iter()
            .filter(|h| h.reported.is_none())
            .map(|h| h.total() - h.pairs.values().map(|p| p.stored).min().unwrap_or(0))
            .sum::<usize>() as i64
    }

    /// Each target's health for the heartbeat.
    pub fn target_health(&self) -> Vec<TargetHealth> {
        self.slots
            .iter()
            .map(|s| {
                let name = &s.target.name;
                let waiting: Vec<&Held> =
                    self.held.iter().filter(|h| h.pairs.get(name).is_none_or(|p| !p.failed && p.stored < h.total())).collect();
                let refusing =
                    self.held.iter().filter_map(|h| h.pairs.get(name)).find(|p| !p.failed && p.refusals > 0 && p.failing_since.is_some());
                TargetHealth {
                    target: name.clone(),
                    required: s.target.required,
                    retrying: s.retrying_since.is_some() || refusing.is_some(),
                    since: s.retrying_since.or(refusing.and_then(|p| p.failing_since)),
                    last_answer: if s.retrying_since.is_some() {
                        s.last_answer.clone()
                    } else {
                        refusing.map(|p| p.last_answer.clone()).unwrap_or_default()
                    },
                    queue_depth: waiting.iter().map(|h| h.total() - h.pairs.get(name).map_or(0, |p| p.stored)).sum::<usize>() as i64,
                    oldest_waiting_at: waiting.iter().map(|h| h.claimed_at).min(),
                    last_success_at: s.last_success_at,
                }
            })
            .collect()
    }

    /// The connector's current error for the heartbeat, with the time it began; None when all is well.
    pub fn current_error(&self) -> Option<(String, i64)> {
        for t in self.target_health() {
            if t.retrying {
                return Some((format!("{}: {}", t.target, t.last_answer), t.since.unwrap_or_else(now_ms)));
            }
        }
        self.last_failure.clone()
    }

    /// Downloads in rounds of 64 (four at a time). Between rounds the token is refreshed when due
    /// and, every 30 s, an empty acknowledgement renews the lease of a long download.
    async fn download(&mut self, id: &str, missing: &[&ClaimedInstance], spool: &Path) -> anyhow::Result<()> {
        let mut renewed = Instant::now();
        for chunk in missing.chunks(64) {
            if renewed.elapsed() > Duration::from_secs(30) {
                self.hub.ack(id, &[]).await?;
                renewed = Instant::now();
            }
            let token = self.hub.token().await?;
            let hub = &self.hub;
            let mut results = futures_util::stream::iter(chunk.iter().map(|i| {
                let to: PathBuf = spool.join(format!("{}.dcm", i.sop_instance_uid));
                let token = token.as_str();
                async move {
                    let mut last = None;
                    for attempt in 0..3u32 {
                        if attempt > 0 {
                            tokio::time::sleep(Duration::from_millis(500 << attempt)).await;
                        }
                        match hub.download(token, i, &to).await {
                            Ok(()) => return Ok(()),
                            Err(e) => last = Some(e),
                        }
                    }
                    Err(last.unwrap_or_else(|| anyhow::anyhow!("download failed")))
                }
            }))
            .buffer_unordered(4);
            let mut first_error = None;
            while let Some(r) = results.next().await {
                if let Err(e) = r {
                    first_error.get_or_insert(e);
                }
            }
            if let Some(e) = first_error {
                return Err(e.context("downloading from the hub"));
            }
        }
        Ok(())
    }
}

/// One storing task: stores `todo` into one target and records each confirmation in the state
/// database as it comes (before the hub hears of it).
async fn pass(state: State, target: Target, http: reqwest::Client, transfer: String, todo: Vec<Outgoing>) -> PassResult {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let sender = {
        let (t, http) = (target.clone(), http.clone());
        tokio::spawn(async move { store_into(&t, &http, todo, tx).await })
    };
    let mut r =
        PassResult { transfer: transfer.clone(), target: target.name.clone(), stored: 0, refused: None, unreachable: None, local: None };
    while let Some((f, result)) = rx.recv().await {
        match result {
            Ok(Stored::Ok(status)) => match state.record_delivery(&transfer, &f.sop_instance, &target.name, status).await {
                Ok(()) => r.stored += 1,
                Err(e) => {
                    r.local.get_or_insert(format!("cannot record a delivery in the state database: {e:#}"));
                }
            },
            Ok(Stored::Refused(_, msg)) => r.refused = Some(format!("{} ({}): {msg}", target.name, target_kind(&target))),
            Err(msg) => r.unreachable = Some(format!("{} ({}): {msg}", target.name, target_kind(&target))),
        }
    }
    if let Err(e) = sender.await {
        r.local.get_or_insert(format!("the storing task failed: {e}"));
    }
    r
}

pub(crate) fn target_kind(t: &Target) -> &'static str {
    match t.kind {
        TargetKind::Dimse { .. } => "C-STORE",
        TargetKind::Dicomweb { .. } => "STOW-RS",
    }
}

/// Stores files into one target, one result per file on `results`.
pub(crate) async fn store_into(
    t: &Target,
    http: &reqwest::Client,
    files: Vec<Outgoing>,
    results: tokio::sync::mpsc::UnboundedSender<dimse::StoreResult>,
) {
    match &t.kind {
        TargetKind::Dimse { associations, .. } => {
            if let Some(p) = peer(t) {
                dimse::store_all(&p, *associations, files, results).await;
            }
        }
        TargetKind::Dicomweb { url } => {
            for f in files {
                let r = stow(http, url, &f).await;
                let _ = results.send((f, r));
            }
        }
    }
}

/// Stores one file by STOW-RS, streamed from disk; stored when the PACS lists it in its
/// ReferencedSOPSequence. `Err` when the PACS could not be reached or had a server error.
async fn stow(http: &reqwest::Client, stow_url: &str, f: &Outgoing) -> Result<Stored, String> {
    let boundary = format!("ferry-{}", uuid::Uuid::new_v4().simple());
    let file = tokio::fs::File::open(&f.path).await.map_err(|e| format!("cannot open the spooled file: {e}"))?;
    let head = bytes::Bytes::from(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n"));
    let tail = bytes::Bytes::from(format!("\r\n--{boundary}--\r\n"));
    let body = futures_util::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024))
        .chain(futures_util::stream::once(async move { Ok(tail) }));
    let resp = http
        .post(format!("{}/studies", stow_url.trim_end_matches('/')))
        .header("content-type", format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"))
        .header("accept", "application/dicom+json")
        .body(reqwest::Body::wrap_stream(body))
        .send()
        .await
        .map_err(|e| format!("cannot reach the PACS at {stow_url}: {e}"))?;
    let status = resp.status();
    if status.is_server_error() && status.as_u16() != 500 {
        return Err(format!("the PACS answered HTTP {status}"));
    }
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    let stored = answer["00081199"]["Value"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["00081155"]["Value"][0].as_str() == Some(f.sop_instance.as_str())));
    if status.is_success() && stored {
        let warning = answer["00081196"]["Value"][0].as_u64().unwrap_or(0) as u16;
        return Ok(Stored::Ok(warning));
    }
    let reason = answer["00081198"]["Value"][0]["00081197"]["Value"][0].as_u64().map(|r| r as u16).unwrap_or(0xC000);
    Ok(Stored::Refused(reason, format!("the PACS did not store {} (HTTP {status}, failure reason 0x{reason:04X})", f.sop_instance)))
}
