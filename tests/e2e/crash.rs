//! Crash safety: a hub killed with SIGKILL in the middle of an upload keeps every instance it had
//! indexed, shows nothing of the interrupted one, and sweeps its blob after the restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::helpers::*;
use crate::hostile::blob_files_in;

async fn start_hub(dir: &std::path::Path, sweep_now: bool) -> (Child, String) {
    let mut cmd = Command::new(hub_binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir)
        .env("FERRY_AUTH__ADMIN_TOKEN", TOKEN)
        .env("FERRY_LOG__FILTER", "warn")
        .stderr(Stdio::null());
    if let Ok(url) = std::env::var("TEST_DATABASE_URL") {
        // Both runs of the hub share one fresh database.
        std::fs::create_dir_all(dir).expect("data dir");
        let db = std::fs::read_to_string(dir.join("db-url")).unwrap_or_else(|_| {
            let name = format!("ferry_crash_{}", uuid::Uuid::new_v4().simple());
            let admin = url.clone();
            let created = std::process::Command::new("psql")
                .args([admin.as_str(), "-qc", &format!("CREATE DATABASE {name}")])
                .status()
                .expect("psql");
            assert!(created.success());
            let u = format!("{}/{name}", url.rsplit_once('/').expect("url").0);
            std::fs::write(dir.join("db-url"), &u).expect("write");
            u
        });
        cmd.env("FERRY_DATABASE__URL", db);
    }
    if sweep_now {
        cmd.env("FERRY_SWEEP__ORPHAN_AGE_SECS", "0").env("FERRY_SWEEP__INTERVAL_SECS", "1");
    } else {
        cmd.env("FERRY_SWEEP__INTERVAL_SECS", "3600");
    }
    spawn_hub_process(cmd).await
}

async fn instance_count(client: &reqwest::Client, url: &str) -> usize {
    let r = client.get(format!("{url}/dicomweb/instances")).bearer_auth(TOKEN).send().await.expect("qido");
    r.json::<Vec<serde_json::Value>>().await.expect("json").len()
}

#[tokio::test]
async fn a_hub_killed_mid_upload_keeps_what_was_stored_and_sweeps_the_rest() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tmp");
    let data = dir.path().join("data");
    let (mut hub, url) = start_hub(&data, false).await;
    let client = reqwest::Client::new();
    let complete = Synth::new(&uid(), &uid(), &uid());
    let mut big = Synth::new(&uid(), &uid(), &uid());
    big.rows = 1024;
    big.cols = 1024;
    big.frames = 10; // 20 MiB: its blob goes through a multipart upload
    let (complete_bytes, big_bytes) = (complete.bytes(), big.bytes());
    let body = multipart(&[&complete_bytes, &big_bytes], "ferrytest");
    let addr = url.strip_prefix("http://").expect("addr").to_string();
    let mut sock = tokio::net::TcpStream::connect(&addr).await.expect("connect");
    let head = format!(
        "POST /dicomweb/studies HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Type: multipart/related; type=\"application/dicom\"; boundary=ferrytest\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("head");
    let cut = complete_bytes.len() + (12 << 20);
    sock.write_all(&body[..cut]).await.expect("part of the body");
    sock.flush().await.expect("flush");
    // The first instance gets indexed while the second is still arriving.
    let mut visible = 0;
    for _ in 0..100 {
        visible = instance_count(&client, &url).await;
        if visible == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(visible, 1, "the complete instance is stored before the crash");
    // Wait until the interrupted instance's blob upload has begun (its staging file exists).
    let mut before = 0;
    for _ in 0..100 {
        before = blob_files_in(&data.join("blobs")).len();
        if before >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(before >= 2, "the interrupted upload left a partial blob ({before} files)");
    hub.kill().expect("SIGKILL");
    hub.wait().expect("wait");
    drop(sock);

    let (mut hub, url) = start_hub(&data, true).await;
    assert_eq!(instance_count(&client, &url).await, 1, "nothing of the interrupted instance is visible");
    let r = client
        .get(format!("{url}/dicomweb/studies/{}", complete.study))
        .bearer_auth(TOKEN)
        .header("Accept", "multipart/related; type=\"application/dicom\"")
        .send()
        .await
        .expect("retrieve");
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    assert_eq!(split_multipart(&ct, &r.bytes().await.expect("body")), vec![complete_bytes]);
    let mut left = usize::MAX;
    for _ in 0..100 {
        left = blob_files_in(&data.join("blobs")).len();
        if left == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 1, "the orphaned blob and its staging file are swept");
    let r = client.get(format!("{url}/dicomweb/studies/{}", big.study)).bearer_auth(TOKEN).send().await.expect("get");
    assert_eq!(r.status(), 404);
    let _ = hub.kill();
    let _ = hub.wait();
}
