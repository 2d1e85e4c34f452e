//! Group commit: the writes of many callers in one transaction.
//!
//! A [`Committer`] sits in front of a backend's one-transaction batch write
//! ([`BatchWriter`]). Callers hand it their [`TaskWrite`]s and wait; it takes whatever is
//! waiting when a commit slot is free and writes it as one batch. Nothing waits on a
//! timer: a write that arrives at an idle committer is sent at once, alone, and under
//! load the writes that arrive while a commit is in flight go into the next one, so a
//! batch grows with the load and the commits per write fall with it.
//!
//! Rules it keeps:
//!
//! * A caller is answered only after its batch committed, with its own items' outcomes;
//!   when the batch fails (the database is unreachable, or an error nobody can blame on
//!   one item), every caller of that batch gets the error and nothing of it is stored.
//! * A caller's writes stay together: they land in one batch, in order.
//! * A caller that stops waiting (its request was cancelled) changes nothing: its writes
//!   commit with their batch or not at all, as if it had waited, and an idempotent retry
//!   finds them.
//! * Batches are bounded by rows and by bytes ([`Limits`]); a caller whose writes alone
//!   exceed a bound gets a batch of its own.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::batch::{TaskWrite, Written};
use crate::{StoreError, StoreResult};

/// A backend's batch write: every item in one transaction, committed before it returns,
/// one outcome per item in order (see [`crate::batch`]).
#[async_trait]
pub trait BatchWriter: Send + Sync + 'static {
    async fn write_batch(&self, writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>>;
}

/// How big a batch may grow, and how many may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Rows written ([`TaskWrite::rows`]).
    pub rows: usize,
    /// Bytes carried ([`TaskWrite::approx_bytes`]).
    pub bytes: usize,
    /// Batches committing at once: 1 where the database has one writer (SQLite); more
    /// where concurrent transactions overlap their round trips (PostgreSQL).
    pub in_flight: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            rows: 1024,
            bytes: 8 << 20,
            in_flight: 1,
        }
    }
}

/// Counts of committed batches, for metrics.
#[derive(Debug, Default)]
pub struct BatchStats {
    batches: AtomicU64,
    items: AtomicU64,
    failed: AtomicU64,
    /// Time spent writing committed batches, from the start of their transaction to the
    /// end of their commit.
    busy_micros: AtomicU64,
    /// Batches by items: at most 1, 2, 4, ... 512, and more.
    buckets: [AtomicU64; BUCKETS.len() + 1],
}

/// The upper bounds of [`BatchStats`]' histogram of items per batch.
pub const BUCKETS: [u64; 10] = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

/// A reading of [`BatchStats`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchSnapshot {
    /// Batches committed.
    pub batches: u64,
    /// Items in them.
    pub items: u64,
    /// Batches that failed whole.
    pub failed: u64,
    /// Seconds spent writing the committed batches (with several in flight, they overlap).
    pub busy_seconds: f64,
    /// Committed batches by items, cumulative per [`BUCKETS`] bound, then the total.
    pub cumulative: Vec<u64>,
}

impl BatchStats {
    fn committed(&self, items: usize, took: std::time::Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.busy_micros
            .fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.items.fetch_add(items as u64, Ordering::Relaxed);
        let bucket = BUCKETS.iter().position(|&b| items as u64 <= b).unwrap_or(BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> BatchSnapshot {
        let mut running = 0;
        let cumulative = self
            .buckets
            .iter()
            .map(|b| {
                running += b.load(Ordering::Relaxed);
                running
            })
            .collect();
        BatchSnapshot {
            batches: self.batches.load(Ordering::Relaxed),
            items: self.items.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            busy_seconds: self.busy_micros.load(Ordering::Relaxed) as f64 / 1e6,
            cumulative,
        }
    }
}

type Answer = oneshot::Sender<StoreResult<Vec<StoreResult<Written>>>>;

/// One caller's writes, waiting for a batch.
struct Job {
    writes: Vec<TaskWrite>,
    rows: usize,
    bytes: usize,
    answer: Answer,
}

/// The group-commit front of a backend (see the module). Cheap to share; dropping the
/// last handle lets the queued writes commit and then stops it.
#[derive(Debug, Clone)]
pub struct Committer {
    queue: mpsc::UnboundedSender<Job>,
    stats: Arc<BatchStats>,
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Job").field("items", &self.writes.len()).finish()
    }
}

impl Committer {
    /// Starts the committer's loop on the current tokio runtime.
    pub fn start(writer: Arc<dyn BatchWriter>, limits: Limits) -> Self {
        let (queue, jobs) = mpsc::unbounded_channel();
        let stats = Arc::new(BatchStats::default());
        tokio::spawn(run(writer, limits, jobs, stats.clone()));
        Committer { queue, stats }
    }

