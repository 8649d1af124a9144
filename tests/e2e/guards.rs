//! The guards as an outsider meets them (issue 17, parts 2 and 3): lockouts of access codes and
//! accounts under concurrent requests from several addresses, credentials that only a browser
//! session may change, redirect targets, what a code lookup gives away, and what the hub leaves
//! on disk and in its log.

use std::io::Write;
use std::net::IpAddr;
use std::time::Duration;

use futures_util::future::join_all;
use serde_json::{Value, json};

use crate::fixtures::people::{PASSWORD, Person, browser};
use crate::fixtures::shares::{clinic, share_files, study_files};
use crate::fixtures::{Synth, TOKEN, TestApp, fresh_database, hub_binary, spawn_app, spawn_app_with, uid};

/// A client that connects from the loopback address `ip` (127.0.0.2, …), with its own cookies
/// and no redirects followed: another outsider for the per-address rate limits.
fn from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>().expect("ip"))
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// The audit records of a share, as its clinic's staff see them.
async fn share_log(app: &TestApp, staff: &Person, id: &str) -> Vec<Value> {
    staff.get(app, &format!("/api/v1/shares/{id}/log")).send().await.unwrap().json().await.unwrap()
}

/// Audit records by action, as the operator sees them.
async fn audit(app: &TestApp, action: &str) -> Vec<Value> {
    app.operator_json(&format!("/api/v1/audit?action={action}&limit=1000")).await
}

fn tfa(answer: &str) -> Value {
    json!({"tfaAnswer": [{"questionId": "1", "answer": answer}]})
}

// ---- 1. access-code lockout under concurrency ---------------------------------------------------

/// Thirty wrong answers at once from six addresses (by the redeem API and by DLX): exactly
/// `shares.max_failed` (5) of them are checked and counted, the code locks, and the right answer
/// — sent while they are still being answered, and again afterwards — is refused like a wrong one.
#[tokio::test]
async fn concurrent_wrong_answers_check_no_more_than_the_limit_and_lock_the_code() {
    let app = spawn_app().await;
    let max_failed = app.config.shares.max_failed as usize;
    assert_eq!(max_failed, 5, "the documented default");
    let staff = clinic(&app).await;
    let issued = share_files(&app, &staff, &study_files(&uid(), 1), json!({"second_factor": "password"})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    let password = issued["password"].as_str().unwrap().to_string();
    let id = issued["share"]["id"].as_str().unwrap().to_string();

    let clients: Vec<reqwest::Client> = (2..8).map(|i| from(&format!("127.0.0.{i}"))).collect();
    let mut wrong = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for j in 0..5 {
            let guess = format!("WRONG-{i}{j}XXX");
            let req = if (i + j) % 2 == 0 {
                c.post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": guess}))
            } else {
                c.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&tfa(&guess))
            };
            wrong.push(req.send());
        }
    }
    let holder = from("127.0.0.9");
    let right = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        holder.post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": password})).send().await.unwrap()
    };
    let (answers, right) = tokio::join!(join_all(wrong), right);
    let statuses: Vec<u16> = answers.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 401), "every wrong answer is refused (none rate limited): {statuses:?}");
    assert_eq!(right.status(), 401, "the right answer is not checked once the limit is reached");

    let s: Value = staff.get(&app, &format!("/api/v1/shares/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(s["locked"], true);
    assert_eq!(s["failed_attempts"], max_failed, "only the answers that were checked count");
    let log = share_log(&app, &staff, &id).await;
    let checked =
        log.iter().filter(|e| e["action"] == "share.redeem" && e["detail"].as_str().unwrap_or("").starts_with("wrong answer")).count();
    assert_eq!(checked, max_failed, "exactly the limit of answers was checked: {log:#?}");
    let refused = log.iter().filter(|e| e["action"] == "share.redeem" && e["detail"] == "locked").count();
    assert_eq!(refused, 30 - max_failed + 1, "the others (and the right one) met the lock");

    // Afterwards, still locked: the right answer gets the wrong answer's words.
    let a = from("127.0.0.10");
    let r = a.post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": password})).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let locked: Value = r.json().await.unwrap();
    let r = a.post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": "WRONG-AGAIN"})).send().await.unwrap();
    let still: Value = r.json().await.unwrap();
    assert_eq!(locked["detail"], still["detail"]);
    let r = a.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&tfa(&password)).send().await.unwrap();
    assert_eq!(r.status(), 401);
    // The clinic unlocks; then the right answer opens the share and the count starts again.
    assert_eq!(staff.post(&app, &format!("/api/v1/shares/{id}/unlock")).send().await.unwrap().status(), 200);
    let r = a.post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": password})).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let s: Value = staff.get(&app, &format!("/api/v1/shares/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!((s["locked"].clone(), s["failed_attempts"].clone()), (json!(false), json!(0)));
}

