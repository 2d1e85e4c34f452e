//! Placing one queued task: decide, validate if needed, claim, push, record.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use switchboard_domain::engine::{Context, Decision, Reason, Rejection, TaskInputs, Verdict};
use switchboard_domain::{
    Attempt, AuditEntry, Capability, CapabilityResult, Failure, FailureReason, InstanceId, NewTask, SelectionKind,
    SelectionLogEntry, Task, TaskEvent, TaskId, TaskState,
};
use switchboard_protocol::socket::{CheckResult, ServerMessage};
use switchboard_store::{
    Claim, ClaimWrite, Inserted, StoreError, StoreResult, Stored, Submission, TaskWrite, Transition, Written,
};

use super::fleet::{Freshness, Use};
use super::placer::Placer;
use super::{Placing, Question};
use crate::metrics::Validation;

/// How many decide-and-claim rounds one placement makes before leaving the task to the
/// next sweep (each lost claim race or refused validation costs one).
const MAX_ROUNDS: usize = 8;

/// What became of a placement.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// Assigned to this instance, with this attempt; the task as claimed.
    Assigned {
        instance: InstanceId,
        attempt: Attempt,
        task: Box<Task>,
    },
    /// Left queued; the engine's one-line explanation says why.
    Waiting { explanation: String },
    /// Failed at once (no registered delegate could ever take it, or validation failed).
    Failed { reason: FailureReason, explanation: String },
    /// The task is not queued (any more), or another placement of it is under way.
    NotQueued,
}

/// Places the queued task `id`, if it can be placed now.
pub async fn place(placer: &Placer, id: TaskId) -> StoreResult<Placement> {
    place_known(placer, id, None).await
}

/// Places a queued task the caller has just read or inserted: its first round starts
/// from that row instead of reading it again (a claim on a row that changed meanwhile is
/// refused by the store).
pub async fn place_task(placer: &Placer, task: Task) -> StoreResult<Placement> {
    place_known(placer, task.id(), Some(task)).await
}

/// What a submission became: the task as stored (or the one stored before under the same
/// idempotency key), and, for a new task, its first placement.
#[derive(Debug)]
pub struct Submitted {
    pub inserted: Inserted,
    /// `None` for a replay.
    pub placement: Option<StoreResult<Placement>>,
}

/// Submits a new task: the engine decides first (in memory), and the task is stored
/// already assigned to the chosen instance, with its decision and assignment log entries
/// and `audit`, in one commit; the notification leaves after it. When nobody can take the
/// task now, it is stored queued with its explanation, in the same one commit; when the
/// chosen instance filled up meanwhile, it is stored queued and placed again at once.
///
/// `Err` when the task was not stored (the idempotency key was used for another request,
/// its connector does not exist, the store failed): nothing was acknowledged then.
#[tracing::instrument(name = "submit", skip_all, fields(task.id = %spec.id))]
pub async fn submit(placer: &Placer, spec: NewTask, audit: Option<AuditEntry>) -> StoreResult<Submitted> {
    let id = spec.id;
    // Marked as being placed before it exists, so that a queue sweep reading the new row
    // leaves it to this placement, whose outcome is the answer. The id is new, so the
    // mark is free.
    let placing = placer.dispatcher().begin_placing(id);
    let mut pending = Pending {
        submission: Some(Submission {
            task: spec.clone(),
            claim: None,
            log: Vec::new(),
            log_if_claimed: Vec::new(),
            audit,
        }),
        inserted: None,
    };
    let known = Some(Task::queued(spec));
    let outcome = match placing {
        Some(placing) => place_marked(placer, id, known, placing, Some(&mut pending)).await,
        None => place_rounds(placer, id, known, Some(&mut pending)).await,
    };
    match (pending.inserted, outcome) {
        (None, Err(e)) => Err(e),
        (None, Ok(_)) => Err(StoreError::Internal("a submission's placement stored nothing".into())),
        (Some(inserted @ Inserted::Existing(_)), _) => Ok(Submitted {
            inserted,
            placement: None,
        }),
        (Some(inserted), outcome) => {
            // A new task left waiting is news to this replica's watchers (the event
            // stream); an assigned or failed one was announced by its placement.
            if matches!(outcome, Ok(Placement::Waiting { .. })) {
                placer.dispatcher().announce_new(id);
            }
            Ok(Submitted {
                inserted,
                placement: Some(outcome),
            })
        }
    }
}

/// A submission not yet stored: its first round writes it, with whatever that round
/// decided, in one commit ([`Store::submit_task`]).
struct Pending {
    submission: Option<Submission>,
    /// What storing it answered.
    inserted: Option<Inserted>,
}

