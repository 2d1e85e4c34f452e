//! `shell`: runs `{"command": "..."}` with `sh -c` and reports its exit code and output.
//!
//! Only offered when the operator starts the delegate with `--enable-shell`: it runs
//! arbitrary commands with the delegate's rights. Output is kept up to 64 KiB per stream
//! (the rest is read and dropped, so a chatty command never blocks on a full pipe) and
//! flagged as truncated.
//!
//! The command runs in its own process group. When the task times out or is cancelled,
//! the runner drops this future and the whole group is killed, so `sh -c "a; b"` and
//! anything it started in the background stop with it instead of running on unseen.

use std::process::Stdio;

use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::{Child, Command};

use super::{Output, TaskIo, TaskOutcome, env_name, parse_payload};

/// The most output kept per stream.
pub const OUTPUT_LIMIT: usize = 64 * 1024;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    command: String,
}

pub(super) async fn run(payload: Value, io: &TaskIo) -> TaskOutcome {
    let output = &io.output;
    let Payload { command } = match parse_payload(payload) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    let spawned = Command::new("sh")
        .arg("-c")
        .arg(&command)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The token may have come from the environment; a task must not be able to read it.
        .env_remove("SWITCHBOARD_TOKEN")
        // The secrets the task named, as variables (`db-password` is `DB_PASSWORD`).
        .envs(io.secrets.iter().map(|(name, value)| (env_name(name), value.expose())))
        .process_group(0)
        .kill_on_drop(true)
        .spawn();
    let mut group = match spawned {
        Ok(child) => Group(child),
        Err(e) => return TaskOutcome::failure("failed", format!("cannot start sh: {e}")),
    };
    let (stdout, stderr) = (group.0.stdout.take(), group.0.stderr.take());
    // Read both streams to their end before waiting: until `wait` reaps the shell, its
    // process group id cannot be reused, so `Group`'s kill can only hit this command.
    let ((out, out_cut), (err, err_cut)) = tokio::join!(read_capped(stdout, output), read_capped(stderr, output));
    let status = match group.0.wait().await {
        Ok(status) => status,
        Err(e) => return TaskOutcome::failure("failed", format!("cannot wait for sh: {e}")),
    };
    let mut result = json!({
        "exit_code": status.code(),
        "stdout": String::from_utf8_lossy(&out),
        "stderr": String::from_utf8_lossy(&err),
        "stdout_truncated": out_cut,
        "stderr_truncated": err_cut,
    });
    if status.success() {
        return TaskOutcome::success(result);
    }
    result["error"] = json!("nonzero_exit");
    result["detail"] = json!(match status.code() {
        Some(code) => format!("the command exited with status {code}"),
        None => "the command was killed by a signal".to_owned(),
    });
    TaskOutcome {
        succeeded: false,
        result,
    }
}

/// Keeps at most [`OUTPUT_LIMIT`] bytes of `stream`, reading (and dropping) the rest;
/// says whether anything was dropped. Everything read is also written to `output`, whole
/// lines at a time (see [`Lines`]).
async fn read_capped(stream: Option<impl AsyncRead + Unpin>, output: &Output) -> (Vec<u8>, bool) {
    let mut kept = Vec::new();
    let mut truncated = false;
    let Some(mut stream) = stream else {
        return (kept, truncated);
    };
    let mut lines = Lines::default();
    let mut buf = [0u8; 8192];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => {
                output.write(lines.finish()).await;
                return (kept, truncated);
            }
            Ok(n) => {
                let room = OUTPUT_LIMIT - kept.len();
                kept.extend_from_slice(&buf[..n.min(room)]);
                truncated |= n > room;
                output.write(lines.push(&buf[..n])).await;
            }
        }
    }
}

/// Bytes of a stream into text a line at a time, so the two streams of a command
/// interleave by whole lines in its log. A line longer than [`LONG_LINE`] goes out in
/// pieces (cut at a character's boundary); bytes that are not UTF-8 become U+FFFD.
#[derive(Debug, Default)]
struct Lines {
    pending: Vec<u8>,
}

/// The longest piece of a line held back waiting for its end.
const LONG_LINE: usize = 8192;

