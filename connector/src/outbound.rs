//! Outbound, PACS → hub. What the PACS sends to the connector's Storage SCP ([`crate::scp`])
//! collects in a batch per study and calling AE title. A batch is complete when nothing arrived
//! for `outbound.settle_secs`; then the first matching route decides:
//!
//! - `share`: a draft share at the connector's own community, the files uploaded into it, the
//!   share issued, and the printable sheet (PDF, with the QR code and, for a password, the
//!   separate slip) written to `sheet_dir` and optionally handed to a print command;
//! - `transfer`: the study sent to another community like `ferry-connector send` does, in the
//!   name of the account whose personal access token the route names.
//!
//! Every step is recorded in the state database, so a restart resumes: the draft share is reused
//! (uploads are idempotent at the hub), and a share that was issued but whose sheet was not yet
//! written is reissued (a new code; the lost one stops working). A batch whose route the hub
//! refuses for good (e.g. no birth date in the images for a birth-date share) is marked failed
//! with the hub's reason; an unreachable hub is retried with backoff until it answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use dicom_core::Tag;
use ferry_schemas::{IssuedShare, NewShare, Share, ShareOptions, SheetRequest};

use crate::config::{Config, Route, RouteAction};
use crate::dimse::text;
use crate::hub::Hub;
use crate::scp::batch_dir;
use crate::send::{self, Refused};
use crate::state::{State, now_ms};

/// Records a received instance (already durable at `file`) in its study's open batch and moves
/// it into the batch's folder.
pub async fn add_instance(state: &State, study: &str, calling: &str, sop: &str, size: u64, file: &Path) -> anyhow::Result<()> {
    let now = now_ms();
    let mut tx = state.db.begin().await?;
    sqlx::query(
        "INSERT INTO outbound_batches (id, study_uid, calling_ae, state, first_at, last_at) VALUES ($1, $2, $3, 'receiving', $4, $4) \
         ON CONFLICT DO NOTHING",
    )
    .bind(uuid::Uuid::new_v4().to_string())
    .bind(study)
    .bind(calling)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    let batch: String =
        sqlx::query_scalar("SELECT id FROM outbound_batches WHERE study_uid = $1 AND calling_ae = $2 AND state = 'receiving'")
            .bind(study)
            .bind(calling)
            .fetch_one(&mut *tx)
            .await?;
    let dir = batch_dir(state, &batch);
    std::fs::create_dir_all(&dir)?;
    std::fs::rename(file, dir.join(format!("{sop}.dcm")))?;
    std::fs::File::open(&dir)?.sync_all()?;
    sqlx::query(
        "INSERT INTO outbound_files (batch_id, sop_instance_uid, size) VALUES ($1, $2, $3) ON CONFLICT DO UPDATE SET size = excluded.size",
    )
    .bind(&batch)
    .bind(sop)
    .bind(size as i64)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE outbound_batches SET last_at = $1 WHERE id = $2").bind(now).bind(&batch).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// A tag given as keyword (`StudyDescription`) or as `gggg,eeee` / `(gggg,eeee)`.
pub fn parse_tag(s: &str) -> Option<Tag> {
    use dicom_core::dictionary::DataDictionary;
    let t = s.trim();
    if let Some(e) = dicom_dictionary_std::StandardDataDictionary.by_name(t) {
        return Some(e.tag.inner());
    }
    let hex = t.trim_start_matches('(').trim_end_matches(')');
    let (g, e) = hex.split_once(',')?;
    Some(Tag(u16::from_str_radix(g.trim(), 16).ok()?, u16::from_str_radix(e.trim(), 16).ok()?))
}

/// `*` any characters, `?` one; case-insensitive.
pub fn matches(pattern: &str, value: &str) -> bool {
    let p: Vec<char> = pattern.to_lowercase().chars().collect();
    let v: Vec<char> = value.to_lowercase().chars().collect();
    let (mut pi, mut vi, mut star, mut mark) = (0, 0, None, 0);
    while vi < v.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == v[vi]) {
            pi += 1;
            vi += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = vi;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            vi = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// The first route that takes a study sent by `calling` whose first instance is `first`.
pub fn choose<'r>(routes: &'r [Route], calling: &str, first: &Path) -> anyhow::Result<Option<&'r Route>> {
    let obj = dicom_object::OpenFileOptions::new()
        .read_until(dicom_dictionary_std::tags::PIXEL_DATA)
        .open_file(first)
        .context("reading the study's first instance")?;
    Ok(routes.iter().find(|r| {
        r.calling_ae.as_deref().is_none_or(|ae| ae.eq_ignore_ascii_case(calling))
            && match (&r.tag, &r.value) {
                (Some(tag), Some(pattern)) => parse_tag(tag).is_some_and(|t| matches(pattern, &text(&obj, t))),
                _ => true,
            }
    }))
}

