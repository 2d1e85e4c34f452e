//! Narrowing: the nine assignment rules of docs/rules.md, applied in order to one instance.
//!
//! The first rule that fails is the instance's reason, and its [`Rejection`] carries the
//! detail an operator needs (the missing selectors, the heartbeat age, the capability and
//! what the check saw). Rules 1 to 3 (enabled, scope, selectors) are answered by where
//! the registry's indexes place an instance (see `super::walk`); rules 4 to 9 are checked
//! here, per instance, by `Prepared::check`, which reads only the instance's packed
//! facts and allocates nothing: the detail of a rejection is only built when a verdict is
//! written.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::prefer::{CAPABILITIES_KNOWN, LAST_GROUP, LAST_INSTANCE, NOT_RUN, Standing, tie_key};
use super::registry::{Entry, Registry, Slot, Taking, WantedType};
use super::{Context, TaskInputs};
use crate::capability::{CapabilityBasis, CapabilityResult};
use crate::ident::Scope;
use crate::ids::InstanceId;
use crate::selection::Rule;
use crate::selector::Selectors;
use crate::task::TaskType;

/// Why an instance cannot take the task, with the detail shown in selection logs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum Rejection {
    /// Rule 1: its group is disabled.
    Disabled,
    /// Rule 2: its group's scope does not serve the task's scope.
    OutOfScope {
        #[cfg_attr(feature = "openapi", schema(value_type = crate::ident::ScopeParts))]
        delegate_scope: Scope,
    },
    /// Rule 3: effective selectors missing from its selector set.
    LacksSelectors {
        #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::selector::Selector>))]
        missing: Selectors,
    },
    /// Rule 4: it does not list the task's type.
    UnsupportedTaskType { task_type: TaskType },
    /// Rule 5: no open socket.
    Disconnected { heartbeat_age_secs: i64 },
    /// Rule 5: socket open but the last heartbeat is older than the timeout.
    StaleHeartbeat { heartbeat_age_secs: i64 },
    /// Rule 6: an operator paused it or its whole delegate, and the pause still holds.
    Paused {
        /// The pause's note.
        note: String,
        /// When it ends by itself; absent when it holds until lifted.
        #[serde(skip_serializing_if = "Option::is_none")]
        until: Option<DateTime<Utc>>,
        /// Whether the pause is its delegate's (all instances) rather than its own.
        whole_delegate: bool,
    },
    /// Rule 6: the delegate said it is stopping (`draining`).
    Draining,
    /// Rule 6: a single-use instance that has taken its tasks.
    Spent { max_tasks: u32 },
    /// Rule 7: as many running or assigned tasks as its capacity.
    AtCapacity { active: u32, capacity: u32 },
    /// Rule 8: it already lost, refused or failed validation for this task.
    AlreadyTried,
    /// Rule 9: a still-valid negative result for one of the task's capabilities.
    CapabilityUnreachable {
        capability: CapabilityBasis,
        /// What the check saw.
        detail: String,
        checked_at: DateTime<Utc>,
        /// When the negative result expires and the instance may be asked again.
        valid_until: DateTime<Utc>,
    },
}

/// The kind of a [`Rejection`] without its detail: what the summary counts. Finer than
/// [`Rule`] because "stale" and "disconnected" mean different things to an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Disabled,
    OutOfScope,
    LacksSelectors,
    UnsupportedTaskType,
    Disconnected,
    StaleHeartbeat,
    Paused,
    Draining,
    Spent,
    AtCapacity,
    AlreadyTried,
    CapabilityUnreachable,
}

impl Reason {
    /// Every reason, in rule order (the order they compare in).
    pub const ALL: [Reason; 12] = [
        Reason::Disabled,
        Reason::OutOfScope,
        Reason::LacksSelectors,
        Reason::UnsupportedTaskType,
        Reason::Disconnected,
        Reason::StaleHeartbeat,
        Reason::Paused,
        Reason::Draining,
        Reason::Spent,
        Reason::AtCapacity,
        Reason::AlreadyTried,
        Reason::CapabilityUnreachable,
    ];

