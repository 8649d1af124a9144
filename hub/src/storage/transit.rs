//! The key-encryption key in an external key service: the transit secrets engine of OpenBao or
//! HashiCorp Vault (`/v1/<mount>/encrypt|decrypt/<key>`). The KEK never leaves the service; the
//! hub sends it a study's data key to wrap or unwrap, bound to the study by the associated data
//! (`ferry-study-key:<StudyInstanceUID>`), so a wrapped key copied to another study does not
//! unwrap.
//!
//! Rotation: `ferry-hub keys rotate` asks the service for a new key version, re-wraps every study
//! key with it (unwrap + wrap: the transit rewrap call cannot carry associated data), and then
//! raises the key's `min_decryption_version`, so the old version can no longer unwrap anything.
//! Study keys wrapped by the local key file (a hub moving from the local key to the service) are
//! re-wrapped by the service in the same pass.

use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use futures_util::future::BoxFuture;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::crypto::Key;
use super::keys::{KeyProvider, Keyring, LocalKeyFile, StoredKey, keys_not_under};
use crate::config::TransitConfig;
use crate::db::Db;

/// A transit key in OpenBao or Vault.
pub struct TransitKeys {
    client: reqwest::Client,
    /// `<url>/v1/<mount>`
    base: String,
    mount: String,
    key: String,
    token: SecretString,
    namespace: Option<String>,
    /// The local key file, when one exists: unwraps study keys wrapped before the hub moved to
    /// the service, until `keys rotate` has re-wrapped them.
    local: Option<LocalKeyFile>,
}

impl TransitKeys {
    /// The key service the configuration names, with the local key file when one is left from
    /// before the move (it still unwraps the study keys it wrapped).
    pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Self> {
        let kek_file = config.kek_file();
        let local = if kek_file.exists() { Some(LocalKeyFile::load_or_create(&kek_file)?.0) } else { None };
        Self::new(&config.keys.transit, local)
    }

    pub fn new(cfg: &TransitConfig, local: Option<LocalKeyFile>) -> anyhow::Result<Self> {
        let token = match (&cfg.token, &cfg.token_file) {
            (Some(t), _) => t.clone(),
            (None, Some(path)) => SecretString::from(
                std::fs::read_to_string(path).with_context(|| format!("keys.transit.token_file {}", path.display()))?.trim().to_string(),
            ),
            (None, None) => bail!("keys.transit needs a token (keys.transit.token or keys.transit.token_file)"),
        };
        let url = cfg.url.trim_end_matches('/');
        anyhow::ensure!(url.starts_with("http://") || url.starts_with("https://"), "keys.transit.url must be an http(s) URL, got {url:?}");
        // One TLS crypto provider for the process (also when a CLI command gets here first).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(cfg.timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .context("building the HTTP client for the key service")?;
        Ok(Self {
            client,
            base: format!("{url}/v1/{}", cfg.mount.trim_matches('/')),
            mount: cfg.mount.trim_matches('/').to_string(),
            key: cfg.key.clone(),
            token,
            namespace: cfg.namespace.clone(),
            local,
        })
    }