/// A failure that retrying will not mend.
#[derive(Debug)]
struct Final(String);

impl std::fmt::Display for Final {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Final {}

fn is_final(e: &anyhow::Error) -> bool {
    e.downcast_ref::<Final>().is_some() || e.downcast_ref::<Refused>().is_some_and(Refused::is_final)
}

#[derive(sqlx::FromRow)]
struct Batch {
    id: String,
    calling_ae: String,
    route: String,
    share_id: Option<String>,
    attempts: i64,
}

pub struct Worker {
    cfg: Config,
    state: State,
    hub: Hub,
    http: reqwest::Client,
    community: Option<String>,
}

impl Worker {
    pub async fn new(cfg: &Config, state: &State) -> anyhow::Result<Worker> {
        let instance = state.instance_id().await?;
        // Batches no route took are tried again with the (possibly changed) routes of this run.
        sqlx::query("UPDATE outbound_batches SET state = 'routing', route = '', last_error = '' WHERE state = 'unrouted'")
            .execute(&state.db)
            .await?;
        Ok(Worker {
            cfg: cfg.clone(),
            state: state.clone(),
            hub: Hub::new(&cfg.hub.url, &cfg.hub.client_id, &cfg.hub.client_secret, &instance)?,
            http: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            community: None,
        })
    }

    /// Routes every batch that is complete and due. Returns how many are still waiting.
    pub async fn round(&mut self) -> anyhow::Result<i64> {
        let now = now_ms();
        sqlx::query("UPDATE outbound_batches SET state = 'routing' WHERE state = 'receiving' AND last_at < $1")
            .bind(now - self.cfg.outbound.settle_secs as i64 * 1000)
            .execute(&self.state.db)
            .await?;
        let due: Vec<Batch> = sqlx::query_as(
            "SELECT id, calling_ae, route, share_id, attempts FROM outbound_batches WHERE state = 'routing' AND next_at <= $1 ORDER BY first_at",
        )
        .bind(now)
        .fetch_all(&self.state.db)
        .await?;
        for b in &due {
            self.work(b).await?;
        }
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbound_batches WHERE state IN ('receiving', 'routing')")
            .fetch_one(&self.state.db)
            .await?)
    }

