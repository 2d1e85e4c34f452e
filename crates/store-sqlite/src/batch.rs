//! A batch of task writes in one transaction (see `switchboard_store::batch`): one
//! `BEGIN IMMEDIATE`, reads of what the batch changes (`IN` lists), the plan (pure, shared
//! with the other backends), prepared single-row statements for what it writes (no round
//! trip to pay here, and sqlx caches each statement on the writer), one `COMMIT`: one
//! sync of the WAL for the whole batch.

use async_trait::async_trait;
use sqlx::{QueryBuilder, Row, Sqlite, SqliteConnection};
use switchboard_domain::{AuditEntry, ConnectorId, InstanceId, Task};
use switchboard_store::StoreResult;
use switchboard_store::batch::{self, Loaded, Plan, Precision, Slots, TaskWrite, Wanted, Written};
use switchboard_store::committer::BatchWriter;

use crate::rows::{self, TASK_COLUMNS, ms, scope_values, to_json};
use crate::{Db, map_err};

/// Ids per `IN` list, well under SQLite's limit of bound parameters.
const IN_LIST: usize = 500;

/// The batch writer of a [`crate::SqliteStore`].
#[derive(Debug)]
pub(crate) struct SqliteWriter {
    pub(crate) db: Db,
}

#[async_trait]
impl BatchWriter for SqliteWriter {
    async fn write_batch(&self, mut writes: Vec<TaskWrite>) -> StoreResult<Vec<StoreResult<Written>>> {
        let wanted = Wanted::of(&mut writes, Precision::Millis);
        // The committer runs each batch in a task of its own: nothing here is dropped
        // half-way (see `Db::write` for why that matters).
        let mut tx = self.db.write().await?;
        let loaded = load(&mut tx, &wanted).await?;
        let mut plan = batch::plan(&writes, loaded);
        if plan.is_empty() {
            tx.rollback().await.map_err(map_err)?;
            return Ok(plan.outcomes);
        }
        write(&mut tx, &mut plan).await?;
        tx.commit().await.map_err(map_err)?;
        Ok(plan.outcomes)
    }
}

async fn load(conn: &mut SqliteConnection, wanted: &Wanted) -> StoreResult<Loaded> {
    let mut loaded = Loaded::default();
    for (account, key) in &wanted.idempotency {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE account = ? AND idempotency_key = ?"
        ))
        .bind(account)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await
        .map_err(map_err)?;
        if let Some(row) = row {
            loaded
                .by_idempotency
                .insert((account.clone(), key.clone()), rows::task(&row)?);
        }
    }
    for ids in wanted.connectors.chunks(IN_LIST) {
        let mut q = QueryBuilder::<Sqlite>::new("SELECT id FROM connectors WHERE id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await.map_err(map_err)? {
            loaded
                .connectors
                .insert(ConnectorId(row.try_get("id").map_err(map_err)?));
        }
    }
    for ids in wanted.tasks.chunks(IN_LIST) {
        let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id IN ("));
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await.map_err(map_err)? {
            let task = rows::task(&row)?;
            loaded.tasks.insert(task.id(), task);
        }
    }
    let instances = wanted.instances(loaded.tasks.values());
    for ids in instances.chunks(IN_LIST) {
        let mut q =
            QueryBuilder::<Sqlite>::new("SELECT id, active_tasks, capacity FROM delegate_instances WHERE id IN (");
        let mut list = q.separated(", ");
        for id in ids {
            list.push_bind(id.0);
        }
        q.push(")");
        for row in q.build().fetch_all(&mut *conn).await.map_err(map_err)? {
            let count = |name: &str| -> StoreResult<u32> {
                Ok(u32::try_from(row.try_get::<i64, _>(name).map_err(map_err)?).unwrap_or_default())
            };
            let slots = Slots {
                active: count("active_tasks")?,
                capacity: count("capacity")?,
            };
            loaded
                .instances
                .insert(InstanceId(row.try_get("id").map_err(map_err)?), slots);
        }
    }
    Ok(loaded)
}

