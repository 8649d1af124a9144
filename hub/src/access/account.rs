//! The signed-in person as pages and the API show them: the account and its memberships.

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::db::Db;

pub const ACCOUNT_COLUMNS: &str = "id, email, email_verified, name, practice, address, phone, is_hub_admin";

pub fn account_from_row(r: &AnyRow) -> Result<ferry_schemas::Account, sqlx::Error> {
    Ok(ferry_schemas::Account {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        email_verified: r.try_get::<i64, _>(2)? != 0,
        name: r.try_get(3)?,
        practice: r.try_get(4)?,
        address: r.try_get(5)?,
        phone: r.try_get(6)?,
        hub_admin: r.try_get::<i64, _>(7)? != 0,
        memberships: vec![],
    })
}

pub async fn account(db: &Db, user_id: &str) -> Result<Option<ferry_schemas::Account>, sqlx::Error> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT {ACCOUNT_COLUMNS} FROM users WHERE id = $1")))
        .bind(user_id)
        .fetch_optional(db)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let mut account = account_from_row(&row)?;
    account.memberships = memberships(db, user_id).await?;
    Ok(Some(account))
}

pub async fn memberships(db: &Db, user_id: &str) -> Result<Vec<ferry_schemas::Membership>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT c.code, c.name, m.role FROM memberships m JOIN communities c ON c.id = m.community_id \
         WHERE m.user_id = $1 ORDER BY c.name",
    )
    .bind(user_id)
    .fetch_all(db)
    .await?;
    rows.iter()
        .map(|r| Ok(ferry_schemas::Membership { community: r.try_get(0)?, community_name: r.try_get(1)?, role: r.try_get(2)? }))
        .collect()
}