    /// Writes `writes` with the next batch; answers once it committed (or failed).
    pub async fn write(&self, writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>> {
        if writes.is_empty() {
            return Ok(Vec::new());
        }
        let (answer, answered) = oneshot::channel();
        let job = Job {
            rows: writes.iter().map(TaskWrite::rows).sum(),
            bytes: writes.iter().map(TaskWrite::approx_bytes).sum(),
            writes,
            answer,
        };
        self.queue
            .send(job)
            .map_err(|_| StoreError::Unavailable("the store is closing".into()))?;
        answered
            .await
            .unwrap_or_else(|_| Err(StoreError::Internal("the committer stopped before answering".into())))
    }

    pub fn stats(&self) -> BatchSnapshot {
        self.stats.snapshot()
    }
}

async fn run(
    writer: Arc<dyn BatchWriter>,
    limits: Limits,
    mut jobs: mpsc::UnboundedReceiver<Job>,
    stats: Arc<BatchStats>,
) {
    let slots = Arc::new(Semaphore::new(limits.in_flight.max(1)));
    // A job that did not fit in the last batch: it opens the next one.
    let mut carried: Option<Job> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(job) => job,
            None => match jobs.recv().await {
                Some(job) => job,
                None => return,
            },
        };
        let (mut rows, mut bytes) = (first.rows, first.bytes);
        let mut batch = vec![first];
        while rows < limits.rows && bytes < limits.bytes {
            let Ok(job) = jobs.try_recv() else { break };
            if rows + job.rows > limits.rows || bytes + job.bytes > limits.bytes {
                carried = Some(job);
                break;
            }
            rows += job.rows;
            bytes += job.bytes;
            batch.push(job);
        }
        let (writer, stats) = (writer.clone(), stats.clone());
        tokio::spawn(async move {
            commit(&*writer, batch, &stats).await;
            drop(slot);
        });
    }
}

/// Writes one batch and answers its callers.
async fn commit(writer: &dyn BatchWriter, batch: Vec<Job>, stats: &BatchStats) {
    let mut sizes = Vec::with_capacity(batch.len());
    let mut answers = Vec::with_capacity(batch.len());
    let mut writes = Vec::new();
    for job in batch {
        sizes.push(job.writes.len());
        answers.push(job.answer);
        writes.extend(job.writes);
    }
    let items = writes.len();
    let started = std::time::Instant::now();
    match writer.write_batch(writes).await {
        Ok(outcomes) if outcomes.len() == items => {
            stats.committed(items, started.elapsed());
            let mut outcomes = outcomes.into_iter();
            for (answer, n) in answers.into_iter().zip(sizes) {
                // A caller that stopped waiting is not told; its writes stand.
                let _ = answer.send(Ok(outcomes.by_ref().take(n).collect()));
            }
        }
        Ok(outcomes) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            let e = StoreError::Internal(format!(
                "a batch of {items} writes answered {} outcomes",
                outcomes.len()
            ));
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
        Err(e) => {
            stats.failed.fetch_add(1, Ordering::Relaxed);
            // Whatever failed the batch may be another caller's doing, and nothing of it
            // was stored: every caller may try again (503), not only when the database is
            // out of reach.
            let e = match e {
                StoreError::Internal(why) => StoreError::Unavailable(format!("a batch of task writes failed: {why}")),
                other => other,
            };
            for answer in answers {
                let _ = answer.send(Err(e.clone()));
            }
        }
    }
}
