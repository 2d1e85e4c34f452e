//! Rows into domain types. Rows were written by this crate from validated values, so a
//! value that fails to parse here means corruption or a schema drift: `Internal`.

use serde::de::DeserializeOwned;
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::types::Json;
use switchboard_domain::{
    ApiKey, ApiKeyId, Attempt, AuditEntry, Capacity, Connector, ConnectorId, Declaration, DelegateGroup,
    DelegateInstance, DelegateToken, Failure, FailureReason, GroupId, Idempotency, Ident, ImageFlavour, InstanceId,
    JitGrant, NewTask, Scope, Task, TaskAttempt, TaskId, TaskState, TaskType, TokenId, TokenStatus,
};
use switchboard_store::columns::StoredPolicy;
use switchboard_store::{StoreError, StoreResult};
use uuid::Uuid;

use crate::map_err;

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("corrupt {what} in the database: {detail}"))
}

pub(crate) fn get<'r, T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>>(
    row: &'r PgRow,
    col: &str,
) -> StoreResult<T> {
    row.try_get(col).map_err(map_err)
}

fn json<T: DeserializeOwned>(row: &PgRow, col: &str) -> StoreResult<T> {
    row.try_get::<Json<T>, _>(col).map(|j| j.0).map_err(|e| corrupt(col, e))
}

fn opt_json<T: DeserializeOwned>(row: &PgRow, col: &str) -> StoreResult<Option<T>> {
    row.try_get::<Option<Json<T>>, _>(col)
        .map(|j| j.map(|j| j.0))
        .map_err(|e| corrupt(col, e))
}

pub(crate) fn ident(row: &PgRow, col: &str) -> StoreResult<Ident> {
    Ident::parse(&get::<String>(row, col)?).map_err(|e| corrupt(col, e))
}

