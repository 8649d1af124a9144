//! STOW-RS in, WADO-RS out: bytes come back identical, metadata and frames are right, rendering
//! works for what dicom-pixeldata decodes and fails clearly for the rest.

use crate::fixtures::*;

/// pydicom test files: (file, transfer syntax renders?)
const CORPUS: &[(&str, bool)] = &[
    ("CT_small.dcm", true),
    ("MR_small.dcm", true),
    ("MR_small_implicit.dcm", true),
    ("MR_small_bigendian.dcm", true),
    ("MR_small_RLE.dcm", true),
    ("MR_small_jpeg_ls_lossless.dcm", true),
    ("JPEG2000.dcm", true),
    ("SC_rgb_jpeg_dcmtk.dcm", true),
    ("SC_rgb_rle.dcm", true),
    ("SC_rgb_rle_16bit.dcm", true),
    ("JPEG-lossy.dcm", false), // 12-bit JPEG extended (.51): not decoded yet
    ("JPGExtended.dcm", false),
    ("MR_small_jp2klossless.dcm", true),
    ("examples_ybr_color.dcm", true),
    ("rtdose.dcm", true), // 32 bits allocated: rendered by the hub itself (dicom-pixeldata converts 1, 8 and 16 only)
    ("liver_1frame.dcm", true),
];

fn ts_of(meta: &serde_json::Value) -> String {
    json_str(meta, "00020010").unwrap_or_default()
}

