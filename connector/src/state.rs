//! The connector's durable state: a SQLite database in the state directory (WAL, synchronous
//! FULL), so that after a crash or `kill -9` at any moment the connector knows which instances
//! each PACS target already confirmed and which the hub already has acknowledged. Nothing in it
//! names a patient.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
use sqlx::Row;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

const SCHEMA: &[&str] = &[
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    "CREATE TABLE IF NOT EXISTS transfers (
        id TEXT PRIMARY KEY,
        instances INTEGER NOT NULL,
        state TEXT NOT NULL,               -- working, stored, failed
        refusals INTEGER NOT NULL DEFAULT 0,
        unreachable_since INTEGER,         -- unix ms of the first failed attempt in a row
        last_error TEXT NOT NULL DEFAULT '',
        claimed_at INTEGER NOT NULL,
        finished_at INTEGER
    )",
    "CREATE TABLE IF NOT EXISTS deliveries (
        transfer_id TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        target TEXT NOT NULL,
        status INTEGER NOT NULL,           -- the PACS's DIMSE status (0 or a warning)
        stored_at INTEGER NOT NULL,
        PRIMARY KEY (transfer_id, sop_instance_uid, target)
    )",
    "CREATE TABLE IF NOT EXISTS acks (
        transfer_id TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        acked_at INTEGER NOT NULL,
        PRIMARY KEY (transfer_id, sop_instance_uid)
    )",
    // Outbound: studies the PACS sent to the connector's Storage SCP, one batch per study and
    // calling AE title while it arrives; then routed (a share or a transfer) and uploaded.
    "CREATE TABLE IF NOT EXISTS outbound_batches (
        id TEXT PRIMARY KEY,
        study_uid TEXT NOT NULL,
        calling_ae TEXT NOT NULL,
        state TEXT NOT NULL,               -- receiving, routing, done, failed, unrouted
        route TEXT NOT NULL DEFAULT '',
        share_id TEXT,                     -- the draft share, once created
        result TEXT NOT NULL DEFAULT '',   -- the sheet's path, or the transfer's id
        last_error TEXT NOT NULL DEFAULT '',
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at INTEGER NOT NULL DEFAULT 0,
        first_at INTEGER NOT NULL,
        last_at INTEGER NOT NULL,
        finished_at INTEGER
    )",
    "CREATE UNIQUE INDEX IF NOT EXISTS outbound_receiving ON outbound_batches (study_uid, calling_ae) WHERE state = 'receiving'",
    "CREATE TABLE IF NOT EXISTS outbound_files (
        batch_id TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        size INTEGER NOT NULL,
        PRIMARY KEY (batch_id, sop_instance_uid)
    )",
    "CREATE TABLE IF NOT EXISTS events (
        at INTEGER NOT NULL,
        kind TEXT NOT NULL,
        message TEXT NOT NULL
    )",
];

#[derive(Clone)]
pub struct State {
    pub db: SqlitePool,
    pub dir: PathBuf,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

impl State {
    pub async fn open(dir: &Path) -> anyhow::Result<State> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create the state directory {}", dir.display()))?;
        let opts = SqliteConnectOptions::from_str("sqlite://")?
            .filename(dir.join("connector.db"))
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(std::time::Duration::from_secs(10));
        let db = SqlitePoolOptions::new()
            .max_connections(2)
            .connect_with(opts)
            .await
            .with_context(|| format!("cannot open the state database in {}", dir.display()))?;
        for s in SCHEMA {
            sqlx::query(*s).execute(&db).await?;
        }
        Ok(State { db, dir: dir.to_path_buf() })
    }

    /// The random name of this connector installation, sent as `Ferry-Connector-Instance`.
    pub async fn instance_id(&self) -> anyhow::Result<String> {
        let id = uuid::Uuid::new_v4().to_string();
        sqlx::query("INSERT INTO meta (key, value) VALUES ('instance', $1) ON CONFLICT (key) DO NOTHING")
            .bind(&id)
            .execute(&self.db)
            .await?;
        Ok(sqlx::query("SELECT value FROM meta WHERE key = 'instance'").fetch_one(&self.db).await?.try_get(0)?)
    }

    pub fn spool(&self, transfer_id: &str) -> PathBuf {
        self.dir.join("spool").join(transfer_id)
    }

