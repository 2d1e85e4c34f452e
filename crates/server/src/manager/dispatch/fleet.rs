//! [`Fleet`]: the registry snapshot placement decides against, kept between placements.
//!
//! Building a snapshot reads every group, instance and capability result from the store
//! and indexes them: milliseconds for a thousand instances, far more than the decision
//! itself. Placing each task against a snapshot of its own made that read the cost of
//! every task, so the snapshot is kept and rebuilt only when it may be wrong:
//!
//! - **A change seen here.** Every store write that changes what a decision sees (a group
//!   created, retagged, disabled or deleted, an instance registered, connected,
//!   disconnected or removed, a capability result stored) bumps a change counter in
//!   [`crate::storage::Instrumented`], whoever made it; so does another replica's wake-up
//!   (it sends one when a delegate connects to it). A snapshot older than the counter is
//!   rebuilt before the next decision.
//! - **Age.** What other replicas change without telling (their claims and finished
//!   tasks, tags set through them, heartbeats) reaches this replica when the snapshot is
//!   [`MAX_AGE`] old.
//! - **A "no".** A decision that leaves the task waiting is trusted only from a snapshot
//!   at most [`TRUST_WAIT`] old, and one that fails the task only from a snapshot built
//!   for this very decision; otherwise the snapshot is rebuilt and the task decided
//!   again. A stale "yes" costs at most a lost claim; a stale "no" would strand or fail
//!   a task.
//!
//! Load moves with every task, too fast to rebuild for: each claim made here counts one
//! more task on its instance in the snapshot ([`Fleet::claimed`]), and a claim refused
//! for capacity marks the instance full ([`Fleet::full`]). Finished tasks are not
//! subtracted, so until the next rebuild the snapshot sees instances as at least as
//! busy as they are, never less. The store's conditional claim stays the only arbiter of
//! who gets a task; the snapshot only decides whom to ask first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchboard_domain::engine::{Context, Decision, Registry, TaskInputs, decide};
use switchboard_domain::{InstanceId, LastSuccess};
use switchboard_store::StoreResult;
use tokio::sync::Mutex;

use super::placer::Placer;

/// The oldest snapshot a decision is made against.
pub const MAX_AGE: Duration = Duration::from_millis(250);

/// The oldest snapshot whose "nobody can take it now" is trusted.
pub const TRUST_WAIT: Duration = Duration::from_millis(50);

/// The kept snapshot and what tells when it is out of date.
#[derive(Debug)]
pub struct Fleet {
    /// Bumped by every change to what a snapshot holds (see the module docs); shared with
    /// the store wrapper that sees the writes.
    changes: Arc<AtomicU64>,
    /// An async mutex, held while a snapshot is built: concurrent placements wait for
    /// the one build instead of each reading the whole fleet.
    kept: Mutex<Option<Kept>>,
}

#[derive(Debug)]
struct Kept {
    registry: Registry,
    built: Instant,
    /// The change counter read before the build started.
    generation: u64,
}

/// What the caller does with a decision: how far an old snapshot is trusted for it, and
/// how much of it is worked out.
#[derive(Debug)]
pub struct Use<E, V> {
    pub freshness: Freshness,
    /// Which decisions the caller acts on by failing the task: those are trusted only
    /// from a snapshot built for them.
    pub ends_task: E,
    /// Which decisions made without verdicts ([`Context::verdicts`] off) are made again
    /// with them, on the same snapshot and seed (so with the same choice).
    pub verdicts: V,
}

/// How far a decision may trust an old snapshot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// A placement: the kept snapshot, within the rules of the module docs.
    Kept,
    /// A snapshot built for this decision only (a dry run an operator reads).
    Fresh,
}

impl Fleet {
    pub fn new(changes: Arc<AtomicU64>) -> Self {
        Self {
            changes,
            kept: Mutex::new(None),
        }
    }

