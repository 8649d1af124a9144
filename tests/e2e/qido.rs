//! QIDO-RS matching as clients use it.

use crate::fixtures::*;

struct Fixture {
    app: TestApp,
    studies: Vec<(String, String)>,
}

async fn fixture() -> Fixture {
    let app = spawn_app().await;
    let people = [
        ("Müller^Jürgen", "P1", "20230105", "CT"),
        ("MUSTERMANN^ERIKA", "P2", "20230620", "MR"),
        ("Mustermann^Max", "P3", "20240210", "CT"),
        ("Doe^Jane", "P4", "20241231", "US"),
    ];
    let mut studies = Vec::new();
    for (name, pid, date, modality) in people {
        let (study, series) = (uid(), uid());
        let mut s = Synth::new(&study, &series, &uid());
        s.patient_name = name.into();
        s.patient_id = pid.into();
        s.study_date = date.into();
        s.modality = modality.into();
        assert_eq!(app.stow(&[&s.bytes()]).await.0, 200);
        // A second instance in a second series for counts.
        let mut s2 = Synth::new(&study, &uid(), &uid());
        s2.patient_name = name.into();
        s2.modality = "SR".into();
        assert_eq!(app.stow(&[&s2.bytes()]).await.0, 200);
        studies.push((study, series));
    }
    Fixture { app, studies }
}

fn pids(results: &[serde_json::Value]) -> Vec<String> {
    let mut v: Vec<String> = results.iter().filter_map(|r| json_str(r, "00100020")).collect();
    v.sort();
    v
}

