//! The fault suite's verdict: the invariants, checked from the store's rows and from every
//! delegate's own run log. Pure functions over plain data, so the checks themselves are
//! tested below with records that break each rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use switchboard_delegate::runlog::{Entry, Report};
use switchboard_domain::{Attempt, TaskId};
use switchboard_protocol::delegate::Outcome;

/// A task as the store has it at the end.
#[derive(Debug, Clone)]
pub(super) struct Row {
    pub(super) state: String,
    pub(super) attempt: u32,
    pub(super) runs: u32,
    pub(super) max_attempts: u32,
}

/// One attempt as one delegate process ran it.
#[derive(Debug, Clone)]
struct Run {
    delegate: String,
    attempt: Attempt,
    started: DateTime<Utc>,
    /// `None` when the process was killed before the attempt ended.
    finished: Option<(DateTime<Utc>, Outcome, Report)>,
}

/// What the checks counted, for the summary.
#[derive(Debug, Default)]
pub(super) struct Tally {
    /// Attempts started, across every delegate.
    pub(super) runs: usize,
    /// Results the manager refused as stale (the attempt had been re-queued or ended).
    pub(super) stale_results: usize,
    /// Tasks that ran on two delegates at once (an attempt re-queued while its delegate
    /// was frozen or cut off, and the new attempt started before the old one ended).
    pub(super) overlapping: usize,
}

const TERMINAL: &[&str] = &["succeeded", "failed", "cancelled", "expired", "timed_out"];

/// Checks every invariant; returns the tally, or every violation found.
pub(super) fn verify(
    acknowledged: &[TaskId],
    store: &HashMap<TaskId, Row>,
    logs: &[(String, Vec<Entry>)],
) -> Result<Tally, Vec<String>> {
    let mut problems = Vec::new();
    let mut tally = Tally::default();

    // Every acknowledged task is in the store and ended.
    for id in acknowledged {
        match store.get(id) {
            None => problems.push(format!("acknowledged task {id} is not in the store")),
            Some(row) if !TERMINAL.contains(&row.state.as_str()) => {
                problems.push(format!("acknowledged task {id} is still {}", row.state));
            }
            Some(_) => {}
        }
    }

    let mut runs: BTreeMap<TaskId, Vec<Run>> = BTreeMap::new();
    for (delegate, entries) in logs {
        let mut open: HashMap<(TaskId, Attempt), usize> = HashMap::new();
        for entry in entries {
            match *entry {
                Entry::Started { task, attempt, at } => {
                    let list = runs.entry(task).or_default();
                    open.insert((task, attempt), list.len());
                    list.push(Run {
                        delegate: delegate.clone(),
                        attempt,
                        started: at,
                        finished: None,
                    });
                }
                Entry::Finished {
                    task,
                    attempt,
                    at,
                    outcome,
                    report,
                } => match open.remove(&(task, attempt)) {
                    Some(i) => runs.get_mut(&task).expect("started")[i].finished = Some((at, outcome, report)),
                    None => problems.push(format!(
                        "{delegate}: task {task} attempt {attempt:?} finished unstarted"
                    )),
                },
            }
        }
    }

    for (task, list) in &runs {
        tally.runs += list.len();
        tally.stale_results += list
            .iter()
            .filter(|r| matches!(r.finished, Some((_, _, Report::Stale))))
            .count();
        let Some(row) = store.get(task) else {
            problems.push(format!("task {task} ran but is not in the store"));
            continue;
        };

        // No attempt ran twice: the claim hands each attempt to one instance, once.
        let attempts: HashSet<Attempt> = list.iter().map(|r| r.attempt).collect();
        if attempts.len() != list.len() {
            let who: Vec<_> = list.iter().map(|r| format!("{}#{}", r.delegate, r.attempt.0)).collect();
            problems.push(format!("task {task}: an attempt ran twice: {who:?}"));
        }
        // Never more runs than max_attempts, from the delegates' side and the store's.
        if attempts.len() as u32 > row.max_attempts || row.runs > row.max_attempts {
            problems.push(format!(
                "task {task}: {} attempts ran ({} in the store), max_attempts {}",
                attempts.len(),
                row.runs,
                row.max_attempts
            ));
        }
        if overlaps(list) {
            tally.overlapping += 1;
        }

        // At most one success accepted, and only the current attempt's.
        let accepted: Vec<Attempt> = list
            .iter()
            .filter(|r| matches!(r.finished, Some((_, Outcome::Succeeded, Report::Accepted))))
            .map(|r| r.attempt)
            .collect();
        if accepted.len() > 1 {
            problems.push(format!("task {task} succeeded twice: attempts {accepted:?}"));
        }
        if accepted.iter().any(|a| a.0 != row.attempt) || (!accepted.is_empty() && row.state != "succeeded") {
            problems.push(format!(
                "task {task}: a stale result was accepted: delegates had {accepted:?} accepted, the store has {} at attempt {}",
                row.state, row.attempt
            ));
        }
    }

    // A stored success is the success of the attempt the store names, as some delegate ran
    // it (its report may have been answered too late to be recorded as accepted, or its
    // process killed right after).
    for (task, row) in store.iter().filter(|(_, r)| r.state == "succeeded") {
        let ran = runs
            .get(task)
            .into_iter()
            .flatten()
            .filter(|r| r.attempt.0 == row.attempt);
        let mut started = false;
        for run in ran {
            started = true;
            if let Some((_, Outcome::Failed, _)) = run.finished {
                problems.push(format!(
                    "task {task}: stored succeeded at attempt {}, which {} ran and failed",
                    row.attempt, run.delegate
                ));
            }
        }
        if !started {
            problems.push(format!(
                "task {task}: stored succeeded at attempt {}, which no delegate ran",
                row.attempt
            ));
        }
    }
    if problems.is_empty() { Ok(tally) } else { Err(problems) }
}

