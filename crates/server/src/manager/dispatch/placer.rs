//! [`Placer`]: everything placement and the task lifecycle use, and nothing else.
//!
//! The dispatcher needs the store, the kept registry snapshot ([`Fleet`]), its own
//! in-memory coordination ([`Dispatcher`]), the metrics, a handful of timers from the
//! settings, and a way to reach delegates ([`Reach`]). It does not need the HTTP side of
//! the manager (keys, rate limits, sessions, shutdown), so it does not get it: placement
//! can be run and tested against an SQLite store and a recording [`Reach`], and a reader
//! sees at the signature what a placement may touch.
//!
//! The server builds one `Placer` with its state ([`crate::state::AppState::placer`]); its
//! [`Reach`] is the hub of this manager's sockets with the replicas' bus behind it
//! ([`crate::manager::cluster::Sockets`]).

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use switchboard_domain::{Attempt, DelegateInstance, InstanceId, TaskId};
use switchboard_protocol::socket::ServerMessage;
use switchboard_store::{Replicas, Store};

use super::Dispatcher;
use super::fleet::Fleet;
use super::shares::Shares;
use crate::config::Settings;
use crate::metrics::Metrics;

/// How the dispatcher reaches delegates and the other replicas: the one seam between
/// placement and the sockets.
pub trait Reach: Send + Sync + Debug + 'static {
    /// Sends `message` to the socket of `instance` on this manager; `false` when this
    /// manager holds none (or it cannot take the message). A validation question goes
    /// only this way: its answer must come back to the manager that asked.
    fn send_here(&self, instance: InstanceId, message: ServerMessage) -> bool;

    /// Offers `task` (as `attempt`) to `instance`, wherever its socket is.
    fn offer(&self, instance: InstanceId, task: TaskId, attempt: Attempt);

    /// Tells `instance` to stop `attempt` of `task`, wherever its socket is.
    fn cancel(&self, instance: InstanceId, task: TaskId, attempt: Attempt);

    /// Tells the other replicas that `task` changed (for their long polls).
    fn announce(&self, task: TaskId);

    /// `instance` as this manager sees it: the store's record with this manager's socket
    /// and latest heartbeat laid over (they are ahead of the store).
    fn current(&self, instance: DelegateInstance) -> DelegateInstance;

    /// When this manager last heard a heartbeat from `instance`, if it did.
    fn heard_at(&self, instance: InstanceId) -> Option<DateTime<Utc>>;
}

/// The timers placement and the lifecycle apply: the part of [`Settings`] they read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    /// How old a heartbeat may be for its instance to be given tasks.
    pub heartbeat_timeout: Duration,
    /// How far a stored heartbeat may lag the one held in memory.
    pub heartbeat_flush_interval: Duration,
    /// How long an assigned task waits to be acquired before it is released.
    pub acknowledge_timeout: Duration,
    /// How long a capability question waits for its answer.
    pub validation_timeout: Duration,
    /// How often the whole queue is swept, whatever woke it.
    pub assign_interval: Duration,
}

impl From<&Settings> for Timers {
    fn from(s: &Settings) -> Self {
        Self {
            heartbeat_timeout: s.heartbeat_timeout,
            heartbeat_flush_interval: s.heartbeat_flush_interval,
            acknowledge_timeout: s.acknowledge_timeout,
            validation_timeout: s.validation_timeout,
            assign_interval: s.assign_interval,
        }
    }
}

/// What placement and the lifecycle run with (see the module docs). Cheap to clone.
#[derive(Debug, Clone)]
pub struct Placer {
    inner: Arc<Parts>,
}

#[derive(Debug)]
struct Parts {
    store: Arc<dyn Store>,
    replicas: Arc<dyn Replicas>,
    fleet: Fleet,
    dispatcher: Dispatcher,
    shares: Shares,
    metrics: Arc<Metrics>,
    timers: Timers,
    reach: Arc<dyn Reach>,
}

impl Placer {
    /// A placer on `store`, with `replicas` for the lead. `changes` is the counter the store's writes to the registry
    /// bump ([`crate::storage::Instrumented`]): the kept snapshot is rebuilt after them.
    pub fn new(
        store: Arc<dyn Store>,
        replicas: Arc<dyn Replicas>,
        changes: Arc<AtomicU64>,
        metrics: Arc<Metrics>,
        timers: Timers,
        reach: Arc<dyn Reach>,
    ) -> Self {
        Self {
            inner: Arc::new(Parts {
                store,
                replicas,
                fleet: Fleet::new(changes),
                dispatcher: Dispatcher::default(),
                shares: Shares::default(),
                metrics,
                timers,
                reach,
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    /// The bus and leadership of the replicas on this store.
    pub fn replicas(&self) -> &Arc<dyn Replicas> {
        &self.inner.replicas
    }

    pub fn fleet(&self) -> &Fleet {
        &self.inner.fleet
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    /// Fair shares: the sweep's order, and the operators' policies per scope.
    pub fn shares(&self) -> &Shares {
        &self.inner.shares
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn timers(&self) -> &Timers {
        &self.inner.timers
    }

    pub fn reach(&self) -> &dyn Reach {
        &*self.inner.reach
    }

    /// Announces a change of `task` to the long polls here and on every replica.
    pub fn task_changed(&self, task: TaskId) {
        self.dispatcher().changed(task);
        self.reach().announce(task);
    }

    /// Whether this replica runs the timers now (one replica at a time does: the others'
    /// would only lose the races), as the store's leadership says.
    pub async fn leads(&self) -> bool {
        let leads = match self.replicas().lead().await {
            Ok(leads) => leads,
            Err(e) => {
                tracing::debug!(error = %e, "cannot tell whether this replica leads");
                false
            }
        };
        self.metrics().set_leader(leads);
        leads
    }
}
