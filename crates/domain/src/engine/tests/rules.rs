//! One test per assignment rule, and the order between them.

use chrono::Duration;

use super::*;
use crate::engine::Rejection;

#[test]
fn a_disabled_group_is_rejected_by_the_enabled_rule_before_its_scope_is_checked() {
    let mut g = group(1, "acme/other", "k8s", &[]);
    g.disabled = true;
    let i = instance(1, &g);
    let d = Task::new("acme/eng", &[]).decide(&registry(vec![g], vec![i.clone()]));
    assert_eq!(rejected_by(&d, i.id), Some(Rule::Enabled));
    assert_eq!(d.chosen, None);
}

#[test]
fn scope_follows_the_three_by_three_table() {
    let levels = ["acme", "acme/eng", "acme/eng/web"];
    // serves[d][t]: whether a delegate at level d serves a task at level t.
    let serves = [[true, true, true], [false, true, true], [false, false, true]];
    for (d, delegate_scope) in levels.iter().enumerate() {
        let g = group(1, delegate_scope, "k8s", &[]);
        let i = instance(1, &g);
        let reg = registry(vec![g], vec![i.clone()]);
        for (t, task_scope) in levels.iter().enumerate() {
            let decision = Task::new(task_scope, &[]).decide(&reg);
            let expected = if serves[d][t] { None } else { Some(Rule::Scope) };
            assert_eq!(
                rejected_by(&decision, i.id),
                expected,
                "{delegate_scope} for {task_scope}"
            );
            assert_eq!(
                decision.chosen.is_some(),
                serves[d][t],
                "{delegate_scope} for {task_scope}"
            );
        }
    }
}

#[test]
fn sibling_orgs_and_projects_are_out_of_scope_with_the_delegate_scope_in_the_detail() {
    let g = group(1, "acme/ops", "k8s", &[]);
    let i = instance(1, &g);
    let d = Task::new("acme/eng/web", &[]).decide(&registry(vec![g], vec![i.clone()]));
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::Scope,
            detail: Rejection::OutOfScope {
                delegate_scope: scope("acme/ops")
            },
        })
    );
}

#[test]
fn an_instance_lacking_a_selector_is_rejected_with_the_missing_selectors_when_explaining() {
    let g = group(1, "acme", "k8s", &["linux"]);
    let i = instance(1, &g);
    let task = Task::new("acme", &["linux", "gpu", "arm"]);
    let reg = registry(vec![g], vec![i.clone()]);
    let d = task.explain(&reg);
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::Selectors,
            detail: Rejection::LacksSelectors {
                missing: sels(&["arm", "gpu"])
            },
        })
    );
    // Without explain_all the index skips it silently, yet the summary is the same.
    let quick = task.decide(&reg);
    assert!(quick.verdicts.is_empty());
    assert_eq!(quick.summary, d.summary);
}

#[test]
fn implicit_selectors_name_the_group_the_hostname_and_the_instance_id() {
    let g = group(1, "acme", "K8s-Prod", &["linux"]);
    let (a, b) = (instance(1, &g), instance(2, &g));
    let reg = registry(vec![g], vec![a.clone(), b.clone()]);
    assert_eq!(Task::new("acme", &["k8s-prod"]).decide(&reg).ranked.len(), 2);
    assert_eq!(Task::new("acme", &["HOST-2"]).decide(&reg).ranked, vec![b.id]);
    assert_eq!(Task::new("acme", &[&a.id.to_string()]).decide(&reg).ranked, vec![a.id]);
}

#[test]
fn instance_tags_add_to_the_group_tags() {
    let g = group(1, "acme", "k8s", &["linux"]);
    let mut gpu = instance(1, &g);
    gpu.tags = sels(&["gpu"]);
    let plain = instance(2, &g);
    let d = Task::new("acme", &["linux", "gpu"]).explain(&registry(vec![g], vec![gpu.clone(), plain.clone()]));
    assert_eq!(d.ranked, vec![gpu.id]);
    assert_eq!(rejected_by(&d, plain.id), Some(Rule::Selectors));
}

#[test]
fn an_instance_without_the_task_type_is_rejected_with_the_type() {
    let g = group(1, "acme", "k8s", &[]);
    let mut i = instance(1, &g);
    i.task_types = vec![task_type("echo")];
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![i.clone()]));
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::TaskType,
            detail: Rejection::UnsupportedTaskType {
                task_type: task_type("shell")
            },
        })
    );
}

