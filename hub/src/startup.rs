//! Building and running the hub: state, router, listener, background jobs, graceful shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::http::{HeaderName, Method, Request, header};
use secrecy::SecretString;
use tokio::net::TcpListener;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

use crate::config::Config;
use crate::state::AppState;
use crate::storage::BlobStore;
use crate::storage::keys::{Keyring, LocalKeyFile};

pub struct Application {
    listener: TcpListener,
    state: AppState,
}

static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

impl Application {
    /// Prepares everything (data folder, database + migrations, blob store, keys) and binds the
    /// listener; port 0 picks a free port, see [`port`](Self::port).
    pub async fn build(config: Config) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("cannot listen on {}", config.listen))?;
        let bound = listener.local_addr().context("reading the bound address")?;
        let state = build_state(config, bound).await?;
        Ok(Self { listener, state })
    }

    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves until Ctrl-C or SIGTERM.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Serves until `stop` completes; in-flight requests are finished first.
    pub async fn run_until(self, stop: impl std::future::Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = self.state.clone();
        let app = router(state.clone());
        let sweeper = tokio::spawn(sweep_loop(state.clone()));
        let retention = tokio::spawn(retention_loop(state));
        let served = axum::serve(self.listener, app.into_make_service_with_connect_info::<SocketAddr>()).with_graceful_shutdown(stop).await;
        sweeper.abort();
        retention.abort();
        served.context("HTTP server failed")
    }
}

/// Prepares everything a hub needs (data folder, database + migrations, blob store, keys) for
/// a hub reachable at `bound` (unless `public_url` says otherwise). The CLI uses it too.
pub async fn build_state(config: Config, bound: SocketAddr) -> anyhow::Result<AppState> {
    // One TLS crypto provider for the whole process (reqwest/object_store use rustls).
    let _ = rustls::crypto::ring::default_provider().install_default();
    crate::files::create_dir(&config.data_dir).with_context(|| format!("creating data folder {}", config.data_dir.display()))?;
    let pools = crate::db::connect_pools_with(
        &config.database_url(),
        config.database.max_connections,
        config.database.acquire_timeout_secs.map_or(crate::db::DEFAULT_ACQUIRE_TIMEOUT, std::time::Duration::from_secs),
    )
    .await?;
    crate::metrics::init();
    let chained = crate::audit::chain_unchained(&pools.write).await.context("chaining the audit trail")?;
    if chained > 0 {
        tracing::info!(records = chained, "audit records written before the chain existed are now chained");
    }
    let blobs = BlobStore::from_config(&config)?;
    let keys = key_provider(&config).await?;
    let (secret, secret_created) = crate::storage::keys::HubSecret::load_or_create(&config.secret_file())?;
    if secret_created {
        tracing::warn!(
            path = %config.secret_file().display(),
            "generated a new hub secret (it keys the access-code hashes and signs DLX tokens); \
             back it up with the key-encryption key — without it no issued code works"
        );
    }
    let admin_token = admin_token(&config)?;
    let base_url = match &config.public_url {
        Some(u) => u.trim_end_matches('/').to_string(),
        None => format!("http://{bound}"),
    };
    let mailer = crate::mail::Mailer::new(
        config.mail.outbox.clone().unwrap_or_else(|| config.data_dir.join("outbox")),
        config.mail.from.clone().unwrap_or_else(|| "Ferry <ferry@localhost>".into()),
        config.mail.smtp_url.as_ref().map(secrecy::ExposeSecret::expose_secret),
    )?;
    // What features keep for themselves, by type (AppState names no feature).
    let mut features = axum::http::Extensions::new();
    if let Some(ohif) = crate::ohif::from_config(&config)? {
        features.insert(ohif);
    }
    features.insert(crate::communities::DirectoryCache::default());
    features.insert(crate::accounts::oidc::OidcCache::default());
    // Credentials issued by features, tried in this order after the operator token, personal
    // access tokens and sessions.
    features.insert(crate::access::Resolvers {
        bearer: vec![crate::connectors::resolve_bearer, crate::shares::holder::resolve_bearer, crate::accounts::oidc::resolve_bearer],
        cookies: vec![crate::shares::holder::resolve_cookies],
    });
    let state = AppState {
        features: Arc::new(features),
        base_url,
        mailer,
        auth_limit: crate::accounts::auth_limit(&config.auth),
        redeem_limit: crate::http::RateLimit::with(config.shares.rate_burst, config.shares.rate_period_ms),
        audit_recent: Default::default(),
        dlx_downloads: Arc::new(tokio::sync::Semaphore::new(config.shares.dlx_parallel_downloads.max(1) as usize)),
        secret,
        config: Arc::new(config),
        index: crate::ingest::index::IndexWriter::start(pools.write.clone(), pools.dialect),
        db: pools.read,
        db_write: pools.write,
        dialect: pools.dialect,
        blobs,
        keys,
        admin_token,
        render_slots: Arc::new(tokio::sync::Semaphore::new(std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))),
    };
    Ok(state)
}