    async fn work(&mut self, b: &Batch) -> anyhow::Result<()> {
        let files = self.files(&b.id).await?;
        if files.is_empty() {
            return self.finish(b, "failed", "", "no instance of the study was kept").await;
        }
        let route = if b.route.is_empty() {
            let first = files[0].1.clone();
            let routes = self.cfg.outbound.routes.clone();
            let calling = b.calling_ae.clone();
            let chosen =
                tokio::task::spawn_blocking(move || choose(&routes, &calling, &first).map(|r| r.map(|r| r.name.clone()))).await??;
            let Some(name) = chosen else {
                let msg = format!(
                    "no route takes this study (sent by {}); fix [[outbound.routes]] and restart the connector to route it again",
                    b.calling_ae
                );
                sqlx::query("UPDATE outbound_batches SET state = 'unrouted', last_error = $1 WHERE id = $2")
                    .bind(&msg)
                    .bind(&b.id)
                    .execute(&self.state.db)
                    .await?;
                self.state.event("unrouted", &format!("outbound batch {}: {msg}", b.id)).await?;
                return Ok(());
            };
            sqlx::query("UPDATE outbound_batches SET route = $1 WHERE id = $2").bind(&name).bind(&b.id).execute(&self.state.db).await?;
            name
        } else {
            b.route.clone()
        };
        let Some(route) = self.cfg.outbound.routes.iter().find(|r| r.name == route).cloned() else {
            return self.finish(b, "failed", "", &format!("the route {route:?} this study was given is no longer configured")).await;
        };
        let result = match &route.action {
            RouteAction::Share { sheet_dir, print_command, second_factor, expires_in_days, note } => {
                let options = ShareOptions {
                    second_factor: second_factor.clone(),
                    expires_in_days: *expires_in_days,
                    note: note.clone(),
                    ..Default::default()
                };
                self.share(b, &files, &options, sheet_dir, print_command).await
            }
            RouteAction::Transfer { community, sender_token, note } => {
                let o = send::SendOptions {
                    hub: self.cfg.hub.url.clone(),
                    token: sender_token.clone(),
                    community: community.clone(),
                    note: note.clone(),
                    appointment: String::new(),
                    urgent: false,
                    paths: vec![batch_dir(&self.state, &b.id)],
                    send_partial: false,
                };
                send::send(&o, |_| {}).await.map(|t| t.id)
            }
        };
        match result {
            Ok(what) => {
                self.state
                    .event("routed", &format!("outbound batch {} ({} instance(s)) by route {:?}: {what}", b.id, files.len(), route.name))
                    .await?;
                self.finish(b, "done", &what, "").await
            }
            Err(e) if is_final(&e) => self.finish(b, "failed", "", &format!("route {:?}: {e:#}", route.name)).await,
            Err(e) => {
                let attempts = b.attempts + 1;
                let pause = (2i64 << attempts.min(8)).min(self.cfg.inbound.retry_max_secs.max(1) as i64) * 1000;
                let msg = format!("route {:?}: {e:#}", route.name);
                tracing::warn!(batch = %b.id, error = %msg, "outbound study not delivered yet; will retry");
                sqlx::query("UPDATE outbound_batches SET attempts = $1, next_at = $2, last_error = $3 WHERE id = $4")
                    .bind(attempts)
                    .bind(now_ms() + pause)
                    .bind(&msg)
                    .bind(&b.id)
                    .execute(&self.state.db)
                    .await?;
                Ok(())
            }
        }
    }

    async fn files(&self, batch: &str) -> anyhow::Result<Vec<(String, PathBuf, u64)>> {
        let dir = batch_dir(&self.state, batch);
        let rows: Vec<(String, i64)> =
            sqlx::query_as("SELECT sop_instance_uid, size FROM outbound_files WHERE batch_id = $1 ORDER BY sop_instance_uid")
                .bind(batch)
                .fetch_all(&self.state.db)
                .await?;
        Ok(rows.into_iter().map(|(sop, size)| (format!("{sop}.dcm"), dir.join(format!("{sop}.dcm")), size as u64)).collect())
    }

    async fn finish(&self, b: &Batch, state: &str, result: &str, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE outbound_batches SET state = $1, result = $2, last_error = $3, finished_at = $4 WHERE id = $5")
            .bind(state)
            .bind(result)
            .bind(error)
            .bind(now_ms())
            .bind(&b.id)
            .execute(&self.state.db)
            .await?;
        if state == "failed" {
            tracing::warn!(batch = %b.id, error, "outbound study failed");
            self.state.event("failed", &format!("outbound batch {}: {error}", b.id)).await?;
        }
        // The hub holds the study now (or the route failed for good and says why): the spool
        // copy goes.
        let _ = std::fs::remove_dir_all(batch_dir(&self.state, &b.id));
        Ok(())
    }

