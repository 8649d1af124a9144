//! Access codes: a clinic shares a patient's studies; the patient (or a doctor the patient gives
//! the sheet to) redeems the code with a second factor, views, reads the report and downloads.
//!
//! Staff side (members of the community, the operator token, the community's connector, the
//! CLI): create (from studies the community holds, or a draft that takes uploaded files), list,
//! extend, revoke, unlock, reissue, attach reports, read the access log. Holder side
//! ([`redeem`]): redeem, view, download as IHE PDI ZIP, delete, forward. The DLX interface
//! (`dlx`) speaks the same functions to programs.

pub mod code;
pub mod db;
pub mod dlx;
pub mod factor;
pub mod holder;
pub mod pages;
pub mod redeem;
pub mod reports;
pub mod sheet;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use ferry_schemas::{AuditEvent, ExtendShare, IssuedShare, NewShare, Share, ShareOptions, SheetRequest};
use serde::Deserialize;

use crate::access::Principal;
use crate::audit::{self, Event};
use crate::db::now_ms;
use crate::error::{AppError, AppResult};
use crate::state::AppState;
use code::AccessCode;
use db::ShareRow;

const DAY_MS: i64 = 86_400_000;

pub fn router(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/shares", get(api_list).post(api_create))
        .route("/api/v1/shares/{id}", get(api_get))
        .route("/api/v1/shares/{id}/files", post(api_add_files).layer(DefaultBodyLimit::disable()))
        .route("/api/v1/shares/{id}/issue", post(api_issue))
        .route("/api/v1/shares/{id}/extend", post(api_extend))
        .route("/api/v1/shares/{id}/revoke", post(api_revoke))
        .route("/api/v1/shares/{id}/unlock", post(api_unlock))
        .route("/api/v1/shares/{id}/reissue", post(api_reissue))
        .route("/api/v1/shares/{id}/sheet", post(api_sheet))
        .route("/api/v1/shares/{id}/log", get(api_log))
        .route("/api/v1/shares/{id}/reports", post(reports::api_upload).layer(DefaultBodyLimit::max(reports::MAX_BYTES + 4096)))
        .merge(holder::router(state))
        .merge(pages::router(state))
}

/// Who did it, for the audit trail and `created_by`.
pub fn actor(who: &Principal) -> String {
    who.log_id()
}

/// The community (by public code) whose shares the principal manages: its members, its
/// connector and the operator token.
pub async fn managed_community(state: &AppState, who: &Principal, code: &str) -> AppResult<String> {
    let not_found = || AppError::NotFound(format!("no community with the code {}", code.trim()));
    let id = db::community_id(&state.db, code.trim()).await?.ok_or_else(not_found)?;
    if may_manage(state, who, &id).await? { Ok(id) } else { Err(not_found()) }
}

async fn may_manage(state: &AppState, who: &Principal, community_id: &str) -> AppResult<bool> {
    Ok(match who {
        Principal::Admin => true,
        Principal::Connector(c) => c.community_id == community_id,
        Principal::User(u) => crate::access::community_role(&state.db, community_id, &u.id).await?.is_some(),
        Principal::Share(_) => false,
    })
}

/// A share the principal manages; 404 otherwise (existence is not revealed).
pub async fn managed(state: &AppState, who: &Principal, id: &str) -> AppResult<ShareRow> {
    let not_found = || AppError::NotFound("no such share".into());
    if uuid::Uuid::parse_str(id).is_err() {
        return Err(not_found());
    }
    let row = db::find(&state.db, id).await?.ok_or_else(not_found)?;
    if may_manage(state, who, &row.community_id).await? && row.purged_at.is_none() { Ok(row) } else { Err(not_found()) }
}

