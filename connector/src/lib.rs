//! Ferry site connector: the service a clinic runs beside its PACS to move studies between the
//! PACS and a Ferry hub. So far it checks that a hub is reachable and healthy, sends studies from
//! the command line ([`send`]), and pulls its community's transfers into a PACS by STOW-RS
//! ([`pull`]); DIMSE C-STORE, durable state, reconciliation and the outbound DICOM node come next.

pub mod pull;
pub mod send;

use ferry_schemas::Health;

/// Asks the hub's `/healthz` and `/readyz`; returns the hub's version or a plain-words error.
pub async fn check_hub(hub_url: &str) -> anyhow::Result<String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()?;
    let base = hub_url.trim_end_matches('/');
    for path in ["/healthz", "/readyz"] {
        let url = format!("{base}{path}");
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("cannot reach the hub at {url}: {e}"))?;
        if !resp.status().is_success() {
            anyhow::bail!("the hub answered {} at {url}", resp.status());
        }
        if path == "/readyz" {
            let h: Health = resp
                .json()
                .await
                .map_err(|e| anyhow::anyhow!("{url} did not answer like a Ferry hub: {e}"))?;
            return Ok(h.version);
        }
    }
    anyhow::bail!("the hub did not answer /readyz")
}
