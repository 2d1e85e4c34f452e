//! Placing one queued task: decide, validate if needed, claim, push, record.

use std::collections::{BTreeSet, HashSet};
use std::time::Duration;

use chrono::Utc;
use switchboard_domain::engine::{Context, Decision, Reason, Registry, TaskInputs, Verdict, decide};
use switchboard_domain::{
    Attempt, Capability, Failure, FailureReason, GroupId, Ident, InstanceId, Scope, SelectionKind, SelectionLogEntry,
    Task, TaskEvent, TaskId, TaskState,
};
use switchboard_protocol::socket::ServerMessage;
use switchboard_store::{Claim, StoreError, StoreResult, Transition};

use crate::metrics::Validation;
use crate::state::AppState;

/// How many decide-and-claim rounds one placement makes before leaving the task to the
/// next sweep (each lost claim race or refused validation costs one).
const MAX_ROUNDS: usize = 8;

/// How long a chosen instance has to answer a validation question.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(15);

/// What became of a placement.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Assigned to this instance, with this attempt.
    Assigned { instance: InstanceId, attempt: Attempt },
    /// Left queued; the engine's one-line explanation says why.
    Waiting { explanation: String },
    /// Failed at once (no registered delegate could ever take it, or validation failed).
    Failed { reason: FailureReason, explanation: String },
    /// The task is not queued (any more), or another placement of it is under way.
    NotQueued,
}

/// Places the queued task `id`, if it can be placed now.
pub async fn place(state: &AppState, id: TaskId) -> StoreResult<Placement> {
    let dispatcher = state.dispatcher();
    if !dispatcher.begin_placing(id) {
        return Ok(Placement::NotQueued);
    }
    let outcome = place_rounds(state, id).await;
    dispatcher.end_placing(id);
    if !matches!(outcome, Ok(Placement::Waiting { .. }) | Err(_)) {
        dispatcher.forget_explanation(id);
    }
    if matches!(outcome, Ok(Placement::Assigned { .. } | Placement::Failed { .. })) {
        crate::cluster::task_changed(state, id);
    }
    outcome
}

async fn place_rounds(state: &AppState, id: TaskId) -> StoreResult<Placement> {
    let store = state.store();
    // Instances that did not answer a validation question in time: skipped for this
    // placement only (they get the next one).
    let mut silent: BTreeSet<InstanceId> = BTreeSet::new();
    let mut last = String::new();
    for _ in 0..MAX_ROUNDS {
        let task = store.get_task(id).await?;
        if task.state != TaskState::Queued {
            return Ok(Placement::NotQueued);
        }
        let decision = evaluate(state, &task, &silent, false).await?;
        let attempt = task.attempt.next();
        last = decision.summary.to_string();
        if state.dispatcher().explanation_changed(id, &last) {
            record(
                state,
                id,
                attempt,
                SelectionKind::Decision,
                &last,
                serde_json::to_value(&decision),
            )
            .await;
        }

        let Some(instance) = decision.chosen else {
            if decision.summary.can_never_match() && !task.spec.wait_for_delegate {
                return fail(state, id, FailureReason::NoEligibleDelegate, &last).await;
            }
            if decision.summary.eligible == 0 && decision.summary.count(Reason::CapabilityUnreachable) > 0 {
                let detail = format!(
                    "no eligible delegate can reach what the task needs: {}",
                    unreachable(&decision)
                );
                return fail(state, id, FailureReason::ValidationFailed, &detail).await;
            }
            return Ok(Placement::Waiting { explanation: last });
        };

        if !decision.to_validate.is_empty() {
            match validate(state, id, attempt, instance, &decision.to_validate).await {
                Answer::Reachable => {}
                // The answers are stored: the next round's decision rejects the instance
                // by its negative result (rule 8), or picks another.
                Answer::Unreachable => continue,
                Answer::Silent => {
                    silent.insert(instance);
                    continue;
                }
            }
        }

        match store.claim_task(id, instance, Utc::now()).await? {
            Claim::Claimed(task) => {
                state.metrics().task_assigned(&task);
                let summary = format!("assigned to instance {instance} as attempt {}", task.attempt);
                let detail = serde_json::json!({"instance_id": instance, "attempt": task.attempt});
                record(state, id, task.attempt, SelectionKind::Assigned, &summary, Ok(detail)).await;
                // To this replica's socket of the instance, else to whichever replica
                // holds it. A socket closed since the snapshot gets nothing: the
                // acknowledge timeout or the loss handling puts the task back.
                crate::cluster::offer(state, instance, id, task.attempt);
                tracing::info!(task.id = %id, instance.id = %instance, attempt = %task.attempt, "task assigned");
                return Ok(Placement::Assigned {
                    instance,
                    attempt: task.attempt,
                });
            }
            Claim::TaskNotQueued => return Ok(Placement::NotQueued),
            // Filled up or went away since the snapshot: decide again.
            Claim::InstanceFull | Claim::InstanceGone => continue,
        }
    }
    Ok(Placement::Waiting { explanation: last })
}