    pub fn rule(self) -> Rule {
        match self {
            Reason::Disabled => Rule::Enabled,
            Reason::OutOfScope => Rule::Scope,
            Reason::LacksSelectors => Rule::Selectors,
            Reason::UnsupportedTaskType => Rule::TaskType,
            Reason::Disconnected | Reason::StaleHeartbeat => Rule::Liveness,
            Reason::Paused | Reason::Draining | Reason::Spent => Rule::Accepting,
            Reason::AtCapacity => Rule::Capacity,
            Reason::AlreadyTried => Rule::AlreadyTried,
            Reason::CapabilityUnreachable => Rule::Capabilities,
        }
    }

    /// Whether nothing about liveness, load or time can lift it: scope, selectors and
    /// task type are properties of how the delegate was registered.
    pub fn is_permanent(self) -> bool {
        matches!(self.rule(), Rule::Scope | Rule::Selectors | Rule::TaskType)
    }
}

impl Rejection {
    pub fn reason(&self) -> Reason {
        match self {
            Rejection::Disabled => Reason::Disabled,
            Rejection::OutOfScope { .. } => Reason::OutOfScope,
            Rejection::LacksSelectors { .. } => Reason::LacksSelectors,
            Rejection::UnsupportedTaskType { .. } => Reason::UnsupportedTaskType,
            Rejection::Disconnected { .. } => Reason::Disconnected,
            Rejection::StaleHeartbeat { .. } => Reason::StaleHeartbeat,
            Rejection::Paused { .. } => Reason::Paused,
            Rejection::Draining => Reason::Draining,
            Rejection::Spent { .. } => Reason::Spent,
            Rejection::AtCapacity { .. } => Reason::AtCapacity,
            Rejection::AlreadyTried => Reason::AlreadyTried,
            Rejection::CapabilityUnreachable { .. } => Reason::CapabilityUnreachable,
        }
    }

    pub fn rule(&self) -> Rule {
        self.reason().rule()
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::Disabled => f.write_str("its delegate is disabled"),
            Rejection::OutOfScope { delegate_scope } => {
                write!(f, "its scope {delegate_scope} does not serve the task's scope")
            }
            Rejection::LacksSelectors { missing } => write!(f, "lacks selectors {}", list(missing)),
            Rejection::UnsupportedTaskType { task_type } => write!(f, "does not support task type {task_type}"),
            Rejection::Disconnected { heartbeat_age_secs } => {
                write!(f, "disconnected (last heartbeat {heartbeat_age_secs}s ago)")
            }
            Rejection::StaleHeartbeat { heartbeat_age_secs } => {
                write!(f, "stale heartbeat (last one {heartbeat_age_secs}s ago)")
            }
            Rejection::Paused {
                note,
                until,
                whole_delegate,
            } => {
                let what = if *whole_delegate {
                    "its delegate is paused"
                } else {
                    "paused"
                };
                match until {
                    Some(until) => write!(f, "{what} until {}: {note}", until.to_rfc3339()),
                    None => write!(f, "{what}: {note}"),
                }
            }
            Rejection::Draining => f.write_str("draining (the delegate is stopping)"),
            Rejection::Spent { max_tasks } => write!(f, "single-use: has taken its {max_tasks} task(s)"),
            Rejection::AtCapacity { active, capacity } => write!(f, "at capacity ({active}/{capacity})"),
            Rejection::AlreadyTried => f.write_str("already tried for this task"),
            Rejection::CapabilityUnreachable {
                capability,
                detail,
                valid_until,
                ..
            } => write!(
                f,
                "cannot reach {capability}: {detail} (until {})",
                valid_until.to_rfc3339()
            ),
        }
    }
}

/// `[a, b]`, the way selectors and capabilities are listed in summaries.
pub(crate) fn list<T: fmt::Display>(items: impl IntoIterator<Item = T>) -> String {
    let parts: Vec<String> = items.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", parts.join(", "))
}