impl Pending {
    /// Stores the submission with `log` (and the claim for `instance`, with
    /// `log_if_claimed`, if any). `None` when the task was stored before (a replay).
    async fn store(
        &mut self,
        placer: &Placer,
        claim: Option<InstanceId>,
        log: Vec<SelectionLogEntry>,
        log_if_claimed: Vec<SelectionLogEntry>,
    ) -> StoreResult<Option<Option<Claim>>> {
        let Some(mut submission) = self.submission.take() else {
            return Err(StoreError::Internal("a submission stored twice".into()));
        };
        submission.claim = claim;
        submission.log = log;
        submission.log_if_claimed = log_if_claimed;
        let id = submission.task.id;
        let Stored {
            inserted,
            claim,
            superseded,
        } = match claim {
            Some(instance) => {
                let store = placer.store().clone();
                offered(placer, instance, id, async move { store.submit_task(submission).await }).await?
            }
            None => placer.store().submit_task(submission).await?,
        };
        let created = matches!(inserted, Inserted::Created(_));
        if created {
            placer.metrics().task_submitted();
        }
        // Cancelled by this submission's `cancel_older` strategy, in its commit.
        for old in superseded {
            placer.metrics().task_superseded();
            placer.dispatcher().forget_explanation(old);
            placer.task_changed(old);
        }
        self.inserted = Some(inserted);
        Ok(created.then_some(claim))
    }
}

#[tracing::instrument(name = "place", skip_all, fields(task.id = %id))]
async fn place_known(placer: &Placer, id: TaskId, known: Option<Task>) -> StoreResult<Placement> {
    let Some(placing) = placer.dispatcher().begin_placing(id) else {
        return Ok(Placement::NotQueued);
    };
    place_marked(placer, id, known, placing, None).await
}

async fn place_marked(
    placer: &Placer,
    id: TaskId,
    known: Option<Task>,
    placing: Placing<'_>,
    pending: Option<&mut Pending>,
) -> StoreResult<Placement> {
    let dispatcher = placer.dispatcher();
    let outcome = place_rounds(placer, id, known, pending).await;
    drop(placing);
    if !matches!(outcome, Ok(Placement::Waiting { .. }) | Err(_)) {
        dispatcher.forget_explanation(id);
    }
    if matches!(outcome, Ok(Placement::Assigned { .. } | Placement::Failed { .. })) {
        placer.task_changed(id);
    }
    if let Ok(Placement::Assigned { task, .. }) = &outcome {
        // Its share's turn is taken (docs/rules.md, "Fair shares").
        let policies = placer.shares().policies(placer.store().as_ref()).await;
        placer.shares().assigned(&task.spec.scope, &policies);
    }
    outcome
}

