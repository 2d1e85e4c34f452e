//! Logging and request tracing, set up in one place.
//!
//! Logs go to stderr, readable lines by default or one JSON object per line; stdout is kept
//! for the single "listening on" line that scripts and tests read. Each request gets a
//! span named `request` whose `http.route` is the route template (`/api/v1/tasks/{id}`),
//! never the raw path: templates keep the number of distinct values small enough to
//! aggregate on, and raw paths can carry identifiers that do not belong in logs.

use std::io::IsTerminal;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{MatchedPath, Request};
use axum::http::Response;
use tower_http::classify::{ServerErrorsAsFailures, SharedClassifier};
use tower_http::trace::{DefaultOnFailure, DefaultOnRequest, TraceLayer};
use tracing::Span;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber. Fails if `filter` is not a valid filter (the settings
/// loader has already checked it) or a subscriber is already installed.
pub fn init(format: LogFormat, filter: &str) -> Result<(), String> {
    let filter = EnvFilter::try_new(filter).map_err(|e| format!("invalid log filter {filter:?}: {e}"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Human => builder.with_ansi(std::io::stderr().is_terminal()).try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
    installed.map_err(|e| format!("cannot set up logging: {e}"))
}

/// The layer that opens a span per request and logs its outcome.
pub type RequestTrace = TraceLayer<
    SharedClassifier<ServerErrorsAsFailures>,
    fn(&Request) -> Span,
    DefaultOnRequest,
    fn(&Response<Body>, Duration, &Span),
    (),
    (),
    DefaultOnFailure,
>;

pub fn request_trace() -> RequestTrace {
    TraceLayer::new_for_http()
        .make_span_with(request_span as fn(&Request) -> Span)
        .on_response(on_response as fn(&Response<Body>, Duration, &Span))
        .on_body_chunk(())
        .on_eos(())
}

/// The request's span. The route comes from [`MatchedPath`], which the router sets before
/// route layers run; requests no route matched are grouped under `unmatched`.
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str);
    let request_id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    tracing::info_span!(
        "request",
        http.method = %request.method(),
        http.route = route,
        request_id,
        http.status = tracing::field::Empty,
    )
}

fn on_response(response: &Response<Body>, latency: Duration, span: &Span) {
    span.record("http.status", response.status().as_u16());
    tracing::info!(
        http.status = response.status().as_u16(),
        latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX),
        "request finished"
    );
}
