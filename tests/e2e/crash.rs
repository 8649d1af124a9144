//! Crash safety: a hub killed with SIGKILL in the middle of an upload keeps every instance it had
//! indexed, shows nothing of the interrupted one, and sweeps its blob after the restart.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::fixtures::blobs::blob_files_in;
use crate::fixtures::*;

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

/// PostgreSQL crashes and comes back while clients store and search: requests in between fail
/// cleanly (503 with problem+json and Retry-After, or a STOW-RS answer naming each failed
/// instance), none hangs, the hub reconnects by itself, and every instance it reported stored is
/// there byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_load_fails_requests_cleanly_and_the_hub_recovers() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let pg = crate::fixtures::peers::Postgres::start();
    // Requests wait up to 2 s for a connection (instead of 15): the 3-second outage below
    // outlasts that, so requests fail (503) instead of only being delayed.
    let app = spawn_app_at(tempfile::tempdir().unwrap(), Some(pg.url.clone()), |c| {
        c.database.max_connections = Some(8);
        c.database.acquire_timeout_secs = Some(2);
    })
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    type Stored = Vec<(String, Vec<u8>)>;
    let stored: Arc<Mutex<Stored>> = Arc::default();
    let seen: Arc<Mutex<Vec<(String, u16, String)>>> = Arc::default();
    let mut workers = Vec::new();
    for _ in 0..4 {
        let (stop, stored, seen, base) = (stop.clone(), stored.clone(), seen.clone(), app.base.clone());
        workers.push(tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(40)).build().unwrap();
            while !stop.load(Ordering::Relaxed) {
                let mut s = Synth::new(&uid(), &uid(), &uid());
                s.rows = 32;
                s.cols = 32;
                let bytes = s.bytes();
                let b = "ferry-load";
                let r = client
                    .post(format!("{base}/dicomweb/studies"))
                    .bearer_auth(TOKEN)
                    .header("content-type", format!("multipart/related; type=\"application/dicom\"; boundary={b}"))
                    .body(multipart(&[&bytes], b))
                    .send()
                    .await
                    .expect("STOW-RS answers (no hang, no dropped connection)");
                let (status, ct) =
                    (r.status().as_u16(), r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default());
                if status == 200 {
                    stored.lock().unwrap().push((format!("/dicomweb/studies/{}/series/{}/instances/{}", s.study, s.series, s.sop), bytes));
                }
                seen.lock().unwrap().push(("stow".into(), status, ct));
                let r = client.get(format!("{base}/dicomweb/studies?limit=5")).bearer_auth(TOKEN).send().await.expect("QIDO-RS answers");
                let (status, ct) =
                    (r.status().as_u16(), r.headers().get("content-type").map(|v| v.to_str().unwrap().to_string()).unwrap_or_default());
                let retry = r.headers().get("retry-after").is_some();
                seen.lock().unwrap().push((format!("qido{}", if retry { "+retry" } else { "" }), status, ct));
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let before = seen.lock().unwrap().len();
    pg.stop();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = seen.lock().unwrap().len();
    pg.start_again();
    // The hub reconnects by itself: requests succeed again within a few seconds.
    let restarted = std::time::Instant::now();
    loop {
        let n = seen.lock().unwrap().len();
        let last_ok = seen.lock().unwrap()[during..].iter().rev().take(8).filter(|(_, s, _)| *s == 200).count();
        if n > during + 8 && last_ok == 8 {
            break;
        }
        assert!(restarted.elapsed() < Duration::from_secs(30), "the hub did not recover: {:?}", &seen.lock().unwrap()[during..]);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let seen = seen.lock().unwrap().clone();
    assert!(seen[..before].iter().all(|(_, s, _)| *s == 200), "all well before the crash");
    let failed: Vec<&(String, u16, String)> = seen.iter().filter(|(_, s, _)| *s != 200).collect();
    assert!(!failed.is_empty(), "the outage was noticed");
    for (kind, status, ct) in &failed {
        match (kind.as_str(), status) {
            ("qido+retry", 503) => assert!(ct.starts_with("application/problem+json"), "{ct}"),
            ("stow", 503) => assert!(ct.starts_with("application/problem+json"), "{ct}"),
            ("stow", 409) => assert!(ct.starts_with("application/dicom+json"), "{ct}"),
            other => panic!("not a clean failure: {other:?} {ct}"),
        }
    }
    let stored = stored.lock().unwrap().clone();
    assert!(stored.len() > 10, "{}", stored.len());
    for (path, bytes) in &stored {
        assert_eq!(&app.retrieve(path).await, &vec![bytes.clone()], "an instance reported stored is there");
    }
    println!("{} requests, {} failed cleanly during the outage ({failed:?}); {} instances stored", seen.len(), failed.len(), stored.len());
}
