//! The last hour of the queue, for the dashboard's charts: per scope and per interval
//! (`history_interval`, 10 s), how many tasks waited and ran, and how long the tasks
//! assigned in it had waited.
//!
//! Kept in memory by each replica: the counts are sampled from the store (the same for
//! every replica), the waits are those of the assignments this replica made (with one
//! replica, all of them; behind a balancer, its share). A restart starts an empty hour.
//! Answered by `GET /api/v1/queue/history`.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use switchboard_domain::Scope;
use switchboard_protocol::fleet::{HistoryPoint, QueueHistory};

/// How many intervals are kept: an hour of 10 s ones.
pub const KEPT: usize = 360;

/// The upper bounds of the wait buckets, in milliseconds; a last bucket holds the rest.
const BOUNDS_MS: [i64; 18] = [
    5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 120_000, 300_000, 600_000, 1_800_000,
    3_600_000,
];

/// What one interval knows of one scope.
#[derive(Debug, Clone, Default)]
struct Tally {
    queued: u64,
    running: u64,
    waits: [u32; BOUNDS_MS.len() + 1],
}

#[derive(Debug)]
struct Slot {
    /// The interval's number: its start in Unix time divided by the interval.
    number: i64,
    /// Whether the counts were sampled in it (the last sample counts).
    sampled: bool,
    scopes: HashMap<Scope, Tally>,
}

/// The kept intervals, newest last.
#[derive(Debug)]
pub struct History {
    interval_ms: i64,
    slots: Mutex<VecDeque<Slot>>,
}

impl History {
    pub fn new(interval: std::time::Duration) -> Self {
        Self {
            interval_ms: i64::try_from(interval.as_millis()).unwrap_or(i64::MAX).max(1),
            slots: Mutex::new(VecDeque::with_capacity(KEPT + 1)),
        }
    }

    /// A task of `scope` was assigned at `at` after waiting `waited`.
    pub fn assigned(&self, scope: &Scope, waited: chrono::Duration, at: DateTime<Utc>) {
        let ms = waited.num_milliseconds().max(0);
        let bucket = BOUNDS_MS.iter().position(|&b| ms <= b).unwrap_or(BOUNDS_MS.len());
        self.with_slot(at, |slot| {
            let tally = slot.scopes.entry(scope.clone()).or_default();
            tally.waits[bucket] = tally.waits[bucket].saturating_add(1);
        });
    }

    /// How many tasks waited and ran at `at`, per scope: replaces the interval's earlier
    /// sample. A scope not listed had none.
    pub fn sampled(&self, at: DateTime<Utc>, counts: impl IntoIterator<Item = (Scope, u64, u64)>) {
        let counts: Vec<(Scope, u64, u64)> = counts.into_iter().collect();
        self.with_slot(at, |slot| {
            slot.sampled = true;
            for tally in slot.scopes.values_mut() {
                tally.queued = 0;
                tally.running = 0;
            }
            for (scope, queued, running) in counts {
                let tally = slot.scopes.entry(scope).or_default();
                tally.queued = queued;
                tally.running = running;
            }
        });
    }

    /// The kept intervals, oldest first, summed over the scopes `counts` accepts.
    pub fn series(&self, counts: impl Fn(&Scope) -> bool) -> QueueHistory {
        let slots = self.lock();
        let points = slots
            .iter()
            .map(|slot| {
                let sampled = slot.sampled;
                let (mut queued, mut running) = (0, 0);
                let mut waits = [0u64; BOUNDS_MS.len() + 1];
                for (_, tally) in slot.scopes.iter().filter(|(s, _)| counts(s)) {
                    queued += tally.queued;
                    running += tally.running;
                    for (sum, n) in waits.iter_mut().zip(tally.waits) {
                        *sum += u64::from(n);
                    }
                }
                let assigned: u64 = waits.iter().sum();
                let at =
                    DateTime::from_timestamp_millis(slot.number.saturating_mul(self.interval_ms)).unwrap_or_default();
                HistoryPoint {
                    at,
                    queued: sampled.then_some(queued),
                    running: sampled.then_some(running),
                    assigned,
                    wait_p50_ms: quantile(&waits, 0.5),
                    wait_p95_ms: quantile(&waits, 0.95),
                    wait_p99_ms: quantile(&waits, 0.99),
                }
            })
            .collect();
        QueueHistory {
            interval_ms: u64::try_from(self.interval_ms).unwrap_or_default(),
            points,
        }
    }

