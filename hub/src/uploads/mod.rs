//! Uploads of whole sendings: `POST /api/v1/uploads` takes a ZIP (`application/zip`), a single
//! DICOM file (`application/dicom`), or a browser folder/CD upload (`multipart/form-data`, one
//! part per file, ZIPs allowed among them). Every DICOM file found goes through the same ingest as
//! STOW-RS; other files (README, viewer programs, the DICOMDIR index itself) are reported as
//! skipped. ZIP entries with unsafe paths, encryption, or suspicious expansion are refused.

pub mod receive;
pub mod spool;

use std::io::Read;

use axum::Json;
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use bytes::Bytes;
use ferry_schemas::{UploadReport, UploadedFile};
use futures_util::{Stream, StreamExt, TryStreamExt};
use tokio::sync::mpsc;

use crate::access::Principal;
use crate::error::{AppError, AppResult};
use crate::index::Origin;
use crate::ingest::{self, Outcome};
use crate::state::AppState;
use spool::SpoolWriter;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/uploads", post(upload)).layer(DefaultBodyLimit::disable())
}

#[derive(Default)]
struct Report {
    files: Vec<UploadedFile>,
}

impl Report {
    fn push_result(&mut self, path: String, r: Result<ingest::Stored, ingest::Failure>) {
        self.files.push(match r {
            Ok(s) => UploadedFile {
                path,
                outcome: if s.outcome == Outcome::Duplicate { "duplicate" } else { "stored" }.into(),
                sop_instance_uid: Some(s.sop_instance_uid),
                study_instance_uid: Some(s.study_uid),
                reason: None,
            },
            Err(f) if f.not_dicom => skipped(path, "not a DICOM file"),
            Err(f) => UploadedFile {
                path,
                outcome: "failed".into(),
                sop_instance_uid: f.sop_instance_uid,
                study_instance_uid: None,
                reason: Some(f.message),
            },
        });
    }

    fn failed(&mut self, path: String, reason: impl Into<String>) {
        self.files.push(UploadedFile {
            path,
            outcome: "failed".into(),
            sop_instance_uid: None,
            study_instance_uid: None,
            reason: Some(reason.into()),
        });
    }

