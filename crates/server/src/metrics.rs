//! `GET /metrics`: the manager's Prometheus metrics, in the OpenMetrics text format.
//!
//! Everything is counted where it happens (a transition, a claim, a heartbeat) through the
//! named methods of [`Metrics`], so a call site is one line and a scrape costs no store
//! call: task counts by state are not a scrape-time query but counters of transitions
//! (`rate(switchboard_tasks_finished_total[5m])`, submitted minus finished for the backlog).
//!
//! Labels stay low-cardinality: a task's final state, a validation's outcome. Never a task
//! id, an instance id, a selector or a scope.

use std::time::Instant;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use switchboard_domain::{Task, TaskState};

use crate::state::AppState;

/// The content type of the exposition [`serve`] answers with.
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

/// The manager's metrics and the registry they are exposed from. Cheap to update from any
/// task: every metric is atomics inside.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    submitted: Counter,
    finished: Family<StateLabel, Counter>,
    assignments: Counter,
    queue_time: Histogram,
    duration: Histogram,
    decision: Histogram,
    sockets_open: Gauge,
    heartbeats: Counter,
    validations: Family<OutcomeLabel, Counter>,
    store_errors: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("switchboard");
        let submitted = Counter::default();
        let finished = Family::<StateLabel, Counter>::default();
        let assignments = Counter::default();
        // 5ms .. ~2.7h, doubling: a queue wait is anything from instant to the assign timeout.
        let queue_time = Histogram::new(exponential_buckets(0.005, 2.0, 22));
        // 10ms .. ~2.9h, doubling: tasks run from milliseconds to hours.
        let duration = Histogram::new(exponential_buckets(0.01, 2.0, 21));
        // 50µs .. ~1.6s, doubling: the engine is pure computation over a snapshot.
        let decision = Histogram::new(exponential_buckets(0.000_05, 2.0, 16));
        let sockets_open = Gauge::default();
        let heartbeats = Counter::default();
        let validations = Family::<OutcomeLabel, Counter>::default();
        let store_errors = Counter::default();

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
            "Store calls that failed in placement, the lifecycle and delegate sockets",
            store_errors.clone(),
        );
        // Every label value from the start, at 0, so `rate()` and absent-series alerts work
        // before the first task ends (a family with no series is not exposed at all).
        for state in TaskState::ALL.into_iter().filter(|s| s.is_terminal()) {
            drop(finished.get_or_create(&StateLabel { state: state.as_str() }));
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
            assignments,
            queue_time,
            duration,
            decision,
            sockets_open,
            heartbeats,
            validations,
            store_errors,
        }
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

    /// Runs the engine's `decide` (or anything) and records how long it took.
    pub fn time_decision<T>(&self, decide: impl FnOnce() -> T) -> T {
        let start = Instant::now();
        let decision = decide();
        self.decision.observe(start.elapsed().as_secs_f64());
        decision
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

    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// The exposition, in the OpenMetrics text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

fn seconds(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).to_std().map(|d| d.as_secs_f64()).unwrap_or(0.0)
}

/// The Prometheus metrics of this manager, in the OpenMetrics text format.
///
/// Open, like `/healthz`, for the scraper (no key to configure there). Labels are
/// low-cardinality: no task ids, no raw selectors.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    responses(
        (
            status = 200,
            description = "The metrics.",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body = String
        ),
        crate::openapi::Errors<{ crate::openapi::errors::ANY }>
    )
)]
pub async fn serve(State(state): State<AppState>) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, CONTENT_TYPE)],
        state.metrics().encode(),
    )
        .into_response()
}
