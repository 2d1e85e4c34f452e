//! Rows into domain types, and domain values into column values.
//!
//! SQLite has no timestamp, uuid or JSON types, so the conversions live here, in one place:
//! timestamps are `INTEGER` Unix milliseconds ([`ms`] / [`time`]), ids are 16-byte `BLOB`s
//! (sqlx encodes `uuid::Uuid` that way), JSON is `TEXT` ([`to_json`] / [`json`]), booleans
//! are `INTEGER` 0/1. Rows were written by this crate from validated values, so a value
//! that fails to parse here means corruption or a schema drift: `Internal`.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Row};
use switchboard_domain::{
    ApiKey, ApiKeyId, Attempt, AuditEntry, CapabilityBasis, CapabilityResult, Capacity, Connector, ConnectorId,
    DelegateGroup, DelegateInstance, DelegateToken, Failure, FailureReason, GroupId, Idempotency, Ident, ImageFlavour,
    InstanceId, JitGrant, LastSuccess, NewTask, Scope, SelectionKind, SelectionLogEntry, Task, TaskAttempt, TaskId,
    TaskState, TaskType, TokenId, TokenStatus,
};
use switchboard_store::{StoreError, StoreResult};
use uuid::Uuid;

use crate::map_err;

fn corrupt(what: &str, detail: impl std::fmt::Display) -> StoreError {
    StoreError::Internal(format!("corrupt {what} in the database: {detail}"))
}

/// A timestamp as stored: Unix milliseconds. Sub-millisecond precision is dropped, so
/// callers that compare stored times should read them back rather than keep their own.
pub(crate) fn ms(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

pub(crate) fn from_ms(col: &str, ms: i64) -> StoreResult<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms).ok_or_else(|| corrupt(col, format!("timestamp {ms} out of range")))
}

/// A JSON column value. Serializing domain values cannot fail (no maps with non-string
/// keys), but a failure is reported rather than unwrapped.
pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T) -> StoreResult<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Internal(format!("cannot serialize to JSON: {e}")))
}

pub(crate) fn get<'r, T: sqlx::Decode<'r, Sqlite> + sqlx::Type<Sqlite>>(
    row: &'r SqliteRow,
    col: &str,
) -> StoreResult<T> {
    row.try_get(col).map_err(map_err)
}

fn time(row: &SqliteRow, col: &str) -> StoreResult<DateTime<Utc>> {
    from_ms(col, get(row, col)?)
}

fn opt_time(row: &SqliteRow, col: &str) -> StoreResult<Option<DateTime<Utc>>> {
    get::<Option<i64>>(row, col)?.map(|v| from_ms(col, v)).transpose()
}

fn json<T: DeserializeOwned>(row: &SqliteRow, col: &str) -> StoreResult<T> {
    let text: String = get(row, col)?;
    serde_json::from_str(&text).map_err(|e| corrupt(col, e))
}

