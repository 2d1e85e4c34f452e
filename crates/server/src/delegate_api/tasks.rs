//! The delegate's task endpoints: acquire an offered attempt, report progress, report the
//! result. Every call names the attempt it belongs to and is fenced by it in the store: a
//! report for an attempt that is no longer current is answered 409 and changes nothing,
//! so a delegate back from a network split cannot overwrite a newer attempt.

use axum::Json;
use axum::extract::State;
use chrono::Utc;
use std::sync::Arc;

use switchboard_domain::policy::Ending;
use switchboard_domain::task::PAYLOAD_MAX_BYTES;
use switchboard_domain::tasklog::{self, Appended, LogAppend, LogPosition};
use switchboard_domain::vault;
use switchboard_domain::{Attempt, Failure, FailureReason, LastSuccess, Task, TaskEvent, TaskId, TaskState};
use switchboard_protocol::delegate::{
    Acquire, AcquiredTask, LogAppendBody, LogAppended, Outcome, Progress, TaskResult, TaskStatus,
};
use switchboard_store::{ClusterEvent, Transition};

use super::session::Trusted;
use crate::config::Settings;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{AnyJson, IdPath};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{BODY, CONFLICT, LIMITED, NOT_FOUND, STORE, bit};
use crate::manager::cluster::Sockets;
use crate::manager::dispatch::Placer;
use crate::manager::masks::Masks;
use crate::manager::sessions::TrustedInstance;

/// What every task report can be answered besides its success: the session check, the
/// body, an unknown task, and the attempt fence.
const REPORT_ERRORS: u32 = STORE
    | LIMITED
    | BODY
    | NOT_FOUND
    | CONFLICT
    | bit(Problem::Unauthorized)
    | bit(Problem::TokenRevoked)
    | bit(Problem::StaleAttempt);

/// The longest failure message kept.
const ERROR_MAX_CHARS: usize = 4096;

/// Take the attempt of a task this instance was offered, and get what to run.
///
/// The payload travels only here, over HTTPS. 409 `stale-attempt` when the attempt is no
/// longer current: drop it.
#[utoipa::path(
    post,
    path = "/tasks/{id}/acquire",
    operation_id = "acquire_task",
    tag = "delegate",
    security(("session" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    request_body = Acquire,
    responses((status = 200, description = "What to run.", body = AcquiredTask), Errors<REPORT_ERRORS>)
)]
pub async fn acquire(
    State(placer): State<Placer>,
    State(masks): State<Arc<Masks>>,
    IdPath(id): IdPath<TaskId>,
    Trusted(instance): Trusted,
    AnyJson(Acquire { attempt }): AnyJson<Acquire>,
) -> Result<Json<AcquiredTask>, ApiError> {
    // Fenced in the store by attempt and holder: no read of the task before it.
    let transition = Transition::new(id, Some(attempt), TaskEvent::Acquire, Utc::now());
    let task = placer.store().transition_task(&transition.held_by(instance.id)).await?;
    tracing::info!(task.id = %task.id(), attempt = %attempt, instance.id = %instance.id, "task acquired");
    placer.task_changed(task.id());
    // The secrets' values travel here only, to this instance (never on the socket).
    let secrets = masks.deliver(placer.store().as_ref(), &task).await;
    Ok(Json(AcquiredTask {
        task_id: task.id(),
        attempt,
        task_type: task.spec.task_type.clone(),
        payload: task.spec.payload.clone(),
        execution_timeout_ms: u64::try_from(task.spec.execution_timeout.as_millis()).unwrap_or(u64::MAX),
        secrets,
    }))
}

/// Report progress of a running attempt (any JSON, at most 1 MiB).
#[utoipa::path(
    post,
    path = "/tasks/{id}/progress",
    operation_id = "report_task_progress",
    tag = "delegate",
    security(("session" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    request_body = Progress,
    responses((status = 200, description = "Where the task stands.", body = TaskStatus), Errors<REPORT_ERRORS>)
)]
pub async fn progress(
    State(placer): State<Placer>,
    State(masks): State<Arc<Masks>>,
    IdPath(id): IdPath<TaskId>,
    Trusted(instance): Trusted,
    AnyJson(Progress { attempt, mut progress }): AnyJson<Progress>,
) -> Result<Json<TaskStatus>, ApiError> {
    check_size("progress", &progress)?;
    let task = offered(&placer, id, &instance, attempt).await?;
    if let Some(values) = masks.values(placer.store().as_ref(), id).await? {
        vault::mask_json(&mut progress, &values);
    }
    let task = placer
        .store()
        .record_progress(task.id(), attempt, &progress, Utc::now())
        .await?;
    Ok(Json(status(&task)))
}

