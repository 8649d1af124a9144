//! The clinician viewer: the OHIF viewer's prebuilt distribution (`@ohif/app` from the npm
//! registry, fetched by `deploy/ohif/fetch.sh`), served by the hub under `/ohif/` when
//! `viewer.ohif_dir` points at it, on the hub's own DICOMweb with the signed-in user's session
//! cookie: OHIF sees exactly what the access check lets that user see, with no second login and
//! no proxy.
//!
//! The distribution is built for the site root (`PUBLIC_URL="/"`); the hub mounts it under
//! `/ohif/` by rewriting, as it serves them, the root-relative links of `index.html` and the
//! webpack public path of the bundles that set one (kept in memory once rewritten). The runtime
//! configuration (`app-config.js`) is generated: its data source points at this hub's DICOMweb
//! (the public URL behind a reverse proxy). Without `viewer.ohif_dir` the hub runs as before and
//! pages offer no "open in viewer" links.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::Context;
use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use bytes::Bytes;
use tower::ServiceExt;
use tower_http::services::ServeDir;

use crate::access::{MaybePrincipal, Principal};
use crate::state::AppState;

/// Where the viewer lives on the hub.
pub const MOUNT: &str = "/ohif";

/// What a root build's top-level files say and what the hub serves instead: the bundles' webpack
/// public path, and root-relative `url(/…)` in style sheets (the fonts).
const REWRITES: [(&str, &str, &str); 2] =
    [(".js", "__webpack_require__.p = \"/\"", "__webpack_require__.p = \"/ohif/\""), (".css", "url(/", "url(/ohif/")];

/// A loaded OHIF distribution.
pub struct Ohif {
    dir: PathBuf,
    index: Bytes,
    csp: HeaderValue,
    /// Top-level scripts and style sheets already looked at: the rewritten text, or `None` when
    /// served as is.
    rewritten: Mutex<HashMap<String, Option<Bytes>>>,
}

impl std::fmt::Debug for Ohif {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ohif").field("dir", &self.dir).finish_non_exhaustive()
    }
}

impl Ohif {
    /// Loads the distribution in `dir` (the `dist/` folder of `@ohif/app`).
    pub fn load(dir: &Path) -> anyhow::Result<Self> {
        let index_path = dir.join("index.html");
        let html = std::fs::read_to_string(&index_path).with_context(|| {
            format!(
                "viewer.ohif_dir: {} is not an OHIF distribution (no readable index.html); \
                 fetch one with deploy/ohif/fetch.sh",
                dir.display()
            )
        })?;
        anyhow::ensure!(
            html.contains("window.PUBLIC_URL=\"/\""),
            "viewer.ohif_dir: {} holds an OHIF build whose public URL is not \"/\"; \
             use the npm distribution (deploy/ohif/fetch.sh)",
            dir.display()
        );
        let index = mount_index(&html);
        let csp = HeaderValue::from_str(&csp_for(&index)).context("building the viewer's CSP")?;
        Ok(Self { dir: dir.to_path_buf(), index: Bytes::from(index), csp, rewritten: Mutex::default() })
    }

