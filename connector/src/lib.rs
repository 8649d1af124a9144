//! Ferry site connector: the service a clinic runs beside its PACS to move studies between the
//! PACS and a Ferry hub. `run` pulls the community's transfers into the PACS ([`inbound`]: DIMSE
//! C-STORE or STOW-RS, import reconciliation, durable state); `check` tests every connection;
//! `status` shows the local state; `send` sends files from the command line ([`send`]).

pub mod cli;
pub mod config;
pub mod dimse;
pub mod hub;
pub mod import;
pub mod inbound;
pub mod outbound;
pub mod reconcile;
pub mod scp;
pub mod send;
pub mod service;
pub mod state;

use ferry_schemas::Health;

/// Asks the hub's `/healthz` and `/readyz`; returns the hub's version or a plain-words error.
pub async fn check_hub(hub_url: &str) -> anyhow::Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder().timeout(std::time::Duration::from_secs(10)).build()?;
    let base = hub_url.trim_end_matches('/');
    for path in ["/healthz", "/readyz"] {
        let url = format!("{base}{path}");
        let resp = client.get(&url).send().await.map_err(|e| anyhow::anyhow!("cannot reach the hub at {url}: {e}"))?;
        if !resp.status().is_success() {
            anyhow::bail!("the hub answered {} at {url}", resp.status());
        }
        if path == "/readyz" {
            let h: Health = resp.json().await.map_err(|e| anyhow::anyhow!("{url} did not answer like a Ferry hub: {e}"))?;
            return Ok(h.version);
        }
    }
    anyhow::bail!("the hub did not answer /readyz")
}

/// Prints a line of the command's output. A reader that went away (`… | head -n 1`) ends the
/// output: the command stops quietly with success instead of panicking as `println!` does.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::say_line(format_args!($($arg)*))
    };
}

#[doc(hidden)]
pub fn say_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("ferry-connector: cannot write the output: {e}");
        std::process::exit(1);
    }
}
