//! Key hierarchy: a key-encryption key (KEK) from a [`KeyProvider`] wraps one random data key per
//! study (table `study_keys`); each blob has its own random key, wrapped by its study's data key
//! (column `instances.blob_key`). Deleting a study's data key therefore makes every blob of the
//! study unreadable (crypto-shredding), and rotating the KEK only re-wraps the study keys.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_util::future::BoxFuture;

use super::crypto::Key;
use crate::db::{Db, now_ms};

/// Where the key-encryption key lives. The local key file is the default; an external key
/// service (e.g. a transit-encryption API) implements the same two calls.
pub trait KeyProvider: Send + Sync {
    /// Wraps a data key; returns it wrapped and the id of the KEK that wrapped it (stored beside).
    fn wrap<'a>(&'a self, dek: &'a Key, context: &'a str) -> BoxFuture<'a, anyhow::Result<(String, String)>>;
    fn unwrap_key<'a>(&'a self, kek_id: &'a str, wrapped: &'a str, context: &'a str) -> BoxFuture<'a, anyhow::Result<Key>>;
}

/// A KEK kept in a local file (64 hex characters), created with mode 0600 when missing.
///
/// Rotation (`ferry-hub keys rotate`) puts a new key beside it (`<file>.new`), re-wraps every
/// study key, and then swaps the files (the old one becomes `<file>.retired-<id>`). A running hub
/// follows without a restart: before wrapping it checks whether the file now holds another key,
/// and a study key wrapped by a KEK it does not know makes it look at the file, `.new` and
/// `.retired-*` again.
pub struct LocalKeyFile {
    path: std::path::PathBuf,
    /// The KEK wrapping new study keys, and every KEK seen (by id) for unwrapping.
    keys: std::sync::RwLock<(String, std::collections::HashMap<String, Key>)>,
}

/// The id of a local KEK: `local:` and the first 16 hex characters of its SHA-256.
pub fn local_kek_id(key: &Key) -> String {
    use sha2::Digest;
    format!("local:{}", &hex::encode(sha2::Sha256::digest(key.0))[..16])
}

impl LocalKeyFile {
    /// Loads the key file, creating it when it does not exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        let (key, created) = load_or_create_key(path)?;
        let id = local_kek_id(&key);
        let known = std::collections::HashMap::from([(id.clone(), key)]);
        let me = Self { path: path.to_path_buf(), keys: std::sync::RwLock::new((id, known)) };
        me.rescan();
        Ok((me, created))
    }

    /// The current KEK's id.
    pub fn current_id(&self) -> String {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).0.clone()
    }

    /// Re-reads the key file (it may hold a new key after a rotation) and learns the keys of a
    /// rotation under way (`.new`) or just done (`.retired-*`).
    fn rescan(&self) {
        let found = local_key_files(&self.path);
        let mut keys = self.keys.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        for (i, p) in found.iter().enumerate() {
            let current = i == 0;
            if let Ok(k) = read_key(p) {
                let id = local_kek_id(&k);
                if current {
                    keys.0 = id.clone();
                }
                keys.1.insert(id, k);
            }
        }
    }

    fn key(&self, id: &str) -> Option<Key> {
        self.keys.read().unwrap_or_else(std::sync::PoisonError::into_inner).1.get(id).cloned()
    }
}

/// The local key files: the key file itself first, then a rotation's pending `<file>.new` and the
/// `<file>.retired-*` of earlier rotations (those that exist or not; readers skip missing ones).
pub fn local_key_files(path: &Path) -> Vec<std::path::PathBuf> {
    let mut files = vec![path.to_path_buf(), with_suffix(path, ".new")];
    files.extend(retired_files(path));
    files
}

/// The `<file>.retired-*` key files beside the key file (left by earlier rotations).
fn retired_files(path: &Path) -> Vec<std::path::PathBuf> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name().and_then(|n| n.to_str())) else { return vec![] };
    let prefix = format!("{name}.retired-");
    std::fs::read_dir(dir)
        .map(|entries| {
            entries.flatten().filter(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&prefix))).map(|e| e.path()).collect()
        })
        .unwrap_or_default()
}

fn with_suffix(path: &Path, suffix: &str) -> std::path::PathBuf {
    let mut s = path.as_os_str().to_os_string();
    s.push(suffix);
    std::path::PathBuf::from(s)
}

fn read_key(path: &Path) -> anyhow::Result<Key> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    let raw = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("key file {} must hold 64 hex characters", path.display()))?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&raw);
    Ok(Key(k))
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotated {
    pub old_id: String,
    pub new_id: String,
    pub rewrapped: u64,
    pub retired_file: std::path::PathBuf,
}

