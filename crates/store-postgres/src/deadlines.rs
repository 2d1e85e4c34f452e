//! The task timers: what an instance holds, what is due, and heartbeats pushing run
//! deadlines forward.
//!
//! Each timer has its own partial index (migration 0003), holding only the tasks in the
//! state it applies to, ordered by when they fall due: a sweep reads the few due rows at
//! the front of each index, however many tasks are stored.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use switchboard_domain::{Attempt, InstanceId, Task, TaskId};
use switchboard_store::{DueQuery, DueTasks, StoreError, StoreResult};
use uuid::Uuid;

use crate::map_err;
use crate::rows::{self, TASK_COLUMNS, get};

pub(crate) async fn tasks_held_by(pool: &PgPool, instance: InstanceId) -> StoreResult<Vec<Task>> {
    // `instance_id` is set exactly while a task is assigned or running (a CHECK of the
    // schema), so the instance alone selects them, through `tasks_by_instance`.
    let sql = format!("SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = $1 ORDER BY assigned_at, id");
    let found = sqlx::query(&sql)
        .bind(instance.0)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    found.iter().map(rows::task).collect()
}

pub(crate) async fn due_tasks(pool: &PgPool, query: &DueQuery) -> StoreResult<DueTasks> {
    // One statement, so one round trip and one snapshot for the four timers. Each of the
    // first three branches is an ordered range scan of its partial index that stops after
    // `limit` rows; the fourth reads the instances whose heartbeat is too old (by their
    // heartbeat index, few in a healthy fleet) and their tasks (by `tasks_by_instance`).
    // The outer sort only orders those few (UNION ALL alone promises no order).
    let sql = format!(
        "SELECT * FROM (
             (SELECT 'expired' AS due, assign_deadline AS due_at, {TASK_COLUMNS} FROM tasks
              WHERE state = 'queued' AND assign_deadline < $1 ORDER BY assign_deadline, id LIMIT $3)
             UNION ALL
             (SELECT 'unacknowledged', assigned_at, {TASK_COLUMNS} FROM tasks
              WHERE state = 'assigned' AND assigned_at < $2 ORDER BY assigned_at, id LIMIT $3)
             UNION ALL
             (SELECT 'overrun', run_deadline, {TASK_COLUMNS} FROM tasks
              WHERE state = 'running' AND run_deadline < $1 ORDER BY run_deadline, id LIMIT $3)
             UNION ALL
             (SELECT 'lost', assigned_at, {TASK_COLUMNS} FROM tasks
              WHERE instance_id IN (SELECT id FROM delegate_instances WHERE last_heartbeat_at < $4)
              ORDER BY assigned_at, id LIMIT $3)
         ) AS due_tasks
         ORDER BY due_at, id"
    );
    let found = sqlx::query(&sql)
        .bind(query.now)
        .bind(query.unacknowledged_before)
        .bind(i64::from(query.limit))
        .bind(query.heartbeat_before)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    let mut due = DueTasks::default();
    for row in &found {
        let task = rows::task(row)?;
        match get::<String>(row, "due")?.as_str() {
            "expired" => due.expired.push(task),
            "unacknowledged" => due.unacknowledged.push(task),
            "overrun" => due.overrun.push(task),
            "lost" => due.lost.push(task),
            other => return Err(StoreError::Internal(format!("unknown timer {other:?}"))),
        }
    }
    Ok(due)
}

pub(crate) async fn extend_run_deadlines(
    pool: &PgPool,
    beats: &[(TaskId, Attempt, DateTime<Utc>)],
) -> StoreResult<u64> {
    if beats.is_empty() {
        return Ok(0);
    }
    let tasks: Vec<Uuid> = beats.iter().map(|(t, _, _)| t.0).collect();
    let attempts: Vec<i32> = beats
        .iter()
        .map(|(_, a, _)| i32::try_from(a.0).unwrap_or(i32::MAX))
        .collect();
    let ats: Vec<DateTime<Utc>> = beats.iter().map(|(_, _, at)| *at).collect();
    // The batch is grouped first: UPDATE ... FROM writes a row once even when several
    // batch rows match it, picking one arbitrarily, so duplicates must collapse to their
    // latest beat. The fence (attempt and state) is in the join, so a stale or finished
    // entry matches nothing; the last condition keeps a late, older beat from moving a
    // deadline back, and skips writing rows whose deadline would not change.
    // Locked first in id order, as the committer's batches lock tasks, so this waits for
    // a batch but never deadlocks with one.
    let mut tx = crate::begin(pool).await?;
    sqlx::query("SELECT id FROM tasks WHERE id = ANY($1) AND state = 'running' ORDER BY id FOR NO KEY UPDATE")
        .bind(&tasks)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let done = sqlx::query(
        "UPDATE tasks SET run_deadline = beats.at + tasks.execution_timeout_ms * interval '1 millisecond'
         FROM (SELECT t, a, max(at) AS at FROM unnest($1::uuid[], $2::int[], $3::timestamptz[]) AS u(t, a, at)
               GROUP BY t, a) AS beats
         WHERE tasks.id = beats.t AND tasks.attempt = beats.a AND tasks.state = 'running'
           AND tasks.run_deadline < beats.at + tasks.execution_timeout_ms * interval '1 millisecond'",
    )
    .bind(&tasks)
    .bind(&attempts)
    .bind(&ats)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(done.rows_affected())
}
