//! A batch of task writes in one transaction (see `switchboard_store::batch`): set-based
//! reads that lock what the batch changes, the plan (pure, shared with the other
//! backends), then at most two statements over arrays (`UNNEST`): the new tasks, and one
//! statement of `WITH` parts for everything else, so a batch costs the same few round
//! trips whether it touches one table or six.
//!
//! Locks are taken tasks first, then instances, each in id order: the order of every
//! other transaction here, so batches in flight together cannot deadlock with each
//! other. Tasks only claims name are locked with `SKIP LOCKED` (a task another replica is
//! claiming is not waited for), tasks only log entries name are not locked at all. A deadlock with a write outside the committer (heartbeats pushing deadlines,
//! which update many tasks in one statement) or a race with another replica on an
//! idempotency key rolls the batch back and plans it again, at most [`TRIES`] times.

use std::collections::HashSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder, Row};
use switchboard_domain::{ConnectorId, InstanceId, Task, TaskId};
use switchboard_store::batch::{self, Loaded, Plan, Precision, Slots, TaskWrite, Wanted, Written};
use switchboard_store::columns::{StoredPolicy, concurrency_key};
use switchboard_store::committer::BatchWriter;
use switchboard_store::{StoreError, StoreResult};
use uuid::Uuid;

use crate::map_err;
use crate::rows::{self, TASK_COLUMNS, scope_values};

/// How many times a batch is planned and written before its error is the answer.
const TRIES: usize = 3;

/// The batch writer of a [`crate::PgStore`].
#[derive(Debug)]
pub(crate) struct PgWriter {
    pub(crate) pool: PgPool,
}

#[async_trait]
impl BatchWriter for PgWriter {
    async fn write_batch(&self, mut writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>> {
        let wanted = Wanted::of(&mut writes, Precision::Micros);
        let mut tries = 0;
        loop {
            tries += 1;
            match attempt(&self.pool, &writes, &wanted).await {
                Ok(outcomes) => return Ok(outcomes),
                Err(Failure::Retry(why)) if tries < TRIES => {
                    tracing::debug!(%why, tries, "task batch rolled back; planning it again");
                }
                Err(Failure::Retry(why)) => return Err(StoreError::Unavailable(why)),
                Err(Failure::Store(e)) => return Err(e),
            }
        }
    }
}

/// Why one try of a batch failed.
enum Failure {
    /// Rolled back for a reason a new try can get past.
    Retry(String),
    Store(StoreError),
}

impl From<sqlx::Error> for Failure {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            // 40P01: deadlock detected; 40001: serialization failure.
            sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40P01" | "40001")) => {
                Failure::Retry(e.to_string())
            }
            _ => Failure::Store(map_err(e)),
        }
    }
}

impl From<StoreError> for Failure {
    fn from(e: StoreError) -> Self {
        Failure::Store(e)
    }
}

async fn attempt(pool: &PgPool, writes: &[TaskWrite], wanted: &Wanted) -> Result<Vec<StoreResult<Written>>, Failure> {
    // The committer runs each batch in a task of its own, so nothing here is dropped
    // half-way (see `crate::begin` for why that matters).
    let mut tx = pool.begin().await.map_err(map_err)?;
    let loaded = load(&mut tx, wanted).await?;
    let mut plan = batch::plan(writes, loaded);
    if plan.is_empty() {
        tx.rollback().await.map_err(map_err)?;
        return Ok(plan.outcomes);
    }
    write(&mut tx, &mut plan).await?;
    tx.commit().await?;
    Ok(plan.outcomes)
}

