//! The queue explained as a whole (`GET /api/v1/queue`): how many tasks wait, and what
//! holds them, grouped by reason.
//!
//! How it is computed, and why it stays cheap with 100,000 tasks waiting:
//!
//! 1. **One aggregate query** ([`Store::queue_shapes`]) groups the queued tasks by what
//!    placement decides on: scope, type, own selectors, connector, capabilities, and
//!    whether attempted before. The database counts; no task row leaves it. A real queue
//!    has few such shapes (a pipeline submits the same kinds of task over and over), and
//!    at most [`MAX_SHAPES`] of the largest are taken.
//! 2. **One engine decision per shape**, against the kept registry snapshot, as a dry
//!    run would decide (the instances a retried task already tried are not known here,
//!    so a retried shape is decided as if it had tried none).
//! 3. Each decision names what holds its tasks: a delegate can take them (`placing`) or
//!    must check a capability first (`validating`); else the rejection of the instances
//!    that came furthest through the rules (a temporary one, such as `at_capacity`, over
//!    the permanent `lacks_selectors`), or a declared pool with no instance
//!    (`scaled_to_zero`). Shapes with the same reason and delegates add up.
//!
//! docs/benchmarks.md ("Queue summary") records what it costs at 10,000 and 100,000
//! waiting tasks.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use switchboard_domain::engine::{
    Context, Decision, Outlook, Reason, Registry, Rejection, TaskInputs, Verdict, decide,
};
use switchboard_domain::{ConnectorId, GroupId, Ident, Scope, Selectors, TaskId};
use switchboard_protocol::fleet::{QueueReason, QueueSummary};
use switchboard_store::{QueueQuery, QueueShape, StoreError, StoreResult};

use super::dispatch::Placer;

/// The most shapes decided for one summary (the largest).
pub const MAX_SHAPES: u32 = 1_000;

/// The most task ids shown per reason.
const SAMPLE: usize = 5;

