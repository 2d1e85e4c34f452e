//! The built-in task types and the runner that executes one task.
//!
//! [`Runner::run`] takes a task's type, payload, execution timeout and a
//! [`CancelToken`], and always comes back with a [`TaskOutcome`]: success or failure and
//! a JSON result. It never talks to the manager: fetching a task and reporting its result
//! are the caller's job (see `agent.rs`), so the runner is tested on its own and does not
//! change when the manager's task endpoints arrive (issue 4).
//!
//! Failed outcomes carry `{"error": CODE, "detail": TEXT}` in their result, CODE one of
//! `unsupported_task_type`, `bad_payload`, `timed_out`, `cancelled`, or a type's own
//! (`unreachable`, `unexpected_status`, `nonzero_exit`), so a pipeline can branch on the
//! code and show the detail.

mod echo;
mod http_check;
mod shell;
mod sleep;

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use switchboard_client::Tls;
use switchboard_domain::{Ident, TaskType};

use crate::cancel::CancelToken;
use crate::probe;

/// The task types this delegate knows how to run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BuiltIn {
    /// Returns its payload: proves the round trip.
    Echo,
    /// Waits `ms` milliseconds: occupies capacity, for tests and demos.
    Sleep,
    /// One HTTP request: status and latency.
    HttpCheck,
    /// `sh -c COMMAND`: only when the operator enabled it.
    Shell,
}

impl BuiltIn {
    pub const ALL: [BuiltIn; 4] = [BuiltIn::Echo, BuiltIn::Sleep, BuiltIn::HttpCheck, BuiltIn::Shell];

    pub fn as_str(self) -> &'static str {
        match self {
            BuiltIn::Echo => "echo",
            BuiltIn::Sleep => "sleep",
            BuiltIn::HttpCheck => "http_check",
            BuiltIn::Shell => "shell",
        }
    }

    /// The wire name, as the delegate lists it at registration.
    pub fn task_type(self) -> TaskType {
        // The names above are literals matching the identifier pattern (a unit test
        // parses each), so this cannot fail at run time.
        TaskType(Ident::parse(self.as_str()).expect("built-in task type names are identifiers"))
    }
}

impl fmt::Display for BuiltIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BuiltIn {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        BuiltIn::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| {
            let known: Vec<&str> = BuiltIn::ALL.iter().map(|t| t.as_str()).collect();
            format!("unknown task type {s:?}; this delegate runs {}", known.join(", "))
        })
    }
}

/// Where a task's output goes while it runs: text for the manager's task log (see
/// `logship.rs`), or nowhere. Writing waits when the shipper is behind, so a chatty task
/// slows down rather than filling the delegate's memory.
#[derive(Debug, Clone, Default)]
pub struct Output(Option<tokio::sync::mpsc::Sender<String>>);

impl Output {
    /// Output that goes nowhere (tests, and tasks run without a manager).
    pub fn discard() -> Self {
        Output(None)
    }

    /// Output sent to `tx`.
    pub fn to(tx: tokio::sync::mpsc::Sender<String>) -> Self {
        Output(Some(tx))
    }

    /// Writes `text` (whole lines, ideally). Nothing happens once the receiver is gone.
    pub async fn write(&self, text: String) {
        if let Some(tx) = &self.0
            && !text.is_empty()
        {
            let _ = tx.send(text).await;
        }
    }
}

/// What a task gets besides its payload: where its output goes, and the secrets it
/// named, by name (`shell` sees each as an environment variable, see [`env_name`]).
#[derive(Debug, Clone, Default)]
pub struct TaskIo {
    pub output: Output,
    pub secrets: Vec<(String, switchboard_domain::Secret)>,
}

/// The environment variable a secret reaches a `shell` task as: its name upper-cased,
/// with `-` and `.` as `_` (`db-password` is `DB_PASSWORD`).
pub fn env_name(secret: &str) -> String {
    secret
        .chars()
        .map(|c| match c {
            '-' | '.' => '_',
            c => c.to_ascii_uppercase(),
        })
        .collect()
}

/// How one task ended.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskOutcome {
    pub succeeded: bool,
    /// The task's result, or for a failure `{"error": CODE, "detail": TEXT, ...}`.
    pub result: Value,
}

impl TaskOutcome {
    pub fn success(result: Value) -> Self {
        TaskOutcome {
            succeeded: true,
            result,
        }
    }

    pub fn failure(code: &str, detail: impl Into<String>) -> Self {
        TaskOutcome {
            succeeded: false,
            result: json!({"error": code, "detail": detail.into()}),
        }
    }

    /// The failure code, for failed outcomes.
    pub fn error_code(&self) -> Option<&str> {
        self.result.get("error").and_then(Value::as_str)
    }
}

/// Runs tasks of the enabled types. Cheap to clone; share one per delegate.
#[derive(Debug, Clone)]
pub struct Runner {
    enabled: Vec<BuiltIn>,
    /// One client for every `http_check`, so connections are pooled.
    http: reqwest::Client,
}

impl Runner {
    /// A runner for `enabled` types only: `shell` runs only when it is listed here,
    /// which settings allow only with `--enable-shell`.
    pub fn new(enabled: &[BuiltIn]) -> Self {
        Self::with_tls(enabled, &Tls::default())
    }

    /// Like [`Runner::new`], with `http_check` trusting what `tls` trusts.
    pub fn with_tls(enabled: &[BuiltIn], tls: &Tls) -> Self {
        Runner {
            enabled: enabled.to_vec(),
            http: probe::http_client(tls),
        }
    }