/// Runs the engine for `task` against a fresh snapshot. `explain_all` lists every
/// instance of the account (a dry run); placements skip that work.
pub async fn evaluate(
    state: &AppState,
    task: &Task,
    also_skip: &BTreeSet<InstanceId>,
    explain_all: bool,
) -> StoreResult<Decision> {
    let store = state.store();
    let connector_selectors = match (task.spec.selectors.is_empty(), task.spec.connector_id) {
        (true, Some(c)) => match store.get_connector(c).await {
            Ok(connector) => Some(connector.selectors),
            // Deleted since submission: the task keeps no selectors of its own.
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    let mut tried: BTreeSet<InstanceId> = store
        .task_attempts(task.id())
        .await?
        .into_iter()
        .map(|a| a.instance_id)
        .collect();
    tried.extend(also_skip.iter().copied());
    let registry = snapshot(state, task.spec.scope.account_id(), task.spec.connector_id).await?;
    let inputs = TaskInputs::for_task(&task.spec, connector_selectors.as_ref(), &tried);
    let timeout = chrono::Duration::from_std(state.settings().heartbeat_timeout).unwrap_or(chrono::Duration::MAX);
    let context = Context {
        heartbeat_timeout: timeout,
        explain_all,
        ..Context::new(Utc::now(), state.dispatcher().seed())
    };
    Ok(state.metrics().time_decision(|| decide(&inputs, &registry, &context)))
}

/// The registry of one account as this manager sees it now: the store's groups,
/// instances, capability results and connector memory, with this manager's sockets and
/// heartbeats laid over (they are ahead of the store).
async fn snapshot(
    state: &AppState,
    account: &Ident,
    connector: Option<switchboard_domain::ConnectorId>,
) -> StoreResult<Registry> {
    let store = state.store();
    let groups = store.list_groups(Some(&Scope::account(account.clone()))).await?;
    let in_account: HashSet<GroupId> = groups.iter().map(|g| g.id).collect();
    let instances: Vec<_> = store
        .list_instances(None)
        .await?
        .into_iter()
        .filter(|i| in_account.contains(&i.group_id))
        .map(|mut i| {
            // One manager owns every socket of a single-node install, so its hub is the
            // truth about connections (a crash leaves stale `connected` flags behind).
            // Replicas sharing PostgreSQL also trust the flag the socket's replica keeps;
            // a crashed replica's flags go stale with their heartbeats (rule: liveness).
            let here = state.hub().is_connected(i.id);
            i.connected = here || (state.cluster().is_shared() && i.connected);
            if let Some(beat) = state.heartbeats().latest(i.id) {
                i.last_heartbeat_at = i.last_heartbeat_at.max(beat.at);
            }
            i
        })
        .collect();
    let ids: Vec<InstanceId> = instances.iter().map(|i| i.id).collect();
    let results = store.capability_results(&ids).await?;
    let last = match connector {
        Some(c) => store.last_success(c).await?.into_iter().collect(),
        None => Vec::new(),
    };
    Ok(Registry::new(groups, instances, results, last))
}

enum Answer {
    Reachable,
    Unreachable,
    Silent,
}

impl Answer {
    fn outcome(&self) -> Validation {
        match self {
            Answer::Reachable => Validation::Reachable,
            Answer::Unreachable => Validation::Unreachable,
            Answer::Silent => Validation::Silent,
        }
    }
}

/// Asks `instance` to check `capabilities` and waits for its answer (which the socket
/// handler also stores, for later tasks).
async fn validate(
    state: &AppState,
    task: TaskId,
    attempt: Attempt,
    instance: InstanceId,
    capabilities: &[Capability],
) -> Answer {
    let dispatcher = state.dispatcher();
    let request_id = uuid::Uuid::new_v4().to_string();
    let answer = dispatcher.expect_validation(request_id.clone());
    let question = ServerMessage::Validate {
        request_id: request_id.clone(),
        capabilities: capabilities.to_vec(),
    };
    if !state.hub().send(instance, question) {
        dispatcher.forget_validation(&request_id);
        state.metrics().validation(Validation::Silent);
        return Answer::Silent;
    }
    let bases: Vec<String> = capabilities.iter().map(|c| c.basis().to_string()).collect();
    let asked = format!("asked instance {instance} to validate {}", bases.join(", "));
    record(
        state,
        task,
        attempt,
        SelectionKind::Validation,
        &asked,
        Ok(serde_json::json!({"instance_id": instance, "capabilities": bases})),
    )
    .await;
    let result = tokio::time::timeout(VALIDATION_TIMEOUT, answer).await;
    dispatcher.forget_validation(&request_id);
    let (answer, summary) = match result {
        Ok(Ok(results)) if results.iter().all(|r| r.reachable) => {
            (Answer::Reachable, format!("instance {instance} can reach it"))
        }
        Ok(Ok(results)) => {
            let failed: Vec<String> = results
                .iter()
                .filter(|r| !r.reachable)
                .map(|r| format!("{} ({})", r.basis, r.detail))
                .collect();
            (
                Answer::Unreachable,
                format!("instance {instance} cannot reach {}", failed.join(", ")),
            )
        }
        _ => (
            Answer::Silent,
            format!(
                "instance {instance} did not answer within {}s",
                VALIDATION_TIMEOUT.as_secs()
            ),
        ),
    };
    record(
        state,
        task,
        attempt,
        SelectionKind::Validation,
        &summary,
        Ok(serde_json::json!({"instance_id": instance})),
    )
    .await;
    state.metrics().validation(answer.outcome());
    answer
}

/// What each instance rejected by its capability results could not reach.
fn unreachable(decision: &Decision) -> String {
    let parts: Vec<String> = decision
        .verdicts
        .iter()
        .filter_map(|v| match &v.verdict {
            Verdict::Rejected { detail, .. } if detail.reason() == Reason::CapabilityUnreachable => {
                Some(format!("{} ({}): {detail}", v.hostname, v.instance_id))
            }
            _ => None,
        })
        .collect();
    parts.join("; ")
}

async fn fail(state: &AppState, id: TaskId, reason: FailureReason, detail: &str) -> StoreResult<Placement> {
    let mut t = Transition::new(id, None, TaskEvent::Fail, Utc::now());
    t.failure = Some(Failure {
        reason,
        detail: detail.to_owned(),
    });
    match state.store().transition_task(&t).await {
        Ok(task) => {
            state.metrics().task_finished(&task);
            let summary = format!("failed: {}: {detail}", reason.as_str());
            record(
                state,
                id,
                task.attempt.next(),
                SelectionKind::Ended,
                &summary,
                Ok(serde_json::json!({"reason": reason})),
            )
            .await;
            tracing::info!(task.id = %id, reason = reason.as_str(), "task failed at placement");
            Ok(Placement::Failed {
                reason,
                explanation: detail.to_owned(),
            })
        }
        // Cancelled or placed by someone else meanwhile.
        Err(StoreError::Conflict(_)) => Ok(Placement::NotQueued),
        Err(e) => Err(e),
    }
}

/// Appends one selection-log entry. The log explains; it never blocks the lifecycle, so a
/// failed write is logged and dropped.
pub(crate) async fn record(
    state: &AppState,
    task: TaskId,
    attempt: Attempt,
    kind: SelectionKind,
    summary: &str,
    detail: Result<serde_json::Value, serde_json::Error>,
) {
    let entry = SelectionLogEntry {
        task_id: task,
        attempt,
        at: Utc::now(),
        kind,
        summary: summary.to_owned(),
        detail: detail.unwrap_or(serde_json::Value::Null),
    };
    if let Err(e) = state.store().append_selection_log(&[entry]).await {
        tracing::warn!(task.id = %task, error = %e, "cannot write the selection log");
    }
}
