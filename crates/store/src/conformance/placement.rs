//! Conformance cases for what placement records: capability results and the selection
//! log.

use std::sync::Arc;

use chrono::TimeDelta;
use switchboard_domain::{Attempt, Capability, CapabilityResult, SelectionKind, SelectionLogEntry};

use super::fixtures::{fleet, now, queued, task};
use crate::Store;

pub async fn capability_results_replace_older_ones(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let basis = Capability::tcp("db", 5432).expect("valid").basis();
    let at = now();
    let negative = CapabilityResult {
        instance_id: instances[0].id,
        basis: basis.clone(),
        reachable: false,
        detail: "connection refused".into(),
        checked_at: at,
    };
    store.record_capability_result(&negative).await.expect("recorded");
    let positive = CapabilityResult {
        reachable: true,
        detail: "connected".into(),
        checked_at: at + TimeDelta::seconds(1),
        ..negative.clone()
    };
    store.record_capability_result(&positive).await.expect("recorded");
    store
        .record_capability_result(&negative)
        .await
        .expect("an older answer is accepted but changes nothing");
    let other = CapabilityResult {
        instance_id: instances[1].id,
        ..negative.clone()
    };
    store.record_capability_result(&other).await.expect("recorded");

    let mine = store.capability_results(&[instances[0].id]).await.expect("results");
    assert_eq!(mine, vec![positive]);
    assert_eq!(
        store
            .capability_results(&[instances[0].id, instances[1].id])
            .await
            .expect("results")
            .len(),
        2
    );
    assert!(store.capability_results(&[]).await.expect("results").is_empty());
}

pub async fn the_selection_log_keeps_order_and_is_pruned_by_age(store: Arc<dyn Store>) {
    let t = queued(&store, task("acme")).await;
    let old = now() - TimeDelta::days(31);
    let entry = |attempt: u32, kind: SelectionKind, summary: &str, at| SelectionLogEntry {
        task_id: t.id(),
        attempt: Attempt(attempt),
        at,
        kind,
        summary: summary.into(),
        detail: serde_json::json!({"considered": 12, "summary": summary}),
    };
    let recent = now();
    let entries = vec![
        entry(
            1,
            SelectionKind::Decision,
            "0/12 delegates eligible: 12 stale heartbeat",
            old,
        ),
        entry(1, SelectionKind::Decision, "1/12 delegates eligible", recent),
        entry(1, SelectionKind::Assigned, "assigned to host-1", recent),
        entry(2, SelectionKind::Requeued, "acknowledge timeout", recent),
    ];
    store.append_selection_log(&entries).await.expect("appended");
    store.append_selection_log(&[]).await.expect("an empty batch is fine");
    assert_eq!(store.selection_log(t.id()).await.expect("log"), entries);

    let pruned = store
        .prune_selection_log(now() - TimeDelta::days(30))
        .await
        .expect("pruned");
    assert_eq!(pruned, 1);
    assert_eq!(store.selection_log(t.id()).await.expect("log"), entries[1..]);
}
