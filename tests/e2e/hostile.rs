//! Hostile and broken input: each gets a clear error and the store stays unchanged.

use dicom_dictionary_std::tags;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};

use crate::fixtures::blobs::*;
use crate::fixtures::*;

async fn post_raw(app: &TestApp, ct: Option<&str>, body: Vec<u8>) -> (u16, String, String) {
    let mut req = app.client.post(app.url("/dicomweb/studies")).header(AUTHORIZATION, format!("Bearer {TOKEN}"));
    if let Some(ct) = ct {
        req = req.header(CONTENT_TYPE, ct);
    }
    let resp = req.body(body).send().await.expect("post");
    let status = resp.status().as_u16();
    let ct = resp.headers().get(CONTENT_TYPE).map(|v| v.to_str().unwrap_or("").to_string()).unwrap_or_default();
    (status, ct, resp.text().await.unwrap_or_default())
}

fn failure_reason(body: &serde_json::Value) -> u64 {
    body["00081198"]["Value"][0]["00081197"]["Value"][0].as_u64().unwrap_or(0)
}

#[tokio::test]
async fn broken_parts_are_refused_and_nothing_of_them_is_stored() {
    let app = spawn_app_with(|c| c.limits.max_instance_bytes = 200_000).await;
    let good = Synth::new(&uid(), &uid(), &uid());
    assert_eq!(app.stow(&[&good.bytes()]).await.0, 200);
    let blobs_before = blob_files(&app).len();
    let s = Synth::new(&uid(), &uid(), &uid());
    let full = s.bytes();
    let mut big = Synth::new(&uid(), &uid(), &uid());
    big.rows = 512;
    big.cols = 512;
    let cases: Vec<(&str, Vec<u8>, u64)> = vec![
        ("non-DICOM part", b"hello, this is a text file".to_vec(), 0xC000),
        ("truncated in the pixel data", full[..full.len() - 100].to_vec(), 0xC000),
        ("truncated in the header", full[..mid_of(&full, s.sop.as_bytes())].to_vec(), 0xC000),
        ("missing SOP Instance UID", s.bytes_without(Some(tags::SOP_INSTANCE_UID)), 0xA900),
        ("missing Study Instance UID", s.bytes_without(Some(tags::STUDY_INSTANCE_UID)), 0xA900),
        ("empty part", Vec::new(), 0xC000),
        ("oversized part", big.bytes(), 0xA700),
    ];
    for (what, bytes, reason) in cases {
        let (status, body) = app.stow(&[&bytes]).await;
        assert_eq!(status, 409, "{what}: {body}");
        assert_eq!(failure_reason(&body), reason, "{what}: {body}");
    }
    assert_eq!(app.instance_count().await, 1);
    assert_eq!(app.study_count().await, 1);
    // Failed uploads leave no blob behind and nothing pending.
    assert_eq!(blob_files(&app).len(), blobs_before);
    let pending: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pending_blobs").fetch_one(&app.state.db).await.expect("count");
    assert_eq!(pending, 0);
}

#[tokio::test]
async fn malformed_requests_get_problem_json() {
    let app = spawn_app().await;
    let file = Synth::new(&uid(), &uid(), &uid()).bytes();
    let (status, ct, _) = post_raw(&app, None, file.clone()).await;
    assert_eq!((status, ct.as_str()), (415, "application/problem+json"));
    let (status, ct, _) = post_raw(&app, Some("application/dicom"), file.clone()).await;
    assert_eq!((status, ct.as_str()), (415, "application/problem+json"));
    let (status, _, text) = post_raw(&app, Some("multipart/related; type=\"application/dicom+json\"; boundary=x"), b"--x--".to_vec()).await;
    assert_eq!(status, 415, "{text}");
    let (status, _, text) = post_raw(&app, Some("multipart/related; type=\"application/dicom\""), file.clone()).await;
    assert_eq!(status, 400, "{text}");
    let (status, _, text) = post_raw(&app, Some("multipart/related; type=\"application/dicom\"; boundary=x"), Vec::new()).await;
    assert_eq!(status, 400, "empty body: {text}");
    let (status, _, text) =
        post_raw(&app, Some("multipart/related; type=\"application/dicom\"; boundary=x"), b"garbage without boundaries".to_vec()).await;
    assert_eq!(status, 400, "{text}");
    // Unquoted parameters as some clients send them are fine.
    let (status, _, text) =
        post_raw(&app, Some("multipart/related; type=application/dicom; boundary=ferrytest"), multipart(&[&file], "ferrytest")).await;
    assert_eq!(status, 200, "{text}");
    let (status, _, text) =
        post_raw(&app, Some("multipart/related; boundary=\"ferry test\"; type=\"application/dicom\""), multipart(&[&file], "ferry test"))
            .await;
    assert_eq!(status, 200, "{text}");
    // A study UID in the URL that is not a UID.
    let (status, _) = app.stow_to("/dicomweb/studies/abc", &[&file]).await;
    assert_eq!(status, 400);
    assert_eq!(app.instance_count().await, 1);
}

/// The offset of the middle of the last occurrence of `needle` (past the file meta group).
fn mid_of(hay: &[u8], needle: &[u8]) -> usize {
    let pos = hay.windows(needle.len()).rposition(|w| w == needle).expect("needle");
    pos + needle.len() / 2
}

/// Security headers: pages get a strict CSP that forbids framing; every response `nosniff` and
/// `no-referrer` (the code in a QR link must not leak through Referer); HSTS only under https.
#[tokio::test]
async fn responses_carry_security_headers() {
    let app = crate::fixtures::spawn_app().await;
    let page = app.client.get(app.url("/redeem?token=ABCD-EFGH-JKMN")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let h = page.headers();
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'") && !csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert!(h.get("strict-transport-security").is_none(), "no HSTS over plain http");
    let api = app.client.get(app.url("/api/v1/communities")).send().await.unwrap();
    assert_eq!(api.headers()["x-content-type-options"], "nosniff");
    assert!(api.headers().get("content-security-policy").is_none(), "CSP is for pages");

    let tls = crate::fixtures::spawn_app_with(|c| c.public_url = Some("https://ferry.example.org".into())).await;
    let r = tls.client.get(tls.url("/healthz")).send().await.unwrap();
    assert_eq!(r.headers()["strict-transport-security"], "max-age=31536000");
}
