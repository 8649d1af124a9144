//! `ferry-hub audit verify`: checks the audit trail's hash chain.

use crate::config::Config;

pub async fn verify(config: Config) -> anyhow::Result<()> {
    let pools = crate::db::connect_pools(&config.database_url(), Some(2)).await?;
    let v = crate::audit::verify(&pools.read).await?;
    super::say!("audit trail intact: {} records, chain head {}", v.records, v.head);
    Ok(())
}