    fn finish(self) -> Ingested {
        let count = |o: &str| self.files.iter().filter(|f| f.outcome == o).count() as u64;
        let mut studies: Vec<String> = self.files.iter().filter_map(|f| f.study_instance_uid.clone()).collect();
        studies.sort();
        studies.dedup();
        let report = UploadReport {
            stored: count("stored"),
            duplicates: count("duplicate"),
            skipped: count("skipped"),
            failed: count("failed"),
            studies,
            files: self.files,
        };
        let ok = report.stored + report.duplicates;
        let status = if report.failed == 0 && ok > 0 {
            StatusCode::OK
        } else if ok > 0 {
            StatusCode::ACCEPTED
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        Ingested { status, report }
    }
}

fn skipped(path: String, reason: &str) -> UploadedFile {
    UploadedFile { path, outcome: "skipped".into(), sop_instance_uid: None, study_instance_uid: None, reason: Some(reason.into()) }
}

fn is_dicomdir(name: &str) -> bool {
    name.rsplit(['/', '\\']).next().is_some_and(|b| b.eq_ignore_ascii_case("DICOMDIR"))
}

/// What an upload brought in: the answer for the client (the instances are indexed and linked
/// to the upload's holding by then).
pub struct Ingested {
    pub status: StatusCode,
    pub report: UploadReport,
}

async fn upload(State(state): State<AppState>, principal: Principal, headers: HeaderMap, body: Body) -> AppResult<Response> {
    if !principal.can_store() {
        return Err(AppError::Forbidden);
    }
    let Ingested { status, report, .. } = ingest_body(&state, &headers, body, Origin::Hub).await?;
    tracing::info!(principal = %principal.log_id(), stored = report.stored, failed = report.failed, skipped = report.skipped, "upload handled");
    Ok((status, Json(report)).into_response())
}

/// Takes in a ZIP, a single DICOM file or a multipart/form-data folder upload, indexed under
/// `origin` (and linked to it, when it is a transfer or share).
pub async fn ingest_body(state: &AppState, headers: &HeaderMap, body: Body, origin: Origin) -> AppResult<Ingested> {
    let state = state.clone();
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).ok_or_else(|| {
        AppError::UnsupportedMediaType("missing Content-Type (application/zip, application/dicom or multipart/form-data)".into())
    })?;
    let mime =
        crate::http::accept::parse_content_type(ct).ok_or_else(|| AppError::UnsupportedMediaType("malformed Content-Type".into()))?;
    let stream = body.into_data_stream().map_err(std::io::Error::other);
    let mut report = Report::default();
    let mut pipe = receive::Pipeline::<String>::new(&state, origin);
    match mime.essence.as_str() {
        "application/zip" | "application/x-zip-compressed" => {
            let mut stream = std::pin::pin!(stream);
            process_zip(&state, "upload.zip", &mut stream, &mut report, &mut pipe).await?;
        }
        "application/dicom" => {
            let mut stream = std::pin::pin!(stream);
            receive_into(&state, &mut stream, "upload.dcm".into(), &mut pipe).await;
        }
        "multipart/form-data" => {
            let boundary = mime
                .param("boundary")
                .map(str::to_string)
                .ok_or_else(|| AppError::BadRequest("multipart/form-data without boundary".into()))?;
            let mut mp = multer::Multipart::new(stream, boundary);
            let mut n = 0usize;
            loop {
                let mut field = match mp.next_field().await {
                    Ok(Some(f)) => f,
                    Ok(None) => break,
                    Err(e) if n == 0 => return Err(AppError::BadRequest(format!("malformed multipart body: {e}"))),
                    Err(e) => {
                        report.failed(format!("part {}", n + 1), format!("malformed multipart body: {e}"));
                        break;
                    }
                };
                n += 1;
                let name = field.file_name().or_else(|| field.name()).map(str::to_string).unwrap_or_else(|| format!("part {n}"));
                if is_dicomdir(&name) {
                    while let Ok(Some(_)) = field.chunk().await {}
                    report.files.push(skipped(name, "DICOMDIR index (the files it lists are uploaded as parts)"));
                    continue;
                }
                let is_zip = name.to_ascii_lowercase().ends_with(".zip")
                    || field.content_type().is_some_and(|m| m.essence_str() == "application/zip");
                if is_zip {
                    process_zip(&state, &name, &mut field, &mut report, &mut pipe).await?;
                } else if !receive_into(&state, &mut field, name, &mut pipe).await {
                    break;
                }
            }
            if n == 0 {
                return Err(AppError::BadRequest("the upload contains no files".into()));
            }
        }
        other => {
            return Err(AppError::UnsupportedMediaType(format!(
                "Content-Type {other} is not supported; send application/zip, application/dicom or multipart/form-data"
            )));
        }
    }
    for (label, r) in pipe.finish().await {
        report.push_result(label, r);
    }
    Ok(report.finish())
}

/// Receives one file into the commit pipeline. Returns false when the request body broke.
async fn receive_into<S, E>(state: &AppState, body: &mut S, label: String, pipe: &mut receive::Pipeline<String>) -> bool
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    match receive::receive(state, body, None).await {
        Ok(r) => {
            pipe.push(label, r).await;
            true
        }
        Err(f) => {
            let fatal = f.fatal;
            pipe.push_result(label, Err(f));
            !fatal
        }
    }
}

/// Spools a ZIP (encrypted), then feeds each entry to ingest.
async fn process_zip<S, E>(
    state: &AppState,
    zip_name: &str,
    body: &mut S,
    report: &mut Report,
    pipe: &mut receive::Pipeline<String>,
) -> AppResult<()>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let limits = state.config.limits.clone();
    let tmp = state.config.data_dir.join("tmp");
    let mut spool = SpoolWriter::create(&tmp).map_err(|e| AppError::Internal(e.into()))?;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AppError::BadRequest(format!("reading the upload failed: {e}")))?;
        if spool.len() + chunk.len() as u64 > limits.max_upload_bytes {
            while body.next().await.is_some() {}
            return Err(AppError::PayloadTooLarge(format!("the upload exceeds the limit of {} bytes", limits.max_upload_bytes)));
        }
        spool.write(&chunk).map_err(|e| AppError::Internal(e.into()))?;
    }
    let reader = spool.finish().map_err(|e| AppError::Internal(e.into()))?;
    let mut archive = match zip::ZipArchive::new(reader) {
        Ok(a) => a,
        Err(e) => {
            report.failed(zip_name.to_string(), format!("not a readable ZIP archive: {e}"));
            return Ok(());
        }
    };
    if archive.len() as u64 > limits.max_zip_entries {
        report.failed(zip_name.to_string(), format!("the ZIP has more than {} entries", limits.max_zip_entries));
        return Ok(());
    }
    // Entries are read on a blocking thread and streamed here one by one.
    let (entry_tx, mut entry_rx) = mpsc::channel::<ZipEntry>(1);
    let prefix = zip_name.to_string();
    let reader_task = tokio::task::spawn_blocking(move || read_entries(&mut archive, &prefix, &limits, entry_tx));
    while let Some(entry) = entry_rx.recv().await {
        match entry {
            ZipEntry::Skip(path, why) => report.files.push(skipped(path, &why)),
            ZipEntry::Fail(path, why) => report.failed(path, why),
            ZipEntry::File(path, rx) => {
                let mut stream = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|x| (x, rx)) }));
                // The reader reports problems of the entry itself (bomb, CRC) through the stream.
                receive_into(state, &mut stream, path, pipe).await;
            }
        }
    }
    reader_task.await.map_err(|e| AppError::Internal(e.into()))?;
    Ok(())
}

