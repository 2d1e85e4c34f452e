//! The PostgreSQL store: production storage, shared by any number of manager replicas.
//!
//! Concurrency is left to the database. A claim is one transaction that updates the task
//! only while it is queued and the instance only while it is under capacity; a fenced
//! transition locks the task row (`FOR UPDATE`), checks the attempt and the state machine,
//! and writes. Every transaction that touches both a task and an instance locks the task
//! first, so two of them can never wait on each other in a cycle.

#![forbid(unsafe_code)]

mod audit;
mod batch;
mod deadlines;
mod delegates;
mod error;
mod keys;
mod lead;
mod logs;
mod notify;
mod policy;
mod rows;
mod secrets;
mod tasks;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use switchboard_domain::SecretId;
use switchboard_domain::policy::ScopePolicy;
use switchboard_domain::tasklog::{LogChunk, LogPosition};
use switchboard_domain::vault::TaskSecret;
use switchboard_domain::{
    ApiKey, ApiKeyId, Attempt, AuditEntry, CapabilityResult, Connector, ConnectorId, DelegateGroup, DelegateInstance,
    DelegateToken, GroupId, Ident, InstanceId, LastSuccess, Pause, Scope, SecretHash, SelectionLogEntry, Selectors,
    Task, TaskAttempt, TaskId, TokenId,
};
use switchboard_store::committer::{Committer, Limits};
use switchboard_store::{
    AdminKey, AuditQuery, Backend, BatchSnapshot, DueQuery, DueTasks, Page, Store, StoreError, StoreResult, TaskQuery,
    TaskWrite, Written,
};
use uuid::Uuid;

pub use error::map_err;

// The migrations of this backend (`migrations/postgres/`), listed and embedded at build
// time by `build.rs`: the binary needs no files at run time, and a new migration is a new
// file, with no list to keep.
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// Settings of the connection pool.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    /// How long a call waits for a free connection (and a new connection for the server)
    /// before failing with [`StoreError::Unavailable`].
    pub acquire_timeout: Duration,
    /// How long the connections this store records count without a renewal of its lease
    /// ([`Store::renew_lease`]); the first lease is taken when it connects.
    pub connection_lease: Duration,
    /// How big a batch of task writes may grow, and how many commit at once.
    pub batches: Limits,
}

impl Default for PgOptions {
    fn default() -> Self {
        Self {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            connection_lease: Duration::from_secs(10),
            batches: Limits {
                // Two: their round trips overlap; more contend on the same instance rows.
                in_flight: 2,
                ..Limits::default()
            },
        }
    }
}

/// A store on PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
    /// The `LISTEN/NOTIFY` channel of this store's schema (see [`notify`]).
    channel: String,
    /// Whether this replica leads (see [`lead`]); shared by the store's clones.
    lead: std::sync::Arc<lead::Lead>,
    /// This replica in `manager_leases`: the connections it records count while its lease
    /// lives (see [`delegates::renew_lease`]). New at every start, so a restarted replica
    /// never inherits the connections its previous life recorded.
    replica: Uuid,
    /// How long its lease lasts from each renewal.
    lease: Duration,
    /// Every write on the task path, in batches ([`batch`]).
    committer: Committer,
}

