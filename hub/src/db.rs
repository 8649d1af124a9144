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
                    // Deleted rows are overwritten with zeros, not left in free pages.
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

fn migrator() -> Migrator {
    let migrations = ferry_schemas::MIGRATIONS
        .iter()
        .map(|(version, desc, sql)| {
            Migration::new(*version, (*desc).into(), MigrationType::Simple, sql.into_sql_str(), false)
        })
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