/// Append a chunk of what a running attempt printed to the task's log.
///
/// `offset` is where the chunk's first byte sits in the attempt's output, so a chunk sent
/// again (a retried request) is kept once (`already_stored`) and chunks read back in
/// order whatever order they came in. Fenced like every report: 409 `stale-attempt` for
/// an attempt that is not current, 409 `conflict` once it is not this instance's or has
/// ended. `text` is at most 256 KiB (413 above) and not empty (422).
#[utoipa::path(
    post,
    path = "/tasks/{id}/logs",
    operation_id = "append_task_log",
    tag = "delegate",
    security(("session" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    request_body = LogAppendBody,
    responses((status = 200, description = "Stored, or stored before.", body = LogAppended), Errors<REPORT_ERRORS>)
)]
pub async fn logs(
    State(placer): State<Placer>,
    State(sockets): State<Sockets>,
    State(settings): State<Arc<Settings>>,
    State(masks): State<Arc<Masks>>,
    IdPath(id): IdPath<TaskId>,
    Trusted(instance): Trusted,
    AnyJson(mut body): AnyJson<LogAppendBody>,
) -> Result<Json<LogAppended>, ApiError> {
    if body.text.is_empty() {
        return Err(ApiError::validation(
            "text",
            "a chunk carries at least one byte of text",
        ));
    }
    if body.text.len() > tasklog::CHUNK_MAX_BYTES {
        return Err(ApiError::new(
            Problem::PayloadTooLarge,
            format!(
                "text is {} bytes; a chunk carries at most {} (send longer output as several chunks)",
                body.text.len(),
                tasklog::CHUNK_MAX_BYTES
            ),
        ));
    }
    let next_offset = body
        .offset
        .checked_add(body.text.len() as u64)
        .filter(|end| i64::try_from(*end).is_ok())
        .ok_or_else(|| ApiError::validation("offset", format!("offset must be below 2^63 - 1; got {}", body.offset)))?;
    // Masked text is shorter (`***` for 4 bytes or more), so the chunk's place and the
    // next one's stay as the delegate counted them.
    if let Some(values) = masks.values(placer.store().as_ref(), id).await?
        && let Some(masked) = vault::mask(&body.text, &values)
    {
        body.text = masked;
    }
    let append = LogAppend {
        task: id,
        instance: instance.id,
        at: LogPosition {
            attempt: body.attempt,
            offset: body.offset,
        },
        text: body.text,
        stored_at: Utc::now(),
        max_bytes: settings.task_log_max_bytes as u64,
    };
    let outcome = placer.store().append_task_log(&append).await?;
    if outcome == Appended::Stored {
        placer.dispatcher().log_grew(id);
        sockets.cluster.publish(ClusterEvent::TaskLog { task: id });
    }
    Ok(Json(LogAppended {
        task_id: id,
        attempt: body.attempt,
        offset: body.offset,
        outcome,
        next_offset,
    }))
}