#[test]
fn a_disconnected_instance_is_rejected_by_liveness() {
    let g = group(1, "acme", "k8s", &[]);
    let mut i = instance(1, &g);
    i.connected = false;
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![i.clone()]));
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::Liveness,
            detail: Rejection::Disconnected { heartbeat_age_secs: 0 },
        })
    );
}

#[test]
fn a_stale_heartbeat_is_rejected_with_its_age_and_a_fresh_one_within_the_timeout_is_not() {
    let g = group(1, "acme", "k8s", &[]);
    let mut stale = instance(1, &g);
    stale.last_heartbeat_at = now() - Duration::seconds(301);
    let mut fresh = instance(2, &g);
    fresh.last_heartbeat_at = now() - Duration::seconds(299);
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![stale.clone(), fresh.clone()]));
    assert_eq!(
        d.verdict(stale.id),
        Some(&Verdict::Rejected {
            rule: Rule::Liveness,
            detail: Rejection::StaleHeartbeat {
                heartbeat_age_secs: 301
            },
        })
    );
    assert_eq!(d.chosen, Some(fresh.id));
}

#[test]
fn the_heartbeat_timeout_comes_from_the_context() {
    let g = group(1, "acme", "k8s", &[]);
    let mut i = instance(1, &g);
    i.last_heartbeat_at = now() - Duration::seconds(90);
    let reg = registry(vec![g], vec![i.clone()]);
    let ctx = Context {
        heartbeat_timeout: Duration::seconds(60),
        ..Context::new(now(), 1)
    };
    assert_eq!(
        rejected_by(&Task::new("acme", &[]).decide_with(&reg, ctx), i.id),
        Some(Rule::Liveness)
    );
}

#[test]
fn a_heartbeat_exactly_as_old_as_the_timeout_is_fresh_and_a_nanosecond_older_is_stale() {
    // Both fall in the cut-off's second, where the whole-second comparison cannot decide.
    let g = group(1, "acme", "k8s", &[]);
    let mut edge = instance(1, &g);
    edge.last_heartbeat_at = now() - Duration::minutes(5);
    let mut over = instance(2, &g);
    over.last_heartbeat_at = now() - Duration::minutes(5) - Duration::nanoseconds(1);
    let reg = registry(vec![g], vec![edge.clone(), over.clone()]);
    let task = Task::new("acme", &[]);
    let d = task.decide(&reg);
    assert_eq!(rejected_by(&d, over.id), Some(Rule::Liveness));
    assert_eq!(d.chosen, Some(edge.id));
    let placing = task.place(&reg);
    assert_eq!((placing.chosen, &placing.summary), (d.chosen, &d.summary));
}

#[test]
fn an_unbounded_heartbeat_timeout_keeps_every_connected_instance_fresh() {
    // What the server passes when its setting does not fit a chrono duration.
    let g = group(1, "acme", "k8s", &[]);
    let mut old = instance(1, &g);
    old.last_heartbeat_at = now() - Duration::days(3650);
    let reg = registry(vec![g], vec![old.clone()]);
    let ctx = Context {
        heartbeat_timeout: Duration::MAX,
        ..Context::new(now(), 1)
    };
    let task = Task::new("acme", &[]);
    assert_eq!(task.decide_with(&reg, ctx).chosen, Some(old.id));
    let placing = Context { verdicts: false, ..ctx };
    assert_eq!(task.decide_with(&reg, placing).chosen, Some(old.id));
}

#[test]
fn task_types_are_told_apart_beyond_the_sixty_four_the_type_bits_hold_exactly() {
    // 70 types: `t0` and `t64` share a bit, so the instance's own list must decide.
    let g = group(1, "acme", "k8s", &[]);
    let mut all = instance(1, &g);
    all.task_types = (0..70)
        .filter(|n| *n != 64)
        .map(|n| task_type(&format!("t{n}")))
        .collect();
    let mut other = instance(2, &g);
    other.task_types = vec![task_type("t64")];
    let reg = registry(vec![g], vec![all.clone(), other.clone()]);
    for (wanted, eligible) in [("t0", all.id), ("t64", other.id), ("t69", all.id)] {
        let mut task = Task::new("acme", &[]);
        task.task_type = task_type(wanted);
        let d = task.decide(&reg);
        assert_eq!(d.chosen, Some(eligible), "{wanted}");
        assert_eq!(
            d.summary.count(crate::engine::Reason::UnsupportedTaskType),
            1,
            "{wanted}"
        );
        let placing = task.place(&reg);
        assert_eq!((placing.chosen, &placing.summary), (d.chosen, &d.summary), "{wanted}");
    }
}

