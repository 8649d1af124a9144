//! DLX (DIN/TS 19455) conformance: a client walks token → tokentfa → list → download →
//! downloadall exactly as the interface describes it, and the error cases answer as specified.

use serde_json::{Value, json};

use crate::fixtures::shares::{BIRTH, check_pdi, clinic, share_files, study_files, unzip};
use crate::fixtures::{TOKEN, spawn_app_with, uid};

const HEADER: &str = "X-DICOM-LINK-EXCHANGE";

#[tokio::test]
async fn a_dlx_client_redeems_lists_and_downloads() {
    let app = spawn_app_with(|_| {}).await;
    let staff = clinic(&app).await;
    let (s1, s2) = (uid(), uid());
    let mut files = study_files(&s1, 2);
    files.extend(study_files(&s2, 1));
    let issued = share_files(&app, &staff, &files, json!({})).await;
    let code = issued["code"].as_str().unwrap();
    let id = issued["share"]["id"].as_str().unwrap();
    let pdf = b"%PDF-1.7\n% report\n%%EOF\n".to_vec();
    let r = staff
        .post(&app, &format!("/api/v1/shares/{id}/reports?study={s1}"))
        .header("content-type", "application/pdf")
        .body(pdf.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let c = &app.client;

    let info: Value = c.get(app.url("/dlx/v1/api_info")).send().await.unwrap().json().await.unwrap();
    assert_eq!(info["dlxVersion"], "v1");
    assert_eq!(info["apiBasePath"], format!("{}/dlx/v1", app.base));

    // The question: the share's own, and for an unknown code a default one (always 200).
    let q: Value = c.get(app.url(&format!("/dlx/v1/token/{code}"))).header(HEADER, "1").send().await.unwrap().json().await.unwrap();
    assert_eq!(q["tfaQuestion"][0]["questionType"], "PAT_BIRTH_DATE");
    assert_eq!(q["tfaQuestion"][0]["answerFormat"], "DATE");
    let langs: Vec<&str> = q["tfaQuestion"][0]["question"].as_array().unwrap().iter().map(|t| t["language"].as_str().unwrap()).collect();
    assert_eq!(langs, ["de", "en"]);
    let unknown = c.get(app.url("/dlx/v1/token/ABC-S1Z-98A")).header(HEADER, "1").send().await.unwrap();
    assert_eq!(unknown.status(), 200);
    let unknown: Value = unknown.json().await.unwrap();
    assert_eq!(unknown["tfaQuestion"], q["tfaQuestion"]);
    // The portal link of the QR code, asked with the DLX header, answers the same.
    let portal = c.get(app.url(&format!("/redeem?token={code}"))).header(HEADER, "1").send().await.unwrap();
    assert_eq!(portal.status(), 200);
    assert_eq!(portal.json::<Value>().await.unwrap()["tfaQuestion"], q["tfaQuestion"]);

    // Wrong answer and unknown code: 401, indistinguishable.
    let answer = |a: &str| json!({"tfaAnswer": [{"questionId": "1", "answer": a}]});
    let wrong = c.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&answer("19991231")).send().await.unwrap();
    let nobody = c.post(app.url("/dlx/v1/tokentfa/ABC-S1Z-98A")).json(&answer(BIRTH)).send().await.unwrap();
    assert_eq!((wrong.status().as_u16(), nobody.status().as_u16()), (401, 401));
    let (w, n): (Value, Value) = (wrong.json().await.unwrap(), nobody.json().await.unwrap());
    assert_eq!(w["title"], n["title"]);
    assert_eq!(w["detail"], n["detail"]);

    // The right answer: a JWT.
    let r = c.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&answer(BIRTH)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/jwt");
    let jwt = r.text().await.unwrap();
    assert_eq!(jwt.matches('.').count(), 2);

    let list: Value = c.get(app.url("/dlx/v1/list")).bearer_auth(&jwt).send().await.unwrap().json().await.unwrap();
    let items = list["dataItem"].as_array().unwrap();
    assert_eq!(items.len(), 3, "two studies and one report: {list}");
    let studies: Vec<&Value> = items.iter().filter(|i| i["mimeType"] == "application/zip").collect();
    assert_eq!(studies.len(), 2);
    for s in &studies {
        assert_eq!(s["patientsName"], "Mustermann^Erika");
        assert_eq!(s["patientsBirthdate"], BIRTH);
        assert_eq!(s["patientsSex"], "F");
        assert_eq!(s["date"], "20240115");
        assert!(s["modalities"].as_str().unwrap().contains("CT"));
    }
    let report = items.iter().find(|i| i["mimeType"] == "application/pdf").unwrap();
    assert_eq!(report["studyInstanceUID"], s1.as_str());

    // download/{id}: a study as an IHE PDI ZIP, the report as its PDF.
    let one = studies.iter().find(|s| s["studyInstanceUID"] == s2.as_str()).unwrap();
    let r = c.get(app.url(&format!("/dlx/v1/download/{}", one["id"].as_str().unwrap()))).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let z = r.bytes().await.unwrap();
    let s2_files: Vec<Vec<u8>> = files[4..].iter().map(|f| f.1.clone()).collect();
    assert_eq!(one["fileCount"], s2_files.len());
    check_pdi(&z, &s2_files);
    let r = c.get(app.url(&format!("/dlx/v1/download/{}", report["id"].as_str().unwrap()))).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/pdf");
    assert_eq!(r.bytes().await.unwrap().to_vec(), pdf);
    let r = c.get(app.url("/dlx/v1/download/nothing-like-this")).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(r.status(), 400);

    // downloadall: everything in one ZIP, the report under IHE_PDI/REPORTS.
    let r = c.get(app.url("/dlx/v1/downloadall")).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let z = r.bytes().await.unwrap();
    let all: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    check_pdi(&z, &all);
    assert!(unzip(&z).iter().any(|(n, b)| n.starts_with("IHE_PDI/REPORTS/") && *b == pdf));

    // The bearer token reads the shared studies through WADO-RS, and nothing else.
    let r = c.get(app.url(&format!("/dicomweb/studies/{s1}/metadata"))).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let other = uid();
    let (status, _) = app.stow(&[&crate::fixtures::Synth::new(&other, &uid(), &uid()).bytes()]).await;
    assert_eq!(status, 200);
    let r = c.get(app.url(&format!("/dicomweb/studies/{other}/metadata"))).bearer_auth(&jwt).send().await.unwrap();
    assert_eq!(r.status(), 404);

    // A bad or tampered bearer token: 401 everywhere.
    let mut tampered = jwt.clone();
    tampered.pop();
    tampered.push(if jwt.ends_with('A') { 'B' } else { 'A' });
    for bad in ["nonsense", tampered.as_str(), TOKEN] {
        for path in ["/dlx/v1/list", "/dlx/v1/downloadall"] {
            let r = c.get(app.url(path)).bearer_auth(bad).send().await.unwrap();
            assert_eq!(r.status(), 401, "{path} with {bad}");
        }
    }
    assert_eq!(c.get(app.url("/dlx/v1/list")).send().await.unwrap().status(), 401);

    // Expired: right answer 403, wrong answer still 401; the old bearer token stops working.
    sqlx::query("UPDATE shares SET expires_at = $1 WHERE id = $2")
        .bind(ferry_hub::db::now_ms() - 1000)
        .bind(id)
        .execute(&app.state.db_write)
        .await
        .unwrap();
    let r = c.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&answer(BIRTH)).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = c.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&answer("20000101")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(c.get(app.url("/dlx/v1/list")).bearer_auth(&jwt).send().await.unwrap().status(), 401);
}
