//! A community's site connectors, managed by its admins: registered (client id + secret, shown
//! once), rotated, revoked with immediate effect. What a connector does with its credentials is
//! the feature `connectors`.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use ferry_schemas::{Connector, ConnectorHealth, NewConnector, TargetHealth};

use crate::access::{Principal, tokens};
use crate::db::now_ms;
use crate::error::{ApiJson, AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/communities/{code}/connectors", get(api_list).post(api_register))
        .route("/api/v1/communities/{code}/connectors/{id}", delete(api_revoke))
        .route("/api/v1/communities/{code}/connectors/{id}/rotate", post(api_rotate))
}

/// A connector that sent no heartbeat for this long counts as unreachable (it beats every few
/// seconds while it runs).
pub const UNREACHABLE_AFTER_MS: i64 = 120_000;

/// Health from the last heartbeat: its age, its error and each target's state.
pub fn health(last_seen_at: Option<i64>, last_error: &str, targets: &[TargetHealth], now: i64) -> ConnectorHealth {
    match last_seen_at {
        None => ConnectorHealth::Unknown,
        Some(at) if now - at > UNREACHABLE_AFTER_MS => ConnectorHealth::Unreachable,
        Some(_) if !last_error.is_empty() || targets.iter().any(|t| t.retrying) => ConnectorHealth::Degraded,
        Some(_) => ConnectorHealth::Healthy,
    }
}

type Row = (String, String, String, i64, Option<i64>, Option<i64>, String, i64, String, Option<i64>, String);

fn from_row(r: Row) -> Connector {
    let (id, name, client_id, created_at, revoked_at, last_seen_at, version, queue_depth, last_error, last_error_at, targets) = r;
    let targets: Vec<TargetHealth> = serde_json::from_str(&targets).unwrap_or_default();
    Connector {
        id,
        name,
        client_id,
        client_secret: None,
        created_at,
        revoked: revoked_at.is_some(),
        last_seen_at,
        version,
        queue_depth,
        health: health(last_seen_at, &last_error, &targets, now_ms()),
        last_error,
        last_error_at,
        targets,
    }
}

const COLUMNS: &str = "id, name, client_id, created_at, revoked_at, last_seen_at, version, queue_depth, last_error, last_error_at, targets";

