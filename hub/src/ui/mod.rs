//! The web pages: server-rendered HTML (maud), German and English, usable on a phone, no build
//! step. Scripts only where a page needs the browser: scanning dropped files before sending and
//! uploading them with a progress bar (`assets/send.js` + `assets/scan.js`), paging through images
//! (`assets/viewer.js`). Forms post to the same handlers the JSON API uses.

/// Unwraps a page result: errors become error pages.
macro_rules! page {
    ($ctx:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $crate::ui::error_page(&$ctx, e),
        }
    };
}
pub(crate) use page;

/// Requires a signed-in user (else redirect to sign-in).
macro_rules! signed_in {
    ($ctx:expr) => {
        match $ctx.require() {
            Ok((p, a)) => (p.clone(), a.clone()),
            Err(r) => return r.into_response(),
        }
    };
}
pub(crate) use signed_in;

pub mod i18n;

use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use ferry_schemas::Account;
use maud::{DOCTYPE, Markup, PreEscaped, html};

use crate::access::{MaybePrincipal, Principal};
use crate::error::AppError;
use crate::state::AppState;
pub use i18n::Lang;

pub fn router() -> Router<AppState> {
    Router::new().route("/assets/{file}", get(asset))
}

/// Who is looking at a page, in which language.
pub struct Ctx {
    pub lang: Lang,
    pub principal: Option<Principal>,
    pub account: Option<Account>,
    pub path: String,
}

impl Ctx {
    pub fn t(&self, key: &'static str) -> &'static str {
        self.lang.t(key)
    }

    /// A text given inline in both languages.
    pub fn l(&self, de: &'static str, en: &'static str) -> &'static str {
        if self.lang == Lang::De { de } else { en }
    }

    /// The signed-in account, or a redirect to the sign-in page.
    pub fn require(&self) -> Result<(&Principal, &Account), axum::response::Redirect> {
        match (&self.principal, &self.account) {
            (Some(p), Some(a)) => Ok((p, a)),
            _ => Err(axum::response::Redirect::to(&format!("/login?return_to={}", urlencode(&self.path)))),
        }
    }

    pub fn is_member(&self) -> bool {
        self.account.as_ref().is_some_and(|a| !a.memberships.is_empty())
    }
}

impl FromRequestParts<AppState> for Ctx {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, AppError> {
        let lang = Lang::from_request(&parts.headers);
        let MaybePrincipal(principal) = MaybePrincipal::from_request_parts(parts, state).await?;
        let account = match principal.as_ref().and_then(|p| p.user()) {
            Some(u) => crate::access::account::account(&state.db, &u.id).await?,
            None => None,
        };
        let path = parts.uri.path_and_query().map(|p| p.as_str().to_string()).unwrap_or_else(|| "/".into());
        Ok(Ctx { lang, principal, account, path })
    }
}

pub fn urlencode(s: &str) -> String {
    serde_urlencoded::to_string([("", s)]).map(|x| x[1..].to_string()).unwrap_or_default()
}

/// The frame of every page: header with navigation and language switch, the content, a footer.
pub fn layout(ctx: &Ctx, title: &str, content: Markup) -> Markup {
    let other = match ctx.lang {
        Lang::De => ("en", "English"),
        Lang::En => ("de", "Deutsch"),
    };
    html! {
        (DOCTYPE)
        html lang=(ctx.lang.code()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " – Ferry" }
                link rel="stylesheet" href="/assets/ferry.css";
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header {
                    a.brand href="/" { "Ferry" }
                    nav aria-label="Main" {
                        @if let Some(a) = &ctx.account {
                            a href="/send" { (ctx.t("nav.send")) }
                            a href="/app" { (ctx.t("nav.mine")) }
                            @if !a.memberships.is_empty() { a href="/inbound" { (ctx.t("nav.inbound")) } a href="/shares" { (ctx.t("nav.shares")) } }
                            @for m in a.memberships.iter().filter(|m| m.role == "admin") {
                                a href={"/communities/" (m.community) "/manage"} { (ctx.t("nav.manage")) ": " (m.community_name) }
                            }
                            @if a.hub_admin { a href="/admin" { (ctx.t("nav.admin")) } }
                            @if a.hub_admin || a.memberships.iter().any(|m| m.role == "admin") { a href="/audit" { (ctx.t("nav.audit")) } }
                            a href="/account" { (ctx.t("nav.account")) }
                            form.inline method="post" action="/logout" { button.link type="submit" { (ctx.t("nav.logout")) } }
                        } @else {
                            a href="/login" { (ctx.t("nav.login")) }
                            a href="/register" { (ctx.t("nav.register")) }
                        }
                        a href={"/lang/" (other.0) "?return_to=" (urlencode(&ctx.path))} lang=(other.0) hreflang=(other.0) { (other.1) }
                    }
                }
                main id="main" { (content) }
                footer { "Ferry · " (ctx.t("tagline")) }
            }
        }
    }
}