/// The decide-and-claim rounds of one placement. With `pending`, the task is not stored
/// yet: the first round stores it with what it decided.
async fn place_rounds(
    placer: &Placer,
    id: TaskId,
    mut known: Option<Task>,
    mut pending: Option<&mut Pending>,
) -> StoreResult<Placement> {
    let store = placer.store();
    // A question about this task is out: its answer (or its timeout) places the task
    // again; deciding now would only ask again.
    if placer.dispatcher().asking(id).is_some() {
        return Ok(Placement::Waiting {
            explanation: "validating: waiting for a delegate's answer".to_owned(),
        });
    }
    // Chosen instances whose socket is on another replica: this one cannot ask them, so
    // this placement passes them over (the replica holding the socket asks in its sweep).
    let mut unreachable_here: BTreeSet<InstanceId> = BTreeSet::new();
    let mut last = String::new();
    for _ in 0..MAX_ROUNDS {
        let task = match known.take() {
            Some(task) => task,
            None => store.get_task(id).await?,
        };
        if task.state != TaskState::Queued {
            return Ok(Placement::NotQueued);
        }
        // A retry waits out its backoff (docs/rules.md, "Retries"); the sweep finds it
        // once it is due, as the queue's reads leave it out until then.
        if let Some(due) = task.retry_at.filter(|at| *at > Utc::now()) {
            return Ok(Placement::Waiting {
                explanation: format!("retrying: attempt {} due at {}", task.attempt.next(), due.to_rfc3339()),
            });
        }
        let decision = evaluate(placer, &task, &unreachable_here, Detail::Placement).await?;
        let attempt = task.attempt.next();
        last = decision.summary.to_string();
        if decision.chosen.is_some() && !decision.to_validate.is_empty() {
            // The kind of wait, as for any other (docs/rules.md, "Selection log and explanations"):
            // here, a capability check.
            last.push_str("; waiting for a capability check");
        }
        // The decision's entry is written with whatever follows it (the assignment, most
        // often), in one store call; only a validation question writes it at once, to
        // keep the log in order.
        let mut entries = Vec::with_capacity(2);
        if placer.dispatcher().explanation_changed(id, &last) {
            // With the effective priority the task was decided at (it ages while it waits).
            let detail = serde_json::to_value(&decision).map(|mut v| {
                if let Some(fields) = v.as_object_mut() {
                    let effective = task.effective_priority(Utc::now());
                    fields.insert("effective_priority".into(), serde_json::json!(effective));
                }
                v
            });
            entries.push(entry(id, attempt, SelectionKind::Decision, &last, detail));
        }

        let Some(instance) = decision.chosen else {
            match pending.take() {
                Some(p) => {
                    if p.store(placer, None, entries, Vec::new()).await?.is_none() {
                        return Ok(Placement::NotQueued);
                    }
                }
                None => append(placer, entries).await,
            }
            if decision.summary.can_never_match() && !task.spec.wait_for_delegate {
                return fail(placer, id, FailureReason::NoEligibleDelegate, &last).await;
            }
            if unreachable_everywhere(&decision) {
                let detail = format!(
                    "no eligible delegate can reach what the task needs: {}",
                    unreachable(&decision)
                );
                return fail(placer, id, FailureReason::ValidationFailed, &detail).await;
            }
            return Ok(Placement::Waiting { explanation: last });
        };

        if !decision.to_validate.is_empty() {
            match pending.take() {
                Some(p) => {
                    if p.store(placer, None, std::mem::take(&mut entries), Vec::new())
                        .await?
                        .is_none()
                    {
                        return Ok(Placement::NotQueued);
                    }
                }
                None => append(placer, std::mem::take(&mut entries)).await,
            }
            // Never wait here for the answer (docs/rules.md: "A submission never waits on a
            // delegate"): the task stays queued, and the answer or its timeout places it
            // again (see `answered`, `ask`).
            if ask(placer, id, attempt, instance, &decision.to_validate).await {
                // The line goes to the submitter, who may not see that instance: it is
                // named only in the selection log (redacted per reader).
                return Ok(Placement::Waiting {
                    explanation: format!("{last}: validating, waiting for a delegate's answer"),
                });
            }
            unreachable_here.insert(instance);
            continue;
        }

        let next = task.attempt.next();
        let summary = format!("assigned to instance {instance} as attempt {next}");
        let detail = serde_json::json!({"instance_id": instance, "attempt": next});
        let assigned = entry(id, next, SelectionKind::Assigned, &summary, Ok(detail));
        let claim = match pending.take() {
            // The submission and its claim in one commit; the decision's entry is kept
            // whatever becomes of the claim, since the task is stored with it.
            Some(p) => match p.store(placer, Some(instance), entries, vec![assigned]).await? {
                None => return Ok(Placement::NotQueued),
                Some(claim) => Ok(claim.unwrap_or(Claim::TaskNotQueued)),
            },
            None => {
                // The entries are written only if the claim holds: a claim lost to a full
                // or vanished instance is not worth one, as the next round decides again
                // and its decision is the one that counts (so it must not look unchanged).
                if !entries.is_empty() {
                    placer.dispatcher().forget_explanation(id);
                }
                entries.push(assigned);
                claim(placer, id, instance, task.attempt, entries).await
            }
        };
        if let Ok(Claim::Claimed(task)) = &claim {
            placer.fleet().claimed(instance).await;
            placer.metrics().task_assigned(task);
        }
        match claim? {
            Claim::Claimed(task) => {
                // Already offered (see `offered`).
                tracing::info!(task.id = %id, instance.id = %instance, attempt = %task.attempt, "task assigned");
                return Ok(Placement::Assigned {
                    instance,
                    attempt: task.attempt,
                    task,
                });
            }
            Claim::TaskNotQueued => return Ok(Placement::NotQueued),
            // Filled up or went away since the snapshot: decide again.
            Claim::InstanceFull => placer.fleet().full(instance).await,
            // Went away, began to drain or took its last task since the snapshot.
            Claim::InstanceGone | Claim::InstanceNotTaking => placer.fleet().invalidate(),
            // Its concurrency key is at its limit: no instance can take it until one of
            // the key's tasks ends (and that ending wakes the queue).
            Claim::Limited { key, running, limit } => {
                let why = limited(&key, running, limit);
                if placer.dispatcher().explanation_changed(id, &why) {
                    let detail = serde_json::json!({"concurrency_key": key, "running": running, "limit": limit});
                    record(placer, id, attempt, SelectionKind::Decision, &why, Ok(detail)).await;
                }
                return Ok(Placement::Waiting { explanation: why });
            }
        }
    }
    Ok(Placement::Waiting { explanation: last })
}

