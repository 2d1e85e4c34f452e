//! `GET /metrics`: the manager's Prometheus metrics, in the OpenMetrics text format.
//!
//! Everything is counted where it happens (a transition, a claim, a heartbeat) through the
//! named methods of [`Metrics`], so a call site is one line: task counts by state are not
//! a scrape-time query but counters of transitions
//! (`rate(switchboard_tasks_finished_total[5m])`, submitted minus finished for the backlog).
//! A scrape reads the store once for the instance gauges, and, when operators declared
//! pools, a few more times for the pools' demand (see [`crate::probes::metrics`]).
//!
//! Labels stay low-cardinality: a task's final state, a validation's outcome. Never a task
//! id, an instance id, a selector or a scope; the one exception is the declared pools'
//! gauges, labelled by pool and account, one series per pool an operator declared.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchboard_domain::{Liveness, Task, TaskState};

/// The content type of the exposition (`GET /metrics`, [`crate::probes::metrics`]).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabel {
    /// A final [`TaskState`], as its API name.
    state: &'static str,
}

/// What a validation question came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Validation {
    /// The instance can reach every capability asked about.
    Reachable,
    /// The instance answered that it cannot reach at least one.
    Unreachable,
    /// No answer in time (or no socket to ask on).
    Silent,
}

impl Validation {
    fn as_str(self) -> &'static str {
        match self {
            Validation::Reachable => "reachable",
            Validation::Unreachable => "unreachable",
            Validation::Silent => "silent",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OpLabel {
    /// A [`switchboard_store::Store`] method's name: a fixed set.
    op: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LivenessLabel {
    liveness: &'static str,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Store calls: how long each operation takes, and how many failed (the store unreachable
/// or broken, not a not-found or a conflict). Shared with [`crate::storage::Instrumented`].
#[derive(Debug)]
pub struct StoreCalls {
    seconds: HistogramFamily<OpLabel>,
    errors: Counter,
}

impl StoreCalls {
    /// Exposes `ops` at zero from the start (a family with no series is not exposed at all):
    /// the store wrapper names every operation it times.
    pub fn expose(&self, ops: &[&'static str]) {
        for &op in ops {
            drop(self.seconds.get_or_create(&OpLabel { op }));
        }
    }

    pub fn observe(&self, op: &'static str, took: Duration, failed: bool) {
        self.seconds.get_or_create(&OpLabel { op }).observe(took.as_secs_f64());
        if failed {
            self.errors.inc();
        }
    }
}

fn store_call_histogram() -> Histogram {
    // 50µs .. ~3.3s, doubling: an SQLite read to a PostgreSQL call under load.
    Histogram::new(exponential_buckets(0.000_05, 2.0, 17))
}

/// The manager's metrics and the registry they are exposed from. Cheap to update from any
/// task: every metric is atomics inside.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    submitted: Counter,
    finished: Family<StateLabel, Counter>,
    retries: Family<StateLabel, Counter>,
    assignments: Counter,
    queue_time: Histogram,
    duration: Histogram,
    decision: Histogram,
    snapshot: Histogram,
    sockets_open: Gauge,
    heartbeats: Counter,
    validations: Family<OutcomeLabel, Counter>,
    store_calls: Arc<StoreCalls>,
    instances: Family<LivenessLabel, Gauge>,
    leader: Gauge,
    sockets_max: Gauge,
    cluster_listening: Gauge,
    queue_waiting: Gauge,
    queue_oldest: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The last hour of the queue, for the dashboard's charts.
    history: crate::history::History,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new(std::time::Duration::from_secs(10))
    }
}

impl Metrics {
    /// The metrics, with a history of the queue in intervals of `history_interval`.
    pub fn new(history_interval: std::time::Duration) -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let submitted = Counter::default();
        let finished = Family::<StateLabel, Counter>::default();
        let retries = Family::<StateLabel, Counter>::default();
        let assignments = Counter::default();
        // 5ms .. ~2.7h, doubling: a queue wait is anything from instant to the assign timeout.
        let queue_time = Histogram::new(exponential_buckets(0.005, 2.0, 22));
        // 10ms .. ~2.9h, doubling: tasks run from milliseconds to hours.
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 21));
        // 50µs .. ~1.6s, doubling: the engine is pure computation over a snapshot.
        let decision = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        // 100µs .. ~6.6s, doubling: a registry read, from a few instances to 100,000.
        let snapshot = Histogram::new(exponential_buckets(0.000_1, 2.0, 17));
        let sockets_open = Gauge::default();
        let heartbeats = Counter::default();
        let validations = Family::<OutcomeLabel, Counter>::default();
        let store_calls = Arc::new(StoreCalls {
            seconds: HistogramFamily::new_with_constructor(store_call_histogram),
            errors: Counter::default(),
        });
        let instances = Family::<LivenessLabel, Gauge>::default();
        let leader = Gauge::default();
        let sockets_max = Gauge::default();
        let cluster_listening = Gauge::default();
        let queue_waiting = Gauge::default();
        let queue_oldest = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "delegate_sockets_max",
            "The most delegate sockets this manager holds (max_sockets); beyond it new sockets are refused with 503",
            sockets_max.clone(),
        );
        registry.register(
            "cluster_listening",
            "1 while this replica hears the other replicas' signals (always 1 on SQLite, where there are none), else 0",
            cluster_listening.clone(),
        );
        registry.register(
            "queue_waiting_tasks",
            "Queued tasks, every account, as of the scrape",
            queue_waiting.clone(),
        );
        registry.register(
            "queue_oldest_seconds",
            "How long the oldest queued task has waited, as of the scrape (0 with none)",
            queue_oldest.clone(),
        );

