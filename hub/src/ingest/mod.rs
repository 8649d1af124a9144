//! Ingest: turns one DICOM file arriving as a byte stream into an encrypted blob plus index rows.
//!
//! One pass over the bytes: each chunk is hashed, encrypted into the blob store and handed to the
//! structural walk on a blocking thread. Only after the blob is durable and the walk found a
//! complete, well-formed file is the instance indexed, in one transaction; until then it is
//! invisible, and a crash leaves at most a blob listed in `pending_blobs` for the sweeper.
//! Memory per upload stays bounded by the chunk buffers and the header (no pixel data is held).

pub mod describe;
pub mod index;
pub mod parse;

use std::fmt::Display;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

use crate::index::{Origin, RowRef};
use crate::state::AppState;
use crate::storage::crypto::Key;
pub use describe::Described;

/// DICOM failure reasons used in STOW-RS responses (PS3.18 / PS3.4 status codes).
pub mod reason {
    /// Processing failure (also: the instance does not belong to the study in the URL).
    pub const PROCESSING_FAILURE: u16 = 0x0110;
    /// Duplicate SOP Instance with different content.
    pub const DUPLICATE_DIFFERENT: u16 = 0x0111;
    /// Refused: out of resources (too large, storage unavailable).
    pub const OUT_OF_RESOURCES: u16 = 0xA700;
    /// Error: data set does not match SOP class / missing required attributes.
    pub const DATASET_MISMATCH: u16 = 0xA900;
    /// Error: cannot understand.
    pub const CANNOT_UNDERSTAND: u16 = 0xC000;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Stored,
    /// The same instance with the same bytes was already stored.
    Duplicate,
}

#[derive(Debug, Clone)]
pub struct Stored {
    pub outcome: Outcome,
    pub sop_class_uid: String,
    pub sop_instance_uid: String,
    pub study_uid: String,
    pub series_uid: String,
    /// The origin of the row (see [`crate::index`]).
    pub origin: String,
}

