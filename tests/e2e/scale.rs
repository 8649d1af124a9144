//! Two hubs, one system: both on the same database (PostgreSQL when the suite runs with it) and
//! the same S3 bucket (SeaweedFS on loopback), sharing the key files. What one stores the other
//! serves; a code's wrong answers count across both; a connector's lease taken through one holds
//! on the other; retention run by both at once purges once; the audit chain stays one chain
//! while both append to it.

use serde_json::{Value, json};

use crate::fixtures::seaweedfs::SeaweedFs;
use crate::fixtures::shares::{BIRTH, clinic, share_files, study_files};
use crate::fixtures::*;

fn s3(c: &mut ferry_hub::config::Config, port: u16) {
    c.shares.rate_burst = 1000; // the per-address limit is per process; the point here is the database
    crate::fixtures::seaweedfs::use_bucket(c, port, "ferry");
}

async fn redeem_at(app: &TestApp, code: &str, answer: &str) -> u16 {
    app.client.post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": answer})).send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn two_hubs_on_one_database_and_bucket_behave_as_one() {
    let weed = SeaweedFs::start("ferry").await;
    let port = weed.s3;
    let a = spawn_app_with(move |c| s3(c, port)).await;
    let (url, keys) = (a.database_url.clone(), a.dir.path().join("keys"));
    let b = spawn_app_with(move |c| {
        s3(c, port);
        c.database.url = Some(url);
        c.keys.kek_file = Some(keys.join("kek.hex"));
        c.keys.secret_file = Some(keys.join("hub-secret.hex"));
    })
    .await;

    // 1. Stored through A, found and served byte-identical by B.
    let (study, series) = (uid(), uid());
    let files: Vec<Vec<u8>> = (0..3).map(|_| Synth::new(&study, &series, &uid()).bytes()).collect();
    let refs: Vec<&[u8]> = files.iter().map(Vec::as_slice).collect();
    assert_eq!(a.stow(&refs).await.0, 200);
    assert_eq!(b.qido(&format!("/dicomweb/studies?StudyInstanceUID={study}")).await.len(), 1);
    let mut got = b.retrieve(&format!("/dicomweb/studies/{study}")).await;
    let mut want = files.clone();
    got.sort();
    want.sort();
    assert_eq!(got, want);

    // 2. A code: wrong answers through both hubs count together and lock it on both.
    let staff = clinic(&a).await;
    let issued = share_files(&a, &staff, &study_files(&uid(), 1), json!({})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    for i in 0..5 {
        let hub = if i % 2 == 0 { &a } else { &b };
        assert_eq!(redeem_at(hub, &code, "19991231").await, 401);
    }
    assert_eq!(redeem_at(&b, &code, BIRTH).await, 401, "locked on B after wrong answers through A and B");
    assert_eq!(redeem_at(&a, &code, BIRTH).await, 401, "and on A");
    let share: Value =
        staff.get(&b, &format!("/api/v1/shares/{}", issued["share"]["id"].as_str().unwrap())).send().await.unwrap().json().await.unwrap();
    assert_eq!(share["failed_attempts"], 5);
    assert_eq!(share["locked"], true);

    // 3. A connector's lease taken through A holds on B; the same process resumes through B.
    let referrer = a.person("scale.ref@example.test", "Dr. Scale").await;
    let t = a.send_transfer(&referrer, "RAD1", &[("x.dcm", Synth::new(&uid(), &uid(), &uid()).bytes())]).await;
    let token = a.connector_token(&a.connector("RAD1").await).await;
    let claim = |hub: &TestApp, instance: &str| {
        let r = hub.client.post(hub.url("/api/v1/connector/claim")).bearer_auth(&token).header("ferry-connector-instance", instance).send();
        async move { r.await.unwrap() }
    };
    let first = claim(&a, "site-1").await;
    assert_eq!(first.status(), 200);
    assert_eq!(first.json::<Value>().await.unwrap()["transfer"]["id"], t["id"]);
    assert_eq!(claim(&b, "site-2").await.status(), 204, "another process gets nothing while the lease holds");
    assert_eq!(claim(&b, "site-1").await.status(), 204, "a held transfer is not handed out again, not even to its holder");
    // The holder works on through the other hub (an acknowledgement renews its lease); another
    // process may not.
    let renew = |hub: &TestApp, instance: &str| {
        let r = hub
            .client
            .post(hub.url(&format!("/api/v1/connector/transfers/{}/acks", t["id"].as_str().unwrap())))
            .bearer_auth(&token)
            .header("ferry-connector-instance", instance)
            .json(&serde_json::json!([]))
            .send();
        async move { r.await.unwrap().status() }
    };
    assert_eq!(renew(&b, "site-1").await, 204, "the holder resumes through the other hub");
    assert_eq!(renew(&b, "site-2").await, 409, "another process does not hold it");

    // 4. Retention on both hubs at once purges an expired share once.
    let other = share_files(&a, &staff, &study_files(&uid(), 1), json!({})).await;
    let oid = other["share"]["id"].as_str().unwrap().to_string();
    sqlx::query("UPDATE shares SET expires_at = 1 WHERE id = $1").bind(&oid).execute(&a.state.db).await.unwrap();
    let (ra, rb) = tokio::join!(ferry_hub::retention::run_once(&a.state), ferry_hub::retention::run_once(&b.state));
    ra.unwrap();
    rb.unwrap();
    let purges: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM audit_events WHERE action = 'share.purge' AND object_id = $1")
        .bind(&oid)
        .fetch_one(&a.state.db)
        .await
        .unwrap();
    assert_eq!(purges, 1, "purged exactly once");

    // 5. Both append to the audit trail at once: still one intact chain.
    let mut attempts = Vec::new();
    for i in 0..20 {
        let hub = if i % 2 == 0 { &a } else { &b };
        attempts.push(redeem_at(hub, "ZZZZ-ZZZZ-ZZZZ", BIRTH));
    }
    futures_util::future::join_all(attempts).await;
    let v = ferry_hub::audit::verify(&a.state.db).await.expect("one intact chain");
    assert!(v.records > 20);
    drop(weed);
}
