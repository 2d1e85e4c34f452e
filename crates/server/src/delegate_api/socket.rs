//! `GET /delegate/v1/stream`: the WebSocket of one delegate instance.
//!
//! Authenticated by the instance's session credential. The manager says hello, then the
//! socket carries heartbeats and validation answers up, notifications down. The manager
//! pings a socket it has heard nothing from (no frame, no pong) for the ping interval, and
//! closes one silent for the silence limit; a delegate's own frames count as hearing from
//! it, so one that sends heartbeats more often than the ping interval is never pinged. Anything that breaks the protocol (a frame that is not JSON, an
//! unknown message, a string holding U+0000, a binary frame, a frame over the size limit)
//! closes *this* socket with a close code and a reason, and nothing else.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use chrono::Utc;
use switchboard_domain::{CapabilityResult, DelegateInstance, TaskState};
use switchboard_protocol::socket::{DelegateMessage, MAX_FRAME_BYTES, PROTOCOL_VERSION, ServerMessage, close};
use tokio::time::Instant;

use super::keepalive::{Due, Liveness};
use crate::config::Settings;
use crate::http::error::{ApiError, Problem};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{LIMITED, STORE, bit};
use crate::manager::cluster::Sockets;
use crate::manager::dispatch::Placer;
use crate::manager::hub::{Attached, Outbound};

/// What a socket's task uses: the placer (the store, the dispatcher, the metrics), this
/// manager's sockets (the hub, the heartbeats), and the settings (intervals, the cap).
#[derive(Debug, Clone)]
struct Conn {
    placer: Placer,
    sockets: Sockets,
    settings: Arc<Settings>,
}

/// Open the instance's WebSocket, with its session credential.
///
/// Protocol version 1 (`docs/protocol.md`): every frame is one JSON text message with a
/// `type`. The manager sends `ServerMessage`s (a `hello` first, then task offers,
/// validation requests, cancellations, drain and revocation notices); the delegate sends
/// `DelegateMessage`s (heartbeats with its running tasks, validation results). Task
/// payloads and results never travel here.
#[utoipa::path(
    get,
    path = "/stream",
    operation_id = "open_delegate_socket",
    tag = "delegate",
    security(("session" = [])),
    responses(
        (status = 101, description = "Switched to the WebSocket protocol."),
        Errors<{ STORE | LIMITED | bit(Problem::BadRequest) | bit(Problem::Unauthorized) | bit(Problem::TokenRevoked) }>
    )
)]
pub async fn stream(
    State(placer): State<Placer>,
    State(sockets): State<Sockets>,
    State(settings): State<Arc<Settings>>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    // Held from the session check until the socket's setup is done (see
    // `Sockets::opening`). A closed semaphore never happens: it lives as long as the app.
    let opening = Arc::clone(&sockets.opening)
        .acquire_owned()
        .await
        .map_err(|_| ApiError::unavailable("the manager is shutting down", 5))?;
    let instance = super::session::instance(placer.store().as_ref(), &headers).await?;
    let state = Conn {
        placer,
        sockets,
        settings,
    };
    let upgrade = upgrade.map_err(|rejection| {
        ApiError::bad_request(format!(
            "this endpoint speaks WebSocket only: {}",
            rejection.body_text()
        ))
    })?;
    let place = take_place(&state)?;
    // Delegate frames are small JSON messages. tungstenite's default read buffer is
    // 128 KiB, allocated and filled for every socket: at 10,000 sockets that was most of
    // the manager's memory (docs/benchmarks.md, F3). Larger frames still arrive, over
    // several reads; writes go out per message.
    Ok(upgrade
        .read_buffer_size(SOCKET_READ_BUFFER_BYTES)
        .write_buffer_size(0)
        .max_message_size(MAX_FRAME_BYTES)
        .max_frame_size(MAX_FRAME_BYTES)
        .on_upgrade(move |socket| async move {
            serve(socket, state, instance, opening).await;
            drop(place);
        }))
}

/// The read buffer of each delegate socket, held for as long as it is open: a heartbeat
/// is about 40 bytes and a result a few hundred, so 1 KiB (4 KiB before issue 20: about
/// 3 KiB more per idle socket) holds what arrives; a larger frame is read over several
/// reads.
const SOCKET_READ_BUFFER_BYTES: usize = 1024;

