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
        self.samples.get(series).copied().unwrap_or(0.0)
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

/// Whether a store operation only reads. Everything else counts as a write; `lead` (the
/// leader's lock, renewed periodically) counts as neither, like the scrape's own read.
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

    #[test]
    fn reads_and_writes_are_told_apart() {
        assert!(is_read("list_instances") && is_read("get_task") && is_read("token_by_secret"));
        assert!(!is_read("record_heartbeats") && !is_read("claim_task") && !is_read("insert_task"));
    }
}