// ---- 2. sign-in lockout under concurrency -------------------------------------------------------

/// Fifteen wrong passwords at once from three addresses: each counts, the account locks after
/// `auth.max_failed_logins` (5) — no more are checked — and the right password is refused with
/// the same answer until the lock ends.
#[tokio::test]
async fn concurrent_wrong_passwords_lock_the_account() {
    let app = spawn_app_with(|c| c.auth.lockout_secs = 3).await;
    let max = app.config.auth.max_failed_logins as usize;
    assert_eq!(max, 5, "the documented default");
    let victim = app.person("vic@example.test", "Vic Tim").await;
    let clients: Vec<reqwest::Client> = (2..5).map(|i| from(&format!("127.0.0.{i}"))).collect();
    let tries = (0..15).map(|i| {
        let c = &clients[i % clients.len()];
        let req = if i % 2 == 0 {
            c.post(app.url("/api/v1/auth/login")).json(&json!({"email": "vic@example.test", "password": format!("wrong password {i}")}))
        } else {
            c.post(app.url("/login")).form(&[
                ("email", "vic@example.test"),
                ("password", &format!("wrong password {i}")),
                ("return_to", "/app"),
            ])
        };
        req.send()
    });
    let statuses: Vec<u16> = join_all(tries).await.into_iter().map(|r| r.unwrap().status().as_u16()).collect();
    assert!(statuses.iter().all(|s| *s == 401), "{statuses:?}");

    let checked = audit(&app, "account.sign_in")
        .await
        .into_iter()
        .filter(|e| e["object_id"] == victim.id.as_str() && e["detail"] == "wrong password")
        .count();
    assert_eq!(checked, max, "every wrong password counted, none checked past the lock");
    // Locked: the right password gets exactly the answer of an unknown address.
    let b = from("127.0.0.5");
    let r = app.login(&b, "vic@example.test", PASSWORD).await;
    assert_eq!(r.status(), 401);
    let locked: Value = r.json().await.unwrap();
    let unknown: Value = app.login(&b, "nobody@example.test", PASSWORD).await.json().await.unwrap();
    assert_eq!(locked["detail"], unknown["detail"]);
    assert_eq!(locked["title"], unknown["title"]);
    tokio::time::sleep(Duration::from_millis(3200)).await;
    assert_eq!(app.login(&b, "vic@example.test", PASSWORD).await.status(), 200, "the lock ends");
}

// ---- 3. credentials change with a browser session only ------------------------------------------

fn assert_problem_403(r: &reqwest::Response, what: &str) {
    assert_eq!(r.status(), 403, "{what}");
    assert_eq!(r.headers()["content-type"], "application/problem+json", "{what}");
}