/// A page with an error message above a form (bad input loses nothing: the form is shown again).
pub fn error_box(message: Option<&str>) -> Markup {
    html! {
        @if let Some(m) = message {
            p.error role="alert" { (m) }
        }
    }
}

pub fn notice(ctx: &Ctx, title: &str, message: &str, link: Option<(&str, &str)>) -> Response {
    layout(
        ctx,
        title,
        html! {
            h1 { (title) }
            p.notice role="status" { (message) }
            @if let Some((href, text)) = link { p { a.button href=(href) { (text) } } }
        },
    )
    .into_response()
}

/// An error as a page (for browsers) with the right status.
pub fn error_page(ctx: &Ctx, e: AppError) -> Response {
    let status = e.status();
    let message = match &e {
        AppError::Internal(_) => "Internal error; please retry later.".to_string(),
        other => other.to_string(),
    };
    if matches!(e, AppError::Internal(_)) {
        tracing::error!(error = %e, "page failed");
    }
    let mut r = layout(
        ctx,
        ctx.t("error"),
        html! { h1 { (ctx.t("error")) } p.error role="alert" { (message) } p { a href="/app" { (ctx.t("back")) } } },
    )
    .into_response();
    *r.status_mut() = status;
    r
}

pub fn human_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `Doe^Jane` → `Doe, Jane`.
pub fn person_name(pn: &str) -> String {
    let mut parts = pn.split('=').next().unwrap_or("").split('^').map(str::trim).filter(|p| !p.is_empty());
    match (parts.next(), parts.next()) {
        (Some(f), Some(g)) => format!("{f}, {g}"),
        (Some(f), None) => f.to_string(),
        _ => String::new(),
    }
}

/// `19700101` → `01.01.1970` (de) / `1970-01-01` (en).
pub fn dicom_date(lang: Lang, da: &str) -> String {
    if da.len() != 8 || !da.bytes().all(|b| b.is_ascii_digit()) {
        return da.to_string();
    }
    match lang {
        Lang::De => format!("{}.{}.{}", &da[6..8], &da[4..6], &da[0..4]),
        Lang::En => format!("{}-{}-{}", &da[0..4], &da[4..6], &da[6..8]),
    }
}

pub fn time_ms(lang: Lang, ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp(ms / 1000) else { return String::new() };
    let (y, m, d, hh, mm) = (t.year(), t.month() as u8, t.day(), t.hour(), t.minute());
    match lang {
        Lang::De => format!("{d:02}.{m:02}.{y} {hh:02}:{mm:02} UTC"),
        Lang::En => format!("{y}-{m:02}-{d:02} {hh:02}:{mm:02} UTC"),
    }
}

pub fn state_badge(ctx: &Ctx, state: &str) -> Markup {
    html! { span class={"badge state-" (state)} data-state=(state) { (ctx.t(state_key(state))) } }
}

pub fn state_key(state: &str) -> &'static str {
    match state {
        "draft" => "state.draft",
        "sent" => "state.sent",
        "received" => "state.received",
        "stored" => "state.stored",
        "failed" => "state.failed",
        "done" => "state.done",
        "rejected" => "state.rejected",
        _ => "state.sent",
    }
}