    /// Runs one task to its end: completion, `timeout`, or `cancel`, whichever is first.
    pub async fn run(
        &self,
        task_type: &TaskType,
        payload: Value,
        timeout: Duration,
        cancel: CancelToken,
    ) -> TaskOutcome {
        self.run_with(task_type, payload, timeout, cancel, TaskIo::default())
            .await
    }

    /// Like [`Runner::run`], writing what the task prints to `io.output` as it runs
    /// (`shell`: its stdout and stderr, line by line; `http_check`: the request and its
    /// answer), with its secrets (`shell`: as environment variables).
    pub async fn run_with(
        &self,
        task_type: &TaskType,
        payload: Value,
        timeout: Duration,
        cancel: CancelToken,
        io: TaskIo,
    ) -> TaskOutcome {
        let kind = match self.enabled_kind(task_type) {
            Ok(kind) => kind,
            Err(refused) => return refused,
        };
        let work = async {
            match kind {
                BuiltIn::Echo => echo::run(payload),
                BuiltIn::Sleep => sleep::run(payload).await,
                BuiltIn::HttpCheck => http_check::run(&self.http, payload, timeout, &io.output).await,
                BuiltIn::Shell => shell::run(payload, &io).await,
            }
        };
        // Dropping `work` on timeout or cancel is what stops it: sleeps end, requests are
        // abandoned, and a shell command's process group is killed (see `shell.rs`).
        tokio::select! {
            biased;
            _ = cancel.cancelled() => TaskOutcome::failure("cancelled", "cancelled before it finished"),
            done = tokio::time::timeout(timeout, work) => done.unwrap_or_else(|_| {
                TaskOutcome::failure(
                    "timed_out",
                    format!("ran past its execution timeout of {}", probe::human(timeout)),
                )
            }),
        }
    }

    fn enabled_kind(&self, task_type: &TaskType) -> Result<BuiltIn, TaskOutcome> {
        let kind: BuiltIn = task_type
            .as_str()
            .parse()
            .map_err(|e: String| TaskOutcome::failure("unsupported_task_type", e))?;
        if self.enabled.contains(&kind) {
            return Ok(kind);
        }
        let detail = match kind {
            BuiltIn::Shell => {
                "shell tasks are disabled on this delegate; start it with --enable-shell to allow them".into()
            }
            other => format!("this delegate does not offer {other} tasks; add it to --task-types"),
        };
        Err(TaskOutcome::failure("unsupported_task_type", detail))
    }
}

/// Reads a type's payload, refusing unknown fields so a typo fails loudly.
fn parse_payload<T: DeserializeOwned>(payload: Value) -> Result<T, TaskOutcome> {
    serde_json::from_value(payload).map_err(|e| TaskOutcome::failure("bad_payload", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cancel;

    pub(super) fn tt(name: &str) -> TaskType {
        TaskType(Ident::parse(name).unwrap())
    }

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn every_built_in_name_parses_back() {
        for t in BuiltIn::ALL {
            assert_eq!(t.as_str().parse::<BuiltIn>(), Ok(t));
            assert_eq!(t.task_type().as_str(), t.as_str());
        }
        assert!("launch".parse::<BuiltIn>().unwrap_err().contains("http_check"));
    }

    #[tokio::test]
    async fn shell_is_refused_unless_enabled() {
        let runner = Runner::new(&[BuiltIn::Echo, BuiltIn::Sleep, BuiltIn::HttpCheck]);
        let out = runner
            .run(&tt("shell"), json!({"command": "true"}), LONG, CancelToken::new())
            .await;
        assert!(!out.succeeded);
        assert_eq!(out.error_code(), Some("unsupported_task_type"));
        assert!(out.result["detail"].as_str().unwrap().contains("--enable-shell"));
    }

    #[tokio::test]
    async fn unknown_and_unoffered_types_are_refused() {
        let runner = Runner::new(&[BuiltIn::Echo]);
        let out = runner.run(&tt("deploy"), json!({}), LONG, CancelToken::new()).await;
        assert_eq!(out.error_code(), Some("unsupported_task_type"));
        let out = runner
            .run(&tt("sleep"), json!({"ms": 1}), LONG, CancelToken::new())
            .await;
        assert_eq!(out.error_code(), Some("unsupported_task_type"));
    }

    #[tokio::test]
    async fn a_task_past_its_timeout_is_timed_out() {
        let runner = Runner::new(&[BuiltIn::Sleep]);
        let out = runner
            .run(
                &tt("sleep"),
                json!({"ms": 60_000}),
                Duration::from_millis(50),
                CancelToken::new(),
            )
            .await;
        assert!(!out.succeeded);
        assert_eq!(out.error_code(), Some("timed_out"));
        assert_eq!(out.result["detail"], "ran past its execution timeout of 50 ms");
    }

    #[tokio::test]
    async fn a_cancelled_task_stops_at_once() {
        let runner = Runner::new(&[BuiltIn::Sleep]);
        let (canceller, token) = cancel::pair();
        let task = tokio::spawn(async move { runner.run(&tt("sleep"), json!({"ms": 60_000}), LONG, token).await });
        canceller.cancel();
        let out = task.await.unwrap();
        assert_eq!(out.error_code(), Some("cancelled"));
    }

    #[tokio::test]
    async fn a_task_cancelled_before_it_starts_does_not_run() {
        let runner = Runner::new(&[BuiltIn::Echo]);
        let (canceller, token) = cancel::pair();
        canceller.cancel();
        let out = runner.run(&tt("echo"), json!("hi"), LONG, token).await;
        assert_eq!(out.error_code(), Some("cancelled"));
    }
}
