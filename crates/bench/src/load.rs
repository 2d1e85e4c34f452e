//! The open-loop submitter and what it records.
//!
//! Tasks are submitted on a schedule fixed in advance (task `i` of a step is due at
//! `start + i / rate`), whatever the manager's answers: a slow answer never delays the next
//! submission, and every latency is measured from the task's **intended** time, not from
//! when it was actually sent. A submitter that fell behind (a manager too slow to answer,
//! or this process starved of CPU) therefore shows up in the latencies instead of hiding
//! in a lower offered rate: the correction for coordinated omission.
//!
//! Each task's payload carries a [`Stamp`] (its step and intended time). The simulated
//! delegate that receives it reads the stamp back from the acquire answer and records
//! three latencies from the intended time: to the notification on its socket, to the
//! acquire committed (the answer received), and to the result committed.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use rand::Rng;
use serde::{Deserialize, Serialize};
use switchboard_client::Client;
use switchboard_protocol::tasks::SubmitTask;
use tokio::sync::Semaphore;

use crate::fleet::Layout;
use crate::stats::{Latency, histogram};

/// What a task's payload carries, so the delegate can measure from the intended time.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Stamp {
    /// The step (run) it belongs to.
    pub run: u32,
    pub seq: u64,
    /// When it was due, in microseconds since the recorder's epoch.
    pub at_us: u64,
}

/// The counts and histograms of one step.
#[derive(Debug, Clone)]
pub struct RunStats {
    pub submitted: u64,
    pub submit_errors: u64,
    pub completed: u64,
    pub result_errors: u64,
    /// From the intended time to the submission's answer.
    pub submit: Histogram<u64>,
    /// From the intended time to the delegate's notification.
    pub notify: Histogram<u64>,
    /// From the intended time to the acquire committed.
    pub acquire: Histogram<u64>,
    /// From the intended time to the result committed: the full lifecycle.
    pub complete: Histogram<u64>,
    /// The latest completion, in microseconds since the epoch.
    pub last_done_us: u64,
    /// One submission error's text, to show why.
    pub first_error: Option<String>,
}

impl Default for RunStats {
    fn default() -> Self {
        RunStats {
            submitted: 0,
            submit_errors: 0,
            completed: 0,
            result_errors: 0,
            submit: histogram(),
            notify: histogram(),
            acquire: histogram(),
            complete: histogram(),
            last_done_us: 0,
            first_error: None,
        }
    }
}

/// Everything recorded, per step. Shared by the submitter and every simulated delegate.
#[derive(Debug)]
pub struct Recorder {
    epoch: Instant,
    next_run: AtomicU32,
    /// A std mutex: each update is a few histogram increments, never held across an await.
    runs: Mutex<HashMap<u32, RunStats>>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder {
            epoch: Instant::now(),
            next_run: AtomicU32::new(1),
            runs: Mutex::new(HashMap::new()),
        }
    }
}

impl Recorder {
    pub fn new_run(&self) -> u32 {
        self.next_run.fetch_add(1, Ordering::Relaxed)
    }

    fn us_since_epoch(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_micros()).unwrap_or(u64::MAX)
    }

    fn with_run<T>(&self, run: u32, f: impl FnOnce(&mut RunStats) -> T) -> T {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(runs.entry(run).or_default())
    }

    fn submitted(&self, run: u32, at_us: u64, answered: Instant, error: Option<String>) {
        let took = self.us_since_epoch(answered).saturating_sub(at_us);
        self.with_run(run, |r| match error {
            None => {
                r.submitted += 1;
                r.submit.saturating_record(took);
            }
            Some(e) => {
                r.submit_errors += 1;
                r.first_error.get_or_insert(e);
            }
        });
    }

    /// A delegate finished a task: notified, acquired and completed at these instants.
    pub fn completed(&self, stamp: &Stamp, notified: Instant, acquired: Instant, done: Instant) {
        let [notify, acquire, done_us] = [notified, acquired, done].map(|t| self.us_since_epoch(t));
        self.with_run(stamp.run, |r| {
            r.completed += 1;
            r.notify.saturating_record(notify.saturating_sub(stamp.at_us));
            r.acquire.saturating_record(acquire.saturating_sub(stamp.at_us));
            r.complete.saturating_record(done_us.saturating_sub(stamp.at_us));
            r.last_done_us = r.last_done_us.max(done_us);
        });
    }

    /// A delegate could not report a task's result.
    pub fn result_failed(&self, run: u32) {
        self.with_run(run, |r| r.result_errors += 1);
    }

    /// Submitted (accepted) and completed so far.
    pub fn progress(&self, run: u32) -> (u64, u64) {
        self.with_run(run, |r| (r.submitted, r.completed))
    }

    pub fn take(&self, run: u32) -> RunStats {
        let mut runs = self.runs.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        runs.remove(&run).unwrap_or_default()
    }
}

/// How one step is offered.
#[derive(Debug, Clone, Copy)]
pub struct Offer {
    /// Tasks a second.
    pub rate: f64,
    pub duration: Duration,
    /// How long to wait, after the last submission, for every task to complete.
    pub drain: Duration,
}

