//! Ingest: what a DICOM file is and how it becomes index rows — the structural walk (`parse`),
//! the attributes the index keeps (`describe`), the group-commit index writer (`index`), and the
//! outcomes and DICOM failure reasons. Taking files in from requests (streaming, encryption,
//! committing) is `uploads::receive`, on top of this.

pub mod describe;
pub mod index;
pub mod parse;

use bytes::Bytes;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

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

    pub fn with_uids(mut self, d: &Described) -> Self {
        self.sop_class_uid = Some(d.sop_class_uid.clone());
        self.sop_instance_uid = Some(d.sop_instance_uid.clone());
        self
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
    pub fn into_failure(self) -> Failure {
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
