//! Property tests: over random registries and tasks, the engine agrees with a naive oracle
//! that applies the rules of docs/rules.md to every instance directly, without any index.
//!
//! Pools are small (two accounts, two orgs, three tags, two task types) so that random
//! registries often hold matches, near misses and conflicts at once.

use std::collections::BTreeSet;

use chrono::Duration;
use proptest::prelude::*;
use uuid::Uuid;

use super::testkit::*;
use super::{Context, Decision, Outlook, Registry, TaskInputs, Verdict, decide};
use crate::capability::{Capability, CapabilityResult};
use crate::connector::LastSuccess;
use crate::delegate::{DelegateGroup, DelegateInstance, Liveness};
use crate::ident::Scope;
use crate::ids::{ConnectorId, InstanceId};
use crate::selection::Rule;
use crate::selector::Selectors;
use crate::task::TaskType;

const TAGS: [&str; 3] = ["gpu", "linux", "arm"];
/// Task selectors draw from the tags and from implicit selectors (group names, a hostname).
const TASK_SELECTORS: [&str; 6] = ["gpu", "linux", "arm", "g0", "g1", "host-2"];
const TYPES: [&str; 2] = ["shell", "echo"];
const CAPS: [&str; 2] = ["db", "web"];

#[derive(Debug, Clone)]
struct World {
    groups: Vec<DelegateGroup>,
    instances: Vec<DelegateInstance>,
    results: Vec<CapabilityResult>,
    last: Option<LastSuccess>,
    scope: Scope,
    task_type: TaskType,
    selectors: Selectors,
    connector: Option<ConnectorId>,
    capabilities: Vec<Capability>,
    tried: BTreeSet<InstanceId>,
    /// Instances that ran the task before (a retry preferring another instance).
    ran: BTreeSet<InstanceId>,
    seed: u64,
}

fn pick<const N: usize>(pool: [&str; N], mask: u8) -> impl Iterator<Item = &str> {
    pool.into_iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, s)| s)
}

/// A scope in account `a` (mostly) or `b`, with an org in it one time in `1 / deep`.
fn arb_scope(deep: usize) -> impl Strategy<Value = Scope> {
    (prop::bool::weighted(0.85), 0..deep * 2, 0..3usize).prop_map(move |(a, o, p)| {
        let mut path = if a { "a" } else { "b" }.to_owned();
        if o < 2 {
            path.push_str(&format!("/o{o}"));
            if p > 0 {
                path.push_str(&format!("/p{p}"));
            }
        }
        scope(&path)
    })
}

fn arb_group() -> impl Strategy<Value = (Scope, u8, bool)> {
    (arb_scope(3), 0..8u8, prop::bool::weighted(0.15))
}

/// group index, tags, types, capacity, active, connected, heartbeat age (s), results, tried,
/// hold (0 to 5: none; 6: paused ahead; 7: paused in the past; 8: draining; 9: spent).
type InstanceSpec = (usize, u8, u8, u32, u32, bool, i64, [u8; 2], bool, u8);

fn arb_instance() -> impl Strategy<Value = InstanceSpec> {
    (
        0..6usize,
        0..8u8,
        1..4u8,
        1..4u32,
        0..4u32,
        prop::bool::weighted(0.85),
        0..420i64,
        [0..5u8, 0..5u8],
        prop::bool::weighted(0.15),
        0..10u8,
    )
}

