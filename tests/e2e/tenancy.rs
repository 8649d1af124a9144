//! Trust between tenants: UIDs are chosen by whoever writes a file, so an upload carrying someone
//! else's Study, Series or SOP Instance UID must reveal nothing of theirs and change nothing they
//! see; and a patient's deletion removes their data whatever others uploaded under the same UIDs.
//! Each test is the attack as an outsider would run it: a self-registered referrer with their own
//! account, a draft transfer and forged files.

use serde_json::Value;

use crate::fixtures::people::Person;
use crate::fixtures::shares::{BIRTH, clinic, redeem, share_files};
use crate::fixtures::{Synth, TestApp, spawn_app, spawn_app_with, uid};

const DICOM_JSON: &str = "application/dicom+json";

/// The victim's study: sent by its referrer to the clinic RAD1. Returns (study, series, SOP
/// UIDs, files).
async fn victims_study(app: &TestApp, sender: &Person) -> (String, String, Vec<String>, Vec<Vec<u8>>) {
    let (study, series) = (uid(), uid());
    let mut sops = Vec::new();
    let mut files = Vec::new();
    for _ in 0..2 {
        let sop = uid();
        let mut s = Synth::new(&study, &series, &sop);
        s.patient_name = "Victim^Vera".into();
        s.patient_id = "PAT-VICTIM".into();
        s.modality = "CT".into();
        files.push(s.bytes());
        sops.push(sop);
    }
    let named: Vec<(&str, Vec<u8>)> = files.iter().enumerate().map(|(i, b)| (["a.dcm", "b.dcm"][i], b.clone())).collect();
    app.send_transfer(sender, "RAD1", &named).await;
    (study, series, sops, files)
}

fn forged(study: &str, series: &str, sop: &str) -> Synth {
    let mut s = Synth::new(study, series, sop);
    s.patient_name = "Mallory^Mal".into();
    s.patient_id = "PAT-ATTACKER".into();
    s.birth_date = "20000202".into();
    s.modality = "MR".into();
    s
}

async fn qido(app: &TestApp, p: &Person, path: &str) -> (String, Vec<Value>) {
    let r = p.get(app, path).header("accept", DICOM_JSON).send().await.unwrap();
    assert_eq!(r.status(), 200, "{path}");
    let text = r.text().await.unwrap();
    let v: Vec<Value> = serde_json::from_str(&text).unwrap();
    (text, v)
}

fn values(obj: &Value, tag: &str) -> Vec<String> {
    obj[tag]["Value"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string())).collect())
        .unwrap_or_default()
}

fn patient_name(obj: &Value) -> String {
    obj["00100010"]["Value"][0]["Alphabetic"].as_str().unwrap_or_default().to_string()
}

