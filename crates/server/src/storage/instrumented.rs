//! [`Instrumented`]: a [`Store`] (and [`Replicas`]) that times every call and counts the failed ones, for
//! `GET /metrics`, and fails calls fast while the database is known to be unreachable
//! ([`Breaker`]). [`crate::AppState`] wraps whichever backend [`super::open_store`] opened
//! in it, so every caller gets both without knowing it.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use switchboard_domain::policy::ScopePolicy;
use switchboard_domain::tasklog::{Appended, LogAppend, LogChunk, LogPosition};
use switchboard_domain::vault::TaskSecret;
use switchboard_domain::{
    ApiKey, ApiKeyId, Attempt, AuditEntry, CapabilityResult, Connector, ConnectorId, DelegateGroup, DelegateInstance,
    DelegateToken, GroupId, Ident, InstanceId, LastSuccess, NewTask, Pause, Scope, SecretHash, SecretId,
    SelectionLogEntry, Selectors, Task, TaskAttempt, TaskId, TokenId,
};
use switchboard_store::{
    AdminKey, AuditQuery, Backend, Backing, BatchSnapshot, Claim, ClusterEvent, ClusterSignals, DueQuery, DueTasks,
    Inserted, Page, QueueQuery, QueueShapes, Replicas, Store, StoreError, StoreResult, Stored, Submission, TaskQuery,
    TaskWrite, Transition, Written,
};

use crate::metrics::StoreCalls;

/// A store whose calls are observed by [`StoreCalls`] and guarded by a [`Breaker`].
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Backing>,
    calls: Arc<StoreCalls>,
    breaker: Breaker,
    /// Bumped after each call of a method marked `#[changes_registry]` below.
    registry_changes: Arc<AtomicU64>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Backing>, calls: Arc<StoreCalls>, registry_changes: Arc<AtomicU64>) -> Self {
        calls.expose(OPERATIONS);
        Self {
            inner,
            calls,
            breaker: Breaker::default(),
            registry_changes,
        }
    }

    async fn observe<T>(&self, op: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let started = Instant::now();
        let admitted = self.breaker.admit(started);
        if admitted == Admit::Refuse {
            self.calls.observe(op, started.elapsed(), true);
            return Err(StoreError::Unavailable(
                "the database could not be reached moments ago; the manager is checking it again every second"
                    .to_owned(),
            ));
        }
        // Ends the probe even if this call is dropped before it answers (a request that
        // timed out), so that the next call can probe.
        let _probe = (admitted == Admit::Probe).then(|| ProbeGuard(&self.breaker));
        let result = call.await;
        let unavailable = matches!(result, Err(StoreError::Unavailable(_)));
        self.breaker.record(Instant::now(), unavailable);
        // Not found and conflicts are answers, not failures of the store.
        let failed = unavailable || matches!(result, Err(StoreError::Internal(_)));
        self.calls.observe(op, started.elapsed(), failed);
        result
    }

    /// A write changed what a registry snapshot holds, or may have (one that failed may
    /// still have been applied): placement's kept snapshot is rebuilt before its next
    /// decision (see [`crate::manager::dispatch::fleet`]).
    fn changes_registry(&self) {
        self.registry_changes.fetch_add(1, Ordering::Relaxed);
    }
}

/// How long store calls fail fast after one found the database unreachable, before one
/// call is let through to try again.
const RETRY_EVERY: Duration = Duration::from_secs(1);

/// A circuit breaker over the store. When a call finds the database unreachable, calls
/// fail at once (the API answers 503 with `Retry-After` without waiting on a connection
/// pool that cannot connect) for [`RETRY_EVERY`]; then one call at a time is let through
/// as a probe, and the first call that reaches the database closes the breaker.
#[derive(Debug, Default)]
pub struct Breaker {
    state: Mutex<BreakerState>,
}

#[derive(Debug, Default)]
struct BreakerState {
    /// Set while the database is believed unreachable: until when calls fail fast.
    open_until: Option<Instant>,
    /// Whether a probe is in flight (then every other call fails fast).
    probing: bool,
}

/// What the breaker lets a call do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The database is believed reachable: go ahead.
    Go,
    /// The database was unreachable; this call is the one that tries again.
    Probe,
    /// The database was unreachable moments ago: fail now.
    Refuse,
}