/// The key-encryption key's provider: the local key file (created when missing), or the
/// external key service, checked before the hub starts (a hub that cannot wrap keys must not
/// take uploads).
pub async fn key_provider(config: &Config) -> anyhow::Result<Keyring> {
    match config.keys.provider {
        crate::config::KeyProviderKind::Local => {
            let (kek, created) = LocalKeyFile::load_or_create(&config.kek_file())?;
            if created {
                tracing::warn!(
                    path = %config.kek_file().display(),
                    "generated a new key-encryption key; back it up and keep it apart from the data \
                     (losing it makes every stored study unreadable)"
                );
            }
            Ok(Keyring::new(Arc::new(kek)))
        }
        crate::config::KeyProviderKind::Transit => {
            let transit = crate::storage::transit::TransitKeys::from_config(config)?;
            let version = transit.check().await.context("the key service (keys.transit) cannot wrap keys")?;
            tracing::info!(url = %config.keys.transit.url, key = %config.keys.transit.key, version, "key-encryption key in the key service");
            Ok(Keyring::new(Arc::new(transit)))
        }
    }
}

/// The admin token: from config, else from `<data_dir>/admin-token`, else newly generated there.
fn admin_token(config: &Config) -> anyhow::Result<SecretString> {
    if let Some(t) = &config.auth.admin_token {
        return Ok(t.clone());
    }
    let path = config.data_dir.join("admin-token");
    if let Ok(t) = std::fs::read_to_string(&path) {
        return Ok(SecretString::from(t.trim().to_string()));
    }
    let token = crate::storage::crypto::Key::random();
    let token = hex::encode(token.0);
    // Created 0600 before the token is written, so it is never readable by others.
    crate::files::create_file(&path).with_context(|| format!("creating {}", path.display()))?;
    std::fs::write(&path, &token).with_context(|| format!("writing {}", path.display()))?;
    tracing::warn!(path = %path.display(), "generated an admin API token (development default); set auth.admin_token in production");
    Ok(SecretString::from(token))
}

pub fn router(state: AppState) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(AllowOrigin::mirror_request())
        .allow_methods([Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE, Method::OPTIONS])
        .allow_headers([
            header::AUTHORIZATION,
            header::ACCEPT,
            header::CONTENT_TYPE,
            X_REQUEST_ID.clone(),
            HeaderName::from_static(ferry_schemas::dlx::HEADER),
        ])
        .expose_headers([header::CONTENT_TYPE, header::CONTENT_LENGTH, header::WARNING, X_REQUEST_ID.clone()])
        .max_age(Duration::from_secs(3600));
    let trace = TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
        let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("");
        // The path only: query strings can carry search terms such as patient names.
        tracing::info_span!(
            "request",
            method = %req.method(),
            path = %req.uri().path(),
            request_id = %request_id,
            principal = tracing::field::Empty,
        )
    });
    Router::new()
        .merge(crate::health::router())
        .nest(
            "/dicomweb",
            crate::dicomweb::router().layer(axum::middleware::from_fn_with_state(state.clone(), crate::dicomweb::audit::record_access)),
        )
        .merge(crate::uploads::router())
        .merge(crate::communities::router())
        .merge(crate::accounts::router(&state))
        .merge(crate::accounts::oidc::router())
        .merge(crate::transfers::router())
        .merge(crate::connectors::router(&state))
        .merge(crate::shares::router(&state))
        .merge(crate::shares::dlx::router(&state))
        .merge(crate::audit_trail::router())
        .merge(crate::ui::router())
        .merge(crate::accounts::auth_pages::router(&state))
        .merge(crate::accounts::pages::router())
        .merge(crate::transfers::pages::router())
        .merge(crate::communities::pages::router())
        .merge(crate::ohif::router(&state))
        .route("/api/v1/openapi.yaml", axum::routing::get(openapi))
        .fallback(crate::error::not_found)
        .layer(axum::middleware::from_fn_with_state(state.clone(), crate::access::headers::security_headers))
        .route_layer(axum::middleware::from_fn(crate::metrics::track))
        .with_state(state)
        .layer(axum::middleware::from_fn(crate::access::guard::cross_origin_guard))
        .layer(axum::middleware::from_fn(crate::audit::client_scope))
        .layer(axum::middleware::from_fn(crate::error::refuse_nul))
        .layer(axum::middleware::from_fn(crate::error::add_request_id))
        .layer(cors)
        .layer(PropagateRequestIdLayer::new(X_REQUEST_ID.clone()))
        .layer(trace)
        .layer(SetRequestIdLayer::new(X_REQUEST_ID.clone(), MakeRequestUuid))
}

async fn openapi() -> impl axum::response::IntoResponse {
    ([(header::CONTENT_TYPE, "application/yaml")], ferry_schemas::OPENAPI_YAML)
}

async fn sweep_loop(state: AppState) {
    let every = Duration::from_secs(state.config.sweep.interval_secs.max(1));
    let age = (state.config.sweep.orphan_age_secs * 1000) as i64;
    loop {
        if let Err(e) = crate::storage::sweep::sweep_orphans(&state.db_write, &state.blobs, age).await {
            tracing::warn!(error = %format!("{e:#}"), "orphan sweep failed");
        }
        tokio::time::sleep(every).await;
    }
}

async fn retention_loop(state: AppState) {
    let every = Duration::from_secs(state.config.retention.interval_secs.max(1));
    loop {
        if let Err(e) = crate::retention::run_once(&state).await {
            tracing::warn!(error = %format!("{e:#}"), "retention run failed");
        }
        tokio::time::sleep(every).await;
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutting down");
}
