//! The clinician viewer: the hub serves the OHIF viewer (the pinned npm distribution that
//! `deploy/ohif/fetch.sh` fetches; `tests/run.sh` puts it in `target/ohif`) under `/ohif/`, on
//! its own DICOMweb with the signed-in user's session. In real Chromium a community member opens
//! an inbound CT, an RLE-compressed MR and a multi-frame study and an image is drawn in the
//! viewport; another community's member and an anonymous browser get nothing. Screenshots in
//! `target/test-artifacts/ohif/`.

use serde_json::json;

use crate::fixtures::ohif_dir;
use crate::fixtures::peers::node_dir;
use crate::fixtures::people::PASSWORD;
use crate::fixtures::{Synth, pydicom_file, spawn_app, spawn_app_with, uid};

#[tokio::test]
async fn a_member_opens_inbound_studies_in_ohif_and_others_see_nothing() {
    let app = spawn_app_with(|c| c.viewer.ohif_dir = Some(ohif_dir())).await;
    app.community("Radiologie Saarbrücken", "RAD1", "Saarbrücken").await;
    app.community("Praxis Homburg", "HOM2", "Homburg").await;
    let referrer = app.person("dr.send@example.test", "Dr. Send").await;
    app.person("mta@rad.example", "MTA Rad").await;
    app.add_member("RAD1", "mta@rad.example", "member").await;
    app.person("mta@homburg.example", "MTA Homburg").await;
    app.add_member("HOM2", "mta@homburg.example", "member").await;

    // A CT and an RLE-compressed MR from pydicom's test files, and a synthetic multi-frame image.
    let ct = pydicom_file("CT_small.dcm");
    let mr = pydicom_file("MR_small_RLE.dcm");
    let mf_study = uid();
    let mut mf = Synth::new(&mf_study, &uid(), &uid());
    mf.patient_name = "Frames^Multi".into();
    mf.patient_id = "MF-0042".into();
    mf.modality = "XA".into();
    mf.rows = 64;
    mf.cols = 64;
    mf.frames = 8;
    let t = app.send_transfer(&referrer, "RAD1", &[("ct.dcm", ct), ("mr.dcm", mr), ("mf.dcm", mf.bytes())]).await;
    let ct_uid = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322";

    // The sender's list opens all studies of the sending at once, the transfer page each one.
    let mine = referrer.browser.get(app.url("/app")).send().await.unwrap().text().await.unwrap();
    let link = mine.split("href=\"/ohif/viewer?StudyInstanceUIDs=").nth(1).expect("an OHIF link on the sender's list");
    let uids = &link[..link.find('"').unwrap()];
    assert_eq!(uids.split(',').count(), 3, "{uids}");
    assert!(uids.contains(ct_uid) && uids.contains(&mf_study));
    let page =
        referrer.browser.get(app.url(&format!("/transfers/{}", t["id"].as_str().unwrap()))).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&format!("/ohif/viewer?StudyInstanceUIDs={ct_uid}\"")), "per-study links on the transfer page");

    let studies = json!([
        {"uid": ct_uid, "name": "CompressedSamples, CT1", "label": "ct"},
        {"uid": "1.3.6.1.4.1.5962.1.2.4.20040826185059.5457", "name": "CompressedSamples, MR1", "label": "mr-rle"},
        {"uid": mf_study, "name": "Frames, Multi", "label": "multiframe"},
    ]);
    let artifacts = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts/ohif");
    let out = tokio::process::Command::new("node")
        .arg(node_dir().join("ohif_flow.mjs"))
        .env("HUB", &app.base)
        .env("PASSWORD", PASSWORD)
        .env("MEMBER_EMAIL", "mta@rad.example")
        .env("OTHER_EMAIL", "mta@homburg.example")
        .env("STUDIES", studies.to_string())
        .env("ARTIFACTS", &artifacts)
        .output()
        .await
        .expect("node tests/node/ohif_flow.mjs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "OHIF journey failed (screenshots in {}):\n{stdout}\n{stderr}", artifacts.display());
    assert!(stdout.contains("ohif journey ok"), "{stdout}");
    println!("{stdout}");
    for shot in [
        "00-opened-from-worklist",
        "01-study-list",
        "01b-study-list-filtered",
        "02-viewer-ct",
        "03-viewer-mr-rle",
        "04-viewer-multiframe",
        "05-viewer-multiframe-frame2",
        "10-other-community",
    ] {
        assert!(artifacts.join(format!("{shot}.png")).exists(), "{shot}.png");
    }
}