/// Starts a transaction on a connection from `pool`.
///
/// The `BEGIN` runs in a task of its own, which the caller only awaits. A caller can be
/// dropped at any `.await` (the server's request timeout, a client that hangs up), and
/// sqlx 0.8's `begin` is not safe to drop while it waits for the server's answer: it
/// counts the transaction only once that answer is read, so the guard meant to roll back
/// a dropped `BEGIN` finds nothing to undo, and the pool's liveness ping does not look at
/// the session's transaction status. The connection would go back to the pool inside a
/// transaction, and its next borrower's single-statement writes would run in it:
/// acknowledged, visible to that connection alone, and lost when it closes. In a task,
/// the `BEGIN` always finishes; if its caller is gone, the finished `Transaction` is
/// dropped with the task's output, which queues the `ROLLBACK` before the connection
/// returns to the pool.
///
/// Only the `BEGIN` is moved, not the whole transaction: every other step is already
/// safe to drop (a dropped `Transaction` queues a rollback; a dropped `COMMIT` was either
/// queued already, so it reaches the server ahead of that rollback and commits, or was
/// not, so nothing commits), and moving the work would mean owned copies of every
/// argument of every write.
pub(crate) async fn begin(pool: &PgPool) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
    let pool = pool.clone();
    tokio::spawn(async move { pool.begin().await.map_err(map_err) })
        .await
        .map_err(|e| StoreError::Internal(format!("the task starting a transaction failed: {e}")))?
}

impl PgStore {
    /// Connects, then applies any migration not yet applied (under the migrator's advisory
    /// lock, so replicas starting together do not race).
    pub async fn connect(url: &str, options: &PgOptions) -> StoreResult<Self> {
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        Self::connect_with(connect, options).await
    }

    /// Like [`PgStore::connect`], with options already built (tests use it to set a
    /// per-test `search_path`).
    pub async fn connect_with(connect: PgConnectOptions, options: &PgOptions) -> StoreResult<Self> {
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect.clone())
            .await
            .map_err(map_err)?;
        let (schema,): (String,) = sqlx::query_as("SELECT current_schema()")
            .fetch_one(&pool)
            .await
            .map_err(map_err)?;
        let committer = Committer::start(Arc::new(batch::PgWriter { pool: pool.clone() }), options.batches);
        let store = Self {
            pool,
            channel: notify::channel_for(&schema),
            lead: std::sync::Arc::new(lead::Lead::new(connect)),
            replica: Uuid::new_v4(),
            lease: options.connection_lease,
            committer,
        };
        store.migrate().await?;
        delegates::renew_lease(&store.pool, store.replica, store.lease).await?;
        Ok(store)
    }

    async fn migrate(&self) -> StoreResult<()> {
        let migrator = migrator().await?;
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }
}

async fn migrator() -> StoreResult<Migrator> {
    Migrator::new(Embedded(MIGRATIONS))
        .await
        .map_err(|e| StoreError::Internal(format!("bad embedded migrations: {e}")))
}

/// A migration source over SQL compiled into the binary, so the binary needs no files at
/// run time and the build needs no database or proc-macro.
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

