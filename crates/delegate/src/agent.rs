//! The delegate's main loop: register, keep the session, react to the manager.
//!
//! [`run`] registers (see [`crate::register`]), prints the one `registered as` line that
//! scripts and tests wait for, starts the client library's [`Session`] and then serves
//! its events until something ends the process:
//!
//! | what happens                        | what the delegate does                     | exit |
//! |-------------------------------------|--------------------------------------------|------|
//! | `validate`                          | runs the checks concurrently and answers   |      |
//! | `cancel_task`                       | cancels that attempt if it runs here       |      |
//! | `task_available`                    | acquires and runs it (not while draining)  |      |
//! | `drain`                             | takes nothing new, exits once nothing runs | 0    |
//! | its last task ended (`--max-tasks`, `--jit-config`) | exits once reported        | 0    |
//! | a close as retired (4004)           | stops                                      | 0    |
//! | `revoked`, or a close as revoked    | stops                                      | 3    |
//! | the session ends for another reason | stops                                      | 1    |
//! | SIGTERM or ctrl-c                   | sends `draining`, takes nothing new, lets running tasks finish for `--drain-timeout`, then cancels them | 0 |
//! | a second SIGTERM or ctrl-c          | cancels running tasks, closes the socket   | 0    |
//! | registration refused (4xx)          | logs the manager's explanation             | 1    |
//!
//! The loop is written so each event is handled by a plain method ([`Agent::on_event`])
//! that returns what to do next, which the tests call directly.

use std::sync::Arc;
use std::time::Duration;

use switchboard_client::Tls;
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient};
use switchboard_domain::{Attempt, Capacity, Ident, TaskId};
use switchboard_protocol::delegate::{Outcome, Registered, TaskResult};
use switchboard_protocol::socket::{DelegateMessage, RunningTask, ServerMessage, close};
use tokio::task::{JoinError, JoinSet};

use crate::register::{NotRegistered, register_with_retry};
use crate::registry::Registry;
use crate::runlog::{Entry, Report, RunLog};
use crate::settings::Settings;
use crate::tasks::{BuiltIn, Runner, TaskOutcome};
use crate::{checks, probe};

/// How the process ends. Code 2 (bad settings) is decided in `main`, before this runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Stopped on request (signal, drain): 0.
    Done,
    /// Registration refused, or the session ended for good: 1.
    Failed,
    /// The token was revoked: 3, so a supervisor can tell "needs a new token" apart.
    Revoked,
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Done => 0,
            Exit::Failed => 1,
            Exit::Revoked => 3,
        }
    }
}

/// How long to wait for the session to close its socket politely on the way out, so the
/// manager marks the instance disconnected at once instead of at its silence limit.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How many stop signals (SIGTERM, ctrl-c) arrived so far: the first drains, the second
/// stops at once.
pub type Stops = tokio::sync::watch::Receiver<u32>;

/// Resolves once at least `n` stop signals arrived (never, if the sender is gone first).
async fn stopped(mut stops: Stops, n: u32) {
    if stops.wait_for(|count| *count >= n).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Runs the delegate until it should exit; `stops` counts SIGTERM and ctrl-c.
pub async fn run(settings: &Settings, stops: Stops) -> Exit {
    let shutdown = stopped(stops.clone(), 1);
    tokio::pin!(shutdown);
    // Up before registration, so a liveness probe passes while it retries.
    let health = crate::health::Health::default();
    if let Some(addr) = settings.health_listen {
        match crate::health::serve(addr, health.clone()).await {
            Ok(bound) => tracing::info!(address = %bound, "serving /healthz"),
            Err(e) => {
                tracing::error!(address = %addr, error = %e, "cannot serve /healthz");
                return Exit::Failed;
            }
        }
    }
    let http = match settings.tls.http_client().timeout(Duration::from_secs(30)).build() {
        Ok(http) => http,
        Err(e) => {
            tracing::error!(error = %e, "cannot set up an HTTP client");
            return Exit::Failed;
        }
    };
    let request = settings.register_request();
    let registered = match register_with_retry(
        &http,
        &settings.manager,
        settings.token.expose(),
        &request,
        Backoff::default(),
        &mut shutdown,
    )
    .await
    {
        Ok(registered) => registered,
        Err(NotRegistered::Refused(message)) => {
            tracing::error!("{message}");
            return Exit::Failed;
        }
        Err(NotRegistered::Stopped) => {
            tracing::info!("shutdown requested before registration completed");
            return Exit::Done;
        }
    };
    println!("{}", registered_line(&registered, &settings.name));
    tracing::info!(
        instance.id = %registered.instance_id,
        group.id = %registered.group_id,
        delegate.name = %settings.name,
        "registered"
    );
    let run_log = match &settings.run_log {
        None => None,
        Some(path) => match RunLog::open(path) {
            Ok(log) => Some(Arc::new(log)),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot open the run log");
                return Exit::Failed;
            }
        },
    };
    let registered_max_tasks = registered.max_tasks;
    let tasks = TaskClient::new(http, &settings.manager, &registered.session_token);
    let session = Session::start_with_tls(registered, Backoff::default(), settings.tls.clone());
    let agent = Agent::new(
        settings.capacity,
        &settings.task_types,
        settings.check_timeout,
        &settings.tls,
    )
    .with_tasks(tasks)
    .with_run_log(run_log)
    .with_max_tasks(registered_max_tasks.or(settings.max_tasks))
    .with_drain_timeout(settings.drain_timeout)
    .with_health(health);
    agent.serve(session, stops).await
}