        registry.register(
            "tasks_submitted",
            "Tasks submitted (new, not idempotent repeats)",
            submitted.clone(),
        );
        registry.register(
            "tasks_finished",
            "Tasks that reached a final state, by that state",
            finished.clone(),
        );
        registry.register(
            "task_retries",
            "Runs that ended and were retried by their task's retry policy, by how they ended (state: failed, timed_out, delegate_lost)",
            retries.clone(),
        );
        registry.register(
            "assignments",
            "Tasks claimed for an instance (one per attempt)",
            assignments.clone(),
        );
        registry.register(
            "queue_time_seconds",
            "From submission to assignment, per assignment",
            queue_time.clone(),
        );
        registry.register(
            "task_duration_seconds",
            "From submission to a final state",
            duration.clone(),
        );
        registry.register(
            "assignment_decision_seconds",
            "Time in the assignment engine's decide call",
            decision.clone(),
        );
        registry.register(
            "placement_snapshot_seconds",
            "Time to rebuild placement's registry snapshot (every group, instance and capability result read and indexed)",
            snapshot.clone(),
        );
        registry.register(
            "delegate_sockets_open",
            "Delegate WebSockets open on this manager (its connected instances)",
            sockets_open.clone(),
        );
        registry.register(
            "heartbeats_received",
            "Heartbeats received over delegate sockets",
            heartbeats.clone(),
        );
        registry.register(
            "validations",
            "Capability validation questions, by outcome",
            validations.clone(),
        );
        registry.register(
            "store_errors",
            "Store calls that failed: the database unreachable or an internal error",
            store_calls.errors.clone(),
        );
        registry.register(
            "store_call_seconds",
            "Time of each store call, by operation",
            store_calls.seconds.clone(),
        );
        registry.register(
            "leader",
            "1 while this manager leads (runs the timers and sweeps for every replica), else 0",
            leader.clone(),
        );
        registry.register(
            "delegate_instances",
            "Registered delegate instances by liveness (connected, stale, disconnected), as of the scrape",
            instances.clone(),
        );
        // Every label value from the start, at 0, so `rate()` and absent-series alerts work
        // before the first task ends (a family with no series is not exposed at all).
        for state in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            drop(finished.get_or_create(&StateLabel { state: state.as_str() }));
        }
        for ending in ["failed", "timed_out", "delegate_lost"] {
            drop(retries.get_or_create(&StateLabel { state: ending }));
        }
        for liveness in [Liveness::Connected, Liveness::Stale, Liveness::Disconnected] {
            drop(instances.get_or_create(&LivenessLabel {
                liveness: liveness_name(liveness),
            }));
        }
        for outcome in [Validation::Reachable, Validation::Unreachable, Validation::Silent] {
            drop(validations.get_or_create(&OutcomeLabel {
                outcome: outcome.as_str(),
            }));
        }
        Self {
            registry,
            submitted,
            finished,
            retries,
            assignments,
            queue_time,
            duration,
            decision,
            snapshot,
            sockets_open,
            heartbeats,
            validations,
            store_calls,
            instances,
            leader,
            sockets_max,
            cluster_listening,
            queue_waiting,
            queue_oldest,
            history: crate::history::History::new(history_interval),
        }
    }

    /// The last hour of the queue.
    pub fn history(&self) -> &crate::history::History {
        &self.history
    }
}