/// Rotates the local KEK: a new key (kept as `<file>.new` until done, so a rotation cut short is
/// resumed with the same key), every study key re-wrapped by it (the blobs are not touched), then
/// the files swapped. Study keys wrapped meanwhile by a hub still on the old key are re-wrapped in
/// a last pass. Afterwards the old KEK is not needed any more: its file stays as
/// `<file>.retired-<id>` until the operator deletes it.
pub async fn rotate_local(db: &Db, kek_file: &Path) -> anyhow::Result<Rotated> {
    let old = read_key(kek_file).with_context(|| format!("the current key-encryption key {}", kek_file.display()))?;
    let old_id = local_kek_id(&old);
    let next_path = with_suffix(kek_file, ".new");
    let new = if next_path.exists() {
        read_key(&next_path)?
    } else {
        let k = Key::random();
        write_private(&next_path, hex::encode(k.0).as_bytes()).with_context(|| format!("writing {}", next_path.display()))?;
        k
    };
    let new_id = local_kek_id(&new);
    let mut known = std::collections::HashMap::from([(old_id.clone(), old.clone())]);
    // Keys of earlier rotations whose retired files are still there.
    for k in retired_files(kek_file).iter().filter_map(|p| read_key(p).ok()) {
        known.insert(local_kek_id(&k), k);
    }
    let mut rewrapped = rewrap_all(db, &known, &new, &new_id).await?;
    let retired_file = with_suffix(kek_file, &format!(".retired-{}", old_id.trim_start_matches("local:")));
    std::fs::rename(kek_file, &retired_file).with_context(|| format!("retiring {}", kek_file.display()))?;
    std::fs::rename(&next_path, kek_file).with_context(|| format!("putting the new key in place at {}", kek_file.display()))?;
    if let Some(dir) = kek_file.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    // Running hubs switch to the new key before their next wrap; what one wrapped with the old
    // key in between is caught here.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    rewrapped += rewrap_all(db, &known, &new, &new_id).await?;
    Ok(Rotated { old_id, new_id, rewrapped, retired_file })
}

/// A study key as stored: the data key `key_id`, wrapped by the KEK `kek_id`.
#[derive(sqlx::FromRow)]
pub(super) struct StoredKey {
    pub key_id: String,
    pub wrapped_key: String,
    pub kek_id: String,
}

/// Up to `limit` study keys not wrapped by the KEK `kek_id`.
pub(super) async fn keys_not_under(db: &Db, kek_id: &str, limit: i64) -> Result<Vec<StoredKey>, sqlx::Error> {
    sqlx::query_as("SELECT key_id, wrapped_key, kek_id FROM study_keys WHERE kek_id <> $1 LIMIT $2")
        .bind(kek_id)
        .bind(limit)
        .fetch_all(db)
        .await
}

async fn rewrap_all(db: &Db, known: &std::collections::HashMap<String, Key>, new: &Key, new_id: &str) -> anyhow::Result<u64> {
    let mut done = 0;
    loop {
        let rows = keys_not_under(db, new_id, 500).await?;
        if rows.is_empty() {
            return Ok(done);
        }
        let mut progressed = false;
        for StoredKey { key_id: study, wrapped_key: wrapped, kek_id } in rows {
            let Some(kek) = known.get(&kek_id) else {
                anyhow::bail!(
                    "a study key is wrapped by a KEK this rotation does not have ({kek_id}); put its key file beside the current one, named like the current one plus .retired-<anything>, and run again"
                );
            };
            let context = Keyring::context(&study);
            let dek = kek
                .unwrap_key(&wrapped, context.as_bytes())
                .with_context(|| format!("unwrapping the data key of a study with {kek_id}"))?;
            let rewrapped = new.wrap(&dek.0, context.as_bytes());
            let n = sqlx::query("UPDATE study_keys SET wrapped_key = $1, kek_id = $2 WHERE key_id = $3 AND kek_id = $4")
                .bind(&rewrapped)
                .bind(new_id)
                .bind(&study)
                .bind(&kek_id)
                .execute(db)
                .await?;
            done += n.rows_affected();
            progressed = true;
        }
        if !progressed {
            return Ok(done);
        }
    }
}

/// Study keys per KEK id: what `ferry-hub keys status` shows.
pub async fn kek_usage(db: &Db) -> anyhow::Result<Vec<(String, i64)>> {
    #[derive(sqlx::FromRow)]
    struct Usage {
        kek_id: String,
        keys: i64,
    }
    let rows: Vec<Usage> =
        sqlx::query_as("SELECT kek_id, COUNT(*) AS keys FROM study_keys GROUP BY kek_id ORDER BY kek_id").fetch_all(db).await?;
    Ok(rows.into_iter().map(|u| (u.kek_id, u.keys)).collect())
}

