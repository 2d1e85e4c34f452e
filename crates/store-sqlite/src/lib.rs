//! The SQLite store: embedded storage for one manager (evaluation and single-node
//! installs), kept in one file.
//!
//! # Concurrency
//!
//! SQLite allows one writer at a time per database file. Left to itself, a pool of
//! connections that all write would collide: two transactions that each read and then try
//! to write cannot both upgrade their locks, and one fails with `SQLITE_BUSY` at once,
//! whatever the busy timeout (waiting could never help it). So the store keeps **two
//! pools**:
//!
//! * the **writer**, exactly one connection: every write, and every transaction that reads
//!   and then writes (claims, fenced transitions), goes through it. Writers queue for that
//!   connection in-process instead of racing for the file lock, so a claim's
//!   "only while queued / only while under capacity" checks and its writes see no
//!   interleaving. Transactions start with `BEGIN IMMEDIATE`, taking the write lock up
//!   front, so even another process on the same file makes them wait (busy timeout)
//!   rather than fail half-way.
//! * the **readers**, a few connections for plain reads. In WAL mode readers never block
//!   the writer nor wait for it; each read sees the last committed state.
//!
//! # Durability
//!
//! `journal_mode=WAL` with `synchronous=FULL`: a commit returns only once the WAL is
//! synced, so an acknowledged write survives a crash or power loss (docs/rules.md: "Committed
//! before acknowledged"). `foreign_keys=ON` on every connection, since SQLite
//! leaves them off by default.
//!
//! # Types
//!
//! Ids are 16-byte blobs, timestamps Unix milliseconds, JSON text: see `rows.rs` and the
//! schema in `migrations/sqlite/`.

#![forbid(unsafe_code)]

mod audit;
mod batch;
mod deadlines;
mod delegates;
mod error;
mod keys;
mod logs;
mod policy;
mod rows;
mod secrets;
mod tasks;

use std::fs::{File, TryLockError};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::migrate::{Migrate, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
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
use switchboard_store::{AdminKey, AuditQuery, Backend, DueQuery, DueTasks, Page, StoreError, StoreResult, TaskQuery};
use switchboard_store::{BatchSnapshot, TaskWrite, Written};

pub use error::map_err;

// The migrations of this backend (`migrations/sqlite/`), listed and embedded at build
// time by `build.rs`: the binary needs no files at run time, and a new migration is a new
// file, with no list to keep.
include!(concat!(env!("OUT_DIR"), "/migrations.rs"));

/// How many connections serve plain reads.
const READERS: u32 = 4;

/// How long a statement waits for a lock held by another connection (another process on
/// the same file, or a reader during a checkpoint) before failing as unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    db: Db,
    /// Every write on the task path, in batches ([`batch`]): one at a time, as the file
    /// has one writer.
    committer: Committer,
    /// With [`SqliteStore::open_exclusive`]: the lock file, held while any clone lives.
    _lock: Option<Arc<File>>,
}

/// The two pools (see the module documentation). Handed to the per-area modules.
#[derive(Debug, Clone)]
pub(crate) struct Db {
    /// One connection: all writes and read-then-write transactions.
    pub(crate) writer: SqlitePool,
    /// Plain reads.
    pub(crate) reader: SqlitePool,
}

impl Db {
    /// Starts a write transaction on the writer, holding the database's write lock from
    /// the start (see the module documentation).
    ///
    /// The `BEGIN` runs in a task of its own, which the caller only awaits. A caller can
    /// be dropped at any `.await` (the server's request timeout, a client that hangs up),
    /// and sqlx 0.8's `begin_with` is not safe to drop at all of them: after the worker
    /// has run `BEGIN IMMEDIATE` and reported it, `begin_with` awaits once more (to check
    /// the statement really opened a transaction) before it builds the `Transaction`
    /// whose drop would roll back. Dropped there, it hands the writer back to the pool
    /// inside a transaction nobody owns; since there is one writer, every later write then
    /// fails ("attempted to call begin_with at non-zero transaction depth"). In a task,
    /// the `BEGIN` always finishes; if its caller is gone, the finished `Transaction` is
    /// dropped with the task's output, which rolls it back before the connection returns.
    ///
    /// Only the `BEGIN` is moved, not the whole transaction: every other step is already
    /// safe to drop (a dropped `Transaction` rolls back; a dropped `COMMIT` still
    /// commits, and sqlx then skips the rollback), and moving the work would mean owned
    /// copies of every argument of every write. A caller that gives up while queued for
    /// the writer still costs one empty `BEGIN IMMEDIATE`/`ROLLBACK` when its turn comes,
    /// which writes and syncs nothing. The writer pool's check before it hands the
    /// connection out ([`not_in_transaction`]) stays as the backstop.
    pub(crate) async fn write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Sqlite>> {
        let writer = self.writer.clone();
        tokio::spawn(async move { writer.begin_with("BEGIN IMMEDIATE").await.map_err(map_err) })
            .await
            .map_err(|e| StoreError::Internal(format!("the task starting a transaction failed: {e}")))?
    }
}

