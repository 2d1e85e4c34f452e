//! `GET /api/v1/events`: a server-sent event stream that says when something changed,
//! so that the dashboard redraws on change instead of polling.
//!
//! The events carry no data of any task or delegate, only which kind changed
//! (`{"tasks": true, "delegates": false}`), at most four a second: a key learns nothing
//! through it that it could not see, and the page reads what changed through the API it
//! already uses, which respects the key's scope. It ends when the manager shuts down.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use tokio::sync::{broadcast, mpsc};

use crate::http::auth::Caller;
use crate::http::middleware::Stopping;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::API;
use crate::manager::dispatch::Placer;

/// How often changes are gathered into one event.
const GATHER: Duration = Duration::from_millis(250);

/// How often a comment keeps an idle stream open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Follow changes: a server-sent event stream of `changed` events.
///
/// Each event's data says which kind of thing changed since the last one: `{"tasks":
/// bool, "delegates": bool}`, gathered over a quarter of a second. No event names a task
/// or a delegate: read what changed through the API. A comment every 15 s keeps an idle
/// stream open; the stream ends when the manager shuts down (reconnect then).
#[utoipa::path(
    get,
    path = "/events",
    operation_id = "follow_changes",
    tag = "tasks",
    security(("api_key" = [])),
    responses(
        (status = 200, description = "A `text/event-stream` of `changed` events.", content_type = "text/event-stream", body = String),
        Errors<{ API }>
    )
)]
pub async fn follow(State(placer): State<Placer>, State(stopping): State<Stopping>, _caller: Caller) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(4);
    let mut tasks = placer.dispatcher().subscribe();
    let stopped = stopping.wait();
    tokio::spawn(async move {
        tokio::pin!(stopped);
        let mut seen = placer.fleet().generation();
        let mut tick = tokio::time::interval(GATHER);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tasks_changed = false;
        loop {
            tokio::select! {
                () = &mut stopped => break,
                () = tx.closed() => break,
                heard = tasks.recv() => match heard {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => tasks_changed = true,
                    Err(broadcast::error::RecvError::Closed) => break,
                },
                _ = tick.tick() => {
                    let now = placer.fleet().generation();
                    let delegates_changed = now != seen;
                    seen = now;
                    if tasks_changed || delegates_changed {
                        let data = serde_json::json!({"tasks": tasks_changed, "delegates": delegates_changed});
                        let event = Event::default().event("changed").data(data.to_string());
                        if tx.send(event).await.is_err() {
                            break;
                        }
                        tasks_changed = false;
                    }
                }
            }
        }
    });
    Sse::new(Changes(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// The events the watcher task sends, as a stream; it ends when the watcher stops.
struct Changes(mpsc::Receiver<Event>);

impl futures_core::Stream for Changes {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}
