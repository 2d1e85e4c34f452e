//! Narrowing: the eight assignment rules of PRODUCT.md, applied in order to one instance.
//!
//! The first rule that fails is the instance's reason, and its [`Rejection`] carries the
//! detail an operator needs (the missing selectors, the heartbeat age, the capability and
//! what the check saw). An instance that passes all eight comes out with the capabilities
//! it has not checked yet, which feed both the preference order and validation.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::registry::{Entry, Registry};
use super::{Context, TaskInputs};
use crate::capability::CapabilityBasis;
use crate::delegate::{DelegateGroup, Liveness};
use crate::ident::Scope;
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
    /// Rule 6: as many running or assigned tasks as its capacity.
    AtCapacity { active: u32, capacity: u32 },
    /// Rule 7: it already lost, refused or failed validation for this task.
    AlreadyTried,
    /// Rule 8: a still-valid negative result for one of the task's capabilities.
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
    AtCapacity,
    AlreadyTried,
    CapabilityUnreachable,
}

impl Reason {
    pub fn rule(self) -> Rule {
        match self {
            Reason::Disabled => Rule::Enabled,
            Reason::OutOfScope => Rule::Scope,
            Reason::LacksSelectors => Rule::Selectors,
            Reason::UnsupportedTaskType => Rule::TaskType,
            Reason::Disconnected | Reason::StaleHeartbeat => Rule::Liveness,
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

/// What an instance that passed every rule still lacks: the indexes (into the task's
/// capabilities) of those it has no valid result for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Pass {
    pub(crate) unchecked: Vec<usize>,
}

/// Applies rules 1 to 8, in order, to one instance.
pub(crate) fn evaluate(reg: &Registry, entry: &Entry, task: &TaskInputs<'_>, ctx: &Context) -> Result<Pass, Rejection> {
    let group = reg.group(entry);
    let instance = &entry.instance;
    if group.disabled {
        return Err(Rejection::Disabled);
    }
    if !group.scope.contains(task.scope) {
        return Err(Rejection::OutOfScope {
            delegate_scope: group.scope.clone(),
        });
    }
    let missing = missing_selectors(entry, task);
    if !missing.is_empty() {
        return Err(Rejection::LacksSelectors { missing });
    }
    if !supports(entry, task) {
        return Err(Rejection::UnsupportedTaskType {
            task_type: task.task_type.clone(),
        });
    }
    let heartbeat_age_secs = (ctx.now - instance.last_heartbeat_at).num_seconds();
    match instance.liveness(ctx.now, ctx.heartbeat_timeout) {
        Liveness::Connected => {}
        Liveness::Stale => return Err(Rejection::StaleHeartbeat { heartbeat_age_secs }),
        Liveness::Disconnected => return Err(Rejection::Disconnected { heartbeat_age_secs }),
    }
    if !instance.has_free_slot() {
        return Err(Rejection::AtCapacity {
            active: instance.active_tasks,
            capacity: instance.capacity.get(),
        });
    }
    if task.tried.contains(&instance.id) {
        return Err(Rejection::AlreadyTried);
    }
    let mut unchecked = Vec::new();
    for (i, capability) in task.capabilities.iter().enumerate() {
        let basis = capability.basis();
        match reg.result(instance.id, &basis) {
            Some(r) if r.is_valid_at(ctx.now, ctx.ttl) => {
                if !r.reachable {
                    return Err(Rejection::CapabilityUnreachable {
                        capability: basis,
                        detail: r.detail.clone(),
                        checked_at: r.checked_at,
                        valid_until: r.checked_at + ctx.ttl.negative,
                    });
                }
            }
            _ => unchecked.push(i),
        }
    }
    Ok(Pass { unchecked })
}

/// The effective selectors the instance does not offer.
pub(crate) fn missing_selectors(entry: &Entry, task: &TaskInputs<'_>) -> Selectors {
    task.selectors.difference(&entry.selectors).cloned().collect()
}

fn supports(entry: &Entry, task: &TaskInputs<'_>) -> bool {
    entry.instance.task_types.contains(task.task_type)
}

/// Whether the registration-time rules (scope, selectors, task type) let this instance
/// ever take the task, whatever its group's switch, liveness, load or results. A task
/// for which this holds of no instance can never match.
pub(crate) fn could_ever_take(group: &DelegateGroup, entry: &Entry, task: &TaskInputs<'_>) -> bool {
    group.scope.contains(task.scope) && task.selectors.is_subset(&entry.selectors) && supports(entry, task)
}
