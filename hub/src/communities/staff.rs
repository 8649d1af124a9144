//! A community's own administration: its admins manage members and their roles, approve the
//! referrers that may send to it (when it takes only approved senders), and configure it.
//! Hub admins may do all of this too (to set up a new community's first admin).

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use ferry_schemas::{Community, CommunitySettings, Member, NewMember, ReferrerApproval};
use serde::Deserialize;

use super::db;
use crate::access::Principal;
use crate::db::now_ms;
use crate::error::{ApiJson, AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/communities/{code}/members", get(api_members).put(api_put_member))
        .route("/api/v1/communities/{code}/members/{user_id}", delete(api_remove_member))
        .route("/api/v1/communities/{code}/referrers", get(api_referrers))
        .route("/api/v1/communities/{code}/referrers/{user_id}", put(api_decide_referrer))
        .route("/api/v1/communities/{code}/approval-request", post(api_request_approval))
}

pub use crate::access::{administered, community_id, community_id_in};

pub async fn members(state: &AppState, community_id: &str) -> AppResult<Vec<Member>> {
    Ok(db::members(&state.db, community_id).await?)
}

/// `ferry-hub admin add-member`: the same as the API, straight on the database.
pub async fn add_member_cli(pools: &crate::db::Pools, code: &str, email: &str, role: &str) -> AppResult<()> {
    let id = db::id_of(&pools.read, code).await?.ok_or_else(|| AppError::NotFound(format!("no community with the code {code}")))?;
    let role = ferry_schemas::Role::from_name(role).ok_or_else(|| AppError::BadRequest("role is admin or member".into()))?;
    let user = set_member(&pools.read, &pools.write, &id, &NewMember { email: email.into(), role }).await?;
    crate::audit::change(&pools.write, "cli", "community.member.set", "community", &id, &format!("user:{user} role:{role}")).await?;
    Ok(())
}

/// Adds a registered account to the community, or changes its role.
pub async fn put_member(state: &AppState, who: &Principal, community_id: &str, m: &NewMember) -> AppResult<()> {
    let user = set_member(&state.db, &state.db_write, community_id, m).await?;
    crate::audit::change(
        &state.db_write,
        &who.log_id(),
        "community.member.set",
        "community",
        community_id,
        &format!("user:{user} role:{}", m.role),
    )
    .await?;
    Ok(())
}

/// Sets the membership; returns the account's id.
async fn set_member(db: &crate::db::Db, db_write: &crate::db::Db, community_id: &str, m: &NewMember) -> AppResult<String> {
    let email = crate::accounts::normalize_email(&m.email)?;
    let user = crate::accounts::db::user_id_by_email(db, &email)
        .await?
        .ok_or_else(|| AppError::NotFound("no account has this email address; ask the person to register first".into()))?;
    db::set_member(db_write, community_id, &user, m.role.as_str(), now_ms()).await?;
    tracing::info!(community = %community_id, user = %user, role = %m.role, "membership set");
    Ok(user)
}

pub async fn remove_member(state: &AppState, who: &Principal, community_id: &str, user_id: &str) -> AppResult<()> {
    let admins = db::other_admins(&state.db, community_id, user_id).await?;
    let is_admin = crate::access::community_role(&state.db, community_id, user_id).await?.as_deref() == Some("admin");
    if is_admin && admins == 0 {
        return Err(AppError::Conflict("the community's last admin cannot be removed".into()));
    }
    if !db::remove_member(&state.db_write, community_id, user_id).await? {
        return Err(AppError::NotFound("no such member".into()));
    }
    crate::audit::change(&state.db_write, &who.log_id(), "community.member.remove", "community", community_id, &format!("user:{user_id}"))
        .await?;
    Ok(())
}

pub async fn referrers(state: &AppState, community_id: &str) -> AppResult<Vec<ReferrerApproval>> {
    Ok(db::referrers(&state.db, community_id).await?)
}

pub async fn request_approval(state: &AppState, who: &Principal, code: &str) -> AppResult<String> {
    let user = who.require_user()?;
    let id = community_id(state, code).await?;
    db::request_approval(&state.db_write, &id, &user.id, now_ms()).await?;
    Ok(db::approval_status(&state.db_write, &id, &user.id).await?)
}

