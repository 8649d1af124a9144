//! Database connection and migrations. One code path for SQLite (embedded default) and
//! PostgreSQL (scale-out) through sqlx's `Any` driver: the SQL is kept portable (`$n`
//! placeholders, `ON CONFLICT`, TEXT/BIGINT columns).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use sqlx::any::AnyPoolOptions;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::{AnyPool, SqlSafeStr};

pub type Db = AnyPool;

/// Which SQL dialect a pool speaks, for the rare statement that differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub fn of(url: &str) -> anyhow::Result<Self> {
        if url.starts_with("sqlite:") {
            Ok(Dialect::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Dialect::Postgres)
        } else {
            anyhow::bail!("unsupported database URL scheme (use sqlite:// or postgres://)")
        }
    }
}

/// The hub's connection pools. SQLite allows one writer at a time, and a writer that finds the
/// database locked sleeps in its busy handler (milliseconds at a time); so on SQLite all writes go
/// through a pool of one connection, where they queue without sleeping. On PostgreSQL both are
/// the same pool.
#[derive(Clone, Debug)]
pub struct Pools {
    pub read: Db,
    pub write: Db,
    pub dialect: Dialect,
}

/// How long a request waits for a database connection by default before it fails (503).
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(15);

/// Connects, runs the embedded migrations and sets up the write pool.
pub async fn connect_pools(url: &str, max_connections: Option<u32>) -> anyhow::Result<Pools> {
    connect_pools_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
}

/// [`connect_pools`] with the time a request may wait for a connection: while the database is
/// unreachable, new connections are retried for that long before the request fails.
pub async fn connect_pools_with(url: &str, max_connections: Option<u32>, acquire_timeout: Duration) -> anyhow::Result<Pools> {
    let (read, dialect) = connect_with(url, max_connections, acquire_timeout).await?;
    let write = match dialect {
        Dialect::Postgres => read.clone(),
        Dialect::Sqlite => connect_with(url, Some(1), acquire_timeout).await?.0,
    };
    Ok(Pools { read, write, dialect })
}

/// Connects and runs the embedded migrations.
pub async fn connect(url: &str, max_connections: Option<u32>) -> anyhow::Result<(Db, Dialect)> {
    connect_with(url, max_connections, DEFAULT_ACQUIRE_TIMEOUT).await
}

async fn connect_with(url: &str, max_connections: Option<u32>, acquire_timeout: Duration) -> anyhow::Result<(Db, Dialect)> {
    sqlx::any::install_default_drivers();
    let dialect = Dialect::of(url)?;
    if dialect == Dialect::Sqlite
        && let Some(path) = sqlite_file(url)
    {
        // SQLite gives its -wal and -shm files the database file's mode: a database file made
        // 0600 here keeps all three private whatever the umask.
        crate::files::create_file(&path).with_context(|| format!("creating the database file {}", path.display()))?;
    }
    let max = max_connections.unwrap_or(match dialect {
        Dialect::Sqlite => 8,
        Dialect::Postgres => 16,
    });
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(acquire_timeout)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if dialect == Dialect::Sqlite {
                    // WAL lets readers run beside the one writer; a generous busy timeout
                    // queues writers instead of failing them.
                    sqlx::query("PRAGMA busy_timeout = 30000").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA journal_mode = WAL").execute(&mut *conn).await?;
                    sqlx::query("PRAGMA foreign_keys = ON").execute(&mut *conn).await?;
                    // Deleted rows (purged shares, used tokens, ended sessions) are overwritten
                    // with zeros instead of lingering in free pages of the file.
                    sqlx::query("PRAGMA secure_delete = ON").execute(&mut *conn).await?;
                }
                Ok(())
            })
        })
        .connect(url)
        .await
        .with_context(|| "cannot connect to the database")?;
    migrator().run(&pool).await.context("running database migrations")?;
    Ok((pool, dialect))
}

/// The file of an SQLite URL (`sqlite://path?…` or `sqlite:path`), unless it is in memory.
fn sqlite_file(url: &str) -> Option<std::path::PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
    let path = rest.split('?').next().unwrap_or("");
    if path.is_empty() || path.starts_with(':') || url.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

fn migrator() -> Migrator {
    let migrations = ferry_schemas::MIGRATIONS
        .iter()
        .map(|(version, desc, sql)| Migration::new(*version, (*desc).into(), MigrationType::Simple, sql.into_sql_str(), false))
        .collect();
    Migrator::with_migrations(migrations)
}

/// After deleting patient data: on SQLite, moves the write-ahead log into the database file and
/// truncates it, so the deleted rows' old page images leave the disk (with `secure_delete` on,
/// the database file's freed space is zeroed). PostgreSQL reclaims dead rows by (auto)VACUUM;
/// OPERATIONS.md says what operators do there. Failing here is not fatal: a later purge or
/// SQLite's own checkpoints finish the job.
pub async fn reclaim_deleted(db: &Db, dialect: Dialect) {
    if dialect == Dialect::Sqlite
        && let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(db).await
    {
        tracing::warn!(error = %e, "WAL checkpoint after a purge failed");
    }
}

/// Milliseconds since the Unix epoch, the time format of every table.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// True when the error is a unique-constraint violation (both dialects).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.is_unique_violation())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_urls_name_their_file() {
        assert_eq!(sqlite_file("sqlite:///tmp/x/ferry.db?mode=rwc"), Some("/tmp/x/ferry.db".into()));
        assert_eq!(sqlite_file("sqlite://./ferry-data/ferry.db?mode=rwc"), Some("./ferry-data/ferry.db".into()));
        assert_eq!(sqlite_file("sqlite:ferry.db"), Some("ferry.db".into()));
        assert_eq!(sqlite_file("sqlite::memory:"), None);
        assert_eq!(sqlite_file("sqlite://file.db?mode=memory"), None);
        assert_eq!(sqlite_file("postgres://x@y/z"), None);
    }

    /// Every connection of both pools overwrites deleted content (`secure_delete`), and the
    /// database file is private (0600) even under a permissive umask.
    #[tokio::test]
    async fn sqlite_connections_delete_securely_and_the_file_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ferry.db");
        let url = format!("sqlite://{}?mode=rwc", path.display());
        let pools = connect_pools(&url, Some(3)).await.unwrap();
        for pool in [&pools.read, &pools.write] {
            // Several connections at once, so more than the first one is asked.
            let mut held = Vec::new();
            for _ in 0..pool.options().get_max_connections() {
                let mut conn = pool.acquire().await.unwrap();
                let on: i64 = sqlx::query_scalar("PRAGMA secure_delete").fetch_one(&mut *conn).await.unwrap();
                assert_eq!(on, 1, "secure_delete on every connection");
                held.push(conn);
            }
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            for name in ["ferry.db", "ferry.db-wal", "ferry.db-shm"] {
                let mode = std::fs::metadata(dir.path().join(name)).unwrap().permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{name}");
            }
        }
    }
}