    /// The rewritten text of a top-level script or style sheet, or `None` when it is served from
    /// disk as is.
    async fn rewritten(&self, name: &str) -> Option<Bytes> {
        let (_, from, to) = REWRITES.iter().find(|(ext, _, _)| name.ends_with(ext))?;
        if let Some(known) = self.rewritten.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(name) {
            return known.clone();
        }
        let text = tokio::fs::read(self.dir.join(name)).await.ok()?;
        let mut out = Vec::new();
        let mut rest = &text[..];
        while let Some(at) = find(rest, from.as_bytes()) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(to.as_bytes());
            rest = &rest[at + from.len()..];
        }
        let rewritten = (!out.is_empty()).then(|| {
            out.extend_from_slice(rest);
            Bytes::from(out)
        });
        self.rewritten.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(name.to_string(), rewritten.clone());
        rewritten
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `index.html` of a root build, mounted under [`MOUNT`].
fn mount_index(html: &str) -> String {
    html.replace("window.PUBLIC_URL=\"/\"", "window.PUBLIC_URL=\"/ohif/\"")
        .replace(" src=\"/", " src=\"/ohif/")
        .replace(" href=\"/", " href=\"/ohif/")
        .replace(" content=\"/", " content=\"/ohif/")
}

/// The viewer's Content-Security-Policy: its own scripts plus the inline ones of `index.html` (by
/// hash), WebAssembly codecs, blob workers, inline styles (the UI library injects them); data
/// only from the hub; no framing.
fn csp_for(index: &str) -> String {
    use base64::Engine;
    use sha2::{Digest, Sha256};
    let mut hashes = String::new();
    let mut rest = index;
    while let Some(open) = rest.find("<script") {
        let after = &rest[open..];
        let Some(tag_end) = after.find('>') else { break };
        let tag = &after[..tag_end];
        let body = &after[tag_end + 1..];
        let Some(close) = body.find("</script>") else { break };
        if !tag.contains(" src=") {
            let digest = Sha256::digest(&body.as_bytes()[..close]);
            hashes.push_str(&format!(" 'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest)));
        }
        rest = &body[close..];
    }
    format!(
        "default-src 'self'; script-src 'self'{hashes} 'wasm-unsafe-eval'; worker-src 'self' blob:; \
         style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; font-src 'self' data:; \
         connect-src 'self' data: blob:; media-src 'self' blob:; object-src 'none'; base-uri 'self'; \
         form-action 'self'; frame-ancestors 'none'"
    )
}

pub fn router(state: &AppState) -> Router<AppState> {
    let r = Router::new().route(MOUNT, get(|| async { Redirect::permanent("/ohif/") }));
    if !installed(state) {
        return r.route("/ohif/", get(not_installed)).route("/ohif/{*path}", get(not_installed));
    }
    r.route("/ohif/", get(index)).route("/ohif/app-config.js", get(app_config)).route("/ohif/{*path}", get(file))
}

async fn not_installed() -> Response {
    crate::error::problem(
        StatusCode::NOT_FOUND,
        Some("the OHIF viewer is not installed on this hub (viewer.ohif_dir; deploy/ohif/fetch.sh)".into()),
    )
}

/// The viewer's page, for signed-in users; others are sent to the sign-in page and back.
async fn index(State(state): State<AppState>, MaybePrincipal(who): MaybePrincipal, req: Request) -> Response {
    let Some(ohif) = state.features.get::<Arc<Ohif>>() else { return not_installed().await };
    if !matches!(who, Some(Principal::User(_))) {
        let back = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/ohif/");
        return Redirect::to(&format!("/login?return_to={}", crate::ui::urlencode(back))).into_response();
    }
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
            (header::CONTENT_SECURITY_POLICY, ohif.csp.clone()),
        ],
        ohif.index.clone(),
    )
        .into_response()
}

/// A file of the distribution; any other path is one of OHIF's own routes (`/ohif/viewer?…`)
/// and gets the page.
async fn file(State(state): State<AppState>, who: MaybePrincipal, req: Request) -> Response {
    let Some(ohif) = state.features.get::<Arc<Ohif>>().cloned() else { return not_installed().await };
    let rel = req.uri().path().strip_prefix("/ohif/").unwrap_or("").to_string();
    let safe = !rel.is_empty() && rel.split('/').all(|s| !s.is_empty() && s != "." && s != ".." && !s.contains('\\'));
    if rel == "index.html" || !safe || !tokio::fs::metadata(ohif.dir.join(&rel)).await.is_ok_and(|m| m.is_file()) {
        return index(State(state), who, req).await;
    }
    if !rel.contains('/')
        && let Some(text) = ohif.rewritten(&rel).await
    {
        let ct = if rel.ends_with(".css") { "text/css; charset=utf-8" } else { "text/javascript; charset=utf-8" };
        return (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static(ct)),
                (header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600")),
            ],
            text,
        )
            .into_response();
    }
    let (mut parts, body) = req.into_parts();
    parts.uri = match format!("/{rel}").parse() {
        Ok(u) => u,
        Err(_) => return index(State(state), who, Request::from_parts(parts, body)).await,
    };
    match ServeDir::new(&ohif.dir).oneshot(Request::from_parts(parts, Body::empty())).await {
        Ok(mut resp) => {
            resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
            resp.map(Body::new)
        }
        Err(e) => match e {},
    }
}

