//! The Switchboard manager's server: configuration, the HTTP API, and how it runs.
//!
//! [`app`] builds the router from an [`AppState`] (a store and the settings); [`run`] serves
//! it on a bound listener until a shutdown future completes, so tests bind port 0 and stop
//! the server cleanly. It serves HTTPS when the settings name a certificate ([`tls`]),
//! through its own accept loop ([`serve`]). The `switchboard` binary only loads
//! [`Settings`], sets up [`telemetry`], opens the store ([`open_store`]) and calls
//! [`run_with_tls`].

#![forbid(unsafe_code)]

pub mod api;
pub mod bootstrap;
pub mod config;
pub mod delegate_api;
pub mod history;
pub mod http;
pub mod manager;
pub mod metrics;
pub mod probes;
pub mod sealing;
pub mod secrets;
pub mod state;
pub mod storage;
pub mod telemetry;

use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use axum::{Extension, Router};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceBuilder;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use config::{ConfigError, Settings};
pub use http::error::{ApiError, Problem};
pub use http::extract::ApiJson;
pub use http::tls;
pub use state::AppState;
pub use storage::open_store;

use crate::config::format_duration;
use crate::http::dashboard;
use crate::http::middleware::{self, BodyLimit};
use crate::http::{audit, limits, openapi, serve};
use crate::manager::cluster::Signalling;
use crate::manager::dispatch;
use crate::manager::housekeeping::Housekeeping;
use crate::manager::workers::Workers;

/// The whole HTTP API.
pub fn app(state: AppState) -> Router {
    let (router, document) = router(&state).split_for_parts();
    let router = router
        .layer(Extension(openapi::Reference::new(&document)))
        .fallback(probes::not_found);
    with_middleware(router, state.settings()).with_state(state)
}

/// Every route with its OpenAPI operation: what [`app`] serves and what `/openapi.json`
/// documents come from this one list, so neither can have a route the other lacks.
pub fn router(state: &AppState) -> OpenApiRouter<AppState> {
    // Every /api/v1 route needs an API key (or the admin key); handlers check permissions.
    // Outermost first: what the client accepts, its rate, who it is, then the audit.
    let api = api::router()
        .layer(from_fn_with_state(state.store().clone(), audit::record))
        .layer(from_fn_with_state(state.keys(), middleware::authenticate))
        .layer(from_fn_with_state(state.limits().api.clone(), limits::rate))
        .layer(axum::middleware::from_fn(limits::accept_json));
    let delegate = delegate_api::router()
        .layer(from_fn_with_state(state.limits().delegates.clone(), limits::rate))
        .layer(axum::middleware::from_fn(limits::accept_json));
    OpenApiRouter::with_openapi(openapi::base())
        .routes(routes!(probes::healthz))
        .routes(routes!(probes::readyz))
        .routes(routes!(probes::metrics))
        .routes(routes!(openapi::document))
        .routes(routes!(openapi::docs))
        .routes(routes!(dashboard::index_without_slash))
        .routes(routes!(dashboard::index))
        .routes(routes!(dashboard::file))
        .nest("/api/v1", api)
        .nest("/delegate/v1", delegate)
}

/// Wraps `router` in the layers every route gets. Separate from [`app`] so that tests can
/// put a router of their own in exactly the production stack.
///
/// Outermost first: a request id (so the span can carry it), the span, problem+json for
/// bare errors, the body read timeout, the request timeout, then the body limit. Axum's
/// own default limit is disabled so that the `body_limit` setting is the only limit,
/// whichever way a body is read.
pub fn with_middleware<S>(router: Router<S>, settings: &Settings) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    router.layer(
        ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(telemetry::request_trace())
            .layer(from_fn_with_state(
                BodyLimit(settings.body_limit),
                middleware::problem_for_bare_errors,
            ))
            .layer(from_fn_with_state(
                middleware::BodyReadTimeout(settings.body_read_timeout),
                middleware::body_read_timeout,
            ))
            .layer(from_fn_with_state(settings.request_timeout, middleware::timeout))
            .layer(DefaultBodyLimit::disable())
            .layer(RequestBodyLimitLayer::new(settings.body_limit)),
    )
}

