//! Liveness (`/healthz`: the process answers), readiness (`/readyz`: the database answers) and
//! the Prometheus metrics (`/metrics`, operator token; `scrape_configs: bearer_token`) — with,
//! read from the database at each scrape so every hub of a system reports the same, the
//! connectors' lag and queue depth and the transfers waiting for a connector.

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_schemas::Health;

use crate::access::Principal;
use crate::db::now_ms;
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz)).route("/metrics", get(scrape))
}

fn health(status: &str) -> Json<Health> {
    Json(Health { status: status.into(), version: env!("CARGO_PKG_VERSION").into() })
}

async fn healthz() -> Json<Health> {
    health("ok")
}

async fn readyz(State(state): State<AppState>) -> AppResult<Json<Health>> {
    sqlx::query("SELECT 1").execute(&state.db).await.map_err(|_| AppError::Unavailable("database not reachable".into()))?;
    Ok(health("ready"))
}

async fn scrape(State(state): State<AppState>, who: Principal) -> AppResult<Response> {
    if !matches!(who, Principal::Admin) {
        return Err(AppError::ForbiddenBecause("metrics are for the operator token".into()));
    }
    if !crate::metrics::installed() {
        return Err(AppError::Unavailable("the metrics recorder is not installed".into()));
    }
    // Gauges from the database: the same on every hub of the system.
    let now = now_ms();
    let rows: Vec<(String, Option<i64>, i64)> =
        sqlx::query_as("SELECT id, last_seen_at, queue_depth FROM connectors WHERE revoked_at IS NULL").fetch_all(&state.db).await?;
    for (id, seen, depth) in rows {
        if let Some(seen) = seen {
            metrics::gauge!("ferry_connector_lag_seconds", "connector" => id.clone()).set((now - seen) as f64 / 1000.0);
        }
        metrics::gauge!("ferry_connector_queue_depth", "connector" => id).set(depth as f64);
    }
    let waiting: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM transfers WHERE state = 'sent'").fetch_one(&state.db).await?;
    metrics::gauge!("ferry_transfers_waiting").set(waiting as f64);
    let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(sent_at) FROM transfers WHERE state = 'sent'").fetch_one(&state.db).await?;
    metrics::gauge!("ferry_transfer_oldest_waiting_seconds").set(oldest.map(|t| (now - t) as f64 / 1000.0).unwrap_or(0.0));
    let text = crate::metrics::render().unwrap_or_default();
    Ok(([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response())
}
