//! Test harness: `spawn_app()` starts a real hub in-process on 127.0.0.1:0 with a temp data dir
//! and SQLite — or a fresh PostgreSQL database per test when `TEST_DATABASE_URL` is set — and
//! returns a client with one helper per endpoint. Logs only when `TEST_LOG` is set.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Once;

use dicom_core::{DataElement, PrimitiveValue, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};
use ferry_hub::config::Config;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE};
use secrecy::SecretString;
use tokio::sync::oneshot;

pub const TOKEN: &str = "test-admin-token-0123456789";

static INIT: Once = Once::new();

pub struct TestApp {
    pub base: String,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub client: reqwest::Client,
    pub state: ferry_hub::state::AppState,
    /// The database the hub uses (for running the CLI against the same one).
    pub database_url: String,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub config: Config,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

/// A fresh PostgreSQL database for one test, when the suite runs against PostgreSQL.
pub async fn fresh_database() -> Option<String> {
    let admin_url = std::env::var("TEST_DATABASE_URL").ok()?;
    sqlx::any::install_default_drivers();
    let name = format!("ferry_test_{}", uuid::Uuid::new_v4().simple());
    let pool = sqlx::AnyPool::connect(&admin_url).await.expect("connect to TEST_DATABASE_URL");
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&pool).await.expect("create test database");
    pool.close().await;
    let base = admin_url.rsplit_once('/').map(|(b, _)| b.to_string()).unwrap_or(admin_url);
    Some(format!("{base}/{name}"))
}

pub fn test_config(dir: &std::path::Path) -> Config {
    let mut config = Config { listen: "127.0.0.1:0".parse().expect("addr"), data_dir: dir.to_path_buf(), ..Default::default() };
    config.auth.admin_token = Some(SecretString::from(TOKEN.to_string()));
    // Tests sign many people in from one address; the limit itself is tested on its own.
    config.auth.rate_burst = 10_000;
    config
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(tweak: impl FnOnce(&mut Config)) -> TestApp {
    INIT.call_once(|| {
        if std::env::var("TEST_LOG").is_ok() {
            ferry_hub::telemetry::init(&ferry_hub::config::LogConfig::default());
        }
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let database_url = fresh_database().await;
    spawn_app_at(dir, database_url, tweak).await
}

/// A hub on an existing data folder and database (`None`: SQLite in the folder).
pub async fn spawn_app_at(dir: tempfile::TempDir, database_url: Option<String>, tweak: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = test_config(dir.path());
    config.database.url = database_url;
    tweak(&mut config);
    let database_url = config.database_url();
    let app = ferry_hub::Application::build(config.clone()).await.expect("build hub");
    let port = app.port();
    let state = app.state().clone();
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    TestApp {
        base: format!("http://127.0.0.1:{port}"),
        port,
        dir,
        client: reqwest::Client::new(),
        state,
        database_url,
        stop: Some(tx),
        task: Some(task),
        config,
    }
}

impl TestApp {
    /// Kills the hub at once (every open connection drops, like a crash); `crash_and_restart`
    /// brings it back.
    pub async fn crash(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.stop = None;
    }

    /// Kills the hub at once (every open connection drops, like a crash) and starts it again on
    /// the same port, database and storage.
    pub async fn crash_and_restart(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
            let _ = t.await;
        }
        self.stop = None;
        let mut config = self.config.clone();
        config.listen = format!("127.0.0.1:{}", self.port).parse().expect("addr");
        let mut app = None;
        for _ in 0..50 {
            match ferry_hub::Application::build(config.clone()).await {
                Ok(a) => {
                    app = Some(a);
                    break;
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(100)).await,
            }
        }
        let app = app.expect("hub restarts on its port");
        self.state = app.state().clone();
        let (tx, rx) = oneshot::channel::<()>();
        self.task = Some(tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        })));
        self.stop = Some(tx);
    }
}