    /// The KEK id stored beside a study key wrapped with `version` of the transit key.
    pub fn kek_id(&self, version: u64) -> String {
        format!("transit:{}/{}:v{version}", self.mount, self.key)
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> anyhow::Result<Value> {
        let url = format!("{}/{path}", self.base);
        let mut req = self.client.request(method, &url).header("X-Vault-Token", self.token.expose_secret());
        if let Some(ns) = &self.namespace {
            req = req.header("X-Vault-Namespace", ns);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| format!("the key service at {} did not answer", self.base))?;
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        if !status.is_success() {
            // The service's own error list ("permission denied", "encryption key not found" …);
            // it never contains key material.
            let errors = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v.get("errors").cloned())
                .map(|e| e.to_string())
                .unwrap_or_else(|| text.chars().take(200).collect());
            bail!("the key service refused {path}: HTTP {status}: {errors}");
        }
        if text.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).with_context(|| format!("the key service's answer to {path} is not JSON"))
    }

    /// Checks that the service answers and the key exists and can wrap and unwrap: the hub does
    /// not start on a key service it cannot use.
    pub async fn check(&self) -> anyhow::Result<u64> {
        let info = self.key_info().await?;
        let probe = Key::random();
        let (wrapped, _) = self.wrap_key(&probe, "ferry-startup-probe").await?;
        let back = self.unwrap_transit(&wrapped, "ferry-startup-probe").await?;
        anyhow::ensure!(back.0 == probe.0, "the key service returned a different key than it wrapped");
        Ok(info.0)
    }

    /// (latest version, min_decryption_version)
    async fn key_info(&self) -> anyhow::Result<(u64, u64)> {
        let v = self.call(reqwest::Method::GET, &format!("keys/{}", self.key), None).await?;
        let d = &v["data"];
        let latest = d["latest_version"].as_u64().context("the key service did not say the key's latest version")?;
        let min = d["min_decryption_version"].as_u64().unwrap_or(1);
        Ok((latest, min))
    }

    async fn wrap_key(&self, dek: &Key, context: &str) -> anyhow::Result<(String, String)> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("encrypt/{}", self.key),
                Some(json!({"plaintext": B64.encode(dek.0), "associated_data": B64.encode(context)})),
            )
            .await?;
        let ct = v["data"]["ciphertext"].as_str().context("the key service returned no ciphertext")?.to_string();
        let version = version_of(&ct).context("the key service returned a ciphertext without a key version")?;
        Ok((ct, self.kek_id(version)))
    }

    async fn unwrap_transit(&self, wrapped: &str, context: &str) -> anyhow::Result<Key> {
        let v = self
            .call(
                reqwest::Method::POST,
                &format!("decrypt/{}", self.key),
                Some(json!({"ciphertext": wrapped, "associated_data": B64.encode(context)})),
            )
            .await?;
        let pt = v["data"]["plaintext"].as_str().context("the key service returned no plaintext")?;
        let raw = B64.decode(pt).context("the key service returned a plaintext that is not base64")?;
        let raw: [u8; 32] = raw.try_into().map_err(|_| anyhow::anyhow!("the key service returned a data key of the wrong length"))?;
        Ok(Key(raw))
    }

    /// Rotates the transit key and re-wraps every study key not wrapped by its newest version,
    /// then makes older versions unusable for decryption.
    pub async fn rotate(&self, db: &Db) -> anyhow::Result<TransitRotated> {
        let (old, _) = self.key_info().await?;
        self.call(reqwest::Method::POST, &format!("keys/{}/rotate", self.key), None).await?;
        let (latest, _) = self.key_info().await?;
        anyhow::ensure!(latest > old, "the key service did not create a new key version");
        let rewrapped = self.rewrap_all(db, latest).await?;
        // Study keys wrapped meanwhile by a running hub that still used the old version.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let rewrapped = rewrapped + self.rewrap_all(db, latest).await?;
        self.call(reqwest::Method::POST, &format!("keys/{}/config", self.key), Some(json!({"min_decryption_version": latest}))).await?;
        Ok(TransitRotated { old_version: old, new_version: latest, rewrapped })
    }

    async fn rewrap_all(&self, db: &Db, latest: u64) -> anyhow::Result<u64> {
        let current = self.kek_id(latest);
        let mut done = 0;
        loop {
            let rows = keys_not_under(db, &current, 200).await?;
            if rows.is_empty() {
                return Ok(done);
            }
            for StoredKey { key_id: study, wrapped_key: wrapped, kek_id } in rows {
                let context = Keyring::context(&study);
                let dek = self.unwrap_key(&kek_id, &wrapped, &context).await.context("re-wrapping a study key")?;
                let (rewrapped, id) = self.wrap_key(&dek, &context).await?;
                let n = sqlx::query("UPDATE study_keys SET wrapped_key = $1, kek_id = $2 WHERE key_id = $3 AND kek_id = $4")
                    .bind(&rewrapped)
                    .bind(&id)
                    .bind(&study)
                    .bind(&kek_id)
                    .execute(db)
                    .await?;
                done += n.rows_affected();
            }
        }
    }
}

/// What a transit rotation did.
#[derive(Debug)]
pub struct TransitRotated {
    pub old_version: u64,
    pub new_version: u64,
    pub rewrapped: u64,
}

/// The key version of a transit ciphertext (`vault:v3:…`).
fn version_of(ciphertext: &str) -> Option<u64> {
    let rest = ciphertext.strip_prefix("vault:v")?;
    rest.split(':').next()?.parse().ok()
}

impl KeyProvider for TransitKeys {
    fn wrap<'a>(&'a self, dek: &'a Key, context: &'a str) -> BoxFuture<'a, anyhow::Result<(String, String)>> {
        Box::pin(self.wrap_key(dek, context))
    }

    fn unwrap_key<'a>(&'a self, kek_id: &'a str, wrapped: &'a str, context: &'a str) -> BoxFuture<'a, anyhow::Result<Key>> {
        Box::pin(async move {
            if kek_id.starts_with("transit:") {
                return self.unwrap_transit(wrapped, context).await;
            }
            match &self.local {
                Some(local) => local.unwrap_key(kek_id, wrapped, context).await,
                None => bail!(
                    "a study key is wrapped by {kek_id}, but the hub now uses the key service and \
                     has no local key file to unwrap it (keys.kek_file)"
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_the_key_version_of_a_ciphertext() {
        assert_eq!(super::version_of("vault:v1:abc"), Some(1));
        assert_eq!(super::version_of("vault:v12:abc"), Some(12));
        assert_eq!(super::version_of("local:abc"), None);
    }
}
