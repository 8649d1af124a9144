//! The long-running service (`run`) and the operator's commands `check` and `status`.

use std::time::Duration;

use ferry_schemas::Heartbeat;

use crate::config::{Config, TargetKind};
use crate::inbound::{self, Inbound, Round};
use crate::state::State;

/// Runs until SIGTERM/Ctrl-C (or, with `once`, until nothing is waiting). A stop between two
/// steps is always safe: the next start resumes from the state directory.
pub async fn run(cfg: &Config, once: bool) -> anyhow::Result<()> {
    let state = State::open(&cfg.state_dir).await?;
    let outbound_only = cfg.inbound_targets().is_empty() && !cfg.outbound.listen.is_empty();
    let mut inbound = if outbound_only { None } else { Some(Inbound::new(cfg, &state).await?) };
    // Heartbeats go through the inbound session; without inbound, through a session of their own.
    let mut beats = match inbound {
        Some(_) => None,
        None => Some(crate::hub::Hub::new(&cfg.hub.url, &cfg.hub.client_id, &cfg.hub.client_secret, &state.instance_id().await?)?),
    };
    // The Storage SCP and the outbound worker run beside the inbound loop until it stops.
    let mut background = tokio::task::JoinSet::new();
    if !once && !cfg.outbound.listen.is_empty() {
        let listener = crate::scp::bind(&cfg.outbound).await?;
        tracing::info!(listen = %cfg.outbound.listen, ae_title = %cfg.outbound.ae_title, "Storage SCP listening");
        background.spawn(crate::scp::serve(listener, cfg.outbound.clone(), state.clone()));
        background.spawn(crate::outbound::run(cfg.clone(), state.clone()));
    }
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let mut backoff = 0u32;
    let mut last_error = String::new();
    tracing::info!(hub = %cfg.hub.url, "ferry-connector running");
    loop {
        let Some(inbound) = inbound.as_mut() else {
            let beat = Heartbeat { version: env!("CARGO_PKG_VERSION").into(), queue_depth: 0, last_error: String::new() };
            if let Some(hub) = beats.as_mut()
                && let Err(e) = hub.heartbeat(&beat).await
            {
                tracing::debug!(error = %format!("{e:#}"), "heartbeat not delivered");
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep(Duration::from_secs(cfg.poll_secs.max(1))) => {}
            }
            continue;
        };
        let pause = match inbound.round().await {
            Ok(Round::Idle) => {
                // The hub answered and nothing failed: an earlier error is over.
                backoff = 0;
                last_error.clear();
                if once {
                    break;
                }
                Duration::from_secs(cfg.poll_secs.max(1))
            }
            Ok(Round::Finished { transfer, stored, message }) => {
                backoff = 0;
                if stored {
                    tracing::info!(%transfer, "transfer stored in the PACS");
                    last_error.clear();
                } else {
                    tracing::warn!(%transfer, %message, "transfer failed");
                    last_error = message;
                }
                Duration::ZERO
            }
            Ok(Round::Retry { transfer, reason }) => {
                if once {
                    anyhow::bail!("transfer {transfer} is not finished yet (it is retried on the next run): {reason}");
                }
                backoff = (backoff + 1).min(6);
                tracing::warn!(%transfer, %reason, "will retry");
                last_error = reason;
                Duration::from_secs(1 << backoff).min(Duration::from_secs(cfg.inbound.retry_max_secs.max(1)))
            }
            Err(e) => {
                backoff = (backoff + 1).min(6);
                last_error = format!("{e:#}");
                tracing::warn!(error = %last_error, "round failed");
                if once {
                    anyhow::bail!(last_error);
                }
                Duration::from_secs(1 << backoff).min(Duration::from_secs(cfg.inbound.retry_max_secs.max(1)))
            }
        };
        let beat =
            Heartbeat { version: env!("CARGO_PKG_VERSION").into(), queue_depth: inbound.queue_depth, last_error: last_error.clone() };
        if let Err(e) = inbound.hub.heartbeat(&beat).await {
            tracing::debug!(error = %format!("{e:#}"), "heartbeat not delivered");
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = tokio::time::sleep(pause) => {}
        }
    }
    background.abort_all();
    tracing::info!("ferry-connector stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => return std::future::pending().await,
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

/// Tests every connection the configuration names; prints one line per check. Ok(false) when
/// anything failed.
pub async fn check(cfg: &Config) -> anyhow::Result<bool> {
    let mut ok = true;
    let mut line = |good: bool, what: String| {
        crate::say!("{} {what}", if good { "OK  " } else { "FAIL" });
        ok &= good;
    };
    match crate::check_hub(&cfg.hub.url).await {
        Ok(v) => line(true, format!("hub {} answers (Ferry {v})", cfg.hub.url)),
        Err(e) => line(false, format!("hub: {e:#}")),
    }
    let mut hub = crate::hub::Hub::new(&cfg.hub.url, &cfg.hub.client_id, &cfg.hub.client_secret, "check")?;
    match hub.token().await {
        Ok(_) => line(true, "hub accepts the connector's credentials".into()),
        Err(e) => line(false, format!("credentials: {e}")),
    }
    let http = reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?;
    for t in &cfg.pacs {
        match &t.kind {
            TargetKind::Dimse { host, port, called_ae, .. } => {
                match crate::dimse::echo(&inbound::peer(t).ok_or_else(|| anyhow::anyhow!("no peer"))?).await {
                    Ok(()) => line(true, format!("PACS {:?}: C-ECHO to {called_ae}@{host}:{port} answered", t.name)),
                    Err(e) => line(false, format!("PACS {:?}: {e:#}", t.name)),
                }
            }
            TargetKind::Dicomweb { url } => {
                let probe = format!("{}/studies?limit=1", url.trim_end_matches('/'));
                match http.get(&probe).header("accept", "application/dicom+json").send().await {
                    Ok(r) if r.status().is_success() || r.status().as_u16() == 204 => {
                        line(true, format!("PACS {:?}: DICOMweb at {url} answers", t.name))
                    }
                    Ok(r) => line(
                        false,
                        format!(
                            "PACS {:?}: DICOMweb at {url} answered HTTP {} (is the URL the DICOMweb root, and does it need credentials?)",
                            t.name,
                            r.status()
                        ),
                    ),
                    Err(e) => line(false, format!("PACS {:?}: cannot reach DICOMweb at {url}: {e}", t.name)),
                }
            }
        }
    }
    if cfg.pacs.is_empty() {
        line(false, "no [[pacs]] target is configured; inbound studies have nowhere to go".into());
    }
    match State::open(&cfg.state_dir).await {
        Ok(_) => line(true, format!("state directory {} is usable", cfg.state_dir.display())),
        Err(e) => line(false, format!("state: {e:#}")),
    }
    Ok(ok)
}

/// Prints what the local state knows: work in progress, recent results and events.
pub async fn status(cfg: &Config) -> anyhow::Result<()> {
    use sqlx::Row;
    let state = State::open(&cfg.state_dir).await?;
    crate::say!("connector instance {}", state.instance_id().await?);
    crate::say!("hub {}", cfg.hub.url);
    let counts = sqlx::query("SELECT state, COUNT(*) FROM transfers GROUP BY state ORDER BY state").fetch_all(&state.db).await?;
    for r in &counts {
        crate::say!("transfers {}: {}", r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
    }
    let working = sqlx::query(
        "SELECT t.id, t.instances, (SELECT COUNT(*) FROM acks a WHERE a.transfer_id = t.id), t.last_error FROM transfers t WHERE t.state = 'working' ORDER BY t.claimed_at",
    )
    .fetch_all(&state.db)
    .await?;
    for r in &working {
        let err: String = r.try_get(3)?;
        crate::say!(
            "in progress {}: {}/{} acknowledged{}",
            r.try_get::<String, _>(0)?,
            r.try_get::<i64, _>(2)?,
            r.try_get::<i64, _>(1)?,
            if err.is_empty() { String::new() } else { format!(" — last error: {err}") }
        );
    }
    let events = sqlx::query("SELECT at, kind, message FROM events ORDER BY at DESC LIMIT 10").fetch_all(&state.db).await?;
    for r in &events {
        let at: i64 = r.try_get(0)?;
        let t = time::OffsetDateTime::from_unix_timestamp(at / 1000)
            .map(|t| format!("{} {:02}:{:02}:{:02}Z", t.date(), t.hour(), t.minute(), t.second()))
            .unwrap_or_default();
        crate::say!("{t} {} {}", r.try_get::<String, _>(1)?, r.try_get::<String, _>(2)?);
    }
    let outbound = sqlx::query("SELECT state, COUNT(*) FROM outbound_batches GROUP BY state ORDER BY state").fetch_all(&state.db).await?;
    for r in &outbound {
        crate::say!("outbound studies {}: {}", r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?);
    }
    let stuck = sqlx::query("SELECT id, last_error FROM outbound_batches WHERE state IN ('routing', 'unrouted', 'failed') AND last_error <> '' ORDER BY last_at DESC LIMIT 10")
        .fetch_all(&state.db)
        .await?;
    for r in &stuck {
        crate::say!("outbound {}: {}", r.try_get::<String, _>(0)?, r.try_get::<String, _>(1)?);
    }
    if counts.is_empty() && outbound.is_empty() {
        crate::say!("nothing handled yet");
    }
    Ok(())
}