/// One of the `max_sockets` places, held from before the upgrade until the socket's task
/// ends (or the upgrade fails and the closure holding it is dropped); 503 when none is
/// free.
fn take_place(state: &Conn) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state.sockets.hub.take_place().ok_or_else(|| {
        let cap = state.settings.max_sockets;
        tracing::warn!(
            max_sockets = cap,
            "refused a delegate socket: this manager holds its maximum"
        );
        ApiError::unavailable(
            format!("this manager holds its maximum of {cap} delegate sockets; try again later or another replica"),
            5,
        )
    })
}

/// Why a socket's loop ended.
enum End {
    /// Close with this code and reason.
    Close(u16, String),
    /// The peer is gone or closed the socket itself: nothing to send.
    Gone,
}

#[tracing::instrument(name = "socket", skip_all, fields(instance.id = %instance.id, group.id = %instance.group_id))]
async fn serve(
    mut socket: WebSocket,
    state: Conn,
    instance: DelegateInstance,
    opening: tokio::sync::OwnedSemaphorePermit,
) {
    let id = instance.id;
    let mut opening = Some(opening);
    state.placer.metrics().socket_opened();
    let Attached { generation, mut rx } = state.sockets.hub.attach(id, instance.token_id, instance.group_id);
    let end = match state.placer.store().set_instance_connected(id, true).await {
        Ok(_) => {
            tracing::info!(instance.id = %id, "delegate connected");
            // A new delegate may be what a queued task waits for, on any replica.
            crate::manager::cluster::wake_everywhere(&state.placer, &state.sockets);
            // A draining delegate that reconnects is offered nothing again: what it holds
            // unacquired goes back instead (a give-back cut short before is finished).
            // Boxed, here and for the other rare paths: an async call awaited inline
            // makes the socket task's future as large as its largest state, and every
            // open socket holds that future for as long as it is open.
            let pending = if instance.draining {
                Box::pin(crate::manager::dispatch::lifecycle::give_back_offers(
                    &state.placer,
                    id,
                    "is draining",
                ))
                .await;
                Vec::new()
            } else {
                Box::pin(unacquired_offers(&state, &instance)).await
            };
            drop(opening.take());
            converse(&mut socket, &state, &instance, &mut rx, pending).await
        }
        Err(e) => {
            tracing::warn!(instance.id = %id, error = %e, "cannot record the connection; closing the socket");
            End::Close(1011, "the manager cannot reach its store; reconnect later".into())
        }
    };
    drop(opening);
    if let End::Close(code, reason) = end {
        tracing::info!(instance.id = %id, code, reason = %reason, "closing delegate socket");
        let frame = CloseFrame {
            code,
            reason: truncate(&reason, 123).into(),
        };
        let _ = socket.send(Message::Close(Some(frame))).await;
    }
    // Only the current socket of the instance marks it disconnected: a replaced one's
    // successor is already connected.
    if state.sockets.hub.detach(id, generation) {
        // Whether the instance is gone: not when it reconnected to another replica
        // meanwhile (whose record of the connection stays).
        let gone = match state.placer.store().set_instance_connected(id, false).await {
            Ok(held_here) => held_here,
            Err(e) => {
                tracing::warn!(instance.id = %id, error = %e, "cannot record the disconnection");
                true
            }
        };
        if !gone {
            tracing::info!(instance.id = %id, "delegate moved to another replica; its tasks stay with it");
        } else if state.sockets.hub.is_shutting_down() {
            // This manager is going away, not the delegate: it reconnects (to another
            // replica, or to this one once it is back) and goes on with its tasks, which
            // its heartbeats keep alive. Were it gone for good, their run deadlines end them.
            tracing::info!(instance.id = %id, "delegate let go at shutdown; its tasks stay with it");
        } else {
            tracing::info!(instance.id = %id, "delegate disconnected");
            Box::pin(crate::manager::dispatch::lifecycle::instance_lost(&state.placer, id)).await;
        }
    }
    state.placer.metrics().socket_closed();
}

/// The offers this instance holds and has not acquired: an offer sent to a socket that
/// closed before the delegate read it is lost with that socket, so each new socket of the
/// instance is offered them again (after `hello`). Without this the task would wait for
/// the acknowledge timeout and then never go back to the instance, which counts as
/// having tried it. A store that cannot say leaves them to that timeout.
async fn unacquired_offers(state: &Conn, instance: &DelegateInstance) -> Vec<ServerMessage> {
    match state.placer.store().tasks_held_by(instance.id).await {
        Ok(held) => held
            .into_iter()
            .filter(|t| t.state == TaskState::Assigned)
            .map(|t| ServerMessage::TaskAvailable {
                task_id: t.id(),
                attempt: t.attempt,
            })
            .collect(),
        Err(e) => {
            tracing::warn!(instance.id = %instance.id, error = %e, "cannot read the instance's offers to send them again");
            Vec::new()
        }
    }
}

