//! Key hierarchy: a key-encryption key (KEK) from a [`KeyProvider`] wraps one random data key per
//! study (table `study_keys`); each blob has its own random key, wrapped by its study's data key
//! (column `instances.blob_key`). Deleting a study's data key therefore makes every blob of the
//! study unreadable (crypto-shredding), and rotating the KEK only re-wraps the study keys.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use futures_util::future::BoxFuture;
use sqlx::Row;

use super::crypto::Key;
use crate::db::{Db, now_ms};

/// Where the key-encryption key lives. The local key file is the default; an external key
/// service (e.g. a transit-encryption API) implements the same two calls.
pub trait KeyProvider: Send + Sync {
    /// Identifies the KEK that [`wrap`](Self::wrap) uses now (stored beside each wrapped key).
    fn kek_id(&self) -> &str;
    fn wrap<'a>(&'a self, dek: &'a Key, context: &'a str) -> BoxFuture<'a, anyhow::Result<String>>;
    fn unwrap_key<'a>(
        &'a self,
        kek_id: &'a str,
        wrapped: &'a str,
        context: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Key>>;
}

/// A KEK kept in a local file (64 hex characters), created with mode 0600 when missing.
pub struct LocalKeyFile {
    id: String,
    key: Key,
}

impl LocalKeyFile {
    /// Loads the key file, creating it when it does not exist. Returns whether it was created.
    pub fn load_or_create(path: &Path) -> anyhow::Result<(Self, bool)> {
        let (key, created) = load_or_create_key(path)?;
        let id = {
            use sha2::Digest;
            format!("local:{}", &hex::encode(sha2::Sha256::digest(key.0))[..16])
        };
        Ok((Self { id, key }, created))
    }
}

/// Reads a 32-byte key kept as 64 hex characters, creating the file (mode 0600) when missing.
fn load_or_create_key(path: &Path) -> anyhow::Result<(Key, bool)> {
    let created = if path.exists() {
        false
    } else {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let key = Key::random();
        write_private(path, hex::encode(key.0).as_bytes())
            .with_context(|| format!("writing key file {}", path.display()))?;
        true
    };
    let text = std::fs::read_to_string(path).with_context(|| format!("reading key file {}", path.display()))?;
    let raw = hex::decode(text.trim())
        .ok()
        .filter(|b| b.len() == 32)
        .with_context(|| format!("key file {} must hold 64 hex characters", path.display()))?;
    let mut k = [0u8; 32];
    k.copy_from_slice(&raw);
    Ok((Key(k), created))
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
    fn kek_id(&self) -> &str {
        &self.id
    }

    fn wrap<'a>(&'a self, dek: &'a Key, context: &'a str) -> BoxFuture<'a, anyhow::Result<String>> {
        Box::pin(async move { Ok(self.key.wrap(&dek.0, context.as_bytes())) })
    }

    fn unwrap_key<'a>(
        &'a self,
        kek_id: &'a str,
        wrapped: &'a str,
        context: &'a str,
    ) -> BoxFuture<'a, anyhow::Result<Key>> {
        Box::pin(async move {
            anyhow::ensure!(kek_id == self.id, "study key is wrapped by an unknown KEK {kek_id}");
            self.key.unwrap_key(wrapped, context.as_bytes())
        })
    }
}

/// The study data keys, backed by the database and the KEK provider.
#[derive(Clone)]
pub struct Keyring {
    provider: Arc<dyn KeyProvider>,
}

/// Returned when a study has no data key any more (it was shredded).
#[derive(Debug, thiserror::Error)]
#[error("the study's data key is gone (shredded)")]
pub struct Shredded;

impl Keyring {
    pub fn new(provider: Arc<dyn KeyProvider>) -> Self {
        Self { provider }
    }

    fn context(study_uid: &str) -> String {
        format!("ferry-study-key:{study_uid}")
    }

    /// The study's data key, created (race-free across hub processes) when it has none yet.
    pub async fn study_key_or_create(&self, db: &Db, write: &Db, study_uid: &str) -> anyhow::Result<Key> {
        if let Some(k) = self.study_key(db, study_uid).await? {
            return Ok(k);
        }
        let dek = Key::random();
        let wrapped = self.provider.wrap(&dek, &Self::context(study_uid)).await?;
        sqlx::query(
            "INSERT INTO study_keys (study_uid, wrapped_key, kek_id, created_at) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (study_uid) DO NOTHING",
        )
        .bind(study_uid)
        .bind(&wrapped)
        .bind(self.provider.kek_id())
        .bind(now_ms())
        .execute(write)
        .await?;
        // Another upload may have won the race: use whichever key is stored.
        self.study_key(write, study_uid).await?.context("study key vanished after insert")
    }

    /// The study's data key, if it has one.
    pub async fn study_key(&self, db: &Db, study_uid: &str) -> anyhow::Result<Option<Key>> {
        let row = sqlx::query("SELECT wrapped_key, kek_id FROM study_keys WHERE study_uid = $1")
            .bind(study_uid)
            .fetch_optional(db)
            .await?;
        match row {
            None => Ok(None),
            Some(row) => {
                let wrapped: String = row.try_get(0)?;
                let kek_id: String = row.try_get(1)?;
                let key =
                    self.provider.unwrap_key(&kek_id, &wrapped, &Self::context(study_uid)).await?;
                Ok(Some(key))
            }
        }
    }

    /// Unwraps a blob key with the study's data key.
    pub async fn blob_key(&self, db: &Db, study_uid: &str, wrapped: &str) -> anyhow::Result<Key> {
        let study = self.study_key(db, study_uid).await?.ok_or(Shredded)?;
        study.unwrap_key(wrapped, b"ferry-blob-key")
    }

    /// Crypto-shreds a study: its data key is deleted, so its blobs can never be decrypted.
    pub async fn shred_study(&self, db: &Db, study_uid: &str) -> anyhow::Result<bool> {
        let done = sqlx::query("DELETE FROM study_keys WHERE study_uid = $1")
            .bind(study_uid)
            .execute(db)
            .await?;
        Ok(done.rows_affected() > 0)
    }
}
