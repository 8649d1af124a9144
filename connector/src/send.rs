//! `ferry-connector send`: sends files, folders, ZIPs or a CD's content to a community from the
//! command line, the same way the browser does — a draft transfer, uploads in batches (a batch
//! whose request breaks is retried; a file the hub refused is retried on its own), then `send`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use ferry_schemas::{NewTransfer, Problem, Transfer, UploadReport};

pub struct SendOptions {
    pub hub: String,
    pub token: String,
    pub community: String,
    pub note: String,
    pub appointment: String,
    pub urgent: bool,
    pub paths: Vec<PathBuf>,
    /// Send what arrived even when some files could not be taken.
    pub send_partial: bool,
}

/// Where the sending is, for the progress line.
pub struct Progress {
    pub files_done: usize,
    pub files_total: usize,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

const BATCH_BYTES: u64 = 32 << 20;
const BATCH_FILES: usize = 64;

/// The files under `paths` (folders walked recursively, hidden files left out), with the name
/// each is sent under (its path relative to the folder given).
pub fn collect(paths: &[PathBuf]) -> anyhow::Result<Vec<(String, PathBuf, u64)>> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf, u64)>) -> anyhow::Result<()> {
        let mut entries: Vec<_> =
            std::fs::read_dir(dir).with_context(|| format!("cannot read the folder {}", dir.display()))?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            if e.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            if p.is_dir() {
                walk(root, &p, out)?;
            } else if p.is_file() {
                let name = p.strip_prefix(root).unwrap_or(&p).to_string_lossy().replace('\\', "/");
                out.push((name, p.clone(), e.metadata()?.len()));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let root = p.parent().unwrap_or(p);
            walk(root, p, &mut out)?;
        } else if p.is_file() {
            let name = p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
            out.push((name, p.clone(), std::fs::metadata(p)?.len()));
        } else {
            bail!("{} does not exist", p.display());
        }
    }
    if out.is_empty() {
        bail!("no files to send");
    }
    Ok(out)
}

/// The hub answered a request with an error status (and, usually, a problem+json reason).
#[derive(Debug)]
pub struct Refused {
    pub status: u16,
    pub detail: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.detail.is_empty() {
            write!(f, "the hub answered HTTP {}", self.status)
        } else {
            write!(f, "the hub refused (HTTP {}): {}", self.status, self.detail)
        }
    }
}

impl std::error::Error for Refused {}

impl Refused {
    /// A refusal that asking again will not change (bad request, not found, conflict…), unlike
    /// an expired token, a timeout, rate limiting or a server error.
    pub fn is_final(&self) -> bool {
        (400..500).contains(&self.status) && ![401, 408, 429].contains(&self.status)
    }
}

pub(crate) async fn problem(resp: reqwest::Response) -> anyhow::Error {
    let status = resp.status().as_u16();
    let detail = resp.json::<Problem>().await.map(|p| p.detail.unwrap_or(p.title)).unwrap_or_default();
    anyhow::Error::new(Refused { status, detail })
}

pub(crate) async fn upload(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    files: &[&(String, PathBuf, u64)],
) -> anyhow::Result<UploadReport> {
    let mut form = reqwest::multipart::Form::new();
    for (name, path, len) in files {
        let f = tokio::fs::File::open(path).await.with_context(|| format!("cannot open {}", path.display()))?;
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(f, 256 * 1024));
        form = form.part("file", reqwest::multipart::Part::stream_with_length(body, *len).file_name(name.clone()));
    }
    let resp = client.post(url).bearer_auth(token).multipart(form).send().await?;
    match resp.status().as_u16() {
        200 | 202 | 422 => Ok(resp.json().await?),
        _ => Err(problem(resp).await),
    }
}

/// Sends; `progress` is called after every batch.
pub async fn send(o: &SendOptions, mut progress: impl FnMut(&Progress)) -> anyhow::Result<Transfer> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let files = collect(&o.paths)?;
    let client = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let base = o.hub.trim_end_matches('/');
    let new = NewTransfer {
        community: o.community.clone(),
        reason: o.note.clone(),
        appointment: o.appointment.clone(),
        urgency: Some(if o.urgent { "urgent" } else { "routine" }.into()),
    };
    let resp = client
        .post(format!("{base}/api/v1/transfers"))
        .bearer_auth(&o.token)
        .json(&new)
        .send()
        .await
        .with_context(|| format!("cannot reach the hub at {base}"))?;
    if !resp.status().is_success() {
        return Err(problem(resp).await);
    }
    let t: Transfer = resp.json().await?;
    let url = format!("{base}/api/v1/transfers/{}/files", t.id);

    let mut p = Progress { files_done: 0, files_total: files.len(), bytes_done: 0, bytes_total: files.iter().map(|f| f.2).sum() };
    let mut batches: Vec<Vec<&(String, PathBuf, u64)>> = vec![vec![]];
    let mut bytes = 0;
    for f in &files {
        let cur = batches.last_mut().map(|b| b.len()).unwrap_or(0);
        if cur > 0 && (bytes + f.2 > BATCH_BYTES || cur >= BATCH_FILES) {
            batches.push(vec![]);
            bytes = 0;
        }
        bytes += f.2;
        if let Some(b) = batches.last_mut() {
            b.push(f);
        }
    }
    let mut failed: Vec<(&(String, PathBuf, u64), String)> = Vec::new();
    for batch in &batches {
        let mut attempt = 0;
        let report = loop {
            match upload(&client, &url, &o.token, batch).await {
                Ok(r) => break Some(r),
                Err(e) if attempt < 3 => {
                    eprintln!("retrying a batch of {} files: {e:#}", batch.len());
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                    attempt += 1;
                }
                Err(e) => {
                    for f in batch {
                        failed.push((f, format!("{e:#}")));
                    }
                    break None;
                }
            }
        };
        if let Some(r) = report {
            for uf in r.files.iter().filter(|uf| uf.outcome == "failed") {
                if let Some(f) = batch.iter().find(|f| f.0 == uf.path) {
                    failed.push((f, uf.reason.clone().unwrap_or_default()));
                }
            }
        }
        p.files_done += batch.len();
        p.bytes_done += batch.iter().map(|f| f.2).sum::<u64>();
        progress(&p);
    }
    // What failed gets one more try, each file on its own.
    let mut still = Vec::new();
    for (f, reason) in failed {
        match upload(&client, &url, &o.token, &[f]).await {
            Ok(r) if r.failed == 0 => {}
            Ok(r) => still.push(format!("{}: {}", f.0, r.files.first().and_then(|x| x.reason.clone()).unwrap_or(reason))),
            Err(e) => still.push(format!("{}: {e:#}", f.0)),
        }
    }
    if !still.is_empty() && !o.send_partial {
        bail!(
            "{} file(s) could not be sent; the transfer {} stays a draft (run again, or add --send-partial to send the rest):\n  {}",
            still.len(),
            t.id,
            still.join("\n  ")
        );
    }
    for s in &still {
        eprintln!("not sent: {s}");
    }
    let resp = client.post(format!("{base}/api/v1/transfers/{}/send", t.id)).bearer_auth(&o.token).send().await?;
    if !resp.status().is_success() {
        return Err(problem(resp).await);
    }
    Ok(resp.json().await?)
}
