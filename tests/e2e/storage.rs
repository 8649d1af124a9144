//! Encryption at rest, crypto-shredding, orphan sweeping.

use crate::fixtures::blobs::blob_files;
use crate::fixtures::*;

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn no_plaintext_reaches_the_blob_store() {
    let app = spawn_app().await;
    let mut s = Synth::new(&uid(), &uid(), &uid());
    s.patient_name = "Geheimnisvoll^Henriette".into();
    s.patient_id = "SECRET-PID-4711".into();
    s.rows = 300;
    s.cols = 300; // spans several encryption chunks
    let ct = pydicom_file("CT_small.dcm");
    assert_eq!(app.stow(&[&s.bytes(), &ct]).await.0, 200);
    let files = blob_files(&app);
    assert_eq!(files.len(), 2);
    for f in files {
        let data = std::fs::read(&f).expect("blob");
        for needle in [&b"DICM"[..], b"Geheimnisvoll", b"Henriette", b"SECRET-PID-4711", b"CompressedSamples", b"1.2.840.10008"] {
            assert!(!contains(&data, needle), "{} contains {:?}", f.display(), String::from_utf8_lossy(needle));
        }
    }
}

#[tokio::test]
async fn shredding_a_study_key_makes_its_blobs_unreadable() {
    let app = spawn_app().await;
    let (study, series, sop) = (uid(), uid(), uid());
    let keep = Synth::new(&uid(), &uid(), &uid());
    assert_eq!(app.stow(&[&Synth::new(&study, &series, &sop).bytes(), &keep.bytes()]).await.0, 200);
    let path = format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}");
    assert_eq!(app.get(&path, "*/*").await.status(), 200);
    // The operator's STOW-RS writes rows of origin `hub`; their data key is `hub|<study>`.
    let key_id = format!("hub|{study}");
    assert!(app.state.keys.shred_study(&app.state.db, &key_id).await.expect("shred"));
    let r = app.get(&path, "*/*").await;
    assert_eq!(r.status(), 410, "a shredded study is gone");
    assert_eq!(app.get(&format!("{path}/rendered"), "image/png").await.status(), 410);
    // The wrapped blob key cannot be opened any more, by any means the hub has.
    let wrapped: String = sqlx::query_scalar("SELECT blob_key FROM instances WHERE sop_instance_uid = $1")
        .bind(&sop)
        .fetch_one(&app.state.db)
        .await
        .expect("row");
    assert!(app.state.keys.blob_key(&app.state.db, &key_id, &wrapped).await.is_err());
    // Other studies are untouched.
    assert_eq!(app.retrieve(&format!("/dicomweb/studies/{}", keep.study)).await[0], keep.bytes());
}

#[tokio::test]
async fn orphaned_blobs_are_swept() {
    let app = spawn_app().await;
    assert_eq!(app.stow(&[&Synth::new(&uid(), &uid(), &uid()).bytes()]).await.0, 200);
    // Simulate an upload that died after writing its blob.
    let key = ferry_hub::storage::crypto::Key::random();
    let mut w = app.state.blobs.writer("instances/orphan", &key);
    w.write(b"half an upload").await.expect("write");
    w.finish().await.expect("finish");
    sqlx::query("INSERT INTO pending_blobs (blob_path, created_at) VALUES ('instances/orphan', 0)")
        .execute(&app.state.db)
        .await
        .expect("pending");
    assert_eq!(blob_files(&app).len(), 2);
    let removed = ferry_hub::storage::sweep::sweep_orphans(&app.state.db, &app.state.blobs, 60_000).await.expect("sweep");
    assert_eq!(removed, 1);
    assert_eq!(blob_files(&app).len(), 1);
    assert_eq!(app.instance_count().await, 1);
    // A fresh pending upload is left alone.
    sqlx::query("INSERT INTO pending_blobs (blob_path, created_at) VALUES ('instances/young', $1)")
        .bind(ferry_hub::db::now_ms())
        .execute(&app.state.db)
        .await
        .expect("pending");
    assert_eq!(ferry_hub::storage::sweep::sweep_orphans(&app.state.db, &app.state.blobs, 60_000).await.expect("sweep"), 0);
}