#[tokio::test]
async fn a_forged_upload_under_someone_elses_uids_reveals_and_changes_nothing() {
    let app = spawn_app().await;
    let staff = clinic(&app).await;
    let victim_sender = app.person("dr.victim@example.test", "Dr. Victim").await;
    let (study, series, sops, originals) = victims_study(&app, &victim_sender).await;
    let attacker = app.person("mallory@example.test", "Mallory").await;

    // The attacker's draft: one file under the victim's study UID, one under the victim's own
    // series and SOP Instance UID (other bytes), one that puts the victim's series UID into
    // another study.
    let t = app.open_transfer(&attacker, "RAD1", "fishing").await;
    let draft = t["id"].as_str().unwrap().to_string();
    let f1 = forged(&study, &uid(), &uid()).bytes();
    let f2 = forged(&study, &series, &sops[0]).bytes();
    let r = app.upload_files(&attacker, &draft, &[("f1.dcm", f1.clone()), ("f2.dcm", f2.clone())]).await;
    let status = r.status();
    let report: Value = r.json().await.unwrap();
    // Stored like any file: no 0x0111 "already stored with different content" — that would tell
    // the attacker that the SOP Instance UID exists elsewhere.
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["stored"], 2, "{report}");
    // Nor "the series belongs to another study" for the victim's series UID in another study.
    let other = app.open_transfer(&attacker, "RAD1", "fishing more").await;
    let other = other["id"].as_str().unwrap().to_string();
    let r = app.upload_files(&attacker, &other, &[("f3.dcm", forged(&uid(), &series, &uid()).bytes())]).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());

    // What the attacker can read of their draft: their own files only.
    let r = attacker.get(&app, &format!("/api/v1/transfers/{draft}")).send().await.unwrap();
    let text = r.text().await.unwrap();
    assert!(!text.contains("Victim") && !text.contains("PAT-VICTIM"), "{text}");
    let view: Value = serde_json::from_str(&text).unwrap();
    let studies = view["studies"].as_array().unwrap();
    let mine = studies.iter().find(|s| s["study_uid"] == study.as_str()).expect("the forged study");
    assert_eq!(mine["patient_name"], "Mallory^Mal");
    assert_eq!(mine["instances"], 2);

    // QIDO at every level, with everything included: nothing of the victim.
    for path in [
        format!("/dicomweb/studies?StudyInstanceUID={study}&includefield=all"),
        format!("/dicomweb/studies/{study}/series?includefield=all"),
        format!("/dicomweb/series?SeriesInstanceUID={series}&includefield=all"),
        format!("/dicomweb/studies/{study}/instances?includefield=all"),
        format!("/dicomweb/instances?SOPInstanceUID={}&includefield=all", sops[1]),
        format!("/dicomweb/studies/{study}/metadata"),
    ] {
        let r = attacker.get(&app, &path).header("accept", DICOM_JSON).send().await.unwrap();
        let text = r.text().await.unwrap();
        assert!(!text.contains("Victim") && !text.contains("PAT-VICTIM") && !text.contains(&sops[1]), "{path}: {text}");
    }
    let (_, found) = qido(&app, &attacker, &format!("/dicomweb/studies?StudyInstanceUID={study}")).await;
    assert_eq!(found.len(), 1);
    assert_eq!(patient_name(&found[0]), "Mallory^Mal");
    assert_eq!(values(&found[0], "00080061"), vec!["MR"]);
    assert_eq!(values(&found[0], "00201208"), vec!["2"], "only the attacker's own two instances count");
    // WADO-RS: the attacker retrieves the bytes they sent, never the victim's.
    let got = app_retrieve(&app, &attacker, &format!("/dicomweb/studies/{study}")).await;
    let mut want = vec![f1.clone(), f2.clone()];
    want.sort();
    let mut got_sorted = got.clone();
    got_sorted.sort();
    assert_eq!(got_sorted, want);
    let got = app_retrieve(&app, &attacker, &format!("/dicomweb/studies/{study}/series/{series}/instances/{}", sops[0])).await;
    assert_eq!(got, vec![f2.clone()]);
    assert!(app_retrieve(&app, &attacker, &format!("/dicomweb/studies/{study}/series/{series}/instances/{}", sops[1])).await.is_empty());

    // The clinic and the victim's referrer see exactly what they saw before: the victim's
    // patient, CT only, two instances, the original bytes.
    for p in [&staff, &victim_sender] {
        let (text, found) = qido(&app, p, &format!("/dicomweb/studies?StudyInstanceUID={study}&includefield=all")).await;
        assert_eq!(found.len(), 1, "{text}");
        assert_eq!(patient_name(&found[0]), "Victim^Vera");
        assert_eq!(values(&found[0], "00080061"), vec!["CT"], "the forged MR does not show up in the victim's study");
        assert_eq!(values(&found[0], "00201208"), vec!["2"]);
        assert!(!text.contains("Mallory"), "{text}");
        let got = app_retrieve(&app, p, &format!("/dicomweb/studies/{study}/series/{series}/instances/{}", sops[0])).await;
        assert_eq!(got, vec![originals[0].clone()]);
    }
    // The operator sees the study once.
    let all = app.qido(&format!("/dicomweb/studies?StudyInstanceUID={study}")).await;
    assert_eq!(all.len(), 1);

    // Discarding the draft removes every row, blob and key it wrote; the victim's data stays.
    let r = attacker.browser.delete(app.url(&format!("/api/v1/transfers/{draft}"))).bearer_auth(&attacker.token).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.status());
    let forged_rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM instances WHERE origin = $1")
        .bind(format!("transfer:{draft}"))
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(forged_rows, 0);
    let forged_keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM study_keys WHERE key_id LIKE $1")
        .bind(format!("transfer:{draft}|%"))
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert_eq!(forged_keys, 0);
    let got = app_retrieve(&app, &staff, &format!("/dicomweb/studies/{study}")).await;
    assert_eq!(got.len(), 2);
}

