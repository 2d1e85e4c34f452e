//! The pipeline API: submit a task (idempotent under `Idempotency-Key`), read and list
//! tasks, wait for one to change, cancel it, read its selection log, and dry-run a
//! submission (`explain`).

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::{Extension, Json};
use serde::Deserialize;
use switchboard_domain::engine::Decision;
use switchboard_domain::task::fingerprint;
use switchboard_domain::vault::{self, SecretUse};
use switchboard_domain::{
    ConnectorId, Idempotency, NewTask, Permission, SelectionLogEntry, Task, TaskId, TaskState, TaskType,
};
use switchboard_protocol::tasks::{AttemptView, SubmitTask, Submitted, TaskView, WAIT_DEFAULT_MS, WAIT_MAX_MS};
use switchboard_store::{Inserted, StoreError, TaskQuery};
use utoipa::{IntoParams, ToSchema};

use crate::http::audit;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiQuery, IdPath};
use crate::http::middleware::{LongPoll, Stopping};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, CONFLICT, FORBIDDEN, INVALID, JSON_BODY, NOT_FOUND, QUERY, bit};
use crate::manager::dispatch::{self, Placement, Placer};

/// The longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_MAX: usize = 255;

/// Submit a task.
///
/// Answers 201 with the new task, assigned at once when a delegate can take it (else with
/// the engine's `explanation`), or 200 with the original task when an `Idempotency-Key`
/// is repeated with the same body. A task that no registered delegate could ever take
/// fails at once as `no_eligible_delegate`, unless `wait_for_delegate` is set.
#[utoipa::path(
    post,
    path = "/tasks",
    operation_id = "submit_task",
    tag = "tasks",
    security(("api_key" = [])),
    params((
        "Idempotency-Key" = Option<String>,
        Header,
        description = "Makes a retried submission safe: the same key with the same body answers the \
                       original task; with another body, 422 `idempotency-mismatch`. 1 to 255 visible ASCII \
                       characters (no spaces); anything else is a 400 `bad-request`."
    )),
    request_body = SubmitTask,
    responses(
        (status = 201, description = "The new task.", body = Submitted),
        (status = 200, description = "The task first submitted with this `Idempotency-Key`.", body = Submitted),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND | bit(Problem::IdempotencyMismatch) }>
    )
)]
pub async fn submit(
    State(placer): State<Placer>,
    caller: Caller,
    prepared: Option<Extension<audit::Prepared>>,
    headers: HeaderMap,
    ApiJson(request): ApiJson<SubmitTask>,
) -> Result<(StatusCode, Option<Extension<audit::Audited>>, Json<Submitted>), ApiError> {
    let idempotency = idempotency(&headers, &request)?;
    let spec = new_task(&placer, &caller, request, idempotency).await?;
    caller.check(Permission::PipelinesExecute, &spec.scope, "scope")?;
    if spec.connector_id.is_some() {
        caller.check(Permission::ConnectorsAccess, &spec.scope, "scope")?;
    }
    // Stored with its first placement's decision (and its claim, and this request's
    // audit entry) in one commit: see `dispatch::place::submit`.
    let audit = prepared.map(|Extension(audit::Prepared(entry))| entry);
    let audited = audit.is_some();
    let id = spec.id;
    let submitted = dispatch::place::submit(&placer, spec, audit).await?;
    let task = match submitted.inserted {
        Inserted::Existing(task) => {
            let answer = Json(Submitted {
                task: TaskView::from(&task),
                explanation: None,
            });
            return Ok((StatusCode::OK, audited.then_some(Extension(audit::Audited)), answer));
        }
        Inserted::Created(task) => task,
    };
    tracing::info!(task.id = %id, task.r#type = %task.spec.task_type, scope = %task.spec.scope, "task submitted");
    let queued = TaskView::from(&task);
    let (explanation, placed) = match submitted.placement {
        Some(Ok(Placement::Waiting { explanation })) => (Some(explanation), Some(queued)),
        Some(Ok(Placement::Failed { explanation, .. })) => (Some(explanation), None),
        Some(Ok(Placement::Assigned { task, .. })) => (None, Some(TaskView::from(&*task))),
        Some(Ok(Placement::NotQueued)) | None => (None, None),
        // The task is stored: whatever happened to this placement, the queue sweep
        // retries it.
        Some(Err(e)) => {
            tracing::warn!(task.id = %id, error = %e, "placement at submission failed; the sweep retries");
            (None, None)
        }
    };
    // The task as placement left it; read again only when placement does not know.
    let task = match placed {
        Some(view) => view,
        None => TaskView::from(&placer.store().get_task(id).await?),
    };
    Ok((
        StatusCode::CREATED,
        audited.then_some(Extension(audit::Audited)),
        Json(Submitted { task, explanation }),
    ))
}

/// The answer to `POST /api/v1/tasks/explain`: the engine's decision and its summary line.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct Explained {
    #[serde(flatten)]
    decision: Decision,
    /// The decision in one line, e.g. `0/12 delegates eligible: 5 lack selectors [gpu];
    /// can never match`.
    explanation: String,
    /// How many instances were left out of `verdicts` (and of `chosen` and `ranked`)
    /// because they lie outside the caller's scope: counted, never named.
    #[serde(skip_serializing_if = "Option::is_none")]
    hidden_instances: Option<usize>,
    /// With a `concurrency_key`: how many of the key's tasks hold an instance now. At its
    /// limit, the task would wait whichever instance is chosen, and `explanation` says so
    /// (`limited by concurrency key deploy-prod: 1/1 running`).
    #[serde(skip_serializing_if = "Option::is_none")]
    concurrency: Option<ConcurrencyUse>,
}

