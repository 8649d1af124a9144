//! The hub's one error type, rendered as `application/problem+json` (RFC 9457). 5xx details stay
//! in the log (inside the request span); the client sees a generic title and the request id.

use axum::Json;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferry_schemas::Problem;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("{0}")]
    BadRequest(String),
    #[error("authentication required")]
    Unauthorized,
    #[error("not allowed")]
    Forbidden,
    #[error("{0}")]
    ForbiddenBecause(String),
    /// A failed sign-in: 401 with the (deliberately uninformative) reason.
    #[error("{0}")]
    SignInFailed(String),
    #[error("too many requests; retry in {0} seconds")]
    TooManyRequests(u64),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    PayloadTooLarge(String),
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    #[error("{0}")]
    Gone(String),
    #[error("service unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// The database is unreachable or going away (restart, failover, network): the request may be
/// retried, so it is a 503, not a 500.
fn database_down(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        // SQLSTATE class 08 (connection exception), 57P01–57P03 (shutdown, crash, starting up),
        // 53300 (too many connections).
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300"))
        }
        _ => false,
    }
}

impl From<anyhow::Error> for AppError {
    fn from(e: anyhow::Error) -> Self {
        if e.chain().any(|c| c.downcast_ref::<sqlx::Error>().is_some_and(database_down)) {
            tracing::warn!(error = %format!("{e:#}"), "database unavailable");
            return AppError::Unavailable("database unavailable".into());
        }
        AppError::Internal(e)
    }
}

pub type AppResult<T> = Result<T, AppError>;

impl From<sqlx::Error> for AppError {
    fn from(e: sqlx::Error) -> Self {
        if database_down(&e) {
            tracing::warn!(error = %e, "database unavailable");
            return AppError::Unavailable("database unavailable".into());
        }
        // PostgreSQL refuses text it cannot hold (a NUL character): bad input, not a fault.
        if let sqlx::Error::Database(db) = &e
            && db.code().is_some_and(|c| matches!(c.as_ref(), "22021" | "22P05"))
        {
            return AppError::BadRequest(NUL_TEXT.into());
        }
        AppError::Internal(e.into())
    }
}

const NUL_TEXT: &str = "text must not contain NUL characters (U+0000)";

/// Middleware: a path or query with an encoded NUL character (`%00`) is refused up front, so
/// text means the same on SQLite (which would store it) and PostgreSQL (which cannot).
pub async fn refuse_nul(req: Request, next: Next) -> Response {
    if req.uri().path_and_query().is_some_and(|pq| pq.as_str().contains("%00")) {
        return AppError::BadRequest(NUL_TEXT.into()).into_response();
    }
    next.run(req).await
}

impl AppError {
    pub fn status(&self) -> StatusCode {
        match self {
            AppError::BadRequest(_) => StatusCode::BAD_REQUEST,
            AppError::Unauthorized => StatusCode::UNAUTHORIZED,
            AppError::Forbidden | AppError::ForbiddenBecause(_) => StatusCode::FORBIDDEN,
            AppError::SignInFailed(_) => StatusCode::UNAUTHORIZED,
            AppError::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            AppError::NotFound(_) => StatusCode::NOT_FOUND,
            AppError::Conflict(_) => StatusCode::CONFLICT,
            AppError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            AppError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            AppError::NotAcceptable(_) => StatusCode::NOT_ACCEPTABLE,
            AppError::Gone(_) => StatusCode::GONE,
            AppError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            AppError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Builds a problem response; `request_id` is filled in by [`add_request_id`].
pub fn problem(status: StatusCode, detail: Option<String>) -> Response {
    let title = status.canonical_reason().unwrap_or("Error").to_string();
    let body = Problem { type_: "about:blank".into(), title, status: status.as_u16(), detail, request_id: None };
    let mut resp = (status, Json(body)).into_response();
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    resp
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = match &self {
            AppError::Internal(e) => {
                tracing::error!(error = %format!("{e:#}"), "internal error");
                None
            }
            AppError::Unavailable(d) => {
                tracing::warn!(detail = %d, "unavailable");
                Some("The service is temporarily unavailable; retry later.".into())
            }
            other => Some(other.to_string()),
        };
        let mut resp = problem(status, detail);
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(r#"Bearer realm="ferry""#));
        }
        if let AppError::TooManyRequests(wait) = &self
            && let Ok(v) = HeaderValue::from_str(&wait.to_string())
        {
            resp.headers_mut().insert(header::RETRY_AFTER, v);
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        resp
    }
}

/// Middleware: copies the request id into every problem+json body, so a user's error report
/// can be matched with the hub's log line.
pub async fn add_request_id(req: Request, next: Next) -> Response {
    let request_id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let resp = next.run(req).await;
    let is_problem = resp.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes() == PROBLEM_JSON.as_bytes());
    let Some(request_id) = request_id.filter(|_| is_problem) else {
        return resp;
    };
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 * 1024).await else {
        return problem(parts.status, None);
    };
    let mut value: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| serde_json::json!({}));
    value["request_id"] = serde_json::Value::String(request_id);
    let body = serde_json::to_vec(&value).unwrap_or_default();
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(body))
}