impl<'s> sqlx::migrate::MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> futures_core::future::BoxFuture<'s, Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>> {
        Box::pin(async move {
            Ok(self
                .0
                .iter()
                .map(|(version, description, sql)| {
                    sqlx::migrate::Migration::new(
                        *version,
                        (*description).into(),
                        sqlx::migrate::MigrationType::Simple,
                        (*sql).into(),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// The readiness check shared by the trait impl: the database answers and every embedded
/// migration is applied.
async fn check_ready(pool: &PgPool) -> StoreResult<()> {
    let mut conn = pool.acquire().await.map_err(map_err)?;
    let applied = conn
        .list_applied_migrations()
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    let missing: Vec<i64> = MIGRATIONS
        .iter()
        .map(|m| m.0)
        .filter(|v| !applied.iter().any(|a| a.version == *v))
        .collect();
    if missing.is_empty() {
        Ok(())
    } else {
        Err(StoreError::Unavailable(format!("migrations not applied: {missing:?}")))
    }
}

#[async_trait]
impl Store for PgStore {
    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>> {
        self.committer.write(writes).await
    }

    fn batch_stats(&self) -> Option<BatchSnapshot> {
        Some(self.committer.stats())
    }

    fn backend(&self) -> Backend {
        Backend::Postgres
    }

    async fn check_ready(&self) -> StoreResult<()> {
        check_ready(&self.pool).await
    }

    async fn create_token(&self, token: &DelegateToken, secret: &SecretHash) -> StoreResult<()> {
        delegates::create_token(&self.pool, token, secret).await
    }
    async fn get_token(&self, id: TokenId) -> StoreResult<DelegateToken> {
        delegates::get_token(&self.pool, id).await
    }
    async fn token_by_secret(&self, secret: &SecretHash) -> StoreResult<Option<DelegateToken>> {
        delegates::token_by_secret(&self.pool, secret).await
    }
    async fn list_tokens(&self, within: Option<&Scope>) -> StoreResult<Vec<DelegateToken>> {
        delegates::list_tokens(&self.pool, within).await
    }
    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<DelegateToken> {
        delegates::revoke_token(&self.pool, id, at).await
    }

    async fn upsert_group(
        &self,
        scope: &Scope,
        name: &Ident,
        tags: &Selectors,
        at: DateTime<Utc>,
    ) -> StoreResult<DelegateGroup> {
        delegates::upsert_group(&self.pool, scope, name, tags, at).await
    }
    async fn declare_group(&self, group: &DelegateGroup) -> StoreResult<()> {
        delegates::declare_group(&self.pool, group).await
    }
    async fn get_group(&self, id: GroupId) -> StoreResult<DelegateGroup> {
        delegates::get_group(&self.pool, id).await
    }
    async fn list_groups(&self, within: Option<&Scope>) -> StoreResult<Vec<DelegateGroup>> {
        delegates::list_groups(&self.pool, within).await
    }
    async fn set_group_tags(&self, id: GroupId, tags: &Selectors) -> StoreResult<DelegateGroup> {
        delegates::set_group_tags(&self.pool, id, tags).await
    }
    async fn set_group_disabled(&self, id: GroupId, disabled: bool) -> StoreResult<DelegateGroup> {
        delegates::set_group_disabled(&self.pool, id, disabled).await
    }
    async fn set_group_pause(&self, id: GroupId, pause: Option<&Pause>) -> StoreResult<DelegateGroup> {
        delegates::set_group_pause(&self.pool, id, pause).await
    }
    async fn delete_group(&self, id: GroupId) -> StoreResult<()> {
        delegates::delete_group(&self.pool, id).await
    }

    async fn register_instance(&self, instance: &DelegateInstance, session: &SecretHash) -> StoreResult<()> {
        delegates::register_instance(&self.pool, self.replica, instance, session).await
    }
    async fn register_jit_instance(
        &self,
        instance: &DelegateInstance,
        session: &SecretHash,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        delegates::register_jit_instance(&self.pool, self.replica, instance, session, at).await
    }
    async fn get_instance(&self, id: InstanceId) -> StoreResult<DelegateInstance> {
        delegates::get_instance(&self.pool, id).await
    }
    async fn instance_by_session(&self, session: &SecretHash) -> StoreResult<Option<DelegateInstance>> {
        delegates::instance_by_session(&self.pool, session).await
    }
    async fn list_instances(&self, group: Option<GroupId>) -> StoreResult<Vec<DelegateInstance>> {
        delegates::list_instances(&self.pool, group).await
    }
    async fn instance_counts(&self, stale_before: DateTime<Utc>) -> StoreResult<switchboard_store::InstanceCounts> {
        delegates::instance_counts(&self.pool, stale_before).await
    }
    async fn record_heartbeats(&self, beats: &[(InstanceId, DateTime<Utc>)]) -> StoreResult<u64> {
        delegates::record_heartbeats(&self.pool, beats).await
    }
    async fn set_instance_connected(&self, id: InstanceId, connected: bool) -> StoreResult<bool> {
        delegates::set_instance_connected(&self.pool, self.replica, id, connected).await
    }
    async fn set_instance_pause(&self, id: InstanceId, pause: Option<&Pause>) -> StoreResult<DelegateInstance> {
        delegates::set_instance_pause(&self.pool, id, pause).await
    }
    async fn set_instance_draining(&self, id: InstanceId) -> StoreResult<DelegateInstance> {
        delegates::set_instance_draining(&self.pool, id).await
    }
    async fn retire_spent_instances(&self, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>> {
        delegates::retire_spent_instances(&self.pool, at).await
    }
    async fn use_jit_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
        delegates::use_jit_token(&self.pool, id, at).await
    }
    async fn remove_expired_jit_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        delegates::remove_expired_jit_tokens(&self.pool, before).await
    }
    async fn renew_lease(&self) -> StoreResult<bool> {
        delegates::renew_lease(&self.pool, self.replica, self.lease).await
    }

    async fn remove_silent_instances(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>> {
        delegates::remove_silent_instances(&self.pool, before, at).await
    }
    async fn remove_empty_groups(&self, before: DateTime<Utc>) -> StoreResult<Vec<GroupId>> {
        delegates::remove_empty_groups(&self.pool, before).await
    }

    async fn create_connector(&self, connector: &Connector) -> StoreResult<()> {
        delegates::create_connector(&self.pool, connector).await
    }
    async fn get_connector(&self, id: ConnectorId) -> StoreResult<Connector> {
        delegates::get_connector(&self.pool, id).await
    }
    async fn list_connectors(&self, within: Option<&Scope>) -> StoreResult<Vec<Connector>> {
        delegates::list_connectors(&self.pool, within).await
    }
    async fn update_connector(&self, connector: &Connector) -> StoreResult<()> {
        delegates::update_connector(&self.pool, connector).await
    }
    async fn delete_connector(&self, id: ConnectorId) -> StoreResult<()> {
        delegates::delete_connector(&self.pool, id).await
    }
    async fn record_last_success(&self, success: &LastSuccess) -> StoreResult<()> {
        delegates::record_last_success(&self.pool, success).await
    }
    async fn last_success(&self, connector: ConnectorId) -> StoreResult<Option<LastSuccess>> {
        delegates::last_success(&self.pool, connector).await
    }

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        tasks::get_task(&self.pool, id).await
    }
    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Page<Task>> {
        tasks::list_tasks(&self.pool, query).await
    }
    async fn queued_tasks(&self, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>> {
        tasks::queued_tasks(&self.pool, account, limit).await
    }
    async fn queue_shapes(&self, query: &switchboard_store::QueueQuery) -> StoreResult<switchboard_store::QueueShapes> {
        tasks::queue_shapes(&self.pool, query).await
    }
    async fn active_by_scope(&self) -> StoreResult<Vec<(Scope, u64)>> {
        tasks::active_by_scope(&self.pool).await
    }

    async fn concurrency_held(&self, account: &Ident, key: &str) -> StoreResult<u32> {
        tasks::concurrency_held(&self.pool, account, key).await
    }
    async fn queue_heads(&self, after: Option<&Scope>, shares: u32, rows: u32) -> StoreResult<Vec<Task>> {
        policy::queue_heads(&self.pool, after, shares, rows).await
    }
    async fn set_scope_policy(&self, p: &ScopePolicy) -> StoreResult<()> {
        policy::set_scope_policy(&self.pool, p).await
    }
    async fn delete_scope_policy(&self, scope: &Scope) -> StoreResult<()> {
        policy::delete_scope_policy(&self.pool, scope).await
    }
    async fn scope_policies(&self, within: Option<&Scope>) -> StoreResult<Vec<ScopePolicy>> {
        policy::scope_policies(&self.pool, within).await
    }
    async fn task_attempts(&self, task: TaskId) -> StoreResult<Vec<TaskAttempt>> {
        tasks::task_attempts(&self.pool, task).await
    }
    async fn tasks_held_by(&self, instance: InstanceId) -> StoreResult<Vec<Task>> {
        deadlines::tasks_held_by(&self.pool, instance).await
    }
    async fn due_tasks(&self, query: &DueQuery) -> StoreResult<DueTasks> {
        deadlines::due_tasks(&self.pool, query).await
    }
    async fn extend_run_deadlines(&self, beats: &[(TaskId, Attempt, DateTime<Utc>)]) -> StoreResult<u64> {
        deadlines::extend_run_deadlines(&self.pool, beats).await
    }

    async fn record_capability_result(&self, result: &CapabilityResult) -> StoreResult<()> {
        tasks::record_capability_result(&self.pool, result).await
    }
    async fn capability_results(&self, instances: &[InstanceId]) -> StoreResult<Vec<CapabilityResult>> {
        tasks::capability_results(&self.pool, instances).await
    }

    async fn selection_log(&self, task: TaskId) -> StoreResult<Vec<SelectionLogEntry>> {
        tasks::selection_log(&self.pool, task).await
    }
    async fn prune_selection_log(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        tasks::prune_selection_log(&self.pool, before).await
    }

    async fn create_secret(&self, secret: &TaskSecret) -> StoreResult<()> {
        secrets::create(&self.pool, secret).await
    }
    async fn get_secret(&self, id: SecretId) -> StoreResult<TaskSecret> {
        secrets::get_one(&self.pool, id).await
    }
    async fn list_secrets(&self, within: Option<&Scope>) -> StoreResult<Vec<TaskSecret>> {
        secrets::list(&self.pool, within).await
    }
    async fn secrets_named(&self, account: &Ident, names: &[Ident]) -> StoreResult<Vec<TaskSecret>> {
        secrets::named(&self.pool, account, names).await
    }
    async fn secrets_by_id(&self, ids: &[SecretId]) -> StoreResult<Vec<TaskSecret>> {
        secrets::by_id(&self.pool, ids).await
    }
    async fn replace_secret(&self, secret: &TaskSecret) -> StoreResult<()> {
        secrets::replace(&self.pool, secret).await
    }
    async fn delete_secret(&self, id: SecretId) -> StoreResult<()> {
        secrets::delete(&self.pool, id).await
    }

    async fn task_log(&self, task: TaskId, from: LogPosition, max_bytes: usize) -> StoreResult<Vec<LogChunk>> {
        logs::read(&self.pool, task, from, max_bytes).await
    }
    async fn prune_task_logs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        logs::prune(&self.pool, before).await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        audit::list_audit(&self.pool, query).await
    }
    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        audit::prune_audit(&self.pool, before).await
    }

    async fn create_api_key(&self, key: &ApiKey, secret: &SecretHash) -> StoreResult<()> {
        keys::create_api_key(&self.pool, key, secret).await
    }
    async fn api_key_by_secret(&self, secret: &SecretHash) -> StoreResult<Option<ApiKey>> {
        keys::api_key_by_secret(&self.pool, secret).await
    }
    async fn list_api_keys(&self, within: Option<&Scope>) -> StoreResult<Vec<ApiKey>> {
        keys::list_api_keys(&self.pool, within).await
    }
    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<ApiKey> {
        keys::revoke_api_key(&self.pool, id, at).await
    }
    async fn bootstrap_admin_key(&self, candidate: &SecretHash, at: DateTime<Utc>) -> StoreResult<AdminKey> {
        keys::bootstrap_admin_key(&self.pool, candidate, at).await
    }
}

#[async_trait]
impl switchboard_store::Replicas for PgStore {
    async fn publish(&self, origin: uuid::Uuid, events: &[switchboard_store::ClusterEvent]) -> StoreResult<()> {
        notify::publish(&self.pool, &self.channel, origin, events).await
    }

    async fn subscribe(&self) -> StoreResult<Option<switchboard_store::ClusterSignals>> {
        notify::subscribe(&self.pool, &self.channel).await.map(Some)
    }

    async fn lead(&self) -> StoreResult<bool> {
        self.lead.check().await
    }
}