fn opt_json<T: DeserializeOwned>(row: &SqliteRow, col: &str) -> StoreResult<Option<T>> {
    get::<Option<String>>(row, col)?
        .map(|text| serde_json::from_str(&text).map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn ident(row: &SqliteRow, col: &str) -> StoreResult<Ident> {
    Ident::parse(&get::<String>(row, col)?).map_err(|e| corrupt(col, e))
}

fn opt_ident(row: &SqliteRow, col: &str) -> StoreResult<Option<Ident>> {
    get::<Option<String>>(row, col)?
        .map(|s| Ident::parse(&s).map_err(|e| corrupt(col, e)))
        .transpose()
}

pub(crate) fn scope(row: &SqliteRow) -> StoreResult<Scope> {
    Scope::new(
        ident(row, "account")?,
        opt_ident(row, "org")?,
        opt_ident(row, "project")?,
    )
    .map_err(|e| corrupt("scope", e))
}

fn count(row: &SqliteRow, col: &str) -> StoreResult<u32> {
    u32::try_from(get::<i64>(row, col)?).map_err(|e| corrupt(col, e))
}

fn uuid(row: &SqliteRow, col: &str) -> StoreResult<Uuid> {
    get(row, col)
}

fn state(row: &SqliteRow, col: &str) -> StoreResult<TaskState> {
    let s: String = get(row, col)?;
    TaskState::parse(&s).ok_or_else(|| corrupt(col, s))
}

fn millis(row: &SqliteRow, col: &str) -> StoreResult<std::time::Duration> {
    let ms = u64::try_from(get::<i64>(row, col)?).map_err(|e| corrupt(col, e))?;
    Ok(std::time::Duration::from_millis(ms))
}

/// The columns [`token`] reads.
pub(crate) const TOKEN_COLUMNS: &str =
    "id, account, org, project, name, status, created_at, revoked_at, jit_group, expires_at, used_at";

pub(crate) fn token(row: &SqliteRow) -> StoreResult<DelegateToken> {
    let status: String = get(row, "status")?;
    Ok(DelegateToken {
        id: TokenId(uuid(row, "id")?),
        name: ident(row, "name")?,
        scope: scope(row)?,
        status: TokenStatus::parse(&status).ok_or_else(|| corrupt("status", status))?,
        created_at: time(row, "created_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
        jit: match get::<Option<Uuid>>(row, "jit_group")? {
            Some(group) => Some(JitGrant {
                group_id: GroupId(group),
                expires_at: opt_time(row, "expires_at")?
                    .ok_or_else(|| corrupt("expires_at", "a JIT credential without an expiry"))?,
                used_at: opt_time(row, "used_at")?,
            }),
            None => None,
        },
    })
}

/// The columns [`group`] reads.
pub(crate) const GROUP_COLUMNS: &str =
    "id, account, org, project, name, tags, disabled, created_at, declaration, pause";

pub(crate) fn group(row: &SqliteRow) -> StoreResult<DelegateGroup> {
    Ok(DelegateGroup {
        id: GroupId(uuid(row, "id")?),
        scope: scope(row)?,
        name: ident(row, "name")?,
        tags: json(row, "tags")?,
        disabled: get(row, "disabled")?,
        created_at: time(row, "created_at")?,
        declared: opt_json(row, "declaration")?,
        paused: opt_json(row, "pause")?,
    })
}

/// The columns [`instance`] reads.
pub(crate) const INSTANCE_COLUMNS: &str = "id, group_id, token_id, hostname, version, flavour, tags, task_types, \
     capacity, active_tasks, registered_at, last_heartbeat_at, connected, pause, draining, max_tasks, tasks_taken";

pub(crate) fn instance(row: &SqliteRow) -> StoreResult<DelegateInstance> {
    let flavour: String = get(row, "flavour")?;
    Ok(DelegateInstance {
        id: InstanceId(uuid(row, "id")?),
        group_id: GroupId(uuid(row, "group_id")?),
        token_id: TokenId(uuid(row, "token_id")?),
        hostname: get(row, "hostname")?,
        version: get(row, "version")?,
        flavour: ImageFlavour::parse(&flavour).ok_or_else(|| corrupt("flavour", flavour))?,
        tags: json(row, "tags")?,
        task_types: json(row, "task_types")?,
        capacity: Capacity::new(count(row, "capacity")?).map_err(|e| corrupt("capacity", e))?,
        active_tasks: count(row, "active_tasks")?,
        registered_at: time(row, "registered_at")?,
        last_heartbeat_at: time(row, "last_heartbeat_at")?,
        connected: get(row, "connected")?,
        paused: opt_json(row, "pause")?,
        draining: get(row, "draining")?,
        max_tasks: get::<Option<i64>>(row, "max_tasks")?
            .map(|m| u32::try_from(m).map_err(|e| corrupt("max_tasks", e)))
            .transpose()?,
        tasks_taken: count(row, "tasks_taken")?,
    })
}

/// The columns [`connector`] reads.
pub(crate) const CONNECTOR_COLUMNS: &str = "id, account, org, project, name, selectors, created_at, updated_at";

pub(crate) fn connector(row: &SqliteRow) -> StoreResult<Connector> {
    Ok(Connector {
        id: ConnectorId(uuid(row, "id")?),
        scope: scope(row)?,
        name: ident(row, "name")?,
        selectors: json(row, "selectors")?,
        created_at: time(row, "created_at")?,
        updated_at: time(row, "updated_at")?,
    })
}

pub(crate) fn last_success(row: &SqliteRow) -> StoreResult<LastSuccess> {
    Ok(LastSuccess {
        connector_id: ConnectorId(uuid(row, "connector_id")?),
        instance_id: InstanceId(uuid(row, "instance_id")?),
        group_id: GroupId(uuid(row, "group_id")?),
        at: time(row, "succeeded_at")?,
    })
}

/// The columns [`task`] reads, for `SELECT` and `RETURNING` lists.
pub(crate) const TASK_COLUMNS: &str = "id, account, org, project, task_type, payload, selectors, connector_id, \
     capabilities, priority, assign_timeout_ms, execution_timeout_ms, max_attempts, wait_for_delegate, \
     idempotency_key, idempotency_fingerprint, state, attempt, runs, instance_id, failure_reason, failure_detail, \
     result, progress, created_at, updated_at, assigned_at, started_at, finished_at, run_deadline, policy, retry_at, \
     failure_code, failure_retryable";

pub(crate) fn task(row: &SqliteRow) -> StoreResult<Task> {
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
            id: TaskId(uuid(row, "id")?),
            scope: scope(row)?,
            task_type: TaskType(ident(row, "task_type")?),
            payload: json(row, "payload")?,
            selectors: json(row, "selectors")?,
            connector_id: get::<Option<Uuid>>(row, "connector_id")?.map(ConnectorId),
            capabilities: json(row, "capabilities")?,
            priority: i32::try_from(get::<i64>(row, "priority")?).map_err(|e| corrupt("priority", e))?,
            assign_timeout: millis(row, "assign_timeout_ms")?,
            execution_timeout: millis(row, "execution_timeout_ms")?,
            max_attempts: count(row, "max_attempts")?,
            wait_for_delegate: get(row, "wait_for_delegate")?,
            idempotency,
            created_at: time(row, "created_at")?,
            concurrency: None,
            retry: None,
            secrets: Vec::new(),
        },
        state: state(row, "state")?,
        attempt: Attempt(count(row, "attempt")?),
        runs: count(row, "runs")?,
        instance_id: get::<Option<Uuid>>(row, "instance_id")?.map(InstanceId),
        failure,
        result: opt_json(row, "result")?,
        progress: opt_json(row, "progress")?,
        updated_at: time(row, "updated_at")?,
        assigned_at: opt_time(row, "assigned_at")?,
        started_at: opt_time(row, "started_at")?,
        finished_at: opt_time(row, "finished_at")?,
        run_deadline: opt_time(row, "run_deadline")?,
        retry_at: opt_time(row, "retry_at")?,
    };
    if let Some(policy) = opt_json::<switchboard_store::columns::StoredPolicy>(row, "policy")? {
        policy.fill(&mut task.spec);
    }
    Ok(task)
}

/// The columns [`attempt`] reads.
pub(crate) const ATTEMPT_COLUMNS: &str =
    "task_id, attempt, instance_id, assigned_at, acquired_at, ended_at, outcome, failure, retry_at";

pub(crate) fn attempt(row: &SqliteRow) -> StoreResult<TaskAttempt> {
    Ok(TaskAttempt {
        task_id: TaskId(uuid(row, "task_id")?),
        attempt: Attempt(count(row, "attempt")?),
        instance_id: InstanceId(uuid(row, "instance_id")?),
        assigned_at: time(row, "assigned_at")?,
        acquired_at: opt_time(row, "acquired_at")?,
        ended_at: opt_time(row, "ended_at")?,
        outcome: get::<Option<String>>(row, "outcome")?
            .map(|s| TaskState::parse(&s).ok_or_else(|| corrupt("outcome", s)))
            .transpose()?,
        failure: opt_json(row, "failure")?,
        retry_at: opt_time(row, "retry_at")?,
    })
}

pub(crate) fn capability_result(row: &SqliteRow) -> StoreResult<CapabilityResult> {
    Ok(CapabilityResult {
        instance_id: InstanceId(uuid(row, "instance_id")?),
        basis: CapabilityBasis(get(row, "basis")?),
        reachable: get(row, "reachable")?,
        detail: get(row, "detail")?,
        checked_at: time(row, "checked_at")?,
    })
}

pub(crate) fn selection_entry(row: &SqliteRow) -> StoreResult<SelectionLogEntry> {
    let kind: String = get(row, "kind")?;
    Ok(SelectionLogEntry {
        task_id: TaskId(uuid(row, "task_id")?),
        attempt: Attempt(count(row, "attempt")?),
        at: time(row, "at")?,
        kind: SelectionKind::parse(&kind).ok_or_else(|| corrupt("kind", kind))?,
        summary: get(row, "summary")?,
        detail: json(row, "detail")?,
    })
}

/// The columns [`api_key`] reads.
pub(crate) const API_KEY_COLUMNS: &str = "id, account, org, project, name, permissions, created_at, revoked_at";

pub(crate) fn api_key(row: &SqliteRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: ApiKeyId(uuid(row, "id")?),
        name: ident(row, "name")?,
        scope: scope(row)?,
        permissions: json(row, "permissions")?,
        created_at: time(row, "created_at")?,
        revoked_at: opt_time(row, "revoked_at")?,
    })
}