/// Claims queued `task` (still at attempt `after`) for `instance`, with `entries` written
/// only if the claim holds: one write, batched with everyone else's.
async fn claim(
    placer: &Placer,
    task: TaskId,
    instance: InstanceId,
    after: Attempt,
    entries: Vec<SelectionLogEntry>,
) -> StoreResult<Claim> {
    let write = TaskWrite::Claim(ClaimWrite {
        task,
        instance,
        at: Utc::now(),
        after: Some(after),
        log_if_claimed: entries,
    });
    let store = placer.store().clone();
    offered(placer, instance, task, async move {
        match store.write_tasks(vec![write]).await?.pop() {
            Some(Ok(Written::Claim(claim))) => Ok(claim),
            Some(Err(e)) => Err(e),
            other => Err(StoreError::Internal(format!("a claim answered {other:?}"))),
        }
    })
    .await
}

/// Runs `write` (a claim, or a submission with one) in a task of its own and, when it
/// claimed, offers the task to the instance from there: whatever becomes of the caller
/// (a submission's request timed out, its client hung up), a committed claim is always
/// offered at once, never left to the acknowledge timeout.
async fn offered<T, W>(placer: &Placer, instance: InstanceId, task: TaskId, write: W) -> StoreResult<T>
where
    T: Send + 'static + ClaimOf,
    W: Future<Output = StoreResult<T>> + Send + 'static,
{
    let placer = placer.clone();
    tokio::spawn(async move {
        let written = write.await;
        if let Ok(written) = &written
            && let Some(Claim::Claimed(claimed)) = written.claim()
        {
            // To this replica's socket of the instance, else to whichever replica holds
            // it. A socket closed since the snapshot gets nothing: the acknowledge
            // timeout or the loss handling puts the task back.
            placer.reach().offer(instance, task, claimed.attempt);
        }
        written
    })
    .await
    .map_err(|e| StoreError::Internal(format!("the task writing a claim failed: {e}")))?
}

/// What [`offered`] looks at in a write's outcome.
trait ClaimOf {
    fn claim(&self) -> Option<&Claim>;
}

impl ClaimOf for Claim {
    fn claim(&self) -> Option<&Claim> {
        Some(self)
    }
}

impl ClaimOf for Stored {
    fn claim(&self) -> Option<&Claim> {
        self.claim.as_ref()
    }
}

/// Why a task of concurrency key `key` waits, as the selection log, the dry run and the
/// queue summary say it (docs/rules.md, "Concurrency keys").
pub fn limited(key: &str, running: u32, limit: u32) -> String {
    format!("limited by concurrency key {key}: {running}/{limit} running")
}

/// The most instances a task's account may hold for an assigning decision to be logged
/// with a verdict for each; beyond it the log keeps the summary and the choice.
pub const VERDICTS_LOGGED_UP_TO: usize = 200;

/// How much of a decision to work out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// What a placement logs, against the kept snapshot ([`super::fleet::Fleet`]): the
    /// choice and the summary (no per-instance verdicts: the cheap mode), then again
    /// with a verdict for every instance of the account when nobody takes the task now
    /// (an operator will ask why) or the account is small ([`VERDICTS_LOGGED_UP_TO`]).
    Placement,
    /// A verdict for every instance of the account, against a snapshot built for it (a
    /// dry run an operator reads).
    All,
}

