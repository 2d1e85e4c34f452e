//! Heartbeats: held in memory for decisions, written to the store in batches.
//!
//! A fleet of 100,000 delegates beating every minute is 1,700 heartbeats a second; one
//! write each would make the database the bottleneck for nothing. So each heartbeat
//! updates this table in memory, and a flusher writes everything that arrived since the
//! last flush in **one** statement, once per flush interval (5 s) or as soon as
//! [`FLUSH_BATCH`] beats are waiting, whichever comes first. The stored heartbeat is
//! therefore never more than one flush interval behind the one in memory, a flush never
//! grows past a few thousand rows (a long one holds the SQLite writer), and a replica
//! receiving a few hundred beats a second writes about one statement per thousand.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::Notify;

use chrono::{DateTime, Utc};
use switchboard_domain::{Attempt, InstanceId, TaskId};
use switchboard_protocol::socket::RunningTask;
use switchboard_store::{Store, StoreResult};

/// The last heartbeat of one instance.
#[derive(Debug, Clone, PartialEq)]
pub struct Beat {
    pub at: DateTime<Utc>,
    pub running: Vec<RunningTask>,
}

#[derive(Debug, Default)]
struct Table {
    latest: HashMap<InstanceId, Beat>,
    /// Beats not yet written: instance -> newest time.
    pending: HashMap<InstanceId, DateTime<Utc>>,
}

#[derive(Debug, Default)]
pub struct Heartbeats {
    /// A std mutex: updates are a couple of map inserts, and the flusher swaps the pending
    /// map out rather than writing while holding it.
    table: Mutex<Table>,
    received: AtomicU64,
    flushes: AtomicU64,
    /// Told when [`FLUSH_BATCH`] beats are waiting: the flusher need not wait for its tick.
    full: Notify,
}

/// Beats waiting that make a flush due before its interval.
pub const FLUSH_BATCH: usize = 2_000;

impl Heartbeats {
    pub fn record(&self, instance: InstanceId, at: DateTime<Utc>, running: Vec<RunningTask>) {
        let mut table = self.lock();
        table.latest.insert(instance, Beat { at, running });
        table.pending.insert(instance, at);
        let full = table.pending.len() == FLUSH_BATCH;
        drop(table);
        self.received.fetch_add(1, Ordering::Relaxed);
        if full {
            self.full.notify_one();
        }
    }

    /// Completes when [`FLUSH_BATCH`] beats are waiting (or were, since the last call).
    pub async fn batch_waiting(&self) {
        self.full.notified().await;
    }

    /// The newest heartbeat this manager has seen from `instance`.
    pub fn latest(&self, instance: InstanceId) -> Option<Beat> {
        self.lock().latest.get(&instance).cloned()
    }

    pub fn forget(&self, instance: InstanceId) {
        self.lock().latest.remove(&instance);
    }

    /// Writes every pending heartbeat in one store call, and pushes forward the run
    /// deadline of every task those heartbeats listed in one more. On failure the beats
    /// are put back (keeping any newer one that arrived meanwhile) for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> StoreResult<usize> {
        let (batch, running) = {
            let mut table = self.lock();
            let pending = std::mem::take(&mut table.pending);
            let running: Vec<(TaskId, Attempt, DateTime<Utc>)> = pending
                .iter()
                .filter_map(|(id, at)| table.latest.get(id).map(|beat| (beat, *at)))
                .flat_map(|(beat, at)| beat.running.iter().map(move |r| (r.task_id, r.attempt, at)))
                .collect();
            (pending.into_iter().collect::<Vec<_>>(), running)
        };
        if batch.is_empty() {
            return Ok(0);
        }
        let written = match store.record_heartbeats(&batch).await {
            Ok(_) if running.is_empty() => Ok(1),
            Ok(_) => store.extend_run_deadlines(&running).await.map(|_| 2),
            Err(e) => Err(e),
        };
        match written {
            Ok(statements) => {
                self.flushes.fetch_add(statements, Ordering::Relaxed);
                Ok(batch.len())
            }
            Err(e) => {
                let mut table = self.lock();
                for (id, at) in batch {
                    let slot = table.pending.entry(id).or_insert(at);
                    *slot = (*slot).max(at);
                }
                Err(e)
            }
        }
    }

    /// Heartbeats received since start.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Store statements written for heartbeats since start: one per flush, plus one when
    /// the flushed heartbeats listed running tasks (their deadlines).
    pub fn store_writes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
