//! Site connectors, hub side (a community's admins register them: `communities::connectors`).
//! The connector gets short-lived access
//! tokens at `POST /oauth/token` (OAuth2 client credentials), reports a heartbeat, claims sent
//! transfers of its community with a lease (two instances never hold the same transfer; a
//! crashed one's lease runs out and the work returns), acknowledges each instance only after
//! the PACS confirmed it, and reports the outcome — `stored`, or `failed` with the reason — which
//! the sender sees.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use ferry_schemas::{Ack, Claim, ClaimedInstance, ConnectorReport, Heartbeat};
use serde::Deserialize;
use sqlx::Row;

use crate::access::tokens;
use crate::access::{ConnectorAgent, Principal};
use crate::db::now_ms;
use crate::error::{ApiJson, ApiJsonList, AppError, AppResult};
use crate::state::AppState;
use crate::transfers::{self, Relation};

/// Connector access tokens start with this.
pub const TOKEN_PREFIX: &str = "fct_";

pub fn router(state: &AppState) -> Router<AppState> {
    let token = Router::new().route("/oauth/token", post(token_endpoint));
    Router::new()
        .merge(state.auth_limit.wrap(token))
        .route("/api/v1/connector/me", get(api_me))
        .route("/api/v1/connector/heartbeat", post(api_heartbeat))
        .route("/api/v1/connector/claim", post(api_claim))
        .route("/api/v1/connector/transfers/{id}/acks", post(api_acks))
        .route("/api/v1/connector/transfers/{id}/state", post(api_report))
}

pub async fn agent_by_token(state: &AppState, token: &str) -> AppResult<Option<ConnectorAgent>> {
    let row = sqlx::query(
        "SELECT c.id, c.community_id FROM connector_tokens t JOIN connectors c ON c.id = t.connector_id \
         WHERE t.token_hash = $1 AND t.expires_at > $2 AND c.revoked_at IS NULL",
    )
    .bind(tokens::hash(token))
    .bind(now_ms())
    .fetch_optional(&state.db)
    .await?;
    Ok(match row {
        Some(r) => Some(ConnectorAgent { id: r.try_get(0)?, community_id: r.try_get(1)? }),
        None => None,
    })
}

/// The resolver of connector tokens (registered at start-up, see [`crate::access::Resolvers`]).
pub fn resolve_bearer<'a>(state: &'a AppState, token: &'a str) -> futures_util::future::BoxFuture<'a, AppResult<Option<Principal>>> {
    Box::pin(async move {
        if !token.starts_with(TOKEN_PREFIX) {
            return Ok(None);
        }
        match agent_by_token(state, token).await? {
            Some(agent) => Ok(Some(Principal::Connector(agent))),
            None => Err(AppError::Unauthorized),
        }
    })
}

fn agent(who: &Principal) -> AppResult<&ConnectorAgent> {
    match who {
        Principal::Connector(c) => Ok(c),
        _ => Err(AppError::ForbiddenBecause("this endpoint is for site connectors".into())),
    }
}

#[derive(Deserialize)]
struct TokenRequest {
    grant_type: String,
    client_id: Option<String>,
    client_secret: Option<String>,
}

/// RFC 6749 §5.2 error answer.
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut r = (status, Json(serde_json::json!({ "error": error, "error_description": description }))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(header::WWW_AUTHENTICATE, axum::http::HeaderValue::from_static(r#"Basic realm="ferry""#));
    }
    r
}

/// `POST /oauth/token`, client credentials grant; the client authenticates with HTTP Basic
/// (RFC 6749 §2.3.1) or in the form body.
async fn token_endpoint(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<TokenRequest>, axum::extract::rejection::FormRejection>,
) -> Response {
    // RFC 6749 5.2: a malformed request (no grant_type, not a form) is `invalid_request`.
    let Ok(Form(f)) = form else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send grant_type (and the client credentials) as application/x-www-form-urlencoded",
        );
    };
    if f.grant_type != "client_credentials" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "only client_credentials is supported");
    }
    let basic = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b.trim()).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(i, p)| (urldecode(i), urldecode(p))));
    let (client_id, secret) = match (basic, f.client_id, f.client_secret) {
        (Some((i, s)), _, _) => (i, s),
        (None, Some(i), Some(s)) => (i, s),
        _ => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "client authentication required"),
    };
    let row = match sqlx::query("SELECT id FROM connectors WHERE client_id = $1 AND secret_hash = $2 AND revoked_at IS NULL")
        .bind(&client_id)
        .bind(tokens::hash(&secret))
        .fetch_optional(&state.db_write)
        .await
    {
        Ok(r) => r,
        Err(e) => return AppError::from(e).into_response(),
    };
    let Some(row) = row else {
        return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client, wrong secret, or revoked");
    };
    let id: String = match row.try_get(0) {
        Ok(i) => i,
        Err(e) => return AppError::from(e).into_response(),
    };
    let token = tokens::new_secret(TOKEN_PREFIX);
    let secs = state.config.connectors.token_secs.max(1);
    let now = now_ms();
    let stored = async {
        sqlx::query("DELETE FROM connector_tokens WHERE expires_at < $1").bind(now).execute(&state.db_write).await?;
        sqlx::query("INSERT INTO connector_tokens (token_hash, connector_id, expires_at) VALUES ($1, $2, $3)")
            .bind(tokens::hash(&token))
            .bind(&id)
            .bind(now + secs as i64 * 1000)
            .execute(&state.db_write)
            .await
    };
    if let Err(e) = stored.await {
        return AppError::from(e).into_response();
    }
    let mut r = Json(serde_json::json!({ "access_token": token, "token_type": "Bearer", "expires_in": secs })).into_response();
    r.headers_mut().insert(header::CACHE_CONTROL, axum::http::HeaderValue::from_static("no-store"));
    r
}

