//! A batch of task writes in one transaction (see `switchboard_store::batch`): four
//! set-based reads that lock what the batch changes, the plan (pure, shared with the
//! other backends), then one multi-row statement per table over arrays (`UNNEST`).
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
use sqlx::{PgConnection, PgPool, Row};
use switchboard_domain::{ConnectorId, InstanceId, Task, TaskId};
use switchboard_store::batch::{self, Loaded, Plan, Precision, Slots, TaskWrite, Wanted, Written};
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
            "SELECT id, active_tasks, capacity FROM delegate_instances WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        )
        .bind(&ids)
        .fetch_all(&mut *conn)
        .await?;
        for row in found {
            let slots = Slots {
                active: u32::try_from(row.try_get::<i32, _>("active_tasks")?).unwrap_or_default(),
                capacity: u32::try_from(row.try_get::<i32, _>("capacity")?).unwrap_or_default(),
            };
            loaded.instances.insert(InstanceId(row.try_get("id")?), slots);
        }
    }
    Ok(loaded)
}

async fn write(conn: &mut PgConnection, plan: &mut Plan) -> Result<(), Failure> {
    if !plan.inserts.is_empty() {
        insert_tasks(conn, &plan.inserts).await?;
    }
    if !plan.updates.is_empty() {
        update_tasks(conn, &plan.updates).await?;
    }
    if !plan.slot_changes.is_empty() {
        let ids: Vec<Uuid> = plan.slot_changes.iter().map(|(i, _)| i.0).collect();
        let deltas: Vec<i32> = plan.slot_changes.iter().map(|(_, d)| *d as i32).collect();
        sqlx::query(
            "UPDATE delegate_instances AS d SET active_tasks = GREATEST(d.active_tasks + u.delta, 0)
             FROM unnest($1::uuid[], $2::int[]) AS u(id, delta) WHERE d.id = u.id",
        )
        .bind(&ids)
        .bind(&deltas)
        .execute(&mut *conn)
        .await?;
    }
    if !plan.new_attempts.is_empty() {
        let a = &plan.new_attempts;
        sqlx::query(
            "INSERT INTO task_attempts (task_id, attempt, instance_id, assigned_at, acquired_at, ended_at, outcome)
             SELECT * FROM unnest($1::uuid[], $2::int[], $3::uuid[], $4::timestamptz[], $5::timestamptz[],
                                  $6::timestamptz[], $7::text[])",
        )
        .bind(a.iter().map(|r| r.task.0).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.attempt.0 as i32).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.instance.0).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.assigned_at).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.acquired_at).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.ended_at).collect::<Vec<_>>())
        .bind(a.iter().map(|r| r.outcome.map(|o| o.as_str())).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !plan.attempt_changes.is_empty() {
        let c = &plan.attempt_changes;
        sqlx::query(
            "UPDATE task_attempts AS a SET acquired_at = COALESCE(u.acquired_at, a.acquired_at),
                 ended_at = COALESCE(u.ended_at, a.ended_at), outcome = COALESCE(u.outcome, a.outcome)
             FROM unnest($1::uuid[], $2::int[], $3::timestamptz[], $4::timestamptz[], $5::text[])
                  AS u(task_id, attempt, acquired_at, ended_at, outcome)
             WHERE a.task_id = u.task_id AND a.attempt = u.attempt",
        )
        .bind(c.iter().map(|r| r.task.0).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.attempt.0 as i32).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.acquired_at).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.ended_at).collect::<Vec<_>>())
        .bind(c.iter().map(|r| r.outcome.map(|o| o.as_str())).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
    }
    if !plan.log.is_empty() {
        crate::tasks::insert_selection_log(&mut *conn, &plan.log).await?;
    }
    if !plan.audits.is_empty() {
        let ids = insert_audits(conn, &plan.audits).await?;
        plan.number_audits(&ids);
    }
    Ok(())
}