impl Lines {
    /// Takes `bytes` in; returns the text of the lines they completed.
    fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let cut = match self.pending.iter().rposition(|b| *b == b'\n') {
            Some(end) => end + 1,
            None if self.pending.len() >= LONG_LINE => match std::str::from_utf8(&self.pending) {
                Ok(_) => self.pending.len(),
                // Up to the last whole character; a broken byte sequence goes out as is.
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => self.pending.len(),
            },
            None => return String::new(),
        };
        let rest = self.pending.split_off(cut);
        let done = std::mem::replace(&mut self.pending, rest);
        String::from_utf8_lossy(&done).into_owned()
    }

    /// What is left once the stream ended.
    fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

/// The shell and its process group. Dropped before the shell was reaped (the task timed
/// out or was cancelled), it kills the whole group.
struct Group(Child);

impl Drop for Group {
    fn drop(&mut self) {
        // `id()` is `None` once the shell was reaped: it ended on its own.
        let Some(pid) = self.0.id() else { return };
        // Signalling a process group from Rust needs `unsafe` libc calls, which this
        // crate forbids; the shell's `kill` does it instead. It is quick and runs only
        // on timeout or cancel, so blocking this thread briefly is acceptable.
        let _ = std::process::Command::new("sh")
            .arg("-c")
            // `-KILL -PID` rather than `-KILL -- -PID`: dash's builtin rejects the `--`.
            .arg(format!("kill -KILL -{pid}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use serde_json::json;

    use super::OUTPUT_LIMIT;
    use crate::cancel::{self, CancelToken};
    use crate::tasks::tests::tt;
    use crate::tasks::{BuiltIn, Runner, TaskOutcome};

    async fn shell(command: &str, timeout: Duration) -> TaskOutcome {
        Runner::new(&[BuiltIn::Shell])
            .run(&tt("shell"), json!({"command": command}), timeout, CancelToken::new())
            .await
    }

    #[tokio::test]
    async fn shell_captures_exit_code_and_output() {
        let out = shell("echo out; echo err >&2", Duration::from_secs(10)).await;
        assert!(out.succeeded, "{out:?}");
        assert_eq!(out.result["exit_code"], 0);
        assert_eq!(out.result["stdout"], "out\n");
        assert_eq!(out.result["stderr"], "err\n");
        assert_eq!(out.result["stdout_truncated"], false);
    }

    #[tokio::test]
    async fn a_nonzero_exit_is_a_failure_with_its_code() {
        let out = shell("echo nope >&2; exit 3", Duration::from_secs(10)).await;
        assert!(!out.succeeded);
        assert_eq!(out.error_code(), Some("nonzero_exit"));
        assert_eq!(out.result["exit_code"], 3);
        assert_eq!(out.result["stderr"], "nope\n");
    }

    #[tokio::test]
    async fn long_output_is_truncated_to_64_kib() {
        // 200 KiB of output: more than the limit and more than a pipe buffer, so this
        // also shows the command is never blocked by output nobody keeps.
        let out = shell("head -c 204800 /dev/zero | tr '\\0' x", Duration::from_secs(10)).await;
        assert!(out.succeeded, "{out:?}");
        assert_eq!(out.result["stdout"].as_str().unwrap().len(), OUTPUT_LIMIT);
        assert_eq!(out.result["stdout_truncated"], true);
    }

    #[tokio::test]
    async fn a_shell_task_past_its_timeout_is_stopped_even_with_background_children() {
        // The background `sleep` keeps the output pipe open; without the group kill the
        // task would hang until it exits.
        let started = Instant::now();
        let out = shell("sleep 30 & wait", Duration::from_millis(200)).await;
        assert_eq!(out.error_code(), Some("timed_out"));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[tokio::test]
    async fn a_cancelled_shell_task_ends_promptly() {
        let runner = Runner::new(&[BuiltIn::Shell]);
        let (canceller, token) = cancel::pair();
        let task = tokio::spawn(async move {
            runner
                .run(
                    &tt("shell"),
                    json!({"command": "sleep 30"}),
                    Duration::from_secs(60),
                    token,
                )
                .await
        });
        canceller.cancel();
        let out = tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .expect("a cancelled task ends promptly")
            .unwrap();
        assert_eq!(out.error_code(), Some("cancelled"));
    }

    #[tokio::test]
    async fn cancelling_a_shell_task_kills_what_it_started_in_the_background() {
        // The background `sleep` holds a FIFO open for writing; the test reads it, and
        // the read ends (EOF) exactly when that process dies. No timing is involved:
        // the cancel is sent once the reader knows the writer is there.
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("held");
        let made = std::process::Command::new("mkfifo").arg(&fifo).status().unwrap();
        assert!(made.success());
        let command = format!("sleep 1000 > '{}' & sleep 1000", fifo.display());
        let (canceller, token) = cancel::pair();
        let task = tokio::spawn(async move {
            Runner::new(&[BuiltIn::Shell])
                .run(
                    &tt("shell"),
                    json!({"command": command}),
                    Duration::from_secs(120),
                    token,
                )
                .await
        });
        let (opened_tx, opened) = tokio::sync::oneshot::channel();
        let (closed_tx, closed) = tokio::sync::oneshot::channel();
        // A plain thread, not `spawn_blocking`: if the process survives (the bug this
        // test is for), the read never ends, and the runtime would wait for it forever
        // instead of letting the test fail.
        std::thread::spawn(move || {
            use std::io::Read;
            let mut held = std::fs::File::open(&fifo).unwrap();
            let _ = opened_tx.send(());
            let _ = held.read_to_end(&mut Vec::new());
            let _ = closed_tx.send(());
        });
        opened.await.unwrap();
        canceller.cancel();
        assert_eq!(task.await.unwrap().error_code(), Some("cancelled"));
        tokio::time::timeout(Duration::from_secs(10), closed)
            .await
            .expect("the background process was killed, closing the FIFO")
            .unwrap();
    }

    #[test]
    fn output_goes_out_in_whole_lines_and_whole_characters() {
        let mut lines = super::Lines::default();
        assert_eq!(lines.push(b"one\ntw"), "one\n");
        assert_eq!(lines.push(b"o\nthr"), "two\n");
        assert_eq!(lines.finish(), "thr");
        // A long line without its end goes out at a character boundary: here the first
        // of the two bytes of "é" ends the read, so it waits for the second.
        let mut long = vec![b'a'; super::LONG_LINE - 1];
        long.push(0xC3);
        let out = lines.push(&long);
        assert_eq!(out.len(), super::LONG_LINE - 1);
        assert_eq!(lines.push(&[0xA9]), "");
        assert_eq!(lines.finish(), "é");
        assert_eq!(lines.push(b"\xff\n"), "\u{fffd}\n");
    }

    #[tokio::test]
    async fn a_shell_task_writes_its_output_as_it_runs() {
        let (tx, mut rx) = tokio::sync::mpsc::channel(16);
        let out = Runner::new(&[BuiltIn::Shell])
            .run_with(
                &tt("shell"),
                json!({"command": "echo one; echo two >&2; echo three"}),
                Duration::from_secs(10),
                CancelToken::new(),
                crate::tasks::TaskIo {
                    output: crate::tasks::Output::to(tx),
                    secrets: vec![],
                },
            )
            .await;
        assert!(out.succeeded, "{out:?}");
        let mut written = Vec::new();
        while let Ok(text) = rx.try_recv() {
            written.push(text);
        }
        let mut lines: Vec<&str> = written.iter().flat_map(|t| t.lines()).collect();
        lines.sort_unstable();
        assert_eq!(lines, ["one", "three", "two"]);
    }

    #[tokio::test]
    async fn a_shell_payload_needs_a_command() {
        let out = shell_payload(json!({"cmd": "ls"})).await;
        assert_eq!(out.error_code(), Some("bad_payload"));
    }

    async fn shell_payload(payload: serde_json::Value) -> TaskOutcome {
        Runner::new(&[BuiltIn::Shell])
            .run(&tt("shell"), payload, Duration::from_secs(10), CancelToken::new())
            .await
    }
}
