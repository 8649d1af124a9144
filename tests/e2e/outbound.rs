//! The connector between the clinic's PACS and the hub in the other two directions: Orthanc
//! sends studies to the connector's Storage SCP, whose routes turn them into a patient access
//! code (the sheet lands in a folder and goes to a print command) or a transfer to another
//! community; and clinic staff import a code a patient brought, over DLX, into their PACS.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sha2::Digest;

use crate::fixtures::peers::{Orthanc, free_port};
use crate::fixtures::site::{Site, dimse, stdout};
use crate::fixtures::*;

fn sha(b: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(b))
}

/// Puts a file into Orthanc over its REST API; returns Orthanc's id of the file's study.
async fn orthanc_upload(o: &Orthanc, bytes: Vec<u8>) -> String {
    let r: Value = reqwest::Client::new().post(o.url("/instances")).body(bytes).send().await.unwrap().json().await.unwrap();
    r["ParentStudy"].as_str().expect("ParentStudy").to_string()
}

async fn orthanc_post(o: &Orthanc, path: &str, body: Value) -> (u16, String) {
    let r = reqwest::Client::new().post(o.url(path)).json(&body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

fn code_in(text: &str) -> Option<String> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .find(|w| w.len() == 14 && w.as_bytes()[4] == b'-' && w.as_bytes()[9] == b'-')
        .map(str::to_string)
}

async fn wait_for<T>(site: &Site, what: &str, secs: u64, mut probe: impl AsyncFnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(t0.elapsed() < Duration::from_secs(secs), "{what} did not happen within {secs} s; the connector's log:\n{}", site.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Orthanc sends a CT study and an MR study to the connector's SCP (C-ECHO first). The MR study
/// goes by the tag route to another community as a transfer in the name of the sending account;
/// the CT study becomes an access code: the sheet PDF appears in the sheet folder and is handed
/// to the print command, and its code opens exactly the data sets Orthanc sent. A caller not on
/// the allowed list is refused at association time.
#[tokio::test]
async fn the_pacs_sends_studies_that_become_a_sheet_or_a_transfer() {
    let app = spawn_app().await;
    app.community("Radiologie Ost", "oSt1", "Saarbrücken").await;
    app.community("Klinik Nord", "nRd1", "Homburg").await;
    let staff = app.person("versand@ost.example", "Versand Ost").await;
    app.add_member("oSt1", "versand@ost.example", "member").await;
    let creds = app.connector("oSt1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let port = free_port();
    let out = tempfile::tempdir().unwrap();
    let (sheets, printed) = (out.path().join("sheets"), out.path().join("printed"));
    std::fs::create_dir_all(&printed).unwrap();
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "[outbound]\nlisten = \"127.0.0.1:{port}\"\nae_title = \"FERRYOUT\"\nallowed_callers = [\"ORTHANC\"]\nsettle_secs = 1\n\n\
             [[outbound.routes]]\nname = \"nord\"\ntag = \"Modality\"\nvalue = \"mr\"\naction = \"transfer\"\ncommunity = \"nRd1\"\nsender_token = {:?}\nnote = \"Befund anbei\"\n\n\
             [[outbound.routes]]\nname = \"patient\"\ncalling_ae = \"ORTHANC\"\naction = \"share\"\nsheet_dir = {:?}\nprint_command = [\"cp\", \"-t\", {:?}]\nexpires_in_days = 28\n",
            staff.token,
            sheets.to_str().unwrap(),
            printed.to_str().unwrap()
        ),
    );
    let mut child = site.spawn();
    wait_for(&site, "the SCP listening", 30, async || std::net::TcpStream::connect(("127.0.0.1", port)).ok()).await;

    let (ct, mr) = (uid(), uid());
    let ct_files: Vec<Vec<u8>> = (0..3).map(|_| Synth::new(&ct, &uid(), &uid()).bytes()).collect();
    let se = uid();
    let mr_files: Vec<Vec<u8>> = (0..2)
        .map(|_| {
            let mut s = Synth::new(&mr, &se, &uid());
            s.modality = "MR".into();
            s.bytes()
        })
        .collect();
    let mut ct_id = String::new();
    for f in &ct_files {
        ct_id = orthanc_upload(&orthanc, f.clone()).await;
    }
    let mut mr_id = String::new();
    for f in &mr_files {
        mr_id = orthanc_upload(&orthanc, f.clone()).await;
    }
    let client = reqwest::Client::new();
    let r = client
        .put(orthanc.url("/modalities/ferry"))
        .json(&json!({"AET": "FERRYOUT", "Host": "127.0.0.1", "Port": port}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let (st, body) = orthanc_post(&orthanc, "/modalities/ferry/echo", json!({})).await;
    assert_eq!(st, 200, "C-ECHO from Orthanc: {body}");
    let (st, body) = orthanc_post(&orthanc, "/modalities/ferry/store", json!({"Resources": [ct_id, mr_id], "Synchronous": true})).await;
    assert_eq!(st, 200, "C-STORE from Orthanc: {body}");

    // The MR study: a transfer to Klinik Nord, sent in the sending account's name.
    let transfer = wait_for(&site, "the MR transfer", 60, async || {
        let list: Vec<Value> = staff.get(&app, "/api/v1/transfers").send().await.ok()?.json().await.ok()?;
        list.into_iter().find(|t| t["community"] == "nRd1" && t["state"] == "sent")
    })
    .await;
    assert_eq!(transfer["instances"], 2);
    assert_eq!(transfer["reason"], "Befund anbei");
    let studies: Vec<String> =
        transfer["studies"].as_array().unwrap().iter().map(|s| s["study_uid"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(studies, vec![mr.clone()], "{transfer}");

    // The CT study: a sheet in the folder, and a copy handed to the print command.
    let sheet = wait_for(&site, "the sheet", 60, async || {
        std::fs::read_dir(&sheets).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "pdf"))
    })
    .await;
    let name = sheet.file_name().unwrap().to_owned();
    wait_for(&site, "the printed copy", 10, async || printed.join(&name).exists().then_some(())).await;
    let pdf = std::fs::read(&sheet).unwrap();
    assert!(pdf.starts_with(b"%PDF"));
    assert_eq!(std::fs::read(printed.join(&name)).unwrap(), pdf);
    let text = std::process::Command::new("pdftotext")
        .arg(&sheet)
        .arg("-")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap();
    let code = code_in(&text).unwrap_or_else(|| panic!("no code on the sheet: {text}"));
    let (holder, status, _) = crate::fixtures::shares::redeem(&app, &code, crate::fixtures::shares::BIRTH).await;
    assert_eq!(status, 200);
    let zip = holder.get(app.url("/api/v1/share/download")).send().await.unwrap().bytes().await.unwrap();
    let mut got: Vec<String> =
        crate::fixtures::shares::unzip(&zip).into_iter().filter(|(n, _)| n.contains("/IMG")).map(|(_, b)| sha(dataset(&b))).collect();
    got.sort();
    let mut want: Vec<String> = ct_files.iter().map(|b| sha(dataset(b))).collect();
    want.sort();
    assert_eq!(got, want, "the code opens exactly the data sets Orthanc sent, byte for byte");
    let shares: Vec<Value> = staff.get(&app, "/api/v1/shares").send().await.unwrap().json().await.unwrap();
    assert_eq!(shares.len(), 1, "one share: the MR study went elsewhere");
    assert!(
        shares[0]["expires_at"].as_i64().unwrap()
            < (std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64) + 29 * 86_400_000
    );

    // A caller the connector does not know is refused; nothing new is kept.
    let f = out.path().join("x.dcm");
    std::fs::write(&f, Synth::new(&uid(), &uid(), &uid()).bytes()).unwrap();
    let o = std::process::Command::new("storescu")
        .args(["-aet", "INTRUDER", "-aec", "FERRYOUT", "127.0.0.1", &port.to_string()])
        .arg(&f)
        .output()
        .unwrap();
    assert!(!o.status.success() || String::from_utf8_lossy(&o.stderr).contains("Rejected"), "{}", String::from_utf8_lossy(&o.stderr));

    let _ = child.kill();
    let _ = child.wait();
    let status = site.cmd(&["status"]).await;
    let text = stdout(&status);
    assert!(text.contains("outbound studies done: 2") && !text.contains("failed"), "{text}");
}

/// What the SCP confirmed survives `kill -9` of the connector before the study was routed, and
/// a hub that is down when the connector routes: after both come back the study becomes exactly
/// one share, whose password sheet opens every data set the PACS sent.
#[tokio::test]
async fn what_the_scp_confirmed_survives_a_killed_connector_and_a_hub_outage() {
    let mut app = spawn_app().await;
    app.community("Radiologie Fest", "fSt1", "Saarlouis").await;
    let staff = app.person("mta@fest.example", "MTA Fest").await;
    app.add_member("fSt1", "mta@fest.example", "member").await;
    let creds = app.connector("fSt1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let port = free_port();
    let sheets = tempfile::tempdir().unwrap();
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "[outbound]\nlisten = \"127.0.0.1:{port}\"\nsettle_secs = 2\n\n[[outbound.routes]]\nname = \"patient\"\naction = \"share\"\nsecond_factor = \"password\"\nsheet_dir = {:?}\n\n[inbound]\nretry_max_secs = 1\n",
            sheets.path().to_str().unwrap()
        ),
    );
    let mut child = site.spawn();
    wait_for(&site, "the SCP listening", 30, async || std::net::TcpStream::connect(("127.0.0.1", port)).ok()).await;
    let study = uid();
    let files: Vec<Vec<u8>> = (0..20).map(|_| Synth::new(&study, &uid(), &uid()).bytes()).collect();
    let mut oid = String::new();
    for f in &files {
        oid = orthanc_upload(&orthanc, f.clone()).await;
    }
    let client = reqwest::Client::new();
    let r = client
        .put(orthanc.url("/modalities/ferry"))
        .json(&json!({"AET": "FERRY", "Host": "127.0.0.1", "Port": port}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());
    let (st, body) = orthanc_post(&orthanc, "/modalities/ferry/store", json!({"Resources": [oid], "Synchronous": true})).await;
    assert_eq!(st, 200, "{body}");
    // Every C-STORE was answered; the study is not routed yet (2 s settle). Kill -9, hub down.
    child.kill().unwrap();
    child.wait().unwrap();
    app.crash().await;
    assert_eq!(std::fs::read_dir(sheets.path()).unwrap().count(), 0);

    let mut child = site.spawn();
    wait_for(&site, "a failed attempt to reach the hub", 30, async || site.log().contains("will retry").then_some(())).await;
    app.crash_and_restart().await;
    let sheet = wait_for(&site, "the sheet", 60, async || {
        std::fs::read_dir(sheets.path()).ok()?.filter_map(|e| e.ok()).map(|e| e.path()).find(|p| p.extension().is_some_and(|x| x == "pdf"))
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::process::Command::new("pdftotext")
        .arg(&sheet)
        .arg("-")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap();
    let code = code_in(&text).unwrap_or_else(|| panic!("no code on the sheet: {text}"));
    let shares: Vec<Value> = staff.get(&app, "/api/v1/shares").send().await.unwrap().json().await.unwrap();
    assert_eq!(shares.len(), 1, "exactly one share");
    assert_eq!(shares[0]["studies"][0]["instances"], 20, "{}", shares[0]);
    // The password is on the sheet's second page (label, community, password, advice).
    let pages: Vec<&str> = text.split('\u{c}').collect();
    assert!(pages.len() >= 2, "a second page: {text}");
    let password = pages[1].lines().map(str::trim).filter(|l| !l.is_empty()).nth(2).unwrap_or_default().to_string();
    assert!(!password.is_empty() && !pages[0].contains(&password), "the password is on its own page: {text}");
    let (holder, status, _) = crate::fixtures::shares::redeem(&app, &code, &password).await;
    assert_eq!(status, 200, "password {password:?} from page 2: {}", pages[1]);
    let zip = holder.get(app.url("/api/v1/share/download")).send().await.unwrap().bytes().await.unwrap();
    let mut got: Vec<String> =
        crate::fixtures::shares::unzip(&zip).into_iter().filter(|(n, _)| n.contains("/IMG")).map(|(_, b)| sha(dataset(&b))).collect();
    got.sort();
    let mut want: Vec<String> = files.iter().map(|b| sha(dataset(b))).collect();
    want.sort();
    assert_eq!(got, want);
}

/// A patient brings a code from another portal (here: a Ferry hub, over its DLX API). Staff run
/// `ferry-connector import`: it asks for the missing answer, refuses a wrong one in plain words,
/// and with the right one stores every instance into the clinic's Orthanc under the prefixed
/// Patient ID — UIDs and pixel data unchanged — and saves the released report PDF.
#[tokio::test]
async fn staff_import_a_code_the_patient_brought_into_their_pacs() {
    let app = spawn_app().await;
    let staff = crate::fixtures::shares::clinic(&app).await;
    let study = uid();
    let files = crate::fixtures::shares::study_files(&study, 2);
    let issued = crate::fixtures::shares::share_files(&app, &staff, &files, json!({})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    let id = issued["share"]["id"].as_str().unwrap();
    let r = staff
        .post(&app, &format!("/api/v1/shares/{id}/reports"))
        .header("content-type", "application/pdf")
        .body(crate::fixtures::shares::PDF.to_vec())
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success());

    app.community("Praxis Import", "iMp1", "Homburg").await;
    let creds = app.connector("iMp1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "{}[inbound.reconcile]\npatient_id = \"prefix\"\nprefix = \"EXT-\"\nissuer = \"PRAXIS-IMP\"\n",
            dimse("orthanc", orthanc.dicom, "ORTHANC", "")
        ),
    );
    let reports = site.dir.path().join("reports");
    let reports_arg = reports.to_str().unwrap().to_string();

    let out = site.cmd(&["import", "--code", &code, "--reports-dir", &reports_arg]).await;
    let text = stdout(&out);
    assert!(!out.status.success() && text.contains("asks 1 question") && text.contains("YYYYMMDD"), "{text}");
    let out = site.cmd(&["import", "--code", &code, "--answer", "02.02.1970", "--reports-dir", &reports_arg]).await;
    let text = stdout(&out);
    assert!(!out.status.success() && text.contains("did not accept the code or the answer"), "{text}");
    assert!(orthanc.stored().await.is_empty());

    let out = site.cmd(&["import", "--code", &code, "--answer", "01.01.1970", "--portal", &app.base, "--reports-dir", &reports_arg]).await;
    let text = stdout(&out);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("imported 4 instance(s) of 1 study(ies) into orthanc"), "{text}");
    assert!(!text.contains("Mustermann") && !text.contains("PID-0001"), "no patient data on the console: {text}");
    let saved: Vec<_> = std::fs::read_dir(&reports).unwrap().filter_map(|e| e.ok()).collect();
    assert_eq!(saved.len(), 1);
    assert_eq!(std::fs::read(saved[0].path()).unwrap(), crate::fixtures::shares::PDF);

    let stored = orthanc.stored().await;
    let mut want: Vec<String> = files
        .iter()
        .map(|(_, b)| dicom_object::from_reader(&b[128..]).map(|o| text_of(&o, dicom_dictionary_std::tags::SOP_INSTANCE_UID)).unwrap())
        .collect();
    want.sort();
    assert_eq!(stored.keys().cloned().collect::<Vec<_>>(), want, "every instance once, same SOP Instance UIDs");
    let client = reqwest::Client::new();
    let ids: Vec<String> = client.get(orthanc.url("/instances")).send().await.unwrap().json().await.unwrap();
    for oid in ids {
        let bytes = client.get(orthanc.url(&format!("/instances/{oid}/file"))).send().await.unwrap().bytes().await.unwrap();
        let obj = dicom_object::from_reader(&bytes[128..]).unwrap();
        assert_eq!(text_of(&obj, dicom_dictionary_std::tags::PATIENT_ID), "EXT-PID-0001");
        assert_eq!(text_of(&obj, dicom_dictionary_std::tags::ISSUER_OF_PATIENT_ID), "PRAXIS-IMP");
        assert_eq!(text_of(&obj, dicom_dictionary_std::tags::STUDY_INSTANCE_UID), study);
        let sop = text_of(&obj, dicom_dictionary_std::tags::SOP_INSTANCE_UID);
        let original = files
            .iter()
            .map(|(_, b)| dicom_object::from_reader(&b[128..]).unwrap())
            .find(|o| text_of(o, dicom_dictionary_std::tags::SOP_INSTANCE_UID) == sop)
            .unwrap();
        let px =
            |o: &dicom_object::DefaultDicomObject| o.element(dicom_dictionary_std::tags::PIXEL_DATA).unwrap().to_bytes().unwrap().to_vec();
        assert_eq!(px(&obj), px(&original), "pixel data unchanged");
    }
    // Importing again changes nothing in the PACS (it keeps each instance once).
    let out = site.cmd(&["import", "--code", &code, "--answer", "19700101", "--reports-dir", &reports_arg]).await;
    assert!(out.status.success(), "{}", stdout(&out));
    assert_eq!(orthanc.stored().await.len(), 4);
}

fn text_of(o: &dicom_object::DefaultDicomObject, tag: dicom_core::Tag) -> String {
    o.element(tag).ok().and_then(|e| e.to_str().ok()).map(|s| s.trim_end_matches(['\0', ' ']).to_string()).unwrap_or_default()
}

/// With every DLX download slot taken, the portal answers 503 with `timeOutInSeconds` (as DLX
/// provides), and `ferry-connector import` waits that long and asks again instead of failing.
#[tokio::test]
async fn a_busy_portal_answers_503_and_the_import_waits_its_turn() {
    let app = spawn_app_with(|c| c.shares.dlx_parallel_downloads = 1).await;
    let staff = crate::fixtures::shares::clinic(&app).await;
    // A share big enough that its ZIP cannot vanish into socket buffers while nobody reads it.
    let (big, se) = (uid(), uid());
    let files: Vec<(String, Vec<u8>)> = (0..40)
        .map(|i| {
            let mut s = Synth::new(&big, &se, &uid());
            s.rows = 512;
            s.cols = 512;
            (format!("IMG{i}"), s.bytes())
        })
        .collect();
    let first = crate::fixtures::shares::share_files(&app, &staff, &files, json!({})).await;
    let small = crate::fixtures::shares::share_files(&app, &staff, &crate::fixtures::shares::study_files(&uid(), 1), json!({})).await;
    let answer = json!({"tfaAnswer": [{"questionId": "1", "answer": crate::fixtures::shares::BIRTH}]});
    let jwt = |code: String| {
        let (c, url, answer) = (app.client.clone(), app.url(&format!("/dlx/v1/tokentfa/{code}")), answer.clone());
        async move { c.post(url).json(&answer).send().await.unwrap().text().await.unwrap() }
    };
    let holder = jwt(first["code"].as_str().unwrap().to_string()).await;
    let held = app.client.get(app.url("/dlx/v1/downloadall")).bearer_auth(&holder).send().await.unwrap();
    assert_eq!(held.status(), 200);
    assert!(held.headers().get("content-length").is_some(), "the length is still announced");

    let other = jwt(small["code"].as_str().unwrap().to_string()).await;
    let busy = app.client.get(app.url("/dlx/v1/downloadall")).bearer_auth(&other).send().await.unwrap();
    assert_eq!(busy.status(), 503);
    assert_eq!(busy.headers()["retry-after"], "10");
    assert_eq!(busy.json::<Value>().await.unwrap(), json!({"timeOutInSeconds": 10}));

    // The connector imports the small share while the slot is taken; the slot frees after 2 s.
    app.community("Praxis Warten", "wRt1", "Homburg").await;
    let creds = app.connector("wRt1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let site = Site::new(&app, &creds, &dimse("orthanc", orthanc.dicom, "ORTHANC", ""));
    let code = small["code"].as_str().unwrap().to_string();
    let reports = site.dir.path().join("r").to_str().unwrap().to_string();
    let args = ["import", "--code", &code, "--answer", crate::fixtures::shares::BIRTH, "--reports-dir", &reports];
    let import = site.cmd(&args);
    let release = async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        drop(held);
    };
    let t0 = Instant::now();
    let (out, ()) = tokio::join!(import, release);
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(t0.elapsed() >= Duration::from_secs(9), "the import waited for the portal's timeOutInSeconds");
    assert_eq!(orthanc.stored().await.len(), 2);
}
