//! Prometheus metrics: the operator scrapes `/metrics`; request counts and latencies per route
//! template, ingest, redemption and connector figures appear, and no study UID or code does.

use serde_json::json;

use crate::fixtures::*;

#[tokio::test]
async fn the_operator_scrapes_request_ingest_redemption_and_connector_metrics() {
    let app = spawn_app().await;
    let study = uid();
    assert_eq!(app.stow(&[&Synth::new(&study, &uid(), &uid()).bytes()]).await.0, 200);
    let r = app.client.post(app.url("/api/v1/redeem")).json(&json!({"code": "ABCD-EFGH-JKMN", "answer": "19700101"})).send().await.unwrap();
    assert!(r.status().is_client_error());
    app.community("Metrik Klinik", "mTr1", "Homburg").await;
    let token = app.connector_token(&app.connector("mTr1").await).await;
    let r = app
        .client
        .post(app.url("/api/v1/connector/heartbeat"))
        .bearer_auth(&token)
        .json(&json!({"version": "t", "queue_depth": 3}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);

    assert_eq!(app.client.get(app.url("/metrics")).send().await.unwrap().status(), 401);
    let r = app.client.get(app.url("/metrics")).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    for want in [
        r#"ferry_http_requests_total{method="POST",route="/dicomweb/studies",status="2xx"}"#,
        r#"ferry_http_request_duration_seconds_bucket{method="POST",route="/dicomweb/studies",le="0.1"}"#,
        r#"ferry_http_request_bytes_total{method="POST",route="/dicomweb/studies"}"#,
        r#"ferry_instances_ingested_total{outcome="stored"}"#,
        r#"ferry_redemptions_total{result=""#,
        r#"ferry_connector_queue_depth{connector=""#,
        "ferry_connector_lag_seconds{",
        "ferry_transfers_waiting ",
    ] {
        assert!(text.contains(want), "{want} missing in:\n{text}");
    }
    assert!(!text.contains(&study) && !text.contains("ABCD-EFGH-JKMN"), "no UIDs or codes in metrics");
}
