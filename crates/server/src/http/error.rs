//! The one error type of the HTTP API, [`ApiError`], and the problem types it can carry.
//!
//! Every error leaves the server as `application/problem+json` (RFC 9457). Clients key on
//! the `type` URI, so the list in [`Problem`] is part of the public contract: add to it,
//! never rename. Store errors are mapped here and nowhere else; a 5xx body never carries
//! the underlying error, which goes to the log instead (inside the request's span, so it
//! can be found by request id).

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use switchboard_store::{Conflict, StoreError};

/// Where the problem type URIs live; each type is this plus its slug.
pub const PROBLEM_BASE: &str = "https://switchboard.dev/problems/";

/// The media type of every error body.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Every kind of problem the API reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    BadRequest,
    Unauthorized,
    /// Authenticated, but not allowed (a scope wider than the token's).
    Forbidden,
    /// The delegate token was revoked.
    TokenRevoked,
    /// The delegate is older than the manager's minimum version.
    DelegateTooOld,
    NotFound,
    MethodNotAllowed,
    Conflict,
    StaleAttempt,
    /// A secret value, on a manager given no key to seal it with (`secret_key_file`).
    NoSecretKey,
    IdempotencyMismatch,
    NotAcceptable,
    PayloadTooLarge,
    UnsupportedMediaType,
    /// A request line over the limit (`serve::guard::MAX_REQUEST_LINE`).
    UriTooLong,
    /// Too many header fields, or a head over the limit (`serve::guard`).
    HeadersTooLarge,
    /// Over the credential's request rate.
    RateLimited,
    Validation,
    Timeout,
    Unavailable,
    Internal,
}

impl Problem {
    /// Every problem type, in the order of the table below.
    pub const ALL: [Problem; 21] = [
        Problem::BadRequest,
        Problem::Unauthorized,
        Problem::Forbidden,
        Problem::TokenRevoked,
        Problem::DelegateTooOld,
        Problem::NotFound,
        Problem::MethodNotAllowed,
        Problem::Conflict,
        Problem::StaleAttempt,
        Problem::NoSecretKey,
        Problem::IdempotencyMismatch,
        Problem::NotAcceptable,
        Problem::PayloadTooLarge,
        Problem::UnsupportedMediaType,
        Problem::UriTooLong,
        Problem::HeadersTooLarge,
        Problem::RateLimited,
        Problem::Validation,
        Problem::Timeout,
        Problem::Unavailable,
        Problem::Internal,
    ];

    /// The one table of problem types: slug (the end of the `type` URI), title, status.
    fn info(self) -> (&'static str, &'static str, StatusCode) {
        match self {
            Problem::BadRequest => ("bad-request", "Bad request", StatusCode::BAD_REQUEST),
            Problem::Unauthorized => ("unauthorized", "Unauthorized", StatusCode::UNAUTHORIZED),
            Problem::Forbidden => ("forbidden", "Forbidden", StatusCode::FORBIDDEN),
            Problem::TokenRevoked => ("token-revoked", "Delegate token revoked", StatusCode::UNAUTHORIZED),
            Problem::DelegateTooOld => ("delegate-too-old", "Delegate version too old", StatusCode::FORBIDDEN),
            Problem::NotFound => ("not-found", "Not found", StatusCode::NOT_FOUND),
            Problem::MethodNotAllowed => (
                "method-not-allowed",
                "Method not allowed",
                StatusCode::METHOD_NOT_ALLOWED,
            ),
            Problem::Conflict => ("conflict", "Conflict", StatusCode::CONFLICT),
            Problem::StaleAttempt => ("stale-attempt", "Stale attempt", StatusCode::CONFLICT),
            Problem::NoSecretKey => ("no-secret-key", "No key for secret values", StatusCode::CONFLICT),
            Problem::IdempotencyMismatch => (
                "idempotency-mismatch",
                "Idempotency key reused",
                StatusCode::UNPROCESSABLE_ENTITY,
            ),
            Problem::NotAcceptable => ("not-acceptable", "Not acceptable", StatusCode::NOT_ACCEPTABLE),
            Problem::RateLimited => ("rate-limited", "Too many requests", StatusCode::TOO_MANY_REQUESTS),
            Problem::PayloadTooLarge => ("payload-too-large", "Payload too large", StatusCode::PAYLOAD_TOO_LARGE),
            Problem::UnsupportedMediaType => (
                "unsupported-media-type",
                "Unsupported media type",
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ),
            Problem::UriTooLong => ("uri-too-long", "URI too long", StatusCode::URI_TOO_LONG),
            Problem::HeadersTooLarge => (
                "headers-too-large",
                "Request header fields too large",
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ),
            Problem::Validation => ("validation", "Invalid request", StatusCode::UNPROCESSABLE_ENTITY),
            Problem::Timeout => ("timeout", "Request timed out", StatusCode::SERVICE_UNAVAILABLE),
            Problem::Unavailable => ("unavailable", "Service unavailable", StatusCode::SERVICE_UNAVAILABLE),
            Problem::Internal => ("internal", "Internal error", StatusCode::INTERNAL_SERVER_ERROR),
        }
    }