fn opt_ident(row: &PgRow, col: &str) -> StoreResult<Option<Ident>> {
    get::<Option<String>>(row, col)?
        .map(|s| Ident::parse(&s).map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn scope(row: &PgRow) -> StoreResult<Scope> {
    Scope::new(
        ident(row, "account")?,
        opt_ident(row, "org")?,
        opt_ident(row, "project")?,
    )
    .map_err(|e| corrupt("scope", e))
}

fn count(row: &PgRow, col: &str) -> StoreResult<u32> {
    u32::try_from(get::<i32>(row, col)?).map_err(|e| corrupt(col, e))
}

pub(crate) fn token(row: &PgRow) -> StoreResult<DelegateToken> {
    let status: String = get(row, "status")?;
    Ok(DelegateToken {
        id: TokenId(get(row, "id")?),
        name: ident(row, "name")?,
        scope: scope(row)?,
        status: TokenStatus::parse(&status).ok_or_else(|| corrupt("status", status))?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
        jit: match get::<Option<Uuid>>(row, "jit_group")? {
            Some(group) => Some(JitGrant {
                group_id: GroupId(group),
                expires_at: get::<Option<chrono::DateTime<chrono::Utc>>>(row, "expires_at")?
                    .ok_or_else(|| corrupt("expires_at", "a JIT credential without an expiry"))?,
                used_at: get(row, "used_at")?,
            }),
            None => None,
        },
    })
}

pub(crate) fn group(row: &PgRow) -> StoreResult<DelegateGroup> {
    Ok(DelegateGroup {
        id: GroupId(get(row, "id")?),
        scope: scope(row)?,
        name: ident(row, "name")?,
        tags: json(row, "tags")?,
        disabled: get(row, "disabled")?,
        created_at: get(row, "created_at")?,
        declared: row
            .try_get::<Option<Json<Declaration>>, _>("declaration")
            .map(|j| j.map(|j| j.0))
            .map_err(|e| corrupt("declaration", e))?,
        paused: opt_json(row, "pause")?,
    })
}

pub(crate) fn instance(row: &PgRow) -> StoreResult<DelegateInstance> {
    let flavour: String = get(row, "flavour")?;
    Ok(DelegateInstance {
        id: InstanceId(get(row, "id")?),
        group_id: GroupId(get(row, "group_id")?),
        token_id: TokenId(get(row, "token_id")?),
        hostname: get(row, "hostname")?,
        version: get(row, "version")?,
        flavour: ImageFlavour::parse(&flavour).ok_or_else(|| corrupt("flavour", flavour))?,
        tags: json(row, "tags")?,
        task_types: json(row, "task_types")?,
        capacity: Capacity::new(count(row, "capacity")?).map_err(|e| corrupt("capacity", e))?,
        active_tasks: count(row, "active_tasks")?,
        registered_at: get(row, "registered_at")?,
        last_heartbeat_at: get(row, "last_heartbeat_at")?,
        connected: get(row, "connected")?,
        paused: opt_json(row, "pause")?,
        draining: get(row, "draining")?,
        max_tasks: get::<Option<i32>>(row, "max_tasks")?
            .map(|m| u32::try_from(m).map_err(|e| corrupt("max_tasks", e)))
            .transpose()?,
        tasks_taken: count(row, "tasks_taken")?,
    })
}

pub(crate) fn connector(row: &PgRow) -> StoreResult<Connector> {
    Ok(Connector {
        id: ConnectorId(get(row, "id")?),
        scope: scope(row)?,
        name: ident(row, "name")?,
        selectors: json(row, "selectors")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

fn millis(row: &PgRow, col: &str) -> StoreResult<std::time::Duration> {
    let ms = u64::try_from(get::<i64>(row, col)?).map_err(|e| corrupt(col, e))?;
    Ok(std::time::Duration::from_millis(ms))
}

fn state(row: &PgRow, col: &str) -> StoreResult<TaskState> {
    let s: String = get(row, col)?;
    TaskState::parse(&s).ok_or_else(|| corrupt(col, s))
}

/// The columns [`task`] reads, for `SELECT` and `RETURNING` lists.
pub(crate) const TASK_COLUMNS: &str = "id, account, org, project, task_type, payload, selectors, connector_id, \
     capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate, \
     idempotency_key, idempotency_fingerprint, state, attempt, runs, instance_id, failure_reason, failure_detail, \
     result, progress, created_at, updated_at, assigned_at, started_at, finished_at, run_deadline, policy, retry_at, \
     failure_code, failure_retryable";

pub(crate) fn task(row: &PgRow) -> StoreResult<Task> {
    let idempotency = match (
        get::<Option<String>>(row, "idempotency_key")?,
        get(row, "idempotency_fingerprint")?,
    ) {
        (Some(key), Some(fingerprint)) => Some(Idempotency { key, fingerprint }),
        _ => None,
    };
    let failure = match get::<Option<String>>(row, "failure_reason")? {
        Some(r) => Some(Failure {
            reason: FailureReason::parse(&r).ok_or_else(|| corrupt("failure_reason", r))?,
            detail: get::<Option<String>>(row, "failure_detail")?.unwrap_or_default(),
            code: get(row, "failure_code")?,
            retryable: get(row, "failure_retryable")?,
        }),
        None => None,
    };
    let mut task = Task {
        spec: NewTask {
            id: TaskId(get(row, "id")?),
            scope: scope(row)?,
            task_type: TaskType(ident(row, "task_type")?),
            payload: json(row, "payload")?,
            selectors: json(row, "selectors")?,
            connector_id: get::<Option<Uuid>>(row, "connector_id")?.map(ConnectorId),
            capabilities: json(row, "capabilities")?,
            priority: get(row, "priority")?,
            assign_timeout: millis(row, "assign_timeout_ms")?,
            execution_timeout: millis(row, "execution_timeout_ms")?,
            max_attempts: count(row, "max_attempts")?,
            wait_for_delegate: get(row, "wait_for_delegate")?,
            idempotency,
            created_at: get(row, "created_at")?,
            concurrency: None,
            retry: None,
            secrets: Vec::new(),
        },
        state: state(row, "state")?,
        attempt: Attempt(count(row, "attempt")?),
        runs: count(row, "runs")?,
        instance_id: get::<Option<Uuid>>(row, "instance_id")?.map(InstanceId),
        failure,
        result: get::<Option<Json<serde_json::Value>>>(row, "result")?.map(|j| j.0),
        progress: get::<Option<Json<serde_json::Value>>>(row, "progress")?.map(|j| j.0),
        updated_at: get(row, "updated_at")?,
        assigned_at: get(row, "assigned_at")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        run_deadline: get(row, "run_deadline")?,
        retry_at: get(row, "retry_at")?,
    };
    if let Some(policy) = opt_json::<StoredPolicy>(row, "policy")? {
        policy.fill(&mut task.spec);
    }
    Ok(task)
}

pub(crate) fn attempt(row: &PgRow) -> StoreResult<TaskAttempt> {
    Ok(TaskAttempt {
        task_id: TaskId(get(row, "task_id")?),
        attempt: Attempt(count(row, "attempt")?),
        instance_id: InstanceId(get(row, "instance_id")?),
        assigned_at: get(row, "assigned_at")?,
        acquired_at: get(row, "acquired_at")?,
        ended_at: get(row, "ended_at")?,
        outcome: get::<Option<String>>(row, "outcome")?
            .map(|s| TaskState::parse(&s).ok_or_else(|| corrupt("outcome", s)))
            .transpose()?,
        failure: opt_json(row, "failure")?,
        retry_at: get(row, "retry_at")?,
    })
}

pub(crate) fn api_key(row: &PgRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: ApiKeyId(get(row, "id")?),
        name: ident(row, "name")?,
        scope: scope(row)?,
        permissions: json(row, "permissions")?,
        created_at: get(row, "created_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

/// The three parameters of a "within scope" filter: each `None` matches anything.
pub(crate) fn within(scope: Option<&Scope>) -> (Option<String>, Option<String>, Option<String>) {
    match scope {
        None => (None, None, None),
        Some(s) => (
            Some(s.account_id().to_string()),
            s.org().map(ToString::to_string),
            s.project().map(ToString::to_string),
        ),
    }
}

/// The SQL of a "within scope" filter over parameters `$n`, `$n+1`, `$n+2`.
pub(crate) fn within_sql(n: usize) -> String {
    format!(
        "(${a}::text IS NULL OR account = ${a}) AND (${o}::text IS NULL OR org = ${o}) \
         AND (${p}::text IS NULL OR project = ${p})",
        a = n,
        o = n + 1,
        p = n + 2
    )
}

/// The scope columns of an insert: account, org, project, scope_path.
pub(crate) fn scope_values(s: &Scope) -> (String, Option<String>, Option<String>, String) {
    (
        s.account_id().to_string(),
        s.org().map(ToString::to_string),
        s.project().map(ToString::to_string),
        s.path(),
    )
}

/// The scope of a row whose scope columns may all be NULL (`None` then).
fn opt_scope(row: &PgRow) -> StoreResult<Option<Scope>> {
    if get::<Option<String>>(row, "account")?.is_none() {
        return Ok(None);
    }
    scope(row).map(Some)
}

pub(crate) fn audit_entry(row: &PgRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: get(row, "id")?,
        at: get(row, "at")?,
        actor: get(row, "actor")?,
        key_id: get::<Option<Uuid>>(row, "key_id")?.map(ApiKeyId),
        key_scope: opt_scope(row)?,
        method: get(row, "method")?,
        route: get(row, "route")?,
        path: get(row, "path")?,
        status: u16::try_from(get::<i32>(row, "status")?).map_err(|e| corrupt("status", e))?,
        remote: get(row, "remote")?,
    })
}

/// A row of the queue's aggregate (`tasks::queue_shapes`).
pub(crate) fn queue_shape(row: &PgRow) -> StoreResult<switchboard_store::QueueShape> {
    Ok(switchboard_store::QueueShape {
        scope: scope(row)?,
        task_type: TaskType(ident(row, "task_type")?),
        selectors: json(row, "selectors")?,
        connector_id: get::<Option<Uuid>>(row, "connector_id")?.map(ConnectorId),
        capabilities: json(row, "capabilities")?,
        retried: get(row, "retried")?,
        count: u64::try_from(get::<i64>(row, "n")?).map_err(|e| corrupt("n", e))?,
        oldest: TaskId(get(row, "oldest")?),
        newest: TaskId(get(row, "newest")?),
        oldest_created_at: get(row, "oldest_at")?,
        concurrency: match get::<Option<String>>(row, "concurrency_key")? {
            Some(key) => Some(switchboard_store::KeyUse {
                key,
                limit: get::<Option<i32>>(row, "concurrency_limit")?.map_or(1, |n| u32::try_from(n).unwrap_or(1)),
                running: 0,
            }),
            None => None,
        },
        backing_off: u64::try_from(get::<i64>(row, "backing_off")?).map_err(|e| corrupt("backing_off", e))?,
    })
}

/// A scope and a count (`n`), from a `GROUP BY account, org, project`.
pub(crate) fn scope_count(row: &PgRow) -> StoreResult<(Scope, u64)> {
    Ok((
        scope(row)?,
        u64::try_from(get::<i64>(row, "n")?).map_err(|e| corrupt("n", e))?,
    ))
}
