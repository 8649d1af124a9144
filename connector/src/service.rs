//! The long-running service (`run`) and the operator's commands `check` and `status`.

use std::time::{Duration, Instant};

use ferry_schemas::Heartbeat;

use crate::config::{Config, TargetKind};
use crate::inbound::{self, Inbound};
use crate::state::{State, now_ms};

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
    // The hub's own trouble (it could not be reached), with the time it began.
    let mut hub_error: Option<(String, i64)> = None;
    // What the hub last heard, and when: a changed health is sent at once, else every few seconds.
    let mut beat_sent: Option<(Heartbeat, Instant)> = None;
    let beat_every = Duration::from_secs(cfg.poll_secs.clamp(1, 5));
    tracing::info!(hub = %cfg.hub.url, "ferry-connector running");
    loop {
        let Some(inbound) = inbound.as_mut() else {
            let beat = heartbeat(0, None, vec![]);
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
        let pause = match inbound.step().await {
            Ok(step) => {
                for (transfer, stored, message) in &step.finished {
                    if *stored {
                        tracing::info!(%transfer, "transfer stored in the PACS");
                    } else {
                        tracing::warn!(%transfer, %message, "transfer failed");
                    }
                }
                match step.hub_error {
                    Some(e) => {
                        let at = hub_error.as_ref().map_or_else(now_ms, |(_, at)| *at);
                        hub_error = Some((e, at));
                        backoff = (backoff + 1).min(6);
                    }
                    None => {
                        // The hub answered: an earlier hub error is over.
                        hub_error = None;
                        backoff = 0;
                    }
                }
                if once {
                    if step.idle {
                        break;
                    }
                    if let Some((e, _)) = &hub_error {
                        anyhow::bail!("{e}");
                    }
                    if let Some(why) = step.waiting {
                        anyhow::bail!("not every transfer is finished yet (it is retried on the next run): {why}");
                    }
                }
                if backoff > 0 {
                    step.next_in.max(Duration::from_secs(1 << backoff).min(Duration::from_secs(cfg.inbound.retry_max_secs.max(1))))
                } else {
                    step.next_in
                }
            }
            Err(e) => {
                // The local state failed (disk full, database locked): nothing to do but retry.
                let msg = format!("{e:#}");
                tracing::warn!(error = %msg, "step failed");
                if once {
                    anyhow::bail!(msg);
                }
                let at = hub_error.as_ref().map_or_else(now_ms, |(_, at)| *at);
                hub_error = Some((msg, at));
                backoff = (backoff + 1).min(6);
                Duration::from_secs(1 << backoff).min(Duration::from_secs(cfg.inbound.retry_max_secs.max(1)))
            }
        };
        let error = hub_error.clone().or_else(|| inbound.current_error());
        let beat = heartbeat(inbound.queue_depth(), error, inbound.target_health());
        let due = match &beat_sent {
            None => true,
            Some((last, at)) => {
                let retrying = |h: &Heartbeat| h.targets.iter().map(|t| t.retrying).collect::<Vec<_>>();
                at.elapsed() >= beat_every || last.last_error != beat.last_error || retrying(last) != retrying(&beat)
            }
        };
        if due {
            match inbound.hub.heartbeat(&beat).await {
                Ok(()) => beat_sent = Some((beat, Instant::now())),
                Err(e) => tracing::debug!(error = %format!("{e:#}"), "heartbeat not delivered"),
            }
        }
        tokio::select! {
            _ = &mut stop => break,
            _ = inbound.wait(pause.min(beat_every)) => {}
        }
    }
    background.abort_all();
    tracing::info!("ferry-connector stopped");
    Ok(())
}

fn heartbeat(queue_depth: i64, error: Option<(String, i64)>, targets: Vec<ferry_schemas::TargetHealth>) -> Heartbeat {
    let (last_error, last_error_at) = match error {
        Some((e, at)) => (e, Some(at)),
        None => (String::new(), None),
    };
    Heartbeat { version: env!("CARGO_PKG_VERSION").into(), queue_depth, last_error, last_error_at, targets }
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
    let state = State::open(&cfg.state_dir).await?;
    crate::say!("connector instance {}", state.instance_id().await?);
    crate::say!("hub {}", cfg.hub.url);
    let counts: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM transfers GROUP BY state ORDER BY state").fetch_all(&state.db).await?;
    for (st, n) in &counts {
        crate::say!("transfers {st}: {n}");
    }
    let working: Vec<(String, i64, i64, String)> = sqlx::query_as(
        "SELECT t.id, t.instances, (SELECT COUNT(*) FROM acks a WHERE a.transfer_id = t.id), t.last_error FROM transfers t WHERE t.state = 'working' ORDER BY t.claimed_at",
    )
    .fetch_all(&state.db)
    .await?;
    for (id, instances, acked, err) in &working {
        let err = if err.is_empty() { String::new() } else { format!(" — last error: {err}") };
        crate::say!("in progress {id}: {acked}/{instances} acknowledged{err}");
    }
    let pairs: Vec<(String, String, i64, Option<i64>, String, i64)> = sqlx::query_as(
        "SELECT p.transfer_id, p.target, p.refusals, p.failing_since, p.last_answer, p.failed FROM pairs p \
         JOIN transfers t ON t.id = p.transfer_id WHERE t.state = 'working' AND (p.failing_since IS NOT NULL OR p.failed = 1) \
         ORDER BY p.transfer_id, p.target",
    )
    .fetch_all(&state.db)
    .await?;
    for (transfer, target, refusals, since, answer, failed) in &pairs {
        let what = if *failed != 0 { "given up".to_string() } else { format!("retrying since {}", since.map(stamp).unwrap_or_default()) };
        crate::say!("  target {target} for {transfer}: {what} ({refusals} refusal(s)) — {answer}");
    }
    let events: Vec<(i64, String, String)> =
        sqlx::query_as("SELECT at, kind, message FROM events ORDER BY at DESC LIMIT 10").fetch_all(&state.db).await?;
    for (at, kind, message) in &events {
        crate::say!("{} {kind} {message}", stamp(*at));
    }
    let outbound: Vec<(String, i64)> =
        sqlx::query_as("SELECT state, COUNT(*) FROM outbound_batches GROUP BY state ORDER BY state").fetch_all(&state.db).await?;
    for (st, n) in &outbound {
        crate::say!("outbound studies {st}: {n}");
    }
    let stuck: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, last_error FROM outbound_batches WHERE state IN ('routing', 'unrouted', 'failed') AND last_error <> '' ORDER BY last_at DESC LIMIT 10",
    )
    .fetch_all(&state.db)
    .await?;
    for (id, error) in &stuck {
        crate::say!("outbound {id}: {error}");
    }
    if counts.is_empty() && outbound.is_empty() {
        crate::say!("nothing handled yet");
    }
    Ok(())
}

/// `2026-12-07 21:09:53Z` for unix ms.
fn stamp(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .map(|t| format!("{} {:02}:{:02}:{:02}Z", t.date(), t.hour(), t.minute(), t.second()))
        .unwrap_or_default()
}
