//! The OpenAPI document against the hub it describes: schemathesis (PyPI) reads
//! `schemas/openapi.yaml` from a live hub, generates requests from it in every phase (examples,
//! coverage, fuzzing, stateful) and checks each answer against it — no server errors, only
//! documented status codes, content types, headers and bodies, invalid requests refused and valid
//! ones taken. The hub holds a community, transfers, a connector and an issued access code, and
//! schemathesis gets a credential of each kind, so it reaches past 401, 403 and 404.
//! `tests/e2e/schemathesis.toml` holds the settings and says where a check cannot apply.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::{Value, json};

use crate::fixtures::people::PASSWORD;
use crate::fixtures::shares::{BIRTH, clinic, share_files, study_files};
use crate::fixtures::{TOKEN, TestApp, spawn_app_with, uid};

/// The value of the cookie `name` a response sets.
fn set_cookie(r: &reqwest::Response, name: &str) -> String {
    r.headers()
        .get_all(reqwest::header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|v| v.split(';').next()?.trim().strip_prefix(&format!("{name}=")).map(str::to_string))
        .unwrap_or_else(|| panic!("no {name} cookie set"))
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// What schemathesis gets to work with: a credential of every kind, and objects to name.
struct Fixture {
    /// `[auth.openapi.*]`: security scheme, "bearer" or "api_key", the credential.
    auth: Vec<(&'static str, &'static str, String)>,
    /// `[[operations]]`: a regex on the operation's label (`GET /path/{id}`), its path parameters.
    parameters: Vec<(&'static str, Vec<(&'static str, String)>)>,
}

async fn fixture(app: &TestApp) -> Fixture {
    // A clinic (RAD1) with a staff member and a spare member (for removal), a referrer who sent
    // it a study and holds two drafts (one to fill, one to discard).
    let staff = clinic(app).await;
    let spare = app.person("spare@rad.example", "Sam Spare").await;
    app.add_member("RAD1", "spare@rad.example", "member").await;
    let referrer = app.person("referrer@praxis.example", "Dr. Rita Referrer").await;
    let sent_study = uid();
    let files = study_files(&sent_study, 1);
    let files: Vec<(&str, Vec<u8>)> = files.iter().map(|(n, b)| (n.as_str(), b.clone())).collect();
    let sent = app.send_transfer(&referrer, "RAD1", &files).await;
    let draft = app.open_transfer(&referrer, "RAD1", "Zweitmeinung").await;
    let discard = app.open_transfer(&referrer, "RAD1", "Versehen").await;
    // The referrer's browser session (the only credential that creates tokens), and a spare
    // token to revoke.
    let r = reqwest::Client::new()
        .post(app.url("/api/v1/auth/login"))
        .json(&json!({"email": "referrer@praxis.example", "password": PASSWORD}))
        .send()
        .await
        .expect("login");
    assert_eq!(r.status(), 200);
    let session = set_cookie(&r, "ferry_session");
    let r = referrer.browser.post(app.url("/api/v1/tokens")).json(&json!({"name": "spare"})).send().await.expect("token");
    assert_eq!(r.status(), 201);
    let spare_token: Value = r.json().await.expect("token");
    // The clinic's connector, and a spare one to rotate and revoke.
    let connector = app.connector_token(&app.connector("RAD1").await).await;
    let r = app
        .client
        .post(app.url("/api/v1/communities/RAD1/connectors"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "Spare"}))
        .send()
        .await
        .expect("connector");
    assert_eq!(r.status(), 201);
    let spare_connector: Value = r.json().await.expect("connector");
    // Two access codes: one for the staff operations, one redeemed in a browser and by a DLX
    // client (so revoking or reissuing the first leaves the holder's sessions alone).
    let staffs = share_files(app, &staff, &study_files(&uid(), 1), json!({"birth_date": BIRTH})).await;
    let held_study = uid();
    let held = share_files(app, &staff, &study_files(&held_study, 1), json!({"birth_date": BIRTH})).await;
    let code = held["code"].as_str().expect("code").to_string();
    let r =
        reqwest::Client::new().post(app.url("/api/v1/redeem")).json(&json!({"code": code, "answer": BIRTH})).send().await.expect("redeem");
    assert_eq!(r.status(), 200);
    let share_session = set_cookie(&r, "ferry_share");
    let r = reqwest::Client::new()
        .post(app.url(&format!("/dlx/v1/tokentfa/{code}")))
        .json(&json!({"tfaAnswer": [{"questionId": "1", "answer": BIRTH}]}))
        .send()
        .await
        .expect("tokentfa");
    assert_eq!(r.status(), 200);
    let jwt = r.text().await.expect("jwt");
    let id = |v: &Value| v["id"].as_str().expect("id").to_string();
    let rad1 = || ("code", "RAD1".to_string());
    Fixture {
        auth: vec![
            ("operatorToken", "bearer", TOKEN.to_string()),
            ("accessToken", "bearer", referrer.token.clone()),
            ("session", "api_key", session),
            ("connectorToken", "bearer", connector),
            ("shareSession", "api_key", share_session),
            ("dlxToken", "bearer", jwt),
        ],
        parameters: vec![
            (r"^[A-Z]+ /api/v1/communities/\{code\}(/(logo|approval-request|members|referrers|connectors))?$", vec![rad1()]),
            (r"^[A-Z]+ /api/v1/communities/\{code\}/(members|referrers)/\{user_id\}$", vec![rad1(), ("user_id", spare.id.clone())]),
            (r"^[A-Z]+ /api/v1/communities/\{code\}/connectors/\{id\}(/rotate)?$", vec![rad1(), ("id", id(&spare_connector))]),
            (r"^DELETE /api/v1/tokens/\{id\}$", vec![("id", id(&spare_token))]),
            (r"^GET /api/v1/transfers/\{id\}$", vec![("id", id(&sent))]),
            (r"^DELETE /api/v1/transfers/\{id\}$", vec![("id", id(&discard))]),
            (r"^POST /api/v1/transfers/\{id\}/(files|send)$", vec![("id", id(&draft))]),
            (r"^[A-Z]+ /api/v1/transfers/\{id\}/(done|reject|download)$", vec![("id", id(&sent))]),
            (r"^(POST|PUT) /api/v1/connector/transfers/\{id\}/", vec![("id", id(&sent))]),
            (r"^[A-Z]+ /api/v1/shares/\{id\}", vec![("id", id(&staffs["share"]))]),
            (r"^GET /api/v1/share/studies/\{study\}/download$", vec![("study", held_study)]),
            (r"^[A-Z]+ /dicomweb/studies/\{study\}$", vec![("study", sent_study)]),
        ],
    }
}