async fn load(conn: &mut PgConnection, wanted: &Wanted) -> Result<Loaded, Failure> {
    let mut loaded = Loaded::default();
    if !wanted.idempotency.is_empty() {
        let (accounts, keys): (Vec<&str>, Vec<&str>) =
            wanted.idempotency.iter().map(|(a, k)| (a.as_str(), k.as_str())).unzip();
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE (account, idempotency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))"
        );
        for row in sqlx::query(&sql)
            .bind(&accounts)
            .bind(&keys)
            .fetch_all(&mut *conn)
            .await?
        {
            let task = rows::task(&row)?;
            let key = task
                .spec
                .idempotency
                .as_ref()
                .map(|i| i.key.clone())
                .unwrap_or_default();
            loaded
                .by_idempotency
                .insert((task.spec.scope.account_id().to_string(), key), task);
        }
    }
    if !wanted.connectors.is_empty() {
        // KEY SHARE: the connector cannot be deleted before this batch commits.
        let ids: Vec<Uuid> = wanted.connectors.iter().map(|c| c.0).collect();
        let found: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM connectors WHERE id = ANY($1) FOR KEY SHARE")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
        loaded.connectors = found.into_iter().map(|(id,)| ConnectorId(id)).collect::<HashSet<_>>();
    }
    // NO KEY UPDATE: what a batch changes of a task is never its key, and this lock lets
    // foreign-key checks of other transactions (their log entries and attempts) through.
    if !wanted.tasks.is_empty() {
        let ids: Vec<Uuid> = wanted.tasks.iter().map(|t| t.0).collect();
        let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE");
        for row in sqlx::query(&sql).bind(&ids).fetch_all(&mut *conn).await? {
            let task = rows::task(&row)?;
            loaded.tasks.insert(task.id(), task);
        }
    }
    // Queued tasks that replicas' sweeps race to claim: one locked by another
    // transaction is being claimed (or ended) there, so it is skipped, not waited for.
    if !wanted.claimed.is_empty() {
        let ids: Vec<Uuid> = wanted.claimed.iter().map(|t| t.0).collect();
        let sql =
            format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE SKIP LOCKED");
        for row in sqlx::query(&sql).bind(&ids).fetch_all(&mut *conn).await? {
            let task = rows::task(&row)?;
            loaded.tasks.insert(task.id(), task);
        }
        // Absent or locked: tell them apart without waiting.
        let missing: Vec<Uuid> = ids
            .iter()
            .copied()
            .filter(|id| !loaded.tasks.contains_key(&TaskId(*id)))
            .collect();
        if !missing.is_empty() {
            let found: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM tasks WHERE id = ANY($1)")
                .bind(&missing)
                .fetch_all(&mut *conn)
                .await?;
            loaded.busy = found.into_iter().map(|(id,)| TaskId(id)).collect();
        }
    }
    if !wanted.logged.is_empty() {
        let ids: Vec<Uuid> = wanted.logged.iter().map(|t| t.0).collect();
        let found: Vec<(Uuid,)> = sqlx::query_as("SELECT id FROM tasks WHERE id = ANY($1)")
            .bind(&ids)
            .fetch_all(&mut *conn)
            .await?;
        loaded.exist = found.into_iter().map(|(id,)| TaskId(id)).collect();
    }
    let instances = wanted.instances(loaded.tasks.values());
    if !instances.is_empty() {
        let ids: Vec<Uuid> = instances.iter().map(|i| i.0).collect();
        let found = sqlx::query(
            "SELECT id, active_tasks, capacity, draining, max_tasks - tasks_taken AS tasks_left
             FROM delegate_instances WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in found {
            let slots = Slots {
                active: u32::try_from(row.try_get::<i32, _>("active_tasks")?).unwrap_or_default(),
                capacity: u32::try_from(row.try_get::<i32, _>("capacity")?).unwrap_or_default(),
                taking: !row.try_get::<bool, _>("draining")?,
                tasks_left: row
                    .try_get::<Option<i32>, _>("tasks_left")?
                    .map(|n| u32::try_from(n).unwrap_or_default()),
            };
            loaded.instances.insert(InstanceId(row.try_get("id")?), slots);
        }
    }
    let keys = wanted.concurrency_keys(loaded.tasks.values());
    if !keys.is_empty() {
        lock_keys(conn, &keys).await?;
        // Counted after the locks are held: a snapshot taken now sees every claim of the
        // keys committed before them (READ COMMITTED takes one per statement).
        loaded.held_by_key = crate::tasks::held_by_keys(&mut *conn, &keys).await?;
    }
    if !wanted.superseding.is_empty() {
        let (accounts, names): (Vec<&str>, Vec<&str>) =
            wanted.superseding.iter().map(|(a, k)| (a.as_str(), k.as_str())).unzip();
        // Without waiting: a waiting task locked elsewhere is being claimed or ended there.
        let sql = format!(
            "SELECT {TASK_COLUMNS} FROM tasks
             WHERE concurrency_key IS NOT NULL AND state = 'queued'
               AND (account, concurrency_key) IN (SELECT * FROM unnest($1::text[], $2::text[]))
             ORDER BY id FOR NO KEY UPDATE SKIP LOCKED"
        );
        for row in sqlx::query(&sql)
            .bind(&accounts)
            .bind(&names)
            .fetch_all(&mut *conn)
            .await?
        {
            let task = rows::task(&row)?;
            if let Some(key) = switchboard_store::columns::concurrency_key(&task) {
                let key = (task.spec.scope.account_id().to_string(), key.to_owned());
                loaded.waiting_by_key.entry(key).or_default().push(task.id());
            }
            loaded.tasks.entry(task.id()).or_insert(task);
        }
        for key in &wanted.superseding {
            loaded.waiting_by_key.entry(key.clone()).or_default();
        }
    }
    Ok(loaded)
}