/// `Json` whose rejections are problem+json like every other error. The body is a JSON object
/// (serde alone would also take an array of the fields in order); see [`parse_json`].
pub struct ApiJson<T>(pub T);

/// A JSON array body (of objects), otherwise as [`ApiJson`].
pub struct ApiJsonList<T>(pub Vec<T>);

/// Which JSON value a body must be at the top.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Top {
    Object,
    Array,
}

async fn json_body<S: Send + Sync>(req: Request, state: &S) -> Result<serde_json::Value, AppError> {
    match <Json<serde_json::Value> as axum::extract::FromRequest<S>>::from_request(req, state).await {
        Ok(Json(v)) => Ok(v),
        Err(rejection) => Err(match rejection.status() {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => AppError::UnsupportedMediaType("send application/json".into()),
            _ => AppError::BadRequest(rejection.body_text()),
        }),
    }
}

/// Turns a parsed body into `T`: checks the top-level kind, writes whole floats (`90.0`, an
/// integer to JSON Schema and to JavaScript) as integers so integer fields take them, and
/// deserialises with the field path in the error.
fn from_json_value<T: serde::de::DeserializeOwned>(mut value: serde_json::Value, top: Top) -> Result<T, AppError> {
    match (&value, top) {
        (serde_json::Value::Object(_), Top::Object) | (serde_json::Value::Array(_), Top::Array) => {}
        (_, Top::Object) => return Err(AppError::BadRequest("the body must be a JSON object".into())),
        (_, Top::Array) => return Err(AppError::BadRequest("the body must be a JSON array".into())),
    }
    if holds_nul(&value) {
        return Err(AppError::BadRequest(NUL_TEXT.into()));
    }
    whole_numbers(&mut value);
    let bytes = serde_json::to_vec(&value).map_err(|e| AppError::Internal(e.into()))?;
    Json::<T>::from_bytes(&bytes).map(|Json(v)| v).map_err(|rejection| AppError::BadRequest(rejection.body_text()))
}

/// Whether a string (or a key) anywhere in the value has a NUL character.
fn holds_nul(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::String(s) => s.contains('\0'),
        serde_json::Value::Array(items) => items.iter().any(holds_nul),
        serde_json::Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || holds_nul(v)),
        _ => false,
    }
}

/// Rewrites every float without a fraction (and exactly representable) as an integer.
fn whole_numbers(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Number(n) => {
            if let Some(f) = n.as_f64().filter(|f| n.is_f64() && f.fract() == 0.0 && f.abs() <= 9_007_199_254_740_992.0) {
                // Within ±2^53 the cast is exact.
                *n = serde_json::Number::from(f as i64);
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(whole_numbers),
        serde_json::Value::Object(map) => map.values_mut().for_each(whole_numbers),
        _ => {}
    }
}

/// Parses a JSON object body read by hand (one that may be empty, or has its own error
/// wording), with the same rules as [`ApiJson`].
pub fn parse_json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, AppError> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| AppError::BadRequest(format!("malformed JSON body: {e}")))?;
    from_json_value(value, Top::Object)
}

impl<S, T> axum::extract::FromRequest<S> for ApiJson<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        from_json_value(json_body(req, state).await?, Top::Object).map(ApiJson)
    }
}

impl<S, T> axum::extract::FromRequest<S> for ApiJsonList<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        from_json_value(json_body(req, state).await?, Top::Array).map(ApiJsonList)
    }
}

/// `Query` whose rejections (a malformed or ill-typed query string) are problem+json too;
/// axum's own answers them as `text/plain`.
pub struct ApiQuery<T>(pub T);

impl<S, T> axum::extract::FromRequestParts<S> for ApiQuery<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, AppError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| ApiQuery(v))
            .map_err(|rejection| AppError::BadRequest(rejection.body_text()))
    }
}

/// Fallback for unknown routes.
pub async fn not_found() -> AppError {
    AppError::NotFound("no such resource".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Extend {
        days: Option<u32>,
        until: Option<i64>,
    }

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Named {
        name: String,
    }

    #[test]
    fn integers_may_be_written_as_whole_floats_but_fractions_stay_refused() {
        assert_eq!(parse_json::<Extend>(br#"{"days": 90.0, "until": -5.0}"#).ok(), Some(Extend { days: Some(90), until: Some(-5) }));
        assert!(matches!(parse_json::<Extend>(br#"{"days": 1.5}"#), Err(AppError::BadRequest(_))));
        assert!(matches!(parse_json::<Extend>(br#"{"days": 1e300}"#), Err(AppError::BadRequest(_))));
    }

    #[test]
    fn an_object_is_not_taken_in_the_form_of_an_array() {
        assert!(matches!(parse_json::<Extend>(b"[90, null]"), Err(AppError::BadRequest(_))));
        assert_eq!(parse_json::<Extend>(b"{}").ok(), Some(Extend { days: None, until: None }));
    }

    #[test]
    fn text_with_a_nul_character_is_refused() {
        assert!(matches!(parse_json::<Named>(br#"{"name": "a\u0000b"}"#), Err(AppError::BadRequest(_))));
        assert_eq!(parse_json::<Named>(br#"{"name": "a\u0001b"}"#).ok(), Some(Named { name: "a\u{1}b".into() }));
    }
}