/// The summary of the queued tasks `query` matches (`max_shapes` is set here). Only the
/// delegates whose scope `sees` accepts are named (explanations respect scope).
pub async fn summarize(
    placer: &Placer,
    mut query: QueueQuery,
    sees: &(dyn Fn(&Scope) -> bool + Sync),
) -> StoreResult<QueueSummary> {
    query.max_shapes = MAX_SHAPES;
    let store = placer.store();
    let queue = store.queue_shapes(&query).await?;
    let mut connectors: HashMap<ConnectorId, Selectors> = HashMap::new();
    let inherited: BTreeSet<ConnectorId> = queue
        .shapes
        .iter()
        .filter(|s| s.selectors.is_empty())
        .filter_map(|s| s.connector_id)
        .collect();
    for c in inherited {
        match store.get_connector(c).await {
            Ok(connector) => {
                connectors.insert(c, connector.selectors);
            }
            // Deleted since: its tasks keep no selectors of their own.
            Err(StoreError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
    }
    // The scope of each pool, which a decision names by id.
    let scopes: HashMap<GroupId, Scope> = store
        .list_groups(
            query
                .within
                .as_ref()
                .map(|s| Scope::account(s.account_id().clone()))
                .as_ref(),
        )
        .await?
        .into_iter()
        .filter(|g| g.declared.is_some())
        .map(|g| (g.id, g.scope))
        .collect();
    let now = Utc::now();
    let context = Context {
        heartbeat_timeout: chrono::Duration::from_std(placer.timers().heartbeat_timeout)
            .unwrap_or(chrono::Duration::MAX),
        verdicts: true,
        explain_all: false,
        ..Context::new(now, placer.dispatcher().seed())
    };
    let held: Vec<Held> = placer
        .fleet()
        .with_current(placer, |registry| {
            queue
                .shapes
                .iter()
                .map(|shape| hold(registry, shape, &connectors, &context, &scopes, sees))
                .collect()
        })
        .await?;
    let decided = u64::try_from(queue.shapes.len()).unwrap_or(u64::MAX);
    let shapes_truncated = queue.shapes.iter().map(|s| s.count).sum::<u64>() < queue.waiting;
    let reasons = gather(&queue.shapes, held, now);
    Ok(QueueSummary {
        waiting: queue.waiting,
        summary: headline(queue.waiting, &reasons, shapes_truncated),
        shapes: u32::try_from(decided).unwrap_or(u32::MAX),
        shapes_truncated,
        reasons,
    })
}

/// What holds the tasks of one shape, as its decision says.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Held {
    reason: &'static str,
    /// The delegates concerned, with a word on each (`10/10 busy`) and their scope (when
    /// known), by name.
    delegates: BTreeMap<Ident, (String, Option<Scope>)>,
    listed: Vec<String>,
    explanation: String,
}

fn hold(
    registry: &Registry,
    shape: &QueueShape,
    connectors: &HashMap<ConnectorId, Selectors>,
    ctx: &Context,
    scopes: &HashMap<GroupId, Scope>,
    sees: &(dyn Fn(&Scope) -> bool + Sync),
) -> Held {
    // What holds them before any delegate is asked: their concurrency key at its limit
    // (the store's claim would refuse every one), or a retry's backoff.
    if let Some(key) = shape.concurrency.as_ref().filter(|k| k.running >= k.limit) {
        return Held {
            reason: "limited",
            delegates: BTreeMap::new(),
            listed: vec![key.key.clone()],
            explanation: super::dispatch::place::limited(&key.key, key.running, key.limit),
        };
    }
    if shape.backing_off > 0 && shape.backing_off >= shape.count {
        return Held {
            reason: "retrying",
            delegates: BTreeMap::new(),
            listed: Vec::new(),
            explanation: "retrying: waiting out the retry policy's backoff".to_owned(),
        };
    }
    let tried = BTreeSet::new();
    let own = shape.selectors.is_empty();
    let selectors = match shape.connector_id.and_then(|c| connectors.get(&c)) {
        Some(inherited) if own => inherited,
        _ => &shape.selectors,
    };
    let inputs = TaskInputs {
        scope: &shape.scope,
        task_type: &shape.task_type,
        selectors,
        connector_id: shape.connector_id,
        capabilities: &shape.capabilities,
        tried: &tried,
        ran: &tried,
    };
    let decision = decide(&inputs, registry, ctx);
    let mut held = classify(&decision, |id| scopes.get(&id).cloned());
    held.delegates.retain(|_, (_, scope)| scope.as_ref().is_some_and(sees));
    held
}

/// The reasons in the order "closest to taking the task" first: the rejection of an
/// instance that passed more rules says more about what the task waits for.
const TEMPORARY: [Reason; 9] = [
    Reason::CapabilityUnreachable,
    Reason::AlreadyTried,
    Reason::AtCapacity,
    Reason::Spent,
    Reason::Draining,
    Reason::Paused,
    Reason::StaleHeartbeat,
    Reason::Disconnected,
    Reason::Disabled,
];
const PERMANENT: [Reason; 3] = [Reason::UnsupportedTaskType, Reason::LacksSelectors, Reason::OutOfScope];

fn classify(d: &Decision, pool_scope: impl Fn(GroupId) -> Option<Scope>) -> Held {
    let explanation = d.summary.to_string();
    let mut held = Held {
        reason: "placing",
        delegates: BTreeMap::new(),
        listed: Vec::new(),
        explanation,
    };
    if let Some(chosen) = d.chosen {
        if let Some(v) = d.verdicts.iter().find(|v| v.instance_id == chosen) {
            held.delegates
                .insert(v.delegate.clone(), (String::new(), Some(v.scope.clone())));
        }
        if !d.to_validate.is_empty() {
            held.reason = "validating";
            held.listed = d.to_validate.iter().map(|c| c.basis().to_string()).collect();
        }
        return held;
    }
    let present = |r: Reason| d.summary.count(r) > 0;
    let temporary = if d.summary.outlook == Outlook::Temporary {
        TEMPORARY.into_iter().find(|r| present(*r))
    } else {
        None
    };
    // A pool at zero is what a task waits for when no instance could take it now for a
    // reason that a change of theirs lifts.
    let waiting_pool = temporary.is_none_or(|r| r == Reason::Disabled) && !d.summary.pools.is_empty();
    if waiting_pool {
        held.reason = "scaled_to_zero";
        for pool in &d.summary.pools {
            let state = if pool.disabled { ", disabled" } else { "" };
            let word = format!("{} running{state}", pool.instances);
            held.delegates
                .insert(pool.name.clone(), (word, pool_scope(pool.group_id)));
        }
        return held;
    }
    let Some(reason) = temporary.or_else(|| PERMANENT.into_iter().find(|r| present(*r))) else {
        held.reason = "no_delegates";
        return held;
    };
    held.reason = reason_name(reason);
    if let Some(count) = d.summary.rejected.iter().find(|c| c.reason == reason) {
        held.listed = count.listed.clone();
    }
    // Per delegate, what its instances of this reason say: the load of those at capacity.
    let mut load: BTreeMap<Ident, (u32, u32, Scope)> = BTreeMap::new();
    for v in &d.verdicts {
        let Verdict::Rejected { detail, .. } = &v.verdict else {
            continue;
        };
        if detail.reason() != reason {
            continue;
        }
        let entry = load.entry(v.delegate.clone()).or_insert((0, 0, v.scope.clone()));
        if let Rejection::AtCapacity { active, capacity } = detail {
            entry.0 += active;
            entry.1 += capacity;
        }
    }
    for (name, (active, capacity, scope)) in load {
        let word = if reason == Reason::AtCapacity {
            format!("{active}/{capacity} busy")
        } else {
            String::new()
        };
        held.delegates.insert(name, (word, Some(scope)));
    }
    held
}

fn reason_name(reason: Reason) -> &'static str {
    match reason {
        Reason::Disabled => "disabled",
        Reason::OutOfScope => "out_of_scope",
        Reason::LacksSelectors => "lacks_selectors",
        Reason::UnsupportedTaskType => "unsupported_task_type",
        Reason::Disconnected => "disconnected",
        Reason::StaleHeartbeat => "stale_heartbeat",
        Reason::Paused => "paused",
        Reason::Draining => "draining",
        Reason::Spent => "spent",
        Reason::AtCapacity => "at_capacity",
        Reason::AlreadyTried => "already_tried",
        Reason::CapabilityUnreachable => "capability_unreachable",
    }
}

