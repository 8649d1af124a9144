//! The audit trail for people: hub and community admins query and export it (`GET /api/v1/audit`,
//! the page `/audit`, JSON lines or FHIR R4 `AuditEvent` resources). Recording is the foundation
//! `audit`; this feature only reads, and each read is itself recorded.

use axum::extract::{ConnectInfo, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_schemas::AuditEvent;
use serde::Deserialize;

mod db;
pub mod fhir;
pub mod page;

use crate::access::Principal;
use crate::audit::{Event, record};
use crate::error::{AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new().route("/api/v1/audit", get(api_query)).route("/audit", get(page::audit_page))
}

/// `GET /api/v1/audit`: filters, newest first; `format=jsonl` for an export as JSON lines,
/// `format=fhir` as FHIR R4 `AuditEvent` resources (NDJSON).
#[derive(Debug, Deserialize, Default)]
pub struct AuditQuery {
    pub actor: Option<String>,
    pub action: Option<String>,
    pub object_kind: Option<String>,
    pub object_id: Option<String>,
    pub share: Option<String>,
    pub transfer: Option<String>,
    /// Events of shares and transfers that hold this study.
    pub study: Option<String>,
    /// Events of shares and transfers of this patient ID.
    pub patient_id: Option<String>,
    /// Unix ms, inclusive.
    pub from: Option<i64>,
    /// Unix ms, exclusive.
    pub to: Option<i64>,
    pub limit: Option<i64>,
    pub format: Option<String>,
}

async fn api_query(
    State(state): State<AppState>,
    ci: ConnectInfo<std::net::SocketAddr>,
    who: Principal,
    crate::error::ApiQuery(q): crate::error::ApiQuery<AuditQuery>,
) -> AppResult<Response> {
    let format = match q.format.as_deref() {
        None | Some("json") => Format::Json,
        Some("jsonl") => Format::JsonLines,
        Some("fhir") => Format::Fhir,
        Some(other) => return Err(AppError::BadRequest(format!("format is json, jsonl or fhir, not {other:?}"))),
    };
    let events = query(&state, &who, &crate::http::client_addr(&ci), &q).await?;
    let lines = |line: &dyn Fn(&AuditEvent) -> serde_json::Result<String>| -> AppResult<String> {
        let mut body = String::new();
        for e in &events {
            body.push_str(&line(e).map_err(|e| AppError::Internal(e.into()))?);
            body.push('\n');
        }
        Ok(body)
    };
    match format {
        Format::Json => Ok(Json(events).into_response()),
        Format::JsonLines => {
            let body = lines(&|e| serde_json::to_string(e))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/x-ndjson"),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"ferry-audit.jsonl\""),
                ],
                body,
            )
                .into_response())
        }
        Format::Fhir => {
            let body = lines(&|e| serde_json::to_string(&fhir::audit_event(e, &state.base_url)))?;
            Ok((
                [
                    (header::CONTENT_TYPE, "application/fhir+ndjson"),
                    (header::CONTENT_DISPOSITION, "attachment; filename=\"ferry-audit.ndjson\""),
                ],
                body,
            )
                .into_response())
        }
    }
}

/// The records `who` may read that match `q`, newest first; the read is itself recorded.
/// Hub admins read everything; community admins the events of their communities' shares,
/// transfers, connectors and studies; nobody else anything.
pub async fn query(state: &AppState, who: &Principal, client_addr: &str, q: &AuditQuery) -> AppResult<Vec<AuditEvent>> {
    let scope: Option<Vec<String>> = if who.is_admin() {
        None
    } else {
        let user = who.require_user()?;
        let ids = db::administered_communities(&state.db, &user.id).await?;
        if ids.is_empty() {
            return Err(AppError::ForbiddenBecause("the audit trail is for hub and community admins".into()));
        }
        Some(ids)
    };
    let limit = q.limit.unwrap_or(500).clamp(1, 100_000);
    let events = db::events(&state.db, q, scope.as_deref(), limit).await?;
    // Reading the trail is itself recorded.
    record(
        &state.db_write,
        Event {
            actor: &who.log_id(),
            client_addr,
            action: "audit.read",
            object_kind: "audit",
            object_id: "",
            result: "ok",
            detail: &format!("{} record(s)", events.len()),
        },
    )
    .await?;
    Ok(events)
}

/// How `GET /api/v1/audit` answers.
enum Format {
    /// A JSON array of [`AuditEvent`]s.
    Json,
    /// One [`AuditEvent`] per line.
    JsonLines,
    /// One FHIR R4 `AuditEvent` resource per line ([`fhir`]).
    Fhir,
}