    pub async fn begin_transfer(&self, id: &str, instances: usize) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO transfers (id, instances, state, claimed_at) VALUES ($1, $2, 'working', $3) \
             ON CONFLICT (id) DO UPDATE SET state = 'working', instances = excluded.instances",
        )
        .bind(id)
        .bind(instances as i64)
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn delivered(&self, transfer_id: &str, target: &str) -> anyhow::Result<std::collections::HashSet<String>> {
        let rows = sqlx::query("SELECT sop_instance_uid FROM deliveries WHERE transfer_id = $1 AND target = $2")
            .bind(transfer_id)
            .bind(target)
            .fetch_all(&self.db)
            .await?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    /// Delivered to every target but not yet acknowledged to the hub.
    pub async fn unacked_delivered(&self, transfer_id: &str, targets: usize) -> anyhow::Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT d.sop_instance_uid, MAX(d.status) FROM deliveries d WHERE d.transfer_id = $1 \
             AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.transfer_id = d.transfer_id AND a.sop_instance_uid = d.sop_instance_uid) \
             GROUP BY d.sop_instance_uid HAVING COUNT(*) >= $2",
        )
        .bind(transfer_id)
        .bind(targets as i64)
        .fetch_all(&self.db)
        .await?;
        rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
    }

    pub async fn record_delivery(&self, transfer_id: &str, sop: &str, target: &str, status: u16) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO deliveries (transfer_id, sop_instance_uid, target, status, stored_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT DO NOTHING",
        )
        .bind(transfer_id)
        .bind(sop)
        .bind(target)
        .bind(i64::from(status))
        .bind(now_ms())
        .execute(&self.db)
        .await?;
        Ok(())
    }

    pub async fn record_acks(&self, transfer_id: &str, sops: &[String]) -> anyhow::Result<()> {
        let mut tx = self.db.begin().await?;
        for s in sops {
            sqlx::query("INSERT INTO acks (transfer_id, sop_instance_uid, acked_at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING")
                .bind(transfer_id)
                .bind(s)
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn acked(&self, transfer_id: &str) -> anyhow::Result<std::collections::HashSet<String>> {
        let all: Vec<String> =
            sqlx::query_scalar("SELECT sop_instance_uid FROM acks WHERE transfer_id = $1").bind(transfer_id).fetch_all(&self.db).await?;
        Ok(all.into_iter().collect())
    }

    /// Counts a refusal by the PACS; returns the refusals so far.
    pub async fn count_refusal(&self, transfer_id: &str, error: &str) -> anyhow::Result<u32> {
        sqlx::query("UPDATE transfers SET refusals = refusals + 1, last_error = $1 WHERE id = $2")
            .bind(error)
            .bind(transfer_id)
            .execute(&self.db)
            .await?;
        let n: i64 = sqlx::query("SELECT refusals FROM transfers WHERE id = $1").bind(transfer_id).fetch_one(&self.db).await?.try_get(0)?;
        Ok(n as u32)
    }

    /// Notes that the PACS (or hub) could not be reached; returns since when (unix ms).
    pub async fn note_unreachable(&self, transfer_id: &str, error: &str) -> anyhow::Result<i64> {
        sqlx::query("UPDATE transfers SET unreachable_since = COALESCE(unreachable_since, $1), last_error = $2 WHERE id = $3")
            .bind(now_ms())
            .bind(error)
            .bind(transfer_id)
            .execute(&self.db)
            .await?;
        Ok(sqlx::query("SELECT unreachable_since FROM transfers WHERE id = $1").bind(transfer_id).fetch_one(&self.db).await?.try_get(0)?)
    }

    pub async fn note_progress(&self, transfer_id: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE transfers SET unreachable_since = NULL WHERE id = $1").bind(transfer_id).execute(&self.db).await?;
        Ok(())
    }

    pub async fn finish_transfer(&self, id: &str, state: &str, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE transfers SET state = $1, last_error = $2, finished_at = $3 WHERE id = $4")
            .bind(state)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.db)
            .await?;
        let _ = std::fs::remove_dir_all(self.spool(id));
        Ok(())
    }

    pub async fn event(&self, kind: &str, message: &str) -> anyhow::Result<()> {
        sqlx::query("INSERT INTO events (at, kind, message) VALUES ($1, $2, $3)")
            .bind(now_ms())
            .bind(kind)
            .bind(message)
            .execute(&self.db)
            .await?;
        sqlx::query("DELETE FROM events WHERE at < $1").bind(now_ms() - 30 * 24 * 3600 * 1000).execute(&self.db).await?;
        Ok(())
    }
}