enum ZipEntry {
    Skip(String, String),
    Fail(String, String),
    File(String, mpsc::Receiver<Result<Bytes, EntryError>>),
}

#[derive(Debug)]
struct EntryError(String);

impl std::fmt::Display for EntryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// The entry reader without the channels, for the fuzz targets: every entry that would be
/// ingested is handed to `each` whole (at most the declared size).
#[doc(hidden)]
pub fn read_entries_into<R: Read + std::io::Seek + Send>(
    archive: &mut zip::ZipArchive<R>,
    prefix: &str,
    limits: &crate::config::LimitsConfig,
    each: &mut dyn FnMut(&str, &[u8]),
) {
    let (tx, mut rx) = mpsc::channel::<ZipEntry>(1);
    std::thread::scope(|scope| {
        let reader = scope.spawn(|| read_entries(archive, prefix, limits, tx));
        while let Some(entry) = rx.blocking_recv() {
            if let ZipEntry::File(path, mut data) = entry {
                let mut whole = Vec::new();
                while let Some(Ok(chunk)) = data.blocking_recv() {
                    whole.extend_from_slice(&chunk);
                }
                each(&path, &whole);
            }
        }
        let _ = reader.join();
    });
}

fn read_entries<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    prefix: &str,
    limits: &crate::config::LimitsConfig,
    tx: mpsc::Sender<ZipEntry>,
) {
    for i in 0..archive.len() {
        let mut entry = match archive.by_index(i) {
            Ok(e) => e,
            Err(e) => {
                let _ = tx.blocking_send(ZipEntry::Fail(format!("{prefix}#{i}"), format!("unreadable ZIP entry: {e}")));
                continue;
            }
        };
        let raw_name = String::from_utf8_lossy(entry.name_raw()).into_owned();
        let path = format!("{prefix}/{raw_name}");
        if entry.is_dir() {
            continue;
        }
        if entry.enclosed_name().is_none() || raw_name.starts_with('/') || raw_name.contains("..") {
            let _ = tx.blocking_send(ZipEntry::Fail(path, "unsafe path in ZIP entry (absolute or with ..)".into()));
            continue;
        }
        if entry.encrypted() {
            let _ = tx.blocking_send(ZipEntry::Fail(path, "encrypted ZIP entries are not supported".into()));
            continue;
        }
        if is_dicomdir(&raw_name) {
            let _ = tx.blocking_send(ZipEntry::Skip(path, "DICOMDIR index".into()));
            continue;
        }
        let declared = entry.size();
        let compressed = entry.compressed_size().max(1);
        if declared > limits.max_instance_bytes {
            let _ = tx.blocking_send(ZipEntry::Fail(path, format!("entry larger than the limit of {} bytes", limits.max_instance_bytes)));
            continue;
        }
        if declared > (1 << 20) && declared / compressed > limits.max_zip_ratio {
            let _ = tx.blocking_send(ZipEntry::Fail(path, "entry expands suspiciously (ZIP bomb guard)".into()));
            continue;
        }
        let (data_tx, data_rx) = mpsc::channel::<Result<Bytes, EntryError>>(8);
        if tx.blocking_send(ZipEntry::File(path, data_rx)).is_err() {
            return;
        }
        // Never read more than declared (+1 to notice a lying header) nor more than the ratio allows.
        let cap = declared.min(compressed.saturating_mul(limits.max_zip_ratio).max(1 << 20)) + 1;
        let mut limited = (&mut entry).take(cap);
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match limited.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    if total > declared {
                        let _ = data_tx.blocking_send(Err(EntryError("entry is larger than its header says (ZIP bomb guard)".into())));
                        break;
                    }
                    if data_tx.blocking_send(Ok(Bytes::copy_from_slice(&buf[..n]))).is_err() {
                        break;
                    }
                }
                Err(e) => {
                    let _ = data_tx.blocking_send(Err(EntryError(format!("corrupt ZIP entry: {e}"))));
                    break;
                }
            }
        }
    }
}
