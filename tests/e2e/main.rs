//! Ferry's end-to-end suite: the real hub (in-process or as its binary) against real clients and
//! peers — Python dicomweb-client, Orthanc with its DICOMweb plugin, PostgreSQL when
//! `TEST_DATABASE_URL` is set. `tests/run.sh` installs the peers and runs this suite.

#![allow(clippy::expect_used, clippy::unwrap_used)]

mod accounts;
mod audit;
mod backup;
mod browser;
mod cli;
mod communities;
mod connector_run;
mod connector_targets;
mod connectors;
mod crash;
mod deploy;
mod dicomweb_clients;
mod dlx;
mod fixtures;
mod guards;
mod hostile;
mod keys_transit;
mod metrics;
mod oidc;
mod openapi;
mod outbound;
mod qido;
mod render_codecs;
mod s3;
mod scale;
mod shares;
mod storage;
mod stow_wado;
mod tenancy;
mod transfers;
mod uploads;
mod viewer;