impl Stored {
    /// The stored row, the way links name it.
    pub fn row_ref(&self) -> RowRef {
        RowRef {
            origin: self.origin.clone(),
            sop_instance_uid: self.sop_instance_uid.clone(),
            series_uid: self.series_uid.clone(),
            study_uid: self.study_uid.clone(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Failure {
    pub reason: u16,
    pub message: String,
    pub sop_class_uid: Option<String>,
    pub sop_instance_uid: Option<String>,
    /// The input was not a DICOM file at all (uploads skip such files instead of failing).
    pub not_dicom: bool,
    /// The request body itself broke (client went away, malformed multipart): stop reading it.
    pub fatal: bool,
}

impl Failure {
    pub fn new(reason: u16, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), sop_class_uid: None, sop_instance_uid: None, not_dicom: false, fatal: false }
    }

    fn with_uids(mut self, d: &Described) -> Self {
        self.sop_class_uid = Some(d.sop_class_uid.clone());
        self.sop_instance_uid = Some(d.sop_instance_uid.clone());
        self
    }
}

/// Consumes the rest of a stream (so a multipart body can move on to its next part).
async fn drain<S, E>(body: &mut S) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    while let Some(chunk) = body.next().await {
        if chunk.is_err() {
            return false;
        }
    }
    true
}

/// A file whose bytes are all in the blob writer and whose structure and attributes checked
/// out; [`commit`] makes it durable and visible.
pub struct Received {
    described: Described,
    writer: crate::storage::BlobWriter,
    blob_path: String,
    blob_key: Key,
    size: u64,
    sha256: String,
}

/// Reads one file from `body` (which must be consumed in order) into an unfinished blob.
#[tracing::instrument(skip_all)]
pub async fn receive<S, E>(state: &AppState, body: &mut S, expected_study: Option<&str>) -> Result<Received, Failure>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: Display,
{
    let limits = &state.config.limits;
    let blob_path = format!("instances/{}", uuid::Uuid::new_v4().simple());
    // The blob is registered as pending before any byte of it reaches the store (the writer
    // waits for this), while receiving and encrypting already go on.
    let register = {
        let index = state.index.clone();
        let path = blob_path.clone();
        tokio::spawn(async move { index.register(path).await })
    };
    let blob_key = Key::random();
    let mut writer = state.blobs.writer(&blob_path, &blob_key).with_gate(register);
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let max_head = limits.max_header_bytes;
    // The walk also hashes what passes through it: SHA-256 runs on the walker's thread, beside
    // the encryption on this one.
    let walker = tokio::task::spawn_blocking(move || {
        let mut reader = ChannelReader::new(rx);
        let walked = parse::walk(&mut reader, max_head)?;
        let described = describe::describe(&walked)?;
        let (sha256, hashed) = reader.finish();
        Ok::<_, WalkFailure>((walked.total_len, described, sha256, hashed))
    });
    let mut size: u64 = 0;
    let mut tx = Some(tx);
    let mut failure: Option<Failure> = None;
    while let Some(chunk) = body.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let mut f = Failure::new(reason::CANNOT_UNDERSTAND, format!("reading the request body failed: {e}"));
                f.fatal = true;
                failure = Some(f);
                break;
            }
        };
        size += chunk.len() as u64;
        if size > limits.max_instance_bytes {
            failure =
                Some(Failure::new(reason::OUT_OF_RESOURCES, format!("the file exceeds the limit of {} bytes", limits.max_instance_bytes)));
            if !drain(body).await
                && let Some(f) = failure.as_mut()
            {
                f.fatal = true;
            }
            break;
        }
        if let Some(sender) = &tx
            && sender.send(chunk.clone()).await.is_err()
        {
            // The walk stopped early: the file is not usable. Its error is reported below.
            tx = None;
            let ok = drain(body).await;
            if !ok {
                let mut f = Failure::new(reason::CANNOT_UNDERSTAND, "reading the request body failed");
                f.fatal = true;
                failure = Some(f);
            }
            break;
        }
        if let Err(e) = writer.write_bytes(chunk).await {
            tracing::error!(error = %format!("{e:#}"), "blob write failed");
            failure = Some(Failure::new(reason::OUT_OF_RESOURCES, "the hub could not store the file (storage or database unavailable)"));
            drain(body).await;
            break;
        }
    }
    drop(tx);
    let walked = walker.await;
    let described = match (failure, walked) {
        (Some(f), _) => Err(f),
        (None, Err(join)) => {
            tracing::error!(error = %join, "parser task failed");
            Err(Failure::new(reason::CANNOT_UNDERSTAND, "the file could not be parsed"))
        }
        (None, Ok(Err(wf))) => Err(wf.into_failure()),
        (None, Ok(Ok((total, d, _, hashed)))) if total != size || hashed != size => {
            // Cannot happen unless the walk stopped short; never index a partial read.
            Err(Failure::new(reason::CANNOT_UNDERSTAND, "the file has trailing bytes after the data set").with_uids(&d))
        }
        (None, Ok(Ok((_, d, sha, _)))) => match expected_study {
            Some(s) if s != d.study_uid => {
                Err(Failure::new(reason::PROCESSING_FAILURE, "Study Instance UID differs from the study in the URL").with_uids(&d))
            }
            _ => Ok((d, sha)),
        },
    };
    let (described, sha256) = match described {
        Ok(d) => d,
        Err(f) => {
            writer.abort().await;
            forget_blob(state, &blob_path).await;
            return Err(f);
        }
    };
    Ok(Received { described, writer, blob_path, blob_key, size, sha256 })
}

/// Makes a received file durable (blob finished and synced) and visible (indexed in one
/// transaction, under `origin`, linked to its holding). Independent of the request body, so it
/// can run while the next part arrives.
#[tracing::instrument(skip_all, fields(study_uid = %r.described.study_uid, sop_instance_uid = %r.described.sop_instance_uid))]
pub async fn commit(state: &AppState, origin: &Origin, r: Received) -> Result<Stored, Failure> {
    let Received { described, writer, blob_path, blob_key, size, sha256 } = r;
    if let Err(e) = writer.finish().await {
        tracing::error!(error = %format!("{e:#}"), "blob finish failed");
        forget_blob(state, &blob_path).await;
        return Err(Failure::new(reason::OUT_OF_RESOURCES, "the hub could not store the file (storage or database unavailable)")
            .with_uids(&described));
    }
    let described = std::sync::Arc::new(described);
    let blob = index::NewBlob { path: blob_path.clone(), key: blob_key, size, sha256 };
    match index::insert(state, origin, described.clone(), blob).await {
        Ok(outcome) => {
            if outcome == Outcome::Duplicate {
                forget_blob(state, &blob_path).await;
                crate::metrics::instance_ingested("duplicate");
            } else {
                crate::metrics::instance_ingested("stored");
            }
            Ok(Stored {
                outcome,
                sop_class_uid: described.sop_class_uid.clone(),
                sop_instance_uid: described.sop_instance_uid.clone(),
                study_uid: described.study_uid.clone(),
                series_uid: described.series_uid.clone(),
                origin: origin.as_string(),
            })
        }
        Err(f) => {
            forget_blob(state, &blob_path).await;
            Err(f.with_uids(&described))
        }
    }
}