async fn converse(
    socket: &mut WebSocket,
    state: &Conn,
    instance: &DelegateInstance,
    rx: &mut tokio::sync::mpsc::Receiver<Outbound>,
    pending: Vec<ServerMessage>,
) -> End {
    let settings = &state.settings;
    let silence: Duration = settings.socket_silence_timeout;
    let hello = ServerMessage::Hello {
        protocol: PROTOCOL_VERSION,
        instance_id: instance.id,
        heartbeat_interval_ms: u64::try_from(settings.heartbeat_interval.as_millis()).unwrap_or(u64::MAX),
        server_time: Utc::now(),
    };
    if send(socket, &hello).await.is_err() {
        return End::Gone;
    }
    for offer in &pending {
        if send(socket, offer).await.is_err() {
            return End::Gone;
        }
    }
    // One timer per socket, for both jobs: ping a socket that has been quiet long enough,
    // and close one silent for the silence limit. Every frame received moves the timer to
    // the next look (a reset in the timer wheel, no wake; unchanged within a grid step),
    // so the timer fires only for a socket that has gone quiet, and a delegate whose own
    // frames (heartbeats) come often enough is never pinged: its traffic already proves it
    // alive. See [`Liveness`] for when the ping goes out.
    let liveness = Liveness::new(settings.socket_ping_interval, silence);
    let mut heard = Instant::now();
    let wake = tokio::time::sleep_until(liveness.next_look(heard));
    tokio::pin!(wake);
    // Set by the delegate's `draining` frame (or already stored, for a draining delegate
    // that reconnected): offers are no longer sent, since the store gives them back.
    let mut draining = instance.draining;
    loop {
        tokio::select! {
            frame = socket.recv() => {
                let message = match frame {
                    None => return End::Gone,
                    Some(Err(e)) => return broken(e),
                    Some(Ok(message)) => message,
                };
                heard = Instant::now();
                wake.as_mut().reset(liveness.next_look(heard));
                match message {
                    // The same strict parse as the HTTP bodies: a frame that holds U+0000
                    // (which PostgreSQL cannot store in a validation result's detail) or
                    // an array for an object is not a protocol message.
                    Message::Text(text) => match crate::http::extract::decode::<DelegateMessage>(text.as_bytes()) {
                        // Until a drain is recorded, offers still go out (nothing would give
                        // them back); a repeated frame tries again.
                        Ok(DelegateMessage::Draining { reason }) => {
                            if !draining {
                                draining = Box::pin(drain(state, instance, &reason)).await;
                            }
                        }
                        // The frame most sockets send, handled without an await or an
                        // allocation of its own.
                        Ok(DelegateMessage::Heartbeat { running }) => heartbeat(state, instance, running),
                        Ok(m) => Box::pin(handle(state, instance, m)).await,
                        Err(e) => return End::Close(close::INVALID_MESSAGE, format!("not a protocol message: {e}")),
                    },
                    Message::Binary(_) => {
                        return End::Close(close::UNSUPPORTED, "binary frames are not part of the protocol".into());
                    }
                    Message::Close(_) => return End::Gone,
                    Message::Ping(_) | Message::Pong(_) => {}
                }
            }
            outbound = rx.recv() => match outbound {
                Some(Outbound::Send(message)) => match *message {
                    // An offer claimed before the drain was stored: the drain gives it back.
                    ServerMessage::TaskAvailable { task_id, attempt } if draining => {
                        tracing::info!(task.id = %task_id, attempt = %attempt, "not offering a task to a draining delegate");
                    }
                    message => {
                        if send(socket, &message).await.is_err() {
                            return End::Gone;
                        }
                    }
                },
                Some(Outbound::Close(closing)) => return End::Close(closing.0, closing.1),
                None => return End::Close(close::GOING_AWAY, "the manager is shutting down".into()),
            },
            () = &mut wake => {
                let now = Instant::now();
                match liveness.due(heard, now) {
                    Due::Close => {
                        return End::Close(close::SILENT, format!("nothing heard from the delegate for {}s", silence.as_secs()));
                    }
                    Due::Ping { then } => {
                        if socket.send(Message::Ping(Default::default())).await.is_err() {
                            return End::Gone;
                        }
                        wake.as_mut().reset(then);
                    }
                    Due::Nothing { then } => wake.as_mut().reset(then),
                }
            }
        }
    }
}

