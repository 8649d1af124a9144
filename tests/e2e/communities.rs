//! The community directory: creation (API and CLI), lookup, and search as people type.

use std::process::Command;

use serde_json::{Value, json};

use crate::fixtures::*;

async fn create(app: &TestApp, body: Value) -> (u16, Value) {
    let r = app.client.post(app.url("/api/v1/communities")).bearer_auth(TOKEN).json(&body).send().await.expect("post");
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn search(app: &TestApp, q: &str) -> Vec<String> {
    let url = format!("{}?q={}", app.url("/api/v1/communities"), q.replace(' ', "+"));
    let url = reqwest::Url::parse(&url).expect("url");
    let r = app.client.get(url).bearer_auth(TOKEN).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let list: Vec<Value> = r.json().await.expect("json");
    list.iter().map(|c| c["name"].as_str().expect("name").to_string()).collect()
}

#[tokio::test]
async fn communities_are_created_and_found_the_way_people_type() {
    let app = spawn_app().await;
    let (status, c) = create(&app, json!({"name": "Radiologie Klinikum Saarbrücken", "city": "Saarbrücken", "code": "bM1X", "departments": ["Radiologie", "Nuklearmedizin"]})).await;
    assert_eq!(status, 201, "{c}");
    assert_eq!(c["code"], "bM1X");
    assert_eq!(c["accepts_inbound"], true);
    for (name, city) in [
        ("Kardiologie Universitätsklinikum", "Homburg"),
        ("Praxis für Radiologie Dr. Groß", "Saarlouis"),
        ("Radiologie am Theater", "Berlin"),
    ] {
        let (status, c) = create(&app, json!({"name": name, "city": city})).await;
        assert_eq!(status, 201);
        let code = c["code"].as_str().expect("code");
        assert_eq!(code.len(), 4, "a short generated code");
    }
    assert!(search(&app, "strahlentherapie").await.is_empty());
    // The CLI writes to the same directory (and a running hub sees it at once).
    let out = Command::new(hub_binary())
        .args(["admin", "create-community", "--name", "Strahlentherapie Süd", "--city", "Saarbrücken", "--code", "sT9z", "--data-dir"])
        .arg(app.dir.path())
        .env("FERRY_DATABASE__URL", &app.database_url)
        .output()
        .expect("cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("sT9z\t"));
    assert_eq!(search(&app, "strahlentherapie").await, ["Strahlentherapie Süd"]);
    let out = Command::new(hub_binary())
        .args(["admin", "create-community", "--name", "Doppelt", "--code", "sT9z", "--data-dir"])
        .arg(app.dir.path())
        .env("FERRY_DATABASE__URL", &app.database_url)
        .output()
        .expect("cli");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("taken"));

    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(sorted(search(&app, "saarbruecken").await), ["Radiologie Klinikum Saarbrücken", "Strahlentherapie Süd"]);
    assert_eq!(sorted(search(&app, "radiolo saar").await), ["Praxis für Radiologie Dr. Groß", "Radiologie Klinikum Saarbrücken"]);
    assert_eq!(sorted(search(&app, "SAAR radiolo").await), ["Praxis für Radiologie Dr. Groß", "Radiologie Klinikum Saarbrücken"]);
    assert_eq!(search(&app, "gross").await, ["Praxis für Radiologie Dr. Groß"]);
    assert_eq!(search(&app, "universitaetsklinikum").await, ["Kardiologie Universitätsklinikum"]);
    assert_eq!(search(&app, "Saarbrüken").await.len(), 2, "one letter missing");
    assert_eq!(search(&app, "radiolgoie saarbruecken").await, ["Radiologie Klinikum Saarbrücken"], "transposed letters");
    assert_eq!(search(&app, "nuklear").await, ["Radiologie Klinikum Saarbrücken"], "departments are searched");
    assert_eq!(search(&app, "bM1X").await[0], "Radiologie Klinikum Saarbrücken", "the public code");
    assert!(search(&app, "zahnarzt").await.is_empty());
    assert_eq!(search(&app, "").await.len(), 5);

    let r = app.client.get(app.url("/api/v1/communities/bM1X")).bearer_auth(TOKEN).send().await.expect("get");
    assert_eq!(r.json::<Value>().await.expect("json")["departments"], json!(["Radiologie", "Nuklearmedizin"]));
    assert_eq!(app.client.get(app.url("/api/v1/communities/nope")).bearer_auth(TOKEN).send().await.expect("get").status(), 404);
}

#[tokio::test]
async fn bad_community_requests_are_explained() {
    let app = spawn_app().await;
    assert_eq!(create(&app, json!({"name": "A", "code": "dup1"})).await.0, 201);
    let (status, p) = create(&app, json!({"name": "B", "code": "dup1"})).await;
    assert_eq!((status, p["status"].as_u64()), (409, Some(409)), "{p}");
    assert_eq!(create(&app, json!({"name": "  "})).await.0, 400);
    assert_eq!(create(&app, json!({"name": "C", "code": "no spaces"})).await.0, 400);
    let r = app
        .client
        .post(app.url("/api/v1/communities"))
        .bearer_auth(TOKEN)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.client.post(app.url("/api/v1/communities")).json(&json!({"name": "D"})).send().await.expect("post");
    assert_eq!(r.status(), 401);
    let r = app.client.get(app.url("/api/v1/communities?limit=0")).bearer_auth(TOKEN).send().await.expect("get");
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn the_openapi_document_is_served_and_lists_the_api() {
    let app = spawn_app().await;
    let r = app.client.get(app.url("/api/v1/openapi.yaml")).send().await.expect("get");
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("text");
    for path in ["/api/v1/uploads:", "/api/v1/communities:", "/api/v1/communities/{code}:", "/dicomweb/studies:"] {
        assert!(text.contains(path), "{path} missing from the OpenAPI document");
    }
}

#[tokio::test]
async fn community_admins_set_a_checked_logo_shown_in_the_directory() {
    use base64::Engine;
    let app = crate::fixtures::spawn_app().await;
    app.community("Logo Klinik", "lOgo", "Trier").await;
    let admin = app.person("logo.admin@example.test", "Logo Admin").await;
    let other = app.person("logo.other@example.test", "Other").await;
    app.add_member("lOgo", "logo.admin@example.test", "admin").await;
    let png = base64::engine::general_purpose::STANDARD
        .decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
        .unwrap();
    let put = |token: &str, body: Vec<u8>| {
        app.client.put(app.url("/api/v1/communities/lOgo/logo")).bearer_auth(token.to_string()).body(body).send()
    };
    assert_eq!(put(&other.token, png.clone()).await.unwrap().status(), 403);
    assert_eq!(put(&admin.token, b"<svg onload=alert(1)>".to_vec()).await.unwrap().status(), 415);
    assert_eq!(put(&admin.token, vec![0x89; 300 * 1024]).await.unwrap().status(), 413);
    assert_eq!(put(&admin.token, png.clone()).await.unwrap().status(), 204);
    let r = other.get(&app, "/api/v1/communities/lOgo/logo").send().await.unwrap();
    assert_eq!(r.headers()["content-type"], "image/png");
    assert_eq!(r.bytes().await.unwrap().to_vec(), png);
    let found: Vec<serde_json::Value> = other.get(&app, "/api/v1/communities?q=logo").send().await.unwrap().json().await.unwrap();
    assert_eq!(found[0]["has_logo"], true);
    let page = other.get(&app, "/send?q=logo").send().await.unwrap().text().await.unwrap();
    assert!(page.contains("/api/v1/communities/lOgo/logo"), "the directory page shows it");
}
