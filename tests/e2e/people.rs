//! People for the account and transfer tests: registered through the real API, email confirmed
//! through the link the hub "mailed" (its outbox folder), signed in with a cookie session, and
//! holding a personal access token.

#![allow(dead_code)]

use serde_json::{Value, json};

use crate::helpers::{TOKEN, TestApp};

pub const PASSWORD: &str = "correct horse battery";

pub struct Person {
    pub id: String,
    pub email: String,
    /// Signed in: carries the session cookie.
    pub browser: reqwest::Client,
    /// A personal access token for API calls.
    pub token: String,
}

impl Person {
    pub fn get(&self, app: &TestApp, path: &str) -> reqwest::RequestBuilder {
        app.client.get(app.url(path)).bearer_auth(&self.token)
    }

    pub fn post(&self, app: &TestApp, path: &str) -> reqwest::RequestBuilder {
        app.client.post(app.url(path)).bearer_auth(&self.token)
    }
}

/// A client with its own cookie jar, never following redirects (tests look at them).
pub fn browser() -> reqwest::Client {
    reqwest::Client::builder().cookie_store(true).redirect(reqwest::redirect::Policy::none()).build().expect("client")
}

impl TestApp {
    /// The mails the hub wrote to its outbox for `to`, oldest first.
    pub fn mails_to(&self, to: &str) -> Vec<String> {
        let dir = self.dir.path().join("outbox");
        let mut files: Vec<_> = std::fs::read_dir(&dir).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        files.sort();
        files
            .into_iter()
            .filter_map(|p| std::fs::read_to_string(p).ok())
            .filter(|m| m.lines().any(|l| l.eq_ignore_ascii_case(&format!("To: {to}"))))
            .collect()
    }

    /// The token of the newest link to `path` (e.g. `/verify`) mailed to `to`.
    pub fn mailed_token(&self, to: &str, path: &str) -> Option<String> {
        let prefix = format!("{}{path}?token=", self.base);
        self.mails_to(to).iter().rev().find_map(|m| m.lines().find_map(|l| l.trim().strip_prefix(&prefix).map(|t| t.trim().to_string())))
    }

    pub async fn register_raw(&self, email: &str, name: &str, password: &str) -> reqwest::Response {
        self.client
            .post(self.url("/api/v1/auth/register"))
            .json(&json!({"email": email, "password": password, "name": name,
                          "practice": "Praxis Dr. Test", "address": "Hauptstr. 1, 66111 Saarbrücken", "phone": "0681 12345"}))
            .send()
            .await
            .expect("register")
    }

    pub async fn login(&self, browser: &reqwest::Client, email: &str, password: &str) -> reqwest::Response {
        browser.post(self.url("/api/v1/auth/login")).json(&json!({"email": email, "password": password})).send().await.expect("login")
    }

    /// Registers, confirms the email through the mailed link, signs in, creates a token.
    pub async fn person(&self, email: &str, name: &str) -> Person {
        let r = self.register_raw(email, name, PASSWORD).await;
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap_or_default());
        let token = self.mailed_token(email, "/verify").expect("verification mail");
        let r = self.client.post(self.url("/api/v1/auth/verify")).json(&json!({"token": token})).send().await.expect("verify");
        assert_eq!(r.status(), 200);
        let browser = browser();
        let r = self.login(&browser, email, PASSWORD).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let me: Value = r.json().await.expect("me");
        let r = browser.post(self.url("/api/v1/tokens")).json(&json!({"name": "tests"})).send().await.expect("token");
        assert_eq!(r.status(), 201);
        let t: Value = r.json().await.expect("token json");
        Person {
            id: me["id"].as_str().expect("id").into(),
            email: email.into(),
            browser,
            token: t["token"].as_str().expect("token").into(),
        }
    }

    /// A hub admin account (through the library, as `ferry-hub admin create-user --admin`).
    pub async fn hub_admin(&self, email: &str) -> Person {
        ferry_hub::accounts::create_user_cli(&self.state.db_write, email, "Hub Admin", PASSWORD.into(), true).await.expect("create admin");
        let browser = browser();
        let r = self.login(&browser, email, PASSWORD).await;
        assert_eq!(r.status(), 200);
        let me: Value = r.json().await.expect("me");
        let r = browser.post(self.url("/api/v1/tokens")).json(&json!({"name": "tests"})).send().await.expect("token");
        let t: Value = r.json().await.expect("token json");
        Person {
            id: me["id"].as_str().expect("id").into(),
            email: email.into(),
            browser,
            token: t["token"].as_str().expect("token").into(),
        }
    }

    pub async fn community(&self, name: &str, code: &str, city: &str) {
        let r = self
            .client
            .post(self.url("/api/v1/communities"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": name, "code": code, "city": city}))
            .send()
            .await
            .expect("create community");
        assert_eq!(r.status(), 201);
    }

    pub async fn add_member(&self, code: &str, email: &str, role: &str) {
        let r = self
            .client
            .put(self.url(&format!("/api/v1/communities/{code}/members")))
            .bearer_auth(TOKEN)
            .json(&json!({"email": email, "role": role}))
            .send()
            .await
            .expect("add member");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    }

    /// Opens a transfer, uploads `files` (name, bytes) as a folder upload, and sends it.
    /// Registers a connector for the community `code`; returns (client id, secret).
    pub async fn connector(&self, code: &str) -> (String, String) {
        let c: Value = self
            .client
            .post(self.url(&format!("/api/v1/communities/{code}/connectors")))
            .bearer_auth(TOKEN)
            .json(&json!({"name": "Keller"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        (c["client_id"].as_str().unwrap().into(), c["client_secret"].as_str().unwrap().into())
    }

    /// An access token for a connector, by OAuth2 client credentials.
    pub async fn connector_token(&self, creds: &(String, String)) -> String {
        let t: Value = self
            .client
            .post(self.url("/oauth/token"))
            .form(&[("grant_type", "client_credentials"), ("client_id", creds.0.as_str()), ("client_secret", creds.1.as_str())])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        t["access_token"].as_str().expect("access token").to_string()
    }

    pub async fn send_transfer(&self, p: &Person, code: &str, files: &[(&str, Vec<u8>)]) -> Value {
        let t = self.open_transfer(p, code, "Befund erbeten").await;
        let id = t["id"].as_str().expect("id").to_string();
        let r = self.upload_files(p, &id, files).await;
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        let r = p.post(self, &format!("/api/v1/transfers/{id}/send")).send().await.expect("send");
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
        r.json().await.expect("transfer")
    }

    pub async fn open_transfer(&self, p: &Person, code: &str, reason: &str) -> Value {
        let r = p
            .post(self, "/api/v1/transfers")
            .json(&json!({"community": code, "reason": reason, "appointment": "2026-12-01", "urgency": "urgent"}))
            .send()
            .await
            .expect("open");
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap_or_default());
        r.json().await.expect("json")
    }

    pub async fn upload_files(&self, p: &Person, id: &str, files: &[(&str, Vec<u8>)]) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, bytes) in files {
            form = form.part("file", reqwest::multipart::Part::bytes(bytes.clone()).file_name(name.to_string()));
        }
        p.post(self, &format!("/api/v1/transfers/{id}/files")).multipart(form).send().await.expect("upload")
    }
}