/// The expiry from the options: `expires_at`, or `expires_in_days`, or the community default;
/// never beyond `max_days` from now, nor beyond `cap` (a forwarded code's parent).
fn expiry(state: &AppState, options: &ShareOptions, default_days: i64, cap: Option<i64>) -> AppResult<i64> {
    let now = now_ms();
    let max_days = state.config.shares.max_days as i64;
    let at = match (options.expires_at, options.expires_in_days) {
        (Some(_), Some(_)) => return Err(AppError::BadRequest("give expires_at or expires_in_days, not both".into())),
        (Some(at), None) => {
            if at <= now + 1000 {
                return Err(AppError::BadRequest("expires_at lies in the past".into()));
            }
            at
        }
        (None, Some(days)) => {
            if days == 0 {
                return Err(AppError::BadRequest("expires_in_days must be at least 1".into()));
            }
            now + days as i64 * DAY_MS
        }
        (None, None) => now + default_days.max(1) * DAY_MS,
    };
    if at > now + max_days * DAY_MS {
        return Err(AppError::BadRequest(format!("a share lives at most {max_days} days")));
    }
    Ok(match cap {
        Some(c) => at.min(c),
        None => at,
    })
}

fn clean_note(note: Option<&str>) -> AppResult<String> {
    let n = note.unwrap_or("").trim();
    if n.chars().count() > 500 {
        return Err(AppError::BadRequest("the note is too long (at most 500 characters)".into()));
    }
    Ok(n.chars().filter(|c| !c.is_control() || *c == '\n').collect())
}

fn redeem_url(state: &AppState, code: &AccessCode) -> String {
    format!("{}/redeem?token={}", state.base_url, code.display())
}

/// A new share in state `draft`, with `instances` linked, in one transaction.
async fn open_draft(
    state: &AppState,
    community_id: &str,
    created_by: &str,
    parent_id: Option<&str>,
    note: &str,
    instances: &[crate::index::RowRef],
) -> AppResult<ShareRow> {
    let id = uuid::Uuid::new_v4().to_string();
    let mut tx = state.db_write.begin().await?;
    db::insert_draft(&mut tx, &id, community_id, created_by, parent_id, note, now_ms()).await?;
    crate::index::insert_links(&mut tx, crate::index::Holding::Share, &id, instances).await?;
    tx.commit().await?;
    db::find(&state.db_write, &id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("share vanished")))
}

/// Issues a code for a share whose instances are linked: chooses the second factor, sets the
/// expiry and stores the code's hash. The code (and password) leave only in the answer.
pub(crate) async fn issue_linked(
    state: &AppState,
    actor: &str,
    row: &ShareRow,
    options: &ShareOptions,
    cap: Option<i64>,
) -> AppResult<IssuedShare> {
    let studies: Vec<String> =
        crate::index::linked_studies(&state.db, crate::index::Holding::Share, &row.id).await?.into_iter().map(|s| s.study_uid).collect();
    if studies.is_empty() {
        return Err(AppError::Conflict("the share holds no images yet; add files or studies first".into()));
    }
    let facts = db::study_facts(&state.db, &row.id).await?;
    let factor = factor::choose(options, &facts).await?;
    let default_days = db::default_share_days(&state.db, &row.community_id).await?;
    let expires_at = expiry(state, options, default_days, cap)?;
    let patient_id = facts.first().map(|f| f.0.clone()).unwrap_or_default();
    let note = match &options.note {
        Some(n) => clean_note(Some(n))?,
        None => row.note.clone(),
    };
    let code = AccessCode::generate();
    let now = now_ms();
    let issued = db::Issue {
        code_hash: &state.secret.code_hash(code.as_str()),
        question_type: factor.question_type,
        question_text: &factor.question_text,
        answer_hash: &factor.answer_hash,
        issued_at: now,
        expires_at,
        patient_id: &patient_id,
        note: &note,
    };
    if !db::issue(&state.db_write, &row.id, &issued).await? {
        return Err(AppError::Conflict("this share was already issued".into()));
    }
    audit::record(
        &state.db_write,
        Event {
            actor,
            client_addr: "",
            action: "share.issue",
            object_kind: "share",
            object_id: &row.id,
            result: "ok",
            detail: factor.question_type,
        },
    )
    .await?;
    tracing::info!(share = %row.id, studies = studies.len(), "share issued");
    let fresh = db::find(&state.db, &row.id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("share vanished")))?;
    Ok(IssuedShare {
        share: db::load(&state.db, &fresh).await?,
        redeem_url: redeem_url(state, &code),
        code: code.display(),
        password: factor.password,
    })
}

