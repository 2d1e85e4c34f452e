//! `--run-log PATH`: the delegate's own record of what it ran, independent of the manager.
//!
//! One JSON line per attempt when it starts (after the manager let it acquire the attempt)
//! and one when it has ended and its result was reported, with what the manager said to
//! the report. The fault-injection suite compares these records across delegates with the
//! store: no attempt ran twice, no task ran on two delegates at once beyond its
//! `max_attempts`, no stale result was accepted. Operators can use it as an audit trail.
//!
//! ```text
//! {"event":"started","task":"0190…","attempt":1,"at":"2025-01-01T12:00:00.000Z"}
//! {"event":"finished","task":"0190…","attempt":1,"at":"…","outcome":"succeeded","report":"accepted"}
//! ```
//!
//! Each line is one `write` on a file opened for appending and is not buffered in the
//! process, so a delegate killed with SIGKILL loses no line it wrote (the kernel holds
//! them); there is no fsync, so a machine crash may.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{Attempt, TaskId};
use switchboard_protocol::delegate::Outcome;

/// What the manager answered to a result report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// The manager recorded the result.
    Accepted,
    /// The manager had moved on from this attempt (re-queued, timed out, cancelled): the
    /// result was dropped.
    Stale,
    /// The report did not get through (network, manager or database unavailable).
    Failed,
}

/// One line of the run log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Entry {
    /// The attempt was acquired and is starting.
    Started {
        task: TaskId,
        attempt: Attempt,
        at: DateTime<Utc>,
    },
    /// The attempt ended at `at` with `outcome`; `report` is what the manager said.
    Finished {
        task: TaskId,
        attempt: Attempt,
        at: DateTime<Utc>,
        outcome: Outcome,
        report: Report,
    },
}

/// An open run log; shared by the jobs running attempts.
#[derive(Debug)]
pub struct RunLog {
    /// A std mutex: held for one small `write` and never across an `.await`, so lines
    /// from concurrent attempts never interleave.
    file: Mutex<File>,
}

impl RunLog {
    /// Opens (or creates) `path` for appending; earlier lines are kept.
    pub fn open(path: &Path) -> std::io::Result<RunLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(RunLog { file: Mutex::new(file) })
    }

    /// Appends `entry` as one line. A failed write is logged, never fatal: the record is
    /// an audit aid, not something a task's outcome may depend on.
    pub fn record(&self, entry: &Entry) {
        let mut line = match serde_json::to_vec(entry) {
            Ok(line) => line,
            Err(e) => {
                tracing::warn!(error = %e, "cannot encode a run log line");
                return;
            }
        };
        line.push(b'\n');
        let mut file = self.file.lock().unwrap_or_else(PoisonError::into_inner);
        if let Err(e) = file.write_all(&line) {
            tracing::warn!(error = %e, "cannot write the run log");
        }
    }

    /// Reads every complete line of a run log (a torn last line, from a kill mid-write, is
    /// skipped).
    pub fn read(path: &Path) -> std::io::Result<Vec<Entry>> {
        let text = std::fs::read_to_string(path)?;
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task() -> TaskId {
        "0190f5a4-7c1e-7b2a-9d3e-5f6a7b8c9d0e".parse().unwrap()
    }

    #[test]
    fn entries_are_appended_one_json_line_each_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        std::fs::write(&path, "").unwrap();
        let at = Utc::now();
        let started = Entry::Started {
            task: task(),
            attempt: Attempt(2),
            at,
        };
        let finished = Entry::Finished {
            task: task(),
            attempt: Attempt(2),
            at,
            outcome: Outcome::Succeeded,
            report: Report::Stale,
        };
        RunLog::open(&path).unwrap().record(&started);
        // A reopened log keeps what was there.
        RunLog::open(&path).unwrap().record(&finished);
        let text = std::fs::read_to_string(&path).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].starts_with(r#"{"event":"started","task":"0190f5a4-"#),
            "{text}"
        );
        assert!(
            lines[1].contains(r#""attempt":2"#)
                && lines[1].contains(r#""outcome":"succeeded""#)
                && lines[1].contains(r#""report":"stale""#),
            "{text}"
        );
        assert_eq!(RunLog::read(&path).unwrap(), vec![started, finished]);
    }

    #[test]
    fn a_torn_last_line_is_skipped_when_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runs.jsonl");
        let entry = Entry::Started {
            task: task(),
            attempt: Attempt(1),
            at: Utc::now(),
        };
        RunLog::open(&path).unwrap().record(&entry);
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(br#"{"event":"finished","task":"01"#).unwrap();
        assert_eq!(RunLog::read(&path).unwrap(), vec![entry]);
    }
}