/// The viewer of one study (driven by `assets/viewer.js`): series with thumbnails, the image
/// with scroll, window/level, zoom/pan and playback controls. Not for diagnostic use.
pub fn viewer_markup(ctx: &Ctx, study_uid: &str, series: &[ferry_schemas::TransferSeries]) -> Markup {
    html! {
        p.notice role="note" { (ctx.l("Nicht für die Befundung: Bilder als Vorschau, nicht in diagnostischer Qualität.", "Not for diagnostic use: images as a preview, not in diagnostic quality.")) }
        div.viewer id="viewer" data-study=(study_uid) {
            ul.series-list aria-label=(ctx.t("transfer.series")) {
                @for se in series {
                    li { button.series type="button" data-series=(se.series_uid) {
                        img src={"/dicomweb/studies/" (study_uid) "/series/" (se.series_uid) "/thumbnail"} alt="" width="96" height="96" loading="lazy";
                        span { (se.modality) " " (se.description) " (" (se.instances) ")" }
                    } }
                }
            }
            figure {
                div.tools role="toolbar" aria-label=(ctx.l("Werkzeuge", "Tools")) {
                    button.secondary type="button" data-mode="scroll" { (ctx.l("Blättern", "Scroll")) }
                    button.secondary type="button" data-mode="window" { (ctx.l("Fenster", "Window")) }
                    button.secondary type="button" data-mode="pan" { (ctx.l("Verschieben", "Pan")) }
                    button.secondary id="zoom-out" type="button" aria-label=(ctx.l("Verkleinern", "Zoom out")) { "−" }
                    span id="zoom-level" {}
                    button.secondary id="zoom-in" type="button" aria-label=(ctx.l("Vergrößern", "Zoom in")) { "+" }
                    button.secondary id="reset" type="button" { (ctx.l("Zurücksetzen", "Reset")) }
                }
                div.tools aria-label=(ctx.l("Fenster-Voreinstellungen", "Window presets")) {
                    button.secondary type="button" data-window="auto" { (ctx.l("Standard", "Default")) }
                    button.secondary type="button" data-window="40,400" { (ctx.l("Weichteil", "Soft tissue")) }
                    button.secondary type="button" data-window="-600,1500" { (ctx.l("Lunge", "Lung")) }
                    button.secondary type="button" data-window="300,1500" { (ctx.l("Knochen", "Bone")) }
                    button.secondary type="button" data-window="40,80" { (ctx.l("Gehirn", "Brain")) }
                    span id="wl" {}
                }
                div.stage id="stage" { img id="frame" alt=(ctx.t("viewer.title")) draggable="false"; }
                figcaption {
                    button id="prev" type="button" aria-label=(ctx.t("viewer.prev")) { "◀" }
                    input id="slider" type="range" min="1" max="1" value="1" aria-label=(ctx.t("transfer.images"));
                    button id="next" type="button" aria-label=(ctx.t("viewer.next")) { "▶" }
                    button id="play" type="button" hidden aria-pressed="false" { (ctx.l("Abspielen", "Play")) }
                    span id="position" aria-live="polite" {}
                }
            }
        }
        script type="module" src="/assets/viewer.js" {}
    }
}

/// Texts a page script needs, as JSON in the page (no second request, no build step).
pub fn script_texts(ctx: &Ctx, keys: &[&'static str]) -> Markup {
    let map: serde_json::Map<String, serde_json::Value> =
        keys.iter().map(|k| (k.to_string(), serde_json::Value::String(ctx.t(k).to_string()))).collect();
    // `</` cannot appear inside the JSON of a script element.
    let json = serde_json::Value::Object(map).to_string().replace("</", "<\\/");
    html! { script type="application/json" id="texts" { (PreEscaped(json)) } }
}

const CSS: &str = include_str!("../../assets/ferry.css");
const SCAN_JS: &str = include_str!("../../assets/scan.js");
const SEND_JS: &str = include_str!("../../assets/send.js");
const VIEWER_JS: &str = include_str!("../../assets/viewer.js");

async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, ct) = match file.as_str() {
        "ferry.css" => (CSS, "text/css; charset=utf-8"),
        "scan.js" => (SCAN_JS, "text/javascript; charset=utf-8"),
        "send.js" => (SEND_JS, "text/javascript; charset=utf-8"),
        "viewer.js" => (VIEWER_JS, "text/javascript; charset=utf-8"),
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let mut r = body.into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
    r.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}
