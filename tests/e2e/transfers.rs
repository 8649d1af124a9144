//! Sending studies to a community and the clinic's worklist, through the real API: drafts filled
//! by folder uploads (a failed file is re-sent alone), sending, the inbound worklist with search,
//! ZIP download, done/reject with a message the sender sees, approvals, DICOMweb scoped to each
//! person, and the authorization matrix.

use serde_json::{Value, json};

use crate::fixtures::people::Person;
use crate::fixtures::{Synth, TOKEN, spawn_app, uid};

fn study(patient: &str, pid: &str, n: usize) -> (String, Vec<(String, Vec<u8>)>) {
    let (st, se) = (uid(), uid());
    let files = (0..n)
        .map(|i| {
            let mut s = Synth::new(&st, &se, &uid());
            s.patient_name = patient.into();
            s.patient_id = pid.into();
            (format!("CD/DICOM/IMG{i:03}"), s.bytes())
        })
        .collect();
    (st, files)
}

fn refs(files: &[(String, Vec<u8>)]) -> Vec<(&str, Vec<u8>)> {
    files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect()
}

#[tokio::test]
async fn a_referrer_sends_a_study_and_the_clinic_works_it_off() {
    let app = spawn_app().await;
    app.community("Radiologie Klinikum Saarbrücken", "bM1X", "Saarbrücken").await;
    let referrer = app.person("ref@example.test", "Dr. Referrer").await;
    let member = app.person("mta@example.test", "MTA Inbound").await;
    app.add_member("bM1X", "mta@example.test", "member").await;

    let (study_uid, mut files) = study("Jäger^Jörg", "PAT-77", 3);
    let t = app.open_transfer(&referrer, "bM1X", "Verdacht auf Fraktur").await;
    assert_eq!(serde_json::from_value::<ferry_schemas::Transfer>(t.clone()).unwrap().state, ferry_schemas::TransferState::Draft);
    let id = t["id"].as_str().unwrap().to_string();
    // The first attempt: one file arrives cut short (interrupted), the others are stored.
    let good_last = files[2].1.clone();
    files[2].1.truncate(good_last.len() - 100);
    let mut upload = refs(&files);
    upload.push(("CD/DICOMDIR", b"not really".to_vec()));
    upload.push(("CD/README.TXT", b"read me".to_vec()));
    let r = app.upload_files(&referrer, &id, &upload).await;
    assert_eq!(r.status(), 202);
    let report: Value = r.json().await.unwrap();
    assert_eq!((report["stored"].as_u64(), report["failed"].as_u64(), report["skipped"].as_u64()), (Some(2), Some(1), Some(2)));
    // A draft is invisible to the clinic.
    let inbound: Vec<Value> = member.get(&app, "/api/v1/transfers?box=inbound").send().await.unwrap().json().await.unwrap();
    assert!(inbound.is_empty());
    assert_eq!(member.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().status(), 404);
    // Retry only the failed file (and one already stored: harmless).
    let retry = vec![("CD/DICOM/IMG002", good_last.clone()), ("CD/DICOM/IMG000", files[0].1.clone())];
    let r = app.upload_files(&referrer, &id, &retry).await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!((report["stored"].as_u64(), report["duplicates"].as_u64()), (Some(1), Some(1)));
    let draft: Value = referrer.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(draft["instances"], 3);
    assert_eq!(draft["studies"][0]["patient_name"], "Jäger^Jörg");

    let sent: ferry_schemas::Transfer =
        referrer.post(&app, &format!("/api/v1/transfers/{id}/send")).send().await.unwrap().json().await.unwrap();
    assert_eq!(sent.state, ferry_schemas::TransferState::Sent);
    assert_eq!(sent.instances, 3);
    let again = referrer.post(&app, &format!("/api/v1/transfers/{id}/send")).send().await.unwrap();
    assert_eq!(again.status(), 409);
    let more = app.upload_files(&referrer, &id, &refs(&files[..1])).await;
    assert_eq!(more.status(), 409, "a sent transfer takes no more files");

    // The clinic's worklist: search forgives umlauts, filters by state.
    for q in ["jaeger", "Jäger jörg", "PAT-77", "referrer"] {
        let list: Vec<Value> =
            member.get(&app, "/api/v1/transfers").query(&[("box", "inbound"), ("q", q)]).send().await.unwrap().json().await.unwrap();
        assert_eq!(list.len(), 1, "query {q}");
        assert_eq!(list[0]["studies"][0]["patient_id"], "PAT-77");
        assert_eq!(list[0]["sender_name"], "Dr. Referrer");
        assert_eq!(list[0]["reason"], "Verdacht auf Fraktur");
        assert_eq!(serde_json::from_value::<ferry_schemas::Urgency>(list[0]["urgency"].clone()).unwrap(), ferry_schemas::Urgency::Urgent);
    }
    let none: Vec<Value> =
        member.get(&app, "/api/v1/transfers").query(&[("box", "inbound"), ("q", "mueller")]).send().await.unwrap().json().await.unwrap();
    assert!(none.is_empty());
    let done_list: Vec<Value> =
        member.get(&app, "/api/v1/transfers").query(&[("box", "inbound"), ("state", "done")]).send().await.unwrap().json().await.unwrap();
    assert!(done_list.is_empty());
    let bad = member.get(&app, "/api/v1/transfers").query(&[("box", "inbound"), ("state", "lost")]).send().await.unwrap();
    assert_eq!(bad.status(), 400);

    // The member downloads the ZIP: the files come back byte for byte.
    let r = member.get(&app, &format!("/api/v1/transfers/{id}/download")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/zip");
    let zip_bytes = r.bytes().await.unwrap();
    // An IHE PDI archive: DICOMDIR and the files byte for byte.
    let originals = vec![files[0].1.clone(), files[1].1.clone(), good_last];
    crate::fixtures::shares::check_pdi(&zip_bytes, &originals);

    // The member sees the study through DICOMweb; the referrer too.
    for p in [&member, &referrer] {
        let studies: Vec<Value> = p.get(&app, "/dicomweb/studies").send().await.unwrap().json().await.unwrap();
        assert_eq!(studies.len(), 1);
        assert_eq!(studies[0]["0020000D"]["Value"][0], study_uid.as_str());
        assert_eq!(studies[0]["00201208"]["Value"][0], 3);
    }

    // Only the clinic decides; a rejection needs a message; the sender sees the outcome.
    let r = referrer.post(&app, &format!("/api/v1/transfers/{id}/done")).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = member.post(&app, &format!("/api/v1/transfers/{id}/reject")).json(&json!({"message": ""})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let r = member
        .post(&app, &format!("/api/v1/transfers/{id}/done"))
        .json(&json!({"message": "Im PACS, Termin bestätigt"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mine: Vec<ferry_schemas::Transfer> = referrer.get(&app, "/api/v1/transfers").send().await.unwrap().json().await.unwrap();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].state, ferry_schemas::TransferState::Done);
    assert_eq!(mine[0].state_message, "Im PACS, Termin bestätigt");
    let full: ferry_schemas::Transfer = referrer.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().json().await.unwrap();
    let states: Vec<&str> = full.events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["draft", "sent", "done"]);
    let r = member.post(&app, &format!("/api/v1/transfers/{id}/reject")).json(&json!({"message": "too late"})).send().await.unwrap();
    assert_eq!(r.status(), 409, "a closed transfer stays closed");
}

#[tokio::test]
async fn drafts_can_be_discarded_and_empty_or_unknown_targets_are_explained() {
    let app = spawn_app().await;
    app.community("Closed Clinic", "cLsd", "Homburg").await;
    let r = app
        .client
        .patch(app.url("/api/v1/communities/cLsd"))
        .bearer_auth(TOKEN)
        .json(&json!({"accepts_inbound": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    app.community("Open Clinic", "oPen", "Homburg").await;
    let p = app.person("p@example.test", "P").await;
    let r = p.post(&app, "/api/v1/transfers").json(&json!({"community": "nope"})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = p.post(&app, "/api/v1/transfers").json(&json!({"community": "cLsd"})).send().await.unwrap();
    assert_eq!(r.status(), 409);
    let r = p.post(&app, "/api/v1/transfers").json(&json!({"community": "oPen", "urgency": "yesterday"})).send().await.unwrap();
    assert_eq!(r.status(), 400);
    let t = app.open_transfer(&p, "oPen", "x").await;
    let id = t["id"].as_str().unwrap();
    let r = p.post(&app, &format!("/api/v1/transfers/{id}/send")).send().await.unwrap();
    assert_eq!(r.status(), 409, "nothing to send yet");
    let r = p.post(&app, &format!("/api/v1/transfers/{id}/files")).header("content-type", "text/plain").body("hi").send().await.unwrap();
    assert_eq!(r.status(), 415);
    let r = app.client.delete(app.url(&format!("/api/v1/transfers/{id}"))).bearer_auth(&p.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(p.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn a_community_that_approves_its_senders_takes_only_approved_referrers() {
    let app = spawn_app().await;
    app.community("HDS Klinik", "hDs1", "Saarlouis").await;
    let admin = app.person("chef@example.test", "Chefarzt").await;
    app.add_member("hDs1", "chef@example.test", "admin").await;
    let r = app
        .client
        .patch(app.url("/api/v1/communities/hDs1"))
        .bearer_auth(&admin.token)
        .json(&json!({"requires_approval": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["requires_approval"], true);
    let referrer = app.person("neu@example.test", "Dr. Neu").await;
    let r = referrer.post(&app, "/api/v1/transfers").json(&json!({"community": "hDs1"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("approved"));
    let r = referrer.post(&app, "/api/v1/communities/hDs1/approval-request").send().await.unwrap();
    let status: ferry_schemas::ApprovalStatus = serde_json::from_value(r.json::<Value>().await.unwrap()["status"].clone()).unwrap();
    assert_eq!(status, ferry_schemas::ApprovalStatus::Pending);
    let list: Vec<Value> = admin.get(&app, "/api/v1/communities/hDs1/referrers").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["practice"], "Praxis Dr. Test");
    assert_eq!(list[0]["phone"], "0681 12345");
    // A referrer can't approve themself.
    let path = format!("/api/v1/communities/hDs1/referrers/{}", referrer.id);
    let r = app.client.put(app.url(&path)).bearer_auth(&referrer.token).json(&json!({"status": "approved"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app.client.put(app.url(&path)).bearer_auth(&admin.token).json(&json!({"status": "approved"})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let (_, files) = study("Doe^Jane", "J1", 1);
    app.send_transfer(&referrer, "hDs1", &refs(&files)).await;
    let r = app.client.put(app.url(&path)).bearer_auth(&admin.token).json(&json!({"status": "rejected"})).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = referrer.post(&app, "/api/v1/transfers").json(&json!({"community": "hDs1"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
}

#[tokio::test]
async fn community_admins_manage_members_and_keep_at_least_one_admin() {
    let app = spawn_app().await;
    app.community("Team Clinic", "tEam", "Merzig").await;
    let admin = app.person("lead@example.test", "Lead").await;
    let staff = app.person("staff@example.test", "Staff").await;
    app.add_member("tEam", "lead@example.test", "admin").await;
    let put = |who: &Person, email: &str, role: &str| {
        app.client
            .put(app.url("/api/v1/communities/tEam/members"))
            .bearer_auth(who.token.clone())
            .json(&json!({"email": email, "role": role}))
            .send()
    };
    assert_eq!(put(&admin, "staff@example.test", "member").await.unwrap().status(), 200);
    assert_eq!(put(&staff, "lead@example.test", "member").await.unwrap().status(), 403, "members don't manage members");
    assert_eq!(put(&admin, "unknown@example.test", "member").await.unwrap().status(), 404);
    assert_eq!(put(&admin, "staff@example.test", "owner").await.unwrap().status(), 400);
    let members: Vec<ferry_schemas::Member> =
        admin.get(&app, "/api/v1/communities/tEam/members").send().await.unwrap().json().await.unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().any(|m| m.name == "Lead" && m.role == ferry_schemas::Role::Admin));
    let me: ferry_schemas::Account = staff.get(&app, "/api/v1/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me.memberships[0].community, "tEam");
    assert_eq!(me.memberships[0].role, ferry_schemas::Role::Member);
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/communities/tEam/members/{}", admin.id)))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the last admin stays");
    let r = app
        .client
        .delete(app.url(&format!("/api/v1/communities/tEam/members/{}", staff.id)))
        .bearer_auth(&admin.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let inbound = staff.get(&app, "/api/v1/transfers?box=inbound").send().await.unwrap();
    assert_eq!(inbound.json::<Vec<Value>>().await.unwrap().len(), 0);
}

/// Every endpoint × every kind of caller → the expected status; where existence is sensitive,
/// a denial is the same 404 as for something that does not exist.
#[tokio::test]
async fn authorization_matrix() {
    let app = spawn_app().await;
    app.community("Community One", "cOne", "A").await;
    app.community("Community Two", "cTwo", "B").await;
    let a = app.person("a@example.test", "Referrer A").await;
    let b = app.person("b@example.test", "Referrer B").await;
    let m1 = app.person("m1@example.test", "Member One").await;
    let m2 = app.person("m2@example.test", "Member Two").await;
    let ca = app.person("ca@example.test", "Admin One").await;
    let h = app.hub_admin("hub@example.test").await;
    app.add_member("cOne", "m1@example.test", "member").await;
    app.add_member("cTwo", "m2@example.test", "member").await;
    app.add_member("cOne", "ca@example.test", "admin").await;
    let (st, files) = study("Secret^Patient", "S-1", 1);
    let t = app.send_transfer(&a, "cOne", &refs(&files)).await;
    let id = t["id"].as_str().unwrap().to_string();
    let series: Vec<Value> = a.get(&app, &format!("/dicomweb/studies/{st}/series")).send().await.unwrap().json().await.unwrap();
    let se = series[0]["0020000E"]["Value"][0].as_str().unwrap().to_string();
    let inst: Vec<Value> =
        a.get(&app, &format!("/dicomweb/studies/{st}/series/{se}/instances")).send().await.unwrap().json().await.unwrap();
    let sop = inst[0]["00080018"]["Value"][0].as_str().unwrap().to_string();

    let who: Vec<(&str, Option<&Person>)> =
        vec![("anon", None), ("A", Some(&a)), ("B", Some(&b)), ("M1", Some(&m1)), ("M2", Some(&m2)), ("CA", Some(&ca)), ("H", Some(&h))];
    // (method, path, body, expected statuses for anon, A, B, M1, M2, CA, H)
    let t_ = format!("/api/v1/transfers/{id}");
    let rows: Vec<(&str, String, Option<Value>, [u16; 7])> = vec![
        ("GET", "/api/v1/me".into(), None, [401, 200, 200, 200, 200, 200, 200]),
        ("GET", "/api/v1/communities?q=community".into(), None, [401, 200, 200, 200, 200, 200, 200]),
        ("POST", "/api/v1/communities".into(), Some(json!({"name": "New", "city": "X"})), [401, 403, 403, 403, 403, 403, 201]),
        ("PATCH", "/api/v1/communities/cOne".into(), Some(json!({"contact": "0681"})), [401, 403, 403, 403, 403, 200, 200]),
        ("GET", "/api/v1/communities/cOne/members".into(), None, [401, 403, 403, 403, 403, 200, 200]),
        ("GET", "/api/v1/communities/cOne/referrers".into(), None, [401, 403, 403, 403, 403, 200, 200]),
        ("GET", t_.clone(), None, [401, 200, 404, 200, 404, 200, 404]),
        ("GET", format!("{t_}/download"), None, [401, 200, 404, 200, 404, 200, 404]),
        ("POST", format!("{t_}/reject"), Some(json!({"message": ""})), [401, 403, 404, 400, 404, 400, 404]),
        ("POST", format!("{t_}/files"), None, [401, 409, 404, 404, 404, 404, 404]),
        ("DELETE", t_.clone(), None, [401, 409, 404, 404, 404, 404, 404]),
        ("GET", "/api/v1/transfers?box=inbound".into(), None, [401, 200, 200, 200, 200, 200, 200]),
        ("GET", "/api/v1/tokens".into(), None, [401, 200, 200, 200, 200, 200, 200]),
        ("GET", format!("/dicomweb/studies/{st}/metadata"), None, [401, 200, 404, 200, 404, 200, 404]),
        ("GET", format!("/dicomweb/studies/{st}/series/{se}/instances/{sop}/rendered"), None, [401, 200, 404, 200, 404, 200, 404]),
        ("GET", format!("/dicomweb/studies/{st}/series/{se}/instances/{sop}"), None, [401, 200, 404, 200, 404, 200, 404]),
        ("POST", "/dicomweb/studies".into(), None, [401, 403, 403, 403, 403, 403, 403]),
        ("POST", "/api/v1/uploads".into(), None, [401, 403, 403, 403, 403, 403, 403]),
        // The web pages: anonymous callers are sent to the sign-in page.
        ("GET", format!("/transfers/{id}"), None, [303, 200, 404, 200, 404, 200, 404]),
        ("GET", format!("/viewer/{id}/{st}"), None, [303, 200, 404, 200, 404, 200, 404]),
        ("GET", "/inbound".into(), None, [303, 200, 200, 200, 200, 200, 200]),
        ("GET", "/communities/cOne/manage".into(), None, [303, 403, 403, 403, 403, 200, 200]),
        ("GET", "/admin".into(), None, [303, 403, 403, 403, 403, 403, 200]),
        ("POST", format!("/transfers/{id}/reject"), Some(json!({})), [303, 403, 404, 400, 404, 400, 404]),
    ];
    let mut failures = Vec::new();
    let no_redirects = crate::fixtures::people::browser();
    for (method, path, body, expected) in &rows {
        for ((name, person), want) in who.iter().zip(expected) {
            let mut req = no_redirects.request(method.parse().unwrap(), app.url(path));
            if let Some(p) = person {
                req = req.bearer_auth(&p.token);
            }
            if path.contains("/rendered") {
                req = req.header("accept", "image/jpeg");
            } else if path.starts_with("/dicomweb/studies/") && !path.ends_with("metadata") {
                req = req.header("accept", "multipart/related; type=\"application/dicom\"");
            }
            if let Some(b) = body {
                req = if path.starts_with("/api/") { req.json(b) } else { req.form(&[("message", "")]) };
            }
            let got = req.send().await.unwrap().status().as_u16();
            if got != *want {
                failures.push(format!("{method} {path} as {name}: got {got}, want {want}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Search results are scoped too: who sees the study through QIDO, who sees the transfer inbound.
    for ((name, person), (sees_study, sees_inbound)) in
        who.iter().skip(1).zip([(true, false), (false, false), (true, true), (false, false), (true, true), (false, false)])
    {
        let p = person.unwrap();
        let studies: Vec<Value> = p.get(&app, "/dicomweb/studies").send().await.unwrap().json().await.unwrap();
        assert_eq!(!studies.is_empty(), sees_study, "QIDO as {name}");
        let inst: Vec<Value> = p.get(&app, "/dicomweb/instances").send().await.unwrap().json().await.unwrap();
        assert_eq!(!inst.is_empty(), sees_study, "QIDO instances as {name}");
        let inbound: Vec<Value> = p.get(&app, "/api/v1/transfers?box=inbound").send().await.unwrap().json().await.unwrap();
        assert_eq!(!inbound.is_empty(), sees_inbound, "inbound as {name}");
    }
    // Denied looks exactly like absent.
    let denied: Value = b.get(&app, &t_).send().await.unwrap().json().await.unwrap();
    let absent: Value = b.get(&app, &format!("/api/v1/transfers/{}", uuid::Uuid::new_v4())).send().await.unwrap().json().await.unwrap();
    assert_eq!(denied["detail"], absent["detail"]);
    let denied = b.get(&app, &format!("/dicomweb/studies/{st}/metadata")).send().await.unwrap().json::<Value>().await.unwrap();
    let absent = b.get(&app, &format!("/dicomweb/studies/{}/metadata", uid())).send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(denied["detail"], absent["detail"]);
}