/// Takes, in order, a transaction-scoped advisory lock per `(account, key)` of
/// concurrency key: two replicas claiming tasks of one key take turns, each counting what
/// the other committed. The lock is a 64-bit hash of the pair in a class of its own
/// (two 32-bit halves can collide only with another key's lock, which only makes two
/// keys take turns). Taken after the task and instance locks, in sorted order by every
/// transaction, so they cannot deadlock.
async fn lock_keys(conn: &mut PgConnection, keys: &[(String, String)]) -> Result<(), Failure> {
    let mut ids: Vec<i64> = keys.iter().map(|(a, k)| key_lock_id(a, k)).collect();
    ids.sort_unstable();
    ids.dedup();
    sqlx::query("SELECT pg_advisory_xact_lock(id) FROM unnest($1::bigint[]) AS u(id)")
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
    Ok(())
}

/// The advisory lock of a concurrency key: FNV-1a over the account, a separator and the
/// key, so that the id is the same on every replica and release.
fn key_lock_id(account: &str, key: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in account.bytes().chain([0u8]).chain(key.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

async fn write(conn: &mut PgConnection, plan: &mut Plan) -> Result<(), Failure> {
    // New tasks first, on their own: it is the one statement an idempotency race with
    // another replica can refuse, and the rest of the batch may refer to these rows.
    if !plan.inserts.is_empty() {
        insert_tasks(conn, &plan.inserts).await?;
    }
    let audits = write_the_rest(conn, plan).await?;
    if !plan.audits.is_empty() {
        plan.number_audits(&audits);
    }
    if !plan.log_appends.is_empty() {
        crate::logs::write_appends(conn, plan).await?;
    }
    Ok(())
}

/// Everything else the batch writes, in one statement of data-modifying `WITH` parts (one
/// round trip however many tables it touches): task updates, slot counters, attempts, log
/// entries, audit rows. The parts share one snapshot and cannot see each other's rows,
/// which is safe because the plan touches each row once (a changed task is in `updates`
/// or in `inserts`, never both; changes of an attempt inserted by the batch are folded
/// into its insert). Returns the new audit rows' ids in ascending order.
async fn write_the_rest(conn: &mut PgConnection, plan: &Plan) -> Result<Vec<i64>, Failure> {
    let mut q = Parts::default();
    if !plan.updates.is_empty() {
        update_tasks(q.part("updated"), &plan.updates);
    }
    if !plan.slot_changes.is_empty() || !plan.taken.is_empty() {
        // One update per instance row: two parts of one statement must not change the same
        // row (PostgreSQL applies only one of them), so the active count and the count of
        // tasks taken move together.
        let mut rows: std::collections::BTreeMap<Uuid, (i32, i32)> = std::collections::BTreeMap::new();
        for (id, delta) in &plan.slot_changes {
            rows.entry(id.0).or_default().0 = *delta as i32;
        }
        for (id, n) in &plan.taken {
            rows.entry(id.0).or_default().1 = *n as i32;
        }
        let ids: Vec<Uuid> = rows.keys().copied().collect();
        let deltas: Vec<i32> = rows.values().map(|(d, _)| *d).collect();
        let taken: Vec<i32> = rows.values().map(|(_, n)| *n).collect();
        let b = q.part("slots");
        b.push(
            "UPDATE delegate_instances AS d SET active_tasks = GREATEST(d.active_tasks + u.delta, 0),
                 tasks_taken = d.tasks_taken + u.taken FROM unnest(",
        );
        b.push_bind(ids)
            .push("::uuid[], ")
            .push_bind(deltas)
            .push("::int[], ")
            .push_bind(taken);
        b.push("::int[]) AS u(id, delta, taken) WHERE d.id = u.id RETURNING 1");
    }
    if !plan.new_attempts.is_empty() {
        let a = &plan.new_attempts;
        let b = q.part("new_attempts");
        b.push(
            "INSERT INTO task_attempts (task_id, attempt, instance_id, assigned_at, acquired_at, ended_at, outcome,
                 failure, retry_at)
             SELECT * FROM unnest(",
        );
        b.push_bind(a.iter().map(|r| r.task.0).collect::<Vec<_>>())
            .push("::uuid[], ");
        b.push_bind(a.iter().map(|r| r.attempt.0 as i32).collect::<Vec<_>>())
            .push("::int[], ");
        b.push_bind(a.iter().map(|r| r.instance.0).collect::<Vec<_>>())
            .push("::uuid[], ");
        b.push_bind(a.iter().map(|r| r.assigned_at).collect::<Vec<_>>())
            .push("::timestamptz[], ");
        b.push_bind(a.iter().map(|r| r.acquired_at).collect::<Vec<_>>())
            .push("::timestamptz[], ");
        b.push_bind(a.iter().map(|r| r.ended_at).collect::<Vec<_>>())
            .push("::timestamptz[], ");
        b.push_bind(a.iter().map(|r| r.outcome.map(|o| o.as_str())).collect::<Vec<_>>())
            .push("::text[], ");
        b.push_bind(a.iter().map(|r| r.failure.as_ref().map(Json)).collect::<Vec<_>>())
            .push("::jsonb[], ");
        b.push_bind(a.iter().map(|r| r.retry_at).collect::<Vec<_>>());
        b.push("::timestamptz[]) RETURNING 1");
    }
    if !plan.attempt_changes.is_empty() {
        let c = &plan.attempt_changes;
        let b = q.part("attempt_changes");
        b.push(
            "UPDATE task_attempts AS a SET acquired_at = COALESCE(u.acquired_at, a.acquired_at),
                 ended_at = COALESCE(u.ended_at, a.ended_at), outcome = COALESCE(u.outcome, a.outcome),
                 failure = COALESCE(u.failure, a.failure), retry_at = COALESCE(u.retry_at, a.retry_at)
             FROM unnest(",
        );
        b.push_bind(c.iter().map(|r| r.task.0).collect::<Vec<_>>())
            .push("::uuid[], ");
        b.push_bind(c.iter().map(|r| r.attempt.0 as i32).collect::<Vec<_>>())
            .push("::int[], ");
        b.push_bind(c.iter().map(|r| r.acquired_at).collect::<Vec<_>>())
            .push("::timestamptz[], ");
        b.push_bind(c.iter().map(|r| r.ended_at).collect::<Vec<_>>())
            .push("::timestamptz[], ");
        b.push_bind(c.iter().map(|r| r.outcome.map(|o| o.as_str())).collect::<Vec<_>>())
            .push("::text[], ");
        b.push_bind(c.iter().map(|r| r.failure.as_ref().map(Json)).collect::<Vec<_>>())
            .push("::jsonb[], ");
        b.push_bind(c.iter().map(|r| r.retry_at).collect::<Vec<_>>());
        b.push(
            "::timestamptz[]) AS u(task_id, attempt, acquired_at, ended_at, outcome, failure, retry_at)
             WHERE a.task_id = u.task_id AND a.attempt = u.attempt RETURNING 1",
        );
    }
    if !plan.log.is_empty() {
        let e = &plan.log;
        let b = q.part("logged");
        // WITH ORDINALITY keeps the entries in the given order.
        b.push("INSERT INTO selection_log (task_id, attempt, at, kind, summary, detail) SELECT t, a, at, k, s, d FROM unnest(");
        b.push_bind(e.iter().map(|e| e.task_id.0).collect::<Vec<_>>())
            .push("::uuid[], ");
        b.push_bind(e.iter().map(|e| e.attempt.0 as i32).collect::<Vec<_>>())
            .push("::int[], ");
        b.push_bind(e.iter().map(|e| e.at).collect::<Vec<_>>())
            .push("::timestamptz[], ");
        b.push_bind(e.iter().map(|e| e.kind.as_str()).collect::<Vec<_>>())
            .push("::text[], ");
        b.push_bind(e.iter().map(|e| e.summary.as_str()).collect::<Vec<_>>())
            .push("::text[], ");
        b.push_bind(e.iter().map(|e| Json(&e.detail)).collect::<Vec<_>>());
        b.push("::jsonb[]) WITH ORDINALITY AS u(t, a, at, k, s, d, n) ORDER BY n RETURNING 1");
    }
    if !plan.audits.is_empty() {
        insert_audits(q.part("audited"), &plan.audits);
    }
    let Some(mut b) = q.finish(!plan.audits.is_empty()) else {
        return Ok(Vec::new());
    };
    let row = b.build().fetch_one(&mut *conn).await?;
    let mut ids: Vec<i64> = row.try_get::<Option<Vec<i64>>, _>(0)?.unwrap_or_default();
    ids.sort_unstable();
    Ok(ids)
}

/// One statement made of `WITH` parts, each a data-modifying statement ending in
/// `RETURNING`; the builder numbers the parameters across all of them.
struct Parts<'a> {
    q: QueryBuilder<'a, Postgres>,
    count: usize,
}

impl Default for Parts<'_> {
    fn default() -> Self {
        Self {
            q: QueryBuilder::new(""),
            count: 0,
        }
    }
}

impl<'a> Parts<'a> {
    /// Opens the part `name`; the caller pushes its statement (closed by [`Parts::finish`]
    /// or the next part).
    fn part(&mut self, name: &str) -> &mut QueryBuilder<'a, Postgres> {
        self.q.push(if self.count == 0 { "WITH " } else { "), " });
        self.count += 1;
        self.q.push(name).push(" AS (");
        &mut self.q
    }

    /// The whole statement, selecting the `audited` part's ids when `audited`; `None`
    /// when no part was opened.
    fn finish(mut self, audited: bool) -> Option<QueryBuilder<'a, Postgres>> {
        if self.count == 0 {
            return None;
        }
        self.q.push(if audited {
            ") SELECT array(SELECT id FROM audited)"
        } else {
            ") SELECT NULL::bigint[]"
        });
        Some(self.q)
    }
}

