//! The summary line, the outlook (temporary or never), and the JSON shape of a decision.

use chrono::Duration;

use super::*;
use crate::engine::{Outlook, Reason, effective_selectors};

/// Twelve instances in `acme`: 5 without `gpu`, 4 stale with it, 3 in another org.
fn twelve() -> (Vec<DelegateGroup>, Vec<DelegateInstance>) {
    let plain = group(1, "acme", "plain", &[]);
    let gpu = group(2, "acme", "gpu", &["gpu"]);
    let elsewhere = group(3, "acme/ops", "ops", &["gpu"]);
    let mut instances: Vec<DelegateInstance> = (1..=5).map(|n| instance(n, &plain)).collect();
    for n in 6..=9 {
        let mut i = instance(n, &gpu);
        i.last_heartbeat_at = now() - Duration::minutes(10);
        instances.push(i);
    }
    instances.extend((10..=12).map(|n| instance(n, &elsewhere)));
    (vec![plain, gpu, elsewhere], instances)
}

#[test]
fn the_summary_line_counts_reasons_largest_first_and_lists_missing_selectors() {
    let (groups, instances) = twelve();
    let d = Task::new("acme/eng", &["gpu"]).decide(&registry(groups, instances));
    assert_eq!(
        d.summary.to_string(),
        "0/12 delegates eligible: 5 lack selectors [gpu], 4 stale heartbeat, 3 out of scope; waiting for a heartbeat"
    );
    assert_eq!(d.summary.outlook, Outlook::Temporary, "the stale ones could come back");
    assert_eq!(d.verdicts.len(), 7, "the five without gpu were never looked at");
}

#[test]
fn explaining_lists_every_instance_of_the_account_with_the_same_summary() {
    let (groups, instances) = twelve();
    let reg = registry(groups, instances);
    let task = Task::new("acme/eng", &["gpu"]);
    let (quick, full) = (task.decide(&reg), task.explain(&reg));
    assert_eq!(full.verdicts.len(), 12);
    assert_eq!(full.summary, quick.summary);
    assert_eq!(full.summary.count(Reason::LacksSelectors), 5);
}

#[test]
fn with_some_eligible_the_line_only_counts_them() {
    let (groups, mut instances) = twelve();
    for i in instances.iter_mut().skip(5).take(3) {
        i.last_heartbeat_at = now();
    }
    let d = Task::new("acme/eng", &["gpu"]).decide(&registry(groups, instances));
    assert_eq!(d.summary.to_string(), "3/12 delegates eligible");
    assert_eq!(d.summary.outlook, Outlook::Eligible);
    assert_eq!(d.summary.eligible, 3);
}

#[test]
fn a_task_that_scope_selectors_and_type_rule_out_everywhere_can_never_match() {
    let (groups, instances) = twelve();
    let mut task = Task::new("acme/eng", &["gpu"]);
    task.task_type = task_type("echo");
    let d = task.decide(&registry(groups, instances));
    assert_eq!(
        d.summary.to_string(),
        "0/12 delegates eligible: 5 lack selectors [gpu], 4 do not support type echo, 3 out of scope; can never match"
    );
    assert!(d.summary.can_never_match());
}

#[test]
fn a_task_in_an_account_without_delegates_can_never_match() {
    let (groups, instances) = twelve();
    let d = Task::new("globex", &[]).decide(&registry(groups, instances));
    assert_eq!(
        d.summary.to_string(),
        "0/0 delegates eligible: no delegates in this account; can never match"
    );
    assert_eq!(d.summary.outlook, Outlook::Never);
}

#[test]
fn a_disabled_group_makes_the_wait_temporary_only_if_it_could_take_the_task() {
    let mut g = group(1, "acme", "k8s", &[]);
    g.disabled = true;
    let i = instance(1, &g);
    let reg = registry(vec![g], vec![i]);
    let d = Task::new("acme", &[]).decide(&reg);
    assert_eq!(
        (d.summary.to_string().as_str(), d.summary.outlook),
        (
            "0/1 delegates eligible: 1 disabled; waiting for a delegate to be enabled",
            Outlook::Temporary
        )
    );
    let mut echo = Task::new("acme", &[]);
    echo.task_type = task_type("echo");
    assert_eq!(
        echo.decide(&reg).summary.outlook,
        Outlook::Never,
        "re-enabling it would not help"
    );
}

#[test]
fn busy_tried_and_unreachable_instances_make_the_wait_temporary() {
    let g = group(1, "acme", "k8s", &[]);
    let mut busy = instance(1, &g);
    busy.capacity = capacity(1);
    busy.active_tasks = 1;
    let tried = instance(2, &g);
    let blocked = instance(3, &g);
    let db = tcp("db");
    let mut task = Task::new("acme", &[]);
    task.tried.insert(tried.id);
    task.capabilities = vec![db.clone()];
    let results = vec![result(blocked.id, &db, false, Duration::seconds(30))];
    let d = task.decide(&registry_with(vec![g], vec![busy, tried, blocked], results, vec![]));
    assert_eq!(
        d.summary.to_string(),
        "0/3 delegates eligible: 1 at capacity, 1 already tried, 1 cannot reach [tcp:db:5432]; waiting for capacity or an instance not yet tried or a capability check to pass"
    );
    assert_eq!(d.summary.outlook, Outlook::Temporary);
}

