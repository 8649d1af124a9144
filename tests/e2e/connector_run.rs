//! `ferry-connector run` as a clinic runs it, against the real hub and real PACS peers: Orthanc
//! by DIMSE C-STORE and by STOW-RS, dcmtk `storescp` as a second PACS, dcmtk `wlmscpfs` as the
//! worklist for import reconciliation; and the faults a site sees (hub restart mid-download,
//! `kill -9` of the connector mid-store, a PACS that is down for a while).

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dicom_dictionary_std::tags;
use ferry_schemas::TransferState;
use serde_json::{Value, json};
use sha2::Digest;

use crate::fixtures::peers::{Dcmtk, Orthanc, free_port};
use crate::fixtures::site::*;
use crate::fixtures::*;

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// C-STORE into Orthanc (two associations) and dcmtk storescp at once: every instance arrives
/// with the bytes sent, the hub hears "stored"; `check` and `status` speak plainly; a transfer
/// storescp cannot take (JPEG, which it does not accept by default) fails with the PACS's answer.
#[tokio::test]
async fn the_connector_stores_by_c_store_into_orthanc_and_storescp() {
    let app = spawn_app().await;
    app.community("Radiologie Keller", "kLr1", "Homburg").await;
    let referrer = app.person("cstore.ref@example.test", "Dr. Store").await;
    let creds = app.connector("kLr1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let storescp = Dcmtk::storescp().await;
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "{}{}[inbound]\nmax_attempts = 1\nretry_max_secs = 1\n",
            dimse("orthanc", orthanc.dicom, "ORTHANC", "associations = 2"),
            dimse("storescp", storescp.port, "STORESCP", "")
        ),
    );

    let out = site.cmd(&["check"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    for want in
        ["OK   hub", "OK   hub accepts the connector's credentials", "OK   PACS \"orthanc\": C-ECHO", "OK   PACS \"storescp\": C-ECHO"]
    {
        assert!(text.contains(want), "{want:?} missing in:\n{text}");
    }

    let (st, se) = (uid(), uid());
    let files: Vec<Vec<u8>> = (0..6).map(|_| Synth::new(&st, &se, &uid()).bytes()).collect();
    let named: Vec<(String, Vec<u8>)> = files.iter().enumerate().map(|(i, b)| (format!("f{i}.dcm"), b.clone())).collect();
    let refs: Vec<(&str, Vec<u8>)> = named.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let t = app.send_transfer(&referrer, "kLr1", &refs).await;
    let id = t["id"].as_str().unwrap().to_string();

    let out = site.cmd(&["run", "--once"]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(transfer(&app, &referrer, &id).await.state, TransferState::Stored);
    let mut want_ds: Vec<String> = files.iter().map(|b| sha(dataset(b))).collect();
    want_ds.sort();
    let mut got: Vec<String> = orthanc.stored().await.into_values().collect();
    got.sort();
    assert_eq!(got, want_ds, "Orthanc holds exactly the data sets sent");
    let mut got_ds: Vec<String> = storescp.received().iter().map(|p| sha(dataset(&std::fs::read(p).unwrap()))).collect();
    got_ds.sort();
    assert_eq!(got_ds, want_ds, "storescp received the data sets unchanged");

    // A JPEG image: Orthanc takes it as it is; storescp accepts no JPEG, so the transfer fails
    // with what the PACS said, and the sender sees it.
    let jpeg = pydicom_file("SC_rgb_jpeg_dcmtk.dcm");
    let t2 = app.send_transfer(&referrer, "kLr1", &[("jpeg.dcm", jpeg.clone())]).await;
    let id2 = t2["id"].as_str().unwrap().to_string();
    let out = site.cmd(&["run", "--once"]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    let seen = transfer(&app, &referrer, &id2).await;
    assert_eq!(seen.state, TransferState::Failed, "{seen:?}");
    let msg = &seen.state_message;
    assert!(msg.contains("storescp") && msg.contains("accepts none of the SOP classes") && msg.contains("0 of 1"), "{msg}");
    assert!(orthanc.stored().await.values().any(|h| *h == sha(dataset(&jpeg))), "Orthanc got the JPEG byte-identical");

    let out = site.cmd(&["status"]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("transfers stored: 1") && text.contains("transfers failed: 1"), "{text}");

    // check names what is wrong: a PACS port where nothing listens, and a wrong secret.
    let broken = Site::new(&app, &(creds.0.clone(), "fcs_wrong".into()), &dimse("gone", free_port(), "NOBODY", ""));
    let out = broken.cmd(&["check"]).await;
    let text = stdout(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("FAIL credentials: the hub refused the connector's credentials"), "{text}");
    assert!(
        text.contains("FAIL PACS \"gone\": cannot open a DICOM association with NOBODY@127.0.0.1")
            && text.contains("nothing answers there"),
        "{text}"
    );
    // A configuration that cannot work is refused with the reason.
    std::fs::write(&broken.config, "[hub]\nurl = \"ftp://x\"\n").unwrap();
    let out = broken.cmd(&["run", "--once"]).await;
    assert!(!out.status.success() && stdout(&out).contains("hub.url must be the hub's http(s) URL"), "{}", stdout(&out));
}

/// Import reconciliation against a real worklist (dcmtk wlmscpfs): the patient found in the
/// worklist gets the clinic's Patient ID, issuer and accession number, the sender's ID is kept in
/// OtherPatientIDsSequence; a patient not in the worklist gets the prefix. UIDs, pixel data and
/// every other attribute arrive unchanged. Stored through Orthanc's STOW-RS.
#[tokio::test]
async fn the_connector_reconciles_patient_ids_from_the_worklist() {
    let app = spawn_app().await;
    app.community("Klinikum Rec", "rEc1", "Saarbrücken").await;
    let referrer = app.person("rec.ref@example.test", "Dr. Rec").await;
    let creds = app.connector("rEc1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let worklist = Dcmtk::worklist(&[("Mustermann^Erika", "19700101", "KL-4711", "KLINIKUM", "A2026-99")]).await;
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "[[pacs]]\nname = \"orthanc\"\nkind = \"dicomweb\"\nurl = {:?}\n\n{}[inbound]\ntargets = [\"orthanc\"]\n\n[inbound.reconcile]\npatient_id = \"worklist\"\nworklist = \"mwl\"\nunmatched = \"prefix\"\nprefix = \"EXT-\"\nissuer = \"KLINIKUM\"\naccession = \"worklist\"\n",
            orthanc.url("/dicom-web"),
            dimse("mwl", worklist.port, "WORKLIST", "")
        ),
    );
    let (st1, se1, st2, se2) = (uid(), uid(), uid(), uid());
    let known: Vec<Vec<u8>> = (0..2).map(|_| Synth::new(&st1, &se1, &uid()).bytes()).collect();
    let mut s = Synth::new(&st2, &se2, &uid());
    s.patient_name = "Musterfrau^Anna".into();
    s.patient_id = "PID-0002".into();
    let unknown = s.bytes();
    let t =
        app.send_transfer(&referrer, "rEc1", &[("a.dcm", known[0].clone()), ("b.dcm", known[1].clone()), ("c.dcm", unknown.clone())]).await;
    let id = t["id"].as_str().unwrap().to_string();
    let out = site.cmd(&["run", "--once"]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(transfer(&app, &referrer, &id).await.state, TransferState::Stored);

    let client = reqwest::Client::new();
    let ids: Vec<String> = client.get(orthanc.url("/instances")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids.len(), 3);
    let reconciled = [tags::PATIENT_ID, tags::ISSUER_OF_PATIENT_ID, tags::OTHER_PATIENT_I_DS_SEQUENCE, tags::ACCESSION_NUMBER];
    for oid in ids {
        let bytes = client.get(orthanc.url(&format!("/instances/{oid}/file"))).send().await.unwrap().bytes().await.unwrap();
        let got = dicom_object::from_reader(&bytes[128..]).unwrap();
        let sop = got.element(tags::SOP_INSTANCE_UID).unwrap().to_str().unwrap().trim_end_matches('\0').to_string();
        let original =
            [&known[0], &known[1], &unknown].into_iter().find(|b| b.windows(sop.len()).any(|w| w == sop.as_bytes())).expect("sent");
        let sent = dicom_object::from_reader(&original[128..]).unwrap();
        let text = |tag| got.element(tag).map(|e| e.to_str().unwrap().trim().to_string()).unwrap_or_default();
        let other = got.element(tags::OTHER_PATIENT_I_DS_SEQUENCE).unwrap().items().unwrap()[0]
            .element(tags::PATIENT_ID)
            .unwrap()
            .to_str()
            .unwrap()
            .trim()
            .to_string();
        if text(tags::PATIENT_NAME) == "Mustermann^Erika" {
            assert_eq!(text(tags::PATIENT_ID), "KL-4711");
            assert_eq!(text(tags::ISSUER_OF_PATIENT_ID), "KLINIKUM");
            assert_eq!(text(tags::ACCESSION_NUMBER), "A2026-99");
            assert_eq!(other, "PID-0001");
        } else {
            assert_eq!(text(tags::PATIENT_ID), "EXT-PID-0002");
            assert_eq!(text(tags::ISSUER_OF_PATIENT_ID), "KLINIKUM");
            assert_eq!(text(tags::ACCESSION_NUMBER), "ACC1", "no worklist match: the accession number stays");
            assert_eq!(other, "PID-0002");
        }
        // Everything else is as sent: UIDs, pixel data, every other attribute.
        let rest = |o: &dicom_object::DefaultDicomObject| -> Vec<_> {
            o.iter().filter(|e| !reconciled.contains(&e.header().tag)).cloned().collect()
        };
        assert_eq!(rest(&got), rest(&sent), "only the reconciled attributes changed");
    }
}

/// The faults of a site: the hub is killed and restarted while the connector downloads, the
/// connector is killed with SIGKILL while it stores, and the PACS is down for a while when it
/// comes back. In the end every instance is in the PACS exactly once and byte-identical, and the
/// sender sees "stored".
#[tokio::test]
async fn every_instance_arrives_once_through_hub_restart_connector_kill_and_pacs_outage() {
    let mut app = spawn_app().await;
    app.community("Klinik Fault", "fLt1", "Homburg").await;
    let referrer = app.person("fault.ref@example.test", "Dr. Fault").await;
    let creds = app.connector("fLt1").await;
    let mut orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let site = Site::new(
        &app,
        &creds,
        &format!("{}[inbound]\nretry_max_secs = 1\n", dimse("orthanc", orthanc.dicom, "ORTHANC", "associations = 2")),
    );

    const N: usize = 300;
    let (st, se) = (uid(), uid());
    let files: Vec<Vec<u8>> = (0..N)
        .map(|_| {
            let mut s = Synth::new(&st, &se, &uid());
            s.rows = 256;
            s.cols = 256;
            s.bytes()
        })
        .collect();
    let id = {
        let t = app.open_transfer(&referrer, "fLt1", "Verlaufskontrolle").await;
        let id = t["id"].as_str().unwrap().to_string();
        for chunk in files.chunks(50) {
            let named: Vec<(String, Vec<u8>)> = chunk.iter().enumerate().map(|(i, b)| (format!("{i}.dcm"), b.clone())).collect();
            let refs: Vec<(&str, Vec<u8>)> = named.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
            assert!(app.upload_files(&referrer, &id, &refs).await.status().is_success());
        }
        let r = referrer.post(&app, &format!("/api/v1/transfers/{id}/send")).json(&json!({})).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        id
    };

    // 1. The hub dies while the connector downloads, and comes back.
    let mut child = site.spawn();
    let t0 = Instant::now();
    while site.spooled() == 0 {
        assert!(t0.elapsed() < Duration::from_secs(60), "the connector never started downloading");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let at_crash = site.spooled();
    app.crash_and_restart().await;
    assert!(at_crash < N, "the download finished before the hub could be restarted");

    // 2. The connector is killed (SIGKILL) while it stores into the PACS.
    let count = |o: &Orthanc| {
        let url = o.url("/statistics");
        async move { reqwest::get(url).await.ok()?.json::<Value>().await.ok()?["CountInstances"].as_u64() }
    };
    let t0 = Instant::now();
    loop {
        let n = count(&orthanc).await.unwrap_or(0) as usize;
        if n >= 10 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(120), "nothing reached the PACS");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let at_kill = count(&orthanc).await.unwrap() as usize;
    assert!(at_kill < N, "the connector finished before it could be killed");

    // 3. The PACS is down when the connector comes back; it waits, then finishes.
    orthanc.stop();
    let mut child = site.spawn();
    let t0 = Instant::now();
    loop {
        let out = site.cmd(&["status"]).await;
        if stdout(&out).contains("nothing answers there") {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "the connector never noticed the PACS was down:\n{}", stdout(&out));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(transfer(&app, &referrer, &id).await.state, TransferState::Received, "not failed while the PACS is down");
    // The clinic's admins see why (the connector's last error, from its heartbeat)…
    let last_error = || async {
        let list: Vec<Value> =
            app.client.get(app.url("/api/v1/communities/fLt1/connectors")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
        list[0]["last_error"].as_str().unwrap_or_default().to_string()
    };
    let t0 = Instant::now();
    while last_error().await.is_empty() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the PACS outage never showed as the connector's last error");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    orthanc.start_again().await;
    let t0 = Instant::now();
    loop {
        let s = transfer(&app, &referrer, &id).await;
        if s.state == TransferState::Stored {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(180), "not stored in time: {s:?}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // …and once it works again, the error is gone with the next heartbeat (it used to stay until
    // another error replaced it).
    let t0 = Instant::now();
    loop {
        let e = last_error().await;
        if e.is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "a stale error stays after the recovery: {e}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let stored = orthanc.stored().await;
    assert_eq!(stored.len(), N, "every instance exactly once");
    let mut want: Vec<String> = files.iter().map(|b| sha(dataset(b))).collect();
    want.sort();
    let mut got: Vec<String> = stored.into_values().collect();
    got.sort();
    assert_eq!(got, want, "byte-identical data sets");
}

/// `ferry-connector status | head -n 1`: a reader that leaves early ends the output; the
/// connector does not panic (exit 101) on the closed pipe.
#[tokio::test]
async fn a_closed_stdout_ends_the_output_without_a_panic() {
    let app = spawn_app().await;
    app.community("Klinik Pipe", "pIpe", "Homburg").await;
    let creds = app.connector("pIpe").await;
    let site = Site::new(&app, &creds, &dimse("pacs", free_port(), "PACS", ""));
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let config = site.config.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(connector_binary())
            .args(["status", "--config"])
            .arg(&config)
            .env("FERRY_LOG", "warn")
            .stdout(writer)
            .stderr(Stdio::piped())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "the output ended, the command succeeded: {stderr}");
}
