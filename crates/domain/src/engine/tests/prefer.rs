//! One test per step of the preference order, and the tie-break's determinism.

use chrono::Duration;

use super::*;
use crate::engine::{Load, Preference};

fn success(connector: ConnectorId, i: &DelegateInstance) -> LastSuccess {
    LastSuccess {
        connector_id: connector,
        instance_id: i.id,
        group_id: i.group_id,
        at: now() - Duration::minutes(10),
    }
}

fn connector() -> ConnectorId {
    ConnectorId(uuid::Uuid::from_u128(77))
}

#[test]
fn the_last_success_instance_for_the_connector_beats_a_less_loaded_one() {
    let g = group(1, "acme", "k8s", &[]);
    let mut busy = instance(1, &g);
    busy.active_tasks = 9;
    let idle = instance(2, &g);
    let mut task = Task::new("acme", &[]);
    task.connector = Some(connector());
    let reg = registry_with(
        vec![g],
        vec![busy.clone(), idle.clone()],
        vec![],
        vec![success(connector(), &busy)],
    );
    let d = task.decide(&reg);
    assert_eq!(d.ranked, vec![busy.id, idle.id]);
    match d.verdict(busy.id) {
        Some(Verdict::Eligible {
            rank,
            preferred,
            ahead_by,
            load,
            ..
        }) => {
            assert_eq!(*rank, 1);
            assert_eq!(
                preferred,
                &vec![Preference::LastSuccessInstance, Preference::LastSuccessGroup]
            );
            assert_eq!(*ahead_by, Some(Preference::LastSuccessInstance));
            assert_eq!(
                *load,
                Load {
                    active: 9,
                    capacity: 10
                }
            );
        }
        other => panic!("expected eligible, got {other:?}"),
    }
}

#[test]
fn the_last_success_of_another_connector_is_ignored() {
    let g = group(1, "acme", "k8s", &[]);
    let mut busy = instance(1, &g);
    busy.active_tasks = 9;
    let idle = instance(2, &g);
    let mut task = Task::new("acme", &[]);
    task.connector = Some(ConnectorId(uuid::Uuid::from_u128(78)));
    let reg = registry_with(
        vec![g],
        vec![busy, idle.clone()],
        vec![],
        vec![success(connector(), &instance(1, &group(1, "acme", "k8s", &[])))],
    );
    assert_eq!(task.decide(&reg).chosen, Some(idle.id));
}

#[test]
fn when_the_last_success_instance_is_not_eligible_its_group_comes_next() {
    let winners = group(1, "acme", "winners", &[]);
    let others = group(2, "acme", "others", &[]);
    let mut gone = instance(1, &winners);
    gone.connected = false;
    let mut sibling = instance(2, &winners);
    sibling.active_tasks = 8;
    let idle = instance(3, &others);
    let mut task = Task::new("acme", &[]);
    task.connector = Some(connector());
    let reg = registry_with(
        vec![winners, others],
        vec![gone.clone(), sibling.clone(), idle.clone()],
        vec![],
        vec![success(connector(), &gone)],
    );
    let d = task.decide(&reg);
    assert_eq!(d.ranked, vec![sibling.id, idle.id]);
    assert_eq!(rejected_by(&d, gone.id), Some(Rule::Liveness));
}

#[test]
fn the_newest_last_success_for_a_connector_wins() {
    let g = group(1, "acme", "k8s", &[]);
    let (a, b) = (instance(1, &g), instance(2, &g));
    let mut old = success(connector(), &a);
    old.at = now() - Duration::hours(2);
    let new = success(connector(), &b);
    let mut task = Task::new("acme", &[]);
    task.connector = Some(connector());
    let reg = registry_with(vec![g], vec![a, b.clone()], vec![], vec![new, old]);
    assert_eq!(task.decide(&reg).chosen, Some(b.id));
}

#[test]
fn known_positive_capabilities_beat_a_lower_load() {
    let g = group(1, "acme", "k8s", &[]);
    let mut known = instance(1, &g);
    known.active_tasks = 5;
    let unknown = instance(2, &g);
    let db = tcp("db");
    let mut task = Task::new("acme", &[]);
    task.capabilities = vec![db.clone()];
    let results = vec![result(known.id, &db, true, Duration::hours(1))];
    let d = task.decide(&registry_with(
        vec![g],
        vec![known.clone(), unknown.clone()],
        results,
        vec![],
    ));
    assert_eq!(d.ranked, vec![known.id, unknown.id]);
    assert!(d.to_validate.is_empty());
    match d.verdict(unknown.id) {
        Some(Verdict::Eligible { unchecked, .. }) => assert_eq!(unchecked, &vec![db.basis()]),
        other => panic!("expected eligible, got {other:?}"),
    }
}

#[test]
fn the_lowest_load_is_a_ratio_of_active_tasks_to_capacity() {
    let g = group(1, "acme", "k8s", &[]);
    let mut half = instance(1, &g);
    half.capacity = capacity(2);
    half.active_tasks = 1;
    let mut fifth = instance(2, &g);
    fifth.capacity = capacity(10);
    fifth.active_tasks = 2;
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![half.clone(), fifth.clone()]));
    assert_eq!(d.ranked, vec![fifth.id, half.id]);
    match d.verdict(fifth.id) {
        Some(Verdict::Eligible { ahead_by, .. }) => assert_eq!(*ahead_by, Some(Preference::LowerLoad)),
        other => panic!("expected eligible, got {other:?}"),
    }
}

#[test]
fn equal_instances_are_ordered_by_the_seed_and_the_same_seed_gives_the_same_order() {
    let g = group(1, "acme", "k8s", &[]);
    let instances: Vec<DelegateInstance> = (1..=6).map(|n| instance(n, &g)).collect();
    let reg = registry(vec![g.clone()], instances.clone());
    let task = Task::new("acme", &[]);
    let order = |seed| task.decide_with(&reg, Context::new(now(), seed)).ranked;
    assert_eq!(order(1), order(1));
    let firsts: std::collections::BTreeSet<InstanceId> = (0..64).map(|s| order(s)[0]).collect();
    assert!(firsts.len() > 1, "different seeds should spread the first choice");
    // The order does not depend on how the snapshot listed the instances.
    let reversed: Vec<DelegateInstance> = instances.iter().rev().cloned().collect();
    let other = registry(vec![g], reversed);
    assert_eq!(task.decide_with(&other, Context::new(now(), 1)).ranked, order(1));
}

#[test]
fn a_tie_says_the_random_tie_break_decided_and_the_last_has_no_ahead_by() {
    let g = group(1, "acme", "k8s", &[]);
    let (a, b) = (instance(1, &g), instance(2, &g));
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![a, b]));
    let ahead: Vec<Option<Preference>> = d
        .verdicts
        .iter()
        .map(|v| match &v.verdict {
            Verdict::Eligible { ahead_by, .. } => *ahead_by,
            Verdict::Rejected { .. } => panic!("nothing is rejected"),
        })
        .collect();
    assert_eq!(ahead, vec![Some(Preference::TieBreak), None]);
}