#[tokio::test]
async fn pydicom_corpus_round_trips_byte_identical_and_renders_or_says_406() {
    let mut problems = Vec::new();
    for (name, renders) in CORPUS {
        let app = spawn_app().await;
        let original = pydicom_file(name);
        let (status, body) = app.stow(&[&original]).await;
        assert_eq!(status, 200, "{name}: {body}");
        let item = &body["00081199"]["Value"][0];
        let url = json_str(item, "00081190").expect("RetrieveURL");
        let path = url.split_once("/dicomweb").map(|(_, p)| format!("/dicomweb{p}")).expect("path");
        let back = app.retrieve(&path).await;
        assert_eq!(back.len(), 1, "{name}");
        assert!(back[0] == original, "{name}: retrieved bytes differ from the stored file");
        // Single-part retrieve too.
        let single = app.get(&path, "application/dicom").await;
        assert_eq!(single.status(), 200);
        assert_eq!(single.bytes().await.expect("bytes").as_ref(), original.as_slice(), "{name} single part");
        let meta: Vec<serde_json::Value> =
            app.get(&format!("{path}/metadata"), "application/dicom+json").await.json().await.expect("metadata");
        let ts = ts_of(&meta[0]);
        let rendered = app.get(&format!("{path}/rendered"), "image/png").await;
        let status = rendered.status().as_u16();
        let bytes = rendered.bytes().await.expect("rendered");
        if *renders {
            if status != 200 || !bytes.starts_with(b"\x89PNG") {
                problems.push(format!(
                    "{name} ({ts}): expected a PNG, got {status} {}",
                    String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
                ));
            }
        } else if status != 406 {
            problems.push(format!("{name} ({ts}): expected 406, got {status}"));
        }
    }
    // JPEG lossless (process 14 SV1, .70): made from CT_small by dcmtk, since pydicom ships none.
    let dir = tempfile::tempdir().expect("tmp");
    let src = pydicom_files().join("CT_small.dcm");
    let out = dir.path().join("ct_lossless.dcm");
    let st = std::process::Command::new("dcmcjpeg").arg("+e1").arg(&src).arg(&out).status().expect("dcmcjpeg (dcmtk) must be installed");
    assert!(st.success());
    let app = spawn_app().await;
    let original = std::fs::read(&out).expect("lossless file");
    let (status, body) = app.stow(&[&original]).await;
    assert_eq!(status, 200, "{body}");
    let url = json_str(&body["00081199"]["Value"][0], "00081190").expect("url");
    let path = format!("/dicomweb{}", url.split_once("/dicomweb").expect("p").1);
    assert_eq!(app.retrieve(&path).await[0], original);
    let r = app.get(&format!("{path}/rendered"), "image/png").await;
    if r.status() != 200 {
        problems.push(format!("JPEG lossless SV1: expected a PNG, got {}", r.status()));
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

#[tokio::test]
async fn metadata_has_absolute_bulkdata_uris_and_frames_come_by_range() {
    let app = spawn_app().await;
    let (study, series, sop) = (uid(), uid(), uid());
    let mut s = Synth::new(&study, &series, &sop);
    s.frames = 3;
    s.rows = 64;
    s.cols = 64;
    let file = s.bytes();
    assert_eq!(app.stow(&[&file]).await.0, 200);
    let base = format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}");
    for level in [format!("/dicomweb/studies/{study}"), format!("/dicomweb/studies/{study}/series/{series}"), base.clone()] {
        let meta: Vec<serde_json::Value> =
            app.get(&format!("{level}/metadata"), "application/dicom+json").await.json().await.expect("json");
        assert_eq!(meta.len(), 1);
        let uri = meta[0]["7FE00010"]["BulkDataURI"].as_str().expect("pixel BulkDataURI");
        assert_eq!(uri, format!("{}{base}/bulk/7FE00010", app.base));
        assert_eq!(json_str(&meta[0], "0020000D").as_deref(), Some(study.as_str()));
        assert!(meta[0].get("00100010").is_some(), "patient name in metadata");
    }
    // Frame 2 is exactly the second third of the pixel data.
    let frame_len = 64 * 64 * 2;
    let px_start = file.len() - 3 * frame_len;
    let resp = app.get(&format!("{base}/frames/2"), "multipart/related; type=\"application/octet-stream\"; transfer-syntax=*").await;
    assert_eq!(resp.status(), 200);
    let ct = resp.headers()["content-type"].to_str().expect("ct").to_string();
    let parts = split_multipart(&ct, &resp.bytes().await.expect("body"));
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0], &file[px_start + frame_len..px_start + 2 * frame_len]);
    let resp = app.get(&format!("{base}/frames/1,3"), "multipart/related; type=application/octet-stream").await;
    let ct = resp.headers()["content-type"].to_str().expect("ct").to_string();
    let parts = split_multipart(&ct, &resp.bytes().await.expect("body"));
    assert_eq!(parts, vec![file[px_start..px_start + frame_len].to_vec(), file[px_start + 2 * frame_len..].to_vec()]);
    // Bulk data of the pixel data element.
    let resp = app.get(&format!("{base}/bulk/7FE00010"), "multipart/related; type=application/octet-stream").await;
    let ct = resp.headers()["content-type"].to_str().expect("ct").to_string();
    assert_eq!(split_multipart(&ct, &resp.bytes().await.expect("body"))[0], &file[px_start..]);
    // Frame out of range, bad frame list.
    assert_eq!(app.get(&format!("{base}/frames/4"), "*/*").await.status(), 404);
    assert_eq!(app.get(&format!("{base}/frames/x"), "*/*").await.status(), 400);
    // Rendered frame with a window, JPEG by default, PNG on request, thumbnails.
    let r = app.get(&format!("{base}/frames/2/rendered?window=2048,4096"), "image/jpeg").await;
    assert_eq!(r.status(), 200);
    assert!(r.bytes().await.expect("jpeg").starts_with(&[0xFF, 0xD8]));
    let r = app.get(&format!("{base}/rendered?viewport=32,32"), "image/png").await;
    let png = r.bytes().await.expect("png");
    assert!(png.starts_with(b"\x89PNG"));
    assert_eq!(u32::from_be_bytes([png[16], png[17], png[18], png[19]]), 32, "viewport scales the width");
    for t in [
        format!("/dicomweb/studies/{study}/thumbnail"),
        format!("/dicomweb/studies/{study}/series/{series}/thumbnail"),
        format!("{base}/thumbnail"),
    ] {
        let r = app.get(&t, "image/jpeg").await;
        assert_eq!(r.status(), 200, "{t}");
        assert!(r.bytes().await.expect("jpeg").starts_with(&[0xFF, 0xD8]));
    }
    assert_eq!(app.get(&format!("{base}/rendered"), "application/pdf").await.status(), 406);
    assert_eq!(app.get(&format!("{base}/rendered?window=1"), "image/png").await.status(), 400);
}

