//! Transfers: a referrer's sending of studies to a community, and the clinic's inbound
//! worklist. A transfer is opened as a `draft`, filled by uploads (ZIP, folder, DICOMDIR, single
//! files — a failed file is simply uploaded again), and `sent`. From then on the sender follows
//! its state: sent → received (the clinic's connector took it) → stored in the PACS (or failed,
//! with the reason) → done or rejected by clinic staff, with a message.
//!
//! Who sees a transfer: its sender, and once sent the members of the receiving community.
//! Everybody else gets 404, as for a transfer that does not exist.

pub mod db;
pub mod download;
pub mod pages;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_schemas::{Decision, NewTransfer, Transfer, Urgency};
use serde::Deserialize;

use crate::access::Principal;
use crate::error::{ApiJson, AppError, AppResult};
use crate::state::AppState;
use crate::text::fold;
use db::TransferRef;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/transfers", get(api_list).post(api_create))
        .route("/api/v1/transfers/{id}", get(api_get).delete(api_discard))
        .route("/api/v1/transfers/{id}/files", post(api_add_files).layer(DefaultBodyLimit::disable()))
        .route("/api/v1/transfers/{id}/send", post(api_send))
        .route("/api/v1/transfers/{id}/done", post(api_done))
        .route("/api/v1/transfers/{id}/reject", post(api_reject))
        .route("/api/v1/transfers/{id}/download", get(download::api_download))
}

pub const STATES: &[&str] = &["draft", "sent", "received", "stored", "failed", "done", "rejected"];

/// How the caller relates to a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Relation {
    Sender,
    Member,
    /// A community admin of the receiving community.
    CommunityAdmin,
    /// The operator token.
    Operator,
    /// The receiving community's connector.
    Connector,
}

/// Finds a transfer the principal may see, with how it relates to it; 404 otherwise.
pub async fn visible(state: &AppState, who: &Principal, id: &str) -> AppResult<(TransferRef, Relation)> {
    let not_found = || AppError::NotFound("no such transfer".into());
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    let t = db::find_ref(&state.db, id).await?.ok_or_else(not_found)?;
    let user = match who {
        Principal::Admin => return Ok((t, Relation::Operator)),
        Principal::Connector(c) if c.community_id == t.community_id && t.state != "draft" => {
            return Ok((t, Relation::Connector));
        }
        Principal::Connector(_) | Principal::Share(_) => return Err(not_found()),
        Principal::User(u) => u,
    };
    if t.sender_id == user.id {
        return Ok((t, Relation::Sender));
    }
    if t.state != "draft" {
        match crate::access::community_role(&state.db, &t.community_id, &user.id).await?.as_deref() {
            Some("admin") => return Ok((t, Relation::CommunityAdmin)),
            Some(_) => return Ok((t, Relation::Member)),
            None => {}
        }
    }
    Err(not_found())
}

fn clean(s: &str, max: usize, what: &str) -> AppResult<String> {
    let s = s.trim();
    if s.chars().count() > max {
        return Err(AppError::BadRequest(format!("{what} is too long (at most {max} characters)")));
    }
    Ok(s.chars().filter(|c| !c.is_control() || *c == '\n').collect())
}

/// Whether the user may send to the community (open to all referrers, or approved, or member).
pub async fn may_send(state: &AppState, community_id: &str, requires_approval: bool, user_id: &str) -> AppResult<bool> {
    if !requires_approval || crate::access::community_role(&state.db, community_id, user_id).await?.is_some() {
        return Ok(true);
    }
    Ok(db::approval(&state.db, community_id, user_id).await?.as_deref() == Some("approved"))
}

pub async fn create(state: &AppState, who: &Principal, n: &NewTransfer) -> AppResult<Transfer> {
    let user = who.require_user()?;
    let rules = db::rules_by_code(&state.db, n.community.trim())
        .await?
        .ok_or_else(|| AppError::NotFound(format!("no community with the code {}", n.community.trim())))?;
    if rules.accepts_inbound == 0 {
        return Err(AppError::Conflict("this community does not accept studies sent to it".into()));
    }
    if !may_send(state, &rules.id, rules.requires_approval != 0, &user.id).await? {
        return Err(AppError::ForbiddenBecause(
            "this community only accepts studies from referrers it approved; ask for approval first".into(),
        ));
    }
    let urgency = match n.urgency.as_deref().map(str::trim) {
        None | Some("") | Some("routine") => Urgency::Routine,
        Some("urgent") => Urgency::Urgent,
        Some(_) => return Err(AppError::BadRequest("urgency is routine or urgent".into())),
    };
    let reason = clean(&n.reason, 2000, "the reason")?;
    let appointment = clean(&n.appointment, 100, "the appointment")?;
    let id = uuid::Uuid::new_v4().to_string();
    db::insert_draft(
        &state.db_write,
        &db::Draft { id: &id, sender_id: &user.id, community_id: &rules.id, reason: &reason, appointment: &appointment, urgency },
    )
    .await?;
    db::add_event(&state.db_write, &id, "draft", "", who).await?;
    tracing::info!(transfer = %id, user = %user.id, "transfer opened");
    db::load(&state.db, &id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("transfer vanished")))
}