/// The hub serves the distribution under `/ohif/` with the links rewritten, its own runtime
/// configuration pointing at its DICOMweb (the public URL when one is set) and a CSP that admits
/// exactly the page's inline scripts; without `viewer.ohif_dir` it runs as before and says why
/// `/ohif/` is missing.
#[tokio::test]
async fn the_hub_mounts_the_ohif_distribution_and_runs_without_it() {
    let proxied = spawn_app_with(|c| {
        c.viewer.ohif_dir = Some(ohif_dir());
        c.public_url = Some("https://ferry.example.org".into());
    })
    .await;
    let anon = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    // Behind the proxy, BulkDataURIs are absolute on the public URL, as OHIF follows them.
    let (status, _) = proxied.stow(&[&crate::fixtures::pydicom_file("CT_small.dcm")]).await;
    assert_eq!(status, 200);
    let r = proxied.get("/dicomweb/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322/metadata", "application/dicom+json").await;
    let meta: serde_json::Value = r.json().await.unwrap();
    let uri = meta[0]["7FE00010"]["BulkDataURI"].as_str().expect("BulkDataURI");
    assert!(uri.starts_with("https://ferry.example.org/dicomweb/studies/1.3.6.1.4.1.5962.1.2.1.20040119072730.12322/series/"), "{uri}");
    let r = anon.get(proxied.url("/ohif/app-config.js")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let js = r.text().await.unwrap();
    assert!(js.contains(r#"qidoRoot: "https://ferry.example.org/dicomweb""#), "{js}");
    assert!(js.contains("routerBasename: '/ohif'"));

    let app = spawn_app_with(|c| c.viewer.ohif_dir = Some(ohif_dir())).await;
    let r = anon.get(app.url("/ohif/app-config.js")).send().await.unwrap();
    assert!(r.text().await.unwrap().contains(&format!(r#"qidoRoot: "{}/dicomweb""#, app.base)));

    // The page needs a session: anonymous visitors are sent to sign in and back.
    let r = anon.get(app.url("/ohif/viewer?StudyInstanceUIDs=1.2.3")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()["location"], "/login?return_to=%2Fohif%2Fviewer%3FStudyInstanceUIDs%3D1.2.3");

    let member = app.person("doc@example.test", "Doc").await;
    let r = member.browser.get(app.url("/ohif/viewer?StudyInstanceUIDs=1.2.3")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let csp = r.headers()["content-security-policy"].to_str().unwrap().to_string();
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"window.PUBLIC_URL="/ohif/""#));
    assert!(!html.contains(r#" src="/app.bundle"#), "script links point into /ohif/");
    assert_eq!(csp.matches("'sha256-").count(), html.matches("<script>").count(), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("'unsafe-eval'"), "{csp}");

    // The bundles load their chunks from /ohif/, the rest is served as it is on disk.
    let bundle = std::fs::read_dir(ohif_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.starts_with("app.bundle.") && n.ends_with(".js"))
        .expect("app bundle");
    let r = anon.get(app.url(&format!("/ohif/{bundle}"))).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    assert!(text.contains(r#"__webpack_require__.p = "/ohif/""#) && !text.contains(r#"__webpack_require__.p = "/""#));
    let css = std::fs::read_dir(ohif_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().to_string())
        .find(|n| n.ends_with(".css") && std::fs::read_to_string(ohif_dir().join(n)).unwrap().contains("url(/"))
        .expect("a style sheet with root-relative URLs");
    let text = anon.get(app.url(&format!("/ohif/{css}"))).send().await.unwrap().text().await.unwrap();
    assert!(text.contains("url(/ohif/") && !text.contains("url(/a"), "fonts load from /ohif/");
    let r = anon.get(app.url("/ohif/assets/favicon.ico")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().as_ref(), std::fs::read(ohif_dir().join("assets/favicon.ico")).unwrap());
    let r = anon.get(app.url("/ohif/..%2F..%2Fetc/passwd")).send().await.unwrap();
    assert_eq!(r.status(), 303, "no way out of the distribution's folder");

    // Without the viewer.
    let plain = spawn_app().await;
    let r = anon.get(plain.url("/ohif/")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert!(r.text().await.unwrap().contains("viewer.ohif_dir"));
}
