//! Prometheus metrics, recorded: request counts, latencies and bytes per route template (never
//! the concrete path, which would name studies), ingest and delivery counts, redemption results
//! and lockouts. Uses the `metrics` facade with its Prometheus exporter; `GET /metrics` is served
//! by `health`.

use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// The process-wide recorder (installed once; every hub in the process shares it).
fn handle() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let buckets = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];
            PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &buckets)
                .ok()
                .and_then(|b| b.install_recorder().ok())
        })
        .as_ref()
}

pub fn init() {
    let _ = handle();
}

/// True when the recorder is installed (it can fail to be when another one already is).
pub fn installed() -> bool {
    handle().is_some()
}

/// The Prometheus text of every metric, `None` when no recorder could be installed.
pub fn render() -> Option<String> {
    handle().map(PrometheusHandle::render)
}

/// Counts, times and sizes every request by method, route template and status class.
pub async fn track(req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().to_string();
    let bytes_in = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let t0 = Instant::now();
    let resp = next.run(req).await;
    let status = format!("{}xx", resp.status().as_u16() / 100);
    let bytes_out =
        resp.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    let labels = [("method", method), ("route", route)];
    metrics::counter!("ferry_http_requests_total", "method" => labels[0].1.clone(), "route" => labels[1].1.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("ferry_http_request_duration_seconds", &labels).record(t0.elapsed().as_secs_f64());
    metrics::counter!("ferry_http_request_bytes_total", &labels).increment(bytes_in);
    metrics::counter!("ferry_http_response_bytes_total", &labels).increment(bytes_out);
    resp
}

/// An instance indexed (`stored`) or a same-bytes repeat (`duplicate`).
pub fn instance_ingested(outcome: &'static str) {
    metrics::counter!("ferry_instances_ingested_total", "outcome" => outcome).increment(1);
}

/// A connector reported a transfer `stored` or `failed` (or claimed it: `received`).
pub fn delivery(state: &str) {
    metrics::counter!("ferry_transfer_deliveries_total", "state" => state.to_string()).increment(1);
}

/// A redemption attempt and its result (`ok`, `denied`, `expired`, `typo`).
pub fn redemption(result: &str) {
    metrics::counter!("ferry_redemptions_total", "result" => result.to_string()).increment(1);
}

/// A code got locked after too many wrong answers.
pub fn lockout() {
    metrics::counter!("ferry_code_lockouts_total").increment(1);
}