/// Whether two runs of the task were under way at the same time (an unfinished run counts
/// as running to the end).
fn overlaps(list: &[Run]) -> bool {
    let end = |r: &Run| r.finished.map_or(DateTime::<Utc>::MAX_UTC, |(at, _, _)| at);
    list.iter()
        .enumerate()
        .any(|(i, a)| list[i + 1..].iter().any(|b| a.started < end(b) && b.started < end(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(n: u8) -> TaskId {
        format!("0190f5a4-7c1e-7b2a-9d3e-5f6a7b8c9d{n:02x}").parse().unwrap()
    }

    fn at(s: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_700_000_000 + s, 0).unwrap()
    }

    fn started(t: TaskId, attempt: u32, s: i64) -> Entry {
        Entry::Started {
            task: t,
            attempt: Attempt(attempt),
            at: at(s),
        }
    }

    fn finished(t: TaskId, attempt: u32, s: i64, outcome: Outcome, report: Report) -> Entry {
        Entry::Finished {
            task: t,
            attempt: Attempt(attempt),
            at: at(s),
            outcome,
            report,
        }
    }

    fn row(state: &str, attempt: u32, runs: u32) -> Row {
        Row {
            state: state.into(),
            attempt,
            runs,
            max_attempts: 2,
        }
    }

    #[test]
    fn a_requeue_while_the_first_delegate_was_frozen_passes_and_is_counted() {
        let t = task(1);
        let store = HashMap::from([(t, row("succeeded", 2, 2))]);
        let logs = vec![
            (
                "frozen".into(),
                vec![started(t, 1, 0), finished(t, 1, 10, Outcome::Succeeded, Report::Stale)],
            ),
            (
                "other".into(),
                vec![
                    started(t, 2, 5),
                    finished(t, 2, 6, Outcome::Succeeded, Report::Accepted),
                ],
            ),
        ];
        let tally = verify(&[t], &store, &logs).unwrap();
        assert_eq!((tally.runs, tally.stale_results, tally.overlapping), (2, 1, 1));
    }

    #[test]
    fn each_broken_rule_is_reported() {
        let t = task(2);
        let succeeded = |a, s| finished(t, a, s, Outcome::Succeeded, Report::Accepted);
        let cases: Vec<(&str, Row, Vec<Entry>, Vec<Entry>)> = vec![
            ("is still running", row("running", 1, 1), vec![started(t, 1, 0)], vec![]),
            (
                "an attempt ran twice",
                row("succeeded", 1, 1),
                vec![started(t, 1, 0), succeeded(1, 1)],
                vec![started(t, 1, 0)],
            ),
            (
                "succeeded twice",
                row("succeeded", 2, 2),
                vec![started(t, 1, 0), succeeded(1, 1)],
                vec![started(t, 2, 2), succeeded(2, 3)],
            ),
            (
                "stale result was accepted",
                row("succeeded", 2, 2),
                vec![started(t, 1, 0), succeeded(1, 1)],
                vec![started(t, 2, 2), finished(t, 2, 3, Outcome::Succeeded, Report::Failed)],
            ),
            (
                "max_attempts 2",
                row("failed", 3, 3),
                vec![started(t, 1, 0), started(t, 2, 1)],
                vec![started(t, 3, 2)],
            ),
            ("which no delegate ran", row("succeeded", 1, 1), vec![], vec![]),
        ];
        for (expected, row, a, b) in cases {
            let store = HashMap::from([(t, row)]);
            let logs = vec![("a".to_owned(), a), ("b".to_owned(), b)];
            let problems = verify(&[t], &store, &logs).unwrap_err();
            assert!(
                problems.iter().any(|p| p.contains(expected)),
                "{expected}: {problems:?}"
            );
        }
        let problems = verify(&[task(3)], &HashMap::new(), &[]).unwrap_err();
        assert!(problems[0].contains("is not in the store"), "{problems:?}");
    }
}