/// Report how an attempt ended, with its result (any JSON, at most 1 MiB).
#[utoipa::path(
    post,
    path = "/tasks/{id}/result",
    operation_id = "report_task_result",
    tag = "delegate",
    security(("session" = [])),
    params(("id" = TaskId, Path, description = "The task's id.")),
    request_body = TaskResult,
    responses((status = 200, description = "Where the task stands now.", body = TaskStatus), Errors<REPORT_ERRORS>)
)]
pub async fn result(
    State(placer): State<Placer>,
    State(sockets): State<Sockets>,
    State(masks): State<Arc<Masks>>,
    IdPath(id): IdPath<TaskId>,
    Trusted(instance): Trusted,
    AnyJson(mut report): AnyJson<TaskResult>,
) -> Result<Json<TaskStatus>, ApiError> {
    if let Some(result) = &report.result {
        check_size("result", result)?;
    }
    // What the task printed or returned may hold its secrets' values: never stored.
    if let Some(values) = masks.values(placer.store().as_ref(), id).await? {
        if let Some(result) = report.result.as_mut() {
            vault::mask_json(result, &values);
        }
        if let Some(masked) = report.error.as_deref().and_then(|e| vault::mask(e, &values)) {
            report.error = Some(masked);
        }
    }
    if let Some(code) = &report.error_code {
        switchboard_domain::policy::check_key(code).map_err(|e| ApiError::validation("error_code", e))?;
    }
    let now = Utc::now();
    let mut transition = Transition::new(id, Some(report.attempt), TaskEvent::Succeed, now).held_by(instance.id);
    transition.result = report.result;
    if report.outcome == Outcome::Failed {
        transition.event = TaskEvent::Fail;
        let detail: String = report.error.unwrap_or_else(|| "the delegate reported a failure".into());
        transition.failure = Some(Failure {
            code: report.error_code,
            retryable: report.retryable.unwrap_or(true),
            ..Failure::new(
                FailureReason::TaskError,
                detail.chars().take(ERROR_MAX_CHARS).collect::<String>(),
            )
        });
    }
    let task = placer.store().transition_task(&transition).await?;
    masks.forget(id);
    placer.metrics().task_finished(&task);
    if task.state == TaskState::Queued {
        // Its retry policy retries the failure (docs/rules.md, "Retries").
        let why = transition.failure.as_ref().map_or("", |f| f.detail.as_str());
        crate::manager::dispatch::retried(&placer, &task, report.attempt, Ending::Failed, why).await;
    }
    tracing::info!(task.id = %task.id(), attempt = %report.attempt, state = %task.state, "task finished");
    placer.task_changed(task.id());
    // A slot is free: a queued task may fit now.
    placer.dispatcher().wake();
    if task.state == TaskState::Succeeded {
        remember_success(&placer, &task, &instance).await;
    }
    if instance.single_use {
        crate::manager::housekeeping::retire_spent(&placer, &sockets).await;
    }
    Ok(Json(status(&task)))
}

/// The task, if `attempt` is its current attempt and it was offered to `instance`.
async fn offered(placer: &Placer, id: TaskId, instance: &TrustedInstance, attempt: Attempt) -> Result<Task, ApiError> {
    let task = placer.store().get_task(id).await?;
    if task.attempt != attempt {
        return Err(ApiError::new(
            Problem::StaleAttempt,
            format!(
                "attempt {attempt} is not the current attempt ({}) of this task; drop it",
                task.attempt
            ),
        ));
    }
    if task.instance_id != Some(instance.id) {
        return Err(ApiError::new(
            Problem::Conflict,
            format!(
                "attempt {attempt} of this task is not assigned to this instance (the task is {})",
                task.state
            ),
        ));
    }
    Ok(task)
}

/// Records the instance as the last success for the task's connector, so the engine tries
/// it first next time. A failure to record costs only that preference, not the result.
async fn remember_success(placer: &Placer, task: &Task, instance: &TrustedInstance) {
    let Some(connector_id) = task.spec.connector_id else {
        return;
    };
    let success = LastSuccess {
        connector_id,
        instance_id: instance.id,
        group_id: instance.group_id,
        at: Utc::now(),
    };
    if let Err(e) = placer.store().record_last_success(&success).await {
        tracing::warn!(task.id = %task.id(), error = %e, "cannot record the connector's last success");
    }
}

fn check_size(field: &str, value: &serde_json::Value) -> Result<(), ApiError> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(usize::MAX);
    if size > PAYLOAD_MAX_BYTES {
        return Err(ApiError::new(
            Problem::PayloadTooLarge,
            format!("{field} is {size} bytes of JSON; at most {PAYLOAD_MAX_BYTES} are accepted"),
        ));
    }
    Ok(())
}

fn status(task: &Task) -> TaskStatus {
    TaskStatus {
        task_id: task.id(),
        attempt: task.attempt,
        state: task.state,
    }
}