/// A concurrency key's use, as the dry run shows it.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ConcurrencyUse {
    key: String,
    limit: u32,
    running: u32,
}

/// Dry-run a submission: which instance would take this task now, and why the others
/// would not.
///
/// Nothing is submitted or stored. Every instance of the task's account gets a verdict.
#[utoipa::path(
    post,
    path = "/tasks/explain",
    operation_id = "explain_task",
    tag = "tasks",
    security(("api_key" = [])),
    request_body = SubmitTask,
    responses(
        (status = 200, description = "The engine's decision.", body = Explained),
        Errors<{ API | JSON_BODY | NOT_FOUND }>
    )
)]
pub async fn explain(
    State(placer): State<Placer>,
    caller: Caller,
    ApiJson(request): ApiJson<SubmitTask>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let task = Task::queued(new_task(&placer, &caller, request, None).await?);
    caller.check(Permission::DelegatesView, &task.spec.scope, "scope")?;
    let decision = dispatch::place::evaluate(&placer, &task, &Default::default(), dispatch::place::Detail::All).await?;
    let mut explanation = decision.summary.to_string();
    let mut concurrency = None;
    if let Some(c) = &task.spec.concurrency {
        let account = task.spec.scope.account_id();
        let running = placer.store().concurrency_held(account, &c.key).await?;
        if running >= c.limit {
            explanation = dispatch::place::limited(&c.key, running, c.limit);
        }
        concurrency = Some(ConcurrencyUse {
            key: c.key.clone(),
            limit: c.limit,
            running,
        });
    }
    let mut answer = serde_json::to_value(Explained {
        decision,
        explanation,
        hidden_instances: None,
        concurrency,
    })
    .map_err(|_| ApiError::internal())?;
    super::visible::decision(&caller, &mut answer);
    Ok(Json(answer))
}

/// One task.
#[utoipa::path(
    get,
    path = "/tasks/{id}",
    operation_id = "get_task",
    tag = "tasks",
    security(("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    responses((status = 200, description = "The task.", body = TaskView), Errors<{ API | NOT_FOUND }>)
)]
pub async fn get(
    State(placer): State<Placer>,
    caller: Caller,
    IdPath(id): IdPath<TaskId>,
) -> Result<Json<TaskView>, ApiError> {
    let task = visible_task(&placer, &caller, id).await?;
    Ok(Json(TaskView::from(&task)))
}

/// Cancel a task.
///
/// A running task's delegate is told to stop it. 409 when the task already ended.
#[utoipa::path(
    post,
    path = "/tasks/{id}/cancel",
    operation_id = "cancel_task",
    tag = "tasks",
    security(("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    responses(
        (status = 200, description = "The task, cancelled.", body = TaskView),
        Errors<{ API | NOT_FOUND | FORBIDDEN | CONFLICT }>
    )
)]
pub async fn cancel(
    State(placer): State<Placer>,
    caller: Caller,
    IdPath(id): IdPath<TaskId>,
) -> Result<Json<TaskView>, ApiError> {
    let task = visible_task(&placer, &caller, id).await?;
    caller.check(Permission::PipelinesExecute, &task.spec.scope, "task")?;
    let task = dispatch::lifecycle::cancel(&placer, task.id()).await?;
    Ok(Json(TaskView::from(&task)))
}

