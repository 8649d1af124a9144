//! `ferry-hub admin`: the first accounts, communities and memberships.

use super::AdminCommand;
use crate::config::Config;

pub async fn run(config: Config, command: AdminCommand) -> anyhow::Result<()> {
    crate::files::create_dir(&config.data_dir)?;
    let pools = crate::db::connect_pools(&config.database_url(), Some(2)).await?;
    match command {
        AdminCommand::CreateCommunity { name, city, code, address, departments, contact, no_inbound, logo } => {
            // Checked before anything is created, so a bad logo leaves no half-made community.
            let logo = match logo {
                Some(path) => {
                    let bytes = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read the logo {}: {e}", path.display()))?;
                    crate::communities::logo::check(&bytes).map_err(|e| anyhow::anyhow!("logo {}: {e}", path.display()))?;
                    Some(bytes)
                }
                None => None,
            };
            let new = ferry_schemas::NewCommunity { name, code, city, address, departments, contact, accepts_inbound: Some(!no_inbound) };
            let c = crate::communities::create(&pools.write, "cli", &new).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(bytes) = logo {
                let id = crate::communities::staff::community_id_in(&pools.read, &c.code).await.map_err(|e| anyhow::anyhow!("{e}"))?;
                crate::communities::logo::store(&pools.write, &id, &bytes).await.map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            super::say!("{}\t{}", c.code, c.name);
        }
        AdminCommand::CreateUser { email, name, admin, password_stdin } => {
            let (password, generated) = if password_stdin {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line)?;
                (line.trim_end_matches(['\r', '\n']).to_string(), false)
            } else {
                (crate::access::tokens::new_secret("")[..20].to_string(), true)
            };
            let id = crate::accounts::create_user_cli(&pools.write, &email, &name, password.clone(), admin)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
            super::say!("created account {id}{}", if admin { " (hub admin)" } else { "" });
            if generated {
                super::say!("password (shown once): {password}");
            }
        }
        AdminCommand::AddMember { community, email, role } => {
            let state_less = crate::communities::staff::add_member_cli(&pools, &community, &email, &role).await;
            state_less.map_err(|e| anyhow::anyhow!("{e}"))?;
            super::say!("{email} is now {role} of {community}");
        }
    }
    Ok(())
}
