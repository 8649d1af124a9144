//! The connector's side of the hub API: access tokens by OAuth2 client credentials (oauth2
//! crate), claims with a lease, WADO-RS downloads streamed to the spool with size and SHA-256
//! checks, acknowledgements, reports and heartbeats. Every request names this connector process
//! (`Ferry-Connector-Instance`) so a restart resumes the transfers it held.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ferry_schemas::{Ack, Claim, ClaimedInstance, ConnectorReport, Heartbeat, TargetProgress};
use oauth2::basic::BasicClient;
use oauth2::{AsyncHttpClient, ClientId, ClientSecret, HttpRequest, HttpResponse, TokenResponse, TokenUrl};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

/// reqwest 0.13 as oauth2's HTTP client (the crate's own adapter targets another reqwest).
struct Http(reqwest::Client);

#[derive(Debug)]
struct HttpError(String);

impl std::fmt::Display for HttpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

impl<'c> AsyncHttpClient<'c> for Http {
    type Error = HttpError;
    type Future = Pin<Box<dyn Future<Output = Result<HttpResponse, HttpError>> + Send + 'c>>;

    fn call(&'c self, request: HttpRequest) -> Self::Future {
        Box::pin(async move {
            let (parts, body) = request.into_parts();
            let resp = self
                .0
                .request(parts.method, parts.uri.to_string())
                .headers(parts.headers)
                .body(body)
                .send()
                .await
                .map_err(|e| HttpError(format!("{e}")))?;
            let mut builder = oauth2::http::Response::builder().status(resp.status());
            for (k, v) in resp.headers() {
                builder = builder.header(k, v);
            }
            let bytes = resp.bytes().await.map_err(|e| HttpError(format!("{e}")))?;
            builder.body(bytes.to_vec()).map_err(|e| HttpError(format!("{e}")))
        })
    }
}

/// A session with the hub for one connector.
pub struct Hub {
    base: String,
    http: reqwest::Client,
    oauth: Http,
    client_id: String,
    client_secret: String,
    token: Option<(String, Instant)>,
}

/// An error talking to the hub: `Refused` when the credentials are wrong or revoked (no use
/// retrying), `Unreachable` otherwise.
#[derive(Debug)]
pub enum HubError {
    Refused(String),
    Other(anyhow::Error),
}

impl std::fmt::Display for HubError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HubError::Refused(m) => f.write_str(m),
            HubError::Other(e) => write!(f, "{e:#}"),
        }
    }
}

impl std::error::Error for HubError {}

/// The hub says this connector process no longer holds the transfer (its lease ran out and
/// another process took it, or it was finished): stop working on it.
#[derive(Debug)]
pub struct LeaseLost(pub String);

impl std::fmt::Display for LeaseLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the hub no longer lets this connector work on transfer {}", self.0)
    }
}

impl std::error::Error for LeaseLost {}