prop_compose! {
    fn arb_world()(
        groups in prop::collection::vec(arb_group(), 1..6),
        specs in prop::collection::vec(arb_instance(), 1..14),
        scope in arb_scope(2),
        type_ix in prop_oneof![3 => Just(0usize), 1 => Just(1usize)],
        selector_mask in prop_oneof![
            3 => Just(0u8),
            3 => (0..3u8).prop_map(|b| 1 << b),
            1 => (0..6u8).prop_map(|b| 1 << b),
            1 => (0..6u8, 0..6u8).prop_map(|(a, b)| (1 << a) | (1 << b)),
        ],
        connector in prop::bool::weighted(0.7),
        cap_mask in 0..4u8,
        last in prop::option::of(0..14usize),
        seed in any::<u64>(),
    ) -> World {
        let groups: Vec<DelegateGroup> = groups
            .into_iter()
            .enumerate()
            .map(|(n, (s, tags, disabled))| DelegateGroup {
                disabled,
                ..group(n as u128, &s.path(), &format!("g{n}"), &pick(TAGS, tags).collect::<Vec<_>>())
            })
            .collect();
        let capabilities: Vec<Capability> = pick(CAPS, cap_mask).map(tcp).collect();
        let all_caps: Vec<Capability> = CAPS.into_iter().map(tcp).collect();
        let (mut instances, mut results, mut tried) = (Vec::new(), Vec::new(), BTreeSet::new());
        for (n, (g, tags, types, cap, active, connected, age, res, was_tried, hold)) in specs.into_iter().enumerate() {
            let mut i = instance(n as u128, &groups[g % groups.len()]);
            i.tags = sels(&pick(TAGS, tags).collect::<Vec<_>>());
            i.task_types = pick(TYPES, types).map(task_type).collect();
            i.capacity = capacity(cap);
            i.active_tasks = active.min(cap);
            i.connected = connected;
            i.last_heartbeat_at = now() - Duration::seconds(age);
            let pause = |until| crate::Pause { note: "p".into(), since: now() - Duration::hours(1), until: Some(until) };
            match hold {
                6 => i.paused = Some(pause(now() + Duration::minutes(5))),
                7 => i.paused = Some(pause(now() - Duration::minutes(5))),
                8 => i.draining = true,
                9 => (i.max_tasks, i.tasks_taken) = (Some(1), 1),
                _ => {}
            }
            for (c, r) in all_caps.iter().zip(res) {
                let (reachable, age) = match r {
                    1 => (true, Duration::hours(1)),
                    2 => (true, Duration::hours(7)),
                    3 => (false, Duration::minutes(1)),
                    4 => (false, Duration::minutes(10)),
                    _ => continue,
                };
                results.push(result(i.id, c, reachable, age));
            }
            if was_tried {
                tried.insert(i.id);
            }
            instances.push(i);
        }
        let connector_id = ConnectorId(Uuid::from_u128(42));
        let last = last.and_then(|l| instances.get(l % instances.len().max(1))).map(|i| LastSuccess {
            connector_id,
            instance_id: i.id,
            group_id: i.group_id,
            at: now(),
        });
        // In one world in two, the task is a retry that ran on every third instance.
        let ran = if seed % 2 == 0 {
            instances.iter().step_by(3).map(|i| i.id).collect()
        } else {
            BTreeSet::new()
        };
        World {
            groups, instances, results, last, scope, ran,
            task_type: task_type(TYPES[type_ix]),
            selectors: sels(&pick(TASK_SELECTORS, selector_mask).collect::<Vec<_>>()),
            connector: connector.then_some(connector_id),
            capabilities, tried, seed,
        }
    }
}

impl World {
    fn registry(&self, reversed: bool) -> Registry {
        let mut instances = self.instances.clone();
        if reversed {
            instances.reverse();
        }
        Registry::new(self.groups.clone(), instances, self.results.clone(), self.last)
    }

    fn decide(&self, reg: &Registry, explain_all: bool) -> Decision {
        self.decide_with(
            reg,
            Context {
                explain_all,
                ..Context::new(now(), self.seed)
            },
        )
    }

    fn decide_with(&self, reg: &Registry, ctx: Context) -> Decision {
        let task = TaskInputs {
            scope: &self.scope,
            task_type: &self.task_type,
            selectors: &self.selectors,
            connector_id: self.connector,
            capabilities: &self.capabilities,
            tried: &self.tried,
            ran: &self.ran,
        };
        decide(&task, reg, &ctx)
    }

    fn group_of(&self, i: &DelegateInstance) -> &DelegateGroup {
        self.groups
            .iter()
            .find(|g| g.id == i.group_id)
            .expect("every instance has its group")
    }

    fn in_account(&self) -> impl Iterator<Item = &DelegateInstance> {
        self.instances
            .iter()
            .filter(|i| self.group_of(i).scope.account_id() == self.scope.account_id())
    }