async fn insert_tasks(conn: &mut PgConnection, tasks: &[Task]) -> Result<(), Failure> {
    let scopes: Vec<_> = tasks.iter().map(|t| scope_values(&t.spec.scope)).collect();
    let sql = "INSERT INTO tasks (id, account, org, project, scope_path, task_type, payload, selectors, connector_id,
             capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate,
             idempotency_key, idempotency_fingerprint, state, attempt, runs, instance_id, failure_reason,
             failure_detail, result, progress, created_at, updated_at, assigned_at, started_at, finished_at,
             assign_deadline, run_deadline)
         SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[],
             $8::jsonb[], $9::uuid[], $10::jsonb[], $11::int[], $12::bigint[], $13::bigint[], $14::int[],
             $15::bool[], $16::text[], $17::text[], $18::text[], $19::int[], $20::int[], $21::uuid[], $22::text[],
             $23::text[], $24::jsonb[], $25::jsonb[], $26::timestamptz[], $27::timestamptz[], $28::timestamptz[],
             $29::timestamptz[], $30::timestamptz[], $31::timestamptz[], $32::timestamptz[])
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
        .execute(&mut *conn)
        .await?;
    if done.rows_affected() != tasks.len() as u64 {
        // Another replica stored a task under one of these idempotency keys after this
        // batch looked: plan again, and the new task is that one's replay.
        return Err(Failure::Retry("an idempotency key was taken meanwhile".into()));
    }
    Ok(())
}

async fn update_tasks(conn: &mut PgConnection, tasks: &[Task]) -> Result<(), Failure> {
    sqlx::query(
        "UPDATE tasks AS t SET state = u.state, attempt = u.attempt, runs = u.runs, instance_id = u.instance_id,
             failure_reason = u.failure_reason, failure_detail = u.failure_detail, result = u.result,
             progress = u.progress, updated_at = u.updated_at, assigned_at = u.assigned_at,
             started_at = u.started_at, finished_at = u.finished_at, run_deadline = u.run_deadline
         FROM unnest($1::uuid[], $2::text[], $3::int[], $4::int[], $5::uuid[], $6::text[], $7::text[], $8::jsonb[],
                     $9::jsonb[], $10::timestamptz[], $11::timestamptz[], $12::timestamptz[], $13::timestamptz[],
                     $14::timestamptz[])
              AS u(id, state, attempt, runs, instance_id, failure_reason, failure_detail, result, progress,
                   updated_at, assigned_at, started_at, finished_at, run_deadline)
         WHERE t.id = u.id",
    )
    .bind(tasks.iter().map(|t| t.id().0).collect::<Vec<_>>())
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
    .bind(tasks.iter().map(|t| t.updated_at).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.assigned_at).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.started_at).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.finished_at).collect::<Vec<_>>())
    .bind(tasks.iter().map(|t| t.run_deadline).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Inserts the audit rows in order; their ids, in the same order.
async fn insert_audits(
    conn: &mut PgConnection,
    entries: &[switchboard_domain::AuditEntry],
) -> Result<Vec<i64>, Failure> {
    let scopes: Vec<_> = entries.iter().map(|e| e.key_scope.as_ref().map(scope_values)).collect();
    let rows = sqlx::query(
        "INSERT INTO audit_log (at, actor, key_id, account, org, project, scope_path, method, route, path, status,
             remote)
         SELECT at, actor, key_id, account, org, project, scope_path, method, route, path, status, remote
         FROM unnest($1::timestamptz[], $2::text[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::text[],
                     $8::text[], $9::text[], $10::text[], $11::int[], $12::text[])
              WITH ORDINALITY AS u(at, actor, key_id, account, org, project, scope_path, method, route, path,
                                   status, remote, n)
         ORDER BY n
         RETURNING id",
    )
    .bind(entries.iter().map(|e| e.at).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.actor.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.key_id.map(|k| k.0)).collect::<Vec<_>>())
    .bind(
        scopes
            .iter()
            .map(|s| s.as_ref().map(|s| s.0.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(
        scopes
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.1.as_deref()))
            .collect::<Vec<_>>(),
    )
    .bind(
        scopes
            .iter()
            .map(|s| s.as_ref().and_then(|s| s.2.as_deref()))
            .collect::<Vec<_>>(),
    )
    .bind(
        scopes
            .iter()
            .map(|s| s.as_ref().map(|s| s.3.as_str()))
            .collect::<Vec<_>>(),
    )
    .bind(entries.iter().map(|e| e.method.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.route.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.path.as_str()).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| i32::from(e.status)).collect::<Vec<_>>())
    .bind(entries.iter().map(|e| e.remote.as_deref()).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    // One statement draws its ids from the identity in the order it inserts, which
    // `ORDER BY n` makes the given order.
    let mut ids = rows
        .iter()
        .map(|r| r.try_get::<i64, _>("id"))
        .collect::<Result<Vec<_>, _>>()?;
    ids.sort_unstable();
    Ok(ids)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