fn urldecode(s: &str) -> String {
    serde_urlencoded::from_str::<Vec<(String, String)>>(&format!("x={s}"))
        .ok()
        .and_then(|v| v.into_iter().next().map(|(_, v)| v))
        .unwrap_or_else(|| s.to_string())
}

async fn api_me(State(state): State<AppState>, who: Principal) -> AppResult<Json<ferry_schemas::ConnectorSelf>> {
    let a = agent(&who)?;
    let r = sqlx::query("SELECT c.name, m.code, m.name FROM connectors c JOIN communities m ON m.id = c.community_id WHERE c.id = $1")
        .bind(&a.id)
        .fetch_one(&state.db)
        .await?;
    Ok(Json(ferry_schemas::ConnectorSelf {
        id: a.id.clone(),
        name: r.try_get(0)?,
        community: r.try_get(1)?,
        community_name: r.try_get(2)?,
    }))
}

async fn api_heartbeat(State(state): State<AppState>, who: Principal, ApiJson(h): ApiJson<Heartbeat>) -> AppResult<StatusCode> {
    let a = agent(&who)?;
    sqlx::query("UPDATE connectors SET last_seen_at = $1, version = $2, queue_depth = $3, last_error = $4 WHERE id = $5")
        .bind(now_ms())
        .bind(h.version.chars().take(50).collect::<String>())
        .bind(h.queue_depth)
        .bind(h.last_error.chars().take(500).collect::<String>())
        .bind(&a.id)
        .execute(&state.db_write)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who holds a lease: the connector, and the running instance of it when the connector names one
/// (header `Ferry-Connector-Instance`), so that two processes with the same credentials never hold
/// the same transfer while a restarted process picks up its own work at once.
fn lease_owner(a: &ConnectorAgent, headers: &HeaderMap) -> AppResult<String> {
    match headers.get(ferry_schemas::CONNECTOR_INSTANCE_HEADER) {
        None => Ok(a.id.clone()),
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            if v.is_empty() || v.len() > 64 || !v.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err(AppError::BadRequest("the connector instance header takes up to 64 letters, digits and dashes".into()));
            }
            Ok(format!("{}:{v}", a.id))
        }
    }
}