/// Reads a 32-byte key kept as 64 hex characters, creating the file (mode 0600) when missing.
fn load_or_create_key(path: &Path) -> anyhow::Result<(Key, bool)> {
    let created = if path.exists() {
        false
    } else {
        if let Some(dir) = path.parent() {
            crate::files::create_dir(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let key = Key::random();
        write_private(path, hex::encode(key.0).as_bytes()).with_context(|| format!("writing key file {}", path.display()))?;
        true
    };
    Ok((read_key(path)?, created))
}

/// The hub secret: keys derived from it hash access codes (so a stolen database does not allow
/// an offline search of the code space) and sign DLX bearer tokens. Shared by all hubs of one
/// system; kept with the key-encryption key, apart from database backups.
#[derive(Clone)]
pub struct HubSecret {
    code_key: [u8; 32],
    jwt_key: [u8; 32],
}

impl HubSecret {
    pub fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        let (root, created) = load_or_create_key(path)?;
        Ok((Self { code_key: derive(&root, "ferry-access-code"), jwt_key: derive(&root, "ferry-dlx-token") }, created))
    }

    /// HMAC-SHA256 of an access code (already normalised), hex.
    pub fn code_hash(&self, code: &str) -> String {
        hex::encode(hmac_sha256(&self.code_key, code.as_bytes()))
    }

    /// A number 0–255 that only the hub can compute for a code (keyed like the code hash, in its
    /// own domain): chooses the question shown for a code that names no share, so that one
    /// stays the same on every lookup.
    pub fn decoy_seed(&self, code: &str) -> u8 {
        hmac_sha256(&self.code_key, format!("decoy-question\0{code}").as_bytes())[0]
    }

    /// The key that signs and checks DLX bearer tokens (HS256).
    pub fn jwt_key(&self) -> hmac::Hmac<sha2::Sha256> {
        use hmac::Mac;
        #[allow(clippy::expect_used)] // HMAC takes keys of any length
        <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&self.jwt_key).expect("HMAC key")
    }
}

fn derive(root: &Key, label: &str) -> [u8; 32] {
    hmac_sha256(&root.0, label.as_bytes())
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    #[allow(clippy::expect_used)] // HMAC takes keys of any length
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key).expect("HMAC key");
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    f.write_all(data)?;
    f.sync_all()
}

impl KeyProvider for LocalKeyFile {
    fn wrap<'a>(&'a self, dek: &'a Key, context: &'a str) -> BoxFuture<'a, anyhow::Result<(String, String)>> {
        Box::pin(async move {
            // New study keys are rare: look whether a rotation changed the file first.
            self.rescan();
            let id = self.current_id();
            let key = self.key(&id).context("the current key-encryption key is not loaded")?;
            Ok((key.wrap(&dek.0, context.as_bytes()), id))
        })
    }

    fn unwrap_key<'a>(&'a self, kek_id: &'a str, wrapped: &'a str, context: &'a str) -> BoxFuture<'a, anyhow::Result<Key>> {
        Box::pin(async move {
            let key = match self.key(kek_id) {
                Some(k) => k,
                None => {
                    self.rescan();
                    self.key(kek_id).with_context(|| format!("study key is wrapped by an unknown KEK {kek_id}"))?
                }
            };
            key.unwrap_key(wrapped, context.as_bytes())
        })
    }
}

/// The study data keys, backed by the database and the KEK provider.
#[derive(Clone)]
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
    /// Study keys unwrapped lately, by study and wrapped form, so a study's images do not cost a
    /// call to an external key service per request. The database row is read first every time:
    /// a shredded study finds no row and no cached key is used.
    unwrapped: Arc<std::sync::Mutex<UnwrappedKeys>>,
}

/// (study UID, wrapped key) → (data key, when unwrapped)
type UnwrappedKeys = std::collections::HashMap<(String, String), (Key, std::time::Instant)>;

/// How long an unwrapped study key is kept, and how many at most.
const UNWRAPPED_TTL: std::time::Duration = std::time::Duration::from_secs(300);
const UNWRAPPED_MAX: usize = 4096;

/// Associated data of every wrapped blob key.
const BLOB_KEY_CONTEXT: &[u8] = b"ferry-blob-key";

