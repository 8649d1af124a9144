//! Backup and restore of a whole hub: the database (a consistent snapshot while hubs run), the
//! encrypted blobs (copied as they are; they stay encrypted) and — to a separate place, since
//! they must be kept apart from the data — the keys.
//!
//! `ferry-hub backup DIR [--keys-to KEYDIR]` writes `DIR/manifest.json`, the database
//! (`ferry.db`, SQLite `VACUUM INTO`; or `ferry.pgdump`, `pg_dump --format=custom`) and
//! `DIR/blobs/…`. The database is taken first: blobs only ever appear or disappear, never change,
//! so every blob the snapshot refers to is copied; blobs written after it are orphans the restored
//! hub's sweeper removes.
//!
//! `ferry-hub restore DIR [--keys-from KEYDIR]` puts them into the configured database and
//! storage, which must be empty (a restore never overwrites a hub), then checks the result: every
//! study key unwraps with the restored (or external) key-encryption key and every indexed
//! instance has its blob.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use futures_util::TryStreamExt;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt};
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt;

use crate::config::Config;
use crate::db::{Dialect, now_ms};
use crate::storage::BlobStore;

const MANIFEST: &str = "manifest.json";

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub hub_version: String,
    pub created_at: i64,
    /// `sqlite` or `postgres`: which file holds the database.
    pub database: String,
    pub blobs: u64,
    pub blob_bytes: u64,
    /// The key-encryption keys the study keys were wrapped with at backup time.
    pub kek_ids: Vec<String>,
}

/// What a restore found when it checked its work.
#[derive(Debug)]
pub struct Restored {
    pub blobs: u64,
    pub studies: u64,
    pub instances: u64,
}

/// Writes a backup of the hub the configuration describes into `to` (created; must be empty).
pub async fn backup(config: &Config, to: &Path, keys_to: Option<&Path>) -> anyhow::Result<Manifest> {
    if to.exists() && std::fs::read_dir(to)?.next().is_some() {
        bail!("{} is not empty; back up into a new folder", to.display());
    }
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    let url = config.database_url();
    let dialect = Dialect::of(&url)?;
    let pools = crate::db::connect_pools(&url, Some(2)).await?;
    let kek_ids: Vec<String> = sqlx::query_scalar("SELECT DISTINCT kek_id FROM study_keys ORDER BY kek_id").fetch_all(&pools.read).await?;
    // 1. The database, consistent as of now.
    let database = match dialect {
        Dialect::Sqlite => {
            let file = to.join("ferry.db");
            let target = file.to_str().context("backup folder path is not UTF-8")?.replace('\'', "''");
            sqlx::query(sqlx::AssertSqlSafe(format!("VACUUM INTO '{target}'")))
                .execute(&pools.write)
                .await
                .context("snapshot of the SQLite database (VACUUM INTO)")?;
            "sqlite"
        }
        Dialect::Postgres => {
            run_tool("pg_dump", &["--format=custom", "--no-owner", "--file", &path_str(&to.join("ferry.pgdump"))?, &url]).await?;
            "postgres"
        }
    };
    pools.read.close().await;
    pools.write.close().await;
    // 2. The blobs, as stored (encrypted).
    let blobs = BlobStore::from_config(config)?;
    let (n, bytes) = copy_out(blobs.raw().as_ref(), &to.join("blobs")).await?;
    // 3. The keys, elsewhere.
    if let Some(keys_to) = keys_to {
        std::fs::create_dir_all(keys_to).with_context(|| format!("creating {}", keys_to.display()))?;
        for file in key_files(config) {
            let name = file.file_name().context("key file name")?;
            std::fs::copy(&file, keys_to.join(name)).with_context(|| format!("copying {}", file.display()))?;
        }
    }
    let manifest = Manifest {
        format: 1,
        hub_version: env!("CARGO_PKG_VERSION").into(),
        created_at: now_ms(),
        database: database.into(),
        blobs: n,
        blob_bytes: bytes,
        kek_ids,
    };
    std::fs::write(to.join(MANIFEST), serde_json::to_vec_pretty(&manifest)?)?;
    Ok(manifest)
}