    pub fn slug(self) -> &'static str {
        self.info().0
    }

    /// The `type` URI, e.g. `https://switchboard.dev/problems/unauthorized`.
    pub fn uri(self) -> String {
        format!("{PROBLEM_BASE}{}", self.slug())
    }

    pub fn title(self) -> &'static str {
        self.info().1
    }

    pub fn status(self) -> StatusCode {
        self.info().2
    }

    /// The problem for a bare status produced outside any handler (a layer, the router).
    pub fn for_status(status: StatusCode) -> Problem {
        match status {
            StatusCode::UNAUTHORIZED => Problem::Unauthorized,
            StatusCode::NOT_FOUND => Problem::NotFound,
            StatusCode::METHOD_NOT_ALLOWED => Problem::MethodNotAllowed,
            StatusCode::CONFLICT => Problem::Conflict,
            StatusCode::REQUEST_TIMEOUT => Problem::Timeout,
            StatusCode::NOT_ACCEPTABLE => Problem::NotAcceptable,
            StatusCode::TOO_MANY_REQUESTS => Problem::RateLimited,
            StatusCode::PAYLOAD_TOO_LARGE => Problem::PayloadTooLarge,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => Problem::UnsupportedMediaType,
            StatusCode::URI_TOO_LONG => Problem::UriTooLong,
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => Problem::HeadersTooLarge,
            StatusCode::UNPROCESSABLE_ENTITY => Problem::Validation,
            StatusCode::SERVICE_UNAVAILABLE => Problem::Unavailable,
            s if s.is_server_error() => Problem::Internal,
            _ => Problem::BadRequest,
        }
    }
}

/// An error answered to an HTTP client. Handlers return `Result<_, ApiError>` and use `?`
/// on store calls.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} {}: {detail}", status.as_u16(), problem.slug())]
pub struct ApiError {
    problem: Problem,
    /// Usually `problem.status()`; differs only for bare statuses from layers.
    status: StatusCode,
    detail: String,
    field: Option<String>,
    retry_after_secs: Option<u32>,
}

impl ApiError {
    /// `detail` says what was wrong and how to fix it; it is shown to the client.
    pub fn new(problem: Problem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            status: problem.status(),
            detail: detail.into(),
            field: None,
            retry_after_secs: None,
        }
    }

    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(Problem::BadRequest, detail)
    }

    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(Problem::Unauthorized, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(Problem::NotFound, detail)
    }

    /// A field of the request is invalid; `field` is its path (`payload.url`).
    pub fn validation(field: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(Problem::Validation, detail).with_field(field)
    }

    /// A 500 whose body says nothing about the cause: log the cause before calling this.
    pub fn internal() -> Self {
        Self::new(
            Problem::Internal,
            "the server failed to handle this request; the details are in its log",
        )
    }

    /// A 503 telling the client to retry after `secs` seconds.
    pub fn unavailable(detail: impl Into<String>, secs: u32) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(Problem::Unavailable, detail)
        }
    }

    /// A 429 telling the client to retry after `secs` seconds.
    pub fn rate_limited(detail: impl Into<String>, secs: u32) -> Self {
        Self {
            retry_after_secs: Some(secs),
            ..Self::new(Problem::RateLimited, detail)
        }
    }

    /// An error response for a status produced without a handler (the router's 405, the
    /// body limit's 413), keeping that status.
    pub fn for_status(status: StatusCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            ..Self::new(Problem::for_status(status), detail)
        }
    }

    pub fn with_field(mut self, field: impl Into<String>) -> Self {
        self.field = Some(field.into());
        self
    }

    pub fn problem(&self) -> Problem {
        self.problem
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }

    pub fn detail(&self) -> &str {
        &self.detail
    }

    /// The offending field or parameter, when one is to blame.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
}