/// Retrieves as `p` (empty when 404).
async fn app_retrieve(app: &TestApp, p: &Person, path: &str) -> Vec<Vec<u8>> {
    let r = p.get(app, path).header("accept", "multipart/related; type=\"application/dicom\"").send().await.unwrap();
    if r.status() == 404 {
        return vec![];
    }
    assert_eq!(r.status(), 200, "{path}");
    let ct = r.headers()["content-type"].to_str().unwrap().to_string();
    let body = r.bytes().await.unwrap();
    crate::fixtures::split_multipart(&ct, &body)
}

/// An attacker who writes a study UID first (UIDs are often predictable) used to own the study
/// row everyone saw — and so the birth date that the clinic's access code asks for.
#[tokio::test]
async fn writing_a_study_uid_first_does_not_set_the_victims_second_factor() {
    let app = spawn_app().await;
    let staff = clinic(&app).await;
    let attacker = app.person("mallory@example.test", "Mallory").await;
    let study = uid();
    let t = app.open_transfer(&attacker, "RAD1", "pre-seeding").await;
    let draft = t["id"].as_str().unwrap().to_string();
    let r = app.upload_files(&attacker, &draft, &[("x.dcm", forged(&study, &uid(), &uid()).bytes())]).await;
    assert_eq!(r.status(), 200);

    let victim_sender = app.person("dr.victim@example.test", "Dr. Victim").await;
    let mut real = Synth::new(&study, &uid(), &uid());
    real.patient_name = "Victim^Vera".into();
    real.patient_id = "PAT-VICTIM".into();
    app.send_transfer(&victim_sender, "RAD1", &[("a.dcm", real.bytes())]).await;

    // The clinic shares the patient's study (by study and by patient ID).
    for body in
        [serde_json::json!({"community": "RAD1", "studies": [study]}), serde_json::json!({"community": "RAD1", "patient_id": "PAT-VICTIM"})]
    {
        let r = staff.post(&app, "/api/v1/shares").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
        let issued: Value = r.json().await.unwrap();
        let text = issued.to_string();
        assert!(!text.contains("Mallory") && !text.contains("PAT-ATTACKER"), "{text}");
        let code = issued["code"].as_str().unwrap();
        assert_eq!(redeem(&app, code, "20000202").await.1, 401, "the attacker's birth date is not the answer");
        let (holder, status, _) = redeem(&app, code, BIRTH).await;
        assert_eq!(status, 200);
        let view: Value = holder.get(app.url("/api/v1/share")).send().await.unwrap().json().await.unwrap();
        assert_eq!(view["studies"][0]["patient_name"], "Victim^Vera");
        assert_eq!(view["studies"][0]["instances"], 1);
    }
    // Sharing by the attacker's patient ID finds nothing the clinic holds.
    let r = staff
        .post(&app, "/api/v1/shares")
        .json(&serde_json::json!({"community": "RAD1", "patient_id": "PAT-ATTACKER"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "{}", r.text().await.unwrap());
}

/// A patient deletes their share while someone else's forged file references the same Study
/// UID: every row, blob and key only the share needed goes, and on SQLite the patient's name is
/// not left in the database files.
#[tokio::test]
async fn a_patients_deletion_removes_their_data_whatever_others_uploaded_under_the_same_uids() {
    let app = spawn_app_with(|c| c.retention.interval_secs = 3600).await;
    let staff = clinic(&app).await;
    let study = uid();
    let marker = format!("Deletable^{}", &uid()[..12].replace('.', "x"));
    let files: Vec<(String, Vec<u8>)> = (0..2)
        .map(|i| {
            let mut s = Synth::new(&study, &uid(), &uid());
            s.patient_name = marker.clone();
            s.patient_id = "PAT-DELETE-ME".into();
            (format!("IMG{i}"), s.bytes())
        })
        .collect();
    let issued = share_files(&app, &staff, &files, serde_json::json!({})).await;
    let share_id = issued["share"]["id"].as_str().unwrap().to_string();
    let attacker = app.person("mallory@example.test", "Mallory").await;
    let t = app.open_transfer(&attacker, "RAD1", "keep it alive").await;
    let draft = t["id"].as_str().unwrap().to_string();
    let r = app.upload_files(&attacker, &draft, &[("x.dcm", forged(&study, &uid(), &uid()).bytes())]).await;
    assert_eq!(r.status(), 200);

    let (patient, status, _) = redeem(&app, issued["code"].as_str().unwrap(), BIRTH).await;
    assert_eq!(status, 200);
    let r = patient.delete(app.url("/api/v1/share")).send().await.unwrap();
    assert_eq!(r.status(), 204);

    let count = |sql: &'static str, bind: String| {
        let db = app.state.db.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).bind(bind).fetch_one(&db).await.unwrap() }
    };
    assert_eq!(count("SELECT COUNT(*) FROM studies WHERE patient_name = $1", marker.clone()).await, 0);
    assert_eq!(count("SELECT COUNT(*) FROM instances WHERE study_uid = $1", study.clone()).await, 1, "the attacker's file is theirs");
    assert_eq!(count("SELECT COUNT(*) FROM study_keys WHERE key_id LIKE $1", format!("share:{share_id}|%")).await, 0);
    assert_eq!(
        count("SELECT COUNT(*) FROM shares WHERE id = $1 AND patient_id = ''", share_id.clone()).await,
        1,
        "the purged share keeps no patient ID"
    );
    assert_eq!(count("SELECT COUNT(*) FROM shares WHERE patient_id = $1", "PAT-DELETE-ME".into()).await, 0);

    // The bytes: the database file and its write-ahead log no longer hold the name.
    if app.database_url.starts_with("sqlite:") {
        for name in ["ferry.db", "ferry.db-wal"] {
            let path = app.dir.path().join(name);
            if let Ok(bytes) = std::fs::read(&path) {
                assert!(!bytes.windows(marker.len()).any(|w| w == marker.as_bytes()), "{name} still holds the deleted patient's name");
            }
        }
    }
    // The operator's view: the study UID now shows only the attacker's file.
    let left = app.qido(&format!("/dicomweb/studies?StudyInstanceUID={study}&includefield=all")).await;
    assert_eq!(left.len(), 1);
    assert_eq!(patient_name(&left[0]), "Mallory^Mal");
}

