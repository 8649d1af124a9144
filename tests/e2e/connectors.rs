//! The hub's side of site connectors, through the real API: registration by a community admin,
//! OAuth2 client credentials, claims with a lease (one holder at a time, expired leases return),
//! acknowledgements, and the states the sender sees (received → stored, or failed with reason).

use ferry_schemas::{Transfer, TransferState};
use serde_json::{Value, json};

use crate::fixtures::{Synth, spawn_app_with, uid};

async fn token(app: &crate::fixtures::TestApp, id: &str, secret: &str) -> reqwest::Response {
    app.client
        .post(app.url("/oauth/token"))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
}

async fn access(app: &crate::fixtures::TestApp, id: &str, secret: &str) -> String {
    let r = token(app, id, secret).await;
    assert_eq!(r.status(), 200);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["token_type"], "Bearer");
    t["access_token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn connectors_claim_with_a_lease_acknowledge_and_report_what_the_sender_sees() {
    let app = spawn_app_with(|c| c.connectors.lease_secs = 1).await;
    app.community("PACS Klinik", "pAcs", "Saarbrücken").await;
    app.community("Other Klinik", "oThr", "Trier").await;
    let admin = app.person("pacs.admin@example.test", "PACS Admin").await;
    let referrer = app.person("pacs.ref@example.test", "Dr. Ref").await;
    app.add_member("pAcs", "pacs.admin@example.test", "admin").await;

    // Registration: only the community's admins; the secret is shown once.
    let r = referrer.post(&app, "/api/v1/communities/pAcs/connectors").json(&json!({"name": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let c: Value = admin
        .post(&app, "/api/v1/communities/pAcs/connectors")
        .json(&json!({"name": "Keller-Server"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (cid, secret) = (c["client_id"].as_str().unwrap().to_string(), c["client_secret"].as_str().unwrap().to_string());
    let c2: Value = admin
        .post(&app, "/api/v1/communities/pAcs/connectors")
        .json(&json!({"name": "Zweitsystem"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (cid2, secret2) = (c2["client_id"].as_str().unwrap().to_string(), c2["client_secret"].as_str().unwrap().to_string());
    let listed: Vec<Value> = admin.get(&app, "/api/v1/communities/pAcs/connectors").send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().all(|c| c.get("client_secret").is_none()));
    let bad = token(&app, &cid, "fcs_wrong").await;
    assert_eq!(bad.status(), 401);
    assert_eq!(bad.json::<Value>().await.unwrap()["error"], "invalid_client");
    let one = access(&app, &cid, &secret).await;
    let two = access(&app, &cid2, &secret2).await;
    let post = |t: &str, path: &str| app.client.post(app.url(path)).bearer_auth(t.to_string());

    // Nothing to do yet; a referrer's token is not a connector's.
    assert_eq!(post(&one, "/api/v1/connector/claim").send().await.unwrap().status(), 204);
    assert_eq!(post(&referrer.token, "/api/v1/connector/claim").send().await.unwrap().status(), 403);

    let (st, se) = (uid(), uid());
    let files: Vec<(String, Vec<u8>)> = (0..2).map(|i| (format!("I{i}"), Synth::new(&st, &se, &uid()).bytes())).collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let t = app.send_transfer(&referrer, "pAcs", &refs).await;
    let id = t["id"].as_str().unwrap().to_string();

    // One connector claims it; the other finds nothing while the lease holds.
    let claim: Value = post(&one, "/api/v1/connector/claim").send().await.unwrap().json().await.unwrap();
    assert_eq!(claim["transfer"]["id"], id.as_str());
    assert_eq!(claim["instances"].as_array().unwrap().len(), 2);
    // Size and SHA-256 let the connector verify every download.
    use sha2::Digest;
    let mut want: Vec<(u64, String)> = files.iter().map(|(_, b)| (b.len() as u64, hex::encode(sha2::Sha256::digest(b)))).collect();
    let mut got: Vec<(u64, String)> = claim["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["size"].as_u64().unwrap(), i["sha256"].as_str().unwrap().to_string()))
        .collect();
    want.sort();
    got.sort();
    assert_eq!(got, want);
    assert_eq!(post(&two, "/api/v1/connector/claim").send().await.unwrap().status(), 204);
    let seen: Transfer = referrer.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.state, TransferState::Received);
    // The connector reads the instances through WADO-RS (its community's transfers only).
    let sop0 = claim["instances"][0]["sop_instance_uid"].as_str().unwrap().to_string();
    let r = app
        .client
        .get(app.url(&format!("/dicomweb/studies/{st}/series/{se}/instances/{sop0}")))
        .bearer_auth(&one)
        .header("accept", "application/dicom")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // It acknowledges one instance and goes silent: the lease runs out, the other claims it and
    // learns which instance is already in the PACS.
    let acks = json!([{"sop_instance_uid": sop0, "status": 0}]);
    assert_eq!(post(&one, &format!("/api/v1/connector/transfers/{id}/acks")).json(&acks).send().await.unwrap().status(), 204);
    let early = post(&one, &format!("/api/v1/connector/transfers/{id}/state")).json(&json!({"state": "stored"})).send().await.unwrap();
    assert_eq!(early.status(), 409, "stored only when every instance is acknowledged");
    tokio::time::sleep(std::time::Duration::from_millis(1300)).await;
    let again: Value = post(&two, "/api/v1/connector/claim").send().await.unwrap().json().await.unwrap();
    assert_eq!(again["transfer"]["id"], id.as_str());
    let acked: Vec<bool> = again["instances"].as_array().unwrap().iter().map(|i| i["acked"].as_bool().unwrap()).collect();
    assert_eq!(acked.iter().filter(|a| **a).count(), 1);
    // The first connector no longer holds it.
    let stale = post(&one, &format!("/api/v1/connector/transfers/{id}/state"))
        .json(&json!({"state": "failed", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 409);
    let rest: Vec<Value> = again["instances"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| !i["acked"].as_bool().unwrap())
        .map(|i| json!({"sop_instance_uid": i["sop_instance_uid"], "status": 0xB000}))
        .collect();
    assert_eq!(post(&two, &format!("/api/v1/connector/transfers/{id}/acks")).json(&rest).send().await.unwrap().status(), 204);
    let done: Transfer = post(&two, &format!("/api/v1/connector/transfers/{id}/state"))
        .json(&json!({"state": "stored"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(done.state, TransferState::Stored);
    let seen: Transfer = referrer.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().json().await.unwrap();
    let states: Vec<&str> = seen.events.iter().map(|e| e.state.as_str()).collect();
    assert_eq!(states, ["draft", "sent", "received", "stored"]);

    // A second transfer fails in the PACS: the sender sees why.
    let (st2, se2) = (uid(), uid());
    let f2 = Synth::new(&st2, &se2, &uid()).bytes();
    let t2 = app.send_transfer(&referrer, "pAcs", &[("J", f2)]).await;
    let id2 = t2["id"].as_str().unwrap().to_string();
    let claim: Value = post(&two, "/api/v1/connector/claim").send().await.unwrap().json().await.unwrap();
    assert_eq!(claim["transfer"]["id"], id2.as_str());
    let r = post(&two, &format!("/api/v1/connector/transfers/{id2}/state"))
        .json(&json!({"state": "failed", "message": "PACS refused: C-STORE status 0xA700 (out of resources)"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Transfer = referrer.get(&app, &format!("/api/v1/transfers/{id2}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.state, TransferState::Failed);
    assert!(seen.state_message.contains("0xA700"));

    // Heartbeat reaches the admins' list; a revoked connector is refused at once, a rotated
    // secret replaces the old one.
    let r = post(&two, "/api/v1/connector/heartbeat")
        .json(&json!({"version": "0.1.0", "queue_depth": 3, "last_error": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let listed: Vec<Value> = admin.get(&app, "/api/v1/communities/pAcs/connectors").send().await.unwrap().json().await.unwrap();
    let c2_row = listed.iter().find(|c| c["client_id"] == cid2.as_str()).unwrap();
    assert_eq!((c2_row["version"].as_str(), c2_row["queue_depth"].as_i64()), (Some("0.1.0"), Some(3)));
    assert!(c2_row["last_seen_at"].as_i64().is_some());
    let c2_id = c2["id"].as_str().unwrap();
    let r =
        app.client.delete(app.url(&format!("/api/v1/communities/pAcs/connectors/{c2_id}"))).bearer_auth(&admin.token).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(post(&two, "/api/v1/connector/claim").send().await.unwrap().status(), 401);
    assert_eq!(token(&app, &cid2, &secret2).await.status(), 401);
    let c1_id = c["id"].as_str().unwrap();
    let rotated: Value =
        admin.post(&app, &format!("/api/v1/communities/pAcs/connectors/{c1_id}/rotate")).send().await.unwrap().json().await.unwrap();
    assert_eq!(post(&one, "/api/v1/connector/claim").send().await.unwrap().status(), 401, "old tokens end with the rotation");
    assert_eq!(token(&app, &cid, &secret).await.status(), 401);
    let fresh = access(&app, &cid, rotated["client_secret"].as_str().unwrap()).await;
    // A connector sees its own community's transfers, and nothing of another community.
    let own = app.client.get(app.url(&format!("/api/v1/transfers/{id}"))).bearer_auth(&fresh).send().await.unwrap();
    assert_eq!(own.status(), 200);
    let studies: Vec<Value> = app.client.get(app.url("/dicomweb/studies")).bearer_auth(&fresh).send().await.unwrap().json().await.unwrap();
    assert_eq!(studies.len(), 2);
    let c3: Value = app
        .client
        .post(app.url("/api/v1/communities/oThr/connectors"))
        .bearer_auth(crate::fixtures::TOKEN)
        .json(&json!({"name": "Trier"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let stranger = access(&app, c3["client_id"].as_str().unwrap(), c3["client_secret"].as_str().unwrap()).await;
    assert_eq!(app.client.get(app.url(&format!("/api/v1/transfers/{id}"))).bearer_auth(&stranger).send().await.unwrap().status(), 404);
    let none: Vec<Value> = app.client.get(app.url("/dicomweb/studies")).bearer_auth(&stranger).send().await.unwrap().json().await.unwrap();
    assert!(none.is_empty());
    assert_eq!(post(&stranger, "/api/v1/connector/claim").send().await.unwrap().status(), 204);
    let r = app
        .client
        .get(app.url(&format!("/dicomweb/studies/{st}/series/{se}/instances/{sop0}")))
        .bearer_auth(&stranger)
        .header("accept", "application/dicom")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);

    // The community's admin page shows the connectors with their heartbeat and registers new ones.
    let page = admin.get(&app, "/communities/pAcs/manage").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Keller-Server") && page.contains("Zweitsystem") && page.contains("revoked"), "{page}");
    let page = app
        .client
        .post(app.url("/communities/pAcs/connectors"))
        .bearer_auth(&admin.token)
        .form(&[("name", "Web-Registrierung")])
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let secret = page.split("fcs_").nth(1).map(|s| s.chars().take(64).collect::<String>()).expect("the secret is shown once");
    let listed: Vec<Value> = admin.get(&app, "/api/v1/communities/pAcs/connectors").send().await.unwrap().json().await.unwrap();
    let web = listed.iter().find(|c| c["name"] == "Web-Registrierung").expect("registered");
    access(&app, web["client_id"].as_str().unwrap(), &format!("fcs_{secret}")).await;
}

/// `ferry-connector run --once` (configured by environment variables) against the real hub and a real Orthanc (DICOMweb STOW-RS): the
/// sent study arrives byte-identical in the PACS, the sender sees "stored"; a PACS that refuses
/// makes the transfer "failed" with its answer.
#[tokio::test]
async fn the_connector_pulls_a_transfer_into_orthanc_by_stow_rs() {
    use crate::fixtures::hub_binary;
    let app = spawn_app_with(|_| {}).await;
    app.community("Orthanc Klinik", "oRth", "Homburg").await;
    let referrer = app.person("orth.ref@example.test", "Dr. Orthanc").await;
    let (client_id, client_secret) = app.connector("oRth").await;
    let orthanc = crate::fixtures::peers::Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let (st, se) = (uid(), uid());
    let files: Vec<Vec<u8>> = (0..3).map(|_| Synth::new(&st, &se, &uid()).bytes()).collect();
    let refs: Vec<(&str, Vec<u8>)> = files.iter().enumerate().map(|(i, b)| (["a", "b", "c"][i], b.clone())).collect();
    let t = app.send_transfer(&referrer, "oRth", &refs).await;
    let id = t["id"].as_str().unwrap().to_string();

    let state = tempfile::tempdir().unwrap();
    let run = |stow: String| {
        let bin = hub_binary().with_file_name("ferry-connector");
        // Configured by the environment alone (no file): hub, credentials, one STOW-RS target.
        let envs = [
            ("FERRY_CONNECTOR_HUB__URL", app.base.clone()),
            ("FERRY_CONNECTOR_HUB__CLIENT_ID", client_id.clone()),
            ("FERRY_CONNECTOR_HUB__CLIENT_SECRET", client_secret.clone()),
            ("FERRY_CONNECTOR_STATE_DIR", state.path().to_str().unwrap().to_string()),
            ("FERRY_CONNECTOR_PACS", format!("[{{name=\"orthanc\",kind=\"dicomweb\",url=\"{stow}\"}}]")),
            ("FERRY_CONNECTOR_INBOUND__MAX_ATTEMPTS", "1".into()),
        ];
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(bin)
                .args(["run", "--once"])
                .envs(envs)
                .current_dir(std::env::temp_dir())
                .output()
                .expect("run connector")
        })
    };
    let out = run(orthanc.url("/dicom-web")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Transfer = referrer.get(&app, &format!("/api/v1/transfers/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.state, TransferState::Stored);
    // Byte-identical in the PACS.
    use sha2::Digest;
    let instances: Vec<Value> = reqwest::get(orthanc.url("/instances?expand")).await.unwrap().json().await.unwrap();
    assert_eq!(instances.len(), 3);
    let mut got = Vec::new();
    for i in &instances {
        let bytes =
            reqwest::get(orthanc.url(&format!("/instances/{}/file", i["ID"].as_str().unwrap()))).await.unwrap().bytes().await.unwrap();
        got.push(hex::encode(sha2::Sha256::digest(&bytes)));
    }
    let mut want: Vec<String> = files.iter().map(|b| hex::encode(sha2::Sha256::digest(b))).collect();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // A PACS that answers but does not store: the sender sees "failed" with the reason.
    let t2 = app.send_transfer(&referrer, "oRth", &[("d", Synth::new(&uid(), &uid(), &uid()).bytes())]).await;
    let id2 = t2["id"].as_str().unwrap().to_string();
    let out = run(orthanc.url("/no-such-dicomweb")).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let seen: Transfer = referrer.get(&app, &format!("/api/v1/transfers/{id2}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(seen.state, TransferState::Failed);
    assert!(seen.state_message.contains("did not store"), "{}", seen.state_message);
}