/// What the rules need of a task, resolved against the registry once per decision, so
/// checking one instance is a handful of comparisons on its [`Facts`](super::registry::Facts).
#[derive(Debug)]
pub(crate) struct Prepared<'a> {
    task: TaskInputs<'a>,
    ctx: &'a Context,
    wanted_type: WantedType,
    /// A heartbeat at or after this instant is fresh (rule 5), with its whole seconds.
    /// `None` when `now` minus the timeout is not a representable instant; then each age
    /// is computed.
    fresh_from: Option<(DateTime<Utc>, i64)>,
    /// Per capability of the task, the registry's results for its basis.
    results: Vec<Option<&'a HashMap<InstanceId, CapabilityResult>>>,
    /// Whether the task has tried instances at all (most have not: skip the lookup).
    any_tried: bool,
    /// The decision's time in Unix milliseconds, which a pause's end is compared with.
    now_ms: i64,
    /// Who last succeeded for the task's connector: the instance, and its group's index.
    last_instance: Option<InstanceId>,
    last_group: Option<usize>,
}

/// The outcome of rules 4 to 9 for an instance already known to be enabled, in scope and
/// offering every selector.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// Eligible; `capabilities_known` is its part of the preference order that depends
    /// on the task (see [`Prepared::standing`]).
    Pass { capabilities_known: bool },
    /// The first rule it fails.
    Fail(Reason),
    /// Rule 9: a valid negative result for this capability (an index into the task's).
    Unreachable(usize),
}

impl<'a> Prepared<'a> {
    pub(crate) fn new(reg: &'a Registry, task: &TaskInputs<'a>, ctx: &'a Context) -> Self {
        let last = task.connector_id.and_then(|c| reg.last_success(c));
        Prepared {
            task: *task,
            ctx,
            wanted_type: reg.wanted_type(task.task_type),
            fresh_from: ctx
                .now
                .checked_sub_signed(ctx.heartbeat_timeout)
                .map(|from| (from, from.timestamp())),
            results: task.capabilities.iter().map(|c| reg.results_for(&c.basis())).collect(),
            any_tried: !task.tried.is_empty(),
            now_ms: ctx.now.timestamp_millis(),
            last_instance: last.map(|l| l.instance_id),
            last_group: last.and_then(|l| reg.group_index(l.group_id)),
        }
    }

