//! `GET /api/v1/tasks/{id}/logs`: what a task's attempts printed, a page at a time or
//! followed live as server-sent events (docs/rules.md, "Task logs").
//!
//! A reader keeps a position (attempt, byte offset); each answer says where to go on
//! from. Appends are refused once a task has ended, so a task that had ended before its
//! log was read has a log that is final: the answer says `ended` when it reached that
//! log's end, and a followed stream then sends `end` and closes.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use switchboard_domain::tasklog::{self, LogChunk, LogPosition};
use switchboard_domain::{Attempt, Permission, TaskId};
use switchboard_protocol::tasks::TaskLogPage;
use tokio::sync::{broadcast, mpsc};
use utoipa::IntoParams;

use crate::config::Settings;
use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiQuery, IdPath};
use crate::http::middleware::Stopping;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, NOT_FOUND, QUERY};
use crate::manager::dispatch::Placer;

/// The bytes of text a page holds at most by default, and at most when asked.
const PAGE_DEFAULT_BYTES: u32 = 256 * 1024;
const PAGE_MAX_BYTES: u32 = 1024 * 1024;

/// How often a comment keeps an idle stream open through proxies.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The query string of `GET /api/v1/tasks/{id}/logs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Read from this attempt's output on (default 1, the first attempt).
    attempt: Option<u32>,
    /// ...from this byte offset in it (default 0). `attempt` and `offset` together are
    /// the previous answer's `next`.
    offset: Option<u64>,
    /// About this many bytes of text per page at most: 1 to 1048576, default 262144 (a
    /// page always holds at least one chunk when there is one).
    #[param(minimum = 1, maximum = 1_048_576)]
    limit_bytes: Option<u32>,
    /// `true`: answer with a `text/event-stream` that sends each chunk (event `chunk`)
    /// as it is stored and, once the task has ended and its log is read, `end`.
    follow: Option<bool>,
}

/// A task's log: what its attempts printed, in order, a page at a time or followed.
///
/// Needs only to see the task (`delegates:view` in its scope). Without `follow`, a page
/// from `attempt`/`offset` and where to go on from (`next`); `ended` once the task has
/// ended and the page reached its log's end. With `follow=true`, a server-sent event
/// stream: each chunk as event `chunk` (data: the chunk; id: where it ends, so a client
/// that reconnects with `Last-Event-ID` goes on from there), then event `end` (data: the
/// task's final state) when the task has ended and its log is read. A comment every 15 s
/// keeps an idle stream open; it closes when the manager shuts down.
#[utoipa::path(
    get,
    path = "/tasks/{id}/logs",
    operation_id = "task_logs",
    tag = "tasks",
    security(("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id."), LogQuery),
    responses(
        (status = 200, description = "A page of the log, or with `follow=true` a `text/event-stream`.", body = TaskLogPage),
        Errors<{ API | NOT_FOUND | QUERY }>
    )
)]
pub async fn read(
    State(placer): State<Placer>,
    State(stopping): State<Stopping>,
    State(settings): State<Arc<Settings>>,
    caller: Caller,
    headers: HeaderMap,
    IdPath(id): IdPath<TaskId>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let limit = q.limit_bytes.unwrap_or(PAGE_DEFAULT_BYTES);
    if !(1..=PAGE_MAX_BYTES).contains(&limit) {
        return Err(ApiError::validation(
            "limit_bytes",
            format!("limit_bytes must be 1 to {PAGE_MAX_BYTES}; got {limit}"),
        ));
    }
    if q.attempt == Some(0) {
        return Err(ApiError::validation("attempt", "attempts count from 1"));
    }
    let mut from = LogPosition {
        attempt: Attempt(q.attempt.unwrap_or(1)),
        offset: q.offset.unwrap_or(0),
    };
    let task = placer.store().get_task(id).await?;
    caller.check(Permission::DelegatesView, &task.spec.scope, "task")?;
    if q.follow != Some(true) {
        return Ok(Json(page(&placer, id, from, limit as usize).await?).into_response());
    }
    if let Some(resumed) = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_event_id)
    {
        from = resumed;
    }
    Ok(follow(
        placer,
        stopping,
        settings.log_follow_interval,
        id,
        from,
        limit as usize,
    ))
}