    fn with_slot(&self, at: DateTime<Utc>, change: impl FnOnce(&mut Slot)) {
        let number = at.timestamp_millis().div_euclid(self.interval_ms);
        let mut slots = self.lock();
        let position = slots.iter().rposition(|s| s.number == number);
        let slot = match position {
            Some(i) => &mut slots[i],
            // An interval older than the newest kept one (a late call): dropped.
            None if slots.back().is_some_and(|s| s.number > number) => return,
            None => {
                slots.push_back(Slot {
                    number,
                    sampled: false,
                    scopes: HashMap::new(),
                });
                while slots.len() > KEPT {
                    slots.pop_front();
                }
                let last = slots.len() - 1;
                &mut slots[last]
            }
        };
        change(slot);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Slot>> {
        // Each change is a few map updates: a poisoned lock still holds whole slots.
        self.slots.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The upper bound (ms) of the bucket that holds quantile `q` of `waits`; `None` without
/// any.
fn quantile(waits: &[u64], q: f64) -> Option<f64> {
    let total: u64 = waits.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in waits.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(BOUNDS_MS.get(i).copied().unwrap_or(i64::MAX) as f64);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(path: &str) -> Scope {
        Scope::parse_path(path).unwrap()
    }

    #[test]
    fn intervals_hold_the_last_sample_and_the_waits_of_their_assignments() {
        let history = History::new(std::time::Duration::from_secs(10));
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        history.sampled(t0, [(scope("acme/eng"), 5, 1), (scope("globex"), 7, 0)]);
        history.sampled(t0 + chrono::Duration::seconds(3), [(scope("acme/eng"), 4, 2)]);
        for ms in [3, 40, 40, 900] {
            history.assigned(&scope("acme/eng"), chrono::Duration::milliseconds(ms), t0);
        }
        // The next interval: assignments but no sample yet.
        history.assigned(
            &scope("acme"),
            chrono::Duration::seconds(70),
            t0 + chrono::Duration::seconds(10),
        );

        let acme = history.series(|s| scope("acme").contains(s));
        assert_eq!(acme.interval_ms, 10_000);
        assert_eq!(acme.points.len(), 2);
        let first = &acme.points[0];
        assert_eq!((first.queued, first.running, first.assigned), (Some(4), Some(2), 4));
        assert_eq!(
            first.wait_p50_ms,
            Some(50.0),
            "the bucket holding the median: 25 to 50 ms"
        );
        assert_eq!(first.wait_p99_ms, Some(1_000.0));
        assert_eq!(first.at, t0);
        let second = &acme.points[1];
        assert_eq!(
            (second.queued, second.assigned),
            (None, 1),
            "not sampled yet: unknown, not zero"
        );
        assert_eq!(second.wait_p50_ms, Some(120_000.0));

        // Another scope's tasks are not counted; globex's sample was replaced by acme's.
        let globex = history.series(|s| scope("globex").contains(s));
        assert_eq!((globex.points[0].queued, globex.points[0].assigned), (Some(0), 0));
        assert_eq!(globex.points[0].wait_p50_ms, None);
    }

    #[test]
    fn an_hour_is_kept_and_a_late_call_for_an_old_interval_is_dropped() {
        let history = History::new(std::time::Duration::from_secs(10));
        let t0 = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        for i in 0..(KEPT as i64 + 20) {
            history.sampled(t0 + chrono::Duration::seconds(10 * i), [(scope("acme"), i as u64, 0)]);
        }
        history.assigned(&scope("acme"), chrono::Duration::seconds(1), t0);
        let all = history.series(|_| true);
        assert_eq!(all.points.len(), KEPT);
        assert_eq!(all.points[0].queued, Some(20));
        assert!(
            all.points.iter().all(|p| p.assigned == 0),
            "the late assignment was dropped"
        );
    }
}