/// A database written before the index had origins (migrations 1–7) is migrated: every instance
/// takes the origin of the first holding that linked it (transfers before shares, else `hub`),
/// study and series rows follow their instances, links name the origin, and existing data keys
/// (and report keys) keep working under their old id, the study UID.
#[tokio::test]
async fn an_index_written_before_origins_is_migrated() {
    use sqlx::migrate::{Migration, MigrationType, Migrator};
    let dir = tempfile::tempdir().unwrap();
    let url = match crate::fixtures::fresh_database().await {
        Some(url) => url,
        None => format!("sqlite://{}?mode=rwc", dir.path().join("old.db").display()),
    };
    sqlx::any::install_default_drivers();
    let pool = sqlx::AnyPool::connect(&url).await.unwrap();
    let old: Vec<Migration> = ferry_schemas::MIGRATIONS
        .iter()
        .filter(|(v, _, _)| *v <= 7)
        .map(|(v, d, sql)| Migration::new(*v, (*d).into(), MigrationType::Simple, sqlx::SqlSafeStr::into_sql_str(*sql), false))
        .collect();
    Migrator::with_migrations(old).run(&pool).await.unwrap();
    let (st_t, st_s, st_h) = (uid(), uid(), uid());
    for sql in [
        "INSERT INTO users (id, email, name, created_at) VALUES ('u1', 'u1@example.test', 'U', 0)".to_string(),
        "INSERT INTO communities (id, code, name, search_text, created_at) VALUES ('c1', 'C1', 'C', 'c', 0)".into(),
        "INSERT INTO transfers (id, sender_id, community_id, state, created_at, updated_at) VALUES ('t1', 'u1', 'c1', 'sent', 0, 0)".into(),
        "INSERT INTO shares (id, community_id, created_by, question_type, state, created_at, expires_at) VALUES ('s1', 'c1', 'cli', 'PAT_BIRTH_DATE', 'active', 0, 0)".into(),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
    }
    // Study A: in a transfer and (the same instance) in a share; study B: only in the share;
    // study C: linked by nothing (the operator's STOW-RS).
    for (study, sop, name) in [(&st_t, "1.1", "Trans^Fer"), (&st_s, "2.1", "Sha^Re"), (&st_h, "3.1", "Hub^Only")] {
        let series = format!("{sop}.9");
        sqlx::query(
            "INSERT INTO studies (study_uid, patient_name, patient_id, modalities, attrs, created_at, updated_at) VALUES ($1, $2, 'P', '|CT|', '{}', 0, 0)",
        )
        .bind(study)
        .bind(name)
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO series (series_uid, study_uid, modality, attrs, created_at) VALUES ($1, $2, 'CT', '{}', 0)")
            .bind(&series)
            .bind(study)
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, transfer_syntax, size, sha256, blob_path, blob_key, metadata, created_at) \
             VALUES ($1, $2, $3, '1.2', '1.2.840.10008.1.2.1', 10, 'x', $4, 'k', '{}', 0)",
        )
        .bind(sop)
        .bind(&series)
        .bind(study)
        .bind(format!("blobs/{sop}"))
        .execute(&pool)
        .await
        .unwrap();
        sqlx::query("INSERT INTO study_keys (study_uid, wrapped_key, kek_id, created_at) VALUES ($1, 'w', 'local:x', 0)")
            .bind(study)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query("INSERT INTO transfer_instances (transfer_id, sop_instance_uid, series_uid, study_uid) VALUES ('t1', '1.1', '1.1.9', $1)")
        .bind(&st_t)
        .execute(&pool)
        .await
        .unwrap();
    for (sop, study) in [("1.1", &st_t), ("2.1", &st_s)] {
        sqlx::query("INSERT INTO share_instances (share_id, sop_instance_uid, series_uid, study_uid) VALUES ('s1', $1, $2, $3)")
            .bind(sop)
            .bind(format!("{sop}.9"))
            .bind(study)
            .execute(&pool)
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO share_reports (id, share_id, study_uid, name, size, sha256, blob_path, blob_key, release_at, created_at) \
         VALUES ('r1', 's1', $1, 'r.pdf', 1, 'x', 'reports/r1', 'k', 0, 0)",
    )
    .bind(&st_s)
    .execute(&pool)
    .await
    .unwrap();
    pool.close().await;

    let (db, _) = ferry_hub::db::connect(&url, Some(2)).await.expect("migrates");
    let rows: Vec<(String, String, String)> =
        sqlx::query_as("SELECT sop_instance_uid, origin, key_id FROM instances ORDER BY sop_instance_uid").fetch_all(&db).await.unwrap();
    assert_eq!(
        rows,
        vec![
            ("1.1".to_string(), "transfer:t1".to_string(), st_t.clone()),
            ("2.1".to_string(), "share:s1".to_string(), st_s.clone()),
            ("3.1".to_string(), "hub".to_string(), st_h.clone()),
        ]
    );
    let studies: Vec<(String, String, String)> =
        sqlx::query_as("SELECT origin, study_uid, patient_name FROM studies ORDER BY patient_name").fetch_all(&db).await.unwrap();
    assert_eq!(
        studies,
        vec![
            ("hub".to_string(), st_h.clone(), "Hub^Only".to_string()),
            ("share:s1".to_string(), st_s.clone(), "Sha^Re".to_string()),
            ("transfer:t1".to_string(), st_t.clone(), "Trans^Fer".to_string()),
        ]
    );
    let series: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM series s JOIN instances i ON i.origin = s.origin AND i.series_uid = s.series_uid")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(series, 3);
    let links: Vec<(String, String)> = sqlx::query_as(
        "SELECT 'transfer', origin FROM transfer_instances UNION ALL SELECT sop_instance_uid, origin FROM share_instances ORDER BY 1, 2",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    assert_eq!(
        links,
        vec![
            ("1.1".to_string(), "transfer:t1".to_string()),
            ("2.1".to_string(), "share:s1".to_string()),
            ("transfer".to_string(), "transfer:t1".to_string())
        ]
    );
    let keys: Vec<String> = sqlx::query_scalar("SELECT key_id FROM study_keys ORDER BY key_id").fetch_all(&db).await.unwrap();
    let mut want = vec![st_t.clone(), st_s.clone(), st_h.clone()];
    want.sort();
    assert_eq!(keys, want);
    let report_key: String = sqlx::query_scalar("SELECT key_id FROM share_reports WHERE id = 'r1'").fetch_one(&db).await.unwrap();
    assert_eq!(report_key, st_s);
}
