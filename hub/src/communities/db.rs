//! SQL of the communities feature: the directory, members, referrer approvals, settings and
//! logos.

use ferry_schemas::{Community, Member, ReferrerApproval};

use super::Entry;
use crate::db::Db;

/// The columns of a [`CommunityRow`] in `communities`.
const COLUMNS: &str = "code, name, city, address, departments, contact, accepts_inbound, requires_approval, default_share_days, \
     (SELECT COUNT(*) FROM community_logos l WHERE l.community_id = communities.id) AS logos";

/// A community as stored ([`COLUMNS`]).
#[derive(sqlx::FromRow)]
struct CommunityRow {
    code: String,
    name: String,
    city: String,
    address: String,
    /// A JSON array.
    departments: String,
    contact: String,
    accepts_inbound: i64,
    requires_approval: i64,
    default_share_days: i64,
    logos: i64,
}

impl From<CommunityRow> for Community {
    fn from(r: CommunityRow) -> Self {
        Community {
            code: r.code,
            name: r.name,
            city: r.city,
            address: r.address,
            departments: serde_json::from_str(&r.departments).unwrap_or_default(),
            contact: r.contact,
            accepts_inbound: r.accepts_inbound != 0,
            requires_approval: r.requires_approval != 0,
            default_share_days: r.default_share_days as u32,
            has_logo: r.logos != 0,
        }
    }
}

/// A new community's row.
pub struct NewRow<'a> {
    pub id: &'a str,
    pub code: &'a str,
    pub name: &'a str,
    pub city: &'a str,
    pub address: &'a str,
    /// A JSON array.
    pub departments: &'a str,
    pub contact: &'a str,
    pub accepts_inbound: bool,
    pub search_text: &'a str,
    pub created_at: i64,
}

/// Inserts a community; fails with a unique violation when the code is taken.
pub async fn insert(db: &Db, c: &NewRow<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO communities (id, code, name, city, address, departments, contact, \
         accepts_inbound, search_text, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(c.id)
    .bind(c.code)
    .bind(c.name)
    .bind(c.city)
    .bind(c.address)
    .bind(c.departments)
    .bind(c.contact)
    .bind(i64::from(c.accepts_inbound))
    .bind(c.search_text)
    .bind(c.created_at)
    .execute(db)
    .await?;
    Ok(())
}

pub async fn find(db: &Db, code: &str) -> Result<Option<Community>, sqlx::Error> {
    let row: Option<CommunityRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!("SELECT {COLUMNS} FROM communities WHERE code = $1")))
        .bind(code)
        .fetch_optional(db)
        .await?;
    Ok(row.map(Community::from))
}

/// The communities with these codes, in no particular order.
pub async fn with_codes(db: &Db, codes: &[String]) -> Result<Vec<Community>, sqlx::Error> {
    let placeholders: Vec<String> = (1..=codes.len()).map(|i| format!("${i}")).collect();
    let sql = format!("SELECT {COLUMNS} FROM communities WHERE code IN ({})", placeholders.join(", "));
    let mut query = sqlx::query_as::<_, CommunityRow>(sqlx::AssertSqlSafe(sql));
    for code in codes {
        query = query.bind(code.clone());
    }
    Ok(query.fetch_all(db).await?.into_iter().map(Community::from).collect())
}

/// The id of the community with this code.
pub async fn id_of(db: &Db, code: &str) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM communities WHERE code = $1").bind(code).fetch_optional(db).await
}

/// The directory table's stamp: row count, newest creation, newest change.
#[derive(sqlx::FromRow, PartialEq, Eq, Clone, Copy)]
pub struct Stamp {
    total: i64,
    created: i64,
    updated: i64,
}

pub async fn stamp(db: &Db) -> Result<Stamp, sqlx::Error> {
    sqlx::query_as(
        "SELECT COUNT(*) AS total, COALESCE(MAX(created_at), 0) AS created, COALESCE(MAX(updated_at), 0) AS updated FROM communities",
    )
    .fetch_one(db)
    .await
}

