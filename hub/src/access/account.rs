//! The signed-in person as pages and the API show them: the account and its memberships.

use crate::db::Db;

/// An account as stored in `users`.
#[derive(sqlx::FromRow)]
struct AccountRow {
    id: String,
    email: Option<String>,
    email_verified: i64,
    name: String,
    practice: String,
    address: String,
    phone: String,
    is_hub_admin: i64,
}

pub async fn account(db: &Db, user_id: &str) -> Result<Option<ferry_schemas::Account>, sqlx::Error> {
    let row: Option<AccountRow> =
        sqlx::query_as("SELECT id, email, email_verified, name, practice, address, phone, is_hub_admin FROM users WHERE id = $1")
            .bind(user_id)
            .fetch_optional(db)
            .await?;
    let Some(r) = row else { return Ok(None) };
    Ok(Some(ferry_schemas::Account {
        id: r.id,
        email: r.email,
        email_verified: r.email_verified != 0,
        name: r.name,
        practice: r.practice,
        address: r.address,
        phone: r.phone,
        hub_admin: r.is_hub_admin != 0,
        memberships: memberships(db, user_id).await?,
    }))
}

#[derive(sqlx::FromRow)]
struct MembershipRow {
    community: String,
    community_name: String,
    role: String,
}

pub async fn memberships(db: &Db, user_id: &str) -> Result<Vec<ferry_schemas::Membership>, sqlx::Error> {
    let rows: Vec<MembershipRow> = sqlx::query_as(
        "SELECT c.code AS community, c.name AS community_name, m.role FROM memberships m JOIN communities c ON c.id = m.community_id \
         WHERE m.user_id = $1 ORDER BY c.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            // A role the contract does not know grants nothing.
            let role = ferry_schemas::Role::from_name(&r.role)?;
            Some(ferry_schemas::Membership { community: r.community, community_name: r.community_name, role })
        })
        .collect())
}
