//! Heartbeats: held in memory for decisions, written to the store in batches.
//!
//! A fleet of 100,000 delegates beating every minute is 1,700 heartbeats a second; one
//! write each would make the database the bottleneck for nothing. So each heartbeat
//! updates this table in memory, and a flusher writes everything that arrived since the
//! last flush in **one** statement per flush interval. The stored heartbeat is therefore
//! never more than one flush interval behind the one in memory.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use switchboard_domain::InstanceId;
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
}

impl Heartbeats {
    pub fn record(&self, instance: InstanceId, at: DateTime<Utc>, running: Vec<RunningTask>) {
        let mut table = self.lock();
        table.latest.insert(instance, Beat { at, running });
        table.pending.insert(instance, at);
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    /// The newest heartbeat this manager has seen from `instance`.
    pub fn latest(&self, instance: InstanceId) -> Option<Beat> {
        self.lock().latest.get(&instance).cloned()
    }

    pub fn forget(&self, instance: InstanceId) {
        self.lock().latest.remove(&instance);
    }

    /// Writes every pending heartbeat in one store call. On failure the beats are put
    /// back (keeping any newer one that arrived meanwhile) for the next flush.
    pub async fn flush(&self, store: &dyn Store) -> StoreResult<usize> {
        let pending = std::mem::take(&mut self.lock().pending);
        if pending.is_empty() {
            return Ok(0);
        }
        let batch: Vec<(InstanceId, DateTime<Utc>)> = pending.into_iter().collect();
        match store.record_heartbeats(&batch).await {
            Ok(_) => {
                self.flushes.fetch_add(1, Ordering::Relaxed);
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

    /// Store writes made for heartbeats since start (one per successful flush).
    pub fn store_writes(&self) -> u64 {
        self.flushes.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