#[test]
fn a_decision_serializes_with_stable_snake_case_names() {
    let g = group(1, "acme", "k8s", &[]);
    let ok = instance(1, &g);
    let mut stale = instance(2, &g);
    stale.last_heartbeat_at = now() - Duration::minutes(6);
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![ok.clone(), stale.clone()]));
    let json = serde_json::to_value(&d).expect("serializes");
    assert_eq!(json["chosen"], serde_json::json!(ok.id.to_string()));
    assert_eq!(
        json["verdicts"][0],
        serde_json::json!({
            "instance_id": ok.id.to_string(), "group_id": ok.group_id.to_string(),
            "delegate": "k8s", "scope": {"account": "acme"}, "hostname": "host-1", "verdict": "eligible", "rank": 1,
            "preferred": [], "load": {"active": 0, "capacity": 10}, "unchecked": [],
        })
    );
    assert_eq!(
        json["verdicts"][1],
        serde_json::json!({
            "instance_id": stale.id.to_string(), "group_id": stale.group_id.to_string(),
            "delegate": "k8s", "scope": {"account": "acme"}, "hostname": "host-2", "verdict": "rejected", "rule": "liveness",
            "detail": {"reason": "stale_heartbeat", "heartbeat_age_secs": 360},
        })
    );
    assert_eq!(
        json["summary"],
        serde_json::json!({
            "considered": 2, "eligible": 1, "outlook": "eligible",
            "rejected": [{"reason": "stale_heartbeat", "rule": "liveness", "count": 1}],
        })
    );
}

#[test]
fn effective_selectors_are_the_tasks_own_else_its_connectors() {
    let (own, conn, none) = (sels(&["gpu"]), sels(&["k8s"]), Selectors::new());
    assert_eq!(effective_selectors(&own, Some(&conn)), &own);
    assert_eq!(effective_selectors(&none, Some(&conn)), &conn);
    assert_eq!(effective_selectors(&none, None), &none);
}

/// `k8s-prod`, declared in `acme/payments` with tag `gpu` for `shell` tasks, at zero
/// instances.
fn declared_pool(n: u128, types: &[&str]) -> DelegateGroup {
    DelegateGroup {
        declared: Some(crate::delegate::Declaration {
            task_types: types.iter().map(|t| task_type(t)).collect(),
            max_instances: Some(10),
        }),
        ..group(n, "acme/payments", "k8s-prod", &["gpu"])
    }
}

#[test]
fn a_declared_pool_at_zero_instances_makes_a_task_it_fits_wait_for_an_instance() {
    let reg = registry(vec![declared_pool(1, &["shell"])], Vec::new());
    let d = Task::new("acme/payments/api", &["gpu"]).decide(&reg);
    assert_eq!(d.summary.outlook, Outlook::Temporary, "the pool may grow to take it");
    assert_eq!(d.chosen, None);
    assert_eq!(d.summary.pools.len(), 1);
    assert_eq!(d.summary.pools[0].instances, 0);
    assert_eq!(
        d.summary.to_string(),
        "0/0 delegates eligible: no delegates in this account; waiting for an instance of k8s-prod (0 running)"
    );

    // No declared task types: it runs any.
    let any = registry(vec![declared_pool(1, &[])], Vec::new());
    assert_eq!(
        Task::new("acme/payments", &["gpu"]).decide(&any).summary.outlook,
        Outlook::Temporary
    );
}

#[test]
fn a_declared_pool_counts_only_for_tasks_its_scope_tags_and_types_fit_disabled_or_not() {
    let reg = registry(vec![declared_pool(1, &["shell"])], Vec::new());
    for (task, why) in [
        (Task::new("acme/ops", &["gpu"]), "another org: out of its scope"),
        (Task::new("acme/payments", &["arm64"]), "a selector its tags lack"),
    ] {
        let d = task.decide(&reg);
        assert_eq!(d.summary.outlook, Outlook::Never, "{why}");
        assert!(d.summary.pools.is_empty(), "{why}");
    }
    let mut deploy = Task::new("acme/payments", &["gpu"]);
    deploy.task_type = task_type("deploy");
    assert_eq!(
        deploy.decide(&reg).summary.outlook,
        Outlook::Never,
        "a type it does not declare"
    );

    let mut disabled = declared_pool(1, &["shell"]);
    disabled.disabled = true;
    let d = Task::new("acme/payments", &["gpu"]).decide(&registry(vec![disabled], Vec::new()));
    assert_eq!(
        d.summary.outlook,
        Outlook::Temporary,
        "a disabled pool keeps it waiting, as a disabled instance that could take it does"
    );
    assert!(
        d.summary
            .to_string()
            .ends_with("waiting for an instance of k8s-prod (0 running, disabled)"),
        "{}",
        d.summary
    );
}

#[test]
fn a_declared_pool_with_an_eligible_instance_is_simply_a_group() {
    let pool = declared_pool(1, &["shell"]);
    let mut member = instance(1, &pool);
    member.tags = sels(&["gpu"]);
    let d = Task::new("acme/payments", &["gpu"]).decide(&registry(vec![pool], vec![member]));
    assert_eq!(d.summary.outlook, Outlook::Eligible);
    assert!(
        d.summary.pools.is_empty(),
        "only a task nobody can take now waits on a pool"
    );
    assert_eq!(d.summary.to_string(), "1/1 delegates eligible");
}