#[test]
fn an_instance_at_capacity_is_rejected_with_its_load() {
    let g = group(1, "acme", "k8s", &[]);
    let mut i = instance(1, &g);
    i.capacity = capacity(3);
    i.active_tasks = 3;
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![i.clone()]));
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::Capacity,
            detail: Rejection::AtCapacity { active: 3, capacity: 3 },
        })
    );
}

#[test]
fn an_instance_already_tried_for_the_task_is_not_offered_it_again() {
    let g = group(1, "acme", "k8s", &[]);
    let (a, b) = (instance(1, &g), instance(2, &g));
    let mut task = Task::new("acme", &[]);
    task.tried.insert(a.id);
    let d = task.decide(&registry(vec![g], vec![a.clone(), b.clone()]));
    assert_eq!(rejected_by(&d, a.id), Some(Rule::AlreadyTried));
    assert_eq!(d.chosen, Some(b.id));
}

#[test]
fn a_valid_negative_capability_result_rejects_and_names_the_capability() {
    let g = group(1, "acme", "k8s", &[]);
    let i = instance(1, &g);
    let db = tcp("db");
    let mut task = Task::new("acme", &[]);
    task.capabilities = vec![db.clone()];
    let results = vec![result(i.id, &db, false, Duration::minutes(1))];
    let d = task.decide(&registry_with(vec![g], vec![i.clone()], results, vec![]));
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::Capabilities,
            detail: Rejection::CapabilityUnreachable {
                capability: db.basis(),
                detail: "connection refused".into(),
                checked_at: now() - Duration::minutes(1),
                valid_until: now() + Duration::minutes(4),
            },
        })
    );
}

#[test]
fn an_expired_negative_result_counts_as_no_result_and_asks_for_validation() {
    let g = group(1, "acme", "k8s", &[]);
    let i = instance(1, &g);
    let (db, web) = (tcp("db"), tcp("web"));
    let mut task = Task::new("acme", &[]);
    task.capabilities = vec![db.clone(), web.clone()];
    let results = vec![
        result(i.id, &db, false, Duration::minutes(6)),
        result(i.id, &web, true, Duration::hours(5)),
    ];
    let d = task.decide(&registry_with(vec![g], vec![i.clone()], results, vec![]));
    assert_eq!(d.chosen, Some(i.id));
    assert_eq!(d.to_validate, vec![db], "only the capability without a valid result");
}

#[test]
fn an_expired_positive_result_must_be_validated_again() {
    let g = group(1, "acme", "k8s", &[]);
    let i = instance(1, &g);
    let db = tcp("db");
    let mut task = Task::new("acme", &[]);
    task.capabilities = vec![db.clone()];
    let results = vec![result(i.id, &db, true, Duration::hours(7))];
    let d = task.decide(&registry_with(vec![g], vec![i.clone()], results, vec![]));
    assert_eq!(d.to_validate, vec![db]);
}

#[test]
fn the_newest_result_for_a_capability_wins() {
    let g = group(1, "acme", "k8s", &[]);
    let i = instance(1, &g);
    let db = tcp("db");
    let mut task = Task::new("acme", &[]);
    task.capabilities = vec![db.clone()];
    let results = vec![
        result(i.id, &db, true, Duration::minutes(1)),
        result(i.id, &db, false, Duration::minutes(2)),
    ];
    let d = task.decide(&registry_with(vec![g], vec![i.clone()], results, vec![]));
    assert_eq!(d.chosen, Some(i.id));
    assert!(d.to_validate.is_empty());
}

#[test]
fn rules_apply_in_order_so_the_first_failure_is_the_reason() {
    let g = group(1, "acme", "k8s", &[]);
    let mut i = instance(1, &g);
    // Fails task type, liveness, capacity and already-tried at once: task type is first.
    i.task_types = vec![];
    i.connected = false;
    i.capacity = capacity(1);
    i.active_tasks = 1;
    let mut task = Task::new("acme", &[]);
    task.tried.insert(i.id);
    let reg = registry(vec![g], vec![i.clone()]);
    assert_eq!(rejected_by(&task.decide(&reg), i.id), Some(Rule::TaskType));
}