impl Metrics {
    /// A new task was stored.
    pub fn task_submitted(&self) {
        self.submitted.inc();
    }

    /// `task` was just claimed for an instance: one assignment, and its wait in the queue.
    pub fn task_assigned(&self, task: &Task) {
        self.assignments.inc();
        let assigned = task.assigned_at.unwrap_or_else(Utc::now);
        self.queue_time.observe(seconds(task.spec.created_at, assigned));
        self.history
            .assigned(&task.spec.scope, assigned - task.spec.created_at, assigned);
    }

    /// `task` just moved; counted (with its end-to-end time) if that move ended it, by its
    /// final [`TaskState`].
    pub fn task_finished(&self, task: &Task) {
        if !task.state.is_terminal() {
            return;
        }
        let label = StateLabel {
            state: task.state.as_str(),
        };
        self.finished.get_or_create(&label).inc();
        let finished = task.finished_at.unwrap_or_else(Utc::now);
        self.duration.observe(seconds(task.spec.created_at, finished));
    }

    /// A waiting task was cancelled by a newer one of its concurrency key
    /// (`cancel_older`).
    pub fn task_superseded(&self) {
        self.finished.get_or_create(&StateLabel { state: "cancelled" }).inc();
    }

    /// A run ended as `ending` and its retry policy put the task back in the queue.
    pub fn task_retried(&self, ending: switchboard_domain::policy::Ending) {
        use switchboard_domain::policy::Ending;
        let state = match ending {
            Ending::Failed => "failed",
            Ending::TimedOut => "timed_out",
            Ending::DelegateLost => "delegate_lost",
        };
        self.retries.get_or_create(&StateLabel { state }).inc();
    }

    /// Runs the engine's `decide` (or anything) and records how long it took.
    pub fn time_decision<T>(&self, decide: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let decision = decide();
        self.decision.observe(start.elapsed().as_secs_f64());
        decision
    }

    /// Records how long a rebuild of placement's snapshot took.
    pub fn snapshot_built(&self, took: std::time::Duration) {
        self.snapshot.observe(took.as_secs_f64());
    }

    pub fn socket_opened(&self) {
        self.sockets_open.inc();
    }

    pub fn socket_closed(&self) {
        self.sockets_open.dec();
    }

    pub fn heartbeat_received(&self) {
        self.heartbeats.inc();
    }

    pub fn validation(&self, outcome: Validation) {
        let label = OutcomeLabel {
            outcome: outcome.as_str(),
        };
        self.validations.get_or_create(&label).inc();
    }

    /// What the store wrapper reports into.
    pub fn store_calls(&self) -> Arc<StoreCalls> {
        self.store_calls.clone()
    }

    /// What the scrape reads of this replica: its socket cap and whether it hears the
    /// others.
    pub fn set_replica(&self, max_sockets: usize, listening: bool) {
        self.sockets_max.set(i64::try_from(max_sockets).unwrap_or(i64::MAX));
        self.cluster_listening.set(i64::from(listening));
    }

    /// What the scrape reads of the queue: how many tasks wait, and the oldest's wait.
    pub fn set_queue(&self, waiting: u64, oldest_secs: f64) {
        self.queue_waiting.set(i64::try_from(waiting).unwrap_or(i64::MAX));
        self.queue_oldest.set(oldest_secs);
    }

