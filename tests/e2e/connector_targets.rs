//! The connector under partial failure (issue 19), against Orthanc as the clinic's PACS and dcmtk
//! `storescp` as a second target (an archive): a target that is down or keeps refusing one
//! instance holds up nothing else; urgent transfers are claimed first; the sender and the clinic
//! see each target's truth; each instance arrives exactly once in each target.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::{Duration, Instant};

use ferry_schemas::{Connector, ConnectorHealth, TargetState, Transfer};

use crate::fixtures::peers::{Dcmtk, Orthanc, free_port};
use crate::fixtures::site::*;
use crate::fixtures::*;

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn study(n: usize) -> Vec<(String, Vec<u8>)> {
    let (st, se) = (uid(), uid());
    (0..n).map(|i| (format!("{i}.dcm"), Synth::new(&st, &se, &uid()).bytes())).collect()
}

async fn send(app: &TestApp, who: &crate::fixtures::people::Person, code: &str, urgency: &str, files: &[(String, Vec<u8>)]) -> String {
    let refs: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let t = app.send_transfer_as(who, code, urgency, &refs).await;
    t["id"].as_str().unwrap().to_string()
}

async fn connectors(app: &TestApp, code: &str) -> Vec<Connector> {
    app.operator_json(&format!("/api/v1/communities/{code}/connectors")).await
}

/// SOP Instance UIDs of what storescp received, with how often each arrived.
fn archived(scp: &Dcmtk) -> BTreeMap<String, usize> {
    let mut seen = BTreeMap::new();
    for p in scp.received() {
        let Ok(o) = dicom_object::open_file(&p) else { continue };
        let sop = o.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_string();
        *seen.entry(sop).or_default() += 1;
    }
    seen
}

fn sops(files: &[(String, Vec<u8>)]) -> Vec<String> {
    files
        .iter()
        .map(|(_, b)| {
            let o = dicom_object::from_reader(&b[128..]).unwrap();
            o.meta().media_storage_sop_instance_uid().trim_end_matches('\0').to_string()
        })
        .collect()
}