async fn insert_tasks(conn: &mut PgConnection, tasks: &[Task]) -> Result<(), Failure> {
    let scopes: Vec<_> = tasks.iter().map(|t| scope_values(&t.spec.scope)).collect();
    let sql = "INSERT INTO tasks (id, account, org, project, scope_path, task_type, payload, selectors, connector_id,
             capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate,
             idempotency_key, idempotency_fingerprint, state, attempt, runs, instance_id, failure_reason,
             failure_detail, result, progress, created_at, updated_at, assigned_at, started_at, finished_at,
             assign_deadline, run_deadline, queue_key, concurrency_key, policy, retry_at, failure_code,
             failure_retryable)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
             $8::jsonb[], $9::uuid[], $10::jsonb[], $11::int[], $12::bigint[], $13::bigint[], $14::int[],
             $15::bool[], $16::text[], $17::text[], $18::text[], $19::int[], $20::int[], $21::uuid[], $22::text[],
             $23::text[], $24::jsonb[], $25::jsonb[], $26::timestamptz[], $27::timestamptz[], $28::timestamptz[],
             $29::timestamptz[], $30::timestamptz[], $31::timestamptz[], $32::timestamptz[], $33::bigint[],
             $34::text[], $35::jsonb[], $36::timestamptz[], $37::text[], $38::bool[])
         ON CONFLICT (account, idempotency_key) DO NOTHING";
    let done = sqlx::query(sql)
        .bind(tasks.iter().map(|t| t.id().0).collect::<Vec<_>>())
        .bind(scopes.iter().map(|s| s.0.as_str()).collect::<Vec<_>>())
        .bind(scopes.iter().map(|s| s.1.as_deref()).collect::<Vec<_>>())
        .bind(scopes.iter().map(|s| s.2.as_deref()).collect::<Vec<_>>())
        .bind(scopes.iter().map(|s| s.3.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.spec.task_type.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| Json(&t.spec.payload)).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| Json(&t.spec.selectors)).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| t.spec.connector_id.map(|c| c.0))
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(|t| Json(&t.spec.capabilities)).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.spec.priority).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| millis(t.spec.assign_timeout)).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| millis(t.spec.execution_timeout))
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(|t| t.spec.max_attempts as i32).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.spec.wait_for_delegate).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| t.spec.idempotency.as_ref().map(|i| i.key.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            tasks
                .iter()
                .map(|t| t.spec.idempotency.as_ref().map(|i| i.fingerprint.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(|t| t.state.as_str()).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.attempt.0 as i32).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.runs as i32).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.instance_id.map(|i| i.0)).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| t.failure.as_ref().map(|f| f.reason.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            tasks
                .iter()
                .map(|t| t.failure.as_ref().map(|f| f.detail.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(|t| t.result.as_ref().map(Json)).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.progress.as_ref().map(Json)).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.spec.created_at).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.updated_at).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.assigned_at).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.started_at).collect::<Vec<_>>())
        .bind(tasks.iter().map(|t| t.finished_at).collect::<Vec<_>>())
        .bind(tasks.iter().map(Task::assign_deadline).collect::<Vec<DateTime<Utc>>>())
        .bind(tasks.iter().map(|t| t.run_deadline).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| switchboard_domain::task::queue_key(t.spec.created_at, t.spec.priority))
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(concurrency_key).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| StoredPolicy::of(&t.spec).map(Json))
                .collect::<Vec<_>>(),
        )
        .bind(tasks.iter().map(|t| t.retry_at).collect::<Vec<_>>())
        .bind(
            tasks
                .iter()
                .map(|t| t.failure.as_ref().and_then(|f| f.code.as_deref()))
                .collect::<Vec<_>>(),
        )
        .bind(
            tasks
                .iter()
                .map(|t| t.failure.as_ref().is_none_or(|f| f.retryable))
                .collect::<Vec<_>>(),
        )
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != tasks.len() as u64 {
        // Another replica stored a task under one of these idempotency keys after this
        // batch looked: plan again, and the new task is that one's replay.
        return Err(Failure::Retry("an idempotency key was taken meanwhile".into()));
    }
    Ok(())
}

