//! Cross-site request forgery protection for cookie-authenticated requests, the way browsers
//! allow it today: a state-changing request that a browser marks as coming from another site
//! (`Sec-Fetch-Site`), or whose `Origin` is not the hub's own, is refused when it would act with
//! the session cookie or on the sign-in forms. Bearer-token clients (no cookie) are not affected,
//! so DICOMweb viewers on other origins keep working through CORS.

use axum::extract::Request;
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;

use super::{SESSION_COOKIE, SHARE_COOKIE};

fn is_safe(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn carries_session(req: &Request) -> bool {
    req.headers().get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).any(|v| {
        v.split(';').any(|c| {
            let c = c.trim_start();
            c.starts_with(&format!("{SESSION_COOKIE}=")) || c.starts_with(&format!("{SHARE_COOKIE}="))
        })
    })
}

/// Sign-in, registration and reset forms: protected even without a session (login CSRF).
fn is_auth_form(path: &str) -> bool {
    ["/login", "/register", "/forgot", "/reset", "/setup", "/logout", "/api/v1/auth/", "/redeem", "/api/v1/redeem"]
        .iter()
        .any(|p| path.starts_with(p))
}

/// `true` when the request may go on.
pub fn same_origin(req: &Request) -> bool {
    if let Some(site) = req.headers().get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        return matches!(site, "same-origin" | "none");
    }
    let Some(origin) = req.headers().get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        // Neither header: not a browser request made by a page (curl, API clients).
        return true;
    };
    let host = req.headers().get(header::HOST).and_then(|v| v.to_str().ok()).unwrap_or("");
    let bare = origin.split_once("://").map(|(_, rest)| rest).unwrap_or(origin);
    !host.is_empty() && bare.eq_ignore_ascii_case(host)
}

pub async fn cross_origin_guard(req: Request, next: Next) -> Response {
    if !is_safe(req.method()) && (carries_session(&req) || is_auth_form(req.uri().path())) && !same_origin(&req) {
        tracing::warn!(path = %req.uri().path(), "refused a cross-origin state-changing request");
        return crate::error::problem(StatusCode::FORBIDDEN, Some("cross-origin requests may not act with this site's session".into()));
    }
    next.run(req).await
}
