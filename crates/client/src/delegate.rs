//! The delegate side: register with a token, keep a socket to the manager open, send
//! heartbeats, and hand the manager's messages to the delegate.
//!
//! [`register`] performs the HTTPS registration. [`Session::start`] then runs a
//! background task that owns the socket: it connects, reads the manager's `hello`, sends a
//! heartbeat every interval (listing what the delegate says it runs), forwards every
//! manager message as an [`Event`], and when the socket drops it reconnects with
//! exponential backoff and full jitter, so a fleet that lost its manager does not come
//! back in one thundering wave. A revoked token or a removed instance ends the session:
//! reconnecting cannot help then.
//!
//! Over `https://` and `wss://`, registration and the socket trust the same [`Tls`]:
//! build the reqwest client with [`Tls::http_client`] and start the session with
//! [`Session::start_with_tls`].
//!
//! A process that holds very many sockets to one manager (the benchmark tool) runs out of
//! ephemeral ports on one source address (about 28,000 on Linux); [`Session::start_bound`]
//! binds the socket to a chosen local address, such as one of `127.0.0.x`, so the ports
//! of several addresses can be used.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use switchboard_domain::{Attempt, Secret, TaskId};
use switchboard_protocol::delegate::{
    Acquire, AcquiredTask, LogAppendBody, LogAppended, Progress, RegisterRequest, Registered, TaskResult, TaskStatus,
};
use switchboard_protocol::socket::{DelegateMessage, MAX_FRAME_BYTES, RunningTask, ServerMessage, close};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use crate::{ClientError, Tls, decode};

/// The socket's read buffer.
const READ_BUFFER_BYTES: usize = 4 * 1024;

/// Registers an instance with `token` at the manager `base` URL.
pub async fn register(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    request: &RegisterRequest,
) -> Result<Registered, ClientError> {
    let url = format!("{}/delegate/v1/register", base.trim_end_matches('/'));
    decode(http.post(url).bearer_auth(token).json(request).send().await?).await
}

/// The task endpoints of one registered instance: acquire an offered attempt, report
/// progress and the result. Every call names the attempt; a 409 `stale-attempt` answer
/// means the attempt is no longer current and the work must be dropped.
#[derive(Debug, Clone)]
pub struct TaskClient {
    http: reqwest::Client,
    base: String,
    session_token: Secret,
}

impl TaskClient {
    /// `base` is the manager's URL; `session_token` comes from [`Registered`].
    pub fn new(http: reqwest::Client, base: &str, session_token: &Secret) -> Self {
        Self {
            http,
            base: base.trim_end_matches('/').to_owned(),
            session_token: session_token.clone(),
        }
    }

    pub async fn acquire(&self, task: TaskId, attempt: Attempt) -> Result<AcquiredTask, ClientError> {
        self.post(task, "acquire", &Acquire { attempt }).await
    }

    pub async fn progress(&self, task: TaskId, report: &Progress) -> Result<TaskStatus, ClientError> {
        self.post(task, "progress", report).await
    }

    pub async fn result(&self, task: TaskId, report: &TaskResult) -> Result<TaskStatus, ClientError> {
        self.post(task, "result", report).await
    }

    /// Appends a chunk of what the attempt printed to the task's log; sending the same
    /// chunk (same offset) again is harmless.
    pub async fn append_log(&self, task: TaskId, chunk: &LogAppendBody) -> Result<LogAppended, ClientError> {
        self.post(task, "logs", chunk).await
    }

    async fn post<B: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        task: TaskId,
        what: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let url = format!("{}/delegate/v1/tasks/{task}/{what}", self.base);
        decode(
            self.http
                .post(url)
                .bearer_auth(self.session_token.expose())
                .json(body)
                .send()
                .await?,
        )
        .await
    }
}

/// How reconnects back off.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before reconnect number `n` (0-based): uniformly random between zero and
    /// `initial * 2^n`, capped at `max` ("full jitter").
    pub fn delay(&self, n: u32) -> Duration {
        let ceiling = self
            .initial
            .saturating_mul(1u32.checked_shl(n.min(20)).unwrap_or(u32::MAX))
            .min(self.max);
        let ms = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
        Duration::from_millis(rand::rng().random_range(0..=ms))
    }
}

/// What the session reports to the delegate.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The socket is open and the manager said hello.
    Connected,
    /// A message from the manager.
    Message(ServerMessage),
    /// The socket dropped; the session will reconnect by itself.
    Disconnected { reason: String },
    /// The session ended for good (token revoked, instance removed, or stopped).
    Ended { reason: String },
}