/// Deletes a blob that will not be indexed, and its pending row. If the deletion fails the
/// pending row stays and the sweeper retries later.
async fn forget_blob(state: &AppState, path: &str) {
    if state.blobs.delete(path).await.is_ok() {
        let _ = state.index.forget(path.to_string()).await;
    }
}

/// Why the walk or the attribute parse rejected a file.
#[derive(Debug)]
pub enum WalkFailure {
    Parse(parse::ParseError),
    Describe(Failure),
}

impl From<parse::ParseError> for WalkFailure {
    fn from(e: parse::ParseError) -> Self {
        WalkFailure::Parse(e)
    }
}

impl From<Failure> for WalkFailure {
    fn from(f: Failure) -> Self {
        WalkFailure::Describe(f)
    }
}

impl WalkFailure {
    fn into_failure(self) -> Failure {
        match self {
            WalkFailure::Describe(f) => f,
            WalkFailure::Parse(parse::ParseError::NotDicom) => {
                let mut f = Failure::new(reason::CANNOT_UNDERSTAND, "not a DICOM file (no DICM prefix)");
                f.not_dicom = true;
                f
            }
            WalkFailure::Parse(e @ parse::ParseError::HeaderTooLarge(_)) => Failure::new(reason::OUT_OF_RESOURCES, e.to_string()),
            WalkFailure::Parse(e) => Failure::new(reason::CANNOT_UNDERSTAND, e.to_string()),
        }
    }
}

/// Blocking `Read` over chunks sent from the async side; hashes every chunk it receives.
pub struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
    hasher: Sha256,
    received: u64,
}

impl ChannelReader {
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self { rx, cur: Bytes::new(), hasher: Sha256::new(), received: 0 }
    }

    fn take(&mut self, b: Bytes) {
        self.hasher.update(&b);
        self.received += b.len() as u64;
        self.cur = b;
    }

    /// Receives the rest (until the sender is dropped) and returns the hex SHA-256 and length of
    /// everything received.
    pub fn finish(mut self) -> (String, u64) {
        while let Some(b) = self.rx.blocking_recv() {
            self.take(b);
        }
        (hex::encode(self.hasher.finalize()), self.received)
    }
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.take(b),
                None => return Ok(0),
            }
        }
        let n = self.cur.len().min(buf.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Commits received files concurrently (a few at a time) while the caller keeps reading the
/// request body, so fsyncs and index transactions overlap with receiving the next file.
pub struct Pipeline<L> {
    state: AppState,
    origin: Origin,
    inflight: std::collections::VecDeque<(L, tokio::task::JoinHandle<Result<Stored, Failure>>)>,
    done: Vec<(L, Result<Stored, Failure>)>,
}

const PIPELINE_DEPTH: usize = 4;

impl<L> Pipeline<L> {
    /// A pipeline whose files are indexed under `origin`.
    pub fn new(state: &AppState, origin: Origin) -> Self {
        Self { state: state.clone(), origin, inflight: Default::default(), done: Vec::new() }
    }

    async fn reap_one(&mut self) {
        if let Some((label, handle)) = self.inflight.pop_front() {
            let r = handle.await.unwrap_or_else(|e| {
                tracing::error!(error = %e, "commit task failed");
                Err(Failure::new(reason::OUT_OF_RESOURCES, "internal error while storing"))
            });
            self.done.push((label, r));
        }
    }

    /// Queues a received file for commit; waits when too many are in flight.
    pub async fn push(&mut self, label: L, received: Received) {
        let (state, origin) = (self.state.clone(), self.origin.clone());
        self.inflight.push_back((label, tokio::spawn(async move { commit(&state, &origin, received).await })));
        while self.inflight.len() > PIPELINE_DEPTH {
            self.reap_one().await;
        }
    }

    /// Records a file that failed before commit.
    pub fn push_result(&mut self, label: L, result: Result<Stored, Failure>) {
        self.done.push((label, result));
    }

    /// Waits for every commit; results in completion order per file.
    pub async fn finish(mut self) -> Vec<(L, Result<Stored, Failure>)> {
        while !self.inflight.is_empty() {
            self.reap_one().await;
        }
        self.done
    }
}