/// One page from `from`, reading the task's state first: appends stop when it ends, so a
/// state read as ended means the log read after it is whole.
async fn page(placer: &Placer, id: TaskId, from: LogPosition, limit: usize) -> Result<TaskLogPage, ApiError> {
    let state = placer.store().get_task(id).await?.state;
    let chunks = placer.store().task_log(id, from, limit).await?;
    let taken: usize = chunks.iter().map(|c| c.text.len()).sum();
    let whole = taken < limit && chunks.len() < tasklog::PAGE_CHUNKS;
    let next = chunks.last().map_or(from, LogChunk::next);
    Ok(TaskLogPage {
        task_id: id,
        chunks,
        next,
        ended: state.is_terminal() && whole,
        state,
    })
}

/// The stream of a followed log. It reads again when an append to this task is heard
/// (here or, through the bus, on another replica), when the task changes, and every
/// `poll` anyway (a missed wake-up, a lagging listener).
fn follow(
    placer: Placer,
    stopping: Stopping,
    poll: Duration,
    id: TaskId,
    mut from: LogPosition,
    limit: usize,
) -> Response {
    let (tx, rx) = mpsc::channel::<Event>(16);
    // Subscribed before the first read, so an append between the read and the wait wakes it.
    let mut grown = placer.dispatcher().subscribe_logs();
    let mut changed = placer.dispatcher().subscribe();
    let stopped = stopping.wait();
    tokio::spawn(async move {
        tokio::pin!(stopped);
        loop {
            let page = match page(&placer, id, from, limit).await {
                Ok(page) => page,
                Err(e) => {
                    // The store is unreachable (the task cannot vanish): say so and close,
                    // the client reconnects with Last-Event-ID.
                    let _ = tx.send(Event::default().event("error").data(e.to_string())).await;
                    return;
                }
            };
            let full = !page.chunks.is_empty() && !page.ended;
            for chunk in &page.chunks {
                let next = chunk.next();
                let data = serde_json::to_string(chunk).unwrap_or_default();
                let event = Event::default().event("chunk").id(event_id(next)).data(data);
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            from = page.next;
            if page.ended {
                let data = serde_json::json!({ "state": page.state }).to_string();
                let _ = tx.send(Event::default().event("end").data(data)).await;
                return;
            }
            if full {
                // More may be stored already: read on before waiting.
                continue;
            }
            tokio::select! {
                () = &mut stopped => return,
                () = tx.closed() => return,
                () = heard(&mut grown, id) => {}
                () = heard(&mut changed, id) => {}
                () = tokio::time::sleep(poll) => {}
            }
        }
    });
    Sse::new(Chunks(rx))
        .keep_alive(KeepAlive::new().interval(KEEP_ALIVE))
        .into_response()
}

/// Returns once `id` is announced (or the listener lagged, which may have dropped it).
async fn heard(listener: &mut broadcast::Receiver<TaskId>, id: TaskId) {
    loop {
        match listener.recv().await {
            Ok(task) if task == id => return,
            Ok(_) => continue,
            Err(broadcast::error::RecvError::Lagged(_)) => return,
            // The manager is going away; the stop signal ends the stream.
            Err(broadcast::error::RecvError::Closed) => std::future::pending().await,
        }
    }
}

fn event_id(at: LogPosition) -> String {
    format!("{}:{}", at.attempt, at.offset)
}

fn parse_event_id(raw: &str) -> Option<LogPosition> {
    let (attempt, offset) = raw.split_once(':')?;
    let attempt = attempt.parse::<u32>().ok().filter(|a| *a > 0)?;
    Some(LogPosition {
        attempt: Attempt(attempt),
        offset: offset.parse().ok()?,
    })
}

/// The events the follower task sends, as a stream; it ends when the follower stops.
struct Chunks(mpsc::Receiver<Event>);

impl futures_core::Stream for Chunks {
    type Item = Result<Event, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|e| e.map(Ok))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip_and_refuse_what_is_not_a_position() {
        let at = LogPosition {
            attempt: Attempt(3),
            offset: 4096,
        };
        assert_eq!(parse_event_id(&event_id(at)), Some(at));
        for bad in ["", "3", "0:1", "x:1", "1:-1", "1:2:3"] {
            assert_eq!(parse_event_id(bad), None, "{bad:?}");
        }
    }
}