pub async fn decide_referrer(state: &AppState, who: &Principal, community_id: &str, user_id: &str, status: &str) -> AppResult<()> {
    if !matches!(status, "approved" | "rejected") {
        return Err(AppError::BadRequest("status is approved or rejected".into()));
    }
    let actor = who.user().map(|u| u.id.clone());
    // An admin may also approve a referrer who has not asked yet.
    if !db::user_exists(&state.db, user_id).await? {
        return Err(AppError::NotFound("no such account".into()));
    }
    db::decide_referrer(&state.db_write, community_id, user_id, status, actor, now_ms()).await?;
    tracing::info!(community = %community_id, user = %user_id, status, "referrer decision");
    crate::audit::change(
        &state.db_write,
        &who.log_id(),
        &format!("community.referrer.{status}"),
        "community",
        community_id,
        &format!("user:{user_id}"),
    )
    .await?;
    Ok(())
}

pub async fn configure(state: &AppState, who: &Principal, community_id: &str, s: &CommunitySettings) -> AppResult<()> {
    let db::Settings { code, name, city, departments } = db::settings(&state.db, community_id).await?;
    let mut departments: Vec<String> = serde_json::from_str(&departments).unwrap_or_default();
    if let Some(d) = &s.departments {
        departments = d.iter().map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
    }
    if let Some(days) = s.default_share_days
        && !(1..=3650).contains(&days)
    {
        return Err(AppError::BadRequest("default_share_days is 1 to 3650".into()));
    }
    use db::Value;
    let mut sets = vec![
        ("departments", Value::Text(serde_json::to_string(&departments).unwrap_or_else(|_| "[]".into()))),
        ("search_text", Value::Text(super::search_text_of(&name, &city, &departments, &code))),
        ("updated_at", Value::Int(now_ms())),
    ];
    for (column, value) in [
        ("requires_approval", s.requires_approval.map(i64::from)),
        ("accepts_inbound", s.accepts_inbound.map(i64::from)),
        ("default_share_days", s.default_share_days.map(i64::from)),
    ] {
        if let Some(v) = value {
            sets.push((column, Value::Int(v)));
        }
    }
    for (column, value) in [("contact", &s.contact), ("address", &s.address)] {
        if let Some(v) = value {
            sets.push((column, Value::Text(v.trim().to_string())));
        }
    }
    db::update(&state.db_write, community_id, sets).await?;
    tracing::info!(community = %community_id, "community configured");
    // Which settings changed (their values are the community's public data, not patients').
    let changed: Vec<String> = serde_json::to_value(s)
        .ok()
        .and_then(|v| v.as_object().cloned())
        .map(|o| o.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, _)| k).collect())
        .unwrap_or_default();
    crate::audit::change(&state.db_write, &who.log_id(), "community.configure", "community", community_id, &changed.join(",")).await?;
    Ok(())
}

// ---- JSON API ----

async fn api_members(State(state): State<AppState>, who: Principal, Path(code): Path<String>) -> AppResult<Json<Vec<Member>>> {
    let id = administered(&state, &who, &code).await?;
    Ok(Json(members(&state, &id).await?))
}

async fn api_put_member(
    State(state): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    ApiJson(m): ApiJson<NewMember>,
) -> AppResult<Json<Vec<Member>>> {
    let id = administered(&state, &who, &code).await?;
    put_member(&state, &who, &id, &m).await?;
    Ok(Json(members(&state, &id).await?))
}

async fn api_remove_member(
    State(state): State<AppState>,
    who: Principal,
    Path((code, user)): Path<(String, String)>,
) -> AppResult<StatusCode> {
    let id = administered(&state, &who, &code).await?;
    remove_member(&state, &who, &id, &user).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_referrers(State(state): State<AppState>, who: Principal, Path(code): Path<String>) -> AppResult<Json<Vec<ReferrerApproval>>> {
    let id = administered(&state, &who, &code).await?;
    Ok(Json(referrers(&state, &id).await?))
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
}

async fn api_decide_referrer(
    State(state): State<AppState>,
    who: Principal,
    Path((code, user)): Path<(String, String)>,
    ApiJson(b): ApiJson<StatusBody>,
) -> AppResult<StatusCode> {
    let id = administered(&state, &who, &code).await?;
    decide_referrer(&state, &who, &id, &user, &b.status).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn api_request_approval(State(state): State<AppState>, who: Principal, Path(code): Path<String>) -> AppResult<Response> {
    let status = request_approval(&state, &who, &code).await?;
    Ok((StatusCode::ACCEPTED, Json(serde_json::json!({ "status": status }))).into_response())
}

pub async fn api_configure(
    State(state): State<AppState>,
    who: Principal,
    Path(code): Path<String>,
    ApiJson(s): ApiJson<CommunitySettings>,
) -> AppResult<Json<Community>> {
    let id = administered(&state, &who, &code).await?;
    configure(&state, &who, &id, &s).await?;
    Ok(Json(super::find(&state.db, &code).await?.ok_or_else(|| AppError::NotFound("no such community".into()))?))
}