/// A running connection to the manager. Dropping it (or [`Session::stop`]) closes the
/// socket.
#[derive(Debug)]
pub struct Session {
    /// Events, in order. The channel is bounded so a delegate that stops reading slows
    /// the socket down instead of growing memory.
    pub events: mpsc::Receiver<Event>,
    outgoing: mpsc::Sender<DelegateMessage>,
    running: Arc<watch::Sender<Vec<RunningTask>>>,
    stop: CancellationToken,
}

impl Session {
    /// Starts the background connection for a registered instance; a `wss://` socket
    /// must have a certificate from a public CA.
    pub fn start(registered: Registered, backoff: Backoff) -> Session {
        Self::start_with_tls(registered, backoff, Tls::default())
    }

    /// Like [`Session::start`], trusting what `tls` trusts for a `wss://` socket.
    pub fn start_with_tls(registered: Registered, backoff: Backoff, tls: Tls) -> Session {
        Self::start_bound(registered, backoff, tls, None)
    }

    /// Like [`Session::start_with_tls`], with the socket bound to `local_address` (port
    /// chosen by the system) when one is given.
    pub fn start_bound(registered: Registered, backoff: Backoff, tls: Tls, local_address: Option<IpAddr>) -> Session {
        let (events_tx, events) = mpsc::channel(1024);
        let (outgoing, outgoing_rx) = mpsc::channel(256);
        let (running, running_rx) = watch::channel(Vec::new());
        let stop = CancellationToken::new();
        let worker = Worker {
            registered,
            backoff,
            tls,
            local_address,
            events: events_tx,
            outgoing: outgoing_rx,
            running: running_rx,
            stop: stop.clone(),
        };
        tokio::spawn(worker.run());
        Session {
            events,
            outgoing,
            running: Arc::new(running),
            stop,
        }
    }

    /// Sets the tasks the next heartbeats report as running.
    pub fn set_running(&self, tasks: Vec<RunningTask>) {
        self.running.send_replace(tasks);
    }

    /// Sends a message on the socket (a validation result, say). Fails when the session
    /// has ended.
    pub async fn send(&self, message: DelegateMessage) -> Result<(), ClientError> {
        self.outgoing.send(message).await.map_err(|_| ClientError::Closed)
    }

    /// Closes the socket and ends the session.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Worker {
    registered: Registered,
    backoff: Backoff,
    /// Whom a `wss://` socket trusts; unused for `ws://`.
    tls: Tls,
    /// The local address the socket is bound to; `None` lets the system choose.
    local_address: Option<IpAddr>,
    events: mpsc::Sender<Event>,
    outgoing: mpsc::Receiver<DelegateMessage>,
    running: watch::Receiver<Vec<RunningTask>>,
    stop: CancellationToken,
}

/// Why one socket ended.
enum Ended {
    /// Reconnect after a backoff.
    Retry(String),
    /// Do not reconnect.
    Final(String),
}