    /// The change counter: it moves whenever what a snapshot holds may have changed (a
    /// delegate registered, connected, left, was paused...). Watchers compare readings.
    pub fn generation(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// The next decision builds a new snapshot.
    pub fn invalidate(&self) {
        self.changes.fetch_add(1, Ordering::Relaxed);
    }

    /// Decides for `inputs`, `last` being the freshest last success of its connector,
    /// as far as `use_` says.
    pub async fn decide(
        &self,
        placer: &Placer,
        inputs: &TaskInputs<'_>,
        last: Option<LastSuccess>,
        context: &Context,
        use_: Use<impl Fn(&Decision) -> bool, impl Fn(&Decision) -> bool>,
    ) -> StoreResult<Decision> {
        let Use {
            freshness,
            ends_task,
            verdicts,
        } = use_;
        let mut kept = self.kept.lock().await;
        let mut built_now = false;
        loop {
            let outdated = match kept.as_ref() {
                Some(k) => !built_now && self.outdated(k, freshness),
                None => true,
            };
            if outdated {
                *kept = Some(self.build(placer).await?);
                built_now = true;
            }
            let Some(k) = kept.as_mut() else { continue };
            if let Some(s) = last {
                k.registry.note_last_success(s);
            }
            let decision = placer.metrics().time_decision(|| decide(inputs, &k.registry, context));
            let trusted =
                built_now || decision.chosen.is_some() || (!ends_task(&decision) && k.built.elapsed() <= TRUST_WAIT);
            if !trusted {
                *kept = None;
                continue;
            }
            if context.verdicts || !verdicts(&decision) {
                return Ok(decision);
            }
            // Every instance of the account gets its verdict, not only those the index
            // looked at: the log is where an operator reads why each one was passed over.
            let full = Context {
                verdicts: true,
                explain_all: true,
                ..*context
            };
            return Ok(decide(inputs, &k.registry, &full));
        }
    }

    /// Runs `read` against the kept snapshot (rebuilt first when it may be wrong, as
    /// for a placement): many decisions against one picture, for a summary of the queue.
    /// Placements wait meanwhile, so `read` should be quick.
    pub async fn with_current<R>(&self, placer: &Placer, read: impl FnOnce(&Registry) -> R) -> StoreResult<R> {
        let mut kept = self.kept.lock().await;
        let current = match kept.take() {
            Some(k) if !self.outdated(&k, Freshness::Kept) => k,
            _ => self.build(placer).await?,
        };
        let answer = read(&current.registry);
        *kept = Some(current);
        Ok(answer)
    }

    fn outdated(&self, kept: &Kept, freshness: Freshness) -> bool {
        freshness == Freshness::Fresh
            || kept.generation != self.changes.load(Ordering::Relaxed)
            || kept.built.elapsed() > MAX_AGE
    }

    /// Counts a claim made here on `instance` in the kept snapshot.
    pub async fn claimed(&self, instance: InstanceId) {
        if let Some(k) = self.kept.lock().await.as_mut() {
            k.registry.count_claim(instance);
        }
    }

    /// A claim found `instance` at capacity: the kept snapshot says so until rebuilt.
    pub async fn full(&self, instance: InstanceId) {
        if let Some(k) = self.kept.lock().await.as_mut() {
            k.registry.mark_full(instance);
        }
    }

    async fn build(&self, placer: &Placer) -> StoreResult<Kept> {
        let generation = self.changes.load(Ordering::Relaxed);
        let started = Instant::now();
        let registry = snapshot(placer).await?;
        placer.metrics().snapshot_built(started.elapsed());
        Ok(Kept {
            registry,
            built: Instant::now(),
            generation,
        })
    }
}

/// The registry as this manager sees it now: the store's groups, instances and
/// capability results, with this manager's sockets and heartbeats laid over (they are
/// ahead of the store).
async fn snapshot(placer: &Placer) -> StoreResult<Registry> {
    let store = placer.store();
    let groups = store.list_groups(None).await?;
    let instances: Vec<_> = store
        .list_instances(None)
        .await?
        .into_iter()
        // The one rule the API and the metrics use too: this manager's sockets and
        // heartbeats over what the store records (whose connections count only while the
        // manager that recorded them lives).
        .map(|i| placer.reach().current(i))
        .collect();
    let ids: Vec<InstanceId> = instances.iter().map(|i| i.id).collect();
    let results = store.capability_results(&ids).await?;
    Ok(Registry::new(groups, instances, results, Vec::new()))
}
