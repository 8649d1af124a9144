//! `ferry-hub keys rotate` and `keys status`: the key-encryption key, local or in the key service.

use anyhow::Context;

use super::KeysCommand;
use crate::config::Config;

pub async fn run(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    use crate::storage::keys;
    if config.keys.provider == crate::config::KeyProviderKind::Transit {
        return run_transit(config, command).await;
    }
    let kek_file = config.kek_file();
    if !kek_file.exists() {
        anyhow::bail!("there is no key-encryption key at {} (is --data-dir or keys.kek_file right?)", kek_file.display());
    }
    let pools = crate::db::connect_pools(&config.database_url(), Some(2)).await?;
    match command {
        KeysCommand::Rotate => {
            let r = keys::rotate_local(&pools.write, &kek_file).await?;
            super::say!("rotated the key-encryption key: {} -> {}", r.old_id, r.new_id);
            super::say!("re-wrapped {} study key(s); the images were not touched", r.rewrapped);
            super::say!("the new key is {}; back it up now", kek_file.display());
            super::say!("the old key is no longer needed: delete {} once the new key is backed up", r.retired_file.display());
        }
        KeysCommand::Status => {
            let (current, _) = keys::LocalKeyFile::load_or_create(&kek_file)?;
            let current = current.current_id();
            super::say!("current key-encryption key: {current}");
            for (id, n) in keys::kek_usage(&pools.read).await? {
                super::say!("{n:8} study key(s) wrapped by {id}{}", if id == current { " (current)" } else { "" });
            }
        }
    }
    Ok(())
}

async fn run_transit(config: Config, command: KeysCommand) -> anyhow::Result<()> {
    use crate::storage::{keys, transit};
    let t = transit::TransitKeys::from_config(&config)?;
    let latest = t.check().await.context("the key service (keys.transit)")?;
    let pools = crate::db::connect_pools(&config.database_url(), Some(2)).await?;
    match command {
        KeysCommand::Rotate => {
            let r = t.rotate(&pools.write).await?;
            super::say!("rotated the transit key {}: v{} -> v{}", config.keys.transit.key, r.old_version, r.new_version);
            super::say!("re-wrapped {} study key(s); the images were not touched", r.rewrapped);
            super::say!("versions before v{} can no longer decrypt (min_decryption_version)", r.new_version);
            if config.kek_file().exists() {
                super::say!("no study key needs the local key file any more: {} can be deleted", config.kek_file().display());
            }
        }
        KeysCommand::Status => {
            let current = t.kek_id(latest);
            super::say!("current key-encryption key: {current}");
            for (id, n) in keys::kek_usage(&pools.read).await? {
                super::say!("{n:8} study key(s) wrapped by {id}{}", if id == current { " (current)" } else { "" });
            }
        }
    }
    Ok(())
}