/// Claims the oldest transfer of the community that is waiting (sent), whose lease ran out, or
/// that this very connector instance already holds (it resumes after a restart; the lease renews).
async fn api_claim(State(state): State<AppState>, who: Principal, headers: HeaderMap) -> AppResult<Response> {
    let a = agent(&who)?;
    let owner = lease_owner(a, &headers)?;
    let now = now_ms();
    let lease_until = now + state.config.connectors.lease_secs as i64 * 1000;
    for _ in 0..5 {
        let candidate: Option<(String, String)> = sqlx::query(
            "SELECT id, state FROM transfers WHERE community_id = $1 \
             AND (state = 'sent' OR (state = 'received' AND (lease_until < $2 OR lease_owner = $3))) ORDER BY sent_at, id LIMIT 1",
        )
        .bind(&a.community_id)
        .bind(now)
        .bind(&owner)
        .fetch_optional(&state.db_write)
        .await?
        .map(|r| Ok::<_, sqlx::Error>((r.try_get(0)?, r.try_get(1)?)))
        .transpose()?;
        let Some((id, was)) = candidate else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        // The conditional UPDATE is the lock: of two connectors, only one changes the row.
        let taken = sqlx::query(
            "UPDATE transfers SET state = 'received', lease_owner = $1, lease_until = $2, updated_at = $3 \
             WHERE id = $4 AND (state = 'sent' OR (state = 'received' AND (lease_until < $3 OR lease_owner = $1)))",
        )
        .bind(&owner)
        .bind(lease_until)
        .bind(now)
        .bind(&id)
        .execute(&state.db_write)
        .await?;
        if taken.rows_affected() != 1 {
            continue;
        }
        if was == "sent" {
            transfers::db::add_event(&state.db_write, &id, "received", "", &who).await?;
            crate::metrics::delivery("received");
        }
        tracing::info!(transfer = %id, connector = %owner, "transfer claimed");
        let transfer =
            transfers::db::load(&state.db_write, &id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("transfer vanished")))?;
        let rows = sqlx::query(
            "SELECT i.study_uid, i.series_uid, i.sop_instance_uid, i.size, i.sha256, \
             (SELECT COUNT(*) FROM transfer_acks a WHERE a.transfer_id = ti.transfer_id AND a.sop_instance_uid = ti.sop_instance_uid) \
             FROM transfer_instances ti JOIN instances i ON i.origin = ti.origin AND i.sop_instance_uid = ti.sop_instance_uid \
             WHERE ti.transfer_id = $1 ORDER BY i.study_uid, i.series_uid, i.instance_number, i.sop_instance_uid",
        )
        .bind(&id)
        .fetch_all(&state.db_write)
        .await?;
        let instances = rows
            .iter()
            .map(|r| {
                Ok(ClaimedInstance {
                    study_uid: r.try_get(0)?,
                    series_uid: r.try_get(1)?,
                    sop_instance_uid: r.try_get(2)?,
                    size: r.try_get::<i64, _>(3)? as u64,
                    sha256: r.try_get(4)?,
                    acked: r.try_get::<i64, _>(5)? > 0,
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        return Ok(Json(Claim { transfer, lease_until, instances }).into_response());
    }
    Err(AppError::Unavailable("transfers are being claimed concurrently; retry".into()))
}

/// The transfer, if this connector holds its lease (404 for other communities' transfers).
async fn held(state: &AppState, who: &Principal, headers: &HeaderMap, id: &str) -> AppResult<ConnectorAgent> {
    let a = agent(who)?.clone();
    let me = lease_owner(&a, headers)?;
    let (_, rel) = transfers::visible(state, who, id).await?;
    if rel != Relation::Connector {
        return Err(AppError::NotFound("no such transfer".into()));
    }
    let row = sqlx::query("SELECT state, lease_owner FROM transfers WHERE id = $1").bind(id).fetch_one(&state.db_write).await?;
    let (st, owner): (String, Option<String>) = (row.try_get(0)?, row.try_get(1)?);
    if st != "received" || owner.as_deref() != Some(me.as_str()) {
        return Err(AppError::Conflict("this connector does not hold the transfer (claim it first; the lease may have run out)".into()));
    }
    Ok(a)
}

async fn api_acks(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJsonList(acks): ApiJsonList<Ack>,
) -> AppResult<StatusCode> {
    held(&state, &who, &headers, &id).await?;
    let now = now_ms();
    let mut tx = state.db_write.begin().await?;
    for a in &acks {
        let known = sqlx::query("SELECT 1 FROM transfer_instances WHERE transfer_id = $1 AND sop_instance_uid = $2")
            .bind(&id)
            .bind(&a.sop_instance_uid)
            .fetch_optional(&mut *tx)
            .await?;
        if known.is_none() {
            return Err(AppError::BadRequest(format!("{} is not part of this transfer", a.sop_instance_uid)));
        }
        sqlx::query(
            "INSERT INTO transfer_acks (transfer_id, sop_instance_uid, status, acked_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (transfer_id, sop_instance_uid) DO NOTHING",
        )
        .bind(&id)
        .bind(&a.sop_instance_uid)
        .bind(i64::from(a.status))
        .bind(now)
        .execute(&mut *tx)
        .await?;
    }
    // News from the connector extends its lease.
    sqlx::query("UPDATE transfers SET lease_until = $1 WHERE id = $2")
        .bind(now + state.config.connectors.lease_secs as i64 * 1000)
        .bind(&id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_report(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJson(r): ApiJson<ConnectorReport>,
) -> AppResult<Response> {
    held(&state, &who, &headers, &id).await?;
    let message = r.message.trim().chars().take(2000).collect::<String>();
    match r.state.as_str() {
        "stored" => {
            let missing: i64 = sqlx::query(
                "SELECT COUNT(*) FROM transfer_instances ti WHERE ti.transfer_id = $1 AND NOT EXISTS \
                 (SELECT 1 FROM transfer_acks a WHERE a.transfer_id = ti.transfer_id AND a.sop_instance_uid = ti.sop_instance_uid)",
            )
            .bind(&id)
            .fetch_one(&state.db_write)
            .await?
            .try_get(0)?;
            if missing > 0 {
                return Err(AppError::Conflict(format!(
                    "{missing} instance(s) not acknowledged yet; acknowledge what the PACS stored first"
                )));
            }
        }
        "failed" if message.is_empty() => return Err(AppError::BadRequest("say why it failed; the sender sees the message".into())),
        "failed" => {}
        _ => return Err(AppError::BadRequest("state is stored or failed".into())),
    }
    sqlx::query("UPDATE transfers SET state = $1, state_message = $2, lease_owner = NULL, lease_until = 0, updated_at = $3 WHERE id = $4")
        .bind(&r.state)
        .bind(&message)
        .bind(now_ms())
        .bind(&id)
        .execute(&state.db_write)
        .await?;
    transfers::db::add_event(&state.db_write, &id, &r.state, &message, &who).await?;
    crate::metrics::delivery(&r.state);
    tracing::info!(transfer = %id, state = %r.state, "connector reported");
    let t = transfers::db::load(&state.db_write, &id).await?.ok_or_else(|| AppError::NotFound("no such transfer".into()))?;
    Ok(Json(t).into_response())
}
