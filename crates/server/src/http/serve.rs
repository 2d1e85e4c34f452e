//! The accept loop: takes TCP connections, optionally wraps each in TLS, and serves it
//! with hyper's HTTP/1 (upgrades allowed, so delegate WebSockets work) until shutdown.
//!
//! Our own loop rather than `axum::serve`, for what that does not offer: TLS, and limits
//! on slow clients. Each connection gets its own task, and everything that can be slow
//! happens there, never in the loop: the TLS handshake (bounded by `header_read_timeout`)
//! and the request heads (hyper's header read timeout, the same setting). Slow bodies are
//! the job of [`crate::http::middleware::body_read_timeout`], because only a handler reads them.
//!
//! Every request head is checked by [`guard`] before hyper reads it, so that a head hyper
//! could not parse is answered as problem+json with a request id, like every other error,
//! rather than by hyper's own bare 400, 414 or 431.
//!
//! Handlers see the peer address as axum's `ConnectInfo<SocketAddr>` (the audit log
//! records it), inserted into every request of the connection.
//!
//! Shutdown: once the shutdown future completes, the loop stops accepting and every
//! connection is told to finish the request in flight and close. `serve` returns when
//! the last connection is gone, or when `grace` has passed, whichever is first. Upgraded
//! connections (the delegate sockets) are no longer hyper's and not waited for; the
//! shutdown future closes them through the hub.

pub mod guard;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use futures::future::Either;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::config::format_duration;
use crate::http::error::ApiError;

/// How a request reached the server, in every request's extensions: handlers that hand
/// the client a URL (the socket URL at registration) keep the scheme it used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Plain,
    Tls,
}

/// How connections are served.
#[derive(Clone)]
pub struct Serving {
    pub app: Router,
    /// `None`: plain HTTP.
    pub tls: Option<TlsAcceptor>,
    /// The TLS handshake, then each request head, must arrive within this.
    pub header_read_timeout: Duration,
    /// How long shutdown waits for connections to finish.
    pub grace: Duration,
}

impl std::fmt::Debug for Serving {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serving")
            .field("tls", &self.tls.is_some())
            .field("header_read_timeout", &self.header_read_timeout)
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

/// Serves connections from `listener` until `shutdown` completes, then drains them (see
/// the module docs).
pub async fn serve(listener: TcpListener, serving: Serving, shutdown: impl Future<Output = ()>) {
    // Told to every connection when shutdown begins.
    let (stop_tx, stop_rx) = watch::channel(false);
    // Each connection task holds a receiver; `closed()` resolves once all are dropped.
    let (open_tx, open_rx) = watch::channel(());
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    accept_failed(e).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let serving = serving.clone();
        let (stop, open) = (stop_rx.clone(), open_rx.clone());
        tokio::spawn(async move {
            serving.connection(stream, peer, stop).await;
            drop(open);
        });
    }
    drop(listener);
    stop_tx.send_replace(true);
    drop(open_rx);
    tokio::select! {
        () = open_tx.closed() => {}
        () = tokio::time::sleep(serving.grace) => {
            tracing::warn!(grace = %format_duration(serving.grace), "requests still in flight after the grace period; stopping anyway");
        }
    }
}

/// What a failed `accept` means. A connection reset before it was accepted is the
/// client's business; anything else (out of file descriptors, usually) would fail again
/// at once, so the loop pauses rather than spin.
async fn accept_failed(error: std::io::Error) {
    use std::io::ErrorKind;
    if matches!(
        error.kind(),
        ErrorKind::ConnectionRefused | ErrorKind::ConnectionAborted | ErrorKind::ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %error, "cannot accept connections; retrying in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}

impl Serving {
    async fn connection(self, stream: TcpStream, peer: SocketAddr, mut stop: watch::Receiver<bool>) {
        // Small frames (socket messages, short answers) go out at once.
        let _ = stream.set_nodelay(true);
        let Some(acceptor) = self.tls.clone() else {
            return self.http(stream, peer, Transport::Plain, stop).await;
        };
        let handshake = tokio::time::timeout(self.header_read_timeout, acceptor.accept(stream));
        let stream = tokio::select! {
            done = handshake => match done {
                Ok(Ok(stream)) => stream,
                Ok(Err(e)) => {
                    // A client that does not trust us, or speaks plain HTTP to this port.
                    tracing::debug!(peer = %peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(peer = %peer, timeout = %format_duration(self.header_read_timeout), "TLS handshake not completed in time");
                    return;
                }
            },
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        self.http(stream, peer, Transport::Tls, stop).await;
    }

    /// Serves HTTP/1 on an established (maybe TLS) stream until the client goes away, a
    /// limit cuts it off, or shutdown asks it to finish.
    async fn http<S>(&self, stream: S, peer: SocketAddr, transport: Transport, mut stop: watch::Receiver<bool>)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let app = self.app.clone();
        let refusals = Arc::new(guard::Refusals::default());
        let stream = guard::Guarded::new(stream, Arc::clone(&refusals));
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            // The stand-in for a head the guard refused: answered here, never routed.
            if let Some(refusal) = refusals.next() {
                return Either::Left(std::future::ready(Ok::<_, Infallible>(refused(refusal, peer))));
            }
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(transport);
            Either::Right(app.clone().oneshot(request))
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.header_read_timeout)
            // The guard's limit, so hyper never meets a head the guard let through with
            // more fields than hyper takes.
            .max_headers(guard::MAX_HEADERS);
        let connection = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
        tokio::pin!(connection);
        let mut stopping = false;
        loop {
            tokio::select! {
                done = connection.as_mut() => {
                    if let Err(e) = done {
                        // A header read timeout, a client that hung up mid-request: theirs.
                        tracing::debug!(peer = %peer, error = %e, "connection ended with an error");
                    }
                    return;
                }
                _ = stop.wait_for(|stopping| *stopping), if !stopping => {
                    stopping = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// The answer to a head the guard refused: problem+json with a request id of its own (the
/// request never reached the middleware that gives one), and the connection closes.
fn refused(refusal: guard::Refusal, peer: SocketAddr) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    tracing::info!(peer = %peer, request_id = %id, status = refusal.problem.status().as_u16(), detail = %refusal.detail, "refused a request head");
    let mut response = ApiError::new(refusal.problem, refusal.detail).into_response();
    let headers = response.headers_mut();
    if let Ok(id) = HeaderValue::from_str(&id) {
        headers.insert("x-request-id", id);
    }
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The manager's address as a caller reaches it, for `scheme` (`http` or `ws`): the
/// configured public URL (its `http` becoming `scheme`), or the request's host, with the
/// TLS form of the scheme when the request came over TLS.
pub fn base_url(
    public_url: Option<&str>,
    transport: Transport,
    headers: &axum::http::HeaderMap,
    scheme: &str,
) -> String {
    match public_url {
        Some(url) => url.replacen("http", scheme, 1),
        None => {
            let host = headers
                .get(axum::http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .unwrap_or("localhost");
            let tls = match transport {
                Transport::Plain => "",
                Transport::Tls => "s",
            };
            format!("{scheme}{tls}://{host}")
        }
    }
}