/// The checked-in settings with the fixture's credentials and identifiers appended.
fn config_file(f: &Fixture) -> String {
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e/schemathesis.toml");
    let mut toml = std::fs::read_to_string(&settings).expect("tests/e2e/schemathesis.toml");
    for (scheme, kind, value) in &f.auth {
        toml.push_str(&format!("\n[auth.openapi.{scheme}]\n{kind} = {}\n", toml_str(value)));
    }
    for (operations, params) in &f.parameters {
        let params: Vec<String> = params.iter().map(|(n, v)| format!("{} = {}", toml_str(&format!("path.{n}")), toml_str(v))).collect();
        toml.push_str(&format!(
            "\n[[operations]]\ninclude-name-regex = {}\nparameters = {{ {} }}\n",
            toml_str(operations),
            params.join(", ")
        ));
    }
    toml
}

/// Runs schemathesis against the hub with `config`; `filter` selects operations.
async fn schemathesis(base: &str, config: &Path, filter: &[&str]) -> (bool, String) {
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e");
    let mut cmd = Command::new("python3");
    cmd.args(["-m", "schemathesis.cli", "--config-file"])
        .arg(config)
        .args(["run", "--no-color", "--output-truncate", "false", "--url", base])
        .args(filter)
        .arg(format!("{base}/api/v1/openapi.yaml"))
        .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks")
        .env("PYTHONPATH", hooks)
        .current_dir(config.parent().expect("dir"));
    let out = tokio::task::spawn_blocking(move || cmd.output().expect("python3 -m schemathesis.cli (tests/run.sh installs schemathesis)"))
        .await
        .expect("join");
    let text = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

/// Whether schemathesis tested every operation it selected and ran `phases` to success.
fn complete(output: &str, phases: &[&str]) -> bool {
    let value = |label: &str| output.lines().find_map(|l| l.trim().strip_prefix(label).map(|v| v.trim().to_string()));
    let (Some(selected), Some(tested)) = (value("Selected:"), value("Tested:")) else { return false };
    selected.split('/').next() == Some(tested.as_str()) && phases.iter().all(|p| output.lines().any(|l| l.trim() == format!("✅ {p}")))
}

#[tokio::test]
async fn the_hub_answers_as_its_openapi_document_says() {
    // Sign-in and code redemption are rate limited per address; schemathesis comes from one.
    let app = spawn_app_with(|c| c.shares.rate_burst = 10_000).await;
    let f = fixture(&app).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("schemathesis.toml");
    std::fs::write(&config, config_file(&f)).expect("write config");
    let t0 = Instant::now();
    // The holder deleting the share ends every credential of that share (and it has no
    // identifier to steer elsewhere), so it runs last, on its own.
    let last = ["--include-name", "DELETE /api/v1/share"];
    let (ok, first) = schemathesis(&app.base, &config, &["--exclude-name", "DELETE /api/v1/share"]).await;
    assert!(ok, "schemathesis found the hub and its OpenAPI document disagreeing:\n{first}");
    assert!(complete(&first, &["Coverage", "Fuzzing", "Stateful"]), "not every operation or phase ran:\n{first}");
    let (ok, out) = schemathesis(&app.base, &config, &last).await;
    assert!(ok, "schemathesis found the hub and its OpenAPI document disagreeing:\n{out}");
    assert!(complete(&out, &["Coverage", "Fuzzing"]), "not every phase ran:\n{out}");
    // What it could not reach (warnings) and the totals, for the log.
    let summary = |out: &str| {
        out.split_once("= WARNINGS =").or_else(|| out.split_once("= SUMMARY =")).map(|(_, s)| s.to_string()).unwrap_or_default()
    };
    eprintln!("schemathesis passed in {:.0?}:{}", t0.elapsed(), summary(&first));
}