    async fn send_json<T: serde::de::DeserializeOwned>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: &impl serde::Serialize,
    ) -> anyhow::Result<T> {
        let resp = self
            .hub
            .request(method, path)
            .await?
            .json(body)
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.hub.base()))?;
        if !resp.status().is_success() {
            return Err(send::problem(resp).await);
        }
        Ok(resp.json().await?)
    }

    async fn share(
        &mut self,
        b: &Batch,
        files: &[(String, PathBuf, u64)],
        options: &ShareOptions,
        sheet_dir: &Path,
        print: &[String],
    ) -> anyhow::Result<String> {
        if self.community.is_none() {
            self.community = Some(self.hub.me().await?.community);
        }
        let community = self.community.clone().unwrap_or_default();
        let id = match &b.share_id {
            Some(id) => id.clone(),
            None => {
                // A draft takes no options; they come with `issue`.
                let new = NewShare { community, studies: vec![], patient_id: None, options: ShareOptions::default() };
                let draft: Share = self.send_json(reqwest::Method::POST, "/api/v1/shares", &new).await?;
                sqlx::query("UPDATE outbound_batches SET share_id = $1 WHERE id = $2")
                    .bind(&draft.id)
                    .bind(&b.id)
                    .execute(&self.state.db)
                    .await?;
                draft.id
            }
        };
        let share: Share = {
            let resp = self.hub.request(reqwest::Method::GET, &format!("/api/v1/shares/{id}")).await?.send().await?;
            if !resp.status().is_success() {
                return Err(send::problem(resp).await);
            }
            resp.json().await?
        };
        let issued: IssuedShare = if share.state == ferry_schemas::ShareState::Draft {
            let url = format!("{}/api/v1/shares/{id}/files", self.hub.base());
            let mut failed = vec![];
            for chunk in files.chunks(32) {
                let token = self.hub.token().await?;
                let refs: Vec<&(String, PathBuf, u64)> = chunk.iter().collect();
                let report = send::upload(&self.http, &url, &token, &refs).await?;
                failed.extend(
                    report
                        .files
                        .into_iter()
                        .filter(|f| f.outcome == "failed")
                        .map(|f| format!("{}: {}", f.path, f.reason.unwrap_or_default())),
                );
            }
            if !failed.is_empty() {
                bail!(Final(format!("the hub did not take {} instance(s): {}", failed.len(), failed.join("; "))));
            }
            self.send_json(reqwest::Method::POST, &format!("/api/v1/shares/{id}/issue"), options).await?
        } else {
            // Issued in an earlier run whose sheet was never written: only a new code helps.
            self.send_json(reqwest::Method::POST, &format!("/api/v1/shares/{id}/reissue"), &serde_json::json!({})).await?
        };
        let resp = self
            .hub
            .request(reqwest::Method::POST, &format!("/api/v1/shares/{id}/sheet"))
            .await?
            .json(&SheetRequest { code: issued.code.clone(), password: issued.password.clone() })
            .send()
            .await?;
        if !resp.status().is_success() {
            return Err(send::problem(resp).await);
        }
        let pdf = resp.bytes().await?;
        let path = write_sheet(sheet_dir, &id, &pdf)
            .map_err(|e| Final(format!("the sheet cannot be written into {}: {e:#}", sheet_dir.display())))?;
        if let Some((program, args)) = print.split_first() {
            match tokio::process::Command::new(program).args(args).arg(&path).status().await {
                Ok(s) if s.success() => {}
                Ok(s) => self.state.event("print", &format!("{program} ended with {s} for {}", path.display())).await?,
                Err(e) => self.state.event("print", &format!("{program} could not be started: {e}")).await?,
            }
        }
        Ok(format!("share {id}, sheet {}", path.display()))
    }
}

/// `share-YYYYMMDD-HHMMSS-<share>.pdf`, written under a temporary name and renamed when complete.
fn write_sheet(dir: &Path, share: &str, pdf: &[u8]) -> anyhow::Result<PathBuf> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let t = time::OffsetDateTime::now_utc();
    let name = format!(
        "share-{:04}{:02}{:02}-{:02}{:02}{:02}-{}.pdf",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        &share[..8.min(share.len())]
    );
    let path = dir.join(name);
    let tmp = path.with_extension("pdf.part");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(pdf)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Runs the outbound worker until the task is dropped.
pub async fn run(cfg: Config, state: State) {
    let mut worker = match Worker::new(&cfg, &state).await {
        Ok(w) => w,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "the outbound worker cannot start");
            return;
        }
    };
    loop {
        if let Err(e) = worker.round().await {
            tracing::warn!(error = %format!("{e:#}"), "outbound round failed");
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_tags() {
        assert!(matches("*share*", "CT Thorax SHARE"));
        assert!(matches("CT?Thorax", "ct thorax"));
        assert!(!matches("MR*", "CT Thorax"));
        assert!(matches("*", ""));
        assert!(!matches("a*b", "acbx"));
        assert_eq!(parse_tag("StudyDescription"), Some(Tag(0x0008, 0x1030)));
        assert_eq!(parse_tag("(0010,0020)"), Some(Tag(0x0010, 0x0020)));
        assert_eq!(parse_tag("NoSuchKeyword"), None);
    }
}