/// A task's selection log, oldest first.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(as = SelectionLog)]
pub struct LogAnswer {
    items: Vec<SelectionLogEntry>,
}

/// Why a task is where it is: every decision about it, per attempt.
///
/// Kept 30 days by default.
#[utoipa::path(
    get,
    path = "/tasks/{id}/selection-log",
    operation_id = "task_selection_log",
    tag = "tasks",
    security(("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    responses((status = 200, description = "The log.", body = LogAnswer), Errors<{ API | NOT_FOUND }>)
)]
pub async fn selection_log(
    State(placer): State<Placer>,
    caller: Caller,
    IdPath(id): IdPath<TaskId>,
) -> Result<Json<LogAnswer>, ApiError> {
    let id = visible_task(&placer, &caller, id).await?.id();
    let store = placer.store().as_ref();
    let entries = store.selection_log(id).await?;
    // Only a narrow key needs the holders (an account-wide one sees everything).
    let holders = match caller.visible().and_then(|s| s.org()) {
        Some(_) => store
            .task_attempts(id)
            .await?
            .into_iter()
            .map(|a| a.instance_id)
            .collect(),
        None => Vec::new(),
    };
    Ok(Json(LogAnswer {
        items: super::visible::selection_log(store, &caller, holders, entries).await?,
    }))
}

/// A task's attempts, oldest first.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(as = TaskAttempts)]
pub struct AttemptsAnswer {
    items: Vec<AttemptView>,
}

/// Every attempt of a task: the instance it went to, when it was acquired and ended, how
/// it ended and why, and, for a run its retry policy retried, when the next was due.
///
/// The instances named are the task's holders, named whatever their scope (as the task
/// names its holder).
#[utoipa::path(
    get,
    path = "/tasks/{id}/attempts",
    operation_id = "task_attempts",
    tag = "tasks",
    security(("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    responses((status = 200, description = "The attempts.", body = AttemptsAnswer), Errors<{ API | NOT_FOUND }>)
)]
pub async fn attempts(
    State(placer): State<Placer>,
    caller: Caller,
    IdPath(id): IdPath<TaskId>,
) -> Result<Json<AttemptsAnswer>, ApiError> {
    let id = visible_task(&placer, &caller, id).await?.id();
    let attempts = placer.store().task_attempts(id).await?;
    Ok(Json(AttemptsAnswer {
        items: attempts.iter().map(AttemptView::from).collect(),
    }))
}

/// The query string of `GET /api/v1/tasks/{id}/wait`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct WaitQuery {
    /// The state the caller last saw; the answer comes when the task is in another one.
    state: Option<TaskState>,
    /// How long to wait at most, in milliseconds: 0 (answer at once) to 300000 (5 min),
    /// default 30000. The wait is not cut off by `request_timeout`.
    #[param(maximum = 300_000)]
    timeout_ms: Option<u64>,
}