impl Worker {
    async fn run(mut self) {
        let mut failures = 0u32;
        loop {
            let outcome = self.connect_once(&mut failures).await;
            let (reason, last) = match outcome {
                Ended::Retry(r) => (r, false),
                Ended::Final(r) => (r, true),
            };
            if last || self.stop.is_cancelled() {
                let _ = self.events.send(Event::Ended { reason }).await;
                return;
            }
            let _ = self.events.send(Event::Disconnected { reason }).await;
            let delay = self.backoff.delay(failures);
            failures = failures.saturating_add(1);
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                () = self.stop.cancelled() => {}
            }
        }
    }

    async fn connect_once(&mut self, failures: &mut u32) -> Ended {
        let mut request = match self.registered.stream_url.as_str().into_client_request() {
            Ok(r) => r,
            Err(e) => return Ended::Final(format!("bad stream URL {:?}: {e}", self.registered.stream_url)),
        };
        let bearer = format!("Bearer {}", self.registered.session_token.expose());
        match bearer.parse() {
            Ok(v) => request.headers_mut().insert("authorization", v),
            Err(_) => return Ended::Final("the session token is not a valid header value".into()),
        };
        // Frames are small JSON messages: a 4 KiB read buffer instead of tungstenite's
        // 128 KiB (allocated and filled per socket) keeps a process that holds thousands
        // of sockets, like the benchmark's simulated fleet, small. Larger frames still
        // arrive, over several reads.
        let config = WebSocketConfig::default()
            .read_buffer_size(READ_BUFFER_BYTES)
            .max_message_size(Some(MAX_FRAME_BYTES))
            .max_frame_size(Some(MAX_FRAME_BYTES));
        let connector = Some(self.tls.connector());
        let connected = match self.local_address {
            None => tokio_tungstenite::connect_async_tls_with_config(request, Some(config), false, connector).await,
            Some(local) => match connect_bound(local, &request).await {
                Ok(tcp) => tokio_tungstenite::client_async_tls_with_config(request, tcp, Some(config), connector).await,
                Err(e) => return Ended::Retry(format!("cannot connect from {local}: {e}")),
            },
        };
        let (socket, _) = match connected {
            Ok(s) => s,
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) if resp.status().as_u16() == 401 => {
                return Ended::Final("the manager no longer knows this instance's session: register again".into());
            }
            Err(e) => return Ended::Retry(format!("cannot connect: {e}")),
        };
        let (mut sink, mut stream) = socket.split();
        let mut interval = Duration::from_millis(self.registered.heartbeat_interval_ms.max(100));
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                frame = stream.next() => match frame {
                    None => return Ended::Retry("the manager closed the connection".into()),
                    Some(Err(e)) => return Ended::Retry(format!("socket error: {e}")),
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(ServerMessage::Hello { heartbeat_interval_ms, .. }) => {
                            *failures = 0;
                            let wanted = Duration::from_millis(heartbeat_interval_ms.max(100));
                            if wanted != interval {
                                interval = wanted;
                                ticker = tokio::time::interval(interval);
                                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                            }
                            let _ = self.events.send(Event::Connected).await;
                        }
                        Ok(message) => {
                            let _ = self.events.send(Event::Message(message)).await;
                        }
                        Err(e) => tracing::warn!(error = %e, "ignoring a message this client does not understand"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        let (code, reason) = frame
                            .map(|f| (u16::from(f.code), f.reason.to_string()))
                            .unwrap_or((u16::from(CloseCode::Normal), String::new()));
                        let reason = format!("closed by the manager ({code}): {reason}");
                        return match code {
                            close::TOKEN_REVOKED | close::REMOVED | close::REPLACED | close::RETIRED => Ended::Final(reason),
                            _ => Ended::Retry(reason),
                        };
                    }
                    // Pings are answered by tungstenite itself; other frames carry nothing for us.
                    Some(Ok(_)) => {}
                },
                _ = ticker.tick() => {
                    let beat = DelegateMessage::Heartbeat { running: self.running.borrow().clone() };
                    if let Err(e) = send(&mut sink, &beat).await {
                        return Ended::Retry(format!("cannot send a heartbeat: {e}"));
                    }
                }
                Some(message) = self.outgoing.recv() => {
                    if let Err(e) = send(&mut sink, &message).await {
                        return Ended::Retry(format!("cannot send: {e}"));
                    }
                }
                () = self.stop.cancelled() => {
                    // What was handed to `send` before the stop goes out first: a
                    // `draining` said on the way out must reach the manager.
                    while let Ok(message) = self.outgoing.try_recv() {
                        if send(&mut sink, &message).await.is_err() {
                            break;
                        }
                    }
                    let _ = sink.send(Message::Close(None)).await;
                    return Ended::Final("stopped".into());
                }
            }
        }
    }
}

/// A TCP connection to the request's host and port from `local` (any free port of it).
async fn connect_bound(
    local: IpAddr,
    request: &tokio_tungstenite::tungstenite::handshake::client::Request,
) -> std::io::Result<tokio::net::TcpStream> {
    let uri = request.uri();
    let host = uri
        .host()
        .unwrap_or_default()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = uri
        .port_u16()
        .unwrap_or(if uri.scheme_str() == Some("wss") { 443 } else { 80 });
    let mut last = std::io::Error::new(std::io::ErrorKind::NotFound, format!("{host} has no address"));
    for remote in tokio::net::lookup_host((host, port)).await? {
        if remote.is_ipv4() != local.is_ipv4() {
            continue;
        }
        let socket = match local {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.bind(std::net::SocketAddr::new(local, 0))?;
        match socket.connect(remote).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

async fn send<S>(sink: &mut S, message: &DelegateMessage) -> Result<(), String>
where
    S: futures::Sink<Message> + Unpin,
    S::Error: std::fmt::Display,
{
    let text = serde_json::to_string(message).map_err(|e| e.to_string())?;
    sink.send(Message::text(text)).await.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_bound_socket_connects_from_the_chosen_local_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let request = format!("ws://127.0.0.1:{port}/delegate/v1/stream")
            .into_client_request()
            .unwrap();
        let local: IpAddr = "127.0.0.2".parse().unwrap();
        let (connected, accepted) = tokio::join!(connect_bound(local, &request), listener.accept());
        assert_eq!(connected.unwrap().local_addr().unwrap().ip(), local);
        assert_eq!(accepted.unwrap().1.ip(), local);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(2),
        };
        for n in 0..40 {
            let ceiling = Duration::from_millis(100 * (1u64 << n.min(20))).min(b.max);
            assert!(b.delay(n) <= ceiling, "attempt {n}");
        }
    }
}