impl Breaker {
    pub fn admit(&self, now: Instant) -> Admit {
        let mut state = self.lock();
        match state.open_until {
            None => Admit::Go,
            Some(until) if now < until || state.probing => Admit::Refuse,
            Some(_) => {
                state.probing = true;
                Admit::Probe
            }
        }
    }

    /// What a call that was let through found: the database `unavailable`, or not.
    pub fn record(&self, now: Instant, unavailable: bool) {
        let mut state = self.lock();
        if unavailable {
            if state.open_until.is_none() {
                tracing::warn!("the database is unreachable; store calls fail fast until it answers again");
            }
            state.open_until = Some(now + RETRY_EVERY);
        } else if state.open_until.take().is_some() {
            tracing::info!("the database answers again");
        }
    }

    /// Whether calls are failing fast now.
    #[cfg(test)]
    fn is_open(&self) -> bool {
        self.lock().open_until.is_some()
    }

    fn end_probe(&self) {
        self.lock().probing = false;
    }

    fn lock(&self) -> MutexGuard<'_, BreakerState> {
        // A panic while holding this lock cannot leave the state half-written: every
        // critical section is one or two field assignments.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

struct ProbeGuard<'a>(&'a Breaker);

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        self.0.end_probe();
    }
}

/// The one forwarding point of the wrapper: implements each trait listed ([`Store`],
/// [`Replicas`]) for [`Instrumented`], its `untimed` methods as written and every other
/// one as a timed call of the same method of the inner store, labelled with the method's
/// name; and lists those names. A method marked
/// `#[changes_registry]` is a write that changes what a registry snapshot holds (groups,
/// instances, their connections and capability results) and calls
/// [`Instrumented::changes_registry`] after it. Heartbeats, load and last successes are
/// not marked: they change too often, and placement keeps up with them its own way.
macro_rules! observed {
    ($(
        impl $trait:ident {
            untimed { $($untimed:item)* }
            $( $(#[$mark:ident])? fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*
        }
    )*) => {
        $(
            #[async_trait]
            impl $trait for Instrumented {
                $($untimed)*

                $(
                    async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$ret> {
                        let result = self.observe(stringify!($name), $trait::$name(&*self.inner, $($arg),*)).await;
                        $( self.$mark(); )?
                        result
                    }
                )*
            }
        )*

        /// Every operation label [`Instrumented`] reports, so that each series exists (at
        /// 0) before the first call.
        pub const OPERATIONS: &[&str] = &[$($(stringify!($name)),*),*];
    };
}

observed! {
    impl Store {
    untimed {
        fn backend(&self) -> Backend {
            self.inner.backend()
        }

        fn batch_stats(&self) -> Option<BatchSnapshot> {
            self.inner.batch_stats()
        }
    }
    fn check_ready(&self) -> ();
    fn create_token(&self, token: &DelegateToken, secret: &SecretHash) -> ();
    fn get_token(&self, id: TokenId) -> DelegateToken;
    fn token_by_secret(&self, secret: &SecretHash) -> Option<DelegateToken>;
    fn list_tokens(&self, within: Option<&Scope>) -> Vec<DelegateToken>;
    fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> DelegateToken;
    fn use_jit_token(&self, id: TokenId, at: DateTime<Utc>) -> bool;
    fn remove_expired_jit_tokens(&self, before: DateTime<Utc>) -> u64;
    #[changes_registry]
    fn upsert_group(&self, scope: &Scope, name: &Ident, tags: &Selectors, at: DateTime<Utc>) -> DelegateGroup;
    #[changes_registry]
    fn declare_group(&self, group: &DelegateGroup) -> ();
    fn get_group(&self, id: GroupId) -> DelegateGroup;
    fn list_groups(&self, within: Option<&Scope>) -> Vec<DelegateGroup>;
    #[changes_registry]
    fn set_group_tags(&self, id: GroupId, tags: &Selectors) -> DelegateGroup;
    #[changes_registry]
    fn set_group_disabled(&self, id: GroupId, disabled: bool) -> DelegateGroup;
    #[changes_registry]
    fn set_group_pause(&self, id: GroupId, pause: Option<&Pause>) -> DelegateGroup;
    #[changes_registry]
    fn delete_group(&self, id: GroupId) -> ();
    #[changes_registry]
    fn register_instance(&self, instance: &DelegateInstance, session: &SecretHash) -> ();
    #[changes_registry]
    fn register_jit_instance(&self, instance: &DelegateInstance, session: &SecretHash, at: DateTime<Utc>) -> bool;
    fn get_instance(&self, id: InstanceId) -> DelegateInstance;
    fn instance_by_session(&self, session: &SecretHash) -> Option<DelegateInstance>;
    fn list_instances(&self, group: Option<GroupId>) -> Vec<DelegateInstance>;
    fn instance_counts(&self, stale_before: DateTime<Utc>) -> switchboard_store::InstanceCounts;
    fn record_heartbeats(&self, beats: &[(InstanceId, DateTime<Utc>)]) -> u64;
    #[changes_registry]
    fn set_instance_connected(&self, id: InstanceId, connected: bool) -> bool;
    #[changes_registry]
    fn set_instance_pause(&self, id: InstanceId, pause: Option<&Pause>) -> DelegateInstance;
    #[changes_registry]
    fn set_instance_draining(&self, id: InstanceId) -> DelegateInstance;
    #[changes_registry]
    fn retire_spent_instances(&self, at: DateTime<Utc>) -> Vec<InstanceId>;
    fn renew_lease(&self) -> bool;
    #[changes_registry]
    fn remove_silent_instances(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> Vec<InstanceId>;
    #[changes_registry]
    fn remove_empty_groups(&self, before: DateTime<Utc>) -> Vec<GroupId>;
    fn create_connector(&self, connector: &Connector) -> ();
    fn get_connector(&self, id: ConnectorId) -> Connector;
    fn list_connectors(&self, within: Option<&Scope>) -> Vec<Connector>;
    fn update_connector(&self, connector: &Connector) -> ();
    fn delete_connector(&self, id: ConnectorId) -> ();
    fn record_last_success(&self, success: &LastSuccess) -> ();
    fn last_success(&self, connector: ConnectorId) -> Option<LastSuccess>;
    fn write_tasks(&self, writes: Vec<TaskWrite>) -> Vec<StoreResult<Written>>;
    fn insert_task(&self, task: &NewTask) -> Inserted;
    fn submit_task(&self, submission: Submission) -> Stored;
    fn get_task(&self, id: TaskId) -> Task;
    fn list_tasks(&self, query: &TaskQuery) -> Page<Task>;
    fn queued_tasks(&self, account: Option<&Ident>, limit: u32) -> Vec<Task>;
    fn queue_shapes(&self, query: &QueueQuery) -> QueueShapes;
    fn active_by_scope(&self) -> Vec<(Scope, u64)>;
    fn concurrency_held(&self, account: &Ident, key: &str) -> u32;
    fn queue_heads(&self, after: Option<&Scope>, shares: u32, rows: u32) -> Vec<Task>;
    fn set_scope_policy(&self, policy: &ScopePolicy) -> ();
    fn delete_scope_policy(&self, scope: &Scope) -> ();
    fn scope_policies(&self, within: Option<&Scope>) -> Vec<ScopePolicy>;
    fn claim_task(&self, task: TaskId, instance: InstanceId, at: DateTime<Utc>) -> Claim;
    fn transition_task(&self, transition: &Transition) -> Task;
    fn record_progress(&self, task: TaskId, attempt: Attempt, progress: &serde_json::Value, at: DateTime<Utc>) -> Task;
    fn task_attempts(&self, task: TaskId) -> Vec<TaskAttempt>;
    fn tasks_held_by(&self, instance: InstanceId) -> Vec<Task>;
    fn due_tasks(&self, query: &DueQuery) -> DueTasks;
    fn extend_run_deadlines(&self, beats: &[(TaskId, Attempt, DateTime<Utc>)]) -> u64;
    #[changes_registry]
    fn record_capability_result(&self, result: &CapabilityResult) -> ();
    fn capability_results(&self, instances: &[InstanceId]) -> Vec<CapabilityResult>;
    fn append_selection_log(&self, entries: &[SelectionLogEntry]) -> ();
    fn selection_log(&self, task: TaskId) -> Vec<SelectionLogEntry>;
    fn prune_selection_log(&self, before: DateTime<Utc>) -> u64;
    fn create_secret(&self, secret: &TaskSecret) -> ();
    fn get_secret(&self, id: SecretId) -> TaskSecret;
    fn list_secrets(&self, within: Option<&Scope>) -> Vec<TaskSecret>;
    fn secrets_named(&self, account: &Ident, names: &[Ident]) -> Vec<TaskSecret>;
    fn secrets_by_id(&self, ids: &[SecretId]) -> Vec<TaskSecret>;
    fn replace_secret(&self, secret: &TaskSecret) -> ();
    fn delete_secret(&self, id: SecretId) -> ();
    fn append_task_log(&self, append: &LogAppend) -> Appended;
    fn task_log(&self, task: TaskId, from: LogPosition, max_bytes: usize) -> Vec<LogChunk>;
    fn prune_task_logs(&self, before: DateTime<Utc>) -> u64;
    fn append_audit(&self, entry: &AuditEntry) -> AuditEntry;
    fn list_audit(&self, query: &AuditQuery) -> Vec<AuditEntry>;
    fn prune_audit(&self, before: DateTime<Utc>) -> u64;
    fn create_api_key(&self, key: &ApiKey, secret: &SecretHash) -> ();
    fn api_key_by_secret(&self, secret: &SecretHash) -> Option<ApiKey>;
    fn list_api_keys(&self, within: Option<&Scope>) -> Vec<ApiKey>;
    fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> ApiKey;
    fn bootstrap_admin_key(&self, candidate: &SecretHash, at: DateTime<Utc>) -> AdminKey;
    }

    impl Replicas {
    untimed {
        /// Not timed: it opens a listener that lives as long as the manager.
        async fn subscribe(&self) -> StoreResult<Option<ClusterSignals>> {
            self.inner.subscribe().await
        }
    }
    fn lead(&self) -> bool;
    fn publish(&self, origin: uuid::Uuid, events: &[ClusterEvent]) -> ();
    }
}

#[cfg(test)]
mod tests {
    use switchboard_store_sqlite::SqliteStore;

    use super::*;

    #[tokio::test]
    async fn registry_writes_and_only_they_invalidate_the_kept_snapshot() {
        let dir = tempfile::tempdir().unwrap();
        let inner = SqliteStore::open(&dir.path().join("switchboard.db")).await.unwrap();
        let changes = Arc::new(AtomicU64::new(0));
        let metrics = crate::metrics::Metrics::default();
        let store = Instrumented::new(Arc::new(inner), metrics.store_calls(), changes.clone());
        let scope = Scope::parse_path("acme").unwrap();
        let pool = Ident::parse("pool").unwrap();
        let group = store
            .upsert_group(&scope, &pool, &Selectors::new(), Utc::now())
            .await
            .unwrap();
        assert_eq!(changes.load(Ordering::Relaxed), 1, "a group created");
        store.get_group(group.id).await.unwrap();
        store.list_groups(None).await.unwrap();
        store.list_instances(None).await.unwrap();
        assert_eq!(changes.load(Ordering::Relaxed), 1, "reads change nothing");
        store.set_group_disabled(group.id, true).await.unwrap();
        assert_eq!(changes.load(Ordering::Relaxed), 2, "a group disabled");
    }

    #[test]
    fn an_unreachable_database_fails_calls_fast_then_lets_one_probe_through() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        assert_eq!(breaker.admit(t0), Admit::Go);
        breaker.record(t0, true);
        assert!(breaker.is_open());
        // Within the window: refused without trying.
        assert_eq!(breaker.admit(t0 + Duration::from_millis(500)), Admit::Refuse);
        // After it: one probe, and nobody else while it is in flight.
        let later = t0 + RETRY_EVERY;
        assert_eq!(breaker.admit(later), Admit::Probe);
        assert_eq!(breaker.admit(later), Admit::Refuse);
        // The probe fails: another window.
        breaker.record(later, true);
        breaker.end_probe();
        assert_eq!(breaker.admit(later + Duration::from_millis(10)), Admit::Refuse);
        // The next probe succeeds: calls go through again.
        let again = later + RETRY_EVERY;
        assert_eq!(breaker.admit(again), Admit::Probe);
        breaker.record(again, false);
        breaker.end_probe();
        assert!(!breaker.is_open());
        assert_eq!(breaker.admit(again), Admit::Go);
    }

    #[test]
    fn a_probe_dropped_before_it_answers_lets_the_next_call_probe() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.record(t0, true);
        let later = t0 + RETRY_EVERY;
        assert_eq!(breaker.admit(later), Admit::Probe);
        drop(ProbeGuard(&breaker));
        assert_eq!(breaker.admit(later), Admit::Probe);
    }

    #[test]
    fn a_success_of_a_call_already_in_flight_closes_the_breaker() {
        let breaker = Breaker::default();
        let t0 = Instant::now();
        breaker.record(t0, true);
        breaker.record(t0, false);
        assert_eq!(breaker.admit(t0), Admit::Go);
    }
}
