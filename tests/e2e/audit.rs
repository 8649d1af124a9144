//! The audit trail: records of share activity (failed redemptions included) that hub and
//! community admins query and export, scoped to what they administer; a hash chain that
//! `ferry-hub audit verify` recomputes and that names an edited, removed or cut-off record.

use serde_json::{Value, json};

use crate::fixtures::people::Person;
use crate::fixtures::shares::{BIRTH, clinic, redeem, share_files, study_files};
use crate::fixtures::{TOKEN, TestApp, spawn_app_with, uid};

fn verify(app: &TestApp) -> (bool, String) {
    let out = std::process::Command::new(crate::fixtures::hub_binary())
        .env("FERRY_DATABASE__URL", &app.database_url)
        .args(["audit", "verify", "--data-dir"])
        .arg(app.dir.path())
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Two clinics with an admin each ("RAD1": mta@rad.example, "aNd1": chef@andere.example); the
/// first shares `study`, and its code is answered once wrongly, then rightly. Returns both admins
/// and the issued share.
async fn two_clinics(app: &TestApp, study: &str) -> (Person, Person, Value) {
    let staff = clinic(app).await;
    app.add_member("RAD1", "mta@rad.example", "admin").await;
    let issued = share_files(app, &staff, &study_files(study, 1), json!({})).await;
    let code = issued["code"].as_str().unwrap();
    assert_eq!(redeem(app, code, "19991231").await.1, 401);
    assert_eq!(redeem(app, code, BIRTH).await.1, 200);
    app.community("Klinik Andere", "aNd1", "Homburg").await;
    let other = app.person("chef@andere.example", "Chef Andere").await;
    app.add_member("aNd1", "chef@andere.example", "admin").await;
    (staff, other, issued)
}

#[tokio::test]
async fn admins_query_and_export_the_chained_audit_trail_and_verify_finds_tampering() {
    let app = spawn_app_with(|_| {}).await;
    let (staff, other, issued) = two_clinics(&app, &uid()).await;
    let (code, id) = (issued["code"].as_str().unwrap(), issued["share"]["id"].as_str().unwrap());

    // The operator reads everything, newest first, filtered by share.
    let all: Vec<Value> =
        app.client.get(app.url(&format!("/api/v1/audit?share={id}"))).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let actions: Vec<(&str, &str)> = all.iter().map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    assert!(
        actions.contains(&("share.redeem", "denied"))
            && actions.contains(&("share.redeem", "ok"))
            && actions.contains(&("share.issue", "ok")),
        "{actions:?}"
    );
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    assert!(all.iter().all(|e| !e.to_string().contains("Mustermann") && !e.to_string().contains(code)), "no names, no codes in the trail");
    // The community admin sees their share's events; the other clinic's admin none of them; a
    // referrer without admin rights is refused.
    let mine: Vec<Value> = staff.get(&app, &format!("/api/v1/audit?share={id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine.len(), all.len());
    let theirs: Vec<Value> = other.get(&app, &format!("/api/v1/audit?share={id}")).send().await.unwrap().json().await.unwrap();
    assert!(theirs.is_empty());
    let nobody = app.person("ref@praxis.example", "Dr. Niemand").await;
    assert_eq!(nobody.get(&app, "/api/v1/audit").send().await.unwrap().status(), 403);
    // By patient, by time, and as JSON lines.
    let by_patient: Vec<Value> = staff.get(&app, "/api/v1/audit?patient_id=PID-0001").send().await.unwrap().json().await.unwrap();
    assert_eq!(by_patient.len(), all.len());
    let future: Vec<Value> = staff.get(&app, "/api/v1/audit?from=99999999999999").send().await.unwrap().json().await.unwrap();
    assert!(future.is_empty());
    let r = app.client.get(app.url("/api/v1/audit?format=jsonl&action=share.redeem")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/x-ndjson");
    let lines: Vec<Value> = r.text().await.unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    // Reading the trail is recorded too.
    let reads: Vec<Value> =
        app.client.get(app.url("/api/v1/audit?action=audit.read")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(reads.len() >= 5);

    // Transfers and DICOMweb: state changes, the download, a study read (once per window, however
    // many requests), a search recorded by its keys, never its values.
    let referrer = app.person("ref2@praxis.example", "Dr. Sender").await;
    let study = uid();
    let files: Vec<(String, Vec<u8>)> = study_files(&study, 1);
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let t = app.send_transfer(&referrer, "RAD1", &refs).await;
    let tid = t["id"].as_str().unwrap();
    assert_eq!(staff.get(&app, &format!("/api/v1/transfers/{tid}/download")).send().await.unwrap().status(), 200);
    for _ in 0..3 {
        let r = staff
            .get(&app, &format!("/dicomweb/studies/{study}/metadata"))
            .header("accept", "application/dicom+json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r =
        staff.get(&app, "/dicomweb/studies?PatientName=Muster*&limit=5").header("accept", "application/dicom+json").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let by_study: Vec<Value> = staff.get(&app, &format!("/api/v1/audit?study={study}")).send().await.unwrap().json().await.unwrap();
    let acts: Vec<&str> = by_study.iter().map(|e| e["action"].as_str().unwrap()).collect();
    for want in ["transfer.draft", "transfer.sent", "transfer.download"] {
        assert!(acts.contains(&want), "{want} in {acts:?}");
    }
    assert_eq!(acts.iter().filter(|a| **a == "dicomweb.read").count(), 1, "{acts:?}");
    let searches: Vec<Value> =
        app.client.get(app.url("/api/v1/audit?action=dicomweb.search")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert!(searches.iter().any(|e| e["detail"].as_str().unwrap().contains("PatientName")), "{searches:?}");
    assert!(!searches.iter().any(|e| e.to_string().contains("Muster")), "search values stay out of the trail");
    // The other clinic's admin sees none of it.
    let theirs: Vec<Value> = other.get(&app, &format!("/api/v1/audit?study={study}")).send().await.unwrap().json().await.unwrap();
    assert!(theirs.is_empty(), "{theirs:?}");

    // Sign-ins (also failed ones) and token creation; never an email address.
    assert_eq!(app.login(&crate::fixtures::people::browser(), "mta@rad.example", "wrong password").await.status(), 401);
    let accounts: Vec<Value> =
        app.client.get(app.url("/api/v1/audit?object_kind=account")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let seen: Vec<(&str, &str)> = accounts.iter().map(|e| (e["action"].as_str().unwrap(), e["result"].as_str().unwrap())).collect();
    for want in [("account.sign_in", "ok"), ("account.sign_in", "denied"), ("account.token.create", "ok")] {
        assert!(seen.contains(&want), "{want:?} in {seen:?}");
    }
    assert!(!accounts.iter().any(|e| e.to_string().contains("@")), "no email addresses in the trail");
    let theirs: Vec<Value> = other.get(&app, "/api/v1/audit?object_kind=account").send().await.unwrap().json().await.unwrap();
    assert!(theirs.is_empty(), "account records are for hub admins");

    // The export as FHIR R4 AuditEvent resources: each one valid (fhir.resources, PyPI), with
    // DICOM's event codes, the outcome of refusals, a study by its UID; still no personal data.
    let all: Vec<Value> =
        app.client.get(app.url("/api/v1/audit?limit=100000")).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    let r = app.client.get(app.url("/api/v1/audit?format=fhir&limit=100000")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
    let export = r.text().await.unwrap();
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), &export).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/fhir_audit_check.py");
    let out = std::process::Command::new("python3").arg(script).arg(file.path()).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), (all.len() + 1).to_string(), "every record, and the read before this one");
    let events: Vec<Value> = export.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let of = |action: &str, result: &str| {
        events
            .iter()
            .find(|e| e["subtype"][0]["code"] == action && (result == "ok") == (e["outcome"] == "0"))
            .unwrap_or_else(|| panic!("{action} {result}"))
    };
    let denied = of("share.redeem", "denied");
    assert_eq!((&denied["type"]["code"], &denied["outcome"], &denied["action"]), (&json!("110114"), &json!("4"), &json!("E")));
    let read = of("dicomweb.read", "ok");
    assert_eq!(read["type"]["code"], "110103");
    assert_eq!(read["entity"][0]["what"]["identifier"]["value"], format!("urn:oid:{study}"));
    assert_eq!(read["agent"][0]["network"]["address"], "127.0.0.1");
    assert_eq!(of("dicomweb.search", "ok")["type"]["code"], "110112");
    assert_eq!(of("transfer.download", "ok")["type"]["code"], "110106");
    assert_eq!(of("share.issue", "ok")["action"], "C");
    assert!(!export.contains("Mustermann") && !export.contains('@') && !export.contains(code), "no names, addresses or codes");
    assert_eq!(app.client.get(app.url("/api/v1/audit?format=xml")).bearer_auth(TOKEN).send().await.unwrap().status(), 400);

    // The chain: intact; then an edit, a removal in the middle and a cut-off end are each found.
    let (ok, out) = verify(&app);
    assert!(ok && out.contains("audit trail intact"), "{out}");
    let db = &app.state.db;
    sqlx::query("UPDATE audit_events SET detail = detail || 'x' WHERE seq = 3").execute(db).await.unwrap();
    let (ok, out) = verify(&app);
    assert!(!ok && out.contains("broken at record 3"), "{out}");
    sqlx::query("DELETE FROM audit_events WHERE seq = 3").execute(db).await.unwrap();
    let (ok, out) = verify(&app);
    assert!(!ok && out.contains("record(s) 3–3 are missing"), "{out}");
    sqlx::query("DELETE FROM audit_events WHERE seq <= 3").execute(db).await.unwrap();
    let (ok, out) = verify(&app);
    assert!(!ok && out.contains("record(s) 1–3 are missing"), "{out}");
    let last: i64 = sqlx::query_scalar("SELECT MAX(seq) FROM audit_events").fetch_one(db).await.unwrap();
    sqlx::query("DELETE FROM audit_events WHERE seq < 4 OR seq = $1").bind(last).execute(db).await.unwrap();
    sqlx::query("UPDATE audit_events SET seq = seq - 3").execute(db).await.ok();
    let (ok, out) = verify(&app);
    assert!(!ok, "renumbering after removing records does not pass: {out}");
}

/// Changes to communities, memberships, referrer approvals and connectors are recorded with who
/// made them; a community's admins read their community's records, other admins not.
#[tokio::test]
async fn changes_to_communities_members_and_connectors_are_recorded() {
    let app = spawn_app_with(|_| {}).await;
    let r = app
        .client
        .post(app.url("/api/v1/communities"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "Radiologie Saarbrücken", "code": "RAD1", "city": "Saarbrücken"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let chef = app.person("chef@rad.example", "Chef Rad").await;
    app.add_member("RAD1", "chef@rad.example", "admin").await;
    let mta = app.person("mta@rad.example", "MTA Rad").await;
    let r = chef
        .browser
        .put(app.url("/api/v1/communities/RAD1/members"))
        .json(&json!({"email": "mta@rad.example", "role": "member"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = chef
        .browser
        .patch(app.url("/api/v1/communities/RAD1"))
        .json(&json!({"requires_approval": true, "contact": "0681 1234"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let referrer = app.person("dr@praxis.example", "Dr. Praxis").await;
    let r = chef
        .browser
        .put(app.url(&format!("/api/v1/communities/RAD1/referrers/{}", referrer.id)))
        .json(&json!({"status": "approved"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    let r =
        chef.browser.post(app.url("/api/v1/communities/RAD1/connectors")).json(&json!({"name": "PACS-Anbindung"})).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let connector = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    assert_eq!(
        chef.browser.post(app.url(&format!("/api/v1/communities/RAD1/connectors/{connector}/rotate"))).send().await.unwrap().status(),
        200
    );
    assert_eq!(
        chef.browser.delete(app.url(&format!("/api/v1/communities/RAD1/connectors/{connector}"))).send().await.unwrap().status(),
        204
    );
    assert_eq!(chef.browser.delete(app.url(&format!("/api/v1/communities/RAD1/members/{}", mta.id))).send().await.unwrap().status(), 204);

    let trail: Vec<Value> = chef.get(&app, "/api/v1/audit?limit=200").send().await.unwrap().json().await.unwrap();
    let seen: Vec<(String, String)> =
        trail.iter().map(|e| (e["action"].as_str().unwrap().to_string(), e["actor"].as_str().unwrap().to_string())).collect();
    let by_chef = format!("user:{}", chef.id);
    for action in [
        "community.member.set",
        "community.configure",
        "community.referrer.approved",
        "connector.register",
        "connector.rotate",
        "connector.revoke",
        "community.member.remove",
    ] {
        assert!(seen.contains(&(action.to_string(), by_chef.clone())), "{action} by the community admin: {seen:?}");
    }
    assert!(seen.contains(&("community.create".to_string(), "admin".to_string())), "{seen:?}");
    // Every record written while handling a request carries the caller's address.
    assert!(trail.iter().filter(|e| e["action"] != "audit.read").all(|e| e["client_addr"] == "127.0.0.1"), "client addresses: {trail:?}");
    let configured = trail.iter().find(|e| e["action"] == "community.configure").unwrap();
    assert!(configured["detail"].as_str().unwrap().contains("requires_approval"), "{configured}");
    assert!(trail.iter().all(|e| !e.to_string().contains("mta@rad.example")), "no email addresses in the trail");
    // Another community's admin reads none of it.
    app.community("Klinik Andere", "aNd1", "Homburg").await;
    let other = app.person("chef@andere.example", "Chef Andere").await;
    app.add_member("aNd1", "chef@andere.example", "admin").await;
    let theirs: Vec<Value> = other.get(&app, "/api/v1/audit?object_kind=connector").send().await.unwrap().json().await.unwrap();
    assert!(theirs.is_empty(), "{theirs:?}");
}

/// The audit page: a community admin sees their community's records, filters them by share,
/// person, study and dates, and gets export links for the selection; another clinic's admin sees
/// none of them, a member without admin rights is refused, and viewing the page is recorded.
#[tokio::test]
async fn the_audit_page_filters_and_exports_what_an_admin_may_read() {
    let app = spawn_app_with(|_| {}).await;
    let study = uid();
    let (staff, other, issued) = two_clinics(&app, &study).await;
    let (code, id) = (issued["code"].as_str().unwrap(), issued["share"]["id"].as_str().unwrap());
    let member = app.person("member@rad.example", "Mitglied").await;
    app.add_member("RAD1", "member@rad.example", "member").await;

    let page = |who: &Person, query: &str| {
        let r = who.browser.get(app.url(&format!("/audit{query}"))).header("accept-language", "en").send();
        async move {
            let r = r.await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        }
    };
    let rows = |html: &str, action: &str, result: &str| html.matches(&format!("data-action=\"{action}\" data-result=\"{result}\"")).count();

    // The admin's view of the share: the issue, the failed and the good redemption; the nav links here.
    let (status, html) = page(&staff, &format!("?share={id}")).await;
    assert_eq!(status, 200, "{html}");
    assert!(html.contains("href=\"/audit\""), "the navigation links the page for admins");
    assert_eq!(
        (rows(&html, "share.issue", "ok"), rows(&html, "share.redeem", "denied"), rows(&html, "share.redeem", "ok")),
        (1, 1, 1),
        "{html}"
    );
    assert!(!html.contains("Mustermann") && !html.contains(code), "no patient names and no codes");
    assert!(html.contains("Maria Staff"), "staff are named beside their id");
    // Export links carry the same selection.
    let export = html
        .split("href=\"")
        .filter_map(|s| s.split('"').next())
        .find(|h| h.contains("format=fhir"))
        .expect("a FHIR export link")
        .replace("&amp;", "&");
    assert!(export.contains(&format!("share={id}")), "{export}");
    let r = staff.browser.get(app.url(&export)).send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/fhir+ndjson");
    assert_eq!(r.text().await.unwrap().lines().count(), html.matches("data-action=").count(), "the export holds the rows shown");
    // By person (their email), by study, by dates.
    let (_, html) = page(&staff, "?email=mta%40rad.example&action=share.issue").await;
    assert_eq!(rows(&html, "share.issue", "ok"), 1, "{html}");
    let (_, html) = page(&staff, "?email=nobody%40example.test").await;
    assert!(html.contains("No records for this selection."));
    let (_, html) = page(&staff, &format!("?study={study}")).await;
    assert!(rows(&html, "share.redeem", "ok") == 1, "{html}");
    let (_, html) = page(&staff, &format!("?share={id}&from=2000-01-01&to=2000-12-31")).await;
    assert!(html.contains("No records for this selection."));
    let today = {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        let out = std::process::Command::new("date").args(["-u", "-d", &format!("@{now}"), "+%F"]).output().unwrap();
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let (_, html) = page(&staff, &format!("?share={id}&from={today}&to={today}")).await;
    assert_eq!(rows(&html, "share.redeem", "denied"), 1, "from and to are whole UTC days, both included: {html}");
    let (status, html) = page(&staff, "?from=2026-02-30").await;
    assert_eq!(status, 400, "{html}");
    assert!(html.contains("is not a date"));
    // Other clinic: nothing of it; no admin rights: refused, and no link.
    let (status, html) = page(&other, &format!("?share={id}")).await;
    assert_eq!(status, 200);
    assert!(html.contains("No records for this selection."));
    let (_, html) = page(&other, "").await;
    assert!(!html.contains(id) && !html.contains(&study) && !html.contains(&staff.id), "{html}");
    // A study UID is no secret: the other clinic's admin sends a transfer of the same study to
    // their own clinic, but still sees only what their own people did with it.
    let r =
        staff.get(&app, &format!("/dicomweb/studies/{study}/metadata")).header("accept", "application/dicom+json").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let files = study_files(&study, 1);
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    app.send_transfer(&other, "aNd1", &refs).await;
    let theirs: Vec<Value> = other.get(&app, &format!("/api/v1/audit?study={study}")).send().await.unwrap().json().await.unwrap();
    assert!(theirs.iter().any(|e| e["object_kind"] == "transfer"), "their own transfer: {theirs:?}");
    assert!(!theirs.iter().any(|e| e["actor"] == format!("user:{}", staff.id)), "not the first clinic's reads: {theirs:?}");
    let mine: Vec<Value> =
        staff.get(&app, &format!("/api/v1/audit?study={study}&action=dicomweb.read")).send().await.unwrap().json().await.unwrap();
    assert_eq!(mine.len(), 1, "the first clinic sees its own read: {mine:?}");
    let (status, html) = page(&member, "").await;
    assert_eq!(status, 403, "{html}");
    let home = member.browser.get(app.url("/app")).send().await.unwrap().text().await.unwrap();
    assert!(!home.contains("href=\"/audit\""));
    // Each view was recorded.
    let reads: Vec<Value> = app
        .client
        .get(app.url(&format!("/api/v1/audit?action=audit.read&actor=user:{}", staff.id)))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(reads.len() >= 6, "{reads:?}");
}
