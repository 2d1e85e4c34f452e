//! The request middlewares of our own: admin-key authentication, the request timeout
//! (lengthened by a [`LongPoll`] for its own wait), the body read timeout, and the safety
//! net that turns any bare error response into problem+json.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http_body::{Frame, SizeHint};
use switchboard_domain::{Secret, SecretKind};
use tokio::time::{Instant, Sleep};

use super::auth::{Caller, Keys};
use super::error::{ApiError, Problem, is_problem};
use crate::config::format_duration;

/// Authenticates every `/api/v1` request: the bearer credential is the admin key or an
/// API key (`sbk_…`); the [`Caller`] it resolves to is handed to the handler, which checks
/// permissions against the resource's scope.
///
/// The admin key is compared by hash in constant time; API keys are looked up by the hash
/// of the presented secret and compared again in constant time. Delegate tokens and
/// session credentials are refused here by their prefix.
pub async fn authenticate(State(keys): State<Keys>, mut request: Request, next: Next) -> Response {
    let Some(presented) = bearer_token(request.headers()) else {
        return ApiError::unauthorized("this route needs an API key, sent as Authorization: Bearer <key>")
            .into_response();
    };
    let secret = Secret::presented(presented);
    let caller = if keys.admin.as_ref().is_some_and(|admin| admin.verify(&secret)) {
        Caller::Admin
    } else if secret.is_kind(SecretKind::ApiKey) {
        match keys.store.api_key_by_secret(&secret.hash()).await {
            Ok(Some(key)) if key.revoked_at.is_none() => Caller::Key(Box::new(key)),
            Ok(Some(_)) => return ApiError::unauthorized("this API key was revoked").into_response(),
            Ok(None) => return ApiError::unauthorized("unknown API key").into_response(),
            Err(e) => return ApiError::from(e).into_response(),
        }
    } else if keys.admin.is_none() {
        return ApiError::unauthorized(
            "no admin key is configured and this is not an API key: set SWITCHBOARD_ADMIN_KEY \
             (or admin_key in the config file) and restart the manager, or use an API key",
        )
        .into_response();
    } else {
        return ApiError::unauthorized("the key in the Authorization header is not valid").into_response();
    };
    request.extensions_mut().insert(caller);
    next.run(request).await
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Answers 503 (`timeout` problem) when a request takes longer than `request_timeout`.
/// The handler's future is dropped, so it stops at its next await point.
///
/// One exception, and one rule for it: a route whose job is to wait (a long poll) takes
/// the [`LongPoll`] extractor and declares its wait, which is added to the request's
/// limit. Its own documented bound governs the wait; `request_timeout` still bounds the
/// work around it.
pub async fn timeout(State(limit): State<Duration>, mut request: Request, next: Next) -> Response {
    let start = Instant::now();
    let deadline = Deadline(Arc::new(Mutex::new(start + limit)));
    request.extensions_mut().insert(deadline.clone());
    let response = next.run(request);
    tokio::pin!(response);
    loop {
        let at = deadline.at();
        match tokio::time::timeout_at(at, &mut response).await {
            Ok(response) => return response,
            // A long poll lengthened the limit meanwhile: keep waiting, up to the new one.
            Err(_) if deadline.at() > at => {}
            Err(_) => break,
        }
    }
    let total = deadline.at() - start;
    tracing::warn!(timeout = %format_duration(total), "request timed out");
    ApiError::new(
        Problem::Timeout,
        format!(
            "the request took longer than the server's limit of {}",
            format_duration(total)
        ),
    )
    .into_response()
}

/// When [`timeout`] cuts the request off, in its extensions for [`LongPoll`] to lengthen.
#[derive(Debug, Clone)]
struct Deadline(Arc<Mutex<Instant>>);

impl Deadline {
    fn at(&self) -> Instant {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The extractor of a long poll: a route that waits on purpose, for as long as its caller
/// asked within its own documented maximum. [`LongPoll::wait`] adds that wait to the
/// request's `request_timeout`, so a wait of any allowed length answers itself (200 with
/// the resource as it is) rather than being cut off with a 503.
///
/// Outside the [`timeout`] middleware (a test router) it changes nothing.
#[derive(Debug, Clone)]
pub struct LongPoll(Option<Deadline>);

impl LongPoll {
    /// Declares, once, that this request will wait up to `wait` (already checked against
    /// the route's documented maximum) before it answers.
    pub fn wait(&self, wait: Duration) {
        if let Some(deadline) = &self.0 {
            let mut at = deadline.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *at += wait;
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for LongPoll {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(LongPoll(parts.extensions.get::<Deadline>().cloned()))
    }
}

/// The `body_read_timeout` setting, as the state of [`body_read_timeout`].
#[derive(Debug, Clone, Copy)]
pub struct BodyReadTimeout(pub Duration);

/// Answers 408 (`timeout` problem) and closes the connection when a request's body has
/// not fully arrived within `body_read_timeout` of its headers: a client trickling its
/// body a byte at a time holds a connection and a handler no longer than that.
///
/// The body is wrapped so that, past the deadline, reading it fails. Whatever the handler
/// made of that failure (a 400, usually) is replaced here by the 408, since the handler
/// cannot know why its body broke off.
pub async fn body_read_timeout(State(limit): State<BodyReadTimeout>, request: Request, next: Next) -> Response {
    // Most requests (GETs, socket upgrades) have no body to wait for.
    if request.body().is_end_stream() {
        return next.run(request).await;
    }
    let expired = Arc::new(AtomicBool::new(false));
    let request = request.map(|body| {
        Body::new(TimedBody {
            inner: body,
            deadline: Box::pin(tokio::time::sleep(limit.0)),
            limit: limit.0,
            expired: Arc::clone(&expired),
        })
    });
    let response = next.run(request).await;
    if !expired.load(Ordering::Acquire) {
        return response;
    }
    tracing::info!(timeout = %format_duration(limit.0), "request body did not arrive in time; closing the connection");
    let mut response = ApiError::for_status(
        StatusCode::REQUEST_TIMEOUT,
        format!(
            "the request body did not arrive within the server's limit of {}",
            format_duration(limit.0)
        ),
    )
    .into_response();
    // The rest of the body may still be on its way: this connection cannot be reused.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// A request body that fails once its deadline passes.
struct TimedBody {
    inner: Body,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    /// Set when the deadline cut the body off, for [`body_read_timeout`] to see.
    expired: Arc<AtomicBool>,
}

/// The error a [`TimedBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within {}", format_duration(*.0))]
struct BodyTooSlow(Duration);

impl HttpBody for TimedBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Release);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTooSlow(this.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The `body_limit` setting, as the state of [`problem_for_bare_errors`].
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// Turns error responses produced outside handlers (the router's 405, the body limit's
/// 413) into problem+json, keeping their status and headers (a 405's `Allow`). Responses
/// that already are problems pass unchanged.
pub async fn problem_for_bare_errors(State(body_limit): State<BodyLimit>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().map(|p| p.as_str().to_owned());
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) || is_problem(&response) {
        return response;
    }
    let detail = match status {
        StatusCode::METHOD_NOT_ALLOWED => format!(
            "{} does not accept {method}; the Allow header lists the methods it does",
            route.as_deref().unwrap_or("this route")
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            format!("the request body is larger than the limit of {} bytes", body_limit.0)
        }
        other => other.canonical_reason().unwrap_or("the request failed").to_owned(),
    };
    let (mut parts, _) = response.into_parts();
    let problem = ApiError::for_status(status, detail).into_response();
    // Keep the original headers (Allow, ...) but take the problem's content type and length.
    parts.headers.remove(header::CONTENT_LENGTH);
    for (name, value) in problem.headers() {
        parts.headers.insert(name, value.clone());
    }
    Response::from_parts(parts, problem.into_body())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn auth(value: &'static str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static(value));
        headers
    }

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        assert_eq!(bearer_token(&auth("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&auth("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&auth("Basic abc")), None);
        assert_eq!(bearer_token(&auth("Bearer ")), None);
        assert_eq!(bearer_token(&auth("Bearer")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }
}

/// Whether the manager has begun to shut down: long polls wait on it besides their change,
/// so they answer at once then rather than hold the drain for their whole wait. Cheap to
/// clone (one `Arc`).
#[derive(Debug, Clone)]
pub struct Stopping(std::sync::Arc<tokio::sync::watch::Sender<bool>>);

impl Default for Stopping {
    fn default() -> Self {
        Self(std::sync::Arc::new(tokio::sync::watch::Sender::new(false)))
    }
}

impl Stopping {
    /// Shutdown has begun.
    pub fn begin(&self) {
        self.0.send_replace(true);
    }

    /// Resolves once shutdown has begun.
    pub fn wait(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut stopping = self.0.subscribe();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
        }
    }

    /// How many [`Stopping::wait`]s are in flight.
    pub fn waiting(&self) -> usize {
        self.0.receiver_count()
    }
}