#[tokio::test]
async fn study_search_matches_like_dicom_says() {
    let f = fixture().await;
    let app = &f.app;
    assert_eq!(app.qido("/dicomweb/studies").await.len(), 4);
    // Person names: case-insensitive, wildcards.
    assert_eq!(pids(&app.qido("/dicomweb/studies?PatientName=mustermann*").await), ["P2", "P3"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?PatientName=M?ller*").await), ["P1"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?PatientName=m%C3%BCller%5Ej%C3%BCrgen").await), ["P1"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?PatientName=erika&fuzzymatching=true").await), ["P2"]);
    // Hex tag keys, exact IDs, case-sensitive IDs.
    assert_eq!(pids(&app.qido("/dicomweb/studies?00100020=P3").await), ["P3"]);
    assert!(app.qido("/dicomweb/studies?PatientID=p3").await.is_empty());
    assert_eq!(pids(&app.qido("/dicomweb/studies?PatientID=P*").await).len(), 4);
    // Date ranges.
    assert_eq!(pids(&app.qido("/dicomweb/studies?StudyDate=20230101-20231231").await), ["P1", "P2"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?StudyDate=20240101-").await), ["P3", "P4"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?StudyDate=-20230105").await), ["P1"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?StudyDate=20241231").await), ["P4"]);
    assert_eq!(app.qido("/dicomweb/studies?StudyTime=1000-1100").await.len(), 4);
    assert!(app.qido("/dicomweb/studies?StudyTime=1100-").await.is_empty());
    assert_eq!(app.qido("/dicomweb/studies?StudyTime=-1015").await.len(), 4, "an end time covers its whole minute");
    assert!(app.qido("/dicomweb/studies?StudyTime=-1014").await.is_empty());
    assert_eq!(app.qido("/dicomweb/studies?StudyTime=101500").await.len(), 4);
    // UID lists, modalities in study.
    let list = format!("{},{}", f.studies[0].0, f.studies[3].0);
    assert_eq!(pids(&app.qido(&format!("/dicomweb/studies?StudyInstanceUID={list}")).await), ["P1", "P4"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?ModalitiesInStudy=MR").await), ["P2"]);
    assert_eq!(pids(&app.qido("/dicomweb/studies?ModalitiesInStudy=US,MR").await), ["P2", "P4"]);
    // Nothing matches: 200 [].
    assert!(app.qido("/dicomweb/studies?PatientName=Nobody").await.is_empty());
    // Returned attributes and counts.
    let r = app.qido("/dicomweb/studies?PatientID=P2").await;
    let s = &r[0];
    assert_eq!(s["00201206"]["Value"][0], 2);
    assert_eq!(s["00201208"]["Value"][0], 2);
    let mods: Vec<&str> = s["00080061"]["Value"].as_array().expect("mods").iter().filter_map(|m| m.as_str()).collect();
    assert_eq!(mods, ["MR", "SR"]);
    assert!(json_str(s, "00081190").expect("RetrieveURL").ends_with(&format!("/dicomweb/studies/{}", f.studies[1].0)));
    assert!(s.get("00280010").is_none(), "Rows is not a study attribute");
    let r = app.qido("/dicomweb/studies?PatientID=P2&includefield=00280010,PatientSex").await;
    assert_eq!(r[0]["00280010"]["Value"][0], 16);
    assert_eq!(json_str(&r[0], "00100040").as_deref(), Some("F"));
    let r = app.qido("/dicomweb/studies?PatientID=P2&includefield=all").await;
    assert!(r[0].get("00280100").is_some());
    // Paging.
    let page1 = app.qido("/dicomweb/studies?limit=3").await;
    let page2 = app.qido("/dicomweb/studies?limit=3&offset=3").await;
    assert_eq!((page1.len(), page2.len()), (3, 1));
    let mut all = pids(&page1);
    all.extend(pids(&page2));
    all.sort();
    assert_eq!(all, ["P1", "P2", "P3", "P4"]);
    let resp = app.get("/dicomweb/studies?limit=1", "application/dicom+json").await;
    assert!(resp.headers().get("warning").is_some(), "more results are announced");
    // Bad input.
    assert_eq!(app.get("/dicomweb/studies?StudyDate=2023", "application/dicom+json").await.status(), 400);
    assert_eq!(app.get("/dicomweb/studies?NoSuchKeyword=1", "application/dicom+json").await.status(), 400);
    assert_eq!(app.get("/dicomweb/studies?limit=-1", "application/dicom+json").await.status(), 400);
    assert_eq!(app.get("/dicomweb/studies", "application/xml").await.status(), 406);
}

#[tokio::test]
async fn series_and_instance_search() {
    let f = fixture().await;
    let app = &f.app;
    let (study, series) = &f.studies[0];
    let s = app.qido(&format!("/dicomweb/studies/{study}/series")).await;
    assert_eq!(s.len(), 2);
    let ct: Vec<_> = app.qido(&format!("/dicomweb/studies/{study}/series?Modality=CT")).await;
    assert_eq!(ct.len(), 1);
    assert_eq!(json_str(&ct[0], "0020000E").as_deref(), Some(series.as_str()));
    assert_eq!(ct[0]["00201209"]["Value"][0], 1);
    assert_eq!(app.qido("/dicomweb/series?Modality=SR").await.len(), 4);
    assert_eq!(app.qido("/dicomweb/series?Modality=SR&PatientID=P1").await.len(), 1);
    let i = app.qido(&format!("/dicomweb/studies/{study}/series/{series}/instances")).await;
    assert_eq!(i.len(), 1);
    assert_eq!(i[0]["00280010"]["Value"][0], 16);
    assert!(json_str(&i[0], "00081190").expect("url").contains("/instances/"));
    assert_eq!(app.qido(&format!("/dicomweb/studies/{study}/instances")).await.len(), 2);
    assert_eq!(app.qido("/dicomweb/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.7").await.len(), 8);
    assert!(app.qido("/dicomweb/studies/1.2.3.4/series").await.is_empty());
}

/// Hostile query values found by schemathesis (a UID list of a backslash and Unicode spaces,
/// control characters, a huge offset, odd `includefield`) get an answer, never a 500 — on
/// PostgreSQL as on SQLite.
#[tokio::test]
async fn hostile_query_values_get_an_answer_not_a_server_error() {
    let app = spawn_app().await;
    let f = Synth::new(&uid(), &uid(), &uid()).bytes();
    let (status, _) = app.stow(&[&f]).await;
    assert_eq!(status, 200);
    for q in [
        "StudyDate=20240115&ModalitiesInStudy=E%3C%02%60&PatientID=%11&StudyInstanceUID=%5C%E2%80%80%E2%80%87%E2%80%83%E3%80%80%E2%80%87%E2%80%85%C2%85%E2%80%86%E2%80%A9%E2%80%A8%E2%80%8A%0D%E2%80%87%E2%80%80&includefield=%E2%80%84aLL%E2%80%AF%E2%80%80%E2%80%85%E2%81%9F%2C%E2%80%82&limit=12890&fuzzymatching=true&PatientName=&offset=9698&AccessionNumber=s%C3%9F1%28%C2%8B%F1%B4%8E%BA%C2%AAo%C2%99%1E%C2%87%7B%F2%B3%B5%86%40%F2%A0%87%BBZ%F1%83%B5%B3%C3%9E%10",
        "StudyInstanceUID=%5C",
        "StudyInstanceUID=%E2%80%80",
        "AccessionNumber=%F1%B4%8E%BA",
        "PatientID=%11",
        "ModalitiesInStudy=E%3C%02%60",
        "offset=9698&limit=12890",
    ] {
        let r = app.get(&format!("/dicomweb/studies?{q}"), "application/dicom+json").await;
        let status = r.status().as_u16();
        assert!(status < 500, "{q}: {status} {}", r.text().await.unwrap_or_default());
    }
}