/// The line printed once registered; tests and scripts wait for it.
pub fn registered_line(registered: &Registered, name: &Ident) -> String {
    let mut scope = registered.account.to_string();
    for part in [&registered.org, &registered.project].into_iter().flatten() {
        scope.push('/');
        scope.push_str(part.as_str());
    }
    format!(
        "switchboard-delegate registered as {} in {scope} (group {name})",
        registered.instance_id
    )
}

/// What to do after an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    Exit(Exit),
}

/// The state the loop keeps between events.
#[derive(Debug)]
pub struct Agent {
    registry: Arc<Registry>,
    /// Runs acquired tasks; kept here so the loop owns the one runner and its HTTP
    /// connection pool.
    runner: Runner,
    /// The manager's task endpoints for this instance (absent in tests that only drive
    /// events).
    tasks: Option<TaskClient>,
    /// Where each attempt run is recorded (`--run-log`), if anywhere.
    run_log: Option<Arc<RunLog>>,
    /// Offered tasks being acquired, run and reported, each on its own.
    jobs: JoinSet<()>,
    /// The client capability checks use (no redirects, see `probe.rs`).
    http: reqwest::Client,
    check_timeout: Duration,
    /// Validations in progress. Each answers on its own, so a slow check never holds up
    /// heartbeats, cancels or other validations.
    validations: JoinSet<DelegateMessage>,
    draining: bool,
    /// How many tasks it may take in its life (single-use), and how many it took.
    max_tasks: Option<u32>,
    taken: u32,
    /// How long running tasks may finish after the first stop signal.
    drain_timeout: Duration,
    /// What `/healthz` says of the socket (`--health-listen`).
    health: crate::health::Health,
}

/// One thing the loop waits for.
enum Input {
    Running(Vec<RunningTask>),
    Validated(Result<DelegateMessage, JoinError>),
    /// An offered task's job ended (it logs its own outcome).
    JobDone,
    Drained,
    /// The `n`th stop signal.
    Stop(u32),
    /// The drain after a stop signal ran out of time.
    DrainTimedOut,
    Event(Option<Event>),
}

impl Agent {
    /// `tls` is whom capability checks and `http_check` tasks trust over HTTPS.
    pub fn new(capacity: Capacity, task_types: &[BuiltIn], check_timeout: Duration, tls: &Tls) -> Agent {
        Agent {
            registry: Registry::new(capacity),
            runner: Runner::with_tls(task_types, tls),
            http: probe::http_client(tls),
            check_timeout,
            validations: JoinSet::new(),
            draining: false,
            tasks: None,
            run_log: None,
            jobs: JoinSet::new(),
            max_tasks: None,
            taken: 0,
            drain_timeout: Duration::ZERO,
            health: crate::health::Health::default(),
        }
    }

    /// Reports the socket's state to `health` (what `/healthz` answers).
    pub fn with_health(mut self, health: crate::health::Health) -> Agent {
        self.health = health;
        self
    }

    /// Takes at most `max_tasks` tasks (single-use), then exits once they ended.
    pub fn with_max_tasks(mut self, max_tasks: Option<u32>) -> Agent {
        self.max_tasks = max_tasks;
        self
    }

    /// Lets running tasks finish for `timeout` after the first stop signal.
    pub fn with_drain_timeout(mut self, timeout: Duration) -> Agent {
        self.drain_timeout = timeout;
        self
    }

    /// Gives the agent the task endpoints, so it acquires and runs what it is offered.
    pub fn with_tasks(mut self, tasks: TaskClient) -> Agent {
        self.tasks = Some(tasks);
        self
    }

    /// Records every attempt this agent runs in `run_log`.
    pub fn with_run_log(mut self, run_log: Option<Arc<RunLog>>) -> Agent {
        self.run_log = run_log;
        self
    }