/// Runs the engine for `task`, skipping the instances in `also_skip` besides those that
/// already had an attempt.
pub async fn evaluate(
    placer: &Placer,
    task: &Task,
    also_skip: &BTreeSet<InstanceId>,
    detail: Detail,
) -> StoreResult<Decision> {
    let store = placer.store();
    let connector_selectors = match (task.spec.selectors.is_empty(), task.spec.connector_id) {
        (true, Some(c)) => match store.get_connector(c).await {
            Ok(connector) => Some(connector.selectors),
            // Deleted since submission: the task keeps no selectors of its own.
            Err(StoreError::NotFound(_)) => None,
            Err(e) => return Err(e),
        },
        _ => None,
    };
    // A task never attempted has no attempts to read. An instance that lost the task,
    // gave it back or failed its validation is passed over (rule 8, "Not tried"); one
    // whose run ended and was retried (failed, timed out) may run it again, and is only
    // passed over in favour of another when the policy prefers a different instance
    // (docs/rules.md, "Retries").
    let mut tried: BTreeSet<InstanceId> = BTreeSet::new();
    let mut ran: BTreeSet<InstanceId> = BTreeSet::new();
    if task.attempt != Attempt::NONE {
        let prefer_other = task.spec.retry_policy().prefer_different_instance;
        for a in store.task_attempts(task.id()).await? {
            match a.outcome {
                Some(TaskState::Failed | TaskState::TimedOut) => {
                    if prefer_other {
                        ran.insert(a.instance_id);
                    }
                }
                _ => {
                    tried.insert(a.instance_id);
                }
            }
        }
    }
    tried.extend(also_skip.iter().copied());
    let last = match task.spec.connector_id {
        Some(c) => store.last_success(c).await?,
        None => None,
    };
    let inputs = TaskInputs::for_task(&task.spec, connector_selectors.as_ref(), &tried, &ran);
    let timeout = chrono::Duration::from_std(placer.timers().heartbeat_timeout).unwrap_or(chrono::Duration::MAX);
    let context = Context {
        heartbeat_timeout: timeout,
        explain_all: detail == Detail::All,
        verdicts: detail == Detail::All,
        ..Context::new(Utc::now(), placer.dispatcher().seed())
    };
    let freshness = if detail == Detail::All {
        Freshness::Fresh
    } else {
        Freshness::Kept
    };
    let waits = task.spec.wait_for_delegate;
    let ends_task = |d: &Decision| (d.summary.can_never_match() && !waits) || unreachable_everywhere(d);
    let use_ = Use {
        freshness,
        ends_task,
        verdicts: |d: &Decision| d.chosen.is_none() || d.summary.considered <= VERDICTS_LOGGED_UP_TO,
    };
    placer.fleet().decide(placer, &inputs, last, &context, use_).await
}

/// Whether no instance is eligible and some were rejected for a capability they
/// reported they cannot reach: then the task fails `validation_failed`. Not while one of
/// them is rejected only for not answering in time ([`SILENT`]): that one may answer once
/// its result expires, so the task waits for it instead.
fn unreachable_everywhere(decision: &Decision) -> bool {
    let silent = decision.verdicts.iter().any(|v| {
        matches!(&v.verdict, Verdict::Rejected { detail: Rejection::CapabilityUnreachable { detail, .. }, .. }
            if detail.starts_with(SILENT))
    });
    decision.summary.eligible == 0 && decision.summary.count(Reason::CapabilityUnreachable) > 0 && !silent
}

/// How the result recorded for an instance that did not answer a question begins.
const SILENT: &str = "did not answer within the validation timeout";

/// Asks `instance` to check `capabilities` for `task`, and returns at once: `false` when
/// its socket is not on this manager (or cannot take the message). The answer arrives on
/// the socket ([`answered`]); a timer of `validation_timeout` settles a question nobody
/// answers as if the instance had answered that it cannot reach them, so a silent
/// instance holds the task no longer than that and is passed over, for every task that
/// needs those capabilities, for as long as a negative result lives (5 min).
async fn ask(
    placer: &Placer,
    task: TaskId,
    attempt: Attempt,
    instance: InstanceId,
    capabilities: &[Capability],
) -> bool {
    let dispatcher = placer.dispatcher();
    let request_id = uuid::Uuid::new_v4().to_string();
    let question = Question {
        task,
        attempt,
        instance,
        capabilities: capabilities.to_vec(),
    };
    // Registered before it is sent, so an answer cannot arrive first; its timer starts
    // at once, so the entry leaves the map even if this placement's future is dropped at
    // the next await (a submission's request timed out).
    dispatcher.ask(request_id.clone(), question);
    let timeout = placer.timers().validation_timeout;
    let timer = {
        let (placer, request_id) = (placer.clone(), request_id.clone());
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(question) = placer.dispatcher().settle_question(&request_id) {
                unanswered(&placer, question, timeout).await;
            }
        })
    };
    let message = ServerMessage::Validate {
        request_id: request_id.clone(),
        capabilities: capabilities.to_vec(),
    };
    if !placer.reach().send_here(instance, message) {
        dispatcher.settle_question(&request_id);
        timer.abort();
        return false;
    }
    let bases: Vec<String> = capabilities.iter().map(|c| c.basis().to_string()).collect();
    let asked = format!("asked instance {instance} to validate {}", bases.join(", "));
    record(
        placer,
        task,
        attempt,
        SelectionKind::Validation,
        &asked,
        Ok(serde_json::json!({"instance_id": instance, "capabilities": bases})),
    )
    .await;
    true
}