#[test]
fn instances_of_other_accounts_never_appear_even_when_explaining() {
    let mine = group(1, "acme", "k8s", &[]);
    let theirs = group(2, "globex", "k8s", &[]);
    let (a, b) = (instance(1, &mine), instance(2, &theirs));
    let d = Task::new("acme", &[]).explain(&registry(vec![mine, theirs], vec![a.clone(), b.clone()]));
    assert_eq!(d.verdicts.len(), 1);
    assert!(d.verdict(b.id).is_none());
    assert_eq!(d.summary.considered, 1);
}

#[test]
fn instances_whose_group_is_missing_are_left_out_of_the_snapshot() {
    let g = group(1, "acme", "k8s", &[]);
    let orphan = instance(2, &group(9, "acme", "gone", &[]));
    let reg = registry(vec![g.clone()], vec![instance(1, &g), orphan.clone()]);
    assert_eq!((reg.len(), reg.orphans()), (1, 1));
    assert!(reg.instance(orphan.id).is_none());
}

#[test]
fn a_paused_draining_or_spent_instance_is_rejected_by_the_accepting_rule_and_the_task_waits() {
    let g = group(1, "acme", "k8s", &[]);
    let pause = |until: Option<chrono::DateTime<chrono::Utc>>| crate::Pause {
        note: "kernel upgrade".into(),
        since: now() - Duration::minutes(5),
        until,
    };
    let mut paused = instance(1, &g);
    paused.paused = Some(pause(Some(now() + Duration::minutes(5))));
    let mut draining = instance(2, &g);
    draining.draining = true;
    let mut spent = instance(3, &g);
    spent.max_tasks = Some(1);
    spent.tasks_taken = 1;
    // A pause that ended holds nothing, and nothing has to lift it.
    let mut was_paused = instance(4, &g);
    was_paused.paused = Some(pause(Some(now() - Duration::seconds(1))));
    was_paused.active_tasks = 9;
    let reg = registry(
        vec![g.clone()],
        vec![paused.clone(), draining.clone(), spent.clone(), was_paused.clone()],
    );
    let d = Task::new("acme", &[]).decide(&reg);
    assert_eq!(d.chosen, Some(was_paused.id));
    for (i, detail) in [
        (
            &paused,
            Rejection::Paused {
                note: "kernel upgrade".into(),
                until: Some(now() + Duration::minutes(5)),
                whole_delegate: false,
            },
        ),
        (&draining, Rejection::Draining),
        (&spent, Rejection::Spent { max_tasks: 1 }),
    ] {
        assert_eq!(
            d.verdict(i.id),
            Some(&Verdict::Rejected {
                rule: Rule::Accepting,
                detail
            }),
            "{}",
            i.hostname
        );
    }

    // Without the one that takes tasks, the task waits: each of these can change.
    let reg = registry(vec![g.clone()], vec![paused, draining, spent]);
    let d = Task::new("acme", &[]).decide(&reg);
    assert_eq!(d.chosen, None);
    assert_eq!(d.summary.outlook, crate::engine::Outlook::Temporary);
    assert_eq!(
        d.summary.to_string(),
        "0/3 delegates eligible: 1 paused, 1 draining, 1 single-use, spent; \
         waiting for a pause to end or another instance"
    );
}

#[test]
fn a_paused_delegate_holds_every_instance_and_says_it_is_the_delegates_pause() {
    let mut g = group(1, "acme", "k8s", &[]);
    g.paused = Some(crate::Pause {
        note: "window".into(),
        since: now(),
        until: None,
    });
    let i = instance(1, &g);
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![i.clone()]));
    assert_eq!(
        d.verdict(i.id),
        Some(&Verdict::Rejected {
            rule: Rule::Accepting,
            detail: Rejection::Paused {
                note: "window".into(),
                until: None,
                whole_delegate: true,
            },
        })
    );
    let line = Rejection::Paused {
        note: "window".into(),
        until: None,
        whole_delegate: true,
    }
    .to_string();
    assert_eq!(line, "its delegate is paused: window");
}

#[test]
fn the_accepting_rule_comes_after_liveness_and_before_capacity() {
    let g = group(1, "acme", "k8s", &[]);
    let mut gone = instance(1, &g);
    gone.draining = true;
    gone.connected = false;
    let mut full = instance(2, &g);
    full.draining = true;
    full.active_tasks = full.capacity.get();
    let d = Task::new("acme", &[]).decide(&registry(vec![g], vec![gone.clone(), full.clone()]));
    assert_eq!(rejected_by(&d, gone.id), Some(Rule::Liveness));
    assert_eq!(rejected_by(&d, full.id), Some(Rule::Accepting));
}
