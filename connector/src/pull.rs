//! Inbound, first slice: pulls the transfers sent to the connector's community and stores them
//! into a PACS by DICOMweb STOW-RS. Each instance is downloaded by WADO-RS, checked against the
//! size and SHA-256 the hub gave, stored, and acknowledged to the hub only after the PACS listed
//! it in its ReferencedSOPSequence. A transfer whose instances keep failing is reported `failed`
//! with the PACS's answer. (DIMSE C-STORE, durable local state and reconciliation come next.)

use std::time::Duration;

use anyhow::{Context, bail};
use ferry_schemas::{Ack, Claim, ClaimedInstance, ConnectorReport};
use sha2::{Digest, Sha256};

pub struct PullOptions {
    pub hub: String,
    pub client_id: String,
    pub client_secret: String,
    /// The PACS's DICOMweb root, e.g. `http://pacs:8042/dicom-web`.
    pub stow_url: String,
    /// Attempts per instance before the transfer is reported failed.
    pub attempts: u32,
}

/// A hub session: an access token from the client-credentials grant, renewed when it expires.
pub struct Hub {
    base: String,
    http: reqwest::Client,
    client_id: String,
    client_secret: String,
    token: Option<(String, std::time::Instant)>,
}

impl Hub {
    pub fn new(base: &str, client_id: &str, client_secret: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?,
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            token: None,
        })
    }

    async fn token(&mut self) -> anyhow::Result<String> {
        if let Some((t, until)) = &self.token
            && std::time::Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let resp = self
            .http
            .post(format!("{}/oauth/token", self.base))
            .basic_auth(&self.client_id, Some(&self.client_secret))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        if !resp.status().is_success() {
            bail!("the hub refused the connector's credentials ({}); check client id and secret, or whether the connector was revoked", resp.status());
        }
        let v: serde_json::Value = resp.json().await?;
        let token = v["access_token"].as_str().context("the token endpoint sent no access_token")?.to_string();
        let secs = v["expires_in"].as_u64().unwrap_or(60);
        // Renewed a little early, so a request never goes out with a token about to expire.
        self.token = Some((token.clone(), std::time::Instant::now() + Duration::from_secs(secs.saturating_sub(30).max(1))));
        Ok(token)
    }

    async fn post_json(&mut self, path: &str, body: &impl serde::Serialize) -> anyhow::Result<reqwest::Response> {
        let token = self.token().await?;
        Ok(self.http.post(format!("{}{path}", self.base)).bearer_auth(token).json(body).send().await?)
    }

    /// Claims the next waiting transfer, if any.
    pub async fn claim(&mut self) -> anyhow::Result<Option<Claim>> {
        let token = self.token().await?;
        let resp = self.http.post(format!("{}/api/v1/connector/claim", self.base)).bearer_auth(token).send().await?;
        match resp.status().as_u16() {
            204 => Ok(None),
            200 => Ok(Some(resp.json().await?)),
            s => bail!("claiming a transfer failed: HTTP {s}"),
        }
    }

    async fn download(&mut self, i: &ClaimedInstance) -> anyhow::Result<Vec<u8>> {
        let token = self.token().await?;
        let url = format!("{}/dicomweb/studies/{}/series/{}/instances/{}", self.base, i.study_uid, i.series_uid, i.sop_instance_uid);
        let resp = self.http.get(url).bearer_auth(token).header("accept", "application/dicom").send().await?;
        if !resp.status().is_success() {
            bail!("downloading {} failed: HTTP {}", i.sop_instance_uid, resp.status());
        }
        let bytes = resp.bytes().await?.to_vec();
        if bytes.len() as u64 != i.size || hex::encode(Sha256::digest(&bytes)) != i.sha256 {
            bail!("{} arrived damaged (size or SHA-256 differ from the hub's)", i.sop_instance_uid);
        }
        Ok(bytes)
    }
}

/// Stores one instance by STOW-RS; Ok when the PACS lists it as stored.
async fn stow(http: &reqwest::Client, stow_url: &str, sop: &str, bytes: Vec<u8>) -> anyhow::Result<()> {
    let boundary = format!("ferry-{}", &hex::encode(Sha256::digest(sop.as_bytes()))[..16]);
    let mut body = format!("--{boundary}\r\nContent-Type: application/dicom\r\n\r\n").into_bytes();
    body.extend_from_slice(&bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let resp = http
        .post(format!("{}/studies", stow_url.trim_end_matches('/')))
        .header("content-type", format!("multipart/related; type=\"application/dicom\"; boundary={boundary}"))
        .header("accept", "application/dicom+json")
        .body(body)
        .send()
        .await
        .with_context(|| format!("cannot reach the PACS at {stow_url}"))?;
    let status = resp.status();
    let answer: serde_json::Value = resp.json().await.unwrap_or_default();
    let stored = answer["00081199"]["Value"]
        .as_array()
        .is_some_and(|refs| refs.iter().any(|r| r["00081155"]["Value"][0].as_str() == Some(sop)));
    if !status.is_success() || !stored {
        let reason = answer["00081198"]["Value"][0]["00081197"]["Value"][0].as_u64();
        bail!("the PACS did not store it (HTTP {status}{})", reason.map(|r| format!(", failure reason 0x{r:04X}")).unwrap_or_default());
    }
    Ok(())
}

/// Handles every waiting transfer once; returns how many transfers were stored and failed.
pub async fn run_once(o: &PullOptions) -> anyhow::Result<(usize, usize)> {
    let mut hub = Hub::new(&o.hub, &o.client_id, &o.client_secret)?;
    let pacs = reqwest::Client::builder().connect_timeout(Duration::from_secs(10)).build()?;
    let (mut stored, mut failed) = (0, 0);
    while let Some(claim) = hub.claim().await? {
        let id = claim.transfer.id.clone();
        let mut error = None;
        for i in claim.instances.iter().filter(|i| !i.acked) {
            let mut last = None;
            for attempt in 0..o.attempts.max(1) {
                if attempt > 0 {
                    tokio::time::sleep(Duration::from_millis(500 << attempt.min(5))).await;
                }
                let result = async {
                    let bytes = hub.download(i).await?;
                    stow(&pacs, &o.stow_url, &i.sop_instance_uid, bytes).await
                }
                .await;
                match result {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(format!("{e:#}")),
                }
            }
            if let Some(e) = last {
                error = Some(e);
                break;
            }
            let acks = [Ack { sop_instance_uid: i.sop_instance_uid.clone(), status: 0 }];
            let r = hub.post_json(&format!("/api/v1/connector/transfers/{id}/acks"), &acks).await?;
            if !r.status().is_success() {
                bail!("the hub did not take the acknowledgement: HTTP {}", r.status());
            }
        }
        let report = match &error {
            None => ConnectorReport { state: "stored".into(), message: String::new() },
            Some(e) => ConnectorReport { state: "failed".into(), message: e.clone() },
        };
        let r = hub.post_json(&format!("/api/v1/connector/transfers/{id}/state"), &report).await?;
        if !r.status().is_success() {
            bail!("the hub did not take the report: HTTP {}", r.status());
        }
        if error.is_some() {
            failed += 1;
            eprintln!("transfer {id} failed: {}", report.message);
        } else {
            stored += 1;
            eprintln!("transfer {id}: {} instance(s) stored in the PACS", claim.instances.len());
        }
    }
    Ok((stored, failed))
}