#[tokio::test]
async fn compressed_frames_are_served_in_their_own_syntax() {
    let app = spawn_app().await;
    let file = pydicom_file("SC_rgb_jpeg_dcmtk.dcm");
    let (status, body) = app.stow(&[&file]).await;
    assert_eq!(status, 200);
    let url = json_str(&body["00081199"]["Value"][0], "00081190").expect("url");
    let path = format!("/dicomweb{}", url.split_once("/dicomweb").expect("p").1);
    let r = app.get(&format!("{path}/frames/1"), "multipart/related; type=\"image/jpeg\"").await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    assert!(ct.contains("image/jpeg"), "{ct}");
    let parts = split_multipart(&ct, &r.bytes().await.expect("body"));
    assert!(parts[0].starts_with(&[0xFF, 0xD8]), "a JPEG bitstream");
    let r = app.get(&format!("{path}/frames/1"), "multipart/related; type=application/octet-stream; transfer-syntax=*").await;
    assert_eq!(r.status(), 200);
    // Uncompressed octets of a compressed frame: decoded (render_codecs.rs checks the pixels).
    let r =
        app.get(&format!("{path}/frames/1"), "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1").await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    let parts = split_multipart(&ct, &r.bytes().await.expect("body"));
    assert_eq!(parts.len(), 1);
    assert!(!parts[0].starts_with(&[0xFF, 0xD8]), "native octets, not a JPEG bitstream");
    // A compressed syntax the hub does not make is refused clearly.
    let r = app
        .get(&format!("{path}/frames/1"), "multipart/related; type=application/octet-stream; transfer-syntax=1.2.840.10008.1.2.4.80")
        .await;
    assert_eq!(r.status(), 406);
    // A retrieve asking for Explicit VR Little Endian gets the instance decoded, and says so in the
    // part's type (render_codecs.rs checks the pixels); a syntax the hub cannot make is refused.
    let r = app.get(&path, "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.1").await;
    assert_eq!(r.status(), 200);
    let ct = r.headers()["content-type"].to_str().expect("ct").to_string();
    let body = r.bytes().await.expect("body");
    assert!(String::from_utf8_lossy(&body).contains("Content-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.1"));
    assert_eq!(split_multipart(&ct, &body).len(), 1);
    let r = app.get(&path, "multipart/related; type=\"application/dicom\"; transfer-syntax=1.2.840.10008.1.2.4.80").await;
    assert_eq!(r.status(), 406);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
}

