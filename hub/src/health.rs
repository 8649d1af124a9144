//! Liveness (`/healthz`: the process answers) and readiness (`/readyz`: the database answers).

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use ferry_schemas::Health;

use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/healthz", get(healthz)).route("/readyz", get(readyz))
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