/// Every community's code, name and folded search text.
pub async fn directory(db: &Db) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as("SELECT code, name, search_text AS folded FROM communities").fetch_all(db).await
}

/// Marks the community changed, so directory caches reload it.
pub async fn touch(db_write: &Db, id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE communities SET updated_at = $1 WHERE id = $2").bind(now).bind(id).execute(db_write).await?;
    Ok(())
}

// ---- settings ----

/// What a change of settings starts from.
#[derive(sqlx::FromRow)]
pub struct Settings {
    pub code: String,
    pub name: String,
    pub city: String,
    /// A JSON array.
    pub departments: String,
}

pub async fn settings(db: &Db, community_id: &str) -> Result<Settings, sqlx::Error> {
    sqlx::query_as("SELECT code, name, city, departments FROM communities WHERE id = $1").bind(community_id).fetch_one(db).await
}

/// A value to set.
pub enum Value {
    Text(String),
    Int(i64),
}

/// Sets these columns of a community.
pub async fn update(db_write: &Db, community_id: &str, sets: Vec<(&str, Value)>) -> Result<(), sqlx::Error> {
    let assignments: Vec<String> = sets.iter().enumerate().map(|(i, (column, _))| format!("{column} = ${}", i + 2)).collect();
    let sql = format!("UPDATE communities SET {} WHERE id = $1", assignments.join(", "));
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(community_id.to_string());
    for (_, v) in sets {
        q = match v {
            Value::Text(t) => q.bind(t),
            Value::Int(i) => q.bind(i),
        };
    }
    q.execute(db_write).await?;
    Ok(())
}

// ---- members ----

#[derive(sqlx::FromRow)]
struct MemberRow {
    user_id: String,
    email: Option<String>,
    name: String,
    role: String,
}

/// A community's members, admins first, by name.
pub async fn members(db: &Db, community_id: &str) -> Result<Vec<Member>, sqlx::Error> {
    let rows: Vec<MemberRow> = sqlx::query_as(
        "SELECT u.id AS user_id, u.email, u.name, m.role FROM memberships m JOIN users u ON u.id = m.user_id \
         WHERE m.community_id = $1 ORDER BY m.role, u.name",
    )
    .bind(community_id)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let role =
                ferry_schemas::Role::from_name(&r.role).ok_or_else(|| sqlx::Error::Decode(format!("unknown role {:?}", r.role).into()))?;
            Ok(Member { user_id: r.user_id, email: r.email, name: r.name, role })
        })
        .collect()
}

/// Adds a member or changes the role.
pub async fn set_member(db_write: &Db, community_id: &str, user_id: &str, role: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO memberships (community_id, user_id, role, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (community_id, user_id) DO UPDATE SET role = excluded.role",
    )
    .bind(community_id)
    .bind(user_id)
    .bind(role)
    .bind(now)
    .execute(db_write)
    .await?;
    Ok(())
}

/// How many admins the community has besides `user_id`.
pub async fn other_admins(db: &Db, community_id: &str, user_id: &str) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM memberships WHERE community_id = $1 AND role = 'admin' AND user_id <> $2")
        .bind(community_id)
        .bind(user_id)
        .fetch_one(db)
        .await
}

/// Ends a membership; false when there was none.
pub async fn remove_member(db_write: &Db, community_id: &str, user_id: &str) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("DELETE FROM memberships WHERE community_id = $1 AND user_id = $2")
        .bind(community_id)
        .bind(user_id)
        .execute(db_write)
        .await?;
    Ok(done.rows_affected() != 0)
}

// ---- referrers ----

#[derive(sqlx::FromRow)]
struct ReferrerRow {
    user_id: String,
    name: String,
    email: Option<String>,
    practice: String,
    address: String,
    phone: String,
    status: String,
}

