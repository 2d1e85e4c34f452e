//! A snapshot kept between decisions: the load and last successes laid over it.

use super::*;
use crate::engine::Preference;

#[test]
fn a_claim_counted_on_a_kept_snapshot_moves_the_next_task_to_the_less_loaded_instance() {
    let g = group(1, "acme", "pool", &[]);
    let (mut a, mut b) = (instance(1, &g), instance(2, &g));
    a.capacity = capacity(2);
    b.capacity = capacity(2);
    let mut reg = registry(vec![g], vec![a, b]);
    let task = Task::new("acme", &[]);
    let first = task.decide(&reg).chosen.expect("both are eligible");
    let other = if first == instance_id(1) {
        instance_id(2)
    } else {
        instance_id(1)
    };

    assert!(reg.count_claim(first));
    let next = task.decide(&reg);
    assert_eq!(next.chosen, Some(other), "the claimed one is busier now");
    match next.verdict(other) {
        Some(Verdict::Eligible { ahead_by, .. }) => assert_eq!(*ahead_by, Some(Preference::LowerLoad)),
        v => panic!("expected eligible, got {v:?}"),
    }

    assert!(reg.mark_full(other));
    assert_eq!(rejected_by(&task.decide(&reg), other), Some(Rule::Capacity));
    assert_eq!(task.decide(&reg).chosen, Some(first), "one slot is left on the first");
    assert!(!reg.count_claim(instance_id(99)), "not in the snapshot");
}

#[test]
fn a_noted_last_success_replaces_an_older_one_only() {
    let g = group(1, "acme", "pool", &[]);
    let (a, b) = (instance(1, &g), instance(2, &g));
    let connector = ConnectorId(uuid::Uuid::from_u128(5));
    let success = |i: u128, minutes_ago: i64| LastSuccess {
        connector_id: connector,
        instance_id: instance_id(i),
        group_id: g.id,
        at: now() - chrono::Duration::minutes(minutes_ago),
    };
    let mut reg = registry_with(vec![g.clone()], vec![a, b], vec![], vec![success(1, 10)]);
    let mut task = Task::new("acme", &[]);
    task.connector = Some(connector);
    assert_eq!(task.decide(&reg).chosen, Some(instance_id(1)));

    reg.note_last_success(success(2, 20));
    assert_eq!(
        task.decide(&reg).chosen,
        Some(instance_id(1)),
        "an older success changes nothing"
    );
    reg.note_last_success(success(2, 1));
    assert_eq!(task.decide(&reg).chosen, Some(instance_id(2)));
}