/// OHIF's runtime configuration: one DICOMweb data source, this hub, read with the session
/// cookie the browser sends anyway (same origin). A 401 (session over) goes to the sign-in page.
async fn app_config(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let base = crate::dicomweb::base_url(&state, &headers);
    let config = app_config_js(&base);
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        ],
        config,
    )
        .into_response()
}

fn app_config_js(dicomweb: &str) -> String {
    let root = serde_json::Value::String(dicomweb.to_string());
    format!(
        r#"/* Generated by the Ferry hub: OHIF on this hub's DICOMweb, with the signed-in user's session. */
window.config = {{
  name: 'ferry',
  routerBasename: '{MOUNT}',
  extensions: [],
  modes: [],
  customizationService: {{}},
  showStudyList: true,
  maxNumberOfWebWorkers: 3,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: true,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  investigationalUseDialog: {{ option: 'never' }},
  maxNumRequests: {{ interaction: 100, thumbnail: 10, prefetch: 10 }},
  defaultDataSourceName: 'ferry',
  dataSources: [
    {{
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'ferry',
      configuration: {{
        friendlyName: 'Ferry',
        name: 'ferry',
        wadoUriRoot: {root},
        qidoRoot: {root},
        wadoRoot: {root},
        qidoSupportsIncludeField: true,
        supportsReject: false,
        supportsStow: false,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video,pdf',
        bulkDataURI: {{ enabled: true }},
        omitQuotationForMultipartRequest: true,
      }},
    }},
  ],
  httpErrorHandler: error => {{
    if (error && error.status === 401) {{
      window.location.href = '/login?return_to=' + encodeURIComponent(window.location.pathname + window.location.search);
    }}
  }},
}};
"#
    )
}

/// True when the hub serves the viewer (`viewer.ohif_dir`).
pub fn installed(state: &AppState) -> bool {
    state.features.get::<Arc<Ohif>>().is_some()
}

/// The viewer's address for some studies, when the hub has the viewer.
pub fn study_link(state: &AppState, study_uids: &[&str]) -> Option<String> {
    if !installed(state) {
        return None;
    }
    if study_uids.is_empty() {
        return None;
    }
    Some(format!("/ohif/viewer?StudyInstanceUIDs={}", study_uids.join(",")))
}

/// Loads the distribution named by the configuration, if any.
pub fn from_config(config: &crate::config::Config) -> anyhow::Result<Option<Arc<Ohif>>> {
    match &config.viewer.ohif_dir {
        None => Ok(None),
        Some(dir) => Ok(Some(Arc::new(Ohif::load(dir)?))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_a_root_build_and_hashes_its_inline_scripts() {
        let html = r#"<html><head><script>console.time("x"),window.PUBLIC_URL="/"</script><link rel="manifest" href="/manifest.json"><script defer src="/app.bundle.js"></script></head></html>"#;
        let mounted = mount_index(html);
        assert!(mounted.contains(r#"window.PUBLIC_URL="/ohif/""#));
        assert!(mounted.contains(r#"href="/ohif/manifest.json""#));
        assert!(mounted.contains(r#"src="/ohif/app.bundle.js""#));
        let csp = csp_for(&mounted);
        // One inline script, hashed after the rewrite (what the browser sees).
        assert_eq!(csp.matches("'sha256-").count(), 1);
        use base64::Engine;
        use sha2::{Digest, Sha256};
        let h = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(br#"console.time("x"),window.PUBLIC_URL="/ohif/""#));
        assert!(csp.contains(&h));
        assert!(csp.contains("frame-ancestors 'none'"));
    }

    #[test]
    fn the_configuration_points_at_the_hub() {
        let js = app_config_js("https://ferry.example/dicomweb");
        assert!(js.contains(r#"qidoRoot: "https://ferry.example/dicomweb""#));
        assert!(js.contains("routerBasename: '/ohif'"));
    }
}