/// Uploads files into a draft; answers with the upload report.
pub async fn add_files(
    state: &AppState,
    who: &Principal,
    id: &str,
    headers: &HeaderMap,
    body: Body,
) -> AppResult<crate::uploads::Ingested> {
    let (t, rel) = visible(state, who, id).await?;
    if rel != Relation::Sender {
        return Err(AppError::NotFound("no such transfer".into()));
    }
    if t.state != "draft" {
        return Err(AppError::Conflict("this transfer was already sent; open a new one for more files".into()));
    }
    let origin = crate::index::Holding::Transfer.origin(id);
    let ingested = crate::uploads::ingest_body(state, headers, body, origin).await?;
    // The index writer linked every stored instance to the draft in the instance's own
    // transaction; only the draft's time changes here.
    db::touch(&state.db_write, id).await?;
    tracing::info!(transfer = %id, stored = ingested.report.stored, duplicates = ingested.report.duplicates, failed = ingested.report.failed, "files added to transfer");
    Ok(ingested)
}

pub async fn send(state: &AppState, who: &Principal, id: &str) -> AppResult<Transfer> {
    let (t, rel) = visible(state, who, id).await?;
    if rel != Relation::Sender {
        return Err(AppError::NotFound("no such transfer".into()));
    }
    if t.state != "draft" {
        return Err(AppError::Conflict("this transfer was already sent".into()));
    }
    let rules = db::rules(&state.db, &t.community_id).await?;
    if rules.accepts_inbound == 0 {
        return Err(AppError::Conflict("this community does not accept studies sent to it (any more)".into()));
    }
    if !may_send(state, &t.community_id, rules.requires_approval != 0, &t.sender_id).await? {
        return Err(AppError::ForbiddenBecause("this community only accepts studies from referrers it approved".into()));
    }
    let studies = db::studies(&state.db, id).await?;
    if studies.is_empty() {
        return Err(AppError::Conflict("the transfer holds no images yet; upload files first".into()));
    }
    let sender = db::sender_words(&state.db, id).await?;
    let mut words: Vec<String> = vec![sender.name, sender.practice, sender.reason];
    for s in &studies {
        words.extend([s.patient_name.replace('^', " "), s.patient_id.clone(), s.patient_birth_date.clone(), s.description.clone()]);
    }
    let instances: u64 = studies.iter().map(|s| s.instances).sum();
    let bytes: u64 = studies.iter().map(|s| s.bytes).sum();
    let summary = serde_json::to_string(&studies).map_err(|e| AppError::Internal(e.into()))?;
    let sent = db::Sent { summary: &summary, search_text: &fold(&words.join(" ")), instances, bytes };
    if !db::mark_sent(&state.db_write, id, &sent).await? {
        return Err(AppError::Conflict("this transfer was already sent".into()));
    }
    db::add_event(&state.db_write, id, "sent", "", who).await?;
    tracing::info!(transfer = %id, instances, bytes, "transfer sent");
    db::load(&state.db, id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("transfer vanished")))
}

/// Clinic staff close a transfer: `done` or `rejected` (with a message the sender sees).
pub async fn decide(state: &AppState, who: &Principal, id: &str, to: &str, message: &str) -> AppResult<Transfer> {
    let (t, rel) = visible(state, who, id).await?;
    if !matches!(rel, Relation::Member | Relation::CommunityAdmin) {
        return Err(if rel == Relation::Sender {
            AppError::ForbiddenBecause("only the receiving clinic can mark a transfer done or rejected".into())
        } else {
            AppError::NotFound("no such transfer".into())
        });
    }
    let message = clean(message, 2000, "the message")?;
    if to == "rejected" && message.is_empty() {
        return Err(AppError::BadRequest("say why the transfer is rejected; the sender sees the message".into()));
    }
    if !matches!(t.state.as_str(), "sent" | "received" | "stored" | "failed") {
        return Err(AppError::Conflict(format!("the transfer is {} and cannot be marked {to}", t.state)));
    }
    if !db::decide(&state.db_write, id, &t.state, to, &message).await? {
        return Err(AppError::Conflict("the transfer changed meanwhile; reload".into()));
    }
    db::add_event(&state.db_write, id, to, &message, who).await?;
    tracing::info!(transfer = %id, state = to, "transfer decided");
    db::load(&state.db, id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("transfer vanished")))
}

/// Filters of the transfer lists.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// `sent` (the caller's own sendings, the default) or `inbound` (to the caller's communities).
    #[serde(rename = "box")]
    pub box_: Option<String>,
    /// Inbound only: one community's code.
    pub community: Option<String>,
    pub state: Option<String>,
    /// Words that must all appear (patient name, ID, birth date, sender, reason).
    pub q: Option<String>,
    pub limit: Option<u32>,
    pub offset: Option<u32>,
}

