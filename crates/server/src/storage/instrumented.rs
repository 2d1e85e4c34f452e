//! [`Instrumented`]: a [`Store`] that times every call and counts the failed ones, for
//! `GET /metrics`. [`crate::AppState`] wraps whichever backend [`super::open_store`]
//! opened in it, so every caller is measured without knowing it.

use std::future::Future;
use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use switchboard_domain::{
    ApiKey, ApiKeyId, Attempt, AuditEntry, CapabilityResult, Connector, ConnectorId, DelegateGroup, DelegateInstance,
    DelegateToken, GroupId, Ident, InstanceId, LastSuccess, NewTask, Scope, SecretHash, SelectionLogEntry, Selectors,
    Task, TaskAttempt, TaskId, TokenId,
};
use switchboard_store::{
    AdminKey, AuditQuery, Backend, Claim, ClusterEvent, ClusterSignals, DueTasks, Inserted, Page, Store, StoreError,
    StoreResult, TaskQuery, Transition,
};

use crate::metrics::StoreCalls;

/// A store whose calls are observed by [`StoreCalls`].
#[derive(Debug)]
pub struct Instrumented {
    inner: Arc<dyn Store>,
    calls: Arc<StoreCalls>,
}

impl Instrumented {
    pub fn new(inner: Arc<dyn Store>, calls: Arc<StoreCalls>) -> Self {
        Self { inner, calls }
    }

    async fn observe<T>(&self, op: &'static str, call: impl Future<Output = StoreResult<T>>) -> StoreResult<T> {
        let started = Instant::now();
        let result = call.await;
        // Not found and conflicts are answers, not failures of the store.
        let failed = matches!(result, Err(StoreError::Unavailable(_) | StoreError::Internal(_)));
        self.calls.observe(op, started.elapsed(), failed);
        result
    }
}

/// Implements every async method of [`Store`] as a timed call of the same method of the
/// inner store, labelled with the method's name; and lists those names.
macro_rules! observed {
    ($( fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty; )*) => {
        #[async_trait]
        impl Store for Instrumented {
            fn backend(&self) -> Backend {
                self.inner.backend()
            }

            /// Not timed: it opens a listener that lives as long as the manager.
            async fn subscribe(&self) -> StoreResult<Option<ClusterSignals>> {
                self.inner.subscribe().await
            }

            $(
                async fn $name(&self $(, $arg: $ty)*) -> StoreResult<$ret> {
                    self.observe(stringify!($name), self.inner.$name($($arg),*)).await
                }
            )*
        }

        /// Every operation label [`Instrumented`] reports, so that each series exists (at
        /// 0) before the first call.
        pub const OPERATIONS: &[&str] = &[$(stringify!($name)),*];
    };
}

observed! {
    fn check_ready(&self) -> ();
    fn create_token(&self, token: &DelegateToken, secret: &SecretHash) -> ();
    fn get_token(&self, id: TokenId) -> DelegateToken;
    fn token_by_secret(&self, secret: &SecretHash) -> Option<DelegateToken>;
    fn list_tokens(&self, within: Option<&Scope>) -> Vec<DelegateToken>;
    fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> DelegateToken;
    fn upsert_group(&self, scope: &Scope, name: &Ident, tags: &Selectors, at: DateTime<Utc>) -> DelegateGroup;
    fn get_group(&self, id: GroupId) -> DelegateGroup;
    fn list_groups(&self, within: Option<&Scope>) -> Vec<DelegateGroup>;
    fn set_group_tags(&self, id: GroupId, tags: &Selectors) -> DelegateGroup;
    fn set_group_disabled(&self, id: GroupId, disabled: bool) -> DelegateGroup;
    fn delete_group(&self, id: GroupId) -> ();
    fn register_instance(&self, instance: &DelegateInstance, session: &SecretHash) -> ();
    fn get_instance(&self, id: InstanceId) -> DelegateInstance;
    fn instance_by_session(&self, session: &SecretHash) -> Option<DelegateInstance>;
    fn list_instances(&self, group: Option<GroupId>) -> Vec<DelegateInstance>;
    fn record_heartbeats(&self, beats: &[(InstanceId, DateTime<Utc>)]) -> u64;
    fn set_instance_connected(&self, id: InstanceId, connected: bool) -> ();
    fn remove_silent_instances(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> Vec<InstanceId>;
    fn remove_empty_groups(&self, before: DateTime<Utc>) -> Vec<GroupId>;
    fn create_connector(&self, connector: &Connector) -> ();
    fn get_connector(&self, id: ConnectorId) -> Connector;
    fn list_connectors(&self, within: Option<&Scope>) -> Vec<Connector>;
    fn update_connector(&self, connector: &Connector) -> ();
    fn delete_connector(&self, id: ConnectorId) -> ();
    fn record_last_success(&self, success: &LastSuccess) -> ();
    fn last_success(&self, connector: ConnectorId) -> Option<LastSuccess>;
    fn insert_task(&self, task: &NewTask) -> Inserted;
    fn get_task(&self, id: TaskId) -> Task;
    fn list_tasks(&self, query: &TaskQuery) -> Page<Task>;
    fn queued_tasks(&self, account: Option<&Ident>, limit: u32) -> Vec<Task>;
    fn claim_task(&self, task: TaskId, instance: InstanceId, at: DateTime<Utc>) -> Claim;
    fn transition_task(&self, transition: &Transition) -> Task;
    fn record_progress(&self, task: TaskId, attempt: Attempt, progress: &serde_json::Value, at: DateTime<Utc>) -> Task;
    fn task_attempts(&self, task: TaskId) -> Vec<TaskAttempt>;
    fn tasks_held_by(&self, instance: InstanceId) -> Vec<Task>;
    fn due_tasks(&self, now: DateTime<Utc>, unacknowledged_before: DateTime<Utc>, limit: u32) -> DueTasks;
    fn extend_run_deadlines(&self, beats: &[(TaskId, Attempt, DateTime<Utc>)]) -> u64;
    fn record_capability_result(&self, result: &CapabilityResult) -> ();
    fn capability_results(&self, instances: &[InstanceId]) -> Vec<CapabilityResult>;
    fn append_selection_log(&self, entries: &[SelectionLogEntry]) -> ();
    fn selection_log(&self, task: TaskId) -> Vec<SelectionLogEntry>;
    fn prune_selection_log(&self, before: DateTime<Utc>) -> u64;
    fn append_audit(&self, entry: &AuditEntry) -> AuditEntry;
    fn list_audit(&self, query: &AuditQuery) -> Vec<AuditEntry>;
    fn prune_audit(&self, before: DateTime<Utc>) -> u64;
    fn create_api_key(&self, key: &ApiKey, secret: &SecretHash) -> ();
    fn api_key_by_secret(&self, secret: &SecretHash) -> Option<ApiKey>;
    fn list_api_keys(&self, within: Option<&Scope>) -> Vec<ApiKey>;
    fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> ApiKey;
    fn bootstrap_admin_key(&self, candidate: &SecretHash, at: DateTime<Utc>) -> AdminKey;
    fn publish(&self, origin: uuid::Uuid, events: &[ClusterEvent]) -> ();
}