/// The community's connectors (with their heartbeat), oldest first.
pub async fn list(state: &AppState, community: &str) -> AppResult<Vec<Connector>> {
    let rows: Vec<Row> =
        sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM connectors WHERE community_id = $1 ORDER BY created_at")))
            .bind(community)
            .fetch_all(&state.db)
            .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

async fn api_list(State(state): State<AppState>, who: Principal, Path(code): Path<String>) -> AppResult<Json<Vec<Connector>>> {
    let community = crate::access::administered(&state, &who, &code).await?;
    Ok(Json(list(&state, &community).await?))
}

async fn api_register(
    State(state): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    ApiJson(n): ApiJson<NewConnector>,
) -> AppResult<Response> {
    let community = crate::access::administered(&state, &who, &code).await?;
    Ok((StatusCode::CREATED, Json(register(&state, &who, &community, &n).await?)).into_response())
}

/// Registers a connector; the answer carries the client secret, the only time it is shown.
pub async fn register(state: &AppState, who: &Principal, community: &str, n: &NewConnector) -> AppResult<Connector> {
    let name = n.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(AppError::BadRequest("give the connector a name of 1 to 100 characters".into()));
    }
    let id = uuid::Uuid::new_v4().to_string();
    let client_id = format!("fcc_{}", uuid::Uuid::new_v4().simple());
    let secret = tokens::new_secret("fcs_");
    sqlx::query("INSERT INTO connectors (id, community_id, name, client_id, secret_hash, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
        .bind(&id)
        .bind(community)
        .bind(name)
        .bind(&client_id)
        .bind(tokens::hash(&secret))
        .bind(now_ms())
        .execute(&state.db_write)
        .await?;
    tracing::info!(connector = %id, community = %community, "connector registered");
    crate::audit::change(&state.db_write, &who.log_id(), "connector.register", "connector", &id, &format!("community:{community}")).await?;
    let mut c = load(state, community, &id).await?;
    c.client_secret = Some(secret);
    Ok(c)
}

async fn load(state: &AppState, community: &str, id: &str) -> AppResult<Connector> {
    let row: Row = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM connectors WHERE id = $1 AND community_id = $2")))
        .bind(id)
        .bind(community)
        .fetch_optional(&state.db_write)
        .await?
        .ok_or_else(|| AppError::NotFound("no such connector".into()))?;
    Ok(from_row(row))
}

async fn api_rotate(State(state): State<AppState>, who: Principal, Path((code, id)): Path<(String, String)>) -> AppResult<Json<Connector>> {
    let community = crate::access::administered(&state, &who, &code).await?;
    load(&state, &community, &id).await?;
    let secret = tokens::new_secret("fcs_");
    sqlx::query("UPDATE connectors SET secret_hash = $1 WHERE id = $2")
        .bind(tokens::hash(&secret))
        .bind(&id)
        .execute(&state.db_write)
        .await?;
    // Tokens minted with the old secret end now.
    sqlx::query("DELETE FROM connector_tokens WHERE connector_id = $1").bind(&id).execute(&state.db_write).await?;
    tracing::info!(connector = %id, "connector secret rotated");
    crate::audit::change(&state.db_write, &who.log_id(), "connector.rotate", "connector", &id, &format!("community:{community}")).await?;
    let mut c = load(&state, &community, &id).await?;
    c.client_secret = Some(secret);
    Ok(Json(c))
}

async fn api_revoke(State(state): State<AppState>, who: Principal, Path((code, id)): Path<(String, String)>) -> AppResult<StatusCode> {
    let community = crate::access::administered(&state, &who, &code).await?;
    revoke(&state, &who, &community, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Revokes a connector: its tokens end at once and what it held returns to the queue.
pub async fn revoke(state: &AppState, who: &Principal, community: &str, id: &str) -> AppResult<()> {
    load(state, community, id).await?;
    sqlx::query("UPDATE connectors SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now_ms())
        .bind(id)
        .execute(&state.db_write)
        .await?;
    sqlx::query("DELETE FROM connector_tokens WHERE connector_id = $1").bind(id).execute(&state.db_write).await?;
    // Whatever it held goes back to the queue.
    sqlx::query("UPDATE transfers SET lease_owner = NULL, lease_until = 0 WHERE lease_owner = $1 OR lease_owner LIKE $2")
        .bind(id)
        .bind(format!("{id}:%"))
        .execute(&state.db_write)
        .await?;
    tracing::info!(connector = %id, "connector revoked");
    crate::audit::change(&state.db_write, &who.log_id(), "connector.revoke", "connector", id, &format!("community:{community}")).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_follows_the_heartbeat() {
        let now = 10_000_000;
        let ok = TargetHealth { target: "pacs".into(), required: true, ..TargetHealth::default() };
        let sick = TargetHealth { target: "archive".into(), retrying: true, ..TargetHealth::default() };
        assert_eq!(health(None, "", &[], now), ConnectorHealth::Unknown);
        assert_eq!(health(Some(now - 5_000), "", std::slice::from_ref(&ok), now), ConnectorHealth::Healthy);
        assert_eq!(health(Some(now - 5_000), "", &[ok.clone(), sick.clone()], now), ConnectorHealth::Degraded);
        assert_eq!(health(Some(now - 5_000), "cannot reach the hub", std::slice::from_ref(&ok), now), ConnectorHealth::Degraded);
        assert_eq!(health(Some(now - UNREACHABLE_AFTER_MS - 1), "", std::slice::from_ref(&ok), now), ConnectorHealth::Unreachable);
        assert_eq!(health(Some(now - UNREACHABLE_AFTER_MS), "", &[sick], now), ConnectorHealth::Degraded);
    }
}