/// Wait for a task to change state (a long poll).
///
/// Answers as soon as the task is in a state other than `state` (at once if it already
/// is), or after `timeout_ms` (or when the manager begins to shut down) with the task as
/// it is, always 200. A `timeout_ms` above 5 min is refused (422).
#[utoipa::path(
    get,
    path = "/tasks/{id}/wait",
    operation_id = "wait_for_task",
    tag = "tasks",
    security(("api_key" = [])),
    params(("id" = TaskId, Path, description = "The task's id."), WaitQuery),
    responses(
        (status = 200, description = "The task, changed or as it is at the timeout.", body = TaskView),
        Errors<{ API | NOT_FOUND | QUERY }>
    )
)]
pub async fn wait(
    State(placer): State<Placer>,
    State(stopping): State<Stopping>,
    caller: Caller,
    long_poll: LongPoll,
    IdPath(id): IdPath<TaskId>,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Json<TaskView>, ApiError> {
    let timeout_ms = q.timeout_ms.unwrap_or(WAIT_DEFAULT_MS);
    if timeout_ms > WAIT_MAX_MS {
        return Err(ApiError::validation(
            "timeout_ms",
            format!("timeout_ms must be 0 to {WAIT_MAX_MS} milliseconds (5 min); got {timeout_ms}"),
        ));
    }
    let limit = Duration::from_millis(timeout_ms);
    // The wait is this route's own, bounded above: `request_timeout` covers the rest.
    long_poll.wait(limit);
    let id = visible_task(&placer, &caller, id).await?.id();
    // Subscribe before reading, so a change between the read and the wait is not missed.
    let mut changes = placer.dispatcher().subscribe();
    let stopping = stopping.wait();
    tokio::pin!(stopping);
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let task = placer.store().get_task(id).await?;
        if q.state.is_none_or(|seen| seen != task.state) {
            return Ok(Json(TaskView::from(&task)));
        }
        // Wait for a change of this task (a lagging receiver just re-reads).
        let changed = async {
            loop {
                match changes.recv().await {
                    Ok(changed) if changed == id => return,
                    Ok(_) => continue,
                    Err(_) => return,
                }
            }
        };
        tokio::select! {
            () = changed => {}
            // The wait is over, or the manager is stopping: the task as it is now.
            () = tokio::time::sleep_until(deadline) => break,
            () = &mut stopping => break,
        }
    }
    Ok(Json(TaskView::from(&placer.store().get_task(id).await?)))
}

/// The query string of `GET /api/v1/tasks`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only tasks in this account.
    account: Option<switchboard_domain::Ident>,
    /// Only tasks in this org (needs `account`).
    org: Option<switchboard_domain::Ident>,
    /// Only tasks in this project (needs `account` and `org`).
    project: Option<switchboard_domain::Ident>,
    /// Comma-separated states, e.g. `queued,running`.
    state: Option<String>,
    /// Only tasks of this type.
    #[serde(rename = "type")]
    task_type: Option<TaskType>,
    /// Only tasks naming this connector.
    connector: Option<ConnectorId>,
    /// The `next` cursor of the previous page.
    before: Option<TaskId>,
    /// At most this many tasks: 1 to 500, default 50.
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// A page of tasks, newest first.
#[derive(Debug, serde::Serialize, ToSchema)]
#[schema(as = TaskList)]
pub struct ListAnswer {
    items: Vec<TaskView>,
    /// The cursor of the next page (`before=`), when there may be one.
    #[serde(skip_serializing_if = "Option::is_none")]
    next: Option<TaskId>,
}