/// A multipart/related body of DICOM parts.
pub fn multipart(parts: &[&[u8]], boundary: &str) -> Vec<u8> {
    let mut body = Vec::new();
    for p in parts {
        body.extend_from_slice(format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").as_bytes());
        body.extend_from_slice(p);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    body
}

/// Splits a multipart body into its parts' payloads.
pub fn split_multipart(content_type: &str, body: &[u8]) -> Vec<Vec<u8>> {
    let boundary =
        content_type.split(';').find_map(|p| p.trim().strip_prefix("boundary=")).expect("boundary").trim_matches('"').to_string();
    let delim = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut rest = body;
    while let Some(start) = find(rest, delim.as_bytes()) {
        rest = &rest[start + delim.len()..];
        if rest.starts_with(b"--") {
            break;
        }
        let Some(hdr_end) = find(rest, b"\r\n\r\n") else { break };
        let payload = &rest[hdr_end + 4..];
        let next = find(payload, format!("\r\n{delim}").as_bytes()).expect("next boundary");
        parts.push(payload[..next].to_vec());
        rest = &payload[next + 2..];
    }
    parts
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn stow(&self, parts: &[&[u8]]) -> (u16, serde_json::Value) {
        self.stow_to("/dicomweb/studies", parts).await
    }

    pub async fn stow_to(&self, path: &str, parts: &[&[u8]]) -> (u16, serde_json::Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
            .header(CONTENT_TYPE, "multipart/related; type=\"application/dicom\"; boundary=ferrytest")
            .body(multipart(parts, "ferrytest"))
            .send()
            .await
            .expect("stow");
        let status = resp.status().as_u16();
        let json = resp.json().await.unwrap_or(serde_json::Value::Null);
        (status, json)
    }

    pub async fn get(&self, path: &str, accept: &str) -> reqwest::Response {
        self.client.get(self.url(path)).header(AUTHORIZATION, format!("Bearer {TOKEN}")).header(ACCEPT, accept).send().await.expect("get")
    }

    pub async fn qido(&self, path_and_query: &str) -> Vec<serde_json::Value> {
        let resp = self.get(path_and_query, "application/dicom+json").await;
        assert_eq!(resp.status(), 200, "QIDO {path_and_query}");
        resp.json().await.expect("json")
    }

    /// Retrieves a study/series/instance and returns each instance's bytes.
    pub async fn retrieve(&self, path: &str) -> Vec<Vec<u8>> {
        let resp = self.get(path, "multipart/related; type=\"application/dicom\"; transfer-syntax=*").await;
        assert_eq!(resp.status(), 200, "retrieve {path}");
        let ct = resp.headers()[CONTENT_TYPE].to_str().expect("ct").to_string();
        let body = resp.bytes().await.expect("body");
        split_multipart(&ct, &body)
    }

    pub async fn study_count(&self) -> usize {
        self.qido("/dicomweb/studies").await.len()
    }

    pub async fn instance_count(&self) -> usize {
        self.qido("/dicomweb/instances").await.len()
    }
}

/// First string value of a DICOM JSON attribute.
pub fn json_str(obj: &serde_json::Value, tag: &str) -> Option<String> {
    let v = &obj[tag]["Value"][0];
    if let Some(s) = v.as_str() {
        return Some(s.to_string());
    }
    if let Some(a) = v.get("Alphabetic") {
        return a.as_str().map(str::to_string);
    }
    if v.is_number() {
        return Some(v.to_string());
    }
    None
}

/// The folder of pydicom's bundled test files (the test script installs pydicom).
pub fn pydicom_files() -> PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import os, pydicom.data; print(os.path.join(os.path.dirname(pydicom.data.__file__), 'test_files'))"])
        .output()
        .expect("python3 must be installed (run tests/run.sh)");
    assert!(out.status.success(), "pydicom must be installed (run tests/run.sh)");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

pub fn pydicom_file(name: &str) -> Vec<u8> {
    std::fs::read(pydicom_files().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// A synthetic DICOM instance (Secondary Capture, 16-bit, explicit VR LE) for tests.
pub struct Synth {
    pub study: String,
    pub series: String,
    pub sop: String,
    pub patient_name: String,
    pub patient_id: String,
    pub birth_date: String,
    pub study_date: String,
    pub modality: String,
    pub rows: u16,
    pub cols: u16,
    pub frames: u16,
}

impl Synth {
    pub fn new(study: &str, series: &str, sop: &str) -> Self {
        Self {
            study: study.into(),
            series: series.into(),
            sop: sop.into(),
            patient_name: "Mustermann^Erika".into(),
            patient_id: "PID-0001".into(),
            birth_date: "19700101".into(),
            study_date: "20240115".into(),
            modality: "CT".into(),
            rows: 16,
            cols: 16,
            frames: 1,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_without(None)
    }

    /// The file, optionally without one attribute (for malformed-input tests).
    pub fn bytes_without(&self, skip: Option<dicom_core::Tag>) -> Vec<u8> {
        let n = self.rows as usize * self.cols as usize * self.frames as usize;
        let pixels: Vec<u16> = (0..n).map(|i| (i * 37 % 4096) as u16).collect();
        let mut els = vec![
            DataElement::new(tags::SPECIFIC_CHARACTER_SET, VR::CS, PrimitiveValue::from("ISO_IR 192")),
            DataElement::new(tags::SOP_CLASS_UID, VR::UI, PrimitiveValue::from(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)),
            DataElement::new(tags::SOP_INSTANCE_UID, VR::UI, PrimitiveValue::from(self.sop.as_str())),
            DataElement::new(tags::STUDY_DATE, VR::DA, PrimitiveValue::from(self.study_date.as_str())),
            DataElement::new(tags::STUDY_TIME, VR::TM, PrimitiveValue::from("101500")),
            DataElement::new(tags::ACCESSION_NUMBER, VR::SH, PrimitiveValue::from("ACC1")),
            DataElement::new(tags::MODALITY, VR::CS, PrimitiveValue::from(self.modality.as_str())),
            DataElement::new(tags::STUDY_DESCRIPTION, VR::LO, PrimitiveValue::from("Thorax nativ")),
            DataElement::new(tags::PATIENT_NAME, VR::PN, PrimitiveValue::from(self.patient_name.as_str())),
            DataElement::new(tags::PATIENT_ID, VR::LO, PrimitiveValue::from(self.patient_id.as_str())),
            DataElement::new(tags::PATIENT_BIRTH_DATE, VR::DA, PrimitiveValue::from(self.birth_date.as_str())),
            DataElement::new(tags::PATIENT_SEX, VR::CS, PrimitiveValue::from("F")),
            DataElement::new(tags::STUDY_INSTANCE_UID, VR::UI, PrimitiveValue::from(self.study.as_str())),
            DataElement::new(tags::SERIES_INSTANCE_UID, VR::UI, PrimitiveValue::from(self.series.as_str())),
            DataElement::new(tags::SERIES_NUMBER, VR::IS, PrimitiveValue::from("1")),
            DataElement::new(tags::INSTANCE_NUMBER, VR::IS, PrimitiveValue::from("1")),
            DataElement::new(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16)),
            DataElement::new(tags::PHOTOMETRIC_INTERPRETATION, VR::CS, PrimitiveValue::from("MONOCHROME2")),
            DataElement::new(tags::NUMBER_OF_FRAMES, VR::IS, PrimitiveValue::from(self.frames.to_string())),
            DataElement::new(tags::ROWS, VR::US, PrimitiveValue::from(self.rows)),
            DataElement::new(tags::COLUMNS, VR::US, PrimitiveValue::from(self.cols)),
            DataElement::new(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16)),
            DataElement::new(tags::BITS_STORED, VR::US, PrimitiveValue::from(12u16)),
            DataElement::new(tags::HIGH_BIT, VR::US, PrimitiveValue::from(11u16)),
            DataElement::new(tags::PIXEL_REPRESENTATION, VR::US, PrimitiveValue::from(0u16)),
            DataElement::new(tags::PIXEL_DATA, VR::OW, PrimitiveValue::U16(pixels.into())),
        ];
        if let Some(t) = skip {
            els.retain(|e| e.header().tag != t);
        }
        let obj = InMemDicomObject::from_element_iter(els);
        let file = obj
            .with_meta(
                FileMetaTableBuilder::new()
                    .transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN)
                    .media_storage_sop_class_uid(uids::SECONDARY_CAPTURE_IMAGE_STORAGE)
                    .media_storage_sop_instance_uid(self.sop.as_str()),
            )
            .expect("meta");
        let mut out = Vec::new();
        file.write_all(&mut out).expect("write");
        out
    }
}

/// The data set of a Part-10 file: what follows the file meta group (over DIMSE only the data set
/// travels; the receiver writes its own meta group).
pub fn dataset(file: &[u8]) -> &[u8] {
    assert_eq!(&file[128..132], b"DICM");
    let group_len = u32::from_le_bytes(file[140..144].try_into().expect("4 bytes")) as usize;
    &file[144 + group_len..]
}

/// A unique UID for a test object.
pub fn uid() -> String {
    let u = uuid::Uuid::new_v4().as_u128();
    format!("2.25.{u}")
}

/// The `ferry-hub` binary next to the test executable (tests/run.sh builds it first).
pub fn hub_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("exe");
    let bin = exe.ancestors().nth(2).expect("target dir").join("ferry-hub");
    assert!(bin.exists(), "{} missing: build the workspace first (tests/run.sh does)", bin.display());
    bin
}

/// Runs `ferry-hub ARGS --data-dir DIR` on a database, with extra environment variables;
/// returns whether it succeeded and what it printed (stdout, then stderr).
pub fn hub_cli(database_url: &str, data_dir: &std::path::Path, env: &[(&str, &str)], args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(hub_binary())
        .env("FERRY_DATABASE__URL", database_url)
        .envs(env.iter().copied())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("ferry-hub");
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Starts the hub binary with `cmd`'s arguments and waits for the line announcing its URL.
pub async fn spawn_hub_process(mut cmd: std::process::Command) -> (std::process::Child, String) {
    use std::io::BufRead;
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().expect("spawn hub");
    let stdout = child.stdout.take().expect("stdout");
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line).expect("read");
        line
    })
    .await
    .expect("line");
    let url = line.trim().strip_prefix("Ferry hub listening on ").expect("prints its URL").to_string();
    (child, url)
}