/// Creates a share: a draft when neither studies nor a patient are named (files come later),
/// else issued at once for what the community holds of them.
pub async fn create(state: &AppState, actor: &str, community_id: &str, n: &NewShare) -> AppResult<Result<IssuedShare, Share>> {
    let patient = n.patient_id.as_deref().map(str::trim).filter(|p| !p.is_empty());
    if n.studies.len() > 100 {
        return Err(AppError::BadRequest("at most 100 studies per share".into()));
    }
    if patient.is_some() && !n.studies.is_empty() {
        return Err(AppError::BadRequest("name studies or a patient_id, not both".into()));
    }
    for s in &n.studies {
        if !crate::ingest::describe::valid_uid(s) {
            return Err(AppError::BadRequest(format!("{s:?} is not a Study Instance UID")));
        }
    }
    let draft = n.studies.is_empty() && patient.is_none();
    if draft && n.options != ShareOptions::default() && n.options.note.is_none() {
        return Err(AppError::BadRequest("a share without studies is a draft: add files, then give the options when issuing it".into()));
    }
    let note = clean_note(n.options.note.as_deref())?;
    let instances = if draft { Vec::new() } else { db::held_instances(&state.db, community_id, &n.studies, patient).await? };
    if !draft {
        let mut found: Vec<&str> = instances.iter().map(|i| i.study_uid.as_str()).collect();
        found.dedup();
        if let Some(missing) = n.studies.iter().find(|s| !found.contains(&s.as_str())) {
            return Err(AppError::NotFound(format!("the community holds no study {missing}")));
        }
        if instances.is_empty() {
            return Err(AppError::NotFound("the community holds no study of this patient".into()));
        }
    }
    let row = open_draft(state, community_id, actor, None, &note, &instances).await?;
    if draft {
        audit::record(
            &state.db_write,
            Event {
                actor,
                client_addr: "",
                action: "share.create",
                object_kind: "share",
                object_id: &row.id,
                result: "ok",
                detail: "draft",
            },
        )
        .await?;
        return Ok(Err(db::load(&state.db, &row).await?));
    }
    match issue_linked(state, actor, &row, &n.options, None).await {
        Ok(issued) => Ok(Ok(issued)),
        Err(e) => {
            // Bad options leave nothing behind.
            discard_draft(state, &row.id).await;
            Err(e)
        }
    }
}

/// Removes a draft that never became a share, with every row, blob and data key only it needed.
async fn discard_draft(state: &AppState, id: &str) {
    let released: anyhow::Result<crate::index::Released> = async {
        let mut tx = state.db_write.begin().await?;
        let released = crate::index::release(&mut tx, crate::index::Holding::Share, id, vec![], vec![]).await?;
        db::delete_draft(&mut tx, id).await?;
        tx.commit().await?;
        Ok(released)
    }
    .await;
    match released {
        Ok(r) => state.blobs.delete_released(&state.db_write, &r.blobs).await,
        Err(e) => tracing::warn!(share = %id, error = %format!("{e:#}"), "discarding a draft share failed; retention purges it later"),
    }
}