async fn wait_for<F, Fut>(what: &str, secs: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let t0 = Instant::now();
    loop {
        match check().await {
            Ok(()) => return,
            Err(why) if t0.elapsed() > Duration::from_secs(secs) => panic!("{what} (after {secs} s): {why}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// The archive (a required second target) is down for a minute while three transfers arrive, the last one
/// urgent: the transfers that wait only for the archive are parked and hold no claim slot, so the
/// urgent one is in the main PACS within seconds; the sender sees "pacs stored, archive retrying
/// since … (connection refused)", the clinic's admins see the connector degraded (archive). Once
/// the archive is back, all three are stored, each instance exactly once in each target. Then,
/// with the connector stopped, a routine and an urgent transfer wait: the urgent one is claimed
/// first.
#[tokio::test]
async fn an_archive_that_is_down_holds_up_nothing_and_urgent_goes_first() {
    let app = spawn_app().await;
    app.community("Klinik Archiv", "aRc1", "Homburg").await;
    let referrer = app.person("archive.ref@example.test", "Dr. Archiv").await;
    let admin = app.person("archive.admin@example.test", "Archiv Admin").await;
    app.add_member("aRc1", "archive.admin@example.test", "admin").await;
    let creds = app.connector("aRc1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let archive_port = free_port();
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "{}{}[inbound]\nretry_max_secs = 2\nparallel_transfers = 2\n",
            dimse("pacs", orthanc.dicom, "ORTHANC", ""),
            dimse("archive", archive_port, "STORESCP", "")
        ),
    );
    let mut connector = Running(site.spawn());
    let down_since = Instant::now();

    let a = study(5);
    let b = study(5);
    let id_a = send(&app, &referrer, "aRc1", "routine", &a).await;
    let id_b = send(&app, &referrer, "aRc1", "routine", &b).await;
    wait_for("both routine transfers in the main PACS", 60, || async {
        let n = orthanc.stored().await.len();
        if n == 10 { Ok(()) } else { Err(format!("{n} of 10 instances in Orthanc\n{}", site.log())) }
    })
    .await;

    // The sender sees each target's truth.
    wait_for("the archive shows as retrying", 30, || async {
        let t = transfer(&app, &referrer, &id_a).await;
        let pacs = t.targets.iter().find(|p| p.target == "pacs");
        let arch = t.targets.iter().find(|p| p.target == "archive");
        match (pacs, arch) {
            (Some(p), Some(r))
                if p.state == TargetState::Stored
                    && p.stored == 5
                    && r.state == TargetState::Retrying
                    && r.stored == 0
                    && r.since.is_some()
                    && r.message.contains("nothing answers there") =>
            {
                Ok(())
            }
            _ => Err(format!("{:?}", t.targets)),
        }
    })
    .await;
    let t = transfer(&app, &referrer, &id_a).await;
    assert_eq!(t.state, "received", "a required archive is missing: not stored yet");
    let page = referrer.get(&app, &format!("/transfers/{id_a}")).send().await.unwrap().text().await.unwrap();
    assert!(page.contains(r#"data-target="archive" data-state="retrying""#) && page.contains("nothing answers there"), "{page}");

    // The clinic's admins see the connector degraded, naming the archive.
    wait_for("the connector shows as degraded (archive)", 30, || async {
        let list = connectors(&app, "aRc1").await;
        let c = &list[0];
        let arch = c.targets.iter().find(|t| t.target == "archive");
        if c.health == ConnectorHealth::Degraded
            && arch.is_some_and(|t| t.retrying && t.queue_depth == 10 && t.oldest_waiting_at.is_some())
            && c.last_error.contains("archive")
            && c.last_error_at.is_some()
        {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    let admin_page = admin.get(&app, "/communities/aRc1/manage").send().await.unwrap().text().await.unwrap();
    assert!(admin_page.contains(r#"data-health="degraded""#) && admin_page.contains("(archive)"), "{admin_page}");

    // The urgent transfer is not held up by the two that wait for the archive.
    let c = study(5);
    let sent_at = Instant::now();
    let id_c = send(&app, &referrer, "aRc1", "urgent", &c).await;
    let want_c = sops(&c);
    wait_for("the urgent transfer in the main PACS", 15, || async {
        let have = orthanc.stored().await;
        let n = want_c.iter().filter(|s| have.contains_key(*s)).count();
        if n == 5 { Ok(()) } else { Err(format!("{n} of 5 urgent instances in Orthanc\n{}", site.log())) }
    })
    .await;
    let urgent_secs = sent_at.elapsed().as_secs_f64();

    // The archive stays down for a minute (the connector retries it every 2 s meanwhile); nothing
    // counts as stored without it.
    tokio::time::sleep(Duration::from_secs(60).saturating_sub(down_since.elapsed())).await;
    for id in [&id_a, &id_b, &id_c] {
        assert_eq!(transfer(&app, &referrer, id).await.state, "received");
    }
    // The archive comes back: everything reaches it, and every transfer is stored.
    let scp = Dcmtk::storescp_at(archive_port).await;
    for id in [&id_a, &id_b, &id_c] {
        wait_for("stored once the archive is back", 90, || async {
            let t = transfer(&app, &referrer, id).await;
            if t.state == "stored" && t.targets.iter().all(|p| p.state == TargetState::Stored && p.stored == 5) {
                Ok(())
            } else {
                Err(format!("{} {:?}\n{}", t.state, t.targets, site.log()))
            }
        })
        .await;
    }
    let mut want: Vec<String> = [sops(&a), sops(&b), want_c.clone()].concat();
    want.sort();
    let got = archived(&scp);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want, "every instance reached the archive");
    assert!(got.values().all(|n| *n == 1), "each instance exactly once in the archive: {got:?}");
    let in_pacs: Vec<String> = orthanc.stored().await.into_keys().collect();
    assert_eq!(in_pacs, want, "each instance exactly once in the PACS");

    // Health is current again: no error, the archive healthy.
    wait_for("the connector healthy again", 30, || async {
        let c = connectors(&app, "aRc1").await.remove(0);
        if c.health == ConnectorHealth::Healthy
            && c.last_error.is_empty()
            && c.targets.iter().all(|t| !t.retrying && t.last_success_at.is_some())
        {
            Ok(())
        } else {
            Err(format!("{c:?}"))
        }
    })
    .await;
    let metrics = app.client.get(app.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap().text().await.unwrap();
    let connector_id = &connectors(&app, "aRc1").await[0].id;
    for name in [
        "ferry_connector_target_queue_depth",
        "ferry_connector_target_last_success_timestamp_seconds",
        "ferry_connector_target_oldest_waiting_seconds",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name) && l.contains(connector_id.as_str()) && l.contains(r#"target="archive""#)),
            "{name} for the archive missing"
        );
    }

    // Urgent first: with the connector stopped, a routine transfer and then an urgent one wait.
    drop(connector);
    let d = study(3);
    let e = study(3);
    let id_d = send(&app, &referrer, "aRc1", "routine", &d).await;
    let id_e = send(&app, &referrer, "aRc1", "urgent", &e).await;
    connector = Running(site.spawn());
    for id in [&id_d, &id_e] {
        wait_for("the waiting transfers stored", 60, || async {
            let t = transfer(&app, &referrer, id).await;
            if t.state == "stored" { Ok(()) } else { Err(format!("{} {:?}\n{}", t.state, t.targets, site.log())) }
        })
        .await;
    }
    let received_at = |t: &Transfer| t.events.iter().find(|e| e.state == "received").map(|e| e.at).unwrap();
    let (td, te) = (transfer(&app, &referrer, &id_d).await, transfer(&app, &referrer, &id_e).await);
    assert!(received_at(&te) <= received_at(&td), "the urgent transfer was claimed first: {:?} / {:?}", te.events, td.events);
    drop(connector);
    eprintln!("urgent transfer in the main PACS {urgent_secs:.1} s after sending, with the archive down");
}

/// An optional archive (`required = false`) that is down: the transfer is stored (the sender
/// hears so) as soon as the PACS has it, the archive shows as retrying, and it is filled once it
/// is back — after the report, which the hub keeps taking for the stored transfer.
#[tokio::test]
async fn an_optional_archive_is_filled_after_the_transfer_is_stored() {
    let app = spawn_app().await;
    app.community("Klinik Optional", "oPt1", "Homburg").await;
    let referrer = app.person("optional.ref@example.test", "Dr. Optional").await;
    let creds = app.connector("oPt1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let archive_port = free_port();
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "{}{}[inbound]\nretry_max_secs = 2\n",
            dimse("pacs", orthanc.dicom, "ORTHANC", ""),
            dimse("archive", archive_port, "STORESCP", "required = false")
        ),
    );
    let _connector = Running(site.spawn());
    let files = study(3);
    let id = send(&app, &referrer, "oPt1", "routine", &files).await;
    wait_for("stored while the optional archive is down", 60, || async {
        let t = transfer(&app, &referrer, &id).await;
        let arch = t.targets.iter().find(|p| p.target == "archive");
        if t.state == "stored" && arch.is_some_and(|p| !p.required && p.state == TargetState::Retrying) {
            Ok(())
        } else {
            Err(format!("{} {:?}\n{}", t.state, t.targets, site.log()))
        }
    })
    .await;
    assert_eq!(orthanc.stored().await.len(), 3);
    let scp = Dcmtk::storescp_at(archive_port).await;
    wait_for("the archive filled after the report", 60, || async {
        let t = transfer(&app, &referrer, &id).await;
        let arch = t.targets.iter().find(|p| p.target == "archive");
        if arch.is_some_and(|p| p.state == TargetState::Stored && p.stored == 3) {
            Ok(())
        } else {
            Err(format!("{:?}\n{}", t.targets, site.log()))
        }
    })
    .await;
    let mut want = sops(&files);
    want.sort();
    let got = archived(&scp);
    assert_eq!(got.keys().cloned().collect::<Vec<_>>(), want);
    assert!(got.values().all(|n| *n == 1), "{got:?}");
}

/// storescp refuses JPEG (it accepts none by default). A transfer with a JPEG image keeps being
/// refused there, while a transfer sent after it is stored in both targets at once; the JPEG
/// transfer fails after `max_attempts` refusals and the sender sees the PACS's answer and which
/// target stored what.
#[tokio::test]
async fn a_pacs_refusing_one_instance_holds_up_nothing_and_the_sender_sees_why() {
    let app = spawn_app().await;
    app.community("Klinik Refus", "rFs1", "Homburg").await;
    let referrer = app.person("refusal.ref@example.test", "Dr. Refus").await;
    let creds = app.connector("rFs1").await;
    let orthanc = Orthanc::start(&format!("{}/dicomweb", app.base)).await;
    let scp = Dcmtk::storescp().await;
    let site = Site::new(
        &app,
        &creds,
        &format!(
            "{}{}[inbound]\nmax_attempts = 6\nretry_max_secs = 4\n",
            dimse("pacs", orthanc.dicom, "ORTHANC", ""),
            dimse("storescp", scp.port, "STORESCP", "")
        ),
    );
    let jpeg = vec![("jpeg.dcm".to_string(), pydicom_file("SC_rgb_jpeg_dcmtk.dcm"))];
    let id_j = send(&app, &referrer, "rFs1", "urgent", &jpeg).await;
    let _connector = Running(site.spawn());
    wait_for("the JPEG refused and retried", 30, || async {
        let t = transfer(&app, &referrer, &id_j).await;
        let s = t.targets.iter().find(|p| p.target == "storescp");
        if t.state == "received"
            && s.is_some_and(|p| p.state == TargetState::Retrying && p.message.contains("accepts none of the SOP classes"))
        {
            Ok(())
        } else {
            Err(format!("{} {:?}\n{}", t.state, t.targets, site.log()))
        }
    })
    .await;
    let n = study(4);
    let id_n = send(&app, &referrer, "rFs1", "routine", &n).await;
    wait_for("the next transfer stored while the JPEG is refused", 30, || async {
        let t = transfer(&app, &referrer, &id_n).await;
        if t.state == "stored" { Ok(()) } else { Err(format!("{} {:?}\n{}", t.state, t.targets, site.log())) }
    })
    .await;
    assert_eq!(transfer(&app, &referrer, &id_j).await.state, "received", "the refused transfer is still being retried");
    let want = sops(&n);
    assert!(want.iter().all(|s| archived(&scp).get(s) == Some(&1)), "storescp has the routine transfer once");
    wait_for("the JPEG transfer failed with the answer", 90, || async {
        let t = transfer(&app, &referrer, &id_j).await;
        if t.state == "failed" { Ok(()) } else { Err(format!("{} {:?}", t.state, t.targets)) }
    })
    .await;
    let t = transfer(&app, &referrer, &id_j).await;
    assert!(
        t.state_message.contains("storescp")
            && t.state_message.contains("accepts none of the SOP classes")
            && t.state_message.contains("0 of 1"),
        "{}",
        t.state_message
    );
    let pacs = t.targets.iter().find(|p| p.target == "pacs").unwrap();
    let refusing = t.targets.iter().find(|p| p.target == "storescp").unwrap();
    assert_eq!((pacs.state, pacs.stored), (TargetState::Stored, 1), "the PACS took the JPEG");
    assert_eq!((refusing.state, refusing.stored), (TargetState::Failed, 0));
}

/// The hub's side, by the API: claims hand out urgent transfers first and never a transfer the
/// connector holds; target reports come only from the community's connector that holds the
/// transfer (or, once stored, from the community's connector), and are checked.
#[tokio::test]
async fn claims_take_urgent_first_and_target_reports_are_checked() {
    use serde_json::json;
    let app = spawn_app().await;
    app.community("Klinik API", "aPi1", "Homburg").await;
    app.community("Klinik Fremd", "fRm1", "Trier").await;
    let referrer = app.person("api.ref@example.test", "Dr. API").await;
    let one = app.connector_token(&app.connector("aPi1").await).await;
    let stranger = app.connector_token(&app.connector("fRm1").await).await;
    let post = |t: &str, path: &str| app.client.post(app.url(path)).bearer_auth(t.to_string());
    let put = |t: &str, path: &str| app.client.put(app.url(path)).bearer_auth(t.to_string());

    let routine = send(&app, &referrer, "aPi1", "routine", &study(1)).await;
    let urgent = send(&app, &referrer, "aPi1", "urgent", &study(1)).await;
    let first: serde_json::Value = post(&one, "/api/v1/connector/claim").send().await.unwrap().json().await.unwrap();
    assert_eq!(first["transfer"]["id"], urgent.as_str(), "urgent first, although sent later");
    let second: serde_json::Value = post(&one, "/api/v1/connector/claim").send().await.unwrap().json().await.unwrap();
    assert_eq!(second["transfer"]["id"], routine.as_str(), "a held transfer is not handed out again");
    assert_eq!(post(&one, "/api/v1/connector/claim").send().await.unwrap().status(), 204);

    let path = format!("/api/v1/connector/transfers/{urgent}/targets");
    let good = json!([
        {"target": "pacs", "required": true, "state": "stored", "stored": 1, "total": 1},
        {"target": "archive", "required": false, "state": "retrying", "stored": 0, "total": 1, "since": 1_700_000_000_000i64, "message": "connection refused"}
    ]);
    assert_eq!(put(&one, &path).json(&good).send().await.unwrap().status(), 204);
    let t = transfer(&app, &referrer, &urgent).await;
    assert_eq!(t.targets.len(), 2);
    assert_eq!((t.targets[0].target.as_str(), t.targets[0].state), ("pacs", TargetState::Stored));
    assert_eq!(
        (t.targets[1].target.as_str(), t.targets[1].state, t.targets[1].message.as_str()),
        ("archive", TargetState::Retrying, "connection refused")
    );
    assert!(t.targets[1].updated_at > 0);
    // Another community's connector learns nothing; bad reports are refused with the reason.
    assert_eq!(put(&stranger, &path).json(&good).send().await.unwrap().status(), 404);
    for (bad, why) in [
        (json!([{"target": "a", "required": true, "state": "stored", "stored": 2, "total": 1}]), "stored is more than total"),
        (
            json!([{"target": "a", "required": true, "state": "stored", "stored": 1, "total": 1}, {"target": "a", "required": true, "state": "stored", "stored": 1, "total": 1}]),
            "named twice",
        ),
        (json!([{"target": "", "required": true, "state": "stored", "stored": 1, "total": 1}]), "printable characters"),
        (json!([{"target": "a", "required": true, "state": "lost", "stored": 1, "total": 1}]), ""),
    ] {
        let r = put(&one, &path).json(&bad).send().await.unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        assert!(r.text().await.unwrap().contains(why), "{bad}");
    }
    let many: Vec<serde_json::Value> =
        (0..17).map(|i| json!({"target": format!("t{i}"), "required": true, "state": "pending", "stored": 0, "total": 1})).collect();
    assert_eq!(put(&one, &path).json(&many).send().await.unwrap().status(), 400);
    // Failed: no more reports.
    let r = post(&one, &format!("/api/v1/connector/transfers/{routine}/state"))
        .json(&json!({"state": "failed", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = put(&one, &format!("/api/v1/connector/transfers/{routine}/targets")).json(&good).send().await.unwrap();
    assert_eq!(r.status(), 409);
    // A heartbeat with too many targets is refused; one with targets shows on the admins' list.
    let beat = json!({"version": "t", "queue_depth": 1, "last_error": "archive: connection refused", "last_error_at": 1_700_000_000_000i64,
        "targets": [{"target": "archive", "required": false, "retrying": true, "since": 1_700_000_000_000i64, "last_answer": "connection refused", "queue_depth": 1}]});
    assert_eq!(post(&one, "/api/v1/connector/heartbeat").json(&beat).send().await.unwrap().status(), 204);
    let c = connectors(&app, "aPi1").await.remove(0);
    assert_eq!(c.health, ConnectorHealth::Degraded);
    assert_eq!(c.last_error_at, Some(1_700_000_000_000));
    assert!(c.targets[0].retrying && c.targets[0].last_answer == "connection refused");
    let many: Vec<serde_json::Value> = (0..17).map(|i| json!({"target": format!("t{i}")})).collect();
    let r = post(&one, "/api/v1/connector/heartbeat").json(&json!({"targets": many})).send().await.unwrap();
    assert_eq!(r.status(), 400);
}
