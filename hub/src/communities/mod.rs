//! Communities: the institutions studies are sent to, each with a short public code (`bM1X`),
//! and the directory referrers search. Hub admins create them (API and `ferry-hub admin
//! create-community`).

pub mod connectors;
pub mod db;
pub mod logo;
pub mod pages;
pub mod search;
pub mod staff;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use ferry_schemas::{Community, NewCommunity};
use rand::Rng;

use crate::access::Principal;
use crate::db::{Db, is_unique_violation, now_ms};
use crate::dicomweb::qido::Params;
use crate::error::{ApiJson, AppError, AppResult};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/communities", get(search_directory).post(create_community))
        .route("/api/v1/communities/{code}", get(get_community).patch(staff::api_configure))
        .merge(staff::router())
        .merge(logo::router())
        .merge(connectors::router())
}

/// Unambiguous characters for generated codes (no 0/O/o, 1/l/I).
const CODE_ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
const MAX_RESULTS: usize = 200;

fn valid_code(code: &str) -> bool {
    (3..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn generate_code() -> String {
    let mut rng = rand::rng();
    (0..4).map(|_| CODE_ALPHABET[rng.random_range(0..CODE_ALPHABET.len())] as char).collect()
}

fn search_text(c: &NewCommunity, code: &str) -> String {
    search_text_of(&c.name, &c.city, &c.departments, code)
}

pub fn search_text_of(name: &str, city: &str, departments: &[String], code: &str) -> String {
    search::fold(&format!("{name} {city} {} {code}", departments.join(" ")))
}

/// Creates a community; a code is generated (and retried on collision) unless one is given.
pub async fn create(db: &Db, actor: &str, new: &NewCommunity) -> AppResult<Community> {
    let name = new.name.trim();
    if name.is_empty() {
        return Err(AppError::BadRequest("a community needs a name".into()));
    }
    if new.code.as_deref().is_some_and(|c| !valid_code(c)) {
        return Err(AppError::BadRequest("a community code has 3 to 12 letters or digits".into()));
    }
    for _ in 0..20 {
        let code = new.code.clone().unwrap_or_else(generate_code);
        let id = uuid::Uuid::new_v4().to_string();
        let row = db::NewRow {
            id: &id,
            code: &code,
            name,
            city: new.city.trim(),
            address: new.address.trim(),
            departments: &serde_json::to_string(&new.departments).unwrap_or_else(|_| "[]".into()),
            contact: new.contact.trim(),
            accepts_inbound: new.accepts_inbound.unwrap_or(true),
            search_text: &search_text(new, &code),
            created_at: now_ms(),
        };
        let result = db::insert(db, &row).await;
        match result {
            Ok(_) => {
                let c = find(db, &code).await?.ok_or_else(|| AppError::Internal(anyhow::anyhow!("community vanished")))?;
                crate::audit::change(db, actor, "community.create", "community", &id, &format!("code:{code}")).await?;
                return Ok(c);
            }
            Err(e) if is_unique_violation(&e) && new.code.is_some() => {
                return Err(AppError::Conflict(format!("the community code {code} is taken")));
            }
            Err(e) if is_unique_violation(&e) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(AppError::Unavailable("could not find a free community code".into()))
}

pub async fn find(db: &Db, code: &str) -> AppResult<Option<Community>> {
    Ok(db::find(db, code).await?)
}

/// The folded texts of every community, for scoring in memory. Reloaded when the table's
/// stamp (row count, newest creation) differs, so several hubs on one database stay current.
#[derive(Clone, Default)]
pub struct DirectoryCache {
    inner: std::sync::Arc<tokio::sync::RwLock<Option<Snapshot>>>,
}

/// The directory as of one table stamp (row count, newest creation time).
struct Snapshot {
    stamp: db::Stamp,
    entries: std::sync::Arc<Vec<Entry>>,
}

#[derive(sqlx::FromRow)]
pub struct Entry {
    code: String,
    name: String,
    folded: String,
}

impl DirectoryCache {
    async fn entries(&self, db: &Db) -> AppResult<std::sync::Arc<Vec<Entry>>> {
        let stamp = db::stamp(db).await?;
        if let Some(snap) = self.inner.read().await.as_ref().filter(|s| s.stamp == stamp) {
            return Ok(snap.entries.clone());
        }
        let entries = std::sync::Arc::new(db::directory(db).await?);
        *self.inner.write().await = Some(Snapshot { stamp, entries: entries.clone() });
        Ok(entries)
    }
}

/// Searches the directory: every query word must match (prefix, umlaut-folded, small typos);
/// best matches first. An exact code match comes first of all.
pub async fn search(state: &AppState, q: &str, limit: usize) -> AppResult<Vec<Community>> {
    let db = &state.db;
    // Score over the folded texts only; load the full rows of the winners afterwards.
    let entries = state.feature::<DirectoryCache>()?.entries(db).await?;
    let query = search::Query::new(q);
    let mut scored: Vec<(u32, String, String)> = Vec::new();
    for e in entries.iter() {
        let score = if e.code == q.trim() {
            Some(u32::MAX)
        } else if query.is_empty() {
            Some(0)
        } else {
            query.score(&e.folded)
        };
        if let Some(s) = score {
            scored.push((s, e.name.clone(), e.code.clone()));
        }
    }
    scored.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.truncate(limit);
    if scored.is_empty() {
        return Ok(Vec::new());
    }
    let codes: Vec<String> = scored.iter().map(|(_, _, code)| code.clone()).collect();
    let mut found: std::collections::HashMap<String, Community> =
        db::with_codes(db, &codes).await?.into_iter().map(|c| (c.code.clone(), c)).collect();
    Ok(scored.into_iter().filter_map(|(_, _, code)| found.remove(&code)).collect())
}

async fn search_directory(State(state): State<AppState>, _who: Principal, Params(p): Params) -> AppResult<Json<Vec<Community>>> {
    let mut q = String::new();
    let mut limit = 50usize;
    for (k, v) in p {
        match k.as_str() {
            "q" => q = v,
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_RESULTS).contains(l))
                    .ok_or_else(|| AppError::BadRequest(format!("limit must be 1 to {MAX_RESULTS}")))?;
            }
            other => return Err(AppError::BadRequest(format!("unknown query parameter {other}"))),
        }
    }
    Ok(Json(search(&state, &q, limit).await?))
}

async fn get_community(State(state): State<AppState>, _who: Principal, Path(code): Path<String>) -> AppResult<Json<Community>> {
    find(&state.db, &code).await?.map(Json).ok_or_else(|| AppError::NotFound("no such community".into()))
}

async fn create_community(State(state): State<AppState>, who: Principal, ApiJson(new): ApiJson<NewCommunity>) -> AppResult<Response> {
    if !who.is_admin() {
        return Err(AppError::Forbidden);
    }
    let c = create(&state.db_write, &who.log_id(), &new).await?;
    tracing::info!(code = %c.code, "community created");
    Ok((StatusCode::CREATED, Json(c)).into_response())
}