/// A personal access token (or the operator token) can neither mint a token — through the web
/// form or the API — nor revoke one, nor link a sign-in provider: each answers 403. Before, a
/// leaked token minted a second one that outlived its own revocation.
#[tokio::test]
async fn a_bearer_token_cannot_change_the_account_or_its_credentials() {
    let provider = ferry_hub::config::OidcProvider {
        id: "klinikum".into(),
        issuer: "http://127.0.0.1:9/unreachable".into(),
        client_id: "ferry".into(),
        ..Default::default()
    };
    let app = spawn_app_with(move |c| c.auth.oidc = vec![provider]).await;
    let dora = app.person("dora@example.test", "Dora").await;
    let tokens = |p: &Person| {
        let r = p.browser.get(app.url("/api/v1/tokens"));
        async move { r.send().await.unwrap().json::<Vec<Value>>().await.unwrap() }
    };
    let before = tokens(&dora).await;
    assert_eq!(before.len(), 1);
    let first_id = before[0]["id"].as_str().unwrap().to_string();

    // The attack: the token alone asks the account page's form for another token.
    let r = app
        .client
        .post(app.url("/account/tokens"))
        .bearer_auth(&dora.token)
        .form(&[("name", "minted"), ("expires_in_days", "365")])
        .send()
        .await
        .unwrap();
    assert_problem_403(&r, "web form, token creation");
    assert!(!r.text().await.unwrap().contains("fpat_"));
    let r = dora.post(&app, "/api/v1/tokens").json(&json!({"name": "minted"})).send().await.unwrap();
    assert_problem_403(&r, "API, token creation");
    let r = app.client.post(app.url("/api/v1/tokens")).bearer_auth(TOKEN).json(&json!({"name": "minted"})).send().await.unwrap();
    assert_problem_403(&r, "API, token creation with the operator token");
    assert_eq!(tokens(&dora).await.len(), 1, "no token was made");
    // Nor can it revoke tokens.
    let r = app.client.post(app.url(&format!("/account/tokens/{first_id}/revoke"))).bearer_auth(&dora.token).send().await.unwrap();
    assert_problem_403(&r, "web form, token revocation");
    let r = app.client.delete(app.url(&format!("/api/v1/tokens/{first_id}"))).bearer_auth(&dora.token).send().await.unwrap();
    assert_problem_403(&r, "API, token revocation");
    assert_eq!(dora.get(&app, "/api/v1/me").send().await.unwrap().status(), 200, "the token still works");
    // Nor link a sign-in provider to the account; without any credential it is 401.
    let r = app.client.get(app.url("/auth/oidc/klinikum/start?link=1&return_to=/account")).bearer_auth(&dora.token).send().await.unwrap();
    assert_problem_403(&r, "linking a sign-in provider");
    let r = browser().get(app.url("/auth/oidc/klinikum/start?link=1")).send().await.unwrap();
    assert_eq!(r.status(), 401);

    // The signed-in browser does all of it (same-origin form posts).
    let r = dora
        .browser
        .post(app.url("/account/tokens"))
        .header("origin", &app.base)
        .form(&[("name", "laptop"), ("expires_in_days", "30")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    let fresh = page.split("id=\"new-token\">").nth(1).and_then(|t| t.split('<').next()).unwrap_or_default().to_string();
    assert!(fresh.starts_with("fpat_"), "{page}");
    assert_eq!(app.client.get(app.url("/api/v1/me")).bearer_auth(&fresh).send().await.unwrap().status(), 200);
    let r = dora.browser.post(app.url(&format!("/account/tokens/{first_id}/revoke"))).header("origin", &app.base).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(dora.get(&app, "/api/v1/me").send().await.unwrap().status(), 401, "revoked");
    // A cross-site form post with the session is still refused.
    let r = dora
        .browser
        .post(app.url("/account/tokens"))
        .header("origin", "http://evil.example")
        .form(&[("name", "evil")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
}

// ---- 4. redirects stay on the site --------------------------------------------------------------

/// `return_to` values a browser would read as another host (a tab or newline it drops, a
/// backslash it reads as a slash) fall back to the default, through the sign-in page, the
/// sign-in form, the language switch and the OpenID Connect start; none is a 500.
#[tokio::test]
async fn return_to_never_leads_off_site_nor_to_an_error() {
    let (app, idp) = crate::fixtures::peers::hub_with_idp().await;
    app.person("rita@example.test", "Rita").await;
    let evil =
        ["/%09/evil.example", "/%0a/evil.example", "/%0d%0a/evil.example", "/%5C/evil.example", "%5C%5Cevil.example", "//evil.example"];
    for e in evil {
        let page = browser().get(app.url(&format!("/login?return_to={e}"))).send().await.unwrap();
        assert_eq!(page.status(), 200, "{e}");
        let html = page.text().await.unwrap();
        assert!(html.contains(r#"name="return_to" value="/app""#), "{e}: {html}");

        let b = browser();
        let raw = e.replace("%09", "\t").replace("%0a", "\n").replace("%0d", "\r").replace("%5C", "\\");
        let r = b
            .post(app.url("/login"))
            .form(&[("email", "rita@example.test"), ("password", PASSWORD), ("return_to", raw.as_str())])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{e}");
        assert_eq!(r.headers()["location"], "/app", "{e}");

        let r = b.get(app.url(&format!("/lang/en?return_to={e}"))).send().await.unwrap();
        assert_eq!(r.status(), 303, "{e}");
        assert_eq!(r.headers()["location"], "/", "{e}");

        let r = browser().get(app.url(&format!("/auth/oidc/test/start?return_to={e}"))).send().await.unwrap();
        assert_eq!(r.status(), 303, "{e}");
        assert!(r.headers()["location"].to_str().unwrap().starts_with(&idp.issuer), "{e}");
    }
    // Where the OpenID Connect sign-in will return to: the default, every time.
    let stored: Vec<String> = sqlx::query_scalar("SELECT return_to FROM oidc_logins").fetch_all(&app.state.db).await.unwrap();
    assert_eq!(stored.len(), evil.len());
    assert!(stored.iter().all(|r| r == "/app"), "{stored:?}");
    // A path on the site still works.
    let r = browser()
        .post(app.url("/login"))
        .form(&[("email", "rita@example.test"), ("password", PASSWORD), ("return_to", "/inbound?x=1")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["location"], "/inbound?x=1");
}

// ---- 5. looking a code up -----------------------------------------------------------------------

/// Codes that exist and codes that don't (well-formed ones) are looked up with the same answers:
/// a code with a one-time password looks like many unknown codes, byte for byte, through DLX and
/// on the redeem page; each lookup costs from the per-address budget the answers draw on, and is
/// audited.
#[tokio::test]
async fn looking_a_code_up_tells_nothing_a_guess_does_not() {
    let app = spawn_app().await;
    let burst = app.config.shares.rate_burst as usize;
    let staff = clinic(&app).await;
    let issued = share_files(&app, &staff, &study_files(&uid(), 1), json!({"second_factor": "password"})).await;
    let code = issued["code"].as_str().unwrap().to_string();
    let id = issued["share"]["id"].as_str().unwrap().to_string();
    const HEADER: &str = "X-DICOM-LINK-EXCHANGE";

    let lookup = |c: &reqwest::Client, code: &str| c.get(app.url(&format!("/dlx/v1/token/{code}"))).header(HEADER, "1").send();
    let real = lookup(&from("127.0.0.2"), &code).await.unwrap();
    assert_eq!(real.status(), 200);
    let real_ct = real.headers()["content-type"].clone();
    let real: Value = real.json().await.unwrap();
    assert_eq!(real["tfaQuestion"][0]["questionType"], "PASSWORD", "the DLX contract: a real code asks its own question");

    // Eight addresses look up 64 codes that name no share (within each one's budget).
    let unknown: Vec<String> = (0..64).map(|_| ferry_hub::shares::code::AccessCode::generate().display()).filter(|c| *c != code).collect();
    let clients: Vec<reqwest::Client> = (3..11).map(|i| from(&format!("127.0.0.{i}"))).collect();
    let answers = join_all(unknown.iter().enumerate().map(|(i, c)| lookup(&clients[i % clients.len()], c))).await;
    let mut same_as_real = Vec::new();
    let mut types = std::collections::BTreeSet::new();
    for (c, r) in unknown.iter().zip(answers) {
        let r = r.unwrap();
        assert_eq!(r.status(), 200, "{c}");
        assert_eq!(r.headers()["content-type"], real_ct);
        let v: Value = r.json().await.unwrap();
        types.insert(v["tfaQuestion"][0]["questionType"].as_str().unwrap().to_string());
        if v == real {
            same_as_real.push(c.clone());
        }
    }
    assert!(!same_as_real.is_empty(), "some unknown codes answer exactly like the real code with a password");
    assert!(types.iter().all(|t| ["PAT_BIRTH_DATE", "PASSWORD", "STUDY_DATE"].contains(&t.as_str())), "{types:?}");
    assert!(types.len() > 1, "unknown codes don't all ask one question: {types:?}");
    // An unknown code keeps its question (as a real one does), from anywhere.
    let twin = &same_as_real[0];
    let again: Value = lookup(&from("127.0.0.11"), twin).await.unwrap().json().await.unwrap();
    assert_eq!(again, real);
    // The redeem page of the QR link: the same page for both, but for the code itself.
    let page = |code: &str| {
        let r = from("127.0.0.12").get(app.url(&format!("/redeem?token={code}")));
        let code = code.to_string();
        async move {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap().replace(&code, "CODE")
        }
    };
    assert_eq!(page(&code).await, page(twin).await);
    let portal: Value =
        from("127.0.0.12").get(app.url(&format!("/redeem?token={twin}"))).header(HEADER, "1").send().await.unwrap().json().await.unwrap();
    assert_eq!(portal, real);

    // One budget per address for looking up and answering.
    let probe = from("127.0.0.13");
    let mut statuses = Vec::new();
    for c in unknown.iter().take(burst + 1) {
        statuses.push(lookup(&probe, c).await.unwrap().status().as_u16());
    }
    assert!(statuses[..burst].iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(statuses[burst], 429, "the lookup is rate limited: {statuses:?}");
    let r = probe.post(app.url(&format!("/dlx/v1/tokentfa/{code}"))).json(&tfa("x")).send().await.unwrap();
    assert_eq!(r.status(), 429, "and answers share its budget");
    let r = probe.get(app.url(&format!("/redeem?token={code}"))).send().await.unwrap();
    assert_eq!(r.status(), 429, "so does the redeem link");
    let r = from("127.0.0.14");
    for _ in 0..burst {
        r.post(app.url("/api/v1/redeem")).json(&json!({"code": unknown[0], "answer": "19700101"})).send().await.unwrap();
    }
    assert_eq!(lookup(&r, &code).await.unwrap().status(), 429, "answers use up the lookups' budget too");

    // Audited: the real code's lookups in its share's log (with the address), the others too.
    let log = share_log(&app, &staff, &id).await;
    let mine: Vec<&Value> = log.iter().filter(|e| e["action"] == "share.lookup").collect();
    assert!(mine.iter().any(|e| e["client_addr"] == "127.0.0.2"), "{log:#?}");
    assert!(mine.iter().all(|e| e["actor"] == "anonymous" && !e.to_string().contains(&code)));
    let all = audit(&app, "share.lookup").await;
    let strangers = all.iter().filter(|e| e["detail"] == "unknown code" && e["object_id"] == "").count();
    assert!(strangers >= unknown.len(), "{strangers} of {}", unknown.len());
    assert!(all.iter().all(|e| unknown.iter().all(|u| !e.to_string().contains(u.as_str()))), "codes are never recorded");
}

// ---- 6. and 7. the data folder and the log ------------------------------------------------------

/// The hub binary started under `umask 022`, its output (stdout and stderr) in `log`.
struct HubProcess {
    child: std::process::Child,
    url: String,
    log: std::path::PathBuf,
    data: std::path::PathBuf,
    sqlite: bool,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for HubProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl HubProcess {
    async fn start() -> Self {
        // reqwest's TLS provider (in-process hubs install it; these tests start none).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let (outer, logs) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Made by the hub itself.
        let data = outer.path().join("ferry-data");
        let log = logs.path().join("hub.log");
        let out = std::fs::File::create(&log).unwrap();
        let database = fresh_database().await;
        let mut cmd = std::process::Command::new("sh");
        cmd.arg("-c")
            .arg(r#"umask 022 && exec "$0" "$@""#)
            .arg(hub_binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&data)
            .env_remove("FERRY_AUTH__ADMIN_TOKEN")
            .env("FERRY_LOG__FILTER", "info")
            .env_remove("RUST_LOG")
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        if let Some(url) = &database {
            cmd.env("FERRY_DATABASE__URL", url);
        }
        let child = cmd.spawn().unwrap();
        let mut hub = HubProcess { child, url: String::new(), log, data, sqlite: database.is_none(), _dirs: (outer, logs) };
        for _ in 0..300 {
            if let Some(url) = hub.output().lines().find_map(|l| l.trim().strip_prefix("Ferry hub listening on ").map(str::to_string)) {
                hub.url = url;
                return hub;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the hub did not start: {}", hub.output());
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// The operator token the hub generated into its data folder.
    fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin-token")).unwrap().trim().to_string()
    }

    /// The mails in the outbox: (file, text).
    fn mails(&self) -> Vec<(std::path::PathBuf, String)> {
        let mut out: Vec<_> =
            std::fs::read_dir(self.data.join("outbox")).map(|d| d.flatten().map(|e| e.path()).collect()).unwrap_or_default();
        out.sort();
        out.into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect()
    }
}

async fn register(client: &reqwest::Client, hub: &HubProcess, email: &str) {
    let r = client
        .post(hub.url("/api/v1/auth/register"))
        .json(&json!({"email": email, "password": PASSWORD, "name": "Mia Muster", "practice": "", "address": "", "phone": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
}

/// Started with the usual umask 022, the hub still keeps everything it writes to itself: the
/// data folder and every folder in it 0700 (blobs, outbox, keys, upload spool), every file 0600
/// (the SQLite database with its -wal and -shm, blobs, mails, keys, the admin token).
#[cfg(unix)]
#[tokio::test]
async fn the_data_folder_is_private_whatever_the_umask() {
    use std::os::unix::fs::PermissionsExt;
    let hub = HubProcess::start().await;
    let client = reqwest::Client::new();
    // A blob, by an upload of a ZIP (spooled on disk first), and a mail.
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    w.start_file("IMG0001", zip::write::SimpleFileOptions::default()).unwrap();
    w.write_all(&Synth::new(&uid(), &uid(), &uid()).bytes()).unwrap();
    let body = w.finish().unwrap().into_inner();
    let r = client
        .post(hub.url("/api/v1/uploads"))
        .bearer_auth(hub.admin_token())
        .header("content-type", "application/zip")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    register(&client, &hub, "mia@example.test").await;

    let mode = |p: &std::path::Path| std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&hub.data), 0o700, "the data folder");
    let mut seen = Vec::new();
    let mut wrong = Vec::new();
    let mut stack = vec![hub.data.clone()];
    while let Some(dir) = stack.pop() {
        for e in std::fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            let rel = p.strip_prefix(&hub.data).unwrap().to_string_lossy().to_string();
            let (m, want) = if e.file_type().unwrap().is_dir() {
                stack.push(p.clone());
                (mode(&p), 0o700)
            } else {
                (mode(&p), 0o600)
            };
            if m != want {
                wrong.push(format!("{rel}: {m:o}, want {want:o}"));
            }
            seen.push(rel);
        }
    }
    assert!(wrong.is_empty(), "{wrong:#?}");
    let has = |prefix: &str, n: usize| seen.iter().filter(|s| s.starts_with(prefix)).count() >= n;
    assert!(has("blobs/", 2), "the blob folder and a blob in it: {seen:?}");
    assert!(has("outbox/", 1), "a mail: {seen:?}");
    assert!(has("keys/", 2) && has("admin-token", 1) && has("tmp", 1), "{seen:?}");
    if hub.sqlite {
        for f in ["ferry.db", "ferry.db-wal", "ferry.db-shm"] {
            assert!(seen.iter().any(|s| s == f), "{f} in {seen:?}");
        }
    }
}

/// Without SMTP, mails go to the outbox; the log says that a mail was written and where, never
/// the link in it (a password reset link signs its reader in) nor the address it is for.
#[tokio::test]
async fn mail_links_stay_out_of_the_log() {
    let hub = HubProcess::start().await;
    let client = reqwest::Client::new();
    register(&client, &hub, "mia@example.test").await;
    let r = client.post(hub.url("/api/v1/auth/password-reset")).json(&json!({"email": "mia@example.test"})).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let mut mails = Vec::new();
    for _ in 0..50 {
        mails = hub.mails();
        if mails.len() >= 2 && hub.output().matches("outbox").count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = hub.output();
    let links: Vec<String> = mails
        .iter()
        .flat_map(|(_, text)| text.lines().filter(|l| l.contains("?token=")).map(|l| l.trim().to_string()).collect::<Vec<_>>())
        .collect();
    assert_eq!(links.len(), 2, "a confirmation and a reset link in the outbox: {mails:?}");
    assert!(links.iter().any(|l| l.starts_with(&hub.url("/reset?token="))), "{links:?}");
    for link in &links {
        let token = link.rsplit_once("token=").unwrap().1;
        assert!(!log.contains(token), "a link's token is in the log:\n{log}");
    }
    assert!(!log.contains("mia@example.test"), "the recipient's address is in the log:\n{log}");
    for (path, _) in &mails {
        assert!(log.contains(&path.display().to_string()), "the log says where the mail is ({}):\n{log}", path.display());
    }
}

// ---- 8. SQLite overwrites what it deletes -------------------------------------------------------

#[tokio::test]
async fn sqlite_connections_overwrite_deleted_content() {
    let app = spawn_app().await;
    if app.state.dialect != ferry_hub::db::Dialect::Sqlite {
        return;
    }
    for pool in [&app.state.db, &app.state.db_write] {
        let on: i64 = sqlx::query_scalar("PRAGMA secure_delete").fetch_one(pool).await.unwrap();
        assert_eq!(on, 1);
    }
}