/// A derived code for a subset of a share's studies that never outlives it (patients forward
/// their share to another doctor this way). A forwarded code can't be forwarded again. Audited
/// as the holder's action from `client`.
pub async fn forward(
    state: &AppState,
    parent: &ShareRow,
    studies: &[String],
    options: &ShareOptions,
    client: &str,
) -> AppResult<IssuedShare> {
    if parent.parent_id.is_some() {
        return Err(AppError::ForbiddenBecause("a forwarded code cannot be forwarded again".into()));
    }
    let all = crate::index::linked_rows(&state.db, crate::index::Holding::Share, &parent.id).await?;
    if let Some(missing) = studies.iter().find(|s| !all.iter().any(|i| &i.study_uid == *s)) {
        return Err(AppError::NotFound(format!("the share holds no study {missing}")));
    }
    let chosen: Vec<_> = all.into_iter().filter(|i| studies.is_empty() || studies.contains(&i.study_uid)).collect();
    let actor = format!("share:{}", parent.id);
    let row = open_draft(state, &parent.community_id, &actor, Some(&parent.id), "", &chosen).await?;
    let mut options = options.clone();
    options.note = Some("forwarded by the patient".into());
    match issue_linked(state, &actor, &row, &options, Some(parent.expires_at)).await {
        Ok(issued) => {
            audit::record(
                &state.db_write,
                Event {
                    actor: &actor,
                    client_addr: client,
                    action: "share.forward",
                    object_kind: "share",
                    object_id: &parent.id,
                    result: "ok",
                    detail: &issued.share.id,
                },
            )
            .await?;
            Ok(issued)
        }
        Err(e) => {
            discard_draft(state, &row.id).await;
            Err(e)
        }
    }
}

/// Ends a share and every code derived from it: `revoked` by staff, `deleted` by its holder.
/// Open sessions end at once.
pub async fn end(state: &AppState, id: &str, to: &str) -> AppResult<()> {
    let now = now_ms();
    let column = if to == "deleted" { "deleted_at" } else { "revoked_at" };
    for sid in db::with_descendants(&state.db_write, id).await? {
        db::set_ended(&state.db_write, &sid, to, column, now).await?;
        db::end_sessions(&state.db_write, &sid).await?;
    }
    Ok(())
}

// ---- HTTP -----------------------------------------------------------------------------------

/// A JSON body that may be left out (then the defaults apply).
pub fn optional_json<T: serde::de::DeserializeOwned + Default>(body: &[u8]) -> AppResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    crate::error::parse_json(body)
}

async fn api_create(
    State(state): State<AppState>,
    who: Principal,
    crate::error::ApiJson(n): crate::error::ApiJson<NewShare>,
) -> AppResult<Response> {
    let community_id = managed_community(&state, &who, &n.community).await?;
    let actor = actor(&who);
    Ok(match create(&state, &actor, &community_id, &n).await? {
        Ok(issued) => (StatusCode::CREATED, Json(issued)).into_response(),
        Err(draft) => (StatusCode::CREATED, Json(draft)).into_response(),
    })
}

#[derive(Deserialize)]
pub struct ListQuery {
    /// A community code; default: every community the caller manages.
    pub community: Option<String>,
    /// `active`, `expired`, `revoked`, `deleted`, `draft`, `locked`
    pub state: Option<String>,
    pub limit: Option<i64>,
}

/// Shares of the communities the principal manages, newest first.
pub async fn list(state: &AppState, who: &Principal, q: &ListQuery) -> AppResult<Vec<Share>> {
    let communities: Vec<String> = match (&q.community, who) {
        (Some(code), _) => vec![managed_community(state, who, code).await?],
        (None, Principal::User(u)) => db::member_communities(&state.db, &u.id).await?,
        (None, Principal::Connector(c)) => vec![c.community_id.clone()],
        (None, Principal::Admin) => {
            return Err(AppError::BadRequest("name the community (?community=CODE)".into()));
        }
        (None, Principal::Share(_)) => return Err(AppError::Forbidden),
    };
    let limit = q.limit.unwrap_or(200).clamp(1, 1000);
    let now = now_ms();
    let mut out = Vec::new();
    for c in communities {
        for row in db::of_community(&state.db, &c, limit).await? {
            let keep = match q.state.as_deref() {
                None | Some("") => true,
                Some("locked") => row.is_locked(now),
                Some(s @ ("active" | "expired" | "revoked" | "deleted" | "draft")) => row.shown_state(now) == s,
                Some(other) => return Err(AppError::BadRequest(format!("unknown state {other:?}"))),
            };
            if keep {
                out.push(db::load(&state.db, &row).await?);
            }
        }
    }
    out.sort_by_key(|s| std::cmp::Reverse(s.created_at));
    Ok(out)
}