/// Adds up the shapes held alike (same reason, delegates and listed items), largest first.
fn gather(shapes: &[QueueShape], held: Vec<Held>, now: DateTime<Utc>) -> Vec<QueueReason> {
    struct Bucket {
        held: Held,
        tasks: u64,
        oldest: DateTime<Utc>,
        largest: u64,
        sample: Vec<TaskId>,
    }
    let mut buckets: Vec<Bucket> = Vec::new();
    for (shape, h) in shapes.iter().zip(held) {
        let bucket = match buckets.iter_mut().position(|b| {
            b.held.reason == h.reason && b.held.listed == h.listed && b.held.delegates.keys().eq(h.delegates.keys())
        }) {
            Some(i) => &mut buckets[i],
            None => {
                buckets.push(Bucket {
                    held: h.clone(),
                    tasks: 0,
                    oldest: shape.oldest_created_at,
                    largest: 0,
                    sample: Vec::new(),
                });
                let last = buckets.len() - 1;
                &mut buckets[last]
            }
        };
        bucket.tasks += shape.count;
        bucket.oldest = bucket.oldest.min(shape.oldest_created_at);
        if shape.count > bucket.largest {
            bucket.largest = shape.count;
            bucket.held.explanation = h.explanation;
        }
        for id in [shape.oldest, shape.newest] {
            if bucket.sample.len() < SAMPLE && !bucket.sample.contains(&id) {
                bucket.sample.push(id);
            }
        }
    }
    buckets.sort_by(|a, b| b.tasks.cmp(&a.tasks).then(a.oldest.cmp(&b.oldest)));
    buckets
        .into_iter()
        .map(|b| QueueReason {
            line: line(&b.held, b.tasks),
            reason: b.held.reason.to_owned(),
            tasks: b.tasks,
            oldest_queued_age_ms: (now - b.oldest).num_milliseconds().max(0),
            delegates: b.held.delegates.keys().cloned().collect(),
            listed: b.held.listed,
            sample_task_ids: b.sample,
            explanation: b.held.explanation,
        })
        .collect()
}