    pub fn set_leader(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// Whether this manager led at its last check.
    pub fn is_leader(&self) -> bool {
        self.leader.get() == 1
    }

    /// Sets the instance gauges to these counts.
    pub fn set_instances(&self, counts: [(Liveness, i64); 3]) {
        for (liveness, count) in counts {
            let label = LivenessLabel {
                liveness: liveness_name(liveness),
            };
            self.instances.get_or_create(&label).set(count);
        }
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// [`Metrics::encode`] with the store committer's `batches` (counted by the store, read
    /// at the scrape) inserted before the end marker.
    pub fn render(
        &self,
        batches: Option<&switchboard_store::BatchSnapshot>,
        pools: &[(switchboard_domain::Ident, switchboard_protocol::fleet::Demand)],
    ) -> String {
        let mut body = self.encode();
        let mut extra = batches.map(encode_batches).unwrap_or_default();
        if !pools.is_empty() {
            extra.push_str(&encode_pools(pools));
        }
        let end = body.rfind("# EOF").unwrap_or(body.len());
        body.insert_str(end, &extra);
        body
    }
}

fn liveness_name(liveness: Liveness) -> &'static str {
    match liveness {
        Liveness::Connected => "connected",
        Liveness::Stale => "stale",
        Liveness::Disconnected => "disconnected",
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The demand on each declared pool ([`crate::manager::demand`]), as gauges labelled by
/// account, pool name and id: one series per pool and family, so as many series as there
/// are declared pools (operators declare them; registration never adds one).
fn encode_pools(pools: &[(switchboard_domain::Ident, switchboard_protocol::fleet::Demand)]) -> String {
    use std::fmt::Write;
    type Value = fn(&switchboard_protocol::fleet::Demand) -> f64;
    let families: [(&str, &str, Value); 5] = [
        ("queued_tasks", "Queued tasks the declared pool could take", |d| {
            d.queued as f64
        }),
        (
            "active_tasks",
            "Tasks assigned to or running on the pool's instances",
            |d| d.active as f64,
        ),
        ("connected_instances", "The pool's instances connected now", |d| {
            f64::from(d.connected)
        }),
        (
            "desired_instances",
            "Instances enough for what is active and queued, at most the declared maximum",
            |d| f64::from(d.desired_instances),
        ),
        (
            "oldest_queued_seconds",
            "How long the oldest queued task the pool could take has waited",
            |d| d.oldest_queued_age_ms.map_or(0.0, |ms| ms as f64 / 1000.0),
        ),
    ];
    let mut out = String::new();
    for (family, help, value) in families {
        let name = format!("switchboard_pool_{family}");
        let _ = writeln!(out, "# HELP {name} {help}.");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for (account, d) in pools {
            let _ = writeln!(
                out,
                "{name}{{account=\"{account}\",pool=\"{}\",pool_id=\"{}\"}} {}",
                d.name,
                d.id,
                value(d)
            );
        }
    }
    out
}

/// The committer's batches, in the OpenMetrics text format: a histogram of task writes
/// per committed batch (its count is the commits of the task path) and a counter of
/// batches that failed whole.
fn encode_batches(b: &switchboard_store::BatchSnapshot) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let name = "switchboard_store_batch_items";
    let _ = writeln!(
        out,
        "# HELP {name} Task writes per committed batch of the store's committer."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (bound, count) in switchboard_store::committer::BUCKETS.iter().zip(&b.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{le=\"{bound}.0\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {}", b.batches);
    let _ = writeln!(out, "{name}_sum {}.0", b.items);
    let _ = writeln!(out, "{name}_count {}", b.batches);
    let busy = "switchboard_store_batch_seconds";
    let _ = writeln!(
        out,
        "# HELP {busy} Time spent writing committed batches, begin to commit (overlapping when several are in flight)."
    );
    let _ = writeln!(out, "# TYPE {busy} counter");
    let _ = writeln!(out, "{busy}_total {}", b.busy_seconds);
    let failed = "switchboard_store_batches_failed";
    let _ = writeln!(
        out,
        "# HELP {failed} Batches of task writes that failed whole (nothing of them stored)."
    );
    let _ = writeln!(out, "# TYPE {failed} counter");
    let _ = writeln!(out, "{failed}_total {}", b.failed);
    out
}
