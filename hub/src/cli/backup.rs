//! `ferry-hub backup` and `restore`.

use std::path::PathBuf;

use crate::config::Config;

pub async fn backup(config: Config, to: PathBuf, keys_to: Option<PathBuf>) -> anyhow::Result<()> {
    let m = crate::backup::backup(&config, &to, keys_to.as_deref()).await?;
    super::say!("backed up the {} database and {} blob(s) ({} bytes, encrypted) to {}", m.database, m.blobs, m.blob_bytes, to.display());
    match keys_to {
        Some(k) => super::say!("the keys are in {}; keep them apart from the data backup", k.display()),
        None => {
            super::say!(
                "the keys were not copied (--keys-to): without the hub secret and the key-encryption key this backup cannot be read"
            )
        }
    }
    Ok(())
}

pub async fn restore(config: Config, from: PathBuf, keys_from: Option<PathBuf>) -> anyhow::Result<()> {
    let r = crate::backup::restore(&config, &from, keys_from.as_deref()).await?;
    super::say!("restored {} blob(s); {} study key(s) unwrap and {} instance(s) have their blobs", r.blobs, r.studies, r.instances);
    Ok(())
}
