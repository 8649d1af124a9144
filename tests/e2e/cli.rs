//! The `ferry-hub` binary as a newcomer runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::fixtures::{hub_binary, spawn_hub_process};

#[tokio::test]
async fn serve_starts_with_no_config_prints_its_url_and_stops_on_sigterm() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tmp");
    let mut cmd = Command::new(hub_binary());
    cmd.current_dir(dir.path())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir", "data"])
        .env_remove("RUST_LOG")
        .stderr(Stdio::null());
    let (mut child, url) = spawn_hub_process(cmd).await;
    let health: serde_json::Value = reqwest::get(format!("{url}/healthz")).await.expect("healthz").json().await.expect("json");
    assert_eq!(health["status"], "ok");
    assert_eq!(reqwest::get(format!("{url}/readyz")).await.expect("readyz").status(), 200);
    assert!(dir.path().join("data/ferry.db").exists(), "SQLite under the data dir");
    assert!(dir.path().join("data/keys/kek.hex").exists(), "key file created");
    let st = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(st.success());
    let mut waited = 0;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait") {
            break s;
        }
        assert!(waited < 100, "hub did not stop on SIGTERM");
        tokio::time::sleep(Duration::from_millis(100)).await;
        waited += 1;
    };
    assert!(status.success(), "graceful shutdown exits 0");
}

#[tokio::test]
async fn bad_configuration_is_explained() {
    let dir = tempfile::tempdir().expect("tmp");
    let out = Command::new(hub_binary()).current_dir(dir.path()).args(["--config", "missing.toml", "serve"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
    std::fs::write(dir.path().join("ferry-hub.toml"), "listen = \"not an address\"\n").expect("write");
    let out = Command::new(hub_binary()).current_dir(dir.path()).arg("serve").output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("listen"), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_file(dir.path().join("ferry-hub.toml")).expect("rm");
    let out = Command::new(hub_binary())
        .current_dir(dir.path())
        .env("FERRY_DATABASE__URL", "mysql://nope")
        .args(["serve", "--listen", "127.0.0.1:0"])
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unsupported database URL"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn connector_check_reports_a_healthy_hub_and_explains_an_unreachable_one() {
    let app = crate::fixtures::spawn_app().await;
    let bin = hub_binary().with_file_name("ferry-connector");
    let base = app.base.clone();
    let out =
        tokio::task::spawn_blocking(move || Command::new(&bin).args(["check", "--hub", &base]).output().expect("run")).await.expect("join");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("hub OK"));
    let closed = crate::fixtures::peers::free_port();
    let bin = hub_binary().with_file_name("ferry-connector");
    let out = Command::new(&bin).args(["check", "--hub", &format!("http://127.0.0.1:{closed}")]).output().expect("run");
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the hub"), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn connector_send_uploads_a_folder_with_progress_and_explains_mistakes() {
    let app = crate::fixtures::spawn_app().await;
    app.community("CLI Clinic", "cLi9", "Homburg").await;
    let p = app.person("cli@example.test", "Dr. CLI").await;
    let folder = tempfile::tempdir().unwrap();
    let cd = folder.path().join("CD");
    std::fs::create_dir_all(cd.join("DICOM")).unwrap();
    let (st, se) = (crate::fixtures::uid(), crate::fixtures::uid());
    for i in 0..3 {
        std::fs::write(cd.join("DICOM").join(format!("I{i}")), crate::fixtures::Synth::new(&st, &se, &crate::fixtures::uid()).bytes())
            .unwrap();
    }
    std::fs::write(cd.join("README.TXT"), "hello").unwrap();
    std::fs::write(cd.join(".DS_Store"), "junk").unwrap();
    let bin = hub_binary().with_file_name("ferry-connector");
    let (base, token, cdp) = (app.base.clone(), p.token.clone(), cd.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&bin)
            .args(["send", "--hub", &base, "--community", "cLi9", "--note", "Bitte Befund", "--urgent"])
            .arg(&cdp)
            .env("FERRY_TOKEN", &token)
            .output()
            .expect("run")
    })
    .await
    .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("sent transfer") && stdout.contains("(3 images)"), "{stdout}");
    assert!(stderr.contains("100%"), "progress: {stderr}");
    let list: Vec<ferry_schemas::Transfer> = p.get(&app, "/api/v1/transfers").send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0].state, ferry_schemas::TransferState::Sent);
    assert_eq!(list[0].urgency, ferry_schemas::Urgency::Urgent);
    assert_eq!(list[0].reason, "Bitte Befund");

    let bin = hub_binary().with_file_name("ferry-connector");
    let (base, token) = (app.base.clone(), p.token.clone());
    let out = tokio::task::spawn_blocking(move || {
        Command::new(&bin).args(["send", "--hub", &base, "--community", "nope", "--token", &token]).arg(&cd).output().expect("run")
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no community with the code nope"), "{}", String::from_utf8_lossy(&out.stderr));
}
