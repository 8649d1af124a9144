//! Inbound, hub → PACS. One round: claim a transfer (or resume the one this process holds),
//! download what is missing into the spool (WADO-RS, size and SHA-256 checked), reconcile, store
//! into every inbound target (DIMSE C-STORE or STOW-RS), record each confirmation in the local
//! state, acknowledge to the hub, and report the transfer stored — or failed with the PACS's
//! answer once it keeps refusing, or after the PACS stayed unreachable too long.
//!
//! Crash safety: a confirmation is written to the state database before the hub hears of it, and
//! a spool file gets its name only after its checksum matched. After `kill -9` at any point, the
//! next round skips what each target confirmed and re-acknowledges what the hub missed; at
//! worst the one instance in flight is stored again under the same SOP Instance UID, which a PACS
//! keeps once.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_schemas::{Ack, Claim, ClaimedInstance, ConnectorReport};
use futures_util::StreamExt;

use crate::config::{Config, Target, TargetKind};
use crate::dimse::{self, Outgoing, Peer, Stored};
use crate::hub::Hub;
use crate::reconcile::Reconciler;
use crate::state::{State, now_ms};

/// What a round did.
#[derive(Debug, PartialEq)]
pub enum Round {
    /// Nothing waiting.
    Idle,
    /// A transfer was finished (stored or failed).
    Finished { transfer: String, stored: bool, message: String },
    /// A transfer is unfinished; try again after a pause.
    Retry { transfer: String, reason: String },
}

pub struct Inbound {
    cfg: Config,
    state: State,
    pub hub: Hub,
    reconciler: Reconciler,
    http: reqwest::Client,
    /// Instances of the transfer being worked on that are not yet acknowledged (for heartbeats).
    pub queue_depth: i64,
}

pub fn peer(t: &Target) -> Option<Peer> {
    match &t.kind {
        TargetKind::Dimse { host, port, called_ae, calling_ae, .. } => {
            Some(Peer { host: host.clone(), port: *port, called_ae: called_ae.clone(), calling_ae: calling_ae.clone() })
        }
        TargetKind::Dicomweb { .. } => None,
    }
}

impl Inbound {
    pub async fn new(cfg: &Config, state: &State) -> anyhow::Result<Inbound> {
        if cfg.inbound_targets().is_empty() {
            bail!("no PACS target is configured for inbound studies ([[pacs]] in the configuration)");
        }
        let instance = state.instance_id().await?;
        let hub = Hub::new(&cfg.hub.url, &cfg.hub.client_id, &cfg.hub.client_secret, &instance)?;
        let worklist = cfg.inbound.reconcile.worklist.as_deref().and_then(|w| cfg.target(w)).and_then(peer);
        Ok(Inbound {
            cfg: cfg.clone(),
            state: state.clone(),
            hub,
            reconciler: Reconciler::new(&cfg.inbound.reconcile, worklist)?,
            http: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            queue_depth: 0,
        })
    }

    /// Claims and works on one transfer, if any is waiting.
    pub async fn round(&mut self) -> anyhow::Result<Round> {
        let Some(claim) = self.hub.claim().await? else {
            self.queue_depth = 0;
            return Ok(Round::Idle);
        };
        let id = claim.transfer.id.clone();
        self.state.begin_transfer(&id, claim.instances.len()).await?;
        match self.work(&claim).await {
            Ok(round) => Ok(round),
            // The hub went away mid-way (or the lease was lost): nothing is reported, the next
            // round resumes from the local state.
            Err(e) => {
                let reason = format!("{e:#}");
                self.state.event("error", &format!("transfer {id}: {reason}")).await?;
                Ok(Round::Retry { transfer: id, reason })
            }
        }
    }

