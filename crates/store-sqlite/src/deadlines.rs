//! The task timers: what an instance holds, what is due, and heartbeats pushing run
//! deadlines forward.
//!
//! Each timer has its own partial index (migration 0003), holding only the tasks in the
//! state it applies to, ordered by when they fall due: a sweep reads the few due rows at
//! the front of each index, however many tasks are stored. SQLite only uses a partial
//! index when the query names its condition literally, hence `state = 'queued'` and not a
//! bound state.

use chrono::{DateTime, Utc};
use switchboard_domain::{Attempt, InstanceId, Task, TaskId};
use switchboard_store::{DueQuery, DueTasks, StoreError, StoreResult};

use crate::rows::{self, TASK_COLUMNS, get, ms, to_json};
use crate::{Db, map_err};

pub(crate) async fn tasks_held_by(db: &Db, instance: InstanceId) -> StoreResult<Vec<Task>> {
    // `instance_id` is set exactly while a task is assigned or running (a CHECK of the
    // schema), so the instance alone selects them, through `tasks_by_instance`.
    let found = sqlx::query(&format!(
        "SELECT {TASK_COLUMNS} FROM tasks WHERE instance_id = ? ORDER BY assigned_at, id"
    ))
    .bind(instance.0)
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    found.iter().map(rows::task).collect()
}

pub(crate) async fn due_tasks(db: &Db, query: &DueQuery) -> StoreResult<DueTasks> {
    // One statement, so one snapshot for the four timers (the fourth, tasks held by an
    // instance whose heartbeat is too old, reads those few instances by their heartbeat
    // index and their tasks by `tasks_by_instance`). Each branch is an ordered range
    // scan of its partial index that stops after `limit` rows (a subquery, since a
    // compound SELECT allows only one ORDER BY and LIMIT); the outer sort only orders
    // those few. INDEXED BY, because without `ANALYZE` statistics (the store never
    // gathers them) SQLite prefers `tasks_by_state` and sorts every task in the state;
    // it also makes the statement fail loudly should an index ever become unusable.
    let found = sqlx::query(&format!(
        "SELECT * FROM (SELECT 'expired' AS due, assign_deadline AS due_at, {TASK_COLUMNS} \
             FROM tasks INDEXED BY tasks_assign_due \
             WHERE state = 'queued' AND assign_deadline < ?1 ORDER BY assign_deadline, id LIMIT ?3) \
         UNION ALL \
         SELECT * FROM (SELECT 'unacknowledged', assigned_at, {TASK_COLUMNS} \
             FROM tasks INDEXED BY tasks_acknowledge_due \
             WHERE state = 'assigned' AND assigned_at < ?2 ORDER BY assigned_at, id LIMIT ?3) \
         UNION ALL \
         SELECT * FROM (SELECT 'overrun', run_deadline, {TASK_COLUMNS} \
             FROM tasks INDEXED BY tasks_run_due \
             WHERE state = 'running' AND run_deadline < ?1 ORDER BY run_deadline, id LIMIT ?3) \
         UNION ALL \
         SELECT * FROM (SELECT 'lost', assigned_at, {TASK_COLUMNS} FROM tasks INDEXED BY tasks_by_instance \
             WHERE instance_id IN (SELECT id FROM delegate_instances WHERE last_heartbeat_at < ?4) \
             ORDER BY assigned_at, id LIMIT ?3) \
         ORDER BY due_at, id"
    ))
    .bind(ms(query.now))
    .bind(ms(query.unacknowledged_before))
    .bind(i64::from(query.limit))
    .bind(ms(query.heartbeat_before))
    .fetch_all(&db.reader)
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

pub(crate) async fn extend_run_deadlines(db: &Db, beats: &[(TaskId, Attempt, DateTime<Utc>)]) -> StoreResult<u64> {
    if beats.is_empty() {
        return Ok(0);
    }
    // The whole batch is one bound JSON array of [hex id, attempt, ms] triples, joined in
    // one UPDATE: one statement whatever the batch size, one commit. Duplicates collapse
    // to their latest beat. The fence (attempt and state) is in the join, so a stale or
    // finished entry matches nothing; the last condition keeps a late, older beat from
    // moving a deadline back, and skips writing rows whose deadline would not change.
    // `+tasks.state` keeps the state out of index selection: without statistics SQLite
    // would otherwise walk every running task through `tasks_by_state` and probe the
    // batch, instead of looking each beat's task up by its primary key.
    let batch: Vec<(String, u32, i64)> = beats
        .iter()
        .map(|(task, attempt, at)| (task.0.simple().to_string(), attempt.0, ms(*at)))
        .collect();
    let done = sqlx::query(
        "UPDATE tasks SET run_deadline = beats.at + tasks.execution_timeout_ms \
         FROM (SELECT unhex(value ->> 0) AS id, value ->> 1 AS attempt, MAX(value ->> 2) AS at \
               FROM json_each(?) GROUP BY 1, 2) AS beats \
         WHERE tasks.id = beats.id AND tasks.attempt = beats.attempt AND +tasks.state = 'running' \
           AND tasks.run_deadline < beats.at + tasks.execution_timeout_ms",
    )
    .bind(to_json(&batch)?)
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}
