//! Readings of a manager's `GET /metrics` (OpenMetrics text): the few series the
//! scenarios compare before and after a window.

use std::collections::BTreeMap;

/// One scrape: every sample, keyed by its series name with its labels as written
/// (`switchboard_store_call_seconds_count{op="record_heartbeats"}`).
#[derive(Debug, Clone, Default)]
pub struct Scrape {
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    pub fn parse(text: &str) -> Scrape {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(|line| {
                // A sample is `name{labels} value` (the labels may hold spaces inside quotes).
                let split = match line.rfind('}') {
                    Some(close) => close + 1,
                    None => line.find(' ')?,
                };
                let (series, rest) = line.split_at(split);
                let value = rest.split_whitespace().next()?.parse().ok()?;
                Some((series.trim().to_owned(), value))
            })
            .collect();
        Scrape { samples }
    }

    /// The value of an unlabelled series, or 0 when it is absent.
    pub fn value(&self, series: &str) -> f64 {
        self.get(series).unwrap_or(0.0)
    }

    /// The value of an unlabelled series, or `None` when the manager does not export it.
    pub fn get(&self, series: &str) -> Option<f64> {
        self.samples.get(series).copied()
    }

    /// Every value of `series` by the value of its one label `label`.
    pub fn by_label(&self, series: &str, label: &str) -> BTreeMap<String, f64> {
        let prefix = format!("{series}{{{label}=\"");
        self.samples
            .iter()
            .filter_map(|(name, value)| {
                let rest = name.strip_prefix(&prefix)?;
                let (label_value, _) = rest.split_once('"')?;
                Some((label_value.to_owned(), *value))
            })
            .collect()
    }
}

/// Store calls by operation, from `switchboard_store_call_seconds_count{op}`.
pub fn store_calls(scrape: &Scrape) -> BTreeMap<String, f64> {
    scrape.by_label("switchboard_store_call_seconds_count", "op")
}

/// What the manager's committer exports: items in each committed batch of task writes.
pub const BATCH_ITEMS: &str = "switchboard_store_batch_items";

/// An unlabelled Prometheus histogram as scraped: cumulative counts by upper bound.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Histogram {
    /// `(le, observations <= le)`, by increasing bound; the last bound is `+Inf`.
    pub buckets: Vec<(f64, f64)>,
    pub count: f64,
    pub sum: f64,
}

impl Histogram {
    /// `name`'s buckets, count and sum, or `None` when the scrape does not hold it (a
    /// manager too old to export it).
    pub fn read(scrape: &Scrape, name: &str) -> Option<Histogram> {
        let count = scrape.get(&format!("{name}_count"))?;
        let sum = scrape.get(&format!("{name}_sum")).unwrap_or(0.0);
        let mut buckets: Vec<(f64, f64)> = scrape
            .by_label(&format!("{name}_bucket"), "le")
            .into_iter()
            .filter_map(|(le, n)| {
                let bound = if le.eq_ignore_ascii_case("+inf") {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, n))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        Some(Histogram { buckets, count, sum })
    }

    /// The observations made since `before` (an earlier scrape of the same histogram).
    pub fn since(&self, before: &Histogram) -> Histogram {
        let earlier = |bound: f64| {
            before
                .buckets
                .iter()
                .find(|(le, _)| *le == bound)
                .map_or(0.0, |(_, n)| *n)
        };
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|&(le, n)| (le, (n - earlier(le)).max(0.0)))
                .collect(),
            count: (self.count - before.count).max(0.0),
            sum: (self.sum - before.sum).max(0.0),
        }
    }

    pub fn mean(&self) -> Option<f64> {
        (self.count > 0.0).then(|| self.sum / self.count)
    }

    /// The `q` quantile estimated from the buckets as PromQL's `histogram_quantile` does
    /// (linear within the bucket the rank falls in; a rank in `+Inf` gives the highest
    /// finite bound), except that the first bucket starts at its own bound when that is at
    /// most 1: the observations are item counts, so `le="1"` holds only ones.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let total = self.buckets.last()?.1;
        if total <= 0.0 {
            return None;
        }
        let rank = q.clamp(0.0, 1.0) * total;
        let mut lower = self.buckets.first().map_or(0.0, |(le, _)| le.clamp(0.0, 1.0));
        let mut below = 0.0;
        for &(le, n) in &self.buckets {
            if n >= rank && n > below {
                if le.is_infinite() {
                    return Some(lower);
                }
                return Some(lower + (le - lower) * (rank - below) / (n - below));
            }
            if le.is_finite() {
                lower = le;
            }
            below = n;
        }
        Some(lower)
    }
}

