//! Access codes end to end: staff share studies, holders redeem with the second factor, view,
//! download the IHE PDI ZIP (checked with dcmtk, pydicom and an Orthanc import), read released
//! reports, forward and delete; the brute-force guard, revocation, expiry and retention.

use serde_json::{Value, json};

use crate::fixtures::people::{Person, browser};
use crate::fixtures::shares::*;
use crate::fixtures::{Synth, TOKEN, TestApp, spawn_app_with, uid};

/// A QIDO answer with no match (204, or 200 with an empty list).
pub async fn assert_sees_nothing(r: reqwest::Response) {
    let status = r.status().as_u16();
    let body = r.text().await.unwrap();
    assert!(status == 204 || (status == 200 && body.trim() == "[]"), "{status} {body}");
}

async fn staff_share(app: &TestApp, staff: &Person, id: &str) -> Value {
    staff.get(app, &format!("/api/v1/shares/{id}")).send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn staff_share_a_study_and_the_patient_views_downloads_and_imports_it() {
    let app = spawn_app_with(|_| {}).await;
    let staff = clinic(&app).await;
    let study = uid();
    let files = study_files(&study, 3);
    let issued = share_files(&app, &staff, &files, json!({})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    let id = issued["share"]["id"].as_str().unwrap().to_string();
    // XXXX-XXXX-XXXX from the unambiguous alphabet; the QR link carries it, never the answer.
    assert_eq!(code.len(), 14);
    assert!(code.chars().all(|c| c == '-' || "0123456789ABCDEFGHJKMNPQRSTVWXYZ".contains(c)), "{code}");
    assert_eq!(issued["redeem_url"], format!("{}/redeem?token={code}", app.base));
    assert!(issued["password"].is_null());
    assert_eq!(issued["share"]["question_type"], "PAT_BIRTH_DATE");
    assert_eq!(issued["share"]["studies"][0]["instances"], 6);
    // The code is stored only as a keyed hash.
    let stored: Vec<String> = sqlx::query_scalar("SELECT code_hash FROM shares").fetch_all(&app.state.db).await.unwrap();
    assert!(stored.iter().all(|h| !h.contains(&code.replace('-', ""))));

    // A typo is caught by the check character and does not count as a guess.
    let mut typo: Vec<char> = code.chars().collect();
    typo[0] = if typo[0] == 'A' { 'B' } else { 'A' };
    let (_, status, body) = redeem(&app, &typo.into_iter().collect::<String>(), BIRTH).await;
    assert_eq!(status, 400);
    assert!(body["detail"].as_str().unwrap().contains("typo"));
    // Wrong answer and unknown code look the same.
    let (_, wrong, wrong_body) = redeem(&app, &code, "19700102").await;
    let unknown = loop {
        let c = ferry_hub::shares::code::AccessCode::generate().display();
        if c != code {
            break c;
        }
    };
    let (_, unknown_status, unknown_body) = redeem(&app, &unknown, BIRTH).await;
    assert_eq!((wrong, unknown_status), (401, 401));
    assert_eq!(wrong_body["detail"], unknown_body["detail"]);
    assert_eq!(wrong_body["title"], unknown_body["title"]);

    // The right answer, in any usual date form, opens a session.
    let (patient, status, _) = redeem(&app, &code.to_lowercase().replace('-', " "), "01.01.1970").await;
    assert_eq!(status, 200);
    let view: Value = patient.get(app.url("/api/v1/share")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["studies"][0]["study_uid"], study.as_str());
    assert_eq!(view["studies"][0]["series"].as_array().unwrap().len(), 2);
    assert_eq!(view["can_forward"], true);
    // The viewer's images come from the hub's rendered frames, scoped to the share.
    let series = view["studies"][0]["series"][0]["series_uid"].as_str().unwrap().to_string();
    let thumb = patient.get(app.url(&format!("/dicomweb/studies/{study}/series/{series}/thumbnail"))).send().await.unwrap();
    assert_eq!(thumb.status(), 200);
    assert_eq!(thumb.headers()["content-type"], "image/jpeg");
    let found: Vec<Value> = patient.get(app.url("/dicomweb/studies")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found.len(), 1);
    // Another study on the hub stays invisible.
    let other = uid();
    let (status, _) = app.stow(&[&Synth::new(&other, &uid(), &uid()).bytes()]).await;
    assert_eq!(status, 200);
    assert_sees_nothing(patient.get(app.url(&format!("/dicomweb/studies/{other}/series"))).send().await.unwrap()).await;
    let found: Vec<Value> = patient.get(app.url("/dicomweb/studies")).send().await.unwrap().json().await.unwrap();
    assert_eq!(found.len(), 1);
    // Staff APIs are not for holders.
    assert_eq!(patient.get(app.url(&format!("/api/v1/shares/{id}"))).send().await.unwrap().status(), 404);

    // A report held back for 24 hours, and one released now.
    let later = staff
        .post(&app, &format!("/api/v1/shares/{id}/reports?release_in_hours=24"))
        .header("content-type", "application/pdf")
        .body(PDF.to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(later.status(), 201, "{}", later.text().await.unwrap());
    let later: Value = later.json().await.unwrap();
    assert_eq!(later["released"], false);
    let not_pdf = staff
        .post(&app, &format!("/api/v1/shares/{id}/reports"))
        .header("content-type", "application/pdf")
        .body(b"hello".to_vec())
        .send()
        .await
        .unwrap();
    assert_eq!(not_pdf.status(), 415);
    let now: Value = staff
        .post(&app, &format!("/api/v1/shares/{id}/reports"))
        .header("content-type", "application/pdf")
        .body(PDF.to_vec())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let view: Value = patient.get(app.url("/api/v1/share")).send().await.unwrap().json().await.unwrap();
    assert_eq!(view["reports"].as_array().unwrap().len(), 2);
    let held = patient.get(app.url(&format!("/api/v1/share/reports/{}", later["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(held.status(), 404);
    let pdf = patient.get(app.url(&format!("/api/v1/share/reports/{}", now["id"].as_str().unwrap()))).send().await.unwrap();
    assert_eq!(pdf.status(), 200);
    assert_eq!(pdf.bytes().await.unwrap().as_ref(), PDF);

    // The ZIP: announced length, IHE PDI layout, byte-identical files, the released report only.
    let r = patient.get(app.url("/api/v1/share/download")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let announced: usize = r.headers()["content-length"].to_str().unwrap().parse().unwrap();
    let zip_bytes = r.bytes().await.unwrap();
    assert_eq!(zip_bytes.len(), announced);
    let originals: Vec<Vec<u8>> = files.iter().map(|f| f.1.clone()).collect();
    let dir = check_pdi(&zip_bytes, &originals);
    let entries = unzip(&zip_bytes);
    let reports: Vec<&String> = entries.keys().filter(|k| k.starts_with("IHE_PDI/REPORTS/")).collect();
    assert_eq!(reports.len(), 1);
    assert_eq!(entries[reports[0]], PDF);
    assert!(String::from_utf8_lossy(&entries["INDEX.HTM"]).contains("Mustermann, Erika"));
    assert!(!String::from_utf8_lossy(&entries["INDEX.HTM"]).contains("<script"));

    // Orthanc imports the unpacked CD through its DICOMDIR's files, byte for byte.
    let orthanc = crate::fixtures::peers::Orthanc::start(&app.url("/dicomweb")).await;
    let client = reqwest::Client::new();
    let r = client.post(orthanc.url("/instances")).body(zip_bytes.to_vec()).send().await.unwrap();
    assert!(r.status().is_success(), "Orthanc import: {}", r.text().await.unwrap());
    let ids: Vec<String> = client.get(orthanc.url("/instances")).send().await.unwrap().json().await.unwrap();
    assert_eq!(ids.len(), originals.len());
    let want: Vec<String> = originals.iter().map(|b| sha(b)).collect();
    for i in ids {
        let b = client.get(orthanc.url(&format!("/instances/{i}/file"))).send().await.unwrap().bytes().await.unwrap();
        assert!(want.contains(&sha(&b)), "Orthanc holds a file that differs from what was sent");
    }
    drop(dir);

    // One study alone.
    let one = patient.get(app.url(&format!("/api/v1/share/studies/{study}/download"))).send().await.unwrap();
    assert_eq!(one.status(), 200);
    check_pdi(&one.bytes().await.unwrap(), &originals);

    // Staff see the access: last access and the audit log of redemptions and downloads.
    let s = staff_share(&app, &staff, &id).await;
    assert!(s["last_access_at"].is_i64());
    let log: Vec<Value> = staff.get(&app, &format!("/api/v1/shares/{id}/log")).send().await.unwrap().json().await.unwrap();
    let actions: Vec<(String, String)> =
        log.iter().map(|e| (e["action"].as_str().unwrap().into(), e["result"].as_str().unwrap().into())).collect();
    assert!(actions.contains(&("share.redeem".into(), "ok".into())));
    assert!(actions.contains(&("share.redeem".into(), "denied".into())));
    assert!(actions.contains(&("share.download".into(), "ok".into())));
    assert!(log.iter().all(|e| !e.to_string().contains("Mustermann")));

    // Someone outside the clinic sees neither the share nor its list.
    let outsider = app.person("else@where.example", "Other Doctor").await;
    assert_eq!(outsider.get(&app, &format!("/api/v1/shares/{id}")).send().await.unwrap().status(), 404);
    assert_eq!(outsider.get(&app, "/api/v1/shares?community=RAD1").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn wrong_answers_lock_the_code_until_time_passes_or_staff_unlock_it() {
    let app = spawn_app_with(|c| c.shares.rate_burst = 1000).await;
    let staff = clinic(&app).await;
    let issued = share_files(&app, &staff, &study_files(&uid(), 1), json!({"second_factor": "password"})).await;
    let code = issued["code"].as_str().unwrap();
    let password = issued["password"].as_str().unwrap();
    let id = issued["share"]["id"].as_str().unwrap();
    assert_eq!(password.len(), 11);
    for _ in 0..5 {
        assert_eq!(redeem(&app, code, "WRONG-GUESS").await.1, 401);
    }
    // Locked: even the right password is refused, with the same answer as a wrong one.
    let (_, status, body) = redeem(&app, code, password).await;
    assert_eq!(status, 401);
    assert!(body["detail"].as_str().unwrap().contains("wrong"));
    let s = staff_share(&app, &staff, id).await;
    assert_eq!(s["locked"], true);
    assert_eq!(s["failed_attempts"], 5);
    let r = staff.post(&app, &format!("/api/v1/shares/{id}/unlock")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // Typed loosely (lower case, no hyphen) the password still counts.
    let (_, status, _) = redeem(&app, code, &password.to_lowercase().replace('-', "")).await;
    assert_eq!(status, 200);
    assert_eq!(staff_share(&app, &staff, id).await["failed_attempts"], 0);
}

#[tokio::test]
async fn the_redeem_endpoint_is_rate_limited_per_client() {
    let app = spawn_app_with(|c| {
        c.shares.rate_burst = 3;
        c.shares.rate_period_ms = 60_000;
    })
    .await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let code = ferry_hub::shares::code::AccessCode::generate().display();
        statuses.push(redeem(&app, &code, BIRTH).await.1);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401]);
    assert!(statuses[3..].iter().all(|s| *s == 429), "{statuses:?}");
    let dlx = app.client.post(app.url("/dlx/v1/tokentfa/ABCD-EFGH-JKMN")).json(&json!({"tfaAnswer": []})).send().await.unwrap();
    assert_eq!(dlx.status(), 429, "one budget per client for every way of redeeming");
}

#[tokio::test]
async fn revoking_ends_sessions_and_forwarded_codes_and_extension_moves_the_expiry() {
    let app = spawn_app_with(|_| {}).await;
    let staff = clinic(&app).await;
    // Two studies of the patient came to the clinic by transfer; staff share both by patient ID.
    let referrer = app.person("doc@praxis.example", "Dr. Sender").await;
    let (a, b) = (uid(), uid());
    let files: Vec<(&str, Vec<u8>)> =
        vec![("a.dcm", Synth::new(&a, &uid(), &uid()).bytes()), ("b.dcm", Synth::new(&b, &uid(), &uid()).bytes())];
    app.send_transfer(&referrer, "RAD1", &files).await;
    let r = staff
        .post(&app, "/api/v1/shares")
        .json(&json!({"community": "RAD1", "patient_id": "PID-0001", "expires_in_days": 28}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let issued: Value = r.json().await.unwrap();
    assert_eq!(issued["share"]["studies"].as_array().unwrap().len(), 2);
    let id = issued["share"]["id"].as_str().unwrap().to_string();
    let expires = issued["share"]["expires_at"].as_i64().unwrap();
    let code = issued["code"].as_str().unwrap().to_string();
    // Studies the clinic does not hold cannot be shared.
    let r = staff.post(&app, "/api/v1/shares").json(&json!({"community": "RAD1", "studies": [uid()]})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = staff
        .post(&app, "/api/v1/shares")
        .json(&json!({"community": "RAD1", "studies": [a], "expires_in_days": 5000}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // The patient forwards study `a` to another doctor, with a password.
    let (patient, status, _) = redeem(&app, &code, BIRTH).await;
    assert_eq!(status, 200);
    let r = patient
        .post(app.url("/api/v1/share/forward"))
        .json(&json!({"studies": [a], "second_factor": "password", "expires_in_days": 365}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    let fwd: Value = r.json().await.unwrap();
    assert!(fwd["share"]["expires_at"].as_i64().unwrap() <= expires, "a forwarded code never outlives its parent");
    let (doctor, status, _) = redeem(&app, fwd["code"].as_str().unwrap(), fwd["password"].as_str().unwrap()).await;
    assert_eq!(status, 200);
    let seen: Value = doctor.get(app.url("/api/v1/share")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen["studies"].as_array().unwrap().len(), 1);
    assert_eq!(seen["can_forward"], false);
    assert_sees_nothing(doctor.get(app.url(&format!("/dicomweb/studies/{b}/series"))).send().await.unwrap()).await;

    // Staff extend by 3 months, then revoke: every session of the share and of its forwarded code ends.
    let r = staff.post(&app, &format!("/api/v1/shares/{id}/extend")).json(&json!({"days": 90})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let extended: Value = r.json().await.unwrap();
    assert_eq!(extended["expires_at"].as_i64().unwrap(), expires + 90 * 86_400_000);
    let r = staff.post(&app, &format!("/api/v1/shares/{id}/revoke")).send().await.unwrap();
    assert_eq!(r.json::<ferry_schemas::Share>().await.unwrap().state, ferry_schemas::ShareState::Revoked);
    assert_eq!(patient.get(app.url("/api/v1/share")).send().await.unwrap().status(), 401);
    assert_eq!(doctor.get(app.url("/api/v1/share")).send().await.unwrap().status(), 401);
    assert_eq!(redeem(&app, &code, BIRTH).await.1, 401);
    assert_eq!(redeem(&app, fwd["code"].as_str().unwrap(), fwd["password"].as_str().unwrap()).await.1, 401);
    let list: Vec<Value> = staff.get(&app, "/api/v1/shares?community=RAD1&state=revoked").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 2);
    // The transfer still holds the studies: the clinic keeps them.
    let studies: Vec<Value> = staff.get(&app, "/dicomweb/studies").send().await.unwrap().json().await.unwrap();
    assert_eq!(studies.len(), 2);
}

/// Every object key in the blob store.
async fn blob_keys(app: &TestApp) -> Vec<String> {
    use futures_util::TryStreamExt;
    app.state.blobs.raw().list(None).map_ok(|m| m.location.to_string()).try_collect().await.unwrap()
}

#[tokio::test]
async fn expired_shares_are_deleted_for_good_and_patients_can_delete_theirs() {
    let app = spawn_app_with(|c| {
        c.retention.interval_secs = 1;
        c.retention.grace_secs = 0;
    })
    .await;
    let staff = clinic(&app).await;
    let study = uid();
    let files = study_files(&study, 2);
    let soon = ferry_hub::db::now_ms() + 2500;
    let issued = share_files(&app, &staff, &files, json!({"expires_at": soon})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    let id = issued["share"]["id"].as_str().unwrap().to_string();
    let (patient, status, _) = redeem(&app, &code, BIRTH).await;
    assert_eq!(status, 200);
    assert_eq!(blob_keys(&app).await.len(), files.len());
    // Past its time the right answer gets 403 (DLX: expired), until the purge removes it.
    tokio::time::sleep(std::time::Duration::from_millis(soon as u64 - ferry_hub::db::now_ms() as u64 + 100)).await;
    assert_eq!(patient.get(app.url("/api/v1/share")).send().await.unwrap().status(), 401);
    // Within a few retention runs nothing of the study is left anywhere.
    let mut gone = false;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        if blob_keys(&app).await.is_empty() {
            gone = true;
            break;
        }
    }
    assert!(gone, "blobs left: {:?}", blob_keys(&app).await);
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM study_keys").fetch_one(&app.state.db).await.unwrap();
    assert_eq!(keys, 0, "the study's data key is shredded");
    let r = app
        .client
        .get(app.url(&format!("/dicomweb/studies/{study}")))
        .bearer_auth(TOKEN)
        .header("accept", "multipart/related; type=\"application/dicom\"")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    assert!(app.qido("/dicomweb/studies").await.is_empty());
    assert_eq!(redeem(&app, &code, BIRTH).await.1, 401);
    assert_eq!(staff.get(&app, &format!("/api/v1/shares/{id}")).send().await.unwrap().status(), 404);
    // Running it again is harmless.
    assert_eq!(ferry_hub::retention::run_once(&app.state).await.unwrap(), 0);

    // A patient deletes a share: the data goes at once.
    let study2 = uid();
    let issued = share_files(&app, &staff, &study_files(&study2, 1), json!({})).await;
    let (patient, status, _) = redeem(&app, issued["code"].as_str().unwrap(), BIRTH).await;
    assert_eq!(status, 200);
    assert_eq!(blob_keys(&app).await.len(), 2);
    let r = patient.delete(app.url("/api/v1/share")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert!(blob_keys(&app).await.is_empty());
    assert_eq!(patient.get(app.url("/api/v1/share")).send().await.unwrap().status(), 401);
}

/// `ferry-hub share create` on the hub's database: the code, and a sheet whose QR code (rendered
/// with pdftoppm, read with zbarimg) carries the redeem link — which then works.
#[tokio::test]
async fn the_cli_shares_a_patients_studies_and_the_sheets_qr_code_leads_to_them() {
    let app = spawn_app_with(|_| {}).await;
    let staff = clinic(&app).await;
    let referrer = app.person("doc@praxis.example", "Dr. Sender").await;
    let study = uid();
    let file = Synth::new(&study, &uid(), &uid()).bytes();
    app.send_transfer(&referrer, "RAD1", &[("a.dcm", file)]).await;
    let sheet = app.dir.path().join("sheet.pdf");
    let out = std::process::Command::new(crate::fixtures::hub_binary())
        .env("FERRY_DATABASE__URL", &app.database_url)
        .env("FERRY_PUBLIC_URL", &app.base)
        .args(["share", "create", "--community", "RAD1", "--patient-id", "PID-0001", "--second-factor", "password", "--days", "28"])
        .arg("--data-dir")
        .arg(app.dir.path())
        .arg("--sheet")
        .arg(&sheet)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    let line = |k: &str| {
        printed.lines().find_map(|l| l.strip_prefix(k).map(|v| v.trim().to_string())).unwrap_or_else(|| panic!("{k} in {printed}"))
    };
    let (code, password, link) = (line("code"), line("password"), line("link"));
    assert!(!printed.contains("Mustermann"), "no patient data on the console");
    let expires = line("expires");
    assert!(expires.starts_with("20") && expires.ends_with(" UTC") && expires.contains('-'), "a date a person reads: {expires}");

    // The sheet: two pages (the password on its own slip); the QR code decodes to the link.
    let png = app.dir.path().join("page");
    let st = std::process::Command::new("pdftoppm").args(["-r", "150", "-png"]).arg(&sheet).arg(&png).status().unwrap();
    assert!(st.success());
    let page1 = app.dir.path().join("page-1.png");
    assert!(page1.exists() && app.dir.path().join("page-2.png").exists());
    let out = std::process::Command::new("zbarimg").args(["--quiet", "--raw"]).arg(&page1).output().unwrap();
    assert!(out.status.success(), "no QR code found on the sheet");
    let decoded = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert_eq!(decoded, link);
    assert_eq!(decoded, format!("{}/redeem?token={code}", app.base));
    let text = std::process::Command::new("pdftotext")
        .arg(&sheet)
        .arg("-")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    if !text.is_empty() {
        assert!(text.contains(&code) && text.contains(&password) && text.contains("Verfügbar bis"), "{text}");
    }
    // Following the link and answering with the password opens the study.
    let b = browser();
    let page = b.get(&decoded).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(&code), "the code arrives filled in");
    let r = b.post(app.url("/redeem")).form(&[("token", code.as_str()), ("answer", password.as_str())]).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let overview = b.get(app.url("/s")).send().await.unwrap().text().await.unwrap();
    assert!(overview.contains(&study));
    // Staff see the share, made by the CLI.
    let list: Vec<Value> = staff.get(&app, "/api/v1/shares").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["created_by"], "cli");
    // Bad input is explained.
    let out = std::process::Command::new(crate::fixtures::hub_binary())
        .env("FERRY_DATABASE__URL", &app.database_url)
        .args(["share", "create", "--community", "RAD1", "--study", "1.2.3.4"])
        .arg("--data-dir")
        .arg(app.dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("holds no study"), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Staff pick "a question of your own" on the issue form: the redeem page and DLX ask exactly
/// that question, and its answer (case and spacing aside) opens the share.
#[tokio::test]
async fn the_issue_form_takes_a_question_of_the_clinics_own() {
    let app = spawn_app_with(|_| {}).await;
    let staff = clinic(&app).await;
    let r = staff.post(&app, "/api/v1/shares").json(&json!({"community": "RAD1"})).send().await.unwrap();
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    let mut form = reqwest::multipart::Form::new();
    for (name, bytes) in study_files(&uid(), 1) {
        form = form.part("file", reqwest::multipart::Part::bytes(bytes).file_name(name));
    }
    assert_eq!(staff.post(&app, &format!("/api/v1/shares/{id}/files")).multipart(form).send().await.unwrap().status(), 200);
    let page = staff
        .browser
        .post(app.url(&format!("/shares/{id}/issue")))
        .header("origin", &app.base)
        .form(&[("second_factor", "custom"), ("question", "Name Ihres Hausarztes?"), ("answer", "Dr. Weber"), ("days", "28")])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let code = html
        .split("id=\"code\"")
        .nth(1)
        .and_then(|t| t.split('>').nth(1))
        .and_then(|t| t.split('<').next())
        .unwrap_or_default()
        .trim()
        .to_string();
    assert_eq!(code.len(), 14, "the code on the issued page: {html}");
    let q: Value = app
        .client
        .get(app.url(&format!("/dlx/v1/token/{code}")))
        .header("X-DICOM-LINK-EXCHANGE", "1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(q["tfaQuestion"][0]["questionType"], "CUSTOM");
    assert!(q["tfaQuestion"][0]["question"].to_string().contains("Name Ihres Hausarztes?"), "{q}");
    assert_eq!(redeem(&app, &code, "dr weber").await.1, 401, "the answer must match (spacing/case aside, not punctuation)");
    assert_eq!(redeem(&app, &code, " DR. WEBER ").await.1, 200);
}