/// The `UPDATE` of changed tasks, as a part of [`write_the_rest`].
fn update_tasks<'a>(b: &mut QueryBuilder<'a, Postgres>, tasks: &'a [Task]) {
    b.push(
        "UPDATE tasks AS t SET state = u.state, attempt = u.attempt, runs = u.runs, instance_id = u.instance_id,
             failure_reason = u.failure_reason, failure_detail = u.failure_detail, result = u.result,
             progress = u.progress, updated_at = u.updated_at, assigned_at = u.assigned_at,
             started_at = u.started_at, finished_at = u.finished_at, run_deadline = u.run_deadline,
             retry_at = u.retry_at, assign_deadline = u.assign_deadline, failure_code = u.failure_code,
             failure_retryable = u.failure_retryable
         FROM unnest(",
    );
    b.push_bind(tasks.iter().map(|t| t.id().0).collect::<Vec<_>>())
        .push("::uuid[], ");
    b.push_bind(tasks.iter().map(|t| t.state.as_str()).collect::<Vec<_>>())
        .push("::text[], ");
    b.push_bind(tasks.iter().map(|t| t.attempt.0 as i32).collect::<Vec<_>>())
        .push("::int[], ");
    b.push_bind(tasks.iter().map(|t| t.runs as i32).collect::<Vec<_>>())
        .push("::int[], ");
    b.push_bind(tasks.iter().map(|t| t.instance_id.map(|i| i.0)).collect::<Vec<_>>())
        .push("::uuid[], ");
    b.push_bind(
        tasks
            .iter()
            .map(|t| t.failure.as_ref().map(|f| f.reason.as_str()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(
        tasks
            .iter()
            .map(|t| t.failure.as_ref().map(|f| f.detail.as_str()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(tasks.iter().map(|t| t.result.as_ref().map(Json)).collect::<Vec<_>>())
        .push("::jsonb[], ");
    b.push_bind(tasks.iter().map(|t| t.progress.as_ref().map(Json)).collect::<Vec<_>>())
        .push("::jsonb[], ");
    b.push_bind(tasks.iter().map(|t| t.updated_at).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(tasks.iter().map(|t| t.assigned_at).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(tasks.iter().map(|t| t.started_at).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(tasks.iter().map(|t| t.finished_at).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(tasks.iter().map(|t| t.run_deadline).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(tasks.iter().map(|t| t.retry_at).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(tasks.iter().map(Task::assign_deadline).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(
        tasks
            .iter()
            .map(|t| t.failure.as_ref().and_then(|f| f.code.as_deref()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(
        tasks
            .iter()
            .map(|t| t.failure.as_ref().is_none_or(|f| f.retryable))
            .collect::<Vec<_>>(),
    )
    .push("::bool[]");
    b.push(
        ") AS u(id, state, attempt, runs, instance_id, failure_reason, failure_detail, result, progress,
               updated_at, assigned_at, started_at, finished_at, run_deadline, retry_at, assign_deadline,
               failure_code, failure_retryable)
         WHERE t.id = u.id RETURNING 1",
    );
}

/// The `INSERT` of audit rows, as a part of [`write_the_rest`]: one statement draws
/// their ids from the identity in the order it inserts, which `ORDER BY n` makes the
/// given order, so the ids in ascending order are the entries' in order.
fn insert_audits<'a>(b: &mut QueryBuilder<'a, Postgres>, entries: &'a [switchboard_domain::AuditEntry]) {
    let scopes: Vec<_> = entries.iter().map(|e| e.key_scope.as_ref().map(scope_values)).collect();
    b.push(
        "INSERT INTO audit_log (at, actor, key_id, account, org, project, scope_path, method, route, path, status,
             remote)
         SELECT at, actor, key_id, account, org, project, scope_path, method, route, path, status, remote
         FROM unnest(",
    );
    b.push_bind(entries.iter().map(|e| e.at).collect::<Vec<_>>())
        .push("::timestamptz[], ");
    b.push_bind(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
        .push("::text[], ");
    b.push_bind(entries.iter().map(|e| e.key_id.map(|k| k.0)).collect::<Vec<_>>())
        .push("::uuid[], ");
    b.push_bind(
        scopes
            .iter()
            .map(|s| s.as_ref().map(|s| s.0.clone()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(
        scopes
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.1.clone()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(
        scopes
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.2.clone()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(
        scopes
            .iter()
            .map(|s| s.as_ref().map(|s| s.3.clone()))
            .collect::<Vec<_>>(),
    )
    .push("::text[], ");
    b.push_bind(entries.iter().map(|e| e.method.as_str()).collect::<Vec<_>>())
        .push("::text[], ");
    b.push_bind(entries.iter().map(|e| e.route.as_str()).collect::<Vec<_>>())
        .push("::text[], ");
    b.push_bind(entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>())
        .push("::text[], ");
    b.push_bind(entries.iter().map(|e| i32::from(e.status)).collect::<Vec<_>>())
        .push("::int[], ");
    b.push_bind(entries.iter().map(|e| e.remote.as_deref()).collect::<Vec<_>>())
        .push("::text[]");
    b.push(
        ") WITH ORDINALITY AS u(at, actor, key_id, account, org, project, scope_path, method, route, path,
                                status, remote, n)
         ORDER BY n
         RETURNING id",
    );
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
