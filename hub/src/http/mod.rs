//! HTTP plumbing every feature uses: the client's address, per-address rate limits, and the
//! parsing of `Accept` and `Content-Type` headers.

pub mod accept;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::response::IntoResponse;
use tower_governor::GovernorLayer;
use tower_governor::governor::{GovernorConfig, GovernorConfigBuilder};
use tower_governor::key_extractor::PeerIpKeyExtractor;

use crate::error::AppError;

/// The client's address, for the audit trail.
pub fn client_addr(ci: &ConnectInfo<SocketAddr>) -> String {
    ci.0.ip().to_string()
}

/// A per-address rate limit (tower-governor): a burst of requests, then one per period. One
/// limit serves every route it wraps, so routes wrapped by the same limit draw on the same
/// budget of an address. Over the limit: 429 with `Retry-After`.
#[derive(Clone)]
pub struct RateLimit(Option<Arc<GovernorConfig<PeerIpKeyExtractor, governor::middleware::NoOpMiddleware>>>);

impl RateLimit {
    /// A burst of `burst` requests per client address, then one per `period_ms`.
    pub fn with(burst: u32, period_ms: u64) -> Self {
        let Some(config) = GovernorConfigBuilder::default()
            .key_extractor(PeerIpKeyExtractor)
            .period(Duration::from_millis(period_ms.max(1)))
            .burst_size(burst.max(1))
            .finish()
        else {
            return Self(None);
        };
        let config = Arc::new(config);
        let limiter = config.limiter().clone();
        // The limiter's memory is bounded by pruning idle addresses now and then.
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(60)).await;
                limiter.retain_recent();
            }
        });
        Self(Some(config))
    }

    /// `routes` behind this limit.
    pub fn wrap<S: Clone + Send + Sync + 'static>(&self, routes: Router<S>) -> Router<S> {
        let Some(config) = &self.0 else { return routes };
        let layer = GovernorLayer::new(config.clone()).error_handler(|e| {
            let wait = match &e {
                tower_governor::GovernorError::TooManyRequests { wait_time, .. } => *wait_time,
                _ => 1,
            };
            AppError::TooManyRequests(wait.max(1)).into_response()
        });
        routes.layer(layer)
    }
}
