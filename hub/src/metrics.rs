//! Prometheus metrics at `GET /metrics` (operator token; `scrape_configs: bearer_token`). Request
//! counts, latencies and bytes per route template (never the concrete path, which would name
//! studies), ingest and delivery counts, redemption results and lockouts, and — read from the
//! database at each scrape, so every hub of a system reports the same — the connectors' lag and
//! queue depth and the transfers waiting for a connector. Uses the `metrics` facade with its
//! Prometheus exporter.

use std::sync::OnceLock;
use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sqlx::Row;

use crate::access::Principal;
use crate::db::now_ms;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

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

pub fn router() -> Router<AppState> {
    Router::new().route("/metrics", get(scrape))
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

async fn scrape(State(state): State<AppState>, who: Principal) -> AppResult<Response> {
    if !matches!(who, Principal::Admin) {
        return Err(AppError::ForbiddenBecause("metrics are for the operator token".into()));
    }
    let Some(h) = handle() else {
        return Err(AppError::Unavailable("the metrics recorder is not installed".into()));
    };
    // Gauges from the database: the same on every hub of the system.
    let now = now_ms();
    let rows = sqlx::query("SELECT id, last_seen_at, queue_depth FROM connectors WHERE revoked_at IS NULL").fetch_all(&state.db).await?;
    for r in &rows {
        let id: String = r.try_get(0)?;
        let seen: Option<i64> = r.try_get(1)?;
        let depth: i64 = r.try_get(2)?;
        if let Some(seen) = seen {
            metrics::gauge!("ferry_connector_lag_seconds", "connector" => id.clone()).set((now - seen) as f64 / 1000.0);
        }
        metrics::gauge!("ferry_connector_queue_depth", "connector" => id).set(depth as f64);
    }
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE state = 'sent'").fetch_one(&state.db).await?;
    metrics::gauge!("ferry_transfers_waiting").set(waiting as f64);
    let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(sent_at) FROM transfers WHERE state = 'sent'").fetch_one(&state.db).await?;
    metrics::gauge!("ferry_transfer_oldest_waiting_seconds").set(oldest.map(|t| (now - t) as f64 / 1000.0).unwrap_or(0.0));
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], h.render()).into_response())
}
