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

pub mod fhir;
pub mod page;

use crate::access::Principal;
use crate::audit::{Event, event_of, record};
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
        let ids: Vec<String> = sqlx::query_scalar("SELECT community_id FROM memberships WHERE user_id = $1 AND role = 'admin'")
            .bind(&user.id)
            .fetch_all(&state.db)
            .await?;
        if ids.is_empty() {
            return Err(AppError::ForbiddenBecause("the audit trail is for hub and community admins".into()));
        }
        Some(ids)
    };
    let limit = q.limit.unwrap_or(500).clamp(1, 100_000);
    let mut conds: Vec<String> = vec!["seq IS NOT NULL".into()];
    let mut binds: Vec<String> = vec![];
    let arg = |binds: &mut Vec<String>, v: &str| {
        binds.push(v.to_string());
        format!("${}", binds.len())
    };
    for (col, v) in [("actor", &q.actor), ("action", &q.action), ("object_kind", &q.object_kind), ("object_id", &q.object_id)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let p = arg(&mut binds, v);
            conds.push(format!("{col} = {p}"));
        }
    }
    for (kind, v) in [("share", &q.share), ("transfer", &q.transfer)] {
        if let Some(v) = v.as_deref().filter(|v| !v.is_empty()) {
            let p = arg(&mut binds, v);
            conds.push(format!("(object_kind = '{kind}' AND object_id = {p})"));
        }
    }
    if let Some(study) = q.study.as_deref().filter(|v| !v.is_empty()) {
        let p = arg(&mut binds, study);
        conds.push(format!(
            "((object_kind = 'share' AND object_id IN (SELECT share_id FROM share_instances WHERE study_uid = {p})) \
             OR (object_kind = 'transfer' AND object_id IN (SELECT transfer_id FROM transfer_instances WHERE study_uid = {p})) \
             OR (object_kind = 'study' AND object_id = {p}))"
        ));
    }
    if let Some(pid) = q.patient_id.as_deref().filter(|v| !v.is_empty()) {
        let p = arg(&mut binds, pid);
        conds.push(format!(
            "((object_kind = 'share' AND object_id IN (SELECT id FROM shares WHERE patient_id = {p} \
                UNION SELECT si.share_id FROM share_instances si JOIN studies s ON s.origin = si.origin AND s.study_uid = si.study_uid WHERE s.patient_id = {p})) \
             OR (object_kind = 'transfer' AND object_id IN (SELECT ti.transfer_id FROM transfer_instances ti JOIN studies s ON s.origin = ti.origin AND s.study_uid = ti.study_uid WHERE s.patient_id = {p})) \
             OR (object_kind = 'study' AND object_id IN (SELECT study_uid FROM studies WHERE patient_id = {p})))"
        ));
    }
    if let Some(ids) = &scope {
        let ps: Vec<String> = ids.iter().map(|id| arg(&mut binds, id)).collect();
        let list = ps.join(", ");
        conds.push(format!(
            "((object_kind = 'share' AND object_id IN (SELECT id FROM shares WHERE community_id IN ({list}))) \
             OR (object_kind = 'transfer' AND object_id IN (SELECT id FROM transfers WHERE community_id IN ({list}))) \
             OR (object_kind = 'community' AND object_id IN ({list})) \
             OR (object_kind = 'connector' AND object_id IN (SELECT id FROM connectors WHERE community_id IN ({list}))) \
             OR (object_kind = 'study' AND (object_id IN (SELECT ti.study_uid FROM transfer_instances ti JOIN transfers t ON t.id = ti.transfer_id \
                    WHERE t.community_id IN ({list}) AND t.state <> 'draft') \
                 OR object_id IN (SELECT si.study_uid FROM share_instances si JOIN shares sh ON sh.id = si.share_id WHERE sh.community_id IN ({list}))) \
                 AND (actor IN (SELECT 'user:' || user_id FROM memberships WHERE community_id IN ({list})) \
                 OR actor IN (SELECT 'connector:' || id FROM connectors WHERE community_id IN ({list})) \
                 OR actor IN (SELECT 'share:' || id FROM shares WHERE community_id IN ({list})))))"
        ));
    }
    let mut times = vec![];
    if let Some(f) = q.from {
        times.push(f);
        conds.push(format!("at >= ${}", binds.len() + times.len()));
    }
    if let Some(t) = q.to {
        times.push(t);
        conds.push(format!("at < ${}", binds.len() + times.len()));
    }
    let sql = format!(
        "SELECT at, actor, client_addr, action, object_kind, object_id, result, detail, seq FROM audit_events WHERE {} ORDER BY seq DESC LIMIT {limit}",
        conds.join(" AND ")
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
    for b in &binds {
        query = query.bind(b);
    }
    for t in &times {
        query = query.bind(*t);
    }
    let rows = query.fetch_all(&state.db).await?;
    let events = rows.iter().map(event_of).collect::<Result<Vec<_>, sqlx::Error>>()?;
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