/// The key files of this configuration: the hub secret, and for the local provider the KEK with
/// any retired or pending ones beside it.
fn key_files(config: &Config) -> Vec<PathBuf> {
    let mut files = vec![config.secret_file()];
    files.extend(crate::storage::keys::local_key_files(&config.kek_file()));
    files.into_iter().filter(|f| f.exists()).collect()
}

/// Restores the backup in `from` into the database and storage the configuration names.
pub async fn restore(config: &Config, from: &Path, keys_from: Option<&Path>) -> anyhow::Result<Restored> {
    let manifest: Manifest = serde_json::from_slice(
        &std::fs::read(from.join(MANIFEST)).with_context(|| format!("{} is not a Ferry backup (no {MANIFEST})", from.display()))?,
    )
    .context("reading the backup's manifest")?;
    anyhow::ensure!(manifest.format == 1, "backup format {} is not known to this hub", manifest.format);
    let url = config.database_url();
    let dialect = Dialect::of(&url)?;
    // Nothing is overwritten: the keys, the database and the storage must all be empty.
    if let Some(keys_from) = keys_from {
        for entry in std::fs::read_dir(keys_from).with_context(|| format!("reading {}", keys_from.display()))? {
            let src = entry?.path();
            let Some(name) = src.file_name().and_then(|n| n.to_str()) else { continue };
            let dest = if name.starts_with(&file_name(&config.secret_file())) {
                config.secret_file()
            } else if name.starts_with(&file_name(&config.kek_file())) {
                config.kek_file().with_file_name(name)
            } else {
                continue;
            };
            if dest.exists() {
                if std::fs::read(&dest)? == std::fs::read(&src)? {
                    continue;
                }
                bail!("{} already exists and differs from the backup's; restore into a fresh setup", dest.display());
            }
            if let Some(dir) = dest.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(&src, &dest).with_context(|| format!("restoring {}", dest.display()))?;
            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    // Study keys of a local KEK need its file; without it nothing would decrypt.
    if let Some(id) = manifest.kek_ids.iter().find(|id| id.starts_with("local:"))
        && !config.kek_file().exists()
    {
        bail!(
            "the backup's study keys are wrapped by the local key-encryption key {id}, and there is none at {}: \
                 give the keys saved with the backup (--keys-from)",
            config.kek_file().display()
        );
    }
    let blobs = BlobStore::from_config(config)?;
    if blobs.raw().list(None).try_next().await?.is_some() {
        bail!("the blob storage is not empty; restore into empty storage");
    }
    match (dialect, manifest.database.as_str()) {
        (Dialect::Sqlite, "sqlite") => {
            let file = sqlite_file(&url)?;
            if file.exists() && std::fs::metadata(&file)?.len() > 0 {
                bail!("the database {} already exists; restore into a fresh setup", file.display());
            }
            if let Some(dir) = file.parent() {
                std::fs::create_dir_all(dir)?;
            }
            std::fs::copy(from.join("ferry.db"), &file).with_context(|| format!("restoring the database to {}", file.display()))?;
        }
        (Dialect::Postgres, "postgres") => {
            sqlx::any::install_default_drivers();
            let pool = sqlx::AnyPool::connect(&url).await.context("cannot connect to the database")?;
            let used: Option<String> = sqlx::query_scalar("SELECT CAST(to_regclass('public.instances') AS TEXT)").fetch_one(&pool).await?;
            pool.close().await;
            if used.is_some() {
                bail!("the PostgreSQL database already holds a hub; restore into an empty database");
            }
            run_tool("pg_restore", &["--no-owner", "--exit-on-error", "--dbname", &url, &path_str(&from.join("ferry.pgdump"))?]).await?;
        }
        (_, other) => bail!("the backup holds a {other} database, the configuration names another kind"),
    }
    let n = copy_in(&from.join("blobs"), blobs.raw()).await?;
    anyhow::ensure!(n == manifest.blobs, "restored {n} blobs, the backup lists {}", manifest.blobs);
    // Check: migrations (an upgrade restores too), every study key unwraps, every blob is there.
    let pools = crate::db::connect_pools(&url, Some(2)).await?;
    let keys = crate::startup::key_provider(config).await?;
    let studies: Vec<String> = sqlx::query_scalar("SELECT key_id FROM study_keys").fetch_all(&pools.read).await?;
    for s in &studies {
        keys.study_key(&pools.read, s)
            .await
            .context("a study key does not unwrap with the restored key-encryption key (restore the keys with --keys-from)")?;
    }
    let paths: Vec<String> = sqlx::query_scalar("SELECT blob_path FROM instances").fetch_all(&pools.read).await?;
    for p in &paths {
        blobs.raw().head(&ObjPath::from(p.as_str())).await.context("an indexed instance has no blob in the backup")?;
    }
    Ok(Restored { blobs: n, studies: studies.len() as u64, instances: paths.len() as u64 })
}

fn file_name(p: &Path) -> String {
    p.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string()
}

fn path_str(p: &Path) -> anyhow::Result<String> {
    Ok(p.to_str().context("path is not UTF-8")?.to_string())
}

/// The file of a `sqlite://PATH[?…]` URL.
fn sqlite_file(url: &str) -> anyhow::Result<PathBuf> {
    let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).context("not a SQLite URL")?;
    let path = rest.split('?').next().unwrap_or(rest);
    anyhow::ensure!(!path.is_empty() && path != ":memory:", "an in-memory database cannot be restored into");
    Ok(PathBuf::from(path))
}

async fn run_tool(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let out = tokio::process::Command::new(tool)
        .args(args)
        .output()
        .await
        .with_context(|| format!("running {tool} (install the PostgreSQL client tools, the same major version as the server)"))?;
    if !out.status.success() {
        // The tool's own message; the database URL (with a password) is not repeated.
        bail!("{tool} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}

async fn copy_out(store: &dyn ObjectStore, dir: &Path) -> anyhow::Result<(u64, u64)> {
    let mut list = store.list(None);
    let (mut n, mut bytes) = (0u64, 0u64);
    while let Some(meta) = list.try_next().await? {
        let dest = dir.join(meta.location.as_ref());
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut file = tokio::fs::File::create(&dest).await.with_context(|| format!("writing {}", dest.display()))?;
        let mut stream = store.get(&meta.location).await?.into_stream();
        while let Some(chunk) = stream.try_next().await? {
            file.write_all(&chunk).await?;
            bytes += chunk.len() as u64;
        }
        file.sync_all().await?;
        n += 1;
    }
    Ok((n, bytes))
}

async fn copy_in(dir: &Path, store: &std::sync::Arc<dyn ObjectStore>) -> anyhow::Result<u64> {
    use tokio::io::AsyncReadExt;
    let mut n = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries = match tokio::fs::read_dir(&d).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && d == dir => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        while let Some(entry) = entries.next_entry().await? {
            let path = entry.path();
            if entry.file_type().await?.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(dir)?.to_str().context("blob name is not UTF-8")?.to_string();
            let mut file = tokio::fs::File::open(&path).await?;
            let mut up = object_store::buffered::BufWriter::new(store.clone(), ObjPath::from(rel.as_str()));
            let mut buf = vec![0u8; 1 << 20];
            loop {
                let k = file.read(&mut buf).await?;
                if k == 0 {
                    break;
                }
                up.write_all(&buf[..k]).await?;
            }
            up.shutdown().await.with_context(|| format!("storing blob {rel}"))?;
            n += 1;
        }
    }
    Ok(n)
}
