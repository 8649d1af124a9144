//! Accounts and sign-in through the real HTTP API: registration with email confirmation,
//! sessions, identical answers for unknown email and wrong password, lockout, password reset,
//! personal access tokens, rate limits, cross-site protection, first-admin setup.

use serde_json::{Value, json};

use crate::fixtures::people::{PASSWORD, browser};
use crate::fixtures::{hub_binary, spawn_app, spawn_app_with};

#[tokio::test]
async fn a_referrer_registers_confirms_the_email_signs_in_and_out() {
    let app = spawn_app().await;
    let r = app.register_raw("Anna.Arzt@Example.test", "Dr. Anna Arzt", PASSWORD).await;
    assert_eq!(r.status(), 202);
    // Not confirmed yet: the right password is answered with a new link, not a session.
    let b = browser();
    let r = app.login(&b, "anna.arzt@example.test", PASSWORD).await;
    assert_eq!(r.status(), 403);
    assert!(r.text().await.unwrap().contains("confirm your email"));
    assert!(app.mails_to("anna.arzt@example.test").len() >= 2, "a new link was mailed");
    let bad = app.client.post(app.url("/api/v1/auth/verify")).json(&json!({"token": "00"})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    let token = app.mailed_token("anna.arzt@example.test", "/verify").expect("link");
    let r = app.client.post(app.url("/api/v1/auth/verify")).json(&json!({"token": token})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    // The address is case-insensitive; the session is a cookie with the right attributes.
    let r = app.login(&b, "ANNA.ARZT@example.test", PASSWORD).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers().get("set-cookie").unwrap().to_str().unwrap().to_string();
    assert!(cookie.starts_with("ferry_session="), "{cookie}");
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax") && cookie.contains("Path=/"), "{cookie}");
    let me: Value = b.get(app.url("/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "Dr. Anna Arzt");
    assert_eq!(me["practice"], "Praxis Dr. Test");
    assert_eq!(me["email_verified"], true);
    assert_eq!(me["hub_admin"], false);
    let r = b.post(app.url("/api/v1/auth/logout")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(b.get(app.url("/api/v1/me")).send().await.unwrap().status(), 401);
    // Bad input gets a clear problem, and nothing is created.
    let r = app.register_raw("not-an-address", "X", PASSWORD).await;
    assert_eq!(r.status(), 400);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    let r = app.register_raw("short@example.test", "X", "short").await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("at least 10"));
}

#[tokio::test]
async fn unknown_email_and_wrong_password_look_the_same_and_failures_lock_the_account() {
    let app = spawn_app_with(|c| {
        c.auth.max_failed_logins = 3;
        c.auth.lockout_secs = 2;
    })
    .await;
    app.person("bob@example.test", "Bob").await;
    let b = browser();
    let unknown = app.login(&b, "nobody@example.test", PASSWORD).await;
    let (s1, body1): (u16, Value) = (unknown.status().as_u16(), unknown.json().await.unwrap());
    let wrong = app.login(&b, "bob@example.test", "wrong password!").await;
    let (s2, body2): (u16, Value) = (wrong.status().as_u16(), wrong.json().await.unwrap());
    assert_eq!((s1, s2), (401, 401));
    assert_eq!(body1["detail"], body2["detail"]);
    // Registering a taken address answers like a new one; the owner gets a mail instead.
    let again = app.register_raw("bob@example.test", "Mallory", PASSWORD).await;
    assert_eq!(again.status(), 202);
    assert!(app.mails_to("bob@example.test").iter().any(|m| m.contains("already has an account")));
    // Three failures lock the account: the right password is refused, with the same words.
    for _ in 0..2 {
        assert_eq!(app.login(&b, "bob@example.test", "wrong password!").await.status(), 401);
    }
    let locked = app.login(&b, "bob@example.test", PASSWORD).await;
    assert_eq!(locked.status(), 401);
    assert_eq!(locked.json::<Value>().await.unwrap()["detail"], body1["detail"]);
    tokio::time::sleep(std::time::Duration::from_millis(2200)).await;
    assert_eq!(app.login(&b, "bob@example.test", PASSWORD).await.status(), 200);
}

#[tokio::test]
async fn a_password_reset_link_works_once_and_ends_other_sessions() {
    let app = spawn_app().await;
    let carla = app.person("carla@example.test", "Carla").await;
    let r = app.client.post(app.url("/api/v1/auth/password-reset")).json(&json!({"email": "ghost@example.test"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    assert!(app.mails_to("ghost@example.test").is_empty());
    let r = app.client.post(app.url("/api/v1/auth/password-reset")).json(&json!({"email": "carla@example.test"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let token = app.mailed_token("carla@example.test", "/reset").expect("reset link");
    let new = "a brand new passphrase";
    let r = app
        .client
        .post(app.url("/api/v1/auth/password-reset/confirm"))
        .json(&json!({"token": token, "password": new}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let again = app
        .client
        .post(app.url("/api/v1/auth/password-reset/confirm"))
        .json(&json!({"token": token, "password": "another passphrase"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 400, "a reset link works once");
    assert_eq!(carla.browser.get(app.url("/api/v1/me")).send().await.unwrap().status(), 401, "old session ended");
    let b = browser();
    assert_eq!(app.login(&b, "carla@example.test", PASSWORD).await.status(), 401);
    assert_eq!(app.login(&b, "carla@example.test", new).await.status(), 200);
}

#[tokio::test]
async fn personal_access_tokens_are_shown_once_stored_hashed_and_revocable() {
    let app = spawn_app().await;
    let dora = app.person("dora@example.test", "Dora").await;
    assert!(dora.token.starts_with("fpat_"));
    let me: Value = dora.get(&app, "/api/v1/me").send().await.unwrap().json().await.unwrap();
    assert_eq!(me["id"], dora.id.as_str());
    let list: Vec<Value> = dora.get(&app, "/api/v1/tokens").send().await.unwrap().json().await.unwrap();
    assert_eq!(list.len(), 1);
    assert!(list[0].get("token").is_none(), "the secret is never listed");
    // A token cannot mint tokens (a leaked token must not outlive its revocation).
    let r = dora.post(&app, "/api/v1/tokens").json(&json!({"name": "more"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let bad = dora.browser.post(app.url("/api/v1/tokens")).json(&json!({"name": "x", "expires_in_days": 4000})).send().await.unwrap();
    assert_eq!(bad.status(), 400);
    // Only the hash is in the database.
    let stored: Vec<(String,)> = sqlx::query_as("SELECT token_hash FROM api_tokens").fetch_all(&app.state.db).await.unwrap();
    assert!(stored.iter().all(|(h,)| !h.contains(&dora.token[5..])));
    let id = list[0]["id"].as_str().unwrap();
    let r = dora.browser.delete(app.url(&format!("/api/v1/tokens/{id}"))).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = dora.get(&app, "/api/v1/me").send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let r = app.client.get(app.url("/api/v1/me")).bearer_auth("fpat_0000").send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_address() {
    let app = spawn_app_with(|c| {
        c.auth.rate_burst = 3;
        c.auth.rate_period_ms = 60_000;
    })
    .await;
    let b = browser();
    for _ in 0..3 {
        assert_eq!(app.login(&b, "x@example.test", "whatever else").await.status(), 401);
    }
    let r = app.login(&b, "x@example.test", "whatever else").await;
    assert_eq!(r.status(), 429);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    assert!(r.headers().contains_key("retry-after"));
    // Other endpoints are not limited by it.
    assert_eq!(app.client.get(app.url("/healthz")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn cross_site_form_posts_are_refused() {
    let app = spawn_app().await;
    let erik = app.person("erik@example.test", "Erik").await;
    let evil = erik
        .browser
        .post(app.url("/api/v1/tokens"))
        .header("origin", "http://evil.example")
        .json(&json!({"name": "stolen"}))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403);
    let evil = app
        .client
        .post(app.url("/api/v1/auth/login"))
        .header("sec-fetch-site", "cross-site")
        .json(&json!({"email": "erik@example.test", "password": PASSWORD}))
        .send()
        .await
        .unwrap();
    assert_eq!(evil.status(), 403, "login CSRF");
    let same = erik
        .browser
        .post(app.url("/api/v1/tokens"))
        .header("origin", app.base.clone())
        .header("sec-fetch-site", "same-origin")
        .json(&json!({"name": "mine"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), 201);
}

#[tokio::test]
async fn the_first_admin_comes_from_the_printed_setup_link_or_the_cli() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = std::process::Command::new(hub_binary());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"]).arg(dir.path()).env("FERRY_LOG__FILTER", "warn");
    let mut child = cmd.stdout(std::process::Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (url, line) = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        let first = lines.next().unwrap().unwrap();
        let second = lines.next().unwrap().unwrap();
        (first.trim().strip_prefix("Ferry hub listening on ").unwrap().to_string(), second)
    })
    .await
    .unwrap();
    let link = line.split_whitespace().find(|w| w.starts_with("http")).expect("setup link").to_string();
    assert!(link.starts_with(&format!("{url}/setup?token=")), "{line}");
    let token = link.rsplit_once("token=").unwrap().1.to_string();
    let client = reqwest::Client::new();
    let body = json!({"token": token, "email": "root@example.test", "password": PASSWORD, "name": "Admin"});
    let r = client.post(format!("{url}/api/v1/auth/setup")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 201);
    let me: Value = r.json().await.unwrap();
    assert_eq!(me["hub_admin"], true);
    let again = client.post(format!("{url}/api/v1/auth/setup")).json(&body).send().await.unwrap();
    assert_eq!(again.status(), 409);
    child.kill().unwrap();
    child.wait().unwrap();

    // The command line creates accounts too (password from stdin), and adds members.
    let mut cli = std::process::Command::new(hub_binary())
        .args(["admin", "create-user", "--email", "ops@example.test", "--name", "Ops", "--admin", "--password-stdin", "--data-dir"])
        .arg(dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    cli.stdin.take().unwrap().write_all(format!("{PASSWORD}\n").as_bytes()).unwrap();
    let out = cli.wait_with_output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("hub admin"));
    let dup = std::process::Command::new(hub_binary())
        .args(["admin", "create-user", "--email", "ops@example.test", "--name", "Ops", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("exists"), "{}", String::from_utf8_lossy(&dup.stderr));
}

#[tokio::test]
async fn with_smtp_configured_the_links_go_out_by_mail() {
    let smtp = crate::fixtures::peers::Smtp::start().await;
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let app = spawn_app_with(move |c| {
        c.mail.smtp_url = Some(secrecy::SecretString::from(url));
        c.mail.from = Some("Ferry Test <noreply@ferry.test>".into());
    })
    .await;
    let r = app.register_raw("smtp.user@example.test", "SMTP User", PASSWORD).await;
    assert_eq!(r.status(), 202);
    let mut text = String::new();
    for _ in 0..100 {
        text = smtp.received();
        if text.contains("/verify?token=") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(text.contains("To: smtp.user@example.test"), "{text}");
    assert!(text.contains("noreply@ferry.test"), "{text}");
    let prefix = format!("{}/verify?token=", app.base);
    let token = text.lines().find_map(|l| l.trim().strip_prefix(&prefix)).expect("link in the mail").trim().to_string();
    let r = app.client.post(app.url("/api/v1/auth/verify")).json(&json!({"token": token})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(app.mails_to("smtp.user@example.test").is_empty(), "nothing in the development outbox");
}