/// The answer to `question` arrived (the socket handler settled the question first, so
/// its timer cannot count it silent, then stored the results): records it in the task's
/// log and places the task again, in a task of its own. An answer to a question already
/// settled (by its timeout) or never asked changes only the stored results, which later
/// decisions use.
pub fn answered(placer: &Placer, question: Question, results: &[CheckResult]) {
    let instance = question.instance;
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.reachable)
        .map(|r| format!("{} ({})", r.basis, r.detail))
        .collect();
    let (outcome, summary) = if failed.is_empty() {
        (Validation::Reachable, format!("instance {instance} can reach it"))
    } else {
        (
            Validation::Unreachable,
            format!("instance {instance} cannot reach {}", failed.join(", ")),
        )
    };
    placer.metrics().validation(outcome);
    // Not on the socket's own task: placing may take a few store calls.
    let placer = placer.clone();
    tokio::spawn(async move { settled(&placer, &question, &summary).await });
}

/// Nobody answered `question` within `timeout`: the instance is recorded as unable to
/// reach what it was asked about (a negative result, with the lifetime of one), and the
/// task is placed again, elsewhere.
async fn unanswered(placer: &Placer, question: Question, timeout: Duration) {
    let instance = question.instance;
    let now = Utc::now();
    let detail = format!("{SILENT} of {}", crate::config::format_duration(timeout));
    for capability in &question.capabilities {
        let result = CapabilityResult {
            instance_id: instance,
            basis: capability.basis(),
            reachable: false,
            detail: detail.clone(),
            checked_at: now,
        };
        if let Err(e) = placer.store().record_capability_result(&result).await {
            tracing::warn!(instance.id = %instance, error = %e, "cannot record a validation timeout");
        }
    }
    placer.metrics().validation(Validation::Silent);
    tracing::info!(task.id = %question.task, instance.id = %instance, "validation question not answered in time");
    settled(placer, &question, &format!("instance {instance} {detail}")).await;
}

/// Logs how `question` was settled and places its task again.
async fn settled(placer: &Placer, question: &Question, summary: &str) {
    record(
        placer,
        question.task,
        question.attempt,
        SelectionKind::Validation,
        summary,
        Ok(serde_json::json!({"instance_id": question.instance})),
    )
    .await;
    place_again(placer.clone(), question.task).await;
}

/// [`place`] behind a boxed future: placement asks questions whose settling places again,
/// and a future type cannot contain itself.
fn place_again(placer: Placer, task: TaskId) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        if let Err(e) = place(&placer, task).await {
            tracing::warn!(task.id = %task, error = %e, "placement after a validation answer failed; the sweep retries");
        }
    })
}

/// What the instances rejected by their capability results could not reach, each
/// distinct answer once with how many gave it. The failure goes to the submitter, whose
/// key may not see those instances, so it names none: the selection log does, redacted
/// for each reader (`api::visible`).
fn unreachable(decision: &Decision) -> String {
    let mut answers: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for v in &decision.verdicts {
        if let Verdict::Rejected {
            detail: Rejection::CapabilityUnreachable { capability, detail, .. },
            ..
        } = &v.verdict
        {
            *answers
                .entry(format!("cannot reach {capability}: {detail}"))
                .or_default() += 1;
        }
    }
    let parts: Vec<String> = answers
        .into_iter()
        .map(|(answer, n)| format!("{answer} ({n} instance{})", if n == 1 { "" } else { "s" }))
        .collect();
    format!("{}; the selection log names the instances", parts.join("; "))
}

