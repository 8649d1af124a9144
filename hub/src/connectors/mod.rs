//! Site connectors, hub side (a community's admins register them: `communities::connectors`).
//! The connector gets short-lived access
//! tokens at `POST /oauth/token` (OAuth2 client credentials), reports a heartbeat, claims sent
//! transfers of its community with a lease (two instances never hold the same transfer; a
//! crashed one's lease runs out and the work returns), acknowledges each instance only after
//! the PACS confirmed it, and reports the outcome — `stored`, or `failed` with the reason — which
//! the sender sees, together with each PACS target's part (`PUT …/targets`: "in the PACS, archive
//! retrying since …"). Claims hand out urgent transfers first, then the oldest, and never a
//! transfer its connector already holds: a connector works on several at once, each on its own.

pub mod db;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Json, Router};
use base64::Engine;
use ferry_schemas::{Ack, Claim, ConnectorReport, Heartbeat, Outcome, TargetProgress};
use serde::Deserialize;

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
        .route("/api/v1/connector/transfers/{id}/targets", axum::routing::put(api_targets))
}

pub async fn agent_by_token(state: &AppState, token: &str) -> AppResult<Option<ConnectorAgent>> {
    let found = db::agent_by_token_hash(&state.db, &tokens::hash(token)).await?;
    Ok(found.map(|(id, community_id)| ConnectorAgent { id, community_id }))
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
    let id = match db::connector_by_secret(&state.db_write, &client_id, &tokens::hash(&secret)).await {
        Ok(Some(id)) => id,
        Ok(None) => return oauth_error(StatusCode::UNAUTHORIZED, "invalid_client", "unknown client, wrong secret, or revoked"),
        Err(e) => return AppError::from(e).into_response(),
    };
    let token = tokens::new_secret(TOKEN_PREFIX);
    let secs = state.config.connectors.token_secs.max(1);
    let now = now_ms();
    if let Err(e) = db::store_token(&state.db_write, &tokens::hash(&token), &id, now + secs as i64 * 1000).await {
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
    let (name, community, community_name) = db::describe(&state.db, &a.id).await?;
    Ok(Json(ferry_schemas::ConnectorSelf { id: a.id.clone(), name, community, community_name }))
}

/// Targets a heartbeat may describe, and the longest name of one (they become metric labels).
const MAX_TARGETS: usize = 16;
const MAX_TARGET_NAME: usize = 64;

fn check_target_name(name: &str) -> AppResult<()> {
    if name.is_empty() || name.chars().count() > MAX_TARGET_NAME || name.chars().any(char::is_control) {
        return Err(AppError::BadRequest(format!("a target's name takes 1 to {MAX_TARGET_NAME} printable characters")));
    }
    Ok(())
}

async fn api_heartbeat(State(state): State<AppState>, who: Principal, ApiJson(mut h): ApiJson<Heartbeat>) -> AppResult<StatusCode> {
    let a = agent(&who)?;
    if h.targets.len() > MAX_TARGETS {
        return Err(AppError::BadRequest(format!("a heartbeat describes at most {MAX_TARGETS} targets")));
    }
    for t in &mut h.targets {
        check_target_name(&t.target)?;
        t.last_answer = t.last_answer.chars().take(500).collect();
    }
    let targets = serde_json::to_string(&h.targets).map_err(|e| AppError::Internal(e.into()))?;
    db::heartbeat(&state.db_write, &a.id, &h, &targets).await?;
    record_metrics(&a.id, &h);
    Ok(StatusCode::NO_CONTENT)
}

/// Per target of the connector: instances waiting, age of the oldest waiting transfer, time of
/// the last confirmed store, and whether it retries. Labels: the connector's id (never a patient's
/// data) and the target's name.
fn record_metrics(connector: &str, h: &Heartbeat) {
    let now = now_ms();
    metrics::gauge!("ferry_connector_last_heartbeat_timestamp_seconds", "connector" => connector.to_string()).set(now as f64 / 1000.0);
    for t in &h.targets {
        let labels = [("connector", connector.to_string()), ("target", t.target.clone())];
        metrics::gauge!("ferry_connector_target_queue_depth", &labels).set(t.queue_depth as f64);
        let oldest = t.oldest_waiting_at.map(|at| now.saturating_sub(at).max(0) as f64 / 1000.0).unwrap_or(0.0);
        metrics::gauge!("ferry_connector_target_oldest_waiting_seconds", &labels).set(oldest);
        if let Some(at) = t.last_success_at {
            metrics::gauge!("ferry_connector_target_last_success_timestamp_seconds", &labels).set(at as f64 / 1000.0);
        }
        metrics::gauge!("ferry_connector_target_retrying", &labels).set(if t.retrying { 1.0 } else { 0.0 });
    }
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

/// Claims the next transfer of the community: waiting (sent), or one whose lease ran out; urgent
/// transfers first, then the oldest. A transfer this connector holds is not handed out again (it
/// works on it from its own state and renews the lease with acknowledgements).
async fn api_claim(State(state): State<AppState>, who: Principal, headers: HeaderMap) -> AppResult<Response> {
    let a = agent(&who)?;
    let owner = lease_owner(a, &headers)?;
    let now = now_ms();
    let lease_until = now + state.config.connectors.lease_secs as i64 * 1000;
    for _ in 0..5 {
        let Some((id, was)) = db::claim_candidate(&state.db_write, &a.community_id, now).await? else {
            return Ok(StatusCode::NO_CONTENT.into_response());
        };
        if !db::take_lease(&state.db_write, &id, &owner, lease_until, now).await? {
            continue;
        }
        if was == "sent" {
            transfers::db::add_event(&state.db_write, &id, "received", "", &who).await?;
            crate::metrics::delivery("received");
        }
        tracing::info!(transfer = %id, connector = %owner, "transfer claimed");
        let transfer =
            transfers::db::load(&state.db_write, &id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("transfer vanished")))?;
        let instances = db::claimed_instances(&state.db_write, &id).await?;
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
    let (st, owner) = db::lease(&state.db_write, id).await?;
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
        if !db::is_part(&mut tx, &id, &a.sop_instance_uid).await? {
            return Err(AppError::BadRequest(format!("{} is not part of this transfer", a.sop_instance_uid)));
        }
        db::insert_ack(&mut tx, &id, &a.sop_instance_uid, a.status, now).await?;
    }
    // News from the connector extends its lease.
    db::renew_lease(&mut tx, &id, now + state.config.connectors.lease_secs as i64 * 1000).await?;
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
    match r.state {
        Outcome::Stored => {
            let missing = db::unacknowledged(&state.db_write, &id).await?;
            if missing > 0 {
                return Err(AppError::Conflict(format!(
                    "{missing} instance(s) not acknowledged yet; acknowledge what the PACS stored first"
                )));
            }
        }
        Outcome::Failed if message.is_empty() => return Err(AppError::BadRequest("say why it failed; the sender sees the message".into())),
        Outcome::Failed => {}
    }
    db::finish(&state.db_write, &id, r.state.as_str(), &message).await?;
    transfers::db::add_event(&state.db_write, &id, r.state.as_str(), &message, &who).await?;
    crate::metrics::delivery(r.state.as_str());
    tracing::info!(transfer = %id, state = %r.state, "connector reported");
    let t = transfers::db::load(&state.db_write, &id).await?.ok_or_else(|| AppError::NotFound("no such transfer".into()))?;
    Ok(Json(t).into_response())
}

/// `PUT /api/v1/connector/transfers/{id}/targets`: where each PACS target stands with the
/// transfer. The connector holding the lease reports while it works; after it reported `stored`,
/// its community's connector keeps reporting the optional targets it still fills.
async fn api_targets(
    State(state): State<AppState>,
    who: Principal,
    headers: HeaderMap,
    Path(id): Path<String>,
    ApiJsonList(targets): ApiJsonList<TargetProgress>,
) -> AppResult<StatusCode> {
    let a = agent(&who)?;
    let me = lease_owner(a, &headers)?;
    let (t, rel) = transfers::visible(&state, &who, &id).await?;
    if rel != Relation::Connector {
        return Err(AppError::NotFound("no such transfer".into()));
    }
    let (st, owner) = db::lease(&state.db_write, &id).await?;
    let mine = st == "received" && owner.as_deref() == Some(me.as_str());
    if !mine && st != "stored" {
        return Err(AppError::Conflict(format!("the transfer is {}; only a held or stored transfer takes target reports", t.state)));
    }
    if targets.len() > MAX_TARGETS {
        return Err(AppError::BadRequest(format!("at most {MAX_TARGETS} targets")));
    }
    let mut seen = std::collections::HashSet::new();
    let mut clean = Vec::with_capacity(targets.len());
    for mut p in targets {
        check_target_name(&p.target)?;
        if !seen.insert(p.target.clone()) {
            return Err(AppError::BadRequest(format!("target {:?} is named twice", p.target)));
        }
        if p.stored > p.total {
            return Err(AppError::BadRequest(format!("target {:?}: stored is more than total", p.target)));
        }
        p.message = p.message.trim().chars().take(500).collect();
        clean.push(p);
    }
    db::replace_targets(&state.db_write, &id, &clean).await?;
    Ok(StatusCode::NO_CONTENT)
}