    async fn work(&mut self, claim: &Claim) -> anyhow::Result<Round> {
        let id = claim.transfer.id.as_str();
        let targets: Vec<Target> = self.cfg.inbound_targets().into_iter().cloned().collect();
        let hub_acked: Vec<String> = claim.instances.iter().filter(|i| i.acked).map(|i| i.sop_instance_uid.clone()).collect();
        self.state.record_acks(id, &hub_acked).await?;
        let pending: Vec<&ClaimedInstance> = claim.instances.iter().filter(|i| !i.acked).collect();
        self.queue_depth = pending.len() as i64;

        // Confirmed by every target in an earlier run, but the hub never heard: tell it now.
        self.flush_acks(id, targets.len()).await?;

        let mut delivered: HashMap<String, HashSet<String>> = HashMap::new();
        for t in &targets {
            delivered.insert(t.name.clone(), self.state.delivered(id, &t.name).await?);
        }
        let needed: Vec<&ClaimedInstance> =
            pending.iter().copied().filter(|i| targets.iter().any(|t| !delivered[&t.name].contains(&i.sop_instance_uid))).collect();

        // 1. Download what is not in the spool yet.
        let spool = self.state.spool(id);
        tokio::fs::create_dir_all(&spool).await?;
        let missing: Vec<&ClaimedInstance> =
            needed.iter().copied().filter(|i| !spool.join(format!("{}.dcm", i.sop_instance_uid)).exists()).collect();
        if !missing.is_empty() {
            self.download(id, &missing, &spool).await?;
        }

        // 2. Reconcile: per study, one decision; the spool keeps the sent original.
        let mut files: Vec<(String, Outgoing)> = Vec::new();
        for i in &needed {
            let original = spool.join(format!("{}.dcm", i.sop_instance_uid));
            let out = spool.join(format!("{}.reconciled.dcm", i.sop_instance_uid));
            let path = match self.reconciler.prepare(&i.study_uid, original, out).await {
                Ok(p) => p,
                Err(e) => return self.fail(id, &format!("import reconciliation: {e:#}")).await,
            };
            let f = tokio::task::spawn_blocking(move || Outgoing::read(path)).await??;
            files.push((i.sop_instance_uid.clone(), f));
        }

        // 3. Store into each target what it has not confirmed yet.
        let mut refused: Option<String> = None;
        let mut unreachable: Option<String> = None;
        for t in &targets {
            let todo: Vec<Outgoing> = files.iter().filter(|(sop, _)| !delivered[&t.name].contains(sop)).map(|(_, f)| f.clone()).collect();
            if todo.is_empty() {
                continue;
            }
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let sender = {
                let t = t.clone();
                let http = self.http.clone();
                tokio::spawn(async move { store_into(&t, &http, todo, tx).await })
            };
            let mut since_flush = 0;
            while let Some((f, result)) = rx.recv().await {
                match result {
                    Ok(Stored::Ok(status)) => {
                        self.state.record_delivery(id, &f.sop_instance, &t.name, status).await?;
                        since_flush += 1;
                        if since_flush >= 32 {
                            self.flush_acks(id, targets.len()).await?;
                            since_flush = 0;
                        }
                    }
                    Ok(Stored::Refused(_, msg)) => refused = Some(format!("{} ({}): {msg}", t.name, target_kind(t))),
                    Err(msg) => unreachable = Some(format!("{} ({}): {msg}", t.name, target_kind(t))),
                }
            }
            sender.await.context("the storing task failed")?;
        }
        self.flush_acks(id, targets.len()).await?;

        // 4. Decide: stored, retry, or failed.
        let acked = self.state.acked(id).await?;
        let left = claim.instances.iter().filter(|i| !acked.contains(&i.sop_instance_uid)).count();
        self.queue_depth = left as i64;
        if left == 0 {
            self.hub.report(id, &ConnectorReport { state: "stored".into(), message: String::new() }).await?;
            self.state.finish_transfer(id, "stored", "").await?;
            self.state.event("stored", &format!("transfer {id}: {} instance(s) stored", claim.instances.len())).await?;
            return Ok(Round::Finished { transfer: id.into(), stored: true, message: String::new() });
        }
        let summary = format!("{} of {} instance(s) stored", claim.instances.len() - left, claim.instances.len());
        if let Some(msg) = refused {
            let n = self.state.count_refusal(id, &msg).await?;
            if n >= self.cfg.inbound.max_attempts {
                return self.fail(id, &format!("{summary}; {msg}")).await;
            }
            self.state.event("refused", &format!("transfer {id} (attempt {n}): {msg}")).await?;
            return Ok(Round::Retry { transfer: id.into(), reason: msg });
        }
        let msg = unreachable.unwrap_or_else(|| "not every instance was confirmed".into());
        let since = self.state.note_unreachable(id, &msg).await?;
        if now_ms() - since > self.cfg.inbound.give_up_after_secs as i64 * 1000 {
            return self
                .fail(id, &format!("{summary}; the PACS could not be reached for {} minutes: {msg}", (now_ms() - since) / 60_000))
                .await;
        }
        self.state.event("unreachable", &format!("transfer {id}: {msg}")).await?;
        Ok(Round::Retry { transfer: id.into(), reason: msg })
    }

    async fn fail(&mut self, id: &str, message: &str) -> anyhow::Result<Round> {
        self.hub.report(id, &ConnectorReport { state: "failed".into(), message: message.into() }).await?;
        self.state.finish_transfer(id, "failed", message).await?;
        self.state.event("failed", &format!("transfer {id}: {message}")).await?;
        Ok(Round::Finished { transfer: id.into(), stored: false, message: message.into() })
    }

    /// Acknowledges to the hub what every target confirmed, then notes it locally.
    async fn flush_acks(&mut self, id: &str, targets: usize) -> anyhow::Result<()> {
        let ready = self.state.unacked_delivered(id, targets).await?;
        if ready.is_empty() {
            return Ok(());
        }
        for chunk in ready.chunks(500) {
            let acks: Vec<Ack> = chunk.iter().map(|(sop, status)| Ack { sop_instance_uid: sop.clone(), status: *status as u16 }).collect();
            self.hub.ack(id, &acks).await?;
            let sops: Vec<String> = chunk.iter().map(|(s, _)| s.clone()).collect();
            self.state.record_acks(id, &sops).await?;
        }
        self.state.note_progress(id).await?;
        Ok(())
    }

    /// Downloads in rounds of 64 (four at a time). Between rounds the token is refreshed when due
    /// and, every 30 s, an empty acknowledgement renews the lease of a long download.
    async fn download(&mut self, id: &str, missing: &[&ClaimedInstance], spool: &std::path::Path) -> anyhow::Result<()> {
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