async fn write(conn: &mut SqliteConnection, plan: &mut Plan) -> StoreResult<()> {
    for task in &plan.inserts {
        insert_task(conn, task).await?;
    }
    for task in &plan.updates {
        update_task(conn, task).await?;
    }
    for (instance, delta) in &plan.slot_changes {
        sqlx::query("UPDATE delegate_instances SET active_tasks = MAX(active_tasks + ?, 0) WHERE id = ?")
            .bind(delta)
            .bind(instance.0)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?;
    }
    for a in &plan.new_attempts {
        sqlx::query(
            "INSERT INTO task_attempts (task_id, attempt, instance_id, assigned_at, acquired_at, ended_at, outcome) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(a.task.0)
        .bind(i64::from(a.attempt.0))
        .bind(a.instance.0)
        .bind(ms(a.assigned_at))
        .bind(a.acquired_at.map(ms))
        .bind(a.ended_at.map(ms))
        .bind(a.outcome.map(|o| o.as_str()))
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    for c in &plan.attempt_changes {
        sqlx::query(
            "UPDATE task_attempts SET acquired_at = COALESCE(?, acquired_at), ended_at = COALESCE(?, ended_at), \
             outcome = COALESCE(?, outcome) WHERE task_id = ? AND attempt = ?",
        )
        .bind(c.acquired_at.map(ms))
        .bind(c.ended_at.map(ms))
        .bind(c.outcome.map(|o| o.as_str()))
        .bind(c.task.0)
        .bind(i64::from(c.attempt.0))
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    for e in &plan.log {
        sqlx::query(
            "INSERT INTO selection_log (task_id, attempt, at, kind, summary, detail) VALUES (?, ?, ?, ?, ?, ?)",
        )
        .bind(e.task_id.0)
        .bind(i64::from(e.attempt.0))
        .bind(ms(e.at))
        .bind(e.kind.as_str())
        .bind(&e.summary)
        .bind(to_json(&e.detail)?)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    let mut ids = Vec::with_capacity(plan.audits.len());
    for e in &plan.audits {
        ids.push(insert_audit(conn, e).await?);
    }
    plan.number_audits(&ids);
    Ok(())
}

async fn insert_task(conn: &mut SqliteConnection, t: &Task) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&t.spec.scope);
    sqlx::query(
        "INSERT INTO tasks (id, account, org, project, scope_path, task_type, payload, selectors, connector_id, \
         capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate, \
         idempotency_key, idempotency_fingerprint, state, attempt, runs, instance_id, failure_reason, \
         failure_detail, result, progress, created_at, updated_at, assigned_at, started_at, finished_at, \
         assign_deadline, run_deadline) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(t.id().0)
    .bind(&account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(t.spec.task_type.as_str())
    .bind(to_json(&t.spec.payload)?)
    .bind(to_json(&t.spec.selectors)?)
    .bind(t.spec.connector_id.map(|c| c.0))
    .bind(to_json(&t.spec.capabilities)?)
    .bind(t.spec.priority)
    .bind(duration_ms(t.spec.assign_timeout))
    .bind(duration_ms(t.spec.execution_timeout))
    .bind(i64::from(t.spec.max_attempts))
    .bind(t.spec.wait_for_delegate)
    .bind(t.spec.idempotency.as_ref().map(|i| i.key.as_str()))
    .bind(t.spec.idempotency.as_ref().map(|i| i.fingerprint.as_str()))
    .bind(t.state.as_str())
    .bind(i64::from(t.attempt.0))
    .bind(i64::from(t.runs))
    .bind(t.instance_id.map(|i| i.0))
    .bind(t.failure.as_ref().map(|f| f.reason.as_str()))
    .bind(t.failure.as_ref().map(|f| f.detail.as_str()))
    .bind(t.result.as_ref().map(to_json).transpose()?)
    .bind(t.progress.as_ref().map(to_json).transpose()?)
    .bind(ms(t.spec.created_at))
    .bind(ms(t.updated_at))
    .bind(t.assigned_at.map(ms))
    .bind(t.started_at.map(ms))
    .bind(t.finished_at.map(ms))
    // The same sum as `Task::assign_deadline`, on the stored (millisecond) values.
    .bind(ms(t.spec.created_at).saturating_add(duration_ms(t.spec.assign_timeout)))
    .bind(t.run_deadline.map(ms))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn update_task(conn: &mut SqliteConnection, t: &Task) -> StoreResult<()> {
    sqlx::query(
        "UPDATE tasks SET state = ?, attempt = ?, runs = ?, instance_id = ?, failure_reason = ?, \
         failure_detail = ?, result = ?, progress = ?, updated_at = ?, assigned_at = ?, started_at = ?, \
         finished_at = ?, run_deadline = ? WHERE id = ?",
    )
    .bind(t.state.as_str())
    .bind(i64::from(t.attempt.0))
    .bind(i64::from(t.runs))
    .bind(t.instance_id.map(|i| i.0))
    .bind(t.failure.as_ref().map(|f| f.reason.as_str()))
    .bind(t.failure.as_ref().map(|f| f.detail.as_str()))
    .bind(t.result.as_ref().map(to_json).transpose()?)
    .bind(t.progress.as_ref().map(to_json).transpose()?)
    .bind(ms(t.updated_at))
    .bind(t.assigned_at.map(ms))
    .bind(t.started_at.map(ms))
    .bind(t.finished_at.map(ms))
    .bind(t.run_deadline.map(ms))
    .bind(t.id().0)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_audit(conn: &mut SqliteConnection, e: &AuditEntry) -> StoreResult<i64> {
    let (account, org, project, path) = match &e.key_scope {
        Some(s) => {
            let (a, o, p, path) = scope_values(s);
            (Some(a), o, p, Some(path))
        }
        None => (None, None, None, None),
    };
    let row = sqlx::query(
        "INSERT INTO audit_log (at, actor, key_id, account, org, project, scope_path, method, route, path, status, \
         remote) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
    )
    .bind(ms(e.at))
    .bind(&e.actor)
    .bind(e.key_id.map(|k| k.0))
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(&e.method)
    .bind(&e.route)
    .bind(&e.path)
    .bind(i64::from(e.status))
    .bind(&e.remote)
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    row.try_get("id").map_err(map_err)
}

fn duration_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}
