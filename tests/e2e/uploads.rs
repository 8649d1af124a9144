//! `POST /api/v1/uploads`: ZIPs (a CD's content), folders as multipart/form-data, and the ZIP
//! attacks (path traversal, bombs).

use std::io::Write;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use zip::write::SimpleFileOptions;

use crate::fixtures::*;

fn zip_of(entries: &[(&str, &[u8])], method: zip::CompressionMethod) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, data) in entries {
        w.start_file(*name, SimpleFileOptions::default().compression_method(method)).expect("entry");
        w.write_all(data).expect("write");
    }
    w.finish().expect("finish").into_inner()
}

async fn upload(app: &TestApp, ct: &str, body: Vec<u8>) -> (u16, serde_json::Value) {
    let resp = app
        .client
        .post(app.url("/api/v1/uploads"))
        .header(AUTHORIZATION, format!("Bearer {TOKEN}"))
        .header(CONTENT_TYPE, ct)
        .body(body)
        .send()
        .await
        .expect("upload");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn a_cd_as_zip_is_imported_and_extras_are_skipped() {
    let app = spawn_app().await;
    let (study, series) = (uid(), uid());
    let a = Synth::new(&study, &series, &uid()).bytes();
    let b = Synth::new(&study, &series, &uid()).bytes();
    let ct = pydicom_file("CT_small.dcm");
    let zip = zip_of(
        &[
            ("DICOMDIR", b"not really a dicomdir"),
            ("DICOM/ST000001/SE000001/IM000001", &a),
            ("DICOM/ST000001/SE000001/IM000002", &b),
            ("DICOM/OTHER/CT", &ct),
            ("README.TXT", b"Patient CD"),
            ("VIEWER/viewer.exe", b"MZ\x90\x00"),
        ],
        zip::CompressionMethod::Deflated,
    );
    let (status, report) = upload(&app, "application/zip", zip).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stored"], 3);
    assert_eq!(report["skipped"], 3);
    assert_eq!(report["failed"], 0);
    assert_eq!(report["studies"].as_array().expect("studies").len(), 2);
    let back = app.retrieve(&format!("/dicomweb/studies/{study}")).await;
    assert!(back.contains(&a) && back.contains(&b));
    // The same ZIP again: duplicates, nothing new.
    let zip = zip_of(&[("x/IM1", &a)], zip::CompressionMethod::Stored);
    let (status, report) = upload(&app, "application/zip", zip).await;
    assert_eq!(status, 200);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(app.instance_count().await, 3);
}

#[tokio::test]
async fn a_folder_upload_as_form_data_works() {
    let app = spawn_app().await;
    let s1 = Synth::new(&uid(), &uid(), &uid());
    let s2 = Synth::new(&uid(), &uid(), &uid());
    let inner_zip = zip_of(&[("IM", &s2.bytes())], zip::CompressionMethod::Deflated);
    let form = reqwest::multipart::Form::new()
        .part("files", reqwest::multipart::Part::bytes(s1.bytes()).file_name("CD/DICOM/IM0001"))
        .part("files", reqwest::multipart::Part::bytes(b"DICM?".to_vec()).file_name("CD/DICOMDIR"))
        .part("files", reqwest::multipart::Part::bytes(inner_zip).file_name("more.zip"))
        .part("files", reqwest::multipart::Part::bytes(b"hello".to_vec()).file_name("CD/AUTORUN.INF"));
    let resp = app.client.post(app.url("/api/v1/uploads")).bearer_auth(TOKEN).multipart(form).send().await.expect("upload");
    assert_eq!(resp.status(), 200);
    let report: serde_json::Value = resp.json().await.expect("report");
    assert_eq!(report["stored"], 2, "{report}");
    assert_eq!(report["skipped"], 2, "{report}");
    assert_eq!(app.study_count().await, 2);
}

#[tokio::test]
async fn zip_attacks_are_refused_and_store_nothing() {
    let app = spawn_app().await;
    let file = Synth::new(&uid(), &uid(), &uid()).bytes();
    let zip = zip_of(&[("../../etc/evil.dcm", &file), ("/abs/evil.dcm", &file)], zip::CompressionMethod::Stored);
    let (status, report) = upload(&app, "application/zip", zip).await;
    assert_eq!(status, 422, "{report}");
    assert_eq!(report["failed"], 2);
    assert!(report["files"][0]["reason"].as_str().expect("reason").contains("unsafe path"));
    // A bomb: 64 MiB of zeros compress to ~64 KiB.
    let zeros = vec![0u8; 64 << 20];
    let zip = zip_of(&[("bomb.dcm", &zeros)], zip::CompressionMethod::Deflated);
    assert!(zip.len() < 1 << 20);
    let (status, report) = upload(&app, "application/zip", zip).await;
    assert_eq!(status, 422, "{report}");
    assert!(report["files"][0]["reason"].as_str().expect("reason").contains("ZIP bomb"), "{report}");
    // Not a ZIP at all.
    let (status, report) = upload(&app, "application/zip", b"PK but not really".to_vec()).await;
    assert_eq!(status, 422, "{report}");
    // Wrong content type.
    let (status, _) = upload(&app, "text/plain", b"x".to_vec()).await;
    assert_eq!(status, 415);
    assert_eq!(app.instance_count().await, 0);
    assert!(crate::fixtures::blobs::blob_files(&app).is_empty());
}