/// The delegate said it is stopping. In this order: the store records it, so no claim
/// for the instance commits from then on, on any replica; then every offer it holds and
/// has not acquired (claimed before that) goes back to the queue at once, fenced by its
/// attempt, so one it acquired meanwhile runs on; then placement wakes everywhere, for
/// another instance to take them. Returns whether the drain was recorded: until it is,
/// claims for the instance still commit and their offers must still be sent.
async fn drain(state: &Conn, instance: &DelegateInstance, reason: &str) -> bool {
    let reason = truncate(reason, 200);
    tracing::info!(instance.id = %instance.id, reason, "delegate draining: no new task for it");
    if let Err(e) = state.placer.store().set_instance_draining(instance.id).await {
        // The delegate does not acquire what it is offered now; those offers go back at
        // the acknowledge timeout, or when its socket closes, or at its next frame.
        tracing::warn!(instance.id = %instance.id, error = %e, "cannot record that the delegate is draining");
        return false;
    }
    state.sockets.sessions.forget_instances(&[instance.id]);
    crate::manager::dispatch::lifecycle::give_back_offers(&state.placer, instance.id, "is draining").await;
    crate::manager::cluster::wake_everywhere(&state.placer, &state.sockets);
    true
}

fn heartbeat(state: &Conn, instance: &DelegateInstance, running: Vec<switchboard_protocol::socket::RunningTask>) {
    state.placer.metrics().heartbeat_received();
    state.sockets.heartbeats.record(instance.id, Utc::now(), running);
}

async fn handle(state: &Conn, instance: &DelegateInstance, message: DelegateMessage) {
    match message {
        // Handled by the loop, which keeps whether the socket drains.
        DelegateMessage::Draining { .. } => {}
        DelegateMessage::Heartbeat { running } => heartbeat(state, instance, running),
        DelegateMessage::ValidationResult { request_id, results } => {
            // Settled before the results are written: the question's timer, firing
            // during those writes, must not record this instance as silent.
            let question = state.placer.dispatcher().settle_question(&request_id);
            let now = Utc::now();
            for r in results.iter().cloned() {
                let result = CapabilityResult {
                    instance_id: instance.id,
                    basis: r.basis,
                    reachable: r.reachable,
                    detail: truncate(&r.detail, 1024).to_owned(),
                    checked_at: now,
                };
                if let Err(e) = state.placer.store().record_capability_result(&result).await {
                    tracing::warn!(instance.id = %instance.id, request_id, error = %e, "cannot store a validation result");
                }
            }
            // Stored first, so the placement that asked (and any later one) sees them.
            if let Some(question) = question {
                crate::manager::dispatch::place::answered(&state.placer, question, &results);
            }
            state.placer.dispatcher().wake();
        }
    }
}

/// A read error: an oversized frame or broken UTF-8 is the delegate's fault and gets a
/// close code; anything else means the connection is gone.
fn broken(e: axum::Error) -> End {
    use tokio_tungstenite::tungstenite::Error as WsError;
    use tokio_tungstenite::tungstenite::error::CapacityError;
    match e.into_inner().downcast::<WsError>().map(|b| *b) {
        Ok(WsError::Capacity(CapacityError::MessageTooLong { size, max_size })) => End::Close(
            close::TOO_BIG,
            format!("a {size}-byte message is over the {max_size}-byte limit"),
        ),
        Ok(WsError::Capacity(_)) => End::Close(close::TOO_BIG, "a frame is over the size limit".into()),
        Ok(WsError::Utf8(_)) => End::Close(close::INVALID_MESSAGE, "a text frame is not valid UTF-8".into()),
        _ => End::Gone,
    }
}

async fn send(socket: &mut WebSocket, message: &ServerMessage) -> Result<(), axum::Error> {
    let text = serde_json::to_string(message).map_err(axum::Error::new)?;
    socket.send(Message::text(text)).await
}

/// At most `max` bytes of `s`, cut at a character boundary (close reasons are limited to
/// 123 bytes by the WebSocket protocol).
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the future an async fn returns, without calling it.
    fn future_size<A, B, C, D, F: Future>(_: impl FnOnce(A, B, C, D) -> F) -> usize {
        size_of::<F>()
    }

    #[test]
    fn an_idle_socket_task_is_small() {
        // Every open socket holds its task's future for as long as it is open (issue 20:
        // memory per idle socket). The rare paths (a drain, a give-back, an instance
        // lost) are boxed, so their state is allocated only while they run.
        let size = future_size(serve);
        eprintln!("socket task future: {size} bytes");
        // 2,664 bytes in a test build when this was written: the WebSocket itself, the
        // instance, and the loop's own state.
        assert!(size <= 3 * 1024, "the socket task's future is {size} bytes");
    }
}
