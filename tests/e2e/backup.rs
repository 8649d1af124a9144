//! Backup and tested restore: `ferry-hub backup` while the hub runs (database snapshot, encrypted
//! blobs; the keys to a separate folder), the hub and its data folder gone, `ferry-hub restore`
//! into a fresh setup (SQLite, or a new PostgreSQL database in the PostgreSQL pass) — and the
//! restored hub serves every image byte-identical, the patient's access code still works (the
//! hub secret came back), the audit trail verifies. A restore never overwrites a hub.

use serde_json::json;

use crate::fixtures::shares::{clinic, redeem, share_files, study_files};
use crate::fixtures::*;

#[tokio::test]
async fn a_backup_restores_into_a_fresh_hub_with_images_codes_and_audit_trail() {
    let mut app = spawn_app().await;
    let staff = clinic(&app).await;
    let shared = uid();
    let issued = share_files(&app, &staff, &study_files(&shared, 2), json!({"second_factor": "password"})).await;
    let (code, password) = (issued["code"].as_str().unwrap().to_string(), issued["password"].as_str().unwrap().to_string());
    let s = Synth::new(&uid(), &uid(), &uid());
    assert_eq!(app.stow(&[&s.bytes()]).await.0, 200);
    let path = format!("/dicomweb/studies/{}/series/{}/instances/{}", s.study, s.series, s.sop);

    // Backup while the hub runs; the keys go elsewhere.
    let backups = tempfile::tempdir().unwrap();
    let (data, keys) = (backups.path().join("data"), backups.path().join("keys"));
    let (ok, out) =
        hub_cli(&app.database_url, app.dir.path(), &[], &["backup", data.to_str().unwrap(), "--keys-to", keys.to_str().unwrap()]);
    assert!(ok && out.contains("5 blob(s)"), "{out}");
    assert!(keys.join("kek.hex").exists() && keys.join("hub-secret.hex").exists());
    assert!(!data.join("keys").exists(), "no key in the data backup");

    // The hub and everything it had are gone.
    app.crash().await;
    std::fs::remove_dir_all(app.dir.path()).unwrap();

    // Restore into a fresh setup.
    let fresh = tempfile::tempdir().unwrap();
    let fresh_db = fresh_database().await;
    let fresh_url = fresh_db.clone().unwrap_or_else(|| format!("sqlite://{}?mode=rwc", fresh.path().join("ferry.db").display()));
    let (ok, out) = hub_cli(&fresh_url, fresh.path(), &[], &["restore", data.to_str().unwrap()]);
    assert!(!ok && out.contains("--keys-from"), "without the keys the restore stops before it starts: {out}");
    assert!(!fresh.path().join("ferry.db").exists() && !fresh.path().join("blobs").read_dir().is_ok_and(|mut d| d.next().is_some()));
    let (ok, out) = hub_cli(&fresh_url, fresh.path(), &[], &["restore", data.to_str().unwrap(), "--keys-from", keys.to_str().unwrap()]);
    assert!(ok && out.contains("restored 5 blob(s); 2 study key(s) unwrap and 5 instance(s) have their blobs"), "{out}");
    // A restore never overwrites a hub.
    let (ok, out) = hub_cli(&fresh_url, fresh.path(), &[], &["restore", data.to_str().unwrap(), "--keys-from", keys.to_str().unwrap()]);
    assert!(!ok && out.contains("not empty"), "{out}");

    let restored = spawn_app_at(fresh, fresh_db, |_| {}).await;
    assert_eq!(restored.retrieve(&path).await, vec![s.bytes()], "byte-identical after restore");
    let (patient, status, _) = redeem(&restored, &code, &password).await;
    assert_eq!(status, 200, "the access code works on the restored hub");
    let r = patient.get(restored.url("/api/v1/share")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (ok, out) = hub_cli(&restored.database_url, restored.dir.path(), &[], &["audit", "verify"]);
    assert!(ok && out.contains("audit trail intact"), "{out}");
}
