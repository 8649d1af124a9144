//! Downloads as ZIP archives: streamed while they are built, with a Content-Length known before
//! the first byte so browsers show progress. Instances are decrypted piece by piece (several
//! pieces ahead, across files) and written as stored entries: DICOM pixel data rarely shrinks, and
//! a stored entry costs nothing but a CRC. Memory stays flat for studies of any size.
//!
//! [`pdi`] lays out the content as IHE PDI (DICOMDIR, `STUDnn/SERnn/IMGnnn`, reports, README.TXT,
//! INDEX.HTM); [`dicomdir`] encodes the DICOMDIR.

pub mod dicomdir;
pub mod pdi;

use std::io::Write;

use axum::body::Body;
use axum::http::{HeaderValue, header};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::mpsc;
use zip::write::SimpleFileOptions;

use crate::error::AppResult;
use crate::storage::crypto::Key;
use crate::storage::{BlobStore, Piece};

/// Where an entry's bytes come from.
pub enum Source {
    Memory(Bytes),
    /// An encrypted blob of `size` plaintext bytes.
    Blob {
        path: String,
        key: Key,
    },
}

pub struct Entry {
    pub name: String,
    pub size: u64,
    pub source: Source,
}

/// The entries of an archive, in order.
#[derive(Default)]
pub struct Plan {
    pub entries: Vec<Entry>,
}

/// Counts what a writer would produce.
struct Counter(u64);

impl Write for Counter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0 += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn options(size: u64) -> SimpleFileOptions {
    SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Stored)
        .last_modified_time(zip::DateTime::default())
        .large_file(size >= u32::MAX as u64)
}

/// Archives below this size need no ZIP64 records for offsets; their length is the entries'
/// overhead (measured on empty entries) plus the data.
const SMALL_ARCHIVE: u64 = 3 << 30;

impl Plan {
    pub fn push_memory(&mut self, name: impl Into<String>, bytes: Bytes) {
        self.entries.push(Entry { name: name.into(), size: bytes.len() as u64, source: Source::Memory(bytes) });
    }

    /// The exact length of the archive: the zip crate writes it once into a counter (the headers
    /// of every entry, with the data left out where offsets stay small; in full otherwise).
    pub fn length(&self) -> anyhow::Result<u64> {
        let data: u64 = self.entries.iter().map(|e| e.size).sum();
        let small = data + self.entries.len() as u64 * 512 < SMALL_ARCHIVE;
        let mut zip = zip::ZipWriter::new_stream(Counter(0));
        let zeros = vec![0u8; 1 << 16];
        for e in &self.entries {
            zip.start_file(e.name.as_str(), options(e.size))?;
            if !small {
                let mut left = e.size;
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    zip.write_all(&zeros[..n])?;
                    left -= n as u64;
                }
            }
        }
        let counted = zip.finish()?.into_inner().0;
        Ok(if small { counted + data } else { counted })
    }

    /// Streams the archive as the response body, `filename` offered for saving.
    pub fn into_response(self, blobs: BlobStore, filename: &str) -> AppResult<Response> {
        let length = self.length()?;
        let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
        // Pieces of all entries, fetched and decrypted a few ahead, in order.
        let names: Vec<(String, u64)> = self.entries.iter().map(|e| (e.name.clone(), e.size)).collect();
        let mut jobs: Vec<(usize, Job)> = Vec::new();
        for (i, e) in self.entries.into_iter().enumerate() {
            match e.source {
                Source::Memory(b) => jobs.push((i, Job::Ready(b))),
                Source::Blob { path, key } => {
                    for piece in BlobStore::pieces(e.size, 0..e.size) {
                        jobs.push((i, Job::Piece { path: path.clone(), key: key.clone(), size: e.size, piece }));
                    }
                }
            }
        }
        let pieces = futures_util::stream::iter(jobs)
            .map(move |(i, job)| {
                let blobs = blobs.clone();
                async move {
                    let bytes = match job {
                        Job::Ready(b) => Ok(b),
                        Job::Piece { path, key, size, piece } => blobs.read_piece(&path, key, size, piece).await,
                    };
                    (i, bytes)
                }
            })
            .buffered(6);
        let (piece_tx, mut piece_rx) = mpsc::channel::<(usize, std::io::Result<Bytes>)>(6);
        tokio::spawn(async move {
            let mut pieces = std::pin::pin!(pieces);
            while let Some(p) = pieces.next().await {
                if piece_tx.send(p).await.is_err() {
                    break;
                }
            }
        });
        tokio::task::spawn_blocking(move || {
            let err_tx = tx.clone();
            let result = (|| -> anyhow::Result<()> {
                let mut zip = zip::ZipWriter::new_stream(ChannelWriter { tx, buf: Vec::with_capacity(CHUNK), written: 0 });
                let mut current = None;
                let mut started = 0;
                while let Some((i, bytes)) = piece_rx.blocking_recv() {
                    let bytes = bytes?;
                    // Entries with no data have no pieces: start them as they are passed.
                    while current != Some(i) {
                        let (name, size) = &names[started];
                        zip.start_file(name.as_str(), options(*size))?;
                        current = Some(started);
                        started += 1;
                    }
                    zip.write_all(&bytes)?;
                }
                for (name, size) in &names[started..] {
                    zip.start_file(name.as_str(), options(*size))?;
                }
                let mut inner = zip.finish()?.into_inner();
                inner.flush()?;
                anyhow::ensure!(inner.written == length, "archive length {} differs from the announced {length}", inner.written);
                Ok(())
            })();
            if let Err(e) = result {
                tracing::warn!(error = %format!("{e:#}"), "download ended early");
                let _ = err_tx.blocking_send(Err(std::io::Error::other("download interrupted")));
            }
        });
        let stream = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
        let mut resp = Response::new(Body::from_stream(stream));
        let h = resp.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/zip"));
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{filename}\"")) {
            h.insert(header::CONTENT_DISPOSITION, v);
        }
        Ok(resp)
    }
}

enum Job {
    Ready(Bytes),
    Piece { path: String, key: Key, size: u64, piece: Piece },
}

const CHUNK: usize = 256 * 1024;

/// `Write` into a bounded channel: the blocking ZIP writer's output becomes the response body.
struct ChannelWriter {
    tx: mpsc::Sender<std::io::Result<Bytes>>,
    buf: Vec<u8>,
    written: u64,
}

impl ChannelWriter {
    fn push(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx.blocking_send(Ok(chunk)).map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.written += data.len() as u64;
        if self.buf.len() >= CHUNK {
            self.push()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.push()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The announced length equals what the zip crate writes, for small and odd sizes.
    #[test]
    fn length_matches_the_written_archive() {
        let mut plan = Plan::default();
        for (i, size) in [0usize, 1, 5000, 70_000, 3].into_iter().enumerate() {
            plan.push_memory(format!("STUD01/SER01/IMG{i:03}"), Bytes::from(vec![7u8; size]));
        }
        plan.push_memory("DICOMDIR", Bytes::from_static(b"x"));
        let mut zip = zip::ZipWriter::new_stream(Counter(0));
        for e in &plan.entries {
            zip.start_file(e.name.as_str(), options(e.size)).unwrap();
            if let Source::Memory(b) = &e.source {
                zip.write_all(b).unwrap();
            }
        }
        assert_eq!(plan.length().unwrap(), zip.finish().unwrap().into_inner().0);
    }
}