/// The referrers who asked to send to the community (or were approved), pending first.
pub async fn referrers(db: &Db, community_id: &str) -> Result<Vec<ReferrerApproval>, sqlx::Error> {
    let rows: Vec<ReferrerRow> = sqlx::query_as(
        "SELECT u.id AS user_id, u.name, u.email, u.practice, u.address, u.phone, a.status FROM referrer_approvals a \
         JOIN users u ON u.id = a.user_id WHERE a.community_id = $1 ORDER BY a.status, a.created_at",
    )
    .bind(community_id)
    .fetch_all(db)
    .await?;
    rows.into_iter()
        .map(|r| {
            let status = ferry_schemas::ApprovalStatus::from_name(&r.status)
                .ok_or_else(|| sqlx::Error::Decode(format!("unknown approval status {:?}", r.status).into()))?;
            Ok(ReferrerApproval {
                user_id: r.user_id,
                name: r.name,
                email: r.email,
                practice: r.practice,
                address: r.address,
                phone: r.phone,
                status,
            })
        })
        .collect()
}

/// A referrer's request to send (kept as it is if there is one already).
pub async fn request_approval(db_write: &Db, community_id: &str, user_id: &str, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO referrer_approvals (community_id, user_id, status, created_at) VALUES ($1, $2, 'pending', $3) \
         ON CONFLICT (community_id, user_id) DO NOTHING",
    )
    .bind(community_id)
    .bind(user_id)
    .bind(now)
    .execute(db_write)
    .await?;
    Ok(())
}

/// `pending`, `approved` or `rejected`.
pub async fn approval_status(db: &Db, community_id: &str, user_id: &str) -> Result<String, sqlx::Error> {
    sqlx::query_scalar("SELECT status FROM referrer_approvals WHERE community_id = $1 AND user_id = $2")
        .bind(community_id)
        .bind(user_id)
        .fetch_one(db)
        .await
}

pub async fn user_exists(db: &Db, user_id: &str) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("SELECT 1 FROM users WHERE id = $1").bind(user_id).fetch_optional(db).await?.is_some())
}

/// An admin's decision on a referrer (`decided_by`: the admin's account, none for the operator).
pub async fn decide_referrer(
    db_write: &Db,
    community_id: &str,
    user_id: &str,
    status: &str,
    decided_by: Option<String>,
    now: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO referrer_approvals (community_id, user_id, status, decided_by, created_at, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $5) ON CONFLICT (community_id, user_id) \
         DO UPDATE SET status = excluded.status, decided_by = excluded.decided_by, decided_at = excluded.decided_at",
    )
    .bind(community_id)
    .bind(user_id)
    .bind(status)
    .bind(decided_by)
    .bind(now)
    .execute(db_write)
    .await?;
    Ok(())
}

// ---- logos ----

/// A stored logo: its media type and the image, base64.
#[derive(sqlx::FromRow)]
pub struct Logo {
    pub content_type: String,
    pub data: String,
}

pub async fn logo(db: &Db, code: &str) -> Result<Option<Logo>, sqlx::Error> {
    sqlx::query_as("SELECT l.content_type, l.data FROM community_logos l JOIN communities c ON c.id = l.community_id WHERE c.code = $1")
        .bind(code)
        .fetch_optional(db)
        .await
}

pub async fn store_logo(db_write: &Db, community_id: &str, content_type: &str, data: String, now: i64) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO community_logos (community_id, content_type, data, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (community_id) DO UPDATE SET content_type = excluded.content_type, data = excluded.data, updated_at = excluded.updated_at",
    )
    .bind(community_id)
    .bind(content_type)
    .bind(data)
    .bind(now)
    .execute(db_write)
    .await?;
    Ok(())
}

pub async fn delete_logo(db_write: &Db, community_id: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM community_logos WHERE community_id = $1").bind(community_id).execute(db_write).await?;
    Ok(())
}