    pub(crate) fn task(&self) -> &TaskInputs<'a> {
        &self.task
    }

    /// Rule 4, which with scope and selectors decides whether an instance could ever take
    /// the task.
    #[inline]
    pub(crate) fn supports(&self, reg: &Registry, slot: Slot) -> bool {
        reg.supports(slot, self.wanted_type, self.task.task_type)
    }

    /// Applies rules 4 to 9, in order, to the instance in `slot`; rules 1 to 3 are the
    /// walk's business (they follow from where the index found the instance).
    #[inline(always)]
    pub(crate) fn check(&self, reg: &Registry, slot: Slot) -> Check {
        let f = reg.facts(slot);
        if !self.supports(reg, slot) {
            return Check::Fail(Reason::UnsupportedTaskType);
        }
        if !f.connected {
            return Check::Fail(Reason::Disconnected);
        }
        let fresh = match self.fresh_from {
            Some((from, from_secs)) => match f.heartbeat_secs.cmp(&from_secs) {
                Ordering::Greater => true,
                Ordering::Less => false,
                Ordering::Equal => reg.entry(slot).instance.last_heartbeat_at >= from,
            },
            None => self.ctx.now - reg.entry(slot).instance.last_heartbeat_at <= self.ctx.heartbeat_timeout,
        };
        if !fresh {
            return Check::Fail(Reason::StaleHeartbeat);
        }
        if f.paused_until_ms > self.now_ms {
            return Check::Fail(Reason::Paused);
        }
        match f.taking {
            Taking::Yes => {}
            Taking::Draining => return Check::Fail(Reason::Draining),
            Taking::Spent => return Check::Fail(Reason::Spent),
        }
        if f.active >= f.capacity {
            return Check::Fail(Reason::AtCapacity);
        }
        if self.any_tried && self.task.tried.contains(&f.id) {
            return Check::Fail(Reason::AlreadyTried);
        }
        // Vacuous for a task without capabilities: then it says nothing.
        let mut known = !self.results.is_empty();
        for (i, results) in self.results.iter().enumerate() {
            match results.and_then(|r| r.get(&f.id)) {
                Some(r) if r.is_valid_at(self.ctx.now, self.ctx.ttl) => {
                    if !r.reachable {
                        return Check::Unreachable(i);
                    }
                }
                _ => known = false,
            }
        }
        Check::Pass {
            capabilities_known: known,
        }
    }

    /// Where the eligible instance in `slot` stands in the preference order.
    #[inline]
    pub(crate) fn standing(&self, reg: &Registry, slot: Slot, capabilities_known: bool) -> Standing {
        let f = reg.facts(slot);
        let not_run = !self.task.ran.is_empty() && !self.task.ran.contains(&f.id);
        let held = [
            (not_run, NOT_RUN),
            (self.last_instance == Some(f.id), LAST_INSTANCE),
            (self.last_group == Some(f.group as usize), LAST_GROUP),
            (capabilities_known, CAPABILITIES_KNOWN),
        ]
        .into_iter()
        .fold(0, |held, (holds, bit)| if holds { held | bit } else { held });
        Standing::new(f.id, held, f.active, f.capacity, tie_key(self.ctx.seed, f.id_hash))
    }

    /// The task's capabilities (indexes) that the eligible instance in `slot` has no
    /// valid result for: it must validate them first.
    pub(crate) fn unchecked(&self, reg: &Registry, slot: Slot) -> Vec<usize> {
        let id = reg.facts(slot).id;
        self.results
            .iter()
            .enumerate()
            .filter(|(_, results)| {
                !results
                    .and_then(|r| r.get(&id))
                    .is_some_and(|r| r.is_valid_at(self.ctx.now, self.ctx.ttl))
            })
            .map(|(i, _)| i)
            .collect()
    }

    /// The detail of a rejection of the instance in `slot`, for its verdict. `reason` is
    /// what the walk or [`Prepared::check`] found; `capability` is the index from
    /// [`Check::Unreachable`] (ignored for the other reasons).
    pub(crate) fn rejection(&self, reg: &Registry, slot: Slot, reason: Reason, capability: usize) -> Rejection {
        let entry = reg.entry(slot);
        let instance = &entry.instance;
        let heartbeat_age_secs = (self.ctx.now - instance.last_heartbeat_at).num_seconds();
        match reason {
            Reason::Disabled => Rejection::Disabled,
            Reason::OutOfScope => Rejection::OutOfScope {
                delegate_scope: reg.group(entry).scope.clone(),
            },
            Reason::LacksSelectors => Rejection::LacksSelectors {
                missing: missing_selectors(entry, &self.task),
            },
            Reason::UnsupportedTaskType => Rejection::UnsupportedTaskType {
                task_type: self.task.task_type.clone(),
            },
            Reason::Disconnected => Rejection::Disconnected { heartbeat_age_secs },
            Reason::StaleHeartbeat => Rejection::StaleHeartbeat { heartbeat_age_secs },
            Reason::Paused => {
                let group = reg.group(entry);
                let pause = instance.pause_at(group, self.ctx.now);
                Rejection::Paused {
                    note: pause.map(|p| p.note.clone()).unwrap_or_default(),
                    until: pause.and_then(|p| p.until),
                    whole_delegate: pause.is_some_and(|p| group.paused.as_ref() == Some(p)),
                }
            }
            Reason::Draining => Rejection::Draining,
            Reason::Spent => Rejection::Spent {
                max_tasks: instance.max_tasks.unwrap_or_default(),
            },
            Reason::AtCapacity => Rejection::AtCapacity {
                active: instance.active_tasks,
                capacity: instance.capacity.get(),
            },
            Reason::AlreadyTried => Rejection::AlreadyTried,
            Reason::CapabilityUnreachable => {
                let capability = self.task.capabilities[capability].basis();
                let r = reg
                    .result(instance.id, &capability)
                    .expect("an unreachable capability has a result");
                Rejection::CapabilityUnreachable {
                    detail: r.detail.clone(),
                    checked_at: r.checked_at,
                    valid_until: r.checked_at + self.ctx.ttl.negative,
                    capability,
                }
            }
        }
    }
}

/// The effective selectors the instance does not offer.
pub(crate) fn missing_selectors(entry: &Entry, task: &TaskInputs<'_>) -> Selectors {
    task.selectors.difference(&entry.selectors).cloned().collect()
}
