//! The pending-blob protocol, in one place. A blob is listed in `pending_blobs` before any of its
//! bytes reach the store, and the listing is removed in the same transaction as the row that
//! names the blob (an instance, a report). Blobs that are to go are listed again, as due at once,
//! in the transaction that removes their rows. Whatever stays listed longer than the sweep age is
//! an orphan and the sweeper (`sweep.rs`) deletes it. So a crash at any point leaves no blob
//! behind that nothing names.

use crate::db::{Db, now_ms};

type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// Lists `paths` as pending (`listed = true`) or settles them (`false`), in one statement.
pub async fn mark_all(tx: &mut Tx, listed: bool, paths: &[&str]) -> Result<(), sqlx::Error> {
    if paths.is_empty() {
        return Ok(());
    }
    let sql = if listed {
        let values: Vec<String> = (0..paths.len()).map(|i| format!("(${}, ${})", 2 * i + 1, 2 * i + 2)).collect();
        format!("INSERT INTO pending_blobs (blob_path, created_at) VALUES {}", values.join(", "))
    } else {
        let list: Vec<String> = (1..=paths.len()).map(|i| format!("${i}")).collect();
        format!("DELETE FROM pending_blobs WHERE blob_path IN ({})", list.join(", "))
    };
    let now = now_ms();
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for p in paths {
        q = q.bind(p.to_string());
        if listed {
            q = q.bind(now);
        }
    }
    q.execute(&mut **tx).await?;
    Ok(())
}

/// Lists one blob as pending; durable when this returns.
pub async fn list(db: &Db, path: &str) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO pending_blobs (blob_path, created_at) VALUES ($1, $2)").bind(path).bind(now_ms()).execute(db).await?;
    Ok(())
}

/// The blob is named by a row written in `tx`: no longer pending.
pub async fn settle(tx: &mut Tx, path: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pending_blobs WHERE blob_path = $1").bind(path).execute(&mut **tx).await?;
    Ok(())
}

/// The blob is gone (deleted from the store): forget it.
pub async fn forget(db: &Db, path: &str) -> Result<(), sqlx::Error> {
    sqlx::query("DELETE FROM pending_blobs WHERE blob_path = $1").bind(path).execute(db).await?;
    Ok(())
}

/// Lists blobs whose rows `tx` removes, as due at once: the sweeper deletes them if the hub dies
/// before the caller does.
pub async fn list_due(tx: &mut Tx, paths: &[String]) -> Result<(), sqlx::Error> {
    for path in paths {
        sqlx::query("INSERT INTO pending_blobs (blob_path, created_at) VALUES ($1, 0) ON CONFLICT (blob_path) DO NOTHING")
            .bind(path)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Pending blobs listed at or before `cutoff` (Unix ms), at most `limit`.
pub async fn due(db: &Db, cutoff: i64, limit: i64) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT blob_path FROM pending_blobs WHERE created_at <= $1 LIMIT $2").bind(cutoff).bind(limit).fetch_all(db).await
}