    /// Serves `session` until the delegate should exit, then closes it.
    pub async fn serve(mut self, mut session: Session, mut stops: Stops) -> Exit {
        let mut running = self.registry.subscribe();
        let mut seen_stops = *stops.borrow_and_update();
        let drain_deadline = tokio::time::sleep(Duration::MAX);
        tokio::pin!(drain_deadline);
        let mut drain_timing = false;
        if seen_stops > 0 {
            // Stopped before the loop began: as the first signal.
            seen_stops = 0;
            stops.mark_changed();
        }
        loop {
            let input = tokio::select! {
                Ok(()) = stops.changed() => Input::Stop(*stops.borrow_and_update()),
                () = &mut drain_deadline, if drain_timing => Input::DrainTimedOut,
                Ok(()) = running.changed() => Input::Running(running.borrow_and_update().clone()),
                Some(done) = self.validations.join_next() => Input::Validated(done),
                Some(_) = self.jobs.join_next() => Input::JobDone,
                // Every job done too, so the last results are reported before the exit.
                () = self.registry.idle(), if self.draining && self.jobs.is_empty() => Input::Drained,
                event = session.events.recv() => Input::Event(event),
            };
            let step = match input {
                Input::Stop(count) if count > seen_stops => {
                    let first = seen_stops == 0;
                    seen_stops = count;
                    if first {
                        self.begin_drain(&session, "stop signal").await;
                    }
                    if count >= 2 || self.drain_timeout.is_zero() {
                        tracing::info!("stop requested: cancelling running tasks and disconnecting");
                        self.registry.cancel_all();
                        Step::Exit(Exit::Done)
                    } else {
                        tracing::info!(
                            running = self.registry.running().len(),
                            drain_timeout_s = self.drain_timeout.as_secs(),
                            "stop requested: draining (taking nothing new, letting running tasks finish); a second signal stops at once"
                        );
                        drain_deadline
                            .as_mut()
                            .reset(tokio::time::Instant::now() + self.drain_timeout);
                        drain_timing = true;
                        Step::Continue
                    }
                }
                Input::Stop(_) => Step::Continue,
                Input::DrainTimedOut => {
                    tracing::warn!(
                        running = self.registry.running().len(),
                        "the drain timeout passed: cancelling the tasks still running"
                    );
                    self.registry.cancel_all();
                    Step::Exit(Exit::Done)
                }
                Input::Running(list) => {
                    session.set_running(list);
                    Step::Continue
                }
                Input::Validated(Ok(answer)) => {
                    if let Err(e) = session.send(answer).await {
                        tracing::warn!(error = %e, "cannot send a validation result");
                    }
                    Step::Continue
                }
                Input::Validated(Err(e)) => {
                    tracing::error!(error = %e, "a capability check failed to complete");
                    Step::Continue
                }
                Input::JobDone => Step::Continue,
                Input::Drained => {
                    tracing::info!("drained: nothing runs any more, exiting");
                    Step::Exit(Exit::Done)
                }
                Input::Event(event) => self.on_event(event),
            };
            if let Step::Exit(exit) = step {
                close(session).await;
                return exit;
            }
        }
    }

    /// Stops taking tasks and tells the manager, so it offers nothing more and gives back
    /// at once an offer not yet acquired.
    async fn begin_drain(&mut self, session: &Session, reason: &str) {
        // New offers are refused here; a job already past its acquire still launches.
        self.draining = true;
        let message = DelegateMessage::Draining {
            reason: reason.to_owned(),
        };
        if let Err(e) = session.send(message).await {
            // Its offers go back when the socket closes, or at the acknowledge timeout.
            tracing::warn!(error = %e, "cannot tell the manager this delegate is draining");
        }
    }

    /// Handles one event from the session (`None`: the session is gone).
    pub fn on_event(&mut self, event: Option<Event>) -> Step {
        match event {
            None => {
                tracing::error!("the session stopped without saying why");
                Step::Exit(Exit::Failed)
            }
            Some(Event::Connected) => {
                tracing::info!("connected to the manager");
                self.health.set_connected(true);
                Step::Continue
            }
            Some(Event::Disconnected { reason }) => {
                tracing::warn!(%reason, "lost the connection to the manager; reconnecting");
                self.health.set_connected(false);
                Step::Continue
            }
            Some(Event::Ended { reason }) if reason.contains(&format!("({})", close::RETIRED)) => {
                tracing::info!(%reason, "this single-use instance is done; exiting");
                Step::Exit(Exit::Done)
            }
            Some(Event::Ended { reason }) if ended_by_revocation(&reason) => {
                tracing::error!(%reason, "this delegate's token was revoked; stopping");
                Step::Exit(Exit::Revoked)
            }
            Some(Event::Ended { reason }) => {
                tracing::error!(%reason, "the session with the manager ended; stopping");
                Step::Exit(Exit::Failed)
            }
            Some(Event::Message(message)) => self.on_message(message),
        }
    }

