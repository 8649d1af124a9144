//! The whole journey in real Chromium (Debian's chromium + npm playwright-core): a referrer
//! registers, confirms the email, signs in locally, finds the clinic by "saarbruecken", drops a
//! study folder (the page shows what it found), sends it with a progress bar (through a broken
//! request, retried, and a file the hub refuses, named and left out), links the account
//! to the real OpenID provider; the clinic's admin on a phone sees it in the worklist, opens the
//! viewer, marks it done, finds that in the audit trail; the referrer signs in through the
//! provider and sees the new state.
//! Screenshots of the key pages go to `target/test-artifacts/browser/`.

use crate::fixtures::peers::{hub_with_idp, node_dir};
use crate::fixtures::people::PASSWORD;
use crate::fixtures::{Synth, uid};

#[tokio::test]
async fn referrer_to_clinic_and_back_in_chromium() {
    let (app, idp) = hub_with_idp().await;
    let hub = app.base.clone();
    app.community("Radiologie Klinikum Saarbrücken", "bM1X", "Saarbrücken").await;
    app.person("mta@klinikum.example", "MTA Klinikum").await;
    app.add_member("bM1X", "mta@klinikum.example", "admin").await;

    // A CD-like folder: two images of one series, the DICOMDIR and a README beside them.
    let folder = tempfile::tempdir().unwrap();
    let images = folder.path().join("CD").join("DICOM");
    std::fs::create_dir_all(&images).unwrap();
    let (st, se) = (uid(), uid());
    for i in 0..2 {
        let mut s = Synth::new(&st, &se, &uid());
        s.patient_name = "Jäger^Jörg".into();
        s.rows = 64;
        s.cols = 64;
        std::fs::write(images.join(format!("IM{i:04}")), s.bytes()).unwrap();
    }
    std::fs::write(folder.path().join("CD").join("README.TXT"), "Viewer inside").unwrap();
    // Looks fine to the browser's scanner, but has no pixel data: the hub refuses it.
    let mut broken = Synth::new(&st, &se, &uid());
    broken.patient_name = "Jäger^Jörg".into();
    let broken = broken.bytes_without(Some(dicom_dictionary_std::tags::PIXEL_DATA));
    std::fs::write(images.join("IM9999"), broken).unwrap();

    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/browser");
    let out = tokio::process::Command::new("node")
        .arg(node_dir().join("browser_flow.mjs"))
        .env("HUB", &hub)
        .env("IDP_LABEL", "Test-IdP")
        .env("OUTBOX", app.dir.path().join("outbox"))
        .env("STUDY_DIR", folder.path().join("CD"))
        .env("MEMBER_EMAIL", "mta@klinikum.example")
        .env("PASSWORD", PASSWORD)
        .env("PATIENT", "Jäger, Jörg")
        .env("ARTIFACTS", &artifacts)
        .output()
        .await
        .expect("node tests/node/browser_flow.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "browser journey failed (screenshots in {}):\n{stdout}\n{stderr}", artifacts.display());
    assert!(stdout.contains("browser journey ok"));
    // What the browser did is what the hub recorded.
    let row: (String, String) = sqlx::query_as("SELECT state, state_message FROM transfers").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(row, ("done".to_string(), "Im PACS, Termin steht".to_string()));
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM transfer_instances").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(n.0, 2, "the README and the refused file were not sent, both images were");
    for shot in ["03-send-summary", "05-worklist-phone", "06-viewer-phone", "07b-audit-phone", "08-referrer-sees-done"] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
    drop(idp);
}

/// Staff share a study in Chromium and print the sheet; a phone follows its QR code, answers the
/// birth date, scrolls and windows a series, opens the report and downloads the ZIP — which dcmtk,
/// pydicom and Orthanc read, every file byte-identical. Screenshots in
/// `target/test-artifacts/share/`.
#[tokio::test]
async fn a_patient_redeems_a_sheet_on_a_phone_and_downloads_the_study() {
    let app = crate::fixtures::spawn_app().await;
    app.community("Radiologie Saarbrücken", "RAD1", "Saarbrücken").await;
    app.person("mta@rad.example", "Maria Staff").await;
    app.add_member("RAD1", "mta@rad.example", "member").await;
    let folder = tempfile::tempdir().unwrap();
    let (st, se) = (uid(), uid());
    let mut originals = Vec::new();
    for i in 0..4 {
        let mut s = Synth::new(&st, &se, &uid());
        s.rows = 64;
        s.cols = 64;
        let b = s.bytes();
        std::fs::write(folder.path().join(format!("IM{i:04}")), &b).unwrap();
        originals.push(b);
    }
    let report = folder.path().join("report.pdf");
    std::fs::write(&report, b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n").unwrap();
    let images = tempfile::tempdir().unwrap();
    for (i, b) in originals.iter().enumerate() {
        std::fs::write(images.path().join(format!("IM{i:04}")), b).unwrap();
    }
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/share");
    let _ = std::fs::remove_dir_all(&artifacts);
    let out = tokio::process::Command::new("node")
        .arg(node_dir().join("share_flow.mjs"))
        .env("HUB", &app.base)
        .env("MEMBER_EMAIL", "mta@rad.example")
        .env("PASSWORD", PASSWORD)
        .env("STUDY_DIR", images.path())
        .env("REPORT", &report)
        .env("BIRTH", "01.01.1970")
        .env("ARTIFACTS", &artifacts)
        .output()
        .await
        .expect("node tests/node/share_flow.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "share journey failed (screenshots in {}):\n{stdout}\n{stderr}", artifacts.display());
    assert!(stdout.contains("share journey ok"));
    let zip = std::fs::read(artifacts.join("share.zip")).unwrap();
    crate::fixtures::shares::check_pdi(&zip, &originals);
    let orthanc = crate::fixtures::peers::Orthanc::start(&app.url("/dicomweb")).await;
    let client = reqwest::Client::new();
    let r = client.post(orthanc.url("/instances")).body(zip).send().await.unwrap();
    assert!(r.status().is_success());
    let stored = orthanc.stored().await;
    assert_eq!(stored.len(), originals.len());
    for b in &originals {
        use sha2::Digest;
        assert!(stored.values().any(|h| *h == hex::encode(sha2::Sha256::digest(crate::fixtures::dataset(b)))));
    }
    for shot in ["10-share-issued", "12-redeem-phone", "13-overview-phone", "14-viewer-phone"] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
    // The audit trail has the wrong and the right answer, and the download.
    let actions: Vec<(String, String)> = sqlx::query_as("SELECT action, result FROM audit_events").fetch_all(&app.state.db).await.unwrap();
    for want in [("share.redeem", "denied"), ("share.redeem", "ok"), ("share.download", "ok"), ("share.report", "ok")] {
        assert!(actions.iter().any(|(a, r)| a == want.0 && r == want.1), "{want:?} in {actions:?}");
    }
}