#[tokio::test]
async fn stow_reports_partial_success_and_duplicates_by_policy() {
    let app = spawn_app().await;
    let (study, series) = (uid(), uid());
    let a = Synth::new(&study, &series, &uid()).bytes();
    let b_sop = uid();
    let b = Synth::new(&study, &series, &b_sop).bytes();
    let (status, body) = app.stow(&[&a, b"not dicom at all"]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["00081199"]["Value"].as_array().expect("refs").len(), 1);
    assert_eq!(body["00081198"]["Value"][0]["00081197"]["Value"][0], 0xC000);
    // Same bytes again: success, nothing changes.
    let (status, _) = app.stow(&[&a]).await;
    assert_eq!(status, 200);
    assert_eq!(app.instance_count().await, 1);
    // Same SOP Instance UID, different bytes: refused with 0x0111, the stored one stays.
    let mut other = Synth::new(&study, &series, &b_sop);
    other.patient_id = "OTHER".into();
    assert_eq!(app.stow(&[&b]).await.0, 200);
    let (status, body) = app.stow(&[&other.bytes()]).await;
    assert_eq!(status, 409);
    assert_eq!(body["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0111);
    assert_eq!(
        json_str(&body["00081198"]["Value"][0], "00000902").as_deref(),
        Some("SOP Instance UID already stored with different content"),
        "a readable reason (ErrorComment, at most 64 characters)"
    );
    assert_eq!(json_str(&body["00081198"]["Value"][0], "00081155").as_deref(), Some(b_sop.as_str()));
    let back = app.retrieve(&format!("/dicomweb/studies/{study}/series/{series}/instances/{b_sop}")).await;
    assert_eq!(back[0], b);
}

/// Concurrent uploads share index transactions (group commit, one savepoint per instance): one
/// instance refused inside a batch must leave the others of the batch stored and leave nothing
/// of its own — not even the study row it inserted before its series turned out to belong to
/// another study.
#[tokio::test]
async fn concurrent_uploads_commit_together_but_fail_alone() {
    let app = spawn_app().await;
    let (study, series) = (uid(), uid());
    let contested: Vec<String> = (0..4).map(|_| uid()).collect();
    let clients = 6;
    let mut requests = Vec::new();
    let mut unique = 0;
    let mut stray_studies = Vec::new();
    for c in 0..clients {
        let mut parts = Vec::new();
        for sop in &contested {
            // Each client's version of the contested instances differs from the others'.
            let mut s = Synth::new(&study, &series, sop);
            s.patient_id = format!("PID-{c}");
            parts.push((sop.clone(), s.bytes()));
        }
        for _ in 0..8 {
            let sop = uid();
            parts.push((sop.clone(), Synth::new(&study, &series, &sop).bytes()));
            unique += 1;
        }
        // A new study whose series is the shared study's: refused with 0xA900.
        let stray = uid();
        stray_studies.push(stray.clone());
        parts.push((uid(), Synth::new(&stray, &series, &uid()).bytes()));
        requests.push(parts);
    }
    let app_ref = &app;
    let answers = futures_util::future::join_all(requests.iter().map(|parts| {
        let app = app_ref;
        let bodies: Vec<&[u8]> = parts.iter().map(|(_, b)| b.as_slice()).collect();
        async move { app.stow(&bodies).await }
    }))
    .await;
    let mut winners = std::collections::HashMap::new();
    for (c, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, 202, "{body}");
        let stored: Vec<String> =
            body["00081199"]["Value"].as_array().expect("stored").iter().filter_map(|r| json_str(r, "00081155")).collect();
        let failed: Vec<(String, u64)> = body["00081198"]["Value"]
            .as_array()
            .expect("failed")
            .iter()
            .map(|r| (json_str(r, "00081155").unwrap_or_default(), r["00081197"]["Value"][0].as_u64().unwrap_or(0)))
            .collect();
        assert_eq!(stored.len() + failed.len(), requests[c].len(), "{body}");
        for (sop, reason) in &failed {
            if contested.contains(sop) {
                assert_eq!(*reason, 0x0111, "{body}");
            } else {
                assert_eq!(*reason, 0xA900, "only the stray instance fails otherwise: {body}");
            }
        }
        for sop in stored.iter().filter(|s| contested.contains(s)) {
            assert!(winners.insert(sop.clone(), c).is_none(), "{sop} stored twice");
        }
    }
    assert_eq!(winners.len(), contested.len(), "every contested instance is stored exactly once");
    for (sop, c) in &winners {
        let back = app.retrieve(&format!("/dicomweb/studies/{study}/series/{series}/instances/{sop}")).await;
        let sent = &requests[*c].iter().find(|(s, _)| s == sop).expect("sent").1;
        assert_eq!(&back[0], sent, "the winner's bytes are what is stored");
    }
    assert_eq!(app.instance_count().await, unique + contested.len());
    assert_eq!(app.study_count().await, 1, "no study row is left of the refused instances");
    for stray in &stray_studies {
        assert!(app.qido(&format!("/dicomweb/studies?StudyInstanceUID={stray}")).await.is_empty());
    }
}

#[tokio::test]
async fn stow_to_a_study_url_refuses_other_studies() {
    let app = spawn_app().await;
    let study = uid();
    let right = Synth::new(&study, &uid(), &uid()).bytes();
    let wrong = Synth::new(&uid(), &uid(), &uid()).bytes();
    let (status, body) = app.stow_to(&format!("/dicomweb/studies/{study}"), &[&right, &wrong]).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["00081198"]["Value"][0]["00081197"]["Value"][0], 0x0110);
    assert_eq!(app.study_count().await, 1);
}

#[tokio::test]
async fn unauthenticated_and_unknown_requests_get_problem_json() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/dicomweb/studies")).send().await.expect("req");
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let p: serde_json::Value = r.json().await.expect("problem");
    assert_eq!(p["status"], 401);
    assert!(p["request_id"].as_str().is_some_and(|s| !s.is_empty()), "{p}");
    let r = app.client.get(app.url("/dicomweb/studies")).bearer_auth("wrong").send().await.expect("req");
    assert_eq!(r.status(), 401);
    let r = app.get("/dicomweb/studies/1.2.3", "*/*").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.get("/dicomweb/studies/not-a-uid/metadata", "*/*").await;
    assert_eq!(r.status(), 400);
    let r = app.get("/nope", "*/*").await;
    assert_eq!(r.status(), 404);
    // CORS preflight as a browser viewer sends it.
    let r = app
        .client
        .request(reqwest::Method::OPTIONS, app.url("/dicomweb/studies"))
        .header("Origin", "http://viewer.example")
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization,accept")
        .send()
        .await
        .expect("preflight");
    assert!(r.status().is_success());
    let allowed = r.headers()["access-control-allow-headers"].to_str().expect("h").to_ascii_lowercase();
    assert!(allowed.contains("authorization") && allowed.contains("accept"), "{allowed}");
    assert_eq!(r.headers()["access-control-allow-origin"], "http://viewer.example");
}