    fn on_message(&mut self, message: ServerMessage) -> Step {
        match message {
            // The session consumes hellos itself; one here is harmless.
            ServerMessage::Hello { .. } => Step::Continue,
            ServerMessage::Validate {
                request_id,
                capabilities,
            } => {
                tracing::info!(%request_id, count = capabilities.len(), "checking capabilities");
                let http = self.http.clone();
                let timeout = self.check_timeout;
                self.validations.spawn(async move {
                    let results = checks::check_all(&http, &capabilities, timeout).await;
                    DelegateMessage::ValidationResult { request_id, results }
                });
                Step::Continue
            }
            ServerMessage::TaskAvailable { task_id, attempt } => {
                let Some(tasks) = self.tasks.clone() else {
                    tracing::warn!(task.id = %task_id, task.attempt = %attempt, "offered a task, but no task endpoints are set up");
                    return Step::Continue;
                };
                if self.draining {
                    // Not acquiring it lets it go back to the queue at the acknowledge timeout.
                    tracing::info!(task.id = %task_id, task.attempt = %attempt, "draining: not taking the offered task");
                    return Step::Continue;
                }
                let (registry, runner) = (Arc::clone(&self.registry), self.runner.clone());
                let run_log = self.run_log.clone();
                self.jobs
                    .spawn(run_offered(tasks, registry, runner, run_log, task_id, attempt));
                self.taken += 1;
                if self.max_tasks.is_some_and(|max| self.taken >= max) {
                    // Single-use: what it took is all it takes; it exits once that ended.
                    tracing::info!(
                        taken = self.taken,
                        "took the tasks this single-use delegate takes; exiting once they end"
                    );
                    self.draining = true;
                }
                Step::Continue
            }
            ServerMessage::CancelTask { task_id, attempt } => {
                if self.registry.cancel(task_id, attempt) {
                    tracing::info!(task.id = %task_id, task.attempt = %attempt, "cancelling task");
                } else {
                    tracing::info!(task.id = %task_id, task.attempt = %attempt, "asked to cancel a task that does not run here");
                }
                Step::Continue
            }
            ServerMessage::Drain { reason } => {
                tracing::info!(%reason, running = self.registry.running().len(), "draining: finishing running tasks, taking no new ones");
                self.registry.stop_accepting();
                self.draining = true;
                Step::Continue
            }
            ServerMessage::Revoked { reason } => {
                tracing::error!(%reason, "this delegate's token was revoked; stopping");
                Step::Exit(Exit::Revoked)
            }
        }
    }
}

/// Whether the session ended because the manager closed the socket as "token revoked".
/// The client library reports a close as `closed by the manager (CODE): REASON`; this
/// reads the code back from that text, as the library offers nothing more structured.
fn ended_by_revocation(reason: &str) -> bool {
    reason.contains(&format!("({})", close::TOKEN_REVOKED))
}

/// Stops the session and waits (briefly) for it to close the socket.
async fn close(mut session: Session) {
    session.stop();
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(event) = session.events.recv().await {
            if matches!(event, Event::Ended { .. }) {
                break;
            }
        }
    })
    .await;
}