#[tokio::test]
async fn large_instances_stream_through_and_ranges_decrypt_exactly() {
    let app = spawn_app().await;
    let mut s = Synth::new(&uid(), &uid(), &uid());
    s.rows = 1024;
    s.cols = 1024;
    s.frames = 6; // 12 MiB: multipart upload path, many chunks
    let file = s.bytes();
    assert_eq!(app.stow(&[&file]).await.0, 200);
    let back = app.retrieve(&format!("/dicomweb/studies/{}", s.study)).await;
    assert!(back[0] == file);
    // A study retrieve groups small instances and pieces of large ones for reading: a mix of
    // sizes in one series comes back whole and in order.
    let series = uid();
    let mut mixed = Vec::new();
    for (i, (rows, frames)) in [(64u16, 1u16), (1024, 3), (64, 1), (64, 1), (700, 5), (512, 1)].into_iter().enumerate() {
        let mut m = Synth::new(&s.study, &series, &uid());
        (m.rows, m.cols, m.frames) = (rows, rows, frames);
        m.patient_id = format!("PID-{i}");
        mixed.push((m.sop.clone(), m.bytes()));
    }
    let parts: Vec<&[u8]> = mixed.iter().map(|(_, b)| b.as_slice()).collect();
    assert_eq!(app.stow(&parts).await.0, 200);
    let back = app.retrieve(&format!("/dicomweb/studies/{}/series/{series}", s.study)).await;
    let mut want: Vec<&Vec<u8>> = mixed.iter().map(|(_, b)| b).collect();
    let mut got: Vec<&Vec<u8>> = back.iter().collect();
    want.sort();
    got.sort();
    assert!(got == want, "every instance whole");
    let frame = 1024 * 1024 * 2;
    let start = file.len() - 6 * frame;
    let r = app
        .get(
            &format!("/dicomweb/studies/{}/series/{}/instances/{}/frames/4", s.study, s.series, s.sop),
            "multipart/related; type=application/octet-stream",
        )
        .await;
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    let parts = split_multipart(&ct, &r.bytes().await.expect("body"));
    assert!(parts[0] == file[start + 3 * frame..start + 4 * frame]);
}

fn keys_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    hub_cli(&app.database_url, app.dir.path(), &[], &[&["keys"], args].concat())
}

/// `ferry-hub keys rotate` while the hub runs: every study key is re-wrapped by a new KEK (the
/// blobs untouched), the running hub keeps reading and wraps new studies with the new key, and
/// after the old key file is deleted and the hub restarted everything is still readable.
#[tokio::test]
async fn the_kek_rotates_while_the_hub_runs_and_the_old_key_is_not_needed_after() {
    let mut app = spawn_app().await;
    let files: Vec<(String, String, String, Vec<u8>)> = (0..2)
        .map(|_| {
            let (st, se, sop) = (uid(), uid(), uid());
            let b = Synth::new(&st, &se, &sop).bytes();
            (st, se, sop, b)
        })
        .collect();
    for f in &files {
        assert_eq!(app.stow(&[&f.3]).await.0, 200);
    }
    let blobs_before: Vec<Vec<u8>> = blob_files(&app).iter().map(|p| std::fs::read(p).unwrap()).collect();
    let kek = app.dir.path().join("keys").join("kek.hex");
    let old = std::fs::read_to_string(&kek).unwrap();

    let (ok, out) = keys_cli(&app, &["rotate"]);
    assert!(ok && out.contains("re-wrapped 2 study key(s)"), "{out}");
    let new = std::fs::read_to_string(&kek).unwrap();
    assert_ne!(old.trim(), new.trim());
    let retired: Vec<std::path::PathBuf> = std::fs::read_dir(kek.parent().unwrap())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.to_string_lossy().contains("kek.hex.retired-"))
        .collect();
    assert_eq!(retired.len(), 1);
    assert_eq!(std::fs::read_to_string(&retired[0]).unwrap(), old);
    let blobs_after: Vec<Vec<u8>> = blob_files(&app).iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert_eq!(blobs_before, blobs_after, "the images were not touched");

    let read = |f: &(String, String, String, Vec<u8>)| format!("/dicomweb/studies/{}/series/{}/instances/{}", f.0, f.1, f.2);
    for f in &files {
        assert_eq!(app.retrieve(&read(f)).await, vec![f.3.clone()], "the running hub reads what was re-wrapped");
    }
    // A study stored now is wrapped by the new key.
    let (st, se, sop) = (uid(), uid(), uid());
    let third = Synth::new(&st, &se, &sop).bytes();
    assert_eq!(app.stow(&[&third]).await.0, 200);
    let ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT kek_id FROM study_keys").fetch_all(&app.state.db).await.unwrap();
    assert_eq!(ids.len(), 1, "every study key under one KEK: {ids:?}");
    let (ok, out) = keys_cli(&app, &["status"]);
    assert!(ok && out.contains("3 study key(s) wrapped by") && out.contains("(current)"), "{out}");

    // The old key goes; after a restart everything is readable.
    std::fs::remove_file(&retired[0]).unwrap();
    app.crash_and_restart().await;
    for f in &files {
        assert_eq!(app.retrieve(&read(f)).await, vec![f.3.clone()]);
    }
    assert_eq!(app.retrieve(&format!("/dicomweb/studies/{st}/series/{se}/instances/{sop}")).await, vec![third]);
}
