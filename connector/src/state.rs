//! The connector's durable state: a SQLite database in the state directory (WAL, synchronous
//! FULL), so that after a crash or `kill -9` at any moment the connector knows which instances
//! each PACS target already confirmed and which the hub already has acknowledged. Nothing in it
//! names a patient.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use anyhow::Context;
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
    // Each (transfer, target) pair on its own: refusals so far, since when it fails in a row, the
    // target's last answer, and whether the connector gave up on the pair.
    "CREATE TABLE IF NOT EXISTS pairs (
        transfer_id TEXT NOT NULL,
        target TEXT NOT NULL,
        refusals INTEGER NOT NULL DEFAULT 0,
        failing_since INTEGER,
        last_answer TEXT NOT NULL DEFAULT '',
        failed INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (transfer_id, target)
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
        // Added since the first release (a state directory from then gets them on start).
        for (table, column, def) in [
            ("transfers", "claim", "TEXT NOT NULL DEFAULT ''"),
            ("transfers", "urgent", "INTEGER NOT NULL DEFAULT 0"),
            ("transfers", "reported", "TEXT NOT NULL DEFAULT ''"),
        ] {
            let has: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
                "SELECT COUNT(*) FROM pragma_table_info('{table}') WHERE name = '{column}'"
            )))
            .fetch_one(&db)
            .await?;
            if has == 0 {
                sqlx::query(sqlx::AssertSqlSafe(format!("ALTER TABLE {table} ADD COLUMN {column} {def}"))).execute(&db).await?;
            }
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
        Ok(sqlx::query_scalar("SELECT value FROM meta WHERE key = 'instance'").fetch_one(&self.db).await?)
    }

    pub fn spool(&self, transfer_id: &str) -> PathBuf {
        self.dir.join("spool").join(transfer_id)
    }

    /// Records a claimed transfer (with the claim itself, so a restart resumes it without the hub).
    pub async fn begin_transfer(&self, claim: &ferry_schemas::Claim) -> anyhow::Result<()> {
        sqlx::query(
            "INSERT INTO transfers (id, instances, state, claimed_at, claim, urgent) VALUES ($1, $2, 'working', $3, $4, $5) \
             ON CONFLICT (id) DO UPDATE SET state = 'working', instances = excluded.instances, claim = excluded.claim, reported = ''",
        )
        .bind(&claim.transfer.id)
        .bind(claim.instances.len() as i64)
        .bind(now_ms())
        .bind(serde_json::to_string(claim)?)
        .bind(i64::from(claim.transfer.urgency == ferry_schemas::Urgency::Urgent))
        .execute(&self.db)
        .await?;
        Ok(())
    }

    /// Transfers worked on when the process stopped: (claim, claimed at, what was reported to the
    /// hub: '' nothing yet, or 'stored' while optional targets are still being filled).
    pub async fn working(&self) -> anyhow::Result<Vec<(ferry_schemas::Claim, i64, String)>> {
        let rows: Vec<(String, String, i64, String)> =
            sqlx::query_as("SELECT id, claim, claimed_at, reported FROM transfers WHERE state = 'working' ORDER BY claimed_at")
                .fetch_all(&self.db)
                .await?;
        let mut out = Vec::new();
        for (id, claim, at, reported) in rows {
            match serde_json::from_str(&claim) {
                Ok(c) => out.push((c, at, reported)),
                // Claimed by a version that did not keep the claim: the lease runs out and the hub
                // hands it out again.
                Err(_) => self.finish_transfer(&id, "abandoned", "the claim was not kept; the hub hands the transfer out again").await?,
            }
        }
        Ok(out)
    }

    pub async fn mark_reported(&self, id: &str, state: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE transfers SET reported = $1 WHERE id = $2").bind(state).bind(id).execute(&self.db).await?;
        Ok(())
    }

    /// (target, refusals, failing since, last answer, failed) of each pair of the transfer.
    pub async fn pairs(&self, transfer_id: &str) -> anyhow::Result<Vec<(String, i64, Option<i64>, String, bool)>> {
        let rows: Vec<(String, i64, Option<i64>, String, i64)> =
            sqlx::query_as("SELECT target, refusals, failing_since, last_answer, failed FROM pairs WHERE transfer_id = $1")
                .bind(transfer_id)
                .fetch_all(&self.db)
                .await?;
        Ok(rows.into_iter().map(|(t, r, s, a, f)| (t, r, s, a, f != 0)).collect())
    }

    /// Notes that a target refused instances of the transfer; returns the refusals so far.
    pub async fn pair_refused(&self, transfer_id: &str, target: &str, answer: &str) -> anyhow::Result<u32> {
        let n: i64 = sqlx::query_scalar(
            "INSERT INTO pairs (transfer_id, target, refusals, failing_since, last_answer) VALUES ($1, $2, 1, $3, $4) \
             ON CONFLICT (transfer_id, target) DO UPDATE SET refusals = pairs.refusals + 1, \
             failing_since = COALESCE(pairs.failing_since, excluded.failing_since), last_answer = excluded.last_answer RETURNING refusals",
        )
        .bind(transfer_id)
        .bind(target)
        .bind(now_ms())
        .bind(answer)
        .fetch_one(&self.db)
        .await?;
        self.note_error(transfer_id, answer).await?;
        Ok(n as u32)
    }

    /// Notes that a target could not be reached for the transfer; returns since when it fails in
    /// a row (unix ms).
    pub async fn pair_unreachable(&self, transfer_id: &str, target: &str, answer: &str) -> anyhow::Result<i64> {
        let since: i64 = sqlx::query_scalar(
            "INSERT INTO pairs (transfer_id, target, failing_since, last_answer) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (transfer_id, target) DO UPDATE SET \
             failing_since = COALESCE(pairs.failing_since, excluded.failing_since), last_answer = excluded.last_answer RETURNING failing_since",
        )
        .bind(transfer_id)
        .bind(target)
        .bind(now_ms())
        .bind(answer)
        .fetch_one(&self.db)
        .await?;
        self.note_error(transfer_id, answer).await?;
        Ok(since)
    }

    /// The target stored something of the transfer: its failures in a row are over.
    pub async fn pair_progress(&self, transfer_id: &str, target: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE pairs SET failing_since = NULL WHERE transfer_id = $1 AND target = $2")
            .bind(transfer_id)
            .bind(target)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    /// The connector gives up on this target for the transfer.
    pub async fn pair_failed(&self, transfer_id: &str, target: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE pairs SET failed = 1 WHERE transfer_id = $1 AND target = $2")
            .bind(transfer_id)
            .bind(target)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    async fn note_error(&self, transfer_id: &str, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE transfers SET last_error = $1 WHERE id = $2").bind(error).bind(transfer_id).execute(&self.db).await?;
        Ok(())
    }

    pub async fn delivered(&self, transfer_id: &str, target: &str) -> anyhow::Result<std::collections::HashSet<String>> {
        let rows: Vec<String> = sqlx::query_scalar("SELECT sop_instance_uid FROM deliveries WHERE transfer_id = $1 AND target = $2")
            .bind(transfer_id)
            .bind(target)
            .fetch_all(&self.db)
            .await?;
        Ok(rows.into_iter().collect())
    }

    /// Delivered to every required target but not yet acknowledged to the hub: (SOP Instance UID,
    /// the highest DIMSE status any of them answered).
    pub async fn unacked_delivered(&self, transfer_id: &str, required: &[String]) -> anyhow::Result<Vec<(String, i64)>> {
        if required.is_empty() {
            return Ok(vec![]);
        }
        let marks = (0..required.len()).map(|i| format!("${}", i + 2)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT d.sop_instance_uid, MAX(d.status) FROM deliveries d WHERE d.transfer_id = $1 AND d.target IN ({marks}) \
             AND NOT EXISTS (SELECT 1 FROM acks a WHERE a.transfer_id = d.transfer_id AND a.sop_instance_uid = d.sop_instance_uid) \
             GROUP BY d.sop_instance_uid HAVING COUNT(*) >= {}",
            required.len()
        );
        let mut q = sqlx::query_as(sqlx::AssertSqlSafe(sql)).bind(transfer_id);
        for t in required {
            q = q.bind(t);
        }
        Ok(q.fetch_all(&self.db).await?)
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

    pub async fn finish_transfer(&self, id: &str, state: &str, error: &str) -> anyhow::Result<()> {
        sqlx::query("UPDATE transfers SET state = $1, last_error = $2, finished_at = $3 WHERE id = $4")
            .bind(state)
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.db)
            .await?;
        sqlx::query("DELETE FROM pairs WHERE transfer_id = $1").bind(id).execute(&self.db).await?;
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
