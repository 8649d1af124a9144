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
use sqlx::Row;

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
    let rows = sqlx::query(
        "SELECT u.id, u.email, u.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.community_id = $1 ORDER BY m.role, u.name",
    )
    .bind(community_id)
    .fetch_all(&state.db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| Ok(Member { user_id: r.try_get(0)?, email: r.try_get(1)?, name: r.try_get(2)?, role: r.try_get(3)? }))
        .collect::<Result<_, sqlx::Error>>()?)
}

/// `ferry-hub admin add-member`: the same as the API, straight on the database.
pub async fn add_member_cli(pools: &crate::db::Pools, code: &str, email: &str, role: &str) -> AppResult<()> {
    let id: String = sqlx::query("SELECT id FROM communities WHERE code = $1")
        .bind(code)
        .fetch_optional(&pools.read)
        .await?
        .map(|r| r.try_get(0))
        .transpose()?
        .ok_or_else(|| AppError::NotFound(format!("no community with the code {code}")))?;
    let user = set_member(&pools.read, &pools.write, &id, &NewMember { email: email.into(), role: role.into() }).await?;
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
    if !matches!(m.role.as_str(), "admin" | "member") {
        return Err(AppError::BadRequest("role is admin or member".into()));
    }
    let email = crate::accounts::normalize_email(&m.email)?;
    let user = crate::accounts::db::user_id_by_email(db, &email)
        .await?
        .ok_or_else(|| AppError::NotFound("no account has this email address; ask the person to register first".into()))?;
    sqlx::query(
        "INSERT INTO memberships (community_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (community_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(community_id)
    .bind(&user)
    .bind(&m.role)
    .bind(now_ms())
    .execute(db_write)
    .await?;
    tracing::info!(community = %community_id, user = %user, role = %m.role, "membership set");
    Ok(user)
}

pub async fn remove_member(state: &AppState, who: &Principal, community_id: &str, user_id: &str) -> AppResult<()> {
    let admins: i64 = sqlx::query("SELECT COUNT(*) FROM memberships WHERE community_id = $1 AND role = 'admin' AND user_id <> $2")
        .bind(community_id)
        .bind(user_id)
        .fetch_one(&state.db)
        .await?
        .try_get(0)?;
    let is_admin = crate::access::community_role(&state.db, community_id, user_id).await?.as_deref() == Some("admin");
    if is_admin && admins == 0 {
        return Err(AppError::Conflict("the community's last admin cannot be removed".into()));
    }
    let done = sqlx::query("DELETE FROM memberships WHERE community_id = $1 AND user_id = $2")
        .bind(community_id)
        .bind(user_id)
        .execute(&state.db_write)
        .await?;
    if done.rows_affected() == 0 {
        return Err(AppError::NotFound("no such member".into()));
    }
    crate::audit::change(&state.db_write, &who.log_id(), "community.member.remove", "community", community_id, &format!("user:{user_id}"))
        .await?;
    Ok(())
}

pub async fn referrers(state: &AppState, community_id: &str) -> AppResult<Vec<ReferrerApproval>> {
    let rows = sqlx::query(
        "SELECT u.id, u.name, u.email, u.practice, u.address, u.phone, a.status FROM referrer_approvals a \
         JOIN users u ON u.id = a.user_id WHERE a.community_id = $1 ORDER BY a.status, a.created_at",
    )
    .bind(community_id)
    .fetch_all(&state.db)
    .await?;
    Ok(rows
        .iter()
        .map(|r| {
            Ok(ReferrerApproval {
                user_id: r.try_get(0)?,
                name: r.try_get(1)?,
                email: r.try_get(2)?,
                practice: r.try_get(3)?,
                address: r.try_get(4)?,
                phone: r.try_get(5)?,
                status: r.try_get(6)?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()?)
}

pub async fn request_approval(state: &AppState, who: &Principal, code: &str) -> AppResult<String> {
    let user = who.require_user()?;
    let id = community_id(state, code).await?;
    sqlx::query(
        "INSERT INTO referrer_approvals (community_id, user_id, status, created_at) VALUES ($1, $2, 'pending', $3) \
         ON CONFLICT (community_id, user_id) DO NOTHING",
    )
    .bind(&id)
    .bind(&user.id)
    .bind(now_ms())
    .execute(&state.db_write)
    .await?;
    let status: String = sqlx::query("SELECT status FROM referrer_approvals WHERE community_id = $1 AND user_id = $2")
        .bind(&id)
        .bind(&user.id)
        .fetch_one(&state.db_write)
        .await?
        .try_get(0)?;
    Ok(status)
}

pub async fn decide_referrer(state: &AppState, who: &Principal, community_id: &str, user_id: &str, status: &str) -> AppResult<()> {
    if !matches!(status, "approved" | "rejected") {
        return Err(AppError::BadRequest("status is approved or rejected".into()));
    }
    let actor = who.user().map(|u| u.id.clone());
    // An admin may also approve a referrer who has not asked yet.
    let exists = sqlx::query("SELECT 1 FROM users WHERE id = $1").bind(user_id).fetch_optional(&state.db).await?.is_some();
    if !exists {
        return Err(AppError::NotFound("no such account".into()));
    }
    let now = now_ms();
    sqlx::query(
        "INSERT INTO referrer_approvals (community_id, user_id, status, decided_by, created_at, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (community_id, user_id) \
         DO UPDATE SET status = excluded.status, decided_by = excluded.decided_by, decided_at = excluded.decided_at",
    )
    .bind(community_id)
    .bind(user_id)
    .bind(status)
    .bind(actor)
    .bind(now)
    .execute(&state.db_write)
    .await?;
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
    let row =
        sqlx::query("SELECT code, name, city, departments FROM communities WHERE id = $1").bind(community_id).fetch_one(&state.db).await?;
    let (code, name, city): (String, String, String) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let mut departments: Vec<String> = serde_json::from_str(&row.try_get::<String, _>(3)?).unwrap_or_default();
    if let Some(d) = &s.departments {
        departments = d.iter().map(|x| x.trim().to_string()).filter(|x| !x.is_empty()).collect();
    }
    if let Some(days) = s.default_share_days
        && !(1..=3650).contains(&days)
    {
        return Err(AppError::BadRequest("default_share_days is 1 to 3650".into()));
    }
    enum Val {
        Text(String),
        Int(i64),
    }
    let mut sets = Vec::new();
    let mut vals = vec![Val::Text(community_id.to_string())];
    let mut set = |column: &str, v: Val, vals: &mut Vec<Val>| {
        vals.push(v);
        sets.push(format!("{column} = ${}", vals.len()));
    };
    set("departments", Val::Text(serde_json::to_string(&departments).unwrap_or_else(|_| "[]".into())), &mut vals);
    set("search_text", Val::Text(super::search_text_of(&name, &city, &departments, &code)), &mut vals);
    set("updated_at", Val::Int(now_ms()), &mut vals);
    for (column, value) in [
        ("requires_approval", s.requires_approval.map(i64::from)),
        ("accepts_inbound", s.accepts_inbound.map(i64::from)),
        ("default_share_days", s.default_share_days.map(i64::from)),
    ] {
        if let Some(v) = value {
            set(column, Val::Int(v), &mut vals);
        }
    }
    for (column, value) in [("contact", &s.contact), ("address", &s.address)] {
        if let Some(v) = value {
            set(column, Val::Text(v.trim().to_string()), &mut vals);
        }
    }
    let sql = format!("UPDATE communities SET {} WHERE id = $1", sets.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for v in vals {
        q = match v {
            Val::Text(t) => q.bind(t),
            Val::Int(i) => q.bind(i),
        };
    }
    q.execute(&state.db_write).await?;
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