impl Hub {
    pub fn new(base: &str, client_id: &str, client_secret: &str, instance: &str) -> anyhow::Result<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(ferry_schemas::CONNECTOR_INSTANCE_HEADER, instance.parse()?);
        headers.insert(reqwest::header::USER_AGENT, format!("ferry-connector/{}", env!("CARGO_PKG_VERSION")).parse()?);
        Ok(Self {
            base: base.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .default_headers(headers)
                .connect_timeout(Duration::from_secs(10))
                .read_timeout(Duration::from_secs(120))
                .build()?,
            oauth: Http(reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(Duration::from_secs(20)).build()?),
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            token: None,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// A valid access token, renewed by the client-credentials grant shortly before it expires.
    pub async fn token(&mut self) -> Result<String, HubError> {
        if let Some((t, until)) = &self.token
            && Instant::now() < *until
        {
            return Ok(t.clone());
        }
        let token_url = TokenUrl::new(format!("{}/oauth/token", self.base)).map_err(|e| HubError::Other(e.into()))?;
        let client = BasicClient::new(ClientId::new(self.client_id.clone()))
            .set_client_secret(ClientSecret::new(self.client_secret.clone()))
            .set_token_uri(token_url);
        let resp = client.exchange_client_credentials().request_async(&self.oauth).await.map_err(|e| match e {
            oauth2::RequestTokenError::ServerResponse(r) => HubError::Refused(format!(
                "the hub refused the connector's credentials ({}); check client id and secret, or whether the connector was revoked",
                r.error()
            )),
            oauth2::RequestTokenError::Request(e) => HubError::Other(anyhow::anyhow!("cannot reach the hub at {}: {e}", self.base)),
            other => HubError::Other(anyhow::anyhow!("the hub's token endpoint answered oddly: {other}")),
        })?;
        let token = resp.access_token().secret().clone();
        let secs = resp.expires_in().map(|d| d.as_secs()).unwrap_or(60);
        self.token = Some((token.clone(), Instant::now() + Duration::from_secs(secs.saturating_sub(30).max(1))));
        Ok(token)
    }

    /// A request to the hub API with a valid access token.
    pub async fn request(&mut self, method: reqwest::Method, path: &str) -> Result<reqwest::RequestBuilder, HubError> {
        let token = self.token().await?;
        Ok(self.http.request(method, format!("{}{path}", self.base)).bearer_auth(token))
    }

    /// Which connector the credentials belong to, and its community.
    pub async fn me(&mut self) -> anyhow::Result<ferry_schemas::ConnectorSelf> {
        let resp = self
            .request(reqwest::Method::GET, "/api/v1/connector/me")
            .await?
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        if !resp.status().is_success() {
            bail!("the hub did not say which community the connector serves: HTTP {}", resp.status());
        }
        Ok(resp.json().await?)
    }

    async fn post(&mut self, path: &str, body: Option<&serde_json::Value>) -> anyhow::Result<reqwest::Response> {
        let token = self.token().await?;
        let mut req = self.http.post(format!("{}{path}", self.base)).bearer_auth(token);
        if let Some(b) = body {
            req = req.json(b);
        }
        req.send().await.with_context(|| format!("cannot reach the hub at {}", self.base))
    }

    /// Claims the next transfer (urgent first, then the oldest; never one this process holds).
    pub async fn claim(&mut self) -> anyhow::Result<Option<Claim>> {
        let resp = self.post("/api/v1/connector/claim", None).await?;
        match resp.status().as_u16() {
            204 => Ok(None),
            200 => Ok(Some(resp.json().await?)),
            s => bail!("claiming a transfer failed: HTTP {s}"),
        }
    }

    pub async fn heartbeat(&mut self, h: &Heartbeat) -> anyhow::Result<()> {
        let resp = self.post("/api/v1/connector/heartbeat", Some(&serde_json::to_value(h)?)).await?;
        if !resp.status().is_success() {
            bail!("the hub did not take the heartbeat: HTTP {}", resp.status());
        }
        Ok(())
    }

    /// Acknowledges instances the PACS confirmed (an empty list just renews the lease).
    pub async fn ack(&mut self, transfer_id: &str, acks: &[Ack]) -> anyhow::Result<()> {
        let resp = self.post(&format!("/api/v1/connector/transfers/{transfer_id}/acks"), Some(&serde_json::to_value(acks)?)).await?;
        if resp.status().as_u16() == 409 {
            return Err(LeaseLost(transfer_id.into()).into());
        }
        if !resp.status().is_success() {
            bail!("the hub did not take the acknowledgement: HTTP {}", resp.status());
        }
        Ok(())
    }

    pub async fn report(&mut self, transfer_id: &str, r: &ConnectorReport) -> anyhow::Result<()> {
        let resp = self.post(&format!("/api/v1/connector/transfers/{transfer_id}/state"), Some(&serde_json::to_value(r)?)).await?;
        if resp.status().as_u16() == 409 && r.state != ferry_schemas::Outcome::Stored {
            return Err(LeaseLost(transfer_id.into()).into());
        }
        if !resp.status().is_success() {
            let status = resp.status();
            let detail = resp.json::<ferry_schemas::Problem>().await.ok().and_then(|p| p.detail).unwrap_or_default();
            bail!("the hub did not take the report: HTTP {status} {detail}");
        }
        Ok(())
    }

    /// Tells the hub where each target stands with the transfer (the sender sees it).
    pub async fn targets(&mut self, transfer_id: &str, targets: &[TargetProgress]) -> anyhow::Result<()> {
        let token = self.token().await?;
        let resp = self
            .http
            .put(format!("{}/api/v1/connector/transfers/{transfer_id}/targets", self.base))
            .bearer_auth(token)
            .json(targets)
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        if resp.status().as_u16() == 409 {
            return Err(LeaseLost(transfer_id.into()).into());
        }
        if !resp.status().is_success() {
            bail!("the hub did not take the targets' progress: HTTP {}", resp.status());
        }
        Ok(())
    }

    /// Downloads one instance by WADO-RS into `to`, streamed, and checks size and SHA-256 before
    /// the file gets its final name (a half-downloaded file never looks complete).
    pub async fn download(&self, token: &str, i: &ClaimedInstance, to: &Path) -> anyhow::Result<()> {
        let url = format!("{}/dicomweb/studies/{}/series/{}/instances/{}", self.base, i.study_uid, i.series_uid, i.sop_instance_uid);
        let mut resp = self
            .http
            .get(url)
            .bearer_auth(token)
            .header("accept", "application/dicom")
            .send()
            .await
            .with_context(|| format!("cannot reach the hub at {}", self.base))?;
        if !resp.status().is_success() {
            bail!("downloading {} failed: HTTP {}", i.sop_instance_uid, resp.status());
        }
        let part = to.with_extension("part");
        let mut file = tokio::fs::File::create(&part).await?;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = resp.chunk().await.with_context(|| format!("the download of {} broke off", i.sop_instance_uid))? {
            size += chunk.len() as u64;
            if size > i.size {
                break;
            }
            hash.update(&chunk);
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        drop(file);
        if size != i.size || hex::encode(hash.finalize()) != i.sha256 {
            let _ = tokio::fs::remove_file(&part).await;
            bail!("{} arrived damaged (size or SHA-256 differ from the hub's)", i.sop_instance_uid);
        }
        tokio::fs::rename(&part, to).await?;
        Ok(())
    }
}
