//! Ferry hub: takes DICOM in (STOW-RS, ZIP/DICOMDIR uploads), keeps it encrypted at rest, indexes
//! it, and serves it back through DICOMweb (QIDO-RS, WADO-RS) to whoever may see it.
//!
//! `main.rs` only parses the command line; everything testable lives here. Shared plumbing sits in
//! the top-level files, every feature in its own folder with its handlers, SQL and types.

pub mod access;
pub mod accounts;
pub mod archive;
pub mod audit;
pub mod audit_trail;
pub mod backup;
pub mod cli;
pub mod communities;
pub mod config;
pub mod connectors;
pub mod db;
pub mod dicomweb;
pub mod error;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod http;
pub mod index;
pub mod ingest;
pub mod mail;
pub mod metrics;
pub mod ohif;
pub mod retention;
pub mod shares;
pub mod startup;
pub mod state;
pub mod storage;
pub mod telemetry;
pub mod text;
pub mod transfers;
pub mod ui;
pub mod uploads;

pub use config::Config;
pub use startup::Application;