    fn lacks_selector(&self, i: &DelegateInstance) -> bool {
        !self.selectors.is_subset(&i.selector_set(self.group_of(i)))
    }

    /// The oracle: the first rule `i` fails, straight from docs/rules.md, except that an
    /// instance lacking a selector is reported for that (the index never looks further).
    fn first_failure(&self, i: &DelegateInstance) -> Option<Rule> {
        let g = self.group_of(i);
        let ctx = Context::new(now(), 0);
        let negative = self.capabilities.iter().any(|c| {
            self.results
                .iter()
                .any(|r| r.instance_id == i.id && r.basis == c.basis() && !r.reachable && r.is_valid_at(now(), ctx.ttl))
        });
        let checks = [
            (Rule::Selectors, self.lacks_selector(i)),
            (Rule::Enabled, g.disabled),
            (Rule::Scope, !g.scope.contains(&self.scope)),
            (Rule::TaskType, !i.task_types.contains(&self.task_type)),
            (
                Rule::Liveness,
                i.liveness(now(), ctx.heartbeat_timeout) != Liveness::Connected,
            ),
            (
                Rule::Accepting,
                i.pause_at(g, now()).is_some() || i.draining || i.is_spent(),
            ),
            (Rule::Capacity, i.active_tasks >= i.capacity.get()),
            (Rule::AlreadyTried, self.tried.contains(&i.id)),
            (Rule::Capabilities, negative),
        ];
        checks.into_iter().find(|(_, failed)| *failed).map(|(rule, _)| rule)
    }

    fn could_ever_take(&self, i: &DelegateInstance) -> bool {
        let g = self.group_of(i);
        g.scope.contains(&self.scope) && !self.lacks_selector(i) && i.task_types.contains(&self.task_type)
    }
}

fn eligible_ids(d: &Decision) -> BTreeSet<InstanceId> {
    d.verdicts
        .iter()
        .filter(|v| matches!(v.verdict, Verdict::Eligible { .. }))
        .map(|v| v.instance_id)
        .collect()
}