/// Serves [`app`] on `listener` until `shutdown` completes, then stops accepting, lets
/// requests in flight finish for up to `shutdown_grace`, and returns. Over HTTPS when the
/// settings name a certificate and key: an unusable one is an `InvalidInput` error before
/// anything is served (the binary checks it earlier, with [`tls::acceptor`]).
pub async fn run(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let tls = tls::acceptor(state.settings())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
    run_with_tls(listener, state, tls, shutdown).await
}

/// [`run`] with the TLS acceptor already built (`None`: plain HTTP), so the binary loads
/// the certificate once and reports a bad one as a configuration error.
pub async fn run_with_tls(
    listener: TcpListener,
    state: AppState,
    tls: Option<TlsAcceptor>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let settings = state.settings();
    let grace = settings.shutdown_grace;
    let scheme = if tls.is_some() { "https" } else { "http" };
    let address = listener.local_addr()?;
    tracing::info!(%address, scheme, "serving {scheme}");
    let serving = serve::Serving {
        app: app(state.clone()),
        tls,
        header_read_timeout: settings.header_read_timeout,
        grace,
    };
    let (placer, sockets) = (state.placer(), state.sockets());
    let housekeeping = Housekeeping::start(placer, sockets, settings.into());
    let dispatching = dispatch::lifecycle::Loops::start(placer);
    let signalling = Signalling::start(placer, sockets);
    // The request rates of credentials gone quiet are forgotten as often as the sweep runs.
    let forgetting = Workers::default();
    let limits = state.limits().clone();
    forgetting.every(settings.sweep_interval, move || {
        limits.forget_idle();
        std::future::ready(())
    });
    let closing = state.clone();
    let signal = async move {
        shutdown.await;
        tracing::info!(grace = %format_duration(grace), "shutting down");
        // Long polls answer the task as it is now, so they end within the grace.
        closing.begin_shutdown();
        // Sockets are upgraded connections the server no longer tracks: tell them to go
        // (delegates reconnect, to another replica if there is one).
        closing.hub().shut_down(
            switchboard_protocol::socket::close::GOING_AWAY,
            "the manager is shutting down",
        );
    };
    serve::serve(listener, serving, signal).await;
    dispatching.stop().await;
    signalling.stop().await;
    forgetting.stop().await;
    housekeeping.stop().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The production middleware stack around a router of test routes, driven with
    //! `oneshot`: no production route takes a body yet, and none is slow on purpose.

    use std::time::Duration;

    use axum::body::{Body, to_bytes};
    use axum::http::{Request, StatusCode, header};
    use axum::response::Response;
    use axum::routing::{get, post};
    use axum::{Json, Router};
    use serde_json::Value;
    use tower::ServiceExt;

    use super::*;

    fn test_app() -> Router {
        let settings = Settings {
            body_limit: 1024,
            request_timeout: Duration::from_millis(50),
            // Shorter than the request timeout, so a stalled body meets it first.
            body_read_timeout: Duration::from_millis(20),
            ..Settings::default()
        };
        let router = Router::new()
            .route("/echo", post(|ApiJson(body): ApiJson<Value>| async move { Json(body) }))
            .route(
                "/slow",
                get(|| async { tokio::time::sleep(Duration::from_secs(10)).await }),
            )
            // A long poll declaring a 200 ms wait: it may take that plus the 50 ms limit.
            .route(
                "/poll/{ms}",
                get(
                    |poll: middleware::LongPoll, axum::extract::Path(ms): axum::extract::Path<u64>| async move {
                        poll.wait(Duration::from_millis(200));
                        tokio::time::sleep(Duration::from_millis(ms)).await;
                        "waited"
                    },
                ),
            );
        with_middleware(router, &settings)
    }

    async fn send(request: Request<Body>) -> (Response, Value) {
        let response = test_app().oneshot(request).await.expect("infallible");
        let (parts, body) = response.into_parts();
        let bytes = to_bytes(body, 1 << 20).await.expect("body");
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (Response::from_parts(parts, Body::empty()), json)
    }

    fn post_json(body: Vec<u8>, content_length: bool) -> Request<Body> {
        let mut request = Request::post("/echo").header(header::CONTENT_TYPE, "application/json");
        if content_length {
            request = request.header(header::CONTENT_LENGTH, body.len());
        }
        request.body(Body::from(body)).expect("request")
    }

    fn oversized() -> Vec<u8> {
        format!("\"{}\"", "x".repeat(4096)).into_bytes()
    }

    #[tokio::test]
    async fn a_body_within_the_limit_is_accepted() {
        let (response, json) = send(post_json(b"{\"a\":1}".to_vec(), true)).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(json["a"], 1);
    }

    #[tokio::test]
    async fn a_declared_oversized_body_is_a_413_problem() {
        let (response, json) = send(post_json(oversized(), true)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert_eq!(json["type"], "https://switchboard.dev/problems/payload-too-large");
        assert!(
            json["detail"].as_str().expect("detail").contains("1024 bytes"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn an_undeclared_oversized_body_is_a_413_problem() {
        let (response, json) = send(post_json(oversized(), false)).await;
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(json["type"], "https://switchboard.dev/problems/payload-too-large");
    }

    #[tokio::test]
    async fn a_body_that_is_not_json_is_a_400_or_415_problem() {
        let (response, json) = send(post_json(b"{not json".to_vec(), true)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST);
        assert_eq!(json["type"], "https://switchboard.dev/problems/bad-request");

        let request = Request::post("/echo")
            .header(header::CONTENT_TYPE, "text/plain")
            .body(Body::from("{}"));
        let (response, _) = send(request.expect("request")).await;
        assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    }

    #[tokio::test]
    async fn a_slow_request_is_cut_off_with_a_timeout_problem() {
        let (response, json) = send(Request::get("/slow").body(Body::empty()).expect("request")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(json["type"], "https://switchboard.dev/problems/timeout");
        assert!(json["detail"].as_str().expect("detail").contains("50ms"), "{json}");
    }

    #[tokio::test]
    async fn a_long_poll_is_limited_by_its_own_wait_plus_the_request_timeout() {
        // 150 ms: three times the request timeout, within the declared wait.
        let response = test_app()
            .oneshot(Request::get("/poll/150").body(Body::empty()).expect("request"))
            .await
            .expect("infallible");
        assert_eq!(response.status(), StatusCode::OK);
        // Past wait + limit (250 ms), it is cut off like any request, saying the limit it had.
        let (response, json) = send(Request::get("/poll/10000").body(Body::empty()).expect("request")).await;
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert!(json["detail"].as_str().expect("detail").contains("250ms"), "{json}");
    }

    #[tokio::test]
    async fn a_body_that_stops_arriving_is_a_408_problem_that_closes_the_connection() {
        let stalled = futures::stream::pending::<Result<axum::body::Bytes, std::io::Error>>();
        let request = Request::post("/echo")
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from_stream(stalled))
            .expect("request");
        let (response, json) = send(request).await;
        assert_eq!(response.status(), StatusCode::REQUEST_TIMEOUT);
        assert_eq!(response.headers()[header::CONNECTION], "close");
        assert_eq!(json["type"], "https://switchboard.dev/problems/timeout");
        assert!(json["detail"].as_str().expect("detail").contains("20ms"), "{json}");
    }

    #[tokio::test]
    async fn a_wrong_method_is_a_405_problem_that_keeps_allow() {
        let (response, json) = send(Request::get("/echo").body(Body::empty()).expect("request")).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/problem+json");
        assert!(
            response.headers()[header::ALLOW]
                .to_str()
                .expect("ascii")
                .contains("POST")
        );
        assert_eq!(json["type"], "https://switchboard.dev/problems/method-not-allowed");
        assert!(
            json["detail"]
                .as_str()
                .expect("detail")
                .contains("/echo does not accept GET"),
            "{json}"
        );
    }

    #[tokio::test]
    async fn every_response_carries_a_request_id() {
        let (response, _) = send(post_json(b"{}".to_vec(), true)).await;
        assert!(response.headers().contains_key("x-request-id"));
    }
}