/// `100 wait on capacity of k8s-prod (10/10 busy)`.
fn line(held: &Held, tasks: u64) -> String {
    let names = || {
        held.delegates
            .iter()
            .map(|(name, (word, _))| {
                if word.is_empty() {
                    name.to_string()
                } else {
                    format!("{name} ({word})")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let listed = format!("[{}]", held.listed.join(", "));
    let (wait, lack) = if tasks == 1 {
        ("waits", "lacks")
    } else {
        ("wait", "lack")
    };
    match held.reason {
        "placing" => format!("{tasks} about to be assigned (a delegate can take them now)"),
        "validating" => format!("{tasks} {wait} for {} to check {listed}", names()),
        "no_delegates" => format!("{tasks} {wait}: no delegate in their account"),
        "scaled_to_zero" => format!("{tasks} {wait} for an instance of {}", names()),
        "lacks_selectors" => format!("{tasks} {lack} selectors {listed}: no delegate offers them all"),
        "unsupported_task_type" => format!("{tasks} of a type no delegate runs {listed}"),
        "out_of_scope" => format!("{tasks} in a scope no delegate serves"),
        "at_capacity" => format!("{tasks} {wait} on capacity of {}", names()),
        "paused" => format!("{tasks} {wait} for the pause of {} to end", names()),
        "draining" => format!("{tasks} {wait}: {} drains", names()),
        "spent" => format!("{tasks} {wait}: the single-use instances of {} are spent", names()),
        "disabled" => format!("{tasks} {wait} for {} to be enabled", names()),
        "disconnected" => format!("{tasks} {wait} for {} to connect", names()),
        "stale_heartbeat" => format!("{tasks} {wait} for a heartbeat of {}", names()),
        "already_tried" => format!("{tasks} {wait} for an instance not yet tried"),
        "capability_unreachable" => format!("{tasks} {wait}: {} cannot reach {listed}", names()),
        "limited" => format!("{tasks} {}", held.explanation),
        "retrying" => format!("{tasks} {wait} out a retry's backoff"),
        other => format!("{tasks} {other}"),
    }
}

/// `412 tasks waiting: 300 lack selectors [gpu] ..., 100 wait on capacity of k8s-prod`.
fn headline(waiting: u64, reasons: &[QueueReason], truncated: bool) -> String {
    if waiting == 0 {
        return "no task waiting".to_owned();
    }
    let lines: Vec<&str> = reasons.iter().map(|r| r.line.as_str()).collect();
    let more = if truncated { "; and more, in smaller groups" } else { "" };
    let noun = if waiting == 1 { "task" } else { "tasks" };
    format!("{waiting} {noun} waiting: {}{more}", lines.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_domain::engine::{ReasonCount, Summary};

    fn decision(rejected: &[(Reason, usize)], outlook: Outlook) -> Decision {
        Decision {
            chosen: None,
            to_validate: Vec::new(),
            ranked: Vec::new(),
            verdicts: Vec::new(),
            summary: Summary {
                considered: rejected.iter().map(|(_, n)| n).sum(),
                eligible: 0,
                rejected: rejected
                    .iter()
                    .map(|&(reason, count)| ReasonCount {
                        reason,
                        rule: reason.rule(),
                        count,
                        listed: if reason == Reason::LacksSelectors {
                            vec!["gpu".into()]
                        } else {
                            vec![]
                        },
                    })
                    .collect(),
                outlook,
                pools: Vec::new(),
            },
        }
    }

    #[test]
    fn the_reason_is_the_one_of_the_instances_closest_to_taking_the_task() {
        let d = decision(
            &[
                (Reason::LacksSelectors, 5),
                (Reason::AtCapacity, 2),
                (Reason::Disconnected, 1),
            ],
            Outlook::Temporary,
        );
        assert_eq!(classify(&d, |_| None).reason, "at_capacity");
        let d = decision(&[(Reason::LacksSelectors, 5), (Reason::OutOfScope, 3)], Outlook::Never);
        let held = classify(&d, |_| None);
        assert_eq!((held.reason, held.listed), ("lacks_selectors", vec!["gpu".to_owned()]));
        // Disabled counts whatever the instance's fit; with the outlook "never" it holds
        // nothing.
        let d = decision(&[(Reason::Disabled, 2), (Reason::LacksSelectors, 1)], Outlook::Never);
        assert_eq!(classify(&d, |_| None).reason, "lacks_selectors");
        assert_eq!(
            classify(&decision(&[], Outlook::Never), |_| None).reason,
            "no_delegates"
        );
    }

    #[test]
    fn the_headline_adds_up_the_reasons() {
        let held = |reason: &'static str, names: &[(&str, &str)]| Held {
            reason,
            delegates: names
                .iter()
                .map(|(n, w)| (Ident::parse(n).unwrap(), ((*w).to_owned(), None)))
                .collect(),
            listed: match reason {
                "lacks_selectors" => vec!["gpu".into()],
                "validating" => vec!["tcp:db:5432".into()],
                _ => vec![],
            },
            explanation: String::new(),
        };
        let shape = |n: u64| QueueShape {
            scope: switchboard_domain::Scope::parse_path("acme").unwrap(),
            task_type: switchboard_domain::TaskType(Ident::parse("echo").unwrap()),
            selectors: Selectors::new(),
            connector_id: None,
            capabilities: vec![],
            retried: false,
            count: n,
            oldest: TaskId::new(),
            newest: TaskId::new(),
            oldest_created_at: Utc::now(),
            concurrency: None,
            backing_off: 0,
        };
        let reasons = gather(
            &[shape(200), shape(100), shape(100), shape(12)],
            vec![
                held("lacks_selectors", &[]),
                held("at_capacity", &[("k8s-prod", "10/10 busy")]),
                held("lacks_selectors", &[]),
                held("validating", &[("k8s-prod", "")]),
            ],
            Utc::now(),
        );
        let counts: Vec<(String, u64)> = reasons.iter().map(|r| (r.reason.clone(), r.tasks)).collect();
        assert_eq!(
            counts,
            vec![
                ("lacks_selectors".to_owned(), 300),
                ("at_capacity".to_owned(), 100),
                ("validating".to_owned(), 12)
            ]
        );
        assert_eq!(reasons[0].sample_task_ids.len(), 4, "oldest and newest of both groups");
        assert_eq!(
            headline(412, &reasons, false),
            "412 tasks waiting: 300 lack selectors [gpu]: no delegate offers them all, \
             100 wait on capacity of k8s-prod (10/10 busy), 12 wait for k8s-prod to check [tcp:db:5432]"
        );
    }
}