/// Acquires an offered attempt, runs it, and reports how it ended. A stale attempt (the
/// manager moved on) is dropped at whichever step learns of it. An attempt that starts is
/// recorded in `run_log` when it starts and once its report is answered.
async fn run_offered(
    tasks: TaskClient,
    registry: Arc<Registry>,
    runner: Runner,
    run_log: Option<Arc<RunLog>>,
    task_id: TaskId,
    attempt: Attempt,
) {
    let acquired = match tasks.acquire(task_id, attempt).await {
        Ok(acquired) => acquired,
        Err(e) => {
            tracing::warn!(task.id = %task_id, task.attempt = %attempt, error = %e, "cannot acquire the offered task");
            return;
        }
    };
    let timeout = Duration::from_millis(acquired.execution_timeout_ms);
    let running = RunningTask { task_id, attempt };
    // Taken before the launch and after the end, so the recorded interval covers the run.
    let started_at = chrono::Utc::now();
    let secrets = match crate::secrets::resolve(&acquired.secrets) {
        Ok(secrets) => secrets,
        Err((code, detail)) => {
            tracing::warn!(task.id = %task_id, task.attempt = %attempt, error = %detail, "cannot get the task's secrets");
            fail_unstarted(&tasks, task_id, attempt, code, detail).await;
            return;
        }
    };
    // What the task prints or returns is masked here too, before it leaves.
    let values: Vec<String> = secrets.iter().map(|(_, v)| v.expose().to_owned()).collect();
    let shipper = crate::logship::Shipper::start(tasks.clone(), task_id, attempt, values.clone());
    let io = crate::tasks::TaskIo {
        output: shipper.output(),
        secrets,
    };
    let launched = registry.launch(
        &runner,
        running,
        acquired.task_type.clone(),
        acquired.payload,
        timeout,
        io,
    );
    let handle = match launched {
        Ok(handle) => handle,
        Err(refused) => {
            let detail = format!("the delegate refused to start it: {refused:?}");
            fail_unstarted(&tasks, task_id, attempt, "refused", detail).await;
            return;
        }
    };
    if let Some(log) = &run_log {
        log.record(&Entry::Started {
            task: task_id,
            attempt,
            at: started_at,
        });
    }
    tracing::info!(task.id = %task_id, task.attempt = %attempt, task.r#type = %acquired.task_type, "running task");
    let mut outcome = match handle.await {
        Ok(outcome) => outcome,
        Err(e) => TaskOutcome {
            succeeded: false,
            result: serde_json::json!({"error": "crashed", "detail": e.to_string()}),
        },
    };
    let ended_at = chrono::Utc::now();
    // What it printed reaches the task's log before its result ends the attempt (appends
    // to an ended attempt are refused).
    let shipped = shipper.finish().await;
    switchboard_domain::vault::mask_json(&mut outcome.result, &values);
    if shipped.chunks > 0 {
        tracing::debug!(task.id = %task_id, chunks = shipped.chunks, bytes = shipped.bytes, "task output shipped");
    }
    let report = if outcome.succeeded {
        TaskResult {
            attempt,
            outcome: Outcome::Succeeded,
            result: Some(outcome.result),
            error: None,
            error_code: None,
            retryable: None,
        }
    } else {
        let error = outcome.result.get("detail").and_then(|d| d.as_str()).map(str::to_owned);
        let (error_code, retryable) = failure_code(&outcome.result);
        TaskResult {
            attempt,
            outcome: Outcome::Failed,
            result: Some(outcome.result),
            error,
            error_code,
            retryable,
        }
    };
    let answer = report_result(&tasks, task_id, &report, REPORT_BACKOFF, REPORT_PATIENCE).await;
    if let Some(log) = &run_log {
        log.record(&Entry::Finished {
            task: task_id,
            attempt,
            at: ended_at,
            outcome: report.outcome,
            report: answer,
        });
    }
}

/// Reports an attempt that never started as failed with `code`.
async fn fail_unstarted(tasks: &TaskClient, task_id: TaskId, attempt: Attempt, code: &str, detail: String) {
    let report = TaskResult {
        attempt,
        outcome: Outcome::Failed,
        result: None,
        error: Some(detail),
        error_code: Some(code.into()),
        retryable: None,
    };
    let _ = tasks.result(task_id, &report).await;
}

/// The code a failed outcome is reported with (what a retry policy's `error_codes` name),
/// and whether running it again could help: the result's `error` code, or `exit:N` for a
/// `shell` command that exited with status N (as Buildkite retries by exit status). A
/// payload the delegate cannot run, or a type it does not have, is not worth a retry.
fn failure_code(result: &serde_json::Value) -> (Option<String>, Option<bool>) {
    let code = result.get("error").and_then(|c| c.as_str());
    let retryable = match code {
        Some("bad_payload" | "unsupported_task_type") => Some(false),
        _ => None,
    };
    let code = match (code, result.get("exit_code").and_then(serde_json::Value::as_i64)) {
        (Some("nonzero_exit"), Some(status)) => Some(format!("exit:{status}")),
        (code, _) => code
            .filter(|c| switchboard_domain::policy::check_key(c).is_ok())
            .map(str::to_owned),
    };
    (code, retryable)
}

/// How long a result report is retried while the manager cannot take it (a replica that
/// died, a database restarting): longer than a failover, shorter than forever.
const REPORT_PATIENCE: Duration = Duration::from_secs(60);

/// The pace of those retries.
const REPORT_BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// Reports `report`, retrying (with jittered backoff, for up to `patience`) while the
/// manager cannot be reached, answers 5xx or is over the rate: the result of work done is
/// worth a few tries. A refusal that retrying cannot change (the attempt is no longer
/// current, or any other 4xx) ends it at once.
async fn report_result(
    tasks: &TaskClient,
    task_id: TaskId,
    report: &TaskResult,
    backoff: Backoff,
    patience: Duration,
) -> Report {
    let attempt = report.attempt;
    let deadline = tokio::time::Instant::now() + patience;
    let mut tries = 0u32;
    loop {
        let error = match tasks.result(task_id, report).await {
            Ok(status) => {
                tracing::info!(task.id = %task_id, task.attempt = %attempt, state = %status.state, "task reported");
                return Report::Accepted;
            }
            Err(e) if e.is_stale_attempt() => {
                tracing::warn!(task.id = %task_id, task.attempt = %attempt, "the manager moved on from this attempt; result dropped");
                return Report::Stale;
            }
            Err(e) => e,
        };
        let retryable = error.is_transient();
        let delay = backoff.delay(tries);
        tries = tries.saturating_add(1);
        if !retryable || tokio::time::Instant::now() + delay > deadline {
            tracing::warn!(task.id = %task_id, task.attempt = %attempt, error = %error, tries, "cannot report the result");
            return Report::Failed;
        }
        tracing::info!(task.id = %task_id, task.attempt = %attempt, error = %error, retry_in_ms = delay.as_millis(), "cannot report the result yet; retrying");
        tokio::time::sleep(delay).await;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use switchboard_domain::{Attempt, Capability, GroupId, InstanceId, Secret, TaskId, TaskType};

    use super::*;
    use crate::registry::Refused;
    use crate::testing::{Answer, Seen, fake_stream, refused_addr, scripted_http, silent_listener};

    fn agent() -> Agent {
        Agent::new(
            Capacity::default(),
            &[BuiltIn::Sleep],
            Duration::from_secs(5),
            &Tls::default(),
        )
    }

    fn registered(stream_url: &str) -> Registered {
        Registered {
            instance_id: InstanceId::new(),
            group_id: GroupId::new(),
            account: Ident::parse("acme").unwrap(),
            org: Some(Ident::parse("eng").unwrap()),
            project: None,
            session_token: Secret::presented("sess"),
            heartbeat_interval_ms: 60_000,
            stream_url: stream_url.to_owned(),
            max_tasks: None,
        }
    }

    #[test]
    fn the_registered_line_names_instance_scope_and_group() {
        let r = registered("ws://x");
        assert_eq!(
            registered_line(&r, &Ident::parse("edge").unwrap()),
            format!(
                "switchboard-delegate registered as {} in acme/eng (group edge)",
                r.instance_id
            )
        );
    }

    #[test]
    fn revocation_ends_with_code_3_and_other_endings_with_code_1() {
        let mut a = agent();
        let revoked = Event::Message(ServerMessage::Revoked {
            reason: "revoked".into(),
        });
        assert_eq!(a.on_event(Some(revoked)), Step::Exit(Exit::Revoked));
        let closed_as_revoked = Event::Ended {
            reason: "closed by the manager (4002): token revoked".into(),
        };
        assert_eq!(a.on_event(Some(closed_as_revoked)), Step::Exit(Exit::Revoked));
        let removed = Event::Ended {
            reason: "closed by the manager (4003): instance removed".into(),
        };
        assert_eq!(a.on_event(Some(removed)), Step::Exit(Exit::Failed));
        assert_eq!(a.on_event(None), Step::Exit(Exit::Failed));
        assert_eq!(Exit::Revoked.code(), 3);
    }

    #[test]
    fn disconnects_and_offered_tasks_do_not_stop_the_delegate() {
        let mut a = agent();
        let dropped = Event::Disconnected { reason: "reset".into() };
        assert_eq!(a.on_event(Some(dropped)), Step::Continue);
        let offered = ServerMessage::TaskAvailable {
            task_id: TaskId::new(),
            attempt: Attempt(1),
        };
        assert_eq!(a.on_event(Some(Event::Message(offered))), Step::Continue);
        assert!(a.registry.running().is_empty(), "nothing is run without acquisition");
    }

    #[tokio::test]
    async fn a_validation_is_answered_with_one_result_per_capability() {
        let mut a = agent();
        let (_open, open_addr) = silent_listener().await;
        let closed = refused_addr().await;
        let capabilities = vec![
            Capability::tcp("127.0.0.1", open_addr.port()).unwrap(),
            Capability::tcp("127.0.0.1", closed.port()).unwrap(),
        ];
        let validate = ServerMessage::Validate {
            request_id: "r-1".into(),
            capabilities: capabilities.clone(),
        };
        assert_eq!(a.on_event(Some(Event::Message(validate))), Step::Continue);
        let answer = a.validations.join_next().await.unwrap().unwrap();
        let DelegateMessage::ValidationResult { request_id, results } = answer else {
            panic!("expected a validation result, got {answer:?}");
        };
        assert_eq!(request_id, "r-1");
        let got: Vec<_> = results.iter().map(|r| (r.basis.clone(), r.reachable)).collect();
        assert_eq!(
            got,
            vec![(capabilities[0].basis(), true), (capabilities[1].basis(), false)]
        );
    }

    fn answer(status_line: &'static str, body: &str) -> Answer {
        Answer {
            status_line,
            content_type: "application/json",
            body: body.to_owned(),
        }
    }

    fn succeeded() -> TaskResult {
        TaskResult {
            attempt: Attempt(1),
            outcome: Outcome::Succeeded,
            result: Some(json!({"n": 1})),
            error: None,
            error_code: None,
            retryable: None,
        }
    }

    #[test]
    fn a_failure_is_reported_with_its_code_and_whether_a_retry_can_help() {
        let exit = json!({"error": "nonzero_exit", "exit_code": 137, "detail": "killed"});
        assert_eq!(failure_code(&exit), (Some("exit:137".into()), None));
        let bad = json!({"error": "bad_payload", "detail": "no command"});
        assert_eq!(failure_code(&bad), (Some("bad_payload".into()), Some(false)));
        let unreachable = json!({"error": "unreachable", "detail": "refused"});
        assert_eq!(failure_code(&unreachable), (Some("unreachable".into()), None));
        // Not a code the manager takes: left out rather than refused with the result.
        assert_eq!(failure_code(&json!({"error": "no spaces allowed"})), (None, None));
        assert_eq!(failure_code(&json!({"detail": "?"})), (None, None));
    }

    const QUICK: Backoff = Backoff {
        initial: Duration::from_millis(1),
        max: Duration::from_millis(5),
    };

    fn problem(status: u16, slug: &str) -> String {
        json!({"type": format!("https://switchboard.dev/problems/{slug}"), "title": slug, "status": status, "detail": ""})
            .to_string()
    }

    #[tokio::test]
    async fn a_result_is_reported_again_while_the_manager_cannot_take_it() {
        let (addr, seen) = scripted_http(vec![
            Answer::hang_up(),
            answer("503 Service Unavailable", &problem(503, "unavailable")),
            answer("429 Too Many Requests", &problem(429, "rate-limited")),
            answer(
                "200 OK",
                r#"{"task_id":"00000000-0000-0000-0000-000000000000","attempt":1,"state":"succeeded"}"#,
            ),
        ])
        .await;
        let tasks = TaskClient::new(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            &Secret::presented("sbs_x"),
        );
        let report = report_result(&tasks, TaskId::new(), &succeeded(), QUICK, Duration::from_secs(30)).await;
        assert_eq!(report, Report::Accepted);
        assert_eq!(
            seen.lock().unwrap().len(),
            4,
            "three failures, then the one that counted"
        );
    }

    #[tokio::test]
    async fn a_refusal_that_retrying_cannot_change_ends_the_report_at_once() {
        let (addr, seen) = scripted_http(vec![answer("409 Conflict", &problem(409, "stale-attempt"))]).await;
        let tasks = TaskClient::new(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            &Secret::presented("sbs_x"),
        );
        let report = report_result(&tasks, TaskId::new(), &succeeded(), QUICK, Duration::from_secs(30)).await;
        assert_eq!(report, Report::Stale);
        let (addr, seen_404) = scripted_http(vec![answer("404 Not Found", &problem(404, "not-found"))]).await;
        let tasks = TaskClient::new(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            &Secret::presented("sbs_x"),
        );
        let report = report_result(&tasks, TaskId::new(), &succeeded(), QUICK, Duration::from_secs(30)).await;
        assert_eq!(report, Report::Failed);
        assert_eq!((seen.lock().unwrap().len(), seen_404.lock().unwrap().len()), (1, 1));
    }

    #[tokio::test]
    async fn a_report_gives_up_after_its_patience() {
        let (addr, seen) = scripted_http(vec![answer("503 Service Unavailable", &problem(503, "unavailable"))]).await;
        let tasks = TaskClient::new(
            reqwest::Client::new(),
            &format!("http://{addr}"),
            &Secret::presented("sbs_x"),
        );
        let report = report_result(&tasks, TaskId::new(), &succeeded(), QUICK, Duration::from_millis(50)).await;
        assert_eq!(report, Report::Failed);
        assert!(seen.lock().unwrap().len() >= 2, "it tried more than once");
    }

    #[tokio::test]
    async fn cancel_task_cancels_the_running_attempt() {
        let mut a = agent();
        let task = RunningTask {
            task_id: TaskId::new(),
            attempt: Attempt(1),
        };
        let sleep = TaskType(Ident::parse("sleep").unwrap());
        let handle = a
            .registry
            .launch(
                &a.runner,
                task,
                sleep,
                json!({"ms": 60_000}),
                Duration::from_secs(120),
                crate::tasks::TaskIo::default(),
            )
            .unwrap();
        let cancel = ServerMessage::CancelTask {
            task_id: task.task_id,
            attempt: task.attempt,
        };
        assert_eq!(a.on_event(Some(Event::Message(cancel))), Step::Continue);
        assert_eq!(handle.await.unwrap().error_code(), Some("cancelled"));
    }

    #[tokio::test]
    async fn drain_refuses_new_tasks() {
        let mut a = agent();
        let drain = ServerMessage::Drain {
            reason: "deleted".into(),
        };
        assert_eq!(a.on_event(Some(Event::Message(drain))), Step::Continue);
        let task = RunningTask {
            task_id: TaskId::new(),
            attempt: Attempt(1),
        };
        let sleep = TaskType(Ident::parse("sleep").unwrap());
        let refused = a.registry.launch(
            &a.runner,
            task,
            sleep,
            json!({"ms": 1}),
            Duration::from_secs(1),
            crate::tasks::TaskIo::default(),
        );
        assert_eq!(refused.unwrap_err(), Refused::Draining);
    }

    /// A fake manager: registration over HTTP, then the fake socket.
    async fn manager() -> (Settings, tokio::sync::mpsc::Receiver<crate::testing::FakeSocket>) {
        let (stream_url, sockets) = fake_stream().await;
        let (addr, _) = scripted_http(vec![Answer {
            status_line: "200 OK",
            content_type: "application/json",
            body: serde_json::to_string(&registered(&stream_url)).unwrap(),
        }])
        .await;
        let settings = Settings::parse_from([
            "switchboard-delegate",
            "--manager",
            &format!("http://{addr}"),
            "--token",
            "t",
            "--name",
            "edge",
            "--check-timeout",
            "2s",
        ])
        .unwrap();
        (settings, sockets)
    }

    #[tokio::test]
    async fn the_delegate_answers_validations_and_closes_its_socket_on_shutdown() {
        let (settings, mut sockets) = manager().await;
        let (stop, stops) = tokio::sync::watch::channel(0u32);
        let delegate = tokio::spawn(async move { run(&settings, stops).await });
        let mut socket = sockets.recv().await.unwrap();
        let (_open, open_addr) = silent_listener().await;
        let capability = Capability::tcp("127.0.0.1", open_addr.port()).unwrap();
        socket
            .send
            .send(ServerMessage::Validate {
                request_id: "v".into(),
                capabilities: vec![capability.clone()],
            })
            .await
            .unwrap();
        let Seen::Message(DelegateMessage::ValidationResult { request_id, results }) =
            socket.next_non_heartbeat().await
        else {
            panic!("expected a validation result");
        };
        assert_eq!(request_id, "v");
        assert_eq!(results.len(), 1);
        assert!(results[0].reachable && results[0].basis == capability.basis());

        // The first stop signal: with nothing running, it says it drains and exits.
        stop.send_modify(|n| *n += 1);
        assert!(matches!(
            socket.next_non_heartbeat().await,
            Seen::Message(DelegateMessage::Draining { .. })
        ));
        assert_eq!(delegate.await.unwrap(), Exit::Done);
        assert_eq!(socket.next_non_heartbeat().await, Seen::Closed);
    }

    #[tokio::test]
    async fn a_revoked_token_stops_the_delegate_with_code_3() {
        let (settings, mut sockets) = manager().await;
        let delegate = tokio::spawn(async move { run(&settings, tokio::sync::watch::channel(0).1).await });
        let socket = sockets.recv().await.unwrap();
        socket
            .send
            .send(ServerMessage::Revoked {
                reason: "token 'ci' revoked".into(),
            })
            .await
            .unwrap();
        assert_eq!(delegate.await.unwrap(), Exit::Revoked);
    }

    #[tokio::test]
    async fn a_drained_delegate_with_nothing_running_exits_cleanly() {
        let (settings, mut sockets) = manager().await;
        let delegate = tokio::spawn(async move { run(&settings, tokio::sync::watch::channel(0).1).await });
        let mut socket = sockets.recv().await.unwrap();
        socket
            .send
            .send(ServerMessage::Drain {
                reason: "group deleted".into(),
            })
            .await
            .unwrap();
        assert_eq!(delegate.await.unwrap(), Exit::Done);
        assert_eq!(socket.next_non_heartbeat().await, Seen::Closed);
    }

    #[tokio::test]
    async fn a_refused_registration_exits_with_code_1() {
        let (addr, _) = scripted_http(vec![Answer {
            status_line: "403 Forbidden",
            content_type: "application/problem+json",
            body: json!({"type": "about:blank", "title": "Scope too wide", "status": 403}).to_string(),
        }])
        .await;
        let settings = Settings::parse_from([
            "d",
            "--manager",
            &format!("http://{addr}"),
            "--token",
            "t",
            "--name",
            "edge",
        ])
        .unwrap();
        assert_eq!(run(&settings, tokio::sync::watch::channel(0).1).await, Exit::Failed);
        assert_eq!(Exit::Failed.code(), 1);
    }
}