async fn api_list(
    State(state): State<AppState>,
    who: Principal,
    crate::error::ApiQuery(q): crate::error::ApiQuery<ListQuery>,
) -> AppResult<Json<Vec<Share>>> {
    Ok(Json(list(&state, &who, &q).await?))
}

async fn api_get(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<Share>> {
    let row = managed(&state, &who, &id).await?;
    Ok(Json(db::load(&state.db, &row).await?))
}

async fn api_add_files(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> AppResult<Response> {
    let row = managed(&state, &who, &id).await?;
    if row.state != "draft" {
        return Err(AppError::Conflict("this share was already issued; create a new one for more files".into()));
    }
    let ingested = crate::uploads::ingest_body(&state, &headers, body, crate::index::Holding::Share.origin(&id)).await?;
    tracing::info!(share = %id, stored = ingested.report.stored, failed = ingested.report.failed, "files added to share");
    Ok((ingested.status, Json(ingested.report)).into_response())
}

async fn api_issue(State(state): State<AppState>, who: Principal, Path(id): Path<String>, body: axum::body::Bytes) -> AppResult<Response> {
    let row = managed(&state, &who, &id).await?;
    if row.state != "draft" {
        return Err(AppError::Conflict("this share was already issued".into()));
    }
    let options: ShareOptions = optional_json(&body)?;
    let issued = issue_linked(&state, &actor(&who), &row, &options, None).await?;
    Ok((StatusCode::OK, Json(issued)).into_response())
}

/// Moves the expiry: by `days` (from the current expiry, or from now if it has passed), or to
/// `until`; never beyond `max_days` from now. Forwarded codes keep their own (shorter) expiry.
pub async fn extend(state: &AppState, actor: &str, row: &ShareRow, e: &ExtendShare) -> AppResult<i64> {
    if row.state != "active" {
        return Err(AppError::Conflict(format!("a {} share cannot be extended", row.state)));
    }
    let now = now_ms();
    let max = now + state.config.shares.max_days as i64 * DAY_MS;
    let until = match (e.days, e.until) {
        (Some(d), None) if d > 0 => row.expires_at.max(now) + d as i64 * DAY_MS,
        (None, Some(u)) if u > now => u,
        _ => return Err(AppError::BadRequest("give days (at least 1) or until (a future time, Unix ms)".into())),
    };
    if until > max {
        return Err(AppError::BadRequest(format!("a share lives at most {} days from now", state.config.shares.max_days)));
    }
    if let Some(parent) = &row.parent_id
        && let Some(p) = db::find(&state.db, parent).await?
        && until > p.expires_at
    {
        return Err(AppError::BadRequest("a forwarded code cannot outlive the code it came from".into()));
    }
    db::set_expiry(&state.db_write, &row.id, until).await?;
    audit::record(
        &state.db_write,
        Event {
            actor,
            client_addr: "",
            action: "share.extend",
            object_kind: "share",
            object_id: &row.id,
            result: "ok",
            detail: &until.to_string(),
        },
    )
    .await?;
    Ok(until)
}

async fn api_extend(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    crate::error::ApiJson(e): crate::error::ApiJson<ExtendShare>,
) -> AppResult<Json<Share>> {
    let row = managed(&state, &who, &id).await?;
    extend(&state, &actor(&who), &row, &e).await?;
    reload(&state, &id).await
}

async fn reload(state: &AppState, id: &str) -> AppResult<Json<Share>> {
    let row = db::find(&state.db_write, id).await?.ok_or_else(|| AppError::NotFound("no such share".into()))?;
    Ok(Json(db::load(&state.db_write, &row).await?))
}

pub async fn revoke(state: &AppState, actor: &str, row: &ShareRow) -> AppResult<()> {
    if !matches!(row.state.as_str(), "active" | "revoked") {
        return Err(AppError::Conflict(format!("a {} share cannot be revoked", row.state)));
    }
    end(state, &row.id, "revoked").await?;
    audit::record(
        &state.db_write,
        Event { actor, client_addr: "", action: "share.revoke", object_kind: "share", object_id: &row.id, result: "ok", detail: "" },
    )
    .await?;
    Ok(())
}

async fn api_revoke(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<Share>> {
    let row = managed(&state, &who, &id).await?;
    revoke(&state, &actor(&who), &row).await?;
    reload(&state, &id).await
}

pub async fn unlock(state: &AppState, actor: &str, row: &ShareRow) -> AppResult<()> {
    db::unlock(&state.db_write, &row.id).await?;
    audit::record(
        &state.db_write,
        Event { actor, client_addr: "", action: "share.unlock", object_kind: "share", object_id: &row.id, result: "ok", detail: "" },
    )
    .await?;
    Ok(())
}

async fn api_unlock(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<Share>> {
    let row = managed(&state, &who, &id).await?;
    unlock(&state, &actor(&who), &row).await?;
    reload(&state, &id).await
}

/// A new code (and a new password, when that is the factor) for an active share: the old code
/// and its sessions stop working. For a lost sheet.
pub async fn reissue(state: &AppState, actor: &str, row: &ShareRow) -> AppResult<IssuedShare> {
    if row.state != "active" {
        return Err(AppError::Conflict(format!("a {} share cannot get a new code", row.state)));
    }
    let code = AccessCode::generate();
    let password = if row.question_type == factor::PASSWORD { Some(code::one_time_password()) } else { None };
    let answer_hash = match &password {
        Some(p) => crate::accounts::password::hash(code::normalize_password(p)).await?,
        None => row.answer_hash.clone(),
    };
    db::set_code(&state.db_write, &row.id, &state.secret.code_hash(code.as_str()), &answer_hash).await?;
    db::end_sessions(&state.db_write, &row.id).await?;
    audit::record(
        &state.db_write,
        Event { actor, client_addr: "", action: "share.reissue", object_kind: "share", object_id: &row.id, result: "ok", detail: "" },
    )
    .await?;
    let fresh = db::find(&state.db_write, &row.id).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("share vanished")))?;
    Ok(IssuedShare {
        share: db::load(&state.db_write, &fresh).await?,
        redeem_url: redeem_url(state, &code),
        code: code.display(),
        password,
    })
}

async fn api_reissue(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<IssuedShare>> {
    let row = managed(&state, &who, &id).await?;
    Ok(Json(reissue(&state, &actor(&who), &row).await?))
}

/// The printable sheet: needs the code, which only its hash can confirm.
pub async fn sheet_for(state: &AppState, row: &ShareRow, req: &SheetRequest) -> AppResult<Vec<u8>> {
    let code = AccessCode::parse(&req.code).map_err(|e| AppError::BadRequest(e.to_string()))?;
    let stored = db::code_hash(&state.db, &row.id).await?;
    if stored.as_deref() != Some(state.secret.code_hash(code.as_str()).as_str()) {
        return Err(AppError::BadRequest("this is not the share's current code".into()));
    }
    let share = db::load(&state.db, row).await?;
    sheet::render(&sheet::SheetData {
        community_name: &share.community_name,
        code: &code.display(),
        redeem_url: &redeem_url(state, &code),
        redeem_page: &format!("{}/redeem", state.base_url),
        expires_at: row.expires_at,
        question_type: &row.question_type,
        password: req.password.as_deref(),
        studies: &share.studies,
    })
    .map_err(AppError::Internal)
}

async fn api_sheet(
    State(state): State<AppState>,
    who: Principal,
    Path(id): Path<String>,
    crate::error::ApiJson(req): crate::error::ApiJson<SheetRequest>,
) -> AppResult<Response> {
    let row = managed(&state, &who, &id).await?;
    let pdf = sheet_for(&state, &row, &req).await?;
    Ok(sheet::pdf_response(pdf))
}

async fn api_log(State(state): State<AppState>, who: Principal, Path(id): Path<String>) -> AppResult<Json<Vec<AuditEvent>>> {
    let row = managed(&state, &who, &id).await?;
    Ok(Json(audit::of_object(&state.db, "share", &row.id, 500).await?))
}