/// Whether the row with primary key `id` exists in `table`, for telling "absent" from
/// "refused" inside a transaction.
pub(crate) async fn exists(
    conn: &mut sqlx::SqliteConnection,
    table: &'static str,
    id: uuid::Uuid,
) -> StoreResult<bool> {
    let row = sqlx::query(&format!("SELECT 1 FROM {table} WHERE id = ?"))
        .bind(id)
        .fetch_optional(conn)
        .await
        .map_err(map_err)?;
    Ok(row.is_some())
}

impl SqliteStore {
    /// Opens the database at `path`, creating the file if it is missing, and applies any
    /// migration not yet applied.
    pub async fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with(path, None).await
    }

    /// Like [`SqliteStore::open`], for a manager: first takes an exclusive lock on
    /// `<path>.lock`, and refuses (unavailable, saying why) while another process holds
    /// it. Several managers on one file would each believe their own in-memory view of
    /// connected delegates; PostgreSQL is the store for several replicas.
    ///
    /// Holding the lock also proves that no manager holds a delegate socket recorded in
    /// the file: a connection recorded by a manager that crashed would otherwise look
    /// live for ever (docs/rules.md: "A connection is only as alive as its manager"), so
    /// every recorded connection is forgotten here, before anything reads them.
    pub async fn open_exclusive(path: &Path) -> StoreResult<Self> {
        let lock = lock_exclusive(path)?;
        let store = Self::open_with(path, Some(Arc::new(lock))).await?;
        delegates::forget_connections(&store.db).await?;
        Ok(store)
    }

    async fn open_with(path: &Path, lock: Option<Arc<File>>) -> StoreResult<Self> {
        let options = SqliteConnectOptions::new()
            .filename(path)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // The writer connects first: it creates the file and switches it to WAL (a
        // persistent setting of the file), so the readers find it in WAL mode.
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .before_acquire(|conn, _| Box::pin(async move { Ok(not_in_transaction(conn)) }))
            .connect_with(
                options
                    .clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await
            .map_err(map_err)?;
        migrate(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .connect_with(options)
            .await
            .map_err(map_err)?;
        tracing::info!(path = %path.display(), "SQLite store open, migrations applied");
        let db = Db { writer, reader };
        let committer = Committer::start(Arc::new(batch::SqliteWriter { db: db.clone() }), Limits::default());
        Ok(Self {
            db,
            committer,
            _lock: lock,
        })
    }

    /// Closes both pools, waiting for connections in use to be returned. Dropping the store
    /// also closes them, without waiting.
    pub async fn close(&self) {
        self.db.reader.close().await;
        self.db.writer.close().await;
    }
}

/// Whether the writer may be handed out: not inside a transaction. [`Db::write`] makes sure
/// a cancelled caller never leaves one open; should some other path ever do so, the pool
/// closes the connection instead of handing it out (closing rolls the transaction back)
/// and opens a new one, so one stray transaction cannot block every later write. The
/// check costs nothing: the pool has just pinged the connection, which runs any rollback
/// still queued on it, so sqlx's depth count is current.
fn not_in_transaction(conn: &mut sqlx::SqliteConnection) -> bool {
    use sqlx::Connection as _;
    if conn.is_in_transaction() {
        tracing::error!("the SQLite writer came back inside a transaction; closing it, which rolls that back");
        return false;
    }
    true
}

/// The lock file of the database at `path`: `<path>.lock`, beside it. A file of its own,
/// not the database: SQLite's own locks on the database are POSIX record locks, which a
/// `flock` on the same file would disturb on some file systems.
pub fn lock_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

fn lock_exclusive(path: &Path) -> StoreResult<File> {
    let lock = lock_path(path);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock)
        .map_err(|e| StoreError::Unavailable(format!("cannot open the lock file {}: {e}", lock.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "another manager is using {} (it holds {}); an SQLite file serves one manager, use PostgreSQL \
             (database_url = postgres://...) to run several replicas",
            path.display(),
            lock.display()
        ))),
        Err(TryLockError::Error(e)) => Err(StoreError::Unavailable(format!("cannot lock {}: {e}", lock.display()))),
    }
}