/// The data keys one reader needs, one after another: a study's blobs share a key, so the last
/// one is kept (a WADO-RS retrieve or a ZIP unwraps it once, not once per instance).
#[derive(Default)]
pub struct KeyCache {
    last: Option<(String, Key)>,
}

impl KeyCache {
    /// The key of a blob whose key is `wrapped` under the data key `key_id`; 410 Gone when the
    /// data key was shredded.
    pub async fn blob_key(&mut self, keyring: &Keyring, db: &Db, key_id: &str, wrapped: &str) -> Result<Key, crate::error::AppError> {
        let data_key = match &self.last {
            Some((id, k)) if id == key_id => k.clone(),
            _ => {
                let k = keyring
                    .study_key(db, key_id)
                    .await?
                    .ok_or_else(|| crate::error::AppError::Gone("the study's data has been deleted".into()))?;
                self.last = Some((key_id.to_string(), k.clone()));
                k
            }
        };
        data_key.unwrap_key(wrapped, BLOB_KEY_CONTEXT).map_err(crate::error::AppError::Internal)
    }
}

/// Returned when a study has no data key any more (it was shredded).
#[derive(Debug, thiserror::Error)]
#[error("the study's data key is gone (shredded)")]
pub struct Shredded;

impl Keyring {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self { provider, unwrapped: Arc::default() }
    }

    pub(crate) fn context(key_id: &str) -> String {
        format!("ferry-study-key:{key_id}")
    }

    /// The study's data key, created (race-free across hub processes) when it has none yet.
    pub async fn study_key_or_create(&self, db: &Db, write: &Db, key_id: &str) -> anyhow::Result<Key> {
        if let Some(k) = self.study_key(db, key_id).await? {
            return Ok(k);
        }
        let dek = Key::random();
        let (wrapped, kek_id) = self.provider.wrap(&dek, &Self::context(key_id)).await?;
        sqlx::query(
            "INSERT INTO study_keys (key_id, wrapped_key, kek_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (key_id) DO NOTHING",
        )
        .bind(key_id)
        .bind(&wrapped)
        .bind(&kek_id)
        .bind(now_ms())
        .execute(write)
        .await?;
        // Another upload may have won the race: use whichever key is stored.
        self.study_key(write, key_id).await?.context("study key vanished after insert")
    }

    /// The study's data key, if it has one.
    pub async fn study_key(&self, db: &Db, key_id: &str) -> anyhow::Result<Option<Key>> {
        let row: Option<StoredKey> =
            sqlx::query_as("SELECT key_id, wrapped_key, kek_id FROM study_keys WHERE key_id = $1").bind(key_id).fetch_optional(db).await?;
        match row {
            None => Ok(None),
            Some(StoredKey { wrapped_key: wrapped, kek_id, .. }) => {
                let slot = (key_id.to_string(), wrapped);
                {
                    let cache = self.unwrapped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    if let Some((k, at)) = cache.get(&slot)
                        && at.elapsed() < UNWRAPPED_TTL
                    {
                        return Ok(Some(k.clone()));
                    }
                }
                let key = self.provider.unwrap_key(&kek_id, &slot.1, &Self::context(key_id)).await?;
                let mut cache = self.unwrapped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if cache.len() >= UNWRAPPED_MAX {
                    cache.retain(|_, (_, at)| at.elapsed() < UNWRAPPED_TTL);
                    if cache.len() >= UNWRAPPED_MAX {
                        cache.clear();
                    }
                }
                cache.insert(slot, (key.clone(), std::time::Instant::now()));
                Ok(Some(key))
            }
        }
    }

    /// Unwraps a blob key with the data key `key_id`.
    pub async fn blob_key(&self, db: &Db, key_id: &str, wrapped: &str) -> anyhow::Result<Key> {
        let study = self.study_key(db, key_id).await?.ok_or(Shredded)?;
        study.unwrap_key(wrapped, BLOB_KEY_CONTEXT)
    }

    /// Wraps a new blob's key with the data key `key_id`, which is created when it does not
    /// exist yet. The one place where blob keys are wrapped.
    pub async fn wrap_blob_key(&self, db: &Db, write: &Db, key_id: &str, blob_key: &Key) -> anyhow::Result<String> {
        let study = self.study_key_or_create(db, write, key_id).await?;
        Ok(study.wrap(&blob_key.0, BLOB_KEY_CONTEXT))
    }

    /// Crypto-shreds a study: its data key is deleted, so its blobs can never be decrypted.
    pub async fn shred_study(&self, db: &Db, key_id: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM study_keys WHERE key_id = $1").bind(key_id).execute(db).await?;
        Ok(done.rows_affected() > 0)
    }
}
