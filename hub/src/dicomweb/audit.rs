//! The DICOMweb part of the audit trail: stores, searches and reads are recorded as they succeed.

use axum::extract::{ConnectInfo, State};
use axum::response::{IntoResponse, Response};

use crate::audit;
use crate::error::AppError;
use crate::state::AppState;

/// Middleware on `/dicomweb`: records stores, searches (the attribute keys searched by, never
/// their values) and reads (per study, see [`audit::READ_WINDOW_SECS`]) that succeeded. A request whose
/// record cannot be written gets 503 instead of the data.
pub async fn record_access(State(state): State<AppState>, req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let who = <crate::access::MaybePrincipal as axum::extract::FromRequestParts<AppState>>::from_request_parts(&mut parts, &state)
        .await
        .ok()
        .and_then(|m| m.0);
    let client = parts.extensions.get::<ConnectInfo<std::net::SocketAddr>>().map(|c| c.0.ip().to_string()).unwrap_or_default();
    let method = parts.method.clone();
    let path = parts.uri.path().to_string();
    let keys: Vec<String> = parts
        .uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| kv.split('=').next())
        .filter(|k| !k.is_empty())
        .map(|k| k.chars().take(40).collect())
        .collect();
    let resp = next.run(axum::extract::Request::from_parts(parts, body)).await;
    let Some(who) = who else { return resp };
    if !resp.status().is_success() {
        return resp;
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let study = match segments.as_slice() {
        ["studies", s, ..] => *s,
        _ => "",
    };
    let searching = matches!(segments.last(), Some(&"studies" | &"series" | &"instances")) && method == axum::http::Method::GET;
    let actor = who.log_id();
    let (action, detail) = if method == axum::http::Method::POST {
        ("dicomweb.store", format!("HTTP {}", resp.status().as_u16()))
    } else if searching {
        // What was searched by (never the values); the same search shape once per window.
        let detail = keys.join(",");
        if !state.audit_recent.first(&actor, &format!("{study}?{detail}")) {
            return resp;
        }
        ("dicomweb.search", detail)
    } else {
        if !state.audit_recent.first(&actor, study) {
            return resp;
        }
        ("dicomweb.read", segments.get(2..).map(|rest| rest.iter().step_by(2).copied().collect::<Vec<_>>().join("/")).unwrap_or_default())
    };
    let e = audit::Event {
        actor: &actor,
        client_addr: &client,
        action,
        object_kind: if study.is_empty() { "dicomweb" } else { "study" },
        object_id: study,
        result: "ok",
        detail: &detail,
    };
    match audit::record(&state.db_write, e).await {
        Ok(()) => resp,
        Err(_) => AppError::Unavailable("the access cannot be recorded in the audit trail right now".into()).into_response(),
    }
}