/// The RFC 9457 body of every error answer (`application/problem+json`).
#[derive(Serialize, utoipa::ToSchema)]
#[schema(as = Problem)]
pub(crate) struct ProblemBody<'a> {
    /// Stable: `https://switchboard.dev/problems/<slug>`, listed in `docs/errors.md`.
    /// Clients branch on it, never on `detail`.
    #[serde(rename = "type")]
    #[schema(format = "uri")]
    type_: String,
    /// A short summary of the problem type.
    title: &'static str,
    /// The HTTP status of the answer.
    status: u16,
    /// What was wrong and how to fix it, for people.
    detail: &'a str,
    /// The offending field, as a path (`selectors`, `capabilities[0]`), when one is to blame.
    #[serde(skip_serializing_if = "Option::is_none")]
    field: Option<&'a str>,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ProblemBody {
            type_: self.problem.uri(),
            title: self.problem.title(),
            status: self.status.as_u16(),
            detail: &self.detail,
            field: self.field.as_deref(),
        };
        // Serializing strings and numbers cannot fail; an empty body would still carry
        // the status and content type.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (
            self.status,
            [(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON))],
            bytes,
        )
            .into_response();
        let headers = response.headers_mut();
        if self.status == StatusCode::UNAUTHORIZED {
            // RFC 9110: a 401 names the scheme that would work.
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"switchboard\""),
            );
        }
        if let Some(secs) = self.retry_after_secs {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound(what) => ApiError::not_found(format!("{what} not found")),
            StoreError::Conflict(conflict) => {
                let problem = match conflict {
                    Conflict::StaleAttempt { .. } => Problem::StaleAttempt,
                    Conflict::IdempotencyMismatch(_) => Problem::IdempotencyMismatch,
                    _ => Problem::Conflict,
                };
                ApiError::new(problem, conflict.to_string())
            }
            StoreError::Unavailable(reason) => {
                tracing::error!(error = %reason, "the database is unavailable");
                ApiError::unavailable("the database is unavailable; retry in a moment", 1)
            }
            StoreError::Internal(reason) => {
                tracing::error!(error = %reason, "store error");
                ApiError::internal()
            }
        }
    }
}

/// Whether a response already carries a problem body.
pub fn is_problem(response: &Response) -> bool {
    response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()))
}

#[cfg(test)]
mod tests {
    use axum::body::to_bytes;
    use serde_json::Value;

    use super::*;

    async fn body(error: ApiError) -> (Response, Value) {
        let response = error.into_response();
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 16).await.expect("body");
        (
            Response::from_parts(parts, axum::body::Body::empty()),
            serde_json::from_slice(&bytes).expect("json"),
        )
    }

    #[tokio::test]
    async fn errors_are_problem_json_with_a_stable_type() {
        let (response, json) = body(ApiError::validation("payload.url", "must be an absolute URL")).await;
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(is_problem(&response));
        assert_eq!(json["type"], "https://switchboard.dev/problems/validation");
        assert_eq!(json["title"], "Invalid request");
        assert_eq!(json["status"], 422);
        assert_eq!(json["detail"], "must be an absolute URL");
        assert_eq!(json["field"], "payload.url");
    }

    #[tokio::test]
    async fn internal_store_errors_never_reach_the_client() {
        let (response, json) = body(StoreError::Internal("relation \"tasks\" does not exist".into()).into()).await;
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert!(!json.to_string().contains("tasks"), "{json}");
        assert!(json.get("field").is_none());
    }

    #[tokio::test]
    async fn an_unavailable_store_asks_the_client_to_retry() {
        let (response, json) = body(StoreError::Unavailable("connection refused to 10.0.0.5".into()).into()).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(response.headers()[header::RETRY_AFTER], "1");
        assert!(!json.to_string().contains("10.0.0.5"));
    }

    #[tokio::test]
    async fn store_misses_and_conflicts_are_404_and_409() {
        let (response, _) = body(StoreError::NotFound("task").into()).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let conflict = Conflict::Duplicate {
            what: "token",
            name: "ci".into(),
        };
        let (response, json) = body(StoreError::Conflict(conflict).into()).await;
        assert_eq!(response.status(), StatusCode::CONFLICT);
        assert_eq!(json["detail"], "token \"ci\" already exists");
    }

    #[tokio::test]
    async fn unauthorized_names_the_bearer_scheme() {
        let (response, _) = body(ApiError::unauthorized("no key")).await;
        assert!(
            response.headers()[header::WWW_AUTHENTICATE]
                .to_str()
                .expect("ascii")
                .starts_with("Bearer")
        );
    }

    #[test]
    fn every_problem_type_has_a_distinct_slug() {
        let slugs: std::collections::HashSet<_> = Problem::ALL.iter().map(|p| p.slug()).collect();
        assert_eq!(slugs.len(), Problem::ALL.len());
    }

    #[test]
    fn all_lists_every_problem_type_once_in_declaration_order() {
        // `ALL[i] as usize == i` holds only if no variant is missing, repeated or moved,
        // which the OpenAPI error sets rely on (they are bit sets over the discriminants).
        for (i, problem) in Problem::ALL.iter().enumerate() {
            assert_eq!(*problem as usize, i, "{problem:?}");
        }
        // A new variant breaks this match: add it here and to `ALL`, in declaration order.
        match Problem::Internal {
            Problem::BadRequest
            | Problem::Unauthorized
            | Problem::Forbidden
            | Problem::TokenRevoked
            | Problem::DelegateTooOld
            | Problem::NotFound
            | Problem::MethodNotAllowed
            | Problem::Conflict
            | Problem::StaleAttempt
            | Problem::NoSecretKey
            | Problem::IdempotencyMismatch
            | Problem::NotAcceptable
            | Problem::PayloadTooLarge
            | Problem::UnsupportedMediaType
            | Problem::UriTooLong
            | Problem::HeadersTooLarge
            | Problem::RateLimited
            | Problem::Validation
            | Problem::Timeout
            | Problem::Unavailable
            | Problem::Internal => {}
        }
    }
}
