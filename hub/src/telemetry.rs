//! Tracing setup: readable text in development, JSON lines in production. Request spans carry
//! the request id; nothing here ever logs patient demographics.

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt;
use tracing_subscriber::prelude::*;

use crate::config::LogConfig;

/// Installs the global subscriber. Safe to call more than once (later calls are ignored), so
/// tests that start several hubs in one process can all call it.
pub fn init(config: &LogConfig) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(config.filter.as_str()));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if config.format == "json" {
        registry.with(fmt::layer().json().with_current_span(true).with_writer(std::io::stderr)).try_init()
    } else {
        registry.with(fmt::layer().with_target(false).with_writer(std::io::stderr)).try_init()
    };
}