/// List tasks, newest first, filtered, paginated by the `next` cursor.
#[utoipa::path(
    get,
    path = "/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    security(("api_key" = [])),
    params(ListQuery),
    responses((status = 200, description = "A page of tasks.", body = ListAnswer), Errors<{ API | QUERY | INVALID }>)
)]
pub async fn list(
    State(placer): State<Placer>,
    caller: Caller,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<ListAnswer>, ApiError> {
    let limit = super::page_limit(q.limit, 50)?;
    let super::Narrowed::Within(within) = super::scope_filter(&caller, q.account, q.org, q.project)? else {
        return Ok(Json(ListAnswer {
            items: Vec::new(),
            next: None,
        }));
    };
    let states = match q.state {
        Some(raw) => raw
            .split(',')
            .map(|s| {
                TaskState::parse(s.trim()).ok_or_else(|| {
                    let states: Vec<&str> = TaskState::ALL.iter().map(|s| s.as_str()).collect();
                    ApiError::validation(
                        "state",
                        format!(
                            "{s:?} is not a task state; `state` takes a comma-separated list of {}",
                            states.join(", ")
                        ),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()?,
        None => Vec::new(),
    };
    let query = TaskQuery {
        within,
        states,
        task_type: q.task_type,
        connector: q.connector,
        before: q.before,
        limit,
    };
    let page = placer.store().list_tasks(&query).await?;
    Ok(Json(ListAnswer {
        items: page.items.iter().map(TaskView::from).collect(),
        next: page.next,
    }))
}

/// The `Idempotency-Key` header with the fingerprint of the request (its canonical JSON,
/// so whitespace and key order do not matter).
fn idempotency(headers: &HeaderMap, request: &SubmitTask) -> Result<Option<Idempotency>, ApiError> {
    let Some(raw) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    // What the refusal says: visible ASCII only. `to_str` alone lets spaces and tabs in
    // (and hyper has already trimmed those at the ends).
    let key = raw
        .to_str()
        .ok()
        .filter(|k| !k.is_empty() && k.len() <= IDEMPOTENCY_KEY_MAX && k.bytes().all(|b| b.is_ascii_graphic()));
    let Some(key) = key else {
        return Err(ApiError::bad_request(format!(
            "the Idempotency-Key header must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
        )));
    };
    let canonical = serde_json::to_vec(request).map_err(|_| ApiError::internal())?;
    Ok(Some(Idempotency {
        key: key.to_owned(),
        fingerprint: fingerprint(&canonical),
    }))
}

/// Validates a submission into a task. Every refusal names its field.
async fn new_task(
    placer: &Placer,
    caller: &Caller,
    r: SubmitTask,
    idempotency: Option<Idempotency>,
) -> Result<NewTask, ApiError> {
    let secret_names = r.secrets.clone();
    let mut spec = NewTask::try_from(r).map_err(|e| {
        let error = if e.too_large {
            ApiError::new(Problem::PayloadTooLarge, e.message)
        } else {
            ApiError::validation(e.field, e.message)
        };
        error.with_field(e.field)
    })?;
    spec.idempotency = idempotency;
    if let Some(id) = spec.connector_id {
        let connector = match placer.store().get_connector(id).await {
            Ok(c) => c,
            Err(StoreError::NotFound(_)) => {
                return Err(ApiError::validation("connector", format!("there is no connector {id}")));
            }
            Err(e) => return Err(e.into()),
        };
        // A connector outside the caller's scope is as absent as a missing one.
        if caller
            .check(Permission::DelegatesView, &connector.scope, "connector")
            .is_err()
        {
            return Err(ApiError::validation("connector", format!("there is no connector {id}")));
        }
        if !connector.scope.contains(&spec.scope) {
            return Err(ApiError::validation(
                "connector",
                format!(
                    "connector {} belongs to {}, which does not contain the task's scope {}",
                    connector.name, connector.scope, spec.scope
                ),
            ));
        }
    }
    spec.secrets = resolve_secrets(placer, caller, &spec.scope, &secret_names).await?;
    if spec.retry.is_none() {
        // The nearest scope's default (docs/rules.md, "Retries"), kept with the task: a
        // later change of the default does not change how it is retried.
        let policies = placer.shares().policies(placer.store().as_ref()).await;
        spec.retry = dispatch::shares::default_retry(&policies, &spec.scope);
    }
    Ok(spec)
}

/// Task `id`, if the caller may see it (else 404, as if it did not exist).
/// The secrets a submission names, each resolved to the one of that name nearest the
/// task's scope that serves it (docs/rules.md, "Secrets"). One the caller cannot see, or
/// that serves no scope of the task, is answered as if it did not exist; one it sees but
/// may not use is 403 (`secrets:access` at the secret's scope).
async fn resolve_secrets(
    placer: &Placer,
    caller: &Caller,
    scope: &switchboard_domain::Scope,
    names: &[switchboard_domain::Ident],
) -> Result<Vec<SecretUse>, ApiError> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let found = placer.store().secrets_named(scope.account_id(), names).await?;
    let seen = |s: &&switchboard_domain::vault::TaskSecret| caller.visible().is_none_or(|v| v.contains(&s.scope));
    let mut uses = Vec::with_capacity(names.len());
    for name in names {
        let candidates: Vec<_> = found.iter().filter(|s| &s.name == name).filter(seen).collect();
        let Some(secret) = vault::nearest(candidates, scope) else {
            return Err(ApiError::validation(
                "secrets",
                format!("there is no secret {name} that serves {scope}"),
            ));
        };
        caller.check(Permission::SecretsAccess, &secret.scope, "secret")?;
        uses.push(SecretUse {
            name: name.clone(),
            id: secret.id,
        });
    }
    Ok(uses)
}

async fn visible_task(placer: &Placer, caller: &Caller, id: TaskId) -> Result<Task, ApiError> {
    let task = placer.store().get_task(id).await?;
    caller.check(Permission::DelegatesView, &task.spec.scope, "task")?;
    Ok(task)
}
