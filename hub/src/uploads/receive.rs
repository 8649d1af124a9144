//! Taking one DICOM file in from a request: the bytes stream through once — each chunk is hashed,
//! encrypted into the blob store and handed to the structural walk on a blocking thread. Only
//! after the blob is durable and the walk found a complete, well-formed file is the instance
//! indexed under its origin, in one transaction; until then it is invisible, and a crash leaves at
//! most a blob listed in `pending_blobs` for the sweeper. Memory per upload stays bounded by the
//! chunk buffers and the header (no pixel data is held).

use std::fmt::Display;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::index::Origin;
use crate::ingest::index::{InsertError, NewBlob, NewRow, retryable};
use crate::ingest::{ChannelReader, Described, Failure, Outcome, Stored, WalkFailure, describe, parse, reason};
use crate::state::AppState;
use crate::storage::crypto::Key;

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
    let blob = NewBlob { path: blob_path.clone(), key: blob_key, size, sha256 };
    match insert(state, origin, described.clone(), blob).await {
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

/// Indexes an instance under `origin`. Policy for a SOP Instance UID that the same origin
/// already stored: the same bytes again is a success (`Duplicate`, nothing changes); different
/// bytes are refused with 0x0111 and the stored instance stays as it is — an instance is
/// immutable once stored. Other origins' rows are never looked at: an upload learns nothing
/// about what others stored under the same UIDs.
pub async fn insert(state: &AppState, origin: &Origin, d: Arc<Described>, blob: NewBlob) -> Result<Outcome, Failure> {
    // The data key exists before the transaction (created race-free on its own).
    let key_id = origin.key_id(&d.study_uid);
    let wrapped_key = state.keys.wrap_blob_key(&state.db, &state.db_write, &key_id, &blob.key).await.map_err(|e| {
        tracing::error!(error = %format!("{e:#}"), "study key unavailable");
        Failure::new(reason::OUT_OF_RESOURCES, "the hub's key service is unavailable")
    })?;
    let row = Arc::new(NewRow::new(origin, key_id, wrapped_key, d, blob));
    for attempt in 0..3 {
        match state.index.insert(row.clone()).await {
            Ok(o) => return Ok(o),
            Err(InsertError::Failure(f)) => return Err(f),
            Err(InsertError::Db(e)) if retryable(&e) && attempt < 2 => {
                // A concurrent upload of the same instance won (or two hubs' batches
                // deadlocked on PostgreSQL); look again.
                continue;
            }
            Err(InsertError::Db(e)) => {
                tracing::error!(error = %e, "indexing failed");
                return Err(Failure::new(reason::OUT_OF_RESOURCES, "the hub's database is unavailable"));
            }
        }
    }
    Err(Failure::new(reason::OUT_OF_RESOURCES, "the hub's database is busy"))
}