/// Submissions allowed in flight at once; past it the submitter waits (and the wait shows
/// in the latencies, measured from the intended times).
const IN_FLIGHT: usize = 1024;

/// What one step came to.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub offered_rate: f64,
    pub duration_s: f64,
    pub submitted: u64,
    pub submit_errors: u64,
    pub completed: u64,
    pub result_errors: u64,
    /// Completions a second, from the first intended time to the last completion.
    pub throughput: f64,
    /// How far behind its schedule the submitter was at worst, in ms.
    pub submitter_lag_ms: f64,
    /// Every accepted task completed within the drain time.
    pub all_completed: bool,
    pub submit: Latency,
    pub notify: Latency,
    pub acquire: Latency,
    pub complete: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
    /// Where the manager's time went (filled in by the scenario, which knows the manager).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub manager: Option<crate::scenario::Usage>,
}

/// Submits at `offer.rate` for `offer.duration` (open loop), waits for the tasks to
/// complete (at most `offer.drain`), and summarises the step.
pub async fn run_step(
    client: &Client,
    recorder: &Arc<Recorder>,
    layout: &Layout,
    offer: Offer,
    bar: &ProgressBar,
) -> Step {
    let run = recorder.new_run();
    let total = ((offer.rate * offer.duration.as_secs_f64()).round() as u64).max(1);
    bar.set_length(total);
    bar.set_position(0);
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let start = Instant::now() + Duration::from_millis(20);
    let start_us = recorder.us_since_epoch(start);
    let mut lag = Duration::ZERO;
    for seq in 0..total {
        let due = start + Duration::from_secs_f64(seq as f64 / offer.rate);
        tokio::time::sleep_until(due.into()).await;
        let Ok(permit) = Arc::clone(&slots).acquire_owned().await else {
            break;
        };
        lag = lag.max(Instant::now().saturating_duration_since(due));
        let stamp = Stamp {
            run,
            seq,
            at_us: recorder.us_since_epoch(due),
        };
        let body = task(layout, &stamp);
        let (client, shared) = (client.clone(), Arc::clone(recorder));
        tokio::spawn(async move {
            let outcome = client.submit_task(&body, None).await;
            shared.submitted(run, stamp.at_us, Instant::now(), outcome.err().map(|e| e.to_string()));
            drop(permit);
        });
        if seq % 64 == 0 {
            bar.set_position(seq);
            bar.set_message(format!("{} completed", recorder.progress(run).1));
        }
    }
    // Every submission answered: all the slots are free again.
    let _all = slots.acquire_many(IN_FLIGHT as u32).await;
    bar.set_position(total);
    let deadline = Instant::now() + offer.drain;
    loop {
        let (submitted, completed) = recorder.progress(run);
        bar.set_message(format!("{completed} of {submitted} completed"));
        if completed >= submitted || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let stats = recorder.take(run);
    let span_s = (stats.last_done_us.saturating_sub(start_us) as f64 / 1e6).max(offer.duration.as_secs_f64());
    Step {
        offered_rate: offer.rate,
        duration_s: offer.duration.as_secs_f64(),
        submitted: stats.submitted,
        submit_errors: stats.submit_errors,
        completed: stats.completed,
        result_errors: stats.result_errors,
        throughput: stats.completed as f64 / span_s,
        submitter_lag_ms: lag.as_secs_f64() * 1000.0,
        all_completed: stats.completed >= stats.submitted,
        submit: Latency::of(&stats.submit),
        notify: Latency::of(&stats.notify),
        acquire: Latency::of(&stats.acquire),
        complete: Latency::of(&stats.complete),
        first_error: stats.first_error,
        manager: None,
    }
}

/// The task for one submission: the scope and tag of a delegate picked at random, so that
/// every task has delegates able to take it and the load spreads over scopes and tags.
fn task(layout: &Layout, stamp: &Stamp) -> SubmitTask {
    let delegate = rand::rng().random_range(0..layout.delegates.max(1));
    let slot = layout.slot(delegate);
    SubmitTask {
        account: layout.account.clone(),
        org: slot.org.cloned(),
        project: slot.project.cloned(),
        task_type: layout.task_type.clone(),
        payload: serde_json::to_value(stamp).unwrap_or_default(),
        selectors: vec![slot.tag.to_owned()],
        connector: None,
        capabilities: Vec::new(),
        priority: 0,
        assign_timeout_ms: None,
        execution_timeout_ms: None,
        max_attempts: None,
        wait_for_delegate: false,
        // With policies: one of the keys, whose limit a run never reaches (so the cost is
        // the claim's count under the key's lock, not tasks held back), and a retry policy.
        concurrency_key: layout.policies.map(|keys| format!("bench-{}", stamp.seq % keys.max(1))),
        concurrency_limit: layout.policies.map(|_| 10_000),
        concurrency_strategy: None,
        retry: layout.policies.map(|_| {
            serde_json::from_value(serde_json::json!({
                "on": ["failed", "timed_out", "delegate_lost"], "initial_delay_ms": 1000
            }))
            .unwrap_or_else(|_| unreachable!("a valid retry policy"))
        }),
        secrets: Vec::new(),
    }
}