async fn fail(placer: &Placer, id: TaskId, reason: FailureReason, detail: &str) -> StoreResult<Placement> {
    let mut t = Transition::new(id, None, TaskEvent::Fail, Utc::now());
    t.failure = Some(Failure::new(reason, detail));
    match placer.store().transition_task(&t).await {
        Ok(task) => {
            placer.metrics().task_finished(&task);
            let summary = format!("failed: {}: {detail}", reason.as_str());
            record(
                placer,
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
    placer: &Placer,
    task: TaskId,
    attempt: Attempt,
    kind: SelectionKind,
    summary: &str,
    detail: Result<serde_json::Value, serde_json::Error>,
) {
    append(placer, vec![entry(task, attempt, kind, summary, detail)]).await;
}

/// One selection-log entry, stamped now.
fn entry(
    task: TaskId,
    attempt: Attempt,
    kind: SelectionKind,
    summary: &str,
    detail: Result<serde_json::Value, serde_json::Error>,
) -> SelectionLogEntry {
    SelectionLogEntry {
        task_id: task,
        attempt,
        at: Utc::now(),
        kind,
        summary: summary.to_owned(),
        detail: detail.unwrap_or(serde_json::Value::Null),
    }
}

/// Appends `entries` in one store call (none for none); like [`record`], never fails.
async fn append(placer: &Placer, entries: Vec<SelectionLogEntry>) {
    let Some(first) = entries.first() else { return };
    if let Err(e) = placer.store().append_selection_log(&entries).await {
        tracing::warn!(task.id = %first.task_id, error = %e, "cannot write the selection log");
    }
}

#[cfg(test)]
mod tests {
    //! Placement with its narrow context only: a real SQLite store, and a recording
    //! [`Reach`] in place of the sockets (an instance "connected here" is one it lists).

    use std::collections::HashSet;
    use std::sync::atomic::AtomicU64;
    use std::sync::{Arc, Mutex};

    use futures::FutureExt;
    use switchboard_domain::task::limits;
    use switchboard_domain::{
        Capacity, DelegateInstance, DelegateToken, Ident, ImageFlavour, Scope, Secret, SecretKind, Selectors, TaskType,
        TokenId, TokenStatus,
    };
    use switchboard_store::Backing;
    use switchboard_store_sqlite::SqliteStore;

    use super::*;
    use crate::config::Settings;
    use crate::manager::dispatch::{Reach, Timers};
    use crate::metrics::Metrics;

    /// The sockets as placement sees them, recording what it sends.
    #[derive(Debug, Default)]
    struct Recording {
        /// The instances whose socket is on this manager.
        here: HashSet<InstanceId>,
        sent: Mutex<Vec<(InstanceId, ServerMessage)>>,
        announced: Mutex<Vec<TaskId>>,
    }

    impl Reach for Recording {
        fn send_here(&self, instance: InstanceId, message: ServerMessage) -> bool {
            let here = self.here.contains(&instance);
            if here {
                self.sent.lock().unwrap().push((instance, message));
            }
            here
        }

        fn offer(&self, instance: InstanceId, task: TaskId, attempt: Attempt) {
            let message = ServerMessage::TaskAvailable { task_id: task, attempt };
            self.sent.lock().unwrap().push((instance, message));
        }

        fn cancel(&self, instance: InstanceId, task: TaskId, attempt: Attempt) {
            let message = ServerMessage::CancelTask { task_id: task, attempt };
            self.sent.lock().unwrap().push((instance, message));
        }

        fn announce(&self, task: TaskId) {
            self.announced.lock().unwrap().push(task);
        }

        fn current(&self, mut instance: DelegateInstance) -> DelegateInstance {
            instance.connected = instance.connected || self.here.contains(&instance.id);
            instance
        }

        fn heard_at(&self, _: InstanceId) -> Option<chrono::DateTime<Utc>> {
            None
        }
    }

    fn ident(s: &str) -> Ident {
        Ident::parse(s).unwrap()
    }

    fn secret(kind: SecretKind) -> Secret {
        let mut bytes = [0u8; 32];
        bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
        Secret::from_random(kind, bytes)
    }

    /// A placer on a fresh SQLite store, with one instance of capacity 1 in account
    /// `acme` whose socket is on this manager (what is sent to it, the returned
    /// recording keeps).
    async fn one_connected_instance(dir: &tempfile::TempDir) -> (Placer, InstanceId, Arc<Recording>) {
        let store = SqliteStore::open(&dir.path().join("switchboard.db")).await.unwrap();
        let store: Arc<dyn Backing> = Arc::new(store);
        let scope = Scope::parse_path("acme").unwrap();
        let token = DelegateToken {
            id: TokenId::new(),
            name: ident("t"),
            scope: scope.clone(),
            status: TokenStatus::Active,
            created_at: Utc::now(),
            revoked_at: None,
            jit: None,
        };
        store
            .create_token(&token, &secret(SecretKind::DelegateToken).hash())
            .await
            .unwrap();
        let group = store
            .upsert_group(&scope, &ident("pool"), &Selectors::new(), Utc::now())
            .await
            .unwrap();
        let instance = DelegateInstance {
            id: InstanceId::new(),
            group_id: group.id,
            token_id: token.id,
            hostname: "host".into(),
            version: "1.0.0".into(),
            flavour: ImageFlavour::Minimal,
            tags: Selectors::new(),
            task_types: vec![TaskType(ident("echo"))],
            capacity: Capacity::new(1).unwrap(),
            active_tasks: 0,
            registered_at: Utc::now(),
            last_heartbeat_at: Utc::now(),
            connected: true,
            paused: None,
            draining: false,
            max_tasks: None,
            tasks_taken: 0,
        };
        store
            .register_instance(&instance, &secret(SecretKind::Session).hash())
            .await
            .unwrap();
        let recording = Arc::new(Recording {
            here: HashSet::from([instance.id]),
            ..Recording::default()
        });
        let placer = Placer::new(
            store.clone(),
            store,
            Arc::new(AtomicU64::new(0)),
            Arc::new(Metrics::default()),
            Timers::from(&Settings::default()),
            recording.clone(),
        );
        (placer, instance.id, recording)
    }

    fn new_task() -> NewTask {
        NewTask {
            id: TaskId::new(),
            scope: Scope::parse_path("acme").unwrap(),
            task_type: TaskType(ident("echo")),
            payload: serde_json::json!({}),
            selectors: Selectors::new(),
            connector_id: None,
            capabilities: vec![],
            priority: 0,
            assign_timeout: limits::DEFAULT_ASSIGN_TIMEOUT,
            execution_timeout: limits::DEFAULT_EXECUTION_TIMEOUT,
            max_attempts: 1,
            wait_for_delegate: true,
            idempotency: None,
            concurrency: None,
            retry: None,
            secrets: Vec::new(),
            created_at: Utc::now(),
        }
    }

    /// The offers sent since the last call.
    fn offers(recording: &Recording) -> Vec<(TaskId, Attempt)> {
        let sent = std::mem::take(&mut *recording.sent.lock().unwrap());
        sent.into_iter()
            .filter_map(|(_, message)| match message {
                ServerMessage::TaskAvailable { task_id, attempt } => Some((task_id, attempt)),
                _ => None,
            })
            .collect()
    }

    #[tokio::test]
    async fn a_submission_is_stored_assigned_in_one_batch_and_offered() {
        let dir = tempfile::tempdir().unwrap();
        let (placer, instance, recording) = one_connected_instance(&dir).await;
        let before = placer.store().batch_stats().unwrap().batches;
        let spec = new_task();
        let id = spec.id;
        let submitted = submit(&placer, spec, None).await.unwrap();
        assert!(matches!(
            submitted.placement,
            Some(Ok(Placement::Assigned { instance: i, attempt: Attempt(1), .. })) if i == instance
        ));
        assert_eq!(
            placer.store().batch_stats().unwrap().batches - before,
            1,
            "the task, its claim and its log entries are one commit"
        );
        let stored = placer.store().get_task(id).await.unwrap();
        assert_eq!(
            (stored.state, stored.instance_id),
            (TaskState::Assigned, Some(instance))
        );
        let log: Vec<SelectionKind> = placer
            .store()
            .selection_log(id)
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.kind)
            .collect();
        assert_eq!(log, vec![SelectionKind::Decision, SelectionKind::Assigned]);
        assert_eq!(offers(&recording), vec![(id, Attempt(1))]);
        assert_eq!(
            *recording.announced.lock().unwrap(),
            vec![id],
            "the other replicas' long polls hear of the assignment"
        );
    }

    /// A placement dropped after any number of polls (its caller was cancelled at that
    /// await) leaves the task either untouched, and then the next placement assigns it,
    /// or assigned and offered: never assigned without an offer, never marked as being
    /// placed for ever.
    #[tokio::test]
    async fn a_placement_cancelled_at_any_await_leaves_the_task_offered_or_to_the_next_placement() {
        for polls in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let (placer, instance, recording) = one_connected_instance(&dir).await;
            // Stored queued, as the sweep finds it.
            let task = Task::queued(new_task());
            let id = task.id();
            placer.store().insert_task(&task.spec).await.unwrap();
            let mut placing = Box::pin(place(&placer, id));
            let mut finished = false;
            for _ in 0..polls {
                if placing.as_mut().now_or_never().is_some() {
                    finished = true;
                    break;
                }
                // Lets the committer and the store's threads run between polls.
                tokio::task::yield_now().await;
            }
            drop(placing);
            // Whatever was handed to the committer is written by now, or is being: a
            // placement started after it waits for it in the committer's queue.
            let again = place(&placer, id).await.unwrap();
            let stored = placer.store().get_task(id).await.unwrap();
            assert_eq!(
                (stored.state, stored.instance_id),
                (TaskState::Assigned, Some(instance)),
                "after {polls} polls (finished: {finished}), placed again: {again:?}"
            );
            // Offered exactly once, for the stored attempt, whichever placement claimed.
            let mut offered = offers(&recording);
            for _ in 0..100 {
                if !offered.is_empty() {
                    break;
                }
                tokio::task::yield_now().await;
                offered = offers(&recording);
            }
            assert_eq!(offered, vec![(id, stored.attempt)], "after {polls} polls");
            assert!(
                placer.dispatcher().begin_placing(id).is_some(),
                "the task stays marked as being placed after {polls} polls"
            );
        }
    }
}
