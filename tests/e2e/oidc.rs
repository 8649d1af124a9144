//! OpenID Connect sign-in against a real provider (npm `oidc-provider` on loopback), replayed
//! headless the way a browser would walk it: hub → provider's login page → back to the hub with a
//! code; the account is linked by issuer + subject.

use serde_json::Value;

use crate::fixtures::peers::hub_with_idp;
use crate::fixtures::people::{PASSWORD, browser};
use crate::fixtures::people::{location, sign_in_at};

/// Walks the sign-in: start at the hub, log in at the provider as `login`, return to the hub.
/// Returns the hub's callback URL (for replay tests) and the final response.
async fn sign_in(b: &reqwest::Client, hub: &str, idp: &str, login: &str) -> (String, reqwest::Response) {
    sign_in_at(b, hub, idp, "test", login).await
}

#[tokio::test]
async fn sign_in_through_a_real_openid_provider_links_the_account_by_issuer_and_subject() {
    let (app, idp) = hub_with_idp().await;
    let hub = app.base.clone();

    let b = browser();
    let (callback, r) = sign_in(&b, &hub, &idp.issuer, "alice").await;
    assert_eq!(r.status(), 303);
    assert_eq!(location(&r, &hub), format!("{hub}/app"));
    let me: Value = b.get(format!("{hub}/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["email"], "alice@example.test");
    assert_eq!(me["name"], "Dr. Alice");
    assert_eq!(me["email_verified"], true);
    let first_id = me["id"].clone();
    let signins: Vec<Value> = app
        .client
        .get(app.url("/api/v1/audit?action=account.sign_in"))
        .bearer_auth(crate::fixtures::TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        signins.iter().any(|e| e["object_id"] == first_id && e["detail"] == "oidc:test" && e["result"] == "ok"),
        "the sign-in is in the audit trail: {signins:?}"
    );

    // The answer cannot be replayed, and a forged state is refused.
    let replay = browser().get(&callback).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    let forged = browser().get(format!("{hub}/auth/oidc/test/callback?code=abc&state=forged")).send().await.unwrap();
    assert_eq!(forged.status(), 400);
    let unknown = browser().get(format!("{hub}/auth/oidc/nope/start")).send().await.unwrap();
    assert_eq!(unknown.status(), 404);

    // A second sign-in (fresh browser) finds the same account.
    let b2 = browser();
    let (_, r) = sign_in(&b2, &hub, &idp.issuer, "alice").await;
    assert_eq!(r.status(), 303);
    let me2: Value = b2.get(format!("{hub}/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me2["id"], first_id);

    // A provider's identity whose verified email belongs to a local account is not merged silently.
    app.person("bob@hospital.example", "Bob Local").await;
    let (_, r) = sign_in(&browser(), &hub, &idp.issuer, "bob@hospital.example").await;
    assert_eq!(r.status(), 409);
    // ... but the signed-in local account can link it, and then sign in with it.
    let bob = browser();
    assert_eq!(app.login(&bob, "bob@hospital.example", PASSWORD).await.status(), 200);
    let r = bob.get(format!("{hub}/auth/oidc/test/start?link=1&return_to=/account")).send().await.unwrap();
    let auth = location(&r, &hub);
    let r = bob.get(&auth).send().await.unwrap();
    let interaction = location(&r, &idp.issuer);
    let r = bob
        .post(format!("{interaction}/login"))
        .form(&[("prompt", "login"), ("login", "bob@hospital.example"), ("password", "x")])
        .send()
        .await
        .unwrap();
    let r = bob.get(location(&r, &idp.issuer)).send().await.unwrap();
    let r = bob.get(location(&r, &idp.issuer)).send().await.unwrap();
    assert_eq!(r.status(), 303, "{:?}", r.text().await);
    let fresh = browser();
    let (_, r) = sign_in(&fresh, &hub, &idp.issuer, "bob@hospital.example").await;
    assert_eq!(r.status(), 303);
    let me: Value = fresh.get(format!("{hub}/api/v1/me")).send().await.unwrap().json().await.unwrap();
    assert_eq!(me["name"], "Bob Local");
}

#[tokio::test]
async fn the_providers_access_tokens_work_as_api_bearer_tokens_for_linked_accounts() {
    let (app, idp) = hub_with_idp().await;
    let hub = app.base.clone();
    let redirect = format!("{hub}/auth/oidc/test/callback");
    // Sign in once through the hub so the account exists and is linked.
    let (_, r) = sign_in(&browser(), &hub, &idp.issuer, "carol").await;
    assert_eq!(r.status(), 303);
    // A client (say, a viewer) gets its own access token from the provider by code + PKCE.
    let b = browser();
    let verifier = "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdef";
    use base64::Engine;
    use sha2::Digest;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes()));
    let auth = format!(
        "{}/auth?response_type=code&client_id=ferry&redirect_uri={}&scope=openid%20email&state=s1&nonce=n1&code_challenge={challenge}&code_challenge_method=S256",
        idp.issuer, redirect
    );
    let r = b.get(&auth).send().await.unwrap();
    let interaction = location(&r, &idp.issuer);
    let r =
        b.post(format!("{interaction}/login")).form(&[("prompt", "login"), ("login", "carol"), ("password", "x")]).send().await.unwrap();
    let r = b.get(location(&r, &idp.issuer)).send().await.unwrap();
    let cb = location(&r, &idp.issuer);
    let code = cb.split("code=").nth(1).unwrap().split('&').next().unwrap().to_string();
    let tokens: Value = reqwest::Client::new()
        .post(format!("{}/token", idp.issuer))
        .basic_auth("ferry", Some("idp-test-secret"))
        .form(&[
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", redirect.as_str()),
            ("code_verifier", verifier),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tokens["access_token"].as_str().expect("access token");
    let me = reqwest::Client::new().get(format!("{hub}/api/v1/me")).bearer_auth(access).send().await.unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<Value>().await.unwrap()["name"], "Dr. Carol");
    let bad = reqwest::Client::new().get(format!("{hub}/api/v1/me")).bearer_auth("not-a-real-token").send().await.unwrap();
    assert_eq!(bad.status(), 401);
}
