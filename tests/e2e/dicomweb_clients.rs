//! Real DICOMweb clients against the hub: Python's dicomweb-client, and Orthanc with its
//! DICOMweb plugin (the hub configured as a remote DICOMweb server).

use std::process::Command;

use crate::fixtures::peers::*;
use crate::fixtures::*;

#[tokio::test]
async fn orthanc_queries_and_retrieves_a_study_from_the_hub() {
    let app = spawn_app().await;
    let (study, series) = (uid(), uid());
    let mut files = Vec::new();
    for i in 0..3 {
        let mut s = Synth::new(&study, &series, &uid());
        s.patient_name = format!("Orthanc^Test{i}");
        files.push(s.bytes());
    }
    let ct = pydicom_file("CT_small.dcm");
    files.push(pydicom_file("SC_rgb_jpeg_dcmtk.dcm"));
    let parts: Vec<&[u8]> = files.iter().map(|f| f.as_slice()).chain([ct.as_slice()]).collect();
    assert_eq!(app.stow(&parts).await.0, 200);
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let client = reqwest::Client::new();
    // QIDO through Orthanc's DICOMweb client.
    let qido = |request: serde_json::Value| {
        let req = client.post(orthanc.url("/dicom-web/servers/ferry/qido")).json(&request);
        async move { req.send().await.expect("qido").json::<Vec<serde_json::Value>>().await.expect("json") }
    };
    let found = qido(serde_json::json!({"Uri": "/studies", "Arguments": {"StudyInstanceUID": study}})).await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(qido(serde_json::json!({"Uri": "/studies"})).await.len(), 3);
    // WADO-RS retrieve of the synthetic study and of the CT study into Orthanc.
    let ct_study = dicom_object::from_reader(&ct[128..])
        .expect("ct")
        .element(dicom_dictionary_std::tags::STUDY_INSTANCE_UID)
        .expect("uid")
        .to_str()
        .expect("s")
        .trim_end_matches('\0')
        .to_string();
    for uid in [study, ct_study] {
        let r = client
            .post(orthanc.url("/dicom-web/servers/ferry/retrieve"))
            .json(&serde_json::json!({"Resources": [{"Study": uid}], "Synchronous": true}))
            .send()
            .await
            .expect("retrieve");
        assert!(r.status().is_success(), "retrieve: {}", r.text().await.unwrap_or_default());
    }
    let ids: Vec<String> = client.get(orthanc.url("/instances")).send().await.expect("list").json().await.expect("json");
    assert_eq!(ids.len(), 4, "Orthanc received every instance");
    let mut received = Vec::new();
    for id in ids {
        let bytes = client.get(orthanc.url(&format!("/instances/{id}/file"))).send().await.expect("file").bytes().await.expect("bytes");
        received.push(bytes.to_vec());
    }
    for f in files.iter().take(3).chain([&ct]) {
        assert!(received.contains(f), "an instance arrived in Orthanc changed");
    }
}

#[tokio::test]
async fn python_dicomweb_client_stores_searches_and_retrieves_byte_identical() {
    let app = spawn_app().await;
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/dicomweb_client_check.py");
    let base = format!("{}/dicomweb", app.base);
    let out = tokio::task::spawn_blocking(move || Command::new("python3").arg(script).arg(base).arg(TOKEN).output().expect("python3"))
        .await
        .expect("join");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "dicomweb-client check failed:\n{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("all checks passed"));
}
