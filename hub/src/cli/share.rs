//! `ferry-hub share create` and `share revoke`: access codes from the command line.

use super::ShareCommand;
use crate::config::Config;

pub async fn run(config: Config, command: ShareCommand) -> anyhow::Result<()> {
    let listen = config.listen;
    let state = crate::startup::build_state(config, listen).await?;
    let err = |e: crate::error::AppError| anyhow::anyhow!("{e}");
    match command {
        ShareCommand::Create { community, studies, patient_id, second_factor, birth_date, days, note, sheet } => {
            let community_id = crate::shares::managed_community(&state, &crate::access::Principal::Admin, &community).await.map_err(err)?;
            let n = ferry_schemas::NewShare {
                community,
                studies,
                patient_id,
                options: ferry_schemas::ShareOptions { second_factor, birth_date, expires_in_days: days, note, ..Default::default() },
            };
            if n.studies.is_empty() && n.patient_id.is_none() {
                anyhow::bail!("name the studies (--study UID) or the patient (--patient-id ID)");
            }
            let issued = match crate::shares::create(&state, "cli", &community_id, &n).await.map_err(err)? {
                Ok(i) => i,
                Err(_) => anyhow::bail!("nothing to share"),
            };
            super::say!("share     {}", issued.share.id);
            super::say!("code      {}", issued.code);
            if let Some(p) = &issued.password {
                super::say!("password  {p}");
            }
            super::say!("link      {}", issued.redeem_url);
            // A date a person reads (UTC), not Unix milliseconds.
            let expires = time::OffsetDateTime::from_unix_timestamp(issued.share.expires_at / 1000)
                .map(|t| format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute()))
                .unwrap_or_else(|_| issued.share.expires_at.to_string());
            super::say!("expires   {expires}");
            if let Some(path) = sheet {
                let row = crate::shares::managed(&state, &crate::access::Principal::Admin, &issued.share.id).await.map_err(err)?;
                let req = ferry_schemas::SheetRequest { code: issued.code.clone(), password: issued.password.clone() };
                let pdf = crate::shares::sheet_for(&state, &row, &req).await.map_err(err)?;
                std::fs::write(&path, pdf).map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
                super::say!("sheet     {}", path.display());
            }
        }
        ShareCommand::Revoke { id } => {
            let row = crate::shares::managed(&state, &crate::access::Principal::Admin, &id).await.map_err(err)?;
            crate::shares::revoke(&state, "cli", &row).await.map_err(err)?;
            super::say!("revoked {id}");
        }
    }
    Ok(())
}