/// Applies every embedded migration not yet applied, each in its own transaction.
async fn migrate(writer: &SqlitePool) -> StoreResult<()> {
    let migrator = migrator().await?;
    migrator
        .run(writer)
        .await
        .map_err(|e| StoreError::Internal(format!("migration failed: {e}")))
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

/// Ready: the database answers and every embedded migration is applied.
async fn check_ready(db: &Db) -> StoreResult<()> {
    let mut conn = db.reader.acquire().await.map_err(map_err)?;
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
impl switchboard_store::Store for SqliteStore {
    async fn write_tasks(&self, writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>> {
        self.committer.write(writes).await
    }

    fn batch_stats(&self) -> Option<BatchSnapshot> {
        Some(self.committer.stats())
    }

    fn backend(&self) -> Backend {
        Backend::Sqlite
    }

    async fn check_ready(&self) -> StoreResult<()> {
        check_ready(&self.db).await
    }

    // --- delegate tokens -------------------------------------------------------------

    async fn create_token(&self, token: &DelegateToken, secret: &SecretHash) -> StoreResult<()> {
        delegates::create_token(&self.db, token, secret).await
    }

    async fn get_token(&self, id: TokenId) -> StoreResult<DelegateToken> {
        delegates::get_token(&self.db, id).await
    }

    async fn token_by_secret(&self, secret: &SecretHash) -> StoreResult<Option<DelegateToken>> {
        delegates::token_by_secret(&self.db, secret).await
    }

    async fn list_tokens(&self, within: Option<&Scope>) -> StoreResult<Vec<DelegateToken>> {
        delegates::list_tokens(&self.db, within).await
    }

    async fn revoke_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<DelegateToken> {
        delegates::revoke_token(&self.db, id, at).await
    }

    // --- delegate groups and instances -----------------------------------------------

    async fn upsert_group(
        &self,
        scope: &Scope,
        name: &Ident,
        tags: &Selectors,
        at: DateTime<Utc>,
    ) -> StoreResult<DelegateGroup> {
        delegates::upsert_group(&self.db, scope, name, tags, at).await
    }

    async fn declare_group(&self, group: &DelegateGroup) -> StoreResult<()> {
        delegates::declare_group(&self.db, group).await
    }

    async fn get_group(&self, id: GroupId) -> StoreResult<DelegateGroup> {
        delegates::get_group(&self.db, id).await
    }

    async fn list_groups(&self, within: Option<&Scope>) -> StoreResult<Vec<DelegateGroup>> {
        delegates::list_groups(&self.db, within).await
    }

    async fn set_group_tags(&self, id: GroupId, tags: &Selectors) -> StoreResult<DelegateGroup> {
        delegates::set_group_tags(&self.db, id, tags).await
    }

    async fn set_group_disabled(&self, id: GroupId, disabled: bool) -> StoreResult<DelegateGroup> {
        delegates::set_group_disabled(&self.db, id, disabled).await
    }

    async fn set_group_pause(&self, id: GroupId, pause: Option<&Pause>) -> StoreResult<DelegateGroup> {
        delegates::set_group_pause(&self.db, id, pause).await
    }

    async fn delete_group(&self, id: GroupId) -> StoreResult<()> {
        delegates::delete_group(&self.db, id).await
    }

    async fn register_instance(&self, instance: &DelegateInstance, session: &SecretHash) -> StoreResult<()> {
        delegates::register_instance(&self.db, instance, session).await
    }

    async fn register_jit_instance(
        &self,
        instance: &DelegateInstance,
        session: &SecretHash,
        at: DateTime<Utc>,
    ) -> StoreResult<bool> {
        delegates::register_jit_instance(&self.db, instance, session, at).await
    }

    async fn get_instance(&self, id: InstanceId) -> StoreResult<DelegateInstance> {
        delegates::get_instance(&self.db, id).await
    }

    async fn instance_by_session(&self, session: &SecretHash) -> StoreResult<Option<DelegateInstance>> {
        delegates::instance_by_session(&self.db, session).await
    }

    async fn list_instances(&self, group: Option<GroupId>) -> StoreResult<Vec<DelegateInstance>> {
        delegates::list_instances(&self.db, group).await
    }
    async fn instance_counts(&self, stale_before: DateTime<Utc>) -> StoreResult<switchboard_store::InstanceCounts> {
        delegates::instance_counts(&self.db, stale_before).await
    }

    async fn record_heartbeats(&self, beats: &[(InstanceId, DateTime<Utc>)]) -> StoreResult<u64> {
        delegates::record_heartbeats(&self.db, beats).await
    }

    async fn set_instance_connected(&self, id: InstanceId, connected: bool) -> StoreResult<bool> {
        delegates::set_instance_connected(&self.db, id, connected).await?;
        // One manager per file: nobody else can hold the socket.
        Ok(true)
    }

    async fn set_instance_pause(&self, id: InstanceId, pause: Option<&Pause>) -> StoreResult<DelegateInstance> {
        delegates::set_instance_pause(&self.db, id, pause).await
    }

    async fn set_instance_draining(&self, id: InstanceId) -> StoreResult<DelegateInstance> {
        delegates::set_instance_draining(&self.db, id).await
    }

    async fn retire_spent_instances(&self, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>> {
        delegates::retire_spent_instances(&self.db, at).await
    }

    async fn use_jit_token(&self, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
        delegates::use_jit_token(&self.db, id, at).await
    }

    async fn remove_expired_jit_tokens(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        delegates::remove_expired_jit_tokens(&self.db, before).await
    }

    async fn renew_lease(&self) -> StoreResult<bool> {
        // No lease: the one manager's connections were forgotten when it opened the file.
        Ok(true)
    }

    // --- connectors --------------------------------------------------------------------

    async fn remove_silent_instances(&self, before: DateTime<Utc>, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>> {
        delegates::remove_silent_instances(&self.db, before, at).await
    }

    async fn remove_empty_groups(&self, before: DateTime<Utc>) -> StoreResult<Vec<GroupId>> {
        delegates::remove_empty_groups(&self.db, before).await
    }

    async fn create_connector(&self, connector: &Connector) -> StoreResult<()> {
        delegates::create_connector(&self.db, connector).await
    }

    async fn get_connector(&self, id: ConnectorId) -> StoreResult<Connector> {
        delegates::get_connector(&self.db, id).await
    }

    async fn list_connectors(&self, within: Option<&Scope>) -> StoreResult<Vec<Connector>> {
        delegates::list_connectors(&self.db, within).await
    }

    async fn update_connector(&self, connector: &Connector) -> StoreResult<()> {
        delegates::update_connector(&self.db, connector).await
    }

    async fn delete_connector(&self, id: ConnectorId) -> StoreResult<()> {
        delegates::delete_connector(&self.db, id).await
    }

    async fn record_last_success(&self, success: &LastSuccess) -> StoreResult<()> {
        delegates::record_last_success(&self.db, success).await
    }

    async fn last_success(&self, connector: ConnectorId) -> StoreResult<Option<LastSuccess>> {
        delegates::last_success(&self.db, connector).await
    }

    // --- tasks -----------------------------------------------------------------------

    async fn get_task(&self, id: TaskId) -> StoreResult<Task> {
        tasks::get_task(&self.db, id).await
    }

    async fn list_tasks(&self, query: &TaskQuery) -> StoreResult<Page<Task>> {
        tasks::list_tasks(&self.db, query).await
    }

    async fn queued_tasks(&self, account: Option<&Ident>, limit: u32) -> StoreResult<Vec<Task>> {
        tasks::queued_tasks(&self.db, account, limit).await
    }

    async fn queue_shapes(&self, query: &switchboard_store::QueueQuery) -> StoreResult<switchboard_store::QueueShapes> {
        tasks::queue_shapes(&self.db, query).await
    }

    async fn active_by_scope(&self) -> StoreResult<Vec<(Scope, u64)>> {
        tasks::active_by_scope(&self.db).await
    }

    async fn concurrency_held(&self, account: &Ident, key: &str) -> StoreResult<u32> {
        tasks::concurrency_held(&self.db, account, key).await
    }

    async fn queue_heads(&self, after: Option<&Scope>, shares: u32, rows: u32) -> StoreResult<Vec<Task>> {
        policy::queue_heads(&self.db, after, shares, rows).await
    }

    async fn set_scope_policy(&self, p: &ScopePolicy) -> StoreResult<()> {
        policy::set_scope_policy(&self.db, p).await
    }

    async fn delete_scope_policy(&self, scope: &Scope) -> StoreResult<()> {
        policy::delete_scope_policy(&self.db, scope).await
    }

    async fn scope_policies(&self, within: Option<&Scope>) -> StoreResult<Vec<ScopePolicy>> {
        policy::scope_policies(&self.db, within).await
    }

    async fn task_attempts(&self, task: TaskId) -> StoreResult<Vec<TaskAttempt>> {
        tasks::task_attempts(&self.db, task).await
    }

    async fn tasks_held_by(&self, instance: InstanceId) -> StoreResult<Vec<Task>> {
        deadlines::tasks_held_by(&self.db, instance).await
    }

    async fn due_tasks(&self, query: &DueQuery) -> StoreResult<DueTasks> {
        deadlines::due_tasks(&self.db, query).await
    }

    async fn extend_run_deadlines(&self, beats: &[(TaskId, Attempt, DateTime<Utc>)]) -> StoreResult<u64> {
        deadlines::extend_run_deadlines(&self.db, beats).await
    }

    // --- capability results ------------------------------------------------------------

    async fn record_capability_result(&self, result: &CapabilityResult) -> StoreResult<()> {
        tasks::record_capability_result(&self.db, result).await
    }

    async fn capability_results(&self, instances: &[InstanceId]) -> StoreResult<Vec<CapabilityResult>> {
        tasks::capability_results(&self.db, instances).await
    }

    // --- selection log -----------------------------------------------------------------

    async fn selection_log(&self, task: TaskId) -> StoreResult<Vec<SelectionLogEntry>> {
        tasks::selection_log(&self.db, task).await
    }

    async fn prune_selection_log(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        tasks::prune_selection_log(&self.db, before).await
    }

    // --- secrets -----------------------------------------------------------------------

    async fn create_secret(&self, secret: &TaskSecret) -> StoreResult<()> {
        secrets::create(&self.db, secret).await
    }

    async fn get_secret(&self, id: SecretId) -> StoreResult<TaskSecret> {
        secrets::get_one(&self.db, id).await
    }

    async fn list_secrets(&self, within: Option<&Scope>) -> StoreResult<Vec<TaskSecret>> {
        secrets::list(&self.db, within).await
    }

    async fn secrets_named(&self, account: &Ident, names: &[Ident]) -> StoreResult<Vec<TaskSecret>> {
        secrets::named(&self.db, account, names).await
    }

    async fn secrets_by_id(&self, ids: &[SecretId]) -> StoreResult<Vec<TaskSecret>> {
        secrets::by_id(&self.db, ids).await
    }

    async fn replace_secret(&self, secret: &TaskSecret) -> StoreResult<()> {
        secrets::replace(&self.db, secret).await
    }

    async fn delete_secret(&self, id: SecretId) -> StoreResult<()> {
        secrets::delete(&self.db, id).await
    }

    // --- task logs ---------------------------------------------------------------------

    async fn task_log(&self, task: TaskId, from: LogPosition, max_bytes: usize) -> StoreResult<Vec<LogChunk>> {
        logs::read(&self.db, task, from, max_bytes).await
    }

    async fn prune_task_logs(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        logs::prune(&self.db, before).await
    }

    // --- audit log ---------------------------------------------------------------------

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        audit::list_audit(&self.db, query).await
    }

    async fn prune_audit(&self, before: DateTime<Utc>) -> StoreResult<u64> {
        audit::prune_audit(&self.db, before).await
    }

    // --- API keys ----------------------------------------------------------------------

    async fn create_api_key(&self, key: &ApiKey, secret: &SecretHash) -> StoreResult<()> {
        keys::create_api_key(&self.db, key, secret).await
    }

    async fn api_key_by_secret(&self, secret: &SecretHash) -> StoreResult<Option<ApiKey>> {
        keys::api_key_by_secret(&self.db, secret).await
    }

    async fn list_api_keys(&self, within: Option<&Scope>) -> StoreResult<Vec<ApiKey>> {
        keys::list_api_keys(&self.db, within).await
    }

    async fn revoke_api_key(&self, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<ApiKey> {
        keys::revoke_api_key(&self.db, id, at).await
    }

    async fn bootstrap_admin_key(&self, candidate: &SecretHash, at: DateTime<Utc>) -> StoreResult<AdminKey> {
        keys::bootstrap_admin_key(&self.db, candidate, at).await
    }
}

#[async_trait]
impl switchboard_store::Replicas for SqliteStore {
    /// One manager owns an SQLite file (`open_exclusive`): there is nobody to tell.
    async fn publish(&self, _origin: uuid::Uuid, _events: &[switchboard_store::ClusterEvent]) -> StoreResult<()> {
        Ok(())
    }

    async fn subscribe(&self) -> StoreResult<Option<switchboard_store::ClusterSignals>> {
        Ok(None)
    }

    async fn lead(&self) -> StoreResult<bool> {
        // One manager per file (see `open_exclusive`): it always leads.
        Ok(true)
    }
}