pub async fn list(state: &AppState, who: &Principal, q: &ListQuery) -> AppResult<Vec<Transfer>> {
    let user = who.require_user()?;
    let mut binds: Vec<String> = Vec::new();
    let p = |v: String, binds: &mut Vec<String>| {
        binds.push(v);
        format!("${}", binds.len())
    };
    let mut clauses = Vec::new();
    match q.box_.as_deref().unwrap_or("sent") {
        "sent" => {
            let u = p(user.id.clone(), &mut binds);
            clauses.push(format!("t.sender_id = {u}"));
        }
        "inbound" => {
            let u = p(user.id.clone(), &mut binds);
            clauses
                .push(format!("t.state <> 'draft' AND t.community_id IN (SELECT m.community_id FROM memberships m WHERE m.user_id = {u})"));
            if let Some(code) = q.community.as_deref().filter(|c| !c.is_empty()) {
                let c = p(code.to_string(), &mut binds);
                clauses.push(format!("c.code = {c}"));
            }
        }
        _ => return Err(AppError::BadRequest("box is sent or inbound".into())),
    }
    if let Some(s) = q.state.as_deref().filter(|s| !s.is_empty()) {
        if !STATES.contains(&s) {
            return Err(AppError::BadRequest(format!("state is one of {}", STATES.join(", "))));
        }
        let s = p(s.to_string(), &mut binds);
        clauses.push(format!("t.state = {s}"));
    }
    if let Some(text) = q.q.as_deref() {
        for word in fold(text).split_whitespace().take(8) {
            let escaped = word.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            let w = p(format!("%{escaped}%"), &mut binds);
            clauses.push(format!("t.search_text LIKE {w} ESCAPE '\\'"));
        }
    }
    let limit = q.limit.unwrap_or(100).clamp(1, 500);
    let offset = q.offset.unwrap_or(0);
    Ok(db::list(&state.db, &clauses, binds, limit, offset).await?)
}

pub async fn discard(state: &AppState, who: &Principal, id: &str) -> AppResult<()> {
    let (t, rel) = visible(state, who, id).await?;
    if rel != Relation::Sender {
        return Err(AppError::NotFound("no such transfer".into()));
    }
    if t.state != "draft" {
        return Err(AppError::Conflict("a sent transfer cannot be discarded".into()));
    }
    // Everything the draft uploaded goes with it: rows, blobs and data keys that no other
    // holding links.
    let mut tx = state.db_write.begin().await?;
    let released = crate::index::release(&mut tx, crate::index::Holding::Transfer, id, vec![], vec![]).await?;
    if !db::delete_draft(&mut tx, id).await? {
        tx.rollback().await?;
        return Err(AppError::Conflict("a sent transfer cannot be discarded".into()));
    }
    tx.commit().await?;
    state.blobs.delete_released(&state.db_write, &released.blobs).await;
    tracing::info!(transfer = %id, blobs = released.blobs.len(), shredded = released.shredded, "draft discarded");
    Ok(())
}

// ---- JSON API ----

async fn api_create(State(state): State<AppState>, who: Principal, ApiJson(n): ApiJson<NewTransfer>) -> AppResult<Response> {
    let t = create(&state, &who, &n).await?;
    Ok((StatusCode::CREATED, Json(t)).into_response())
}

async fn api_get(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<Transfer>> {
    visible(&state, &who, &id).await?;
    Ok(Json(db::load(&state.db, &id).await?.ok_or_else(|| AppError::NotFound("no such transfer".into()))?))
}

async fn api_list(
    State(state): State<AppState>,
    who: Principal,
    q: Result<axum::extract::Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> AppResult<Json<Vec<Transfer>>> {
    let axum::extract::Query(q) = q.map_err(|e| AppError::BadRequest(e.body_text()))?;
    Ok(Json(list(&state, &who, &q).await?))
}

async fn api_add_files(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Response> {
    let ingested = add_files(&state, &who, &id, &headers, body).await?;
    Ok((ingested.status, Json(ingested.report)).into_response())
}

async fn api_send(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<Transfer>> {
    Ok(Json(send(&state, &who, &id).await?))
}

async fn api_discard(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<StatusCode> {
    discard(&state, &who, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_done(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Json<Transfer>> {
    // The message is optional here: an empty body is fine.
    let message =
        if body.iter().all(u8::is_ascii_whitespace) { String::new() } else { crate::error::parse_json::<Decision>(&body)?.message };
    Ok(Json(decide(&state, &who, &id, "done", &message).await?))
}

async fn api_reject(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    ApiJson(d): ApiJson<Decision>,
) -> AppResult<Json<Transfer>> {
    Ok(Json(decide(&state, &who, &id, "rejected", &d.message).await?))
}
