//! Signals between replicas over `LISTEN/NOTIFY`.
//!
//! Every replica listens on one channel named after the store's schema (so test schemas,
//! and installs sharing a database, never hear each other). A publish is one statement
//! whatever the number of events: the events are cut into payloads under PostgreSQL's
//! 8000-byte limit and sent with one `pg_notify` per payload in a single `SELECT`.
//!
//! The listener holds one connection of the pool for as long as it listens. When that
//! connection breaks, sqlx's `PgListener` reconnects and listens again on its next read;
//! whatever was notified in between is lost, which the stream reports as
//! [`ClusterSignal::Resync`].

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgListener, PgPool};
use switchboard_store::{ClusterEvent, ClusterSignal, ClusterSignals, StoreResult};

use crate::error::map_err;

/// Payloads are kept under PostgreSQL's limit (8000 bytes) with room to spare.
const PAYLOAD_LIMIT: usize = 7_500;

/// How long the listener waits before trying again after it could not reconnect: the
/// first pause, doubled up to the last.
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// One notification's payload.
#[derive(Debug, Serialize, Deserialize)]
struct Payload {
    #[serde(rename = "o")]
    origin: uuid::Uuid,
    #[serde(rename = "e")]
    events: Vec<ClusterEvent>,
}

/// The channel of the store whose `search_path` puts `schema` first. Channel names are
/// identifiers: at most 63 bytes.
pub(crate) fn channel_for(schema: &str) -> String {
    let mut channel = format!("switchboard:{schema}");
    while channel.len() > 63 {
        channel.pop();
    }
    channel
}

/// The payloads carrying `events`, each under [`PAYLOAD_LIMIT`] (an event too large for
/// one payload on its own, which no event is, would travel alone and be refused by the
/// server).
pub(crate) fn payloads(origin: uuid::Uuid, events: &[ClusterEvent]) -> Vec<String> {
    let mut out = Vec::new();
    let mut batch: Vec<ClusterEvent> = Vec::new();
    let mut size = 0;
    for event in events {
        let len = serde_json::to_string(event).map(|s| s.len() + 1).unwrap_or(0);
        if !batch.is_empty() && size + len > PAYLOAD_LIMIT - 64 {
            out.push(encode(origin, std::mem::take(&mut batch)));
            size = 0;
        }
        size += len;
        batch.push(event.clone());
    }
    if !batch.is_empty() {
        out.push(encode(origin, batch));
    }
    out
}

fn encode(origin: uuid::Uuid, events: Vec<ClusterEvent>) -> String {
    serde_json::to_string(&Payload { origin, events }).unwrap_or_default()
}

pub(crate) async fn publish(
    pool: &PgPool,
    channel: &str,
    origin: uuid::Uuid,
    events: &[ClusterEvent],
) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    sqlx::query("SELECT pg_notify($1, p) FROM unnest($2::text[]) AS p")
        .bind(channel)
        .bind(payloads(origin, events))
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn subscribe(pool: &PgPool, channel: &str) -> StoreResult<ClusterSignals> {
    let mut listener = PgListener::connect_with(pool).await.map_err(map_err)?;
    listener.listen(channel).await.map_err(map_err)?;
    // The state carries whether the connection is known lost: `Lost` is said once, then
    // the stream reconnects (backing off) and says `Resync`.
    let stream = futures::stream::unfold((listener, false), |(mut listener, mut lost)| async move {
        let mut pause = RETRY_FIRST;
        loop {
            if lost {
                // Reconnect (listening again) before saying so, so that a re-examination
                // prompted by the resync cannot miss what is notified after it.
                match sqlx::query("SELECT 1").execute(&mut listener).await {
                    Ok(_) => return Some((ClusterSignal::Resync, (listener, false))),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot reconnect the replica listener; retrying");
                        tokio::time::sleep(pause).await;
                        pause = (pause * 2).min(RETRY_MAX);
                        continue;
                    }
                }
            }
            match listener.try_recv().await {
                Ok(Some(notification)) => match serde_json::from_str::<Payload>(notification.payload()) {
                    Ok(p) => {
                        let signal = ClusterSignal::Events {
                            origin: p.origin,
                            events: p.events,
                        };
                        return Some((signal, (listener, false)));
                    }
                    // From a newer or older release with events this one does not know:
                    // the periodic sweeps cover what it announced.
                    Err(e) => tracing::warn!(error = %e, "ignoring an unreadable replica signal"),
                },
                // The connection broke and sqlx has already reconnected and listens again.
                Ok(None) => return Some((ClusterSignal::Resync, (listener, false))),
                Err(e) => {
                    tracing::warn!(error = %e, "the replica listener lost its connection");
                    tokio::time::sleep(pause).await;
                    lost = true;
                    return Some((ClusterSignal::Lost, (listener, lost)));
                }
            }
        }
    });
    Ok(Box::pin(stream))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_domain::{Attempt, InstanceId, TaskId};

    #[test]
    fn many_events_are_cut_into_payloads_under_the_limit_and_lose_none() {
        let origin = uuid::Uuid::new_v4();
        let events: Vec<ClusterEvent> = (0..500)
            .map(|_| ClusterEvent::TaskAvailable {
                instance: InstanceId::new(),
                task: TaskId::new(),
                attempt: Attempt(1),
            })
            .collect();
        let out = payloads(origin, &events);
        assert!(out.len() > 1);
        let mut back = Vec::new();
        for p in &out {
            assert!(p.len() < 8000, "{}", p.len());
            let p: Payload = serde_json::from_str(p).expect("a payload");
            assert_eq!(p.origin, origin);
            back.extend(p.events);
        }
        assert_eq!(back, events);
    }

    #[test]
    fn channel_names_fit_an_identifier() {
        assert_eq!(channel_for("public"), "switchboard:public");
        assert_eq!(channel_for(&"s".repeat(100)).len(), 63);
    }
}