proptest! {
    // Cheap cases (a few microseconds each), so many of them: the last-success and
    // several-eligible situations are a minority of random worlds.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn the_engine_never_chooses_an_instance_that_breaks_a_rule(w in arb_world()) {
        let d = w.decide(&w.registry(false), false);
        if let Some(id) = d.chosen {
            let i = w.instances.iter().find(|i| i.id == id).expect("chosen from the registry");
            let g = w.group_of(i);
            prop_assert!(!g.disabled, "disabled");
            prop_assert!(g.scope.contains(&w.scope), "out of scope");
            prop_assert!(!w.lacks_selector(i), "lacks a selector (no fallback)");
            prop_assert!(i.task_types.contains(&w.task_type), "unsupported type");
            prop_assert!(i.connected, "disconnected");
            prop_assert_eq!(i.liveness(now(), Duration::minutes(5)), Liveness::Connected, "stale");
            prop_assert!(i.has_free_slot(), "at capacity");
            prop_assert!(!w.tried.contains(&id), "already tried");
            prop_assert_eq!(w.first_failure(i), None, "a valid negative capability result");
        }
    }

    #[test]
    fn the_eligible_instances_are_exactly_those_the_oracle_finds(w in arb_world()) {
        let d = w.decide(&w.registry(false), true);
        let oracle: BTreeSet<InstanceId> = w.in_account().filter(|i| w.first_failure(i).is_none()).map(|i| i.id).collect();
        prop_assert_eq!(eligible_ids(&d), oracle);
        prop_assert_eq!(d.ranked.iter().copied().collect::<BTreeSet<_>>(), eligible_ids(&d));
        prop_assert_eq!(d.chosen, d.ranked.first().copied());
        for v in &d.verdicts {
            let i = w.instances.iter().find(|i| i.id == v.instance_id).expect("known instance");
            if let Verdict::Rejected { rule, detail } = &v.verdict {
                prop_assert_eq!(Some(*rule), w.first_failure(i));
                prop_assert_eq!(*rule, detail.rule());
            }
        }
    }

    #[test]
    fn the_last_success_instance_is_chosen_whenever_it_is_eligible(w in arb_world()) {
        let d = w.decide(&w.registry(false), false);
        if let (Some(_), Some(last)) = (w.connector, w.last) {
            let i = w.instances.iter().find(|i| i.id == last.instance_id).expect("known instance");
            let mine = w.group_of(i).scope.account_id() == w.scope.account_id();
            if mine && w.first_failure(i).is_none() && !w.ran.contains(&last.instance_id) {
                prop_assert_eq!(d.chosen, Some(last.instance_id));
            }
        }
    }

    #[test]
    fn a_retry_goes_to_an_instance_that_has_not_run_it_whenever_one_is_eligible(w in arb_world()) {
        let d = w.decide(&w.registry(false), true);
        let fresh_eligible = eligible_ids(&d).iter().any(|id| !w.ran.contains(id));
        if let Some(chosen) = d.chosen && !w.ran.is_empty() {
            prop_assert_eq!(!w.ran.contains(&chosen), fresh_eligible);
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_decision_whatever_the_snapshot_order(w in arb_world()) {
        let reg = w.registry(false);
        let d = w.decide(&reg, false);
        prop_assert_eq!(&d, &w.decide(&reg, false));
        let reversed = w.decide(&w.registry(true), false);
        prop_assert_eq!(&d.ranked, &reversed.ranked);
        prop_assert_eq!(&d.summary, &reversed.summary);
    }

    #[test]
    fn the_summary_counts_agree_with_the_verdicts_with_or_without_explaining(w in arb_world()) {
        let reg = w.registry(false);
        let (quick, full) = (w.decide(&reg, false), w.decide(&reg, true));
        let considered = w.in_account().count();
        for d in [&quick, &full] {
            prop_assert_eq!(d.summary.considered, considered);
            prop_assert_eq!(d.summary.eligible, eligible_ids(d).len());
            let rejected: usize = d.summary.rejected.iter().map(|c| c.count).sum();
            prop_assert_eq!(rejected + d.summary.eligible, considered);
        }
        prop_assert_eq!(full.verdicts.len(), considered);
        prop_assert_eq!(&quick.summary, &full.summary);
        prop_assert_eq!(&quick.ranked, &full.ranked);
        // Quick mode looks only at instances offering every selector.
        let offering = w.in_account().filter(|i| !w.lacks_selector(i)).count();
        prop_assert_eq!(quick.verdicts.len(), offering);
    }

    #[test]
    fn placing_without_verdicts_chooses_and_summarizes_exactly_as_with_them(w in arb_world()) {
        let reg = w.registry(false);
        let full = w.decide(&reg, false);
        let quick = w.decide_with(&reg, Context { verdicts: false, ..Context::new(now(), w.seed) });
        prop_assert_eq!(quick.chosen, full.chosen);
        prop_assert_eq!(&quick.to_validate, &full.to_validate);
        prop_assert_eq!(&quick.summary, &full.summary);
        prop_assert_eq!(quick.summary.to_string(), full.summary.to_string());
        prop_assert_eq!(&quick.ranked[..], &full.ranked[..full.ranked.len().min(1)]);
        prop_assert!(quick.verdicts.is_empty());
        // And whatever order the snapshot listed the instances in.
        let reversed = w.decide_with(&w.registry(true), Context { verdicts: false, ..Context::new(now(), w.seed) });
        prop_assert_eq!(&reversed, &quick);
    }

    #[test]
    fn instances_of_other_accounts_never_appear(w in arb_world()) {
        let d = w.decide(&w.registry(false), true);
        for v in &d.verdicts {
            let i = w.instances.iter().find(|i| i.id == v.instance_id).expect("known instance");
            prop_assert_eq!(w.group_of(i).scope.account_id(), w.scope.account_id());
        }
    }

    #[test]
    fn the_outlook_is_never_exactly_when_scope_selectors_and_type_rule_out_everyone(w in arb_world()) {
        let d = w.decide(&w.registry(false), false);
        let expected = if !eligible_ids(&d).is_empty() {
            Outlook::Eligible
        } else if w.in_account().any(|i| w.could_ever_take(i)) {
            Outlook::Temporary
        } else {
            Outlook::Never
        };
        prop_assert_eq!(d.summary.outlook, expected);
    }
}