/// Appends a "within scope" filter (`AND ...`) to a query whose `WHERE` is already open:
/// the resources at `within` or below it (see `Scope::contains`). Nothing for `None`.
pub(crate) fn push_within(q: &mut QueryBuilder<'_, Sqlite>, within: Option<&Scope>) {
    let Some(s) = within else { return };
    q.push(" AND account = ").push_bind(s.account_id().to_string());
    if let Some(org) = s.org() {
        q.push(" AND org = ").push_bind(org.to_string());
    }
    if let Some(project) = s.project() {
        q.push(" AND project = ").push_bind(project.to_string());
    }
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
fn opt_scope(row: &SqliteRow) -> StoreResult<Option<Scope>> {
    if get::<Option<String>>(row, "account")?.is_none() {
        return Ok(None);
    }
    scope(row).map(Some)
}

/// The columns [`audit_entry`] reads.
pub(crate) const AUDIT_COLUMNS: &str =
    "id, at, actor, key_id, account, org, project, method, route, path, status, remote";

pub(crate) fn audit_entry(row: &SqliteRow) -> StoreResult<AuditEntry> {
    Ok(AuditEntry {
        id: get(row, "id")?,
        at: time(row, "at")?,
        actor: get(row, "actor")?,
        key_id: get::<Option<Uuid>>(row, "key_id")?.map(ApiKeyId),
        key_scope: opt_scope(row)?,
        method: get(row, "method")?,
        route: get(row, "route")?,
        path: get(row, "path")?,
        status: u16::try_from(get::<i64>(row, "status")?).map_err(|e| corrupt("status", e))?,
        remote: get(row, "remote")?,
    })
}

/// A row of the queue's aggregate (`tasks::queue_shapes`).
pub(crate) fn queue_shape(row: &SqliteRow) -> StoreResult<switchboard_store::QueueShape> {
    Ok(switchboard_store::QueueShape {
        scope: scope(row)?,
        task_type: TaskType(ident(row, "task_type")?),
        selectors: json(row, "selectors")?,
        connector_id: get::<Option<Uuid>>(row, "connector_id")?.map(ConnectorId),
        capabilities: json(row, "capabilities")?,
        retried: get(row, "retried")?,
        count: u64::try_from(get::<i64>(row, "n")?).map_err(|e| corrupt("n", e))?,
        oldest: TaskId(uuid(row, "oldest")?),
        newest: TaskId(uuid(row, "newest")?),
        oldest_created_at: time(row, "oldest_at")?,
        concurrency: match get::<Option<String>>(row, "concurrency_key")? {
            Some(key) => Some(switchboard_store::KeyUse {
                key,
                limit: get::<Option<i64>>(row, "concurrency_limit")?.map_or(1, |n| u32::try_from(n).unwrap_or(1)),
                running: 0,
            }),
            None => None,
        },
        backing_off: u64::try_from(get::<i64>(row, "backing_off")?).map_err(|e| corrupt("backing_off", e))?,
    })
}

/// A scope and a count (`n`), from a `GROUP BY account, org, project`.
pub(crate) fn scope_count(row: &SqliteRow) -> StoreResult<(Scope, u64)> {
    Ok((
        scope(row)?,
        u64::try_from(get::<i64>(row, "n")?).map_err(|e| corrupt("n", e))?,
    ))
}