/// Whether a store operation only reads. Everything else counts as a write (a sweep's
/// `DELETE` too, whether or not it found rows); `lead` (the leader's lock, renewed
/// periodically) counts as neither, like the scrape's own read.
pub fn is_read(op: &str) -> bool {
    op.starts_with("get_")
        || op.starts_with("list_")
        || op.ends_with("_by_secret")
        || op.ends_with("_by_session")
        || matches!(
            op,
            "check_ready"
                | "queued_tasks"
                | "task_attempts"
                | "tasks_held_by"
                | "due_tasks"
                | "capability_results"
                | "selection_log"
                | "last_success"
                | "subscribe"
                | "lead"
                | "queue_shapes"
                | "queue_heads"
                | "active_by_scope"
                | "scope_policies"
                | "concurrency_held"
                | "secrets_by_id"
                | "secrets_named"
                | "task_log"
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP switchboard_heartbeats_received Heartbeats received over delegate sockets.
# TYPE switchboard_heartbeats_received counter
switchboard_heartbeats_received_total 1234
switchboard_delegate_sockets_open 10
switchboard_store_call_seconds_sum{op="record_heartbeats"} 0.5
switchboard_store_call_seconds_count{op="record_heartbeats"} 7
switchboard_store_call_seconds_bucket{op="record_heartbeats",le="0.001"} 3
switchboard_store_call_seconds_count{op="list_instances"} 2
# EOF
"#;

    #[test]
    fn samples_are_read_by_name_and_by_label() {
        let scrape = Scrape::parse(TEXT);
        assert_eq!(scrape.value("switchboard_heartbeats_received_total"), 1234.0);
        assert_eq!(scrape.value("switchboard_delegate_sockets_open"), 10.0);
        assert_eq!(scrape.value("absent"), 0.0);
        let calls = store_calls(&scrape);
        assert_eq!(calls.len(), 2);
        assert_eq!(calls["record_heartbeats"], 7.0);
        assert_eq!(calls["list_instances"], 2.0);
    }

    const BATCHES: &str = r#"# TYPE switchboard_store_batch_items histogram
switchboard_store_batch_items_sum 0.0
switchboard_store_batch_items_count 0
switchboard_store_batch_items_bucket{le="1.0"} 0
switchboard_store_batch_items_bucket{le="2.0"} 0
switchboard_store_batch_items_bucket{le="4.0"} 0
switchboard_store_batch_items_bucket{le="+Inf"} 0
"#;

    fn batches(ones: f64, up_to_two: f64, up_to_four: f64, more: f64, sum: f64) -> Histogram {
        let text = BATCHES
            .replace("_sum 0.0", &format!("_sum {sum}"))
            .replace("_count 0", &format!("_count {}", ones + up_to_two + up_to_four + more))
            .replace("\"1.0\"} 0", &format!("\"1.0\"}} {ones}"))
            .replace("\"2.0\"} 0", &format!("\"2.0\"}} {}", ones + up_to_two))
            .replace("\"4.0\"} 0", &format!("\"4.0\"}} {}", ones + up_to_two + up_to_four))
            .replace(
                "\"+Inf\"} 0",
                &format!("\"+Inf\"}} {}", ones + up_to_two + up_to_four + more),
            );
        Histogram::read(&Scrape::parse(&text), BATCH_ITEMS).unwrap()
    }

    #[test]
    fn a_histogram_is_absent_from_a_manager_that_does_not_export_it() {
        assert_eq!(Histogram::read(&Scrape::parse(TEXT), BATCH_ITEMS), None);
        let empty = Histogram::read(&Scrape::parse(BATCHES), BATCH_ITEMS).unwrap();
        assert_eq!(empty.buckets.len(), 4);
        assert_eq!(empty.buckets[3].0, f64::INFINITY);
        assert_eq!(empty.quantile(0.5), None);
        assert_eq!(empty.mean(), None);
    }

    #[test]
    fn batch_sizes_over_a_window_are_the_difference_of_two_scrapes() {
        let before = batches(10.0, 0.0, 0.0, 0.0, 10.0);
        let after = batches(10.0, 4.0, 4.0, 2.0, 10.0 + 8.0 + 14.0 + 12.0);
        let window = after.since(&before);
        assert_eq!(window.count, 10.0);
        assert_eq!(window.mean(), Some(3.4));
        assert_eq!(window.buckets[0], (1.0, 0.0));
        // Ranks 1-4 in (1, 2], 5-8 in (2, 4], 9-10 past the last finite bound.
        assert_eq!(window.quantile(0.4), Some(2.0));
        assert_eq!(window.quantile(0.6), Some(3.0));
        assert_eq!(window.quantile(0.99), Some(4.0));
    }

    #[test]
    fn batches_of_one_item_have_every_quantile_at_one() {
        let ones = batches(50.0, 0.0, 0.0, 0.0, 50.0);
        assert_eq!(ones.quantile(0.5), Some(1.0));
        assert_eq!(ones.quantile(0.99), Some(1.0));
        assert_eq!(ones.mean(), Some(1.0));
    }

    #[test]
    fn reads_and_writes_are_told_apart() {
        assert!(is_read("list_instances") && is_read("get_task") && is_read("token_by_secret"));
        assert!(!is_read("record_heartbeats") && !is_read("claim_task") && !is_read("insert_task"));
        // The placer's and the history's queue reads are reads.
        assert!(is_read("queue_heads") && is_read("queue_shapes") && is_read("active_by_scope"));
    }
}
