//! The summary of a decision: one line for people and a few counts for machines.
//!
//! `0/12 delegates eligible: 5 lack selectors [gpu], 4 stale heartbeat, 3 out of scope;
//! waiting for a heartbeat` is what an operator reads in a selection log (the kind of wait
//! closes the line); [`Outlook`] is what the manager acts on: a task whose outlook is
//! [`Outlook::Never`] fails at once as `no_eligible_delegate` (unless its submitter asked
//! to wait), one that is [`Outlook::Temporary`] waits.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::TaskInputs;
use super::rules::{Reason, list};
use crate::selection::Rule;
use crate::selector::Selector;

/// Whether the task can be placed now, later, or never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outlook {
    /// At least one instance is eligible now.
    Eligible,
    /// None is eligible now, but at least one passes scope, selectors and task type, so a
    /// change could make it eligible: it connects or beats again, frees a slot, a negative
    /// capability result expires, its group is re-enabled (or, for an instance already
    /// tried, another instance of the same kind registers).
    Temporary,
    /// Scope, selectors and task type rule out every instance of the account (or it has
    /// none): no registered delegate could ever take the task, whatever its liveness.
    Never,
}

/// How many instances one reason rejected.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ReasonCount {
    pub reason: Reason,
    pub rule: Rule,
    pub count: usize,
    /// What the summary line lists in brackets: the missing selectors, the unsupported
    /// task type, the unreachable capabilities. Empty for the other reasons.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub listed: Vec<String>,
}

/// Counts of a decision over the instances of the task's account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Summary {
    /// Instances in the task's account, whether or not the index had to look at them.
    pub considered: usize,
    pub eligible: usize,
    /// Rejections per reason, largest count first (rule order among equals).
    pub rejected: Vec<ReasonCount>,
    pub outlook: Outlook,
    /// The declared pools that could take the task once an instance of theirs registers
    /// (scope, tags and declared task types fit), when no instance is eligible now: a pool
    /// scaled to zero makes the task wait rather than fail.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pools: Vec<PoolWait>,
}

/// A declared pool a task waits for, and how many instances it has now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PoolWait {
    pub group_id: crate::ids::GroupId,
    pub name: crate::ident::Ident,
    /// Its instances in the snapshot, whatever their state.
    pub instances: usize,
    /// An operator disabled it: the task waits for it to be enabled as well.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
}

impl Summary {
    /// How many instances `reason` rejected.
    pub fn count(&self, reason: Reason) -> usize {
        self.rejected.iter().find(|c| c.reason == reason).map_or(0, |c| c.count)
    }

    /// Whether no registered delegate could ever take the task.
    pub fn can_never_match(&self) -> bool {
        self.outlook == Outlook::Never
    }
}

/// Accumulates a [`Summary`] while the engine walks instances. It counts, and notes only
/// what the line lists in brackets (the missing selectors, the unreachable capabilities);
/// the strings are made once, in [`Tally::finish`], not per instance.
#[derive(Debug, Default)]
pub(crate) struct Tally<'t> {
    considered: usize,
    eligible: usize,
    could_match: bool,
    /// Rejections per reason, indexed by the reason's place in [`Reason::ALL`].
    counts: [usize; Reason::ALL.len()],
    /// The effective selectors missing from at least one instance.
    missing: BTreeSet<&'t Selector>,
    /// The task's capabilities (indexes) that rejected at least one instance.
    unreachable: BTreeSet<usize>,
}

impl<'t> Tally<'t> {
    pub(crate) fn new(considered: usize) -> Self {
        Tally {
            considered,
            ..Tally::default()
        }
    }

    pub(crate) fn eligible(&mut self) {
        self.eligible += 1;
        self.could_match = true;
    }

    /// Records one rejection; `could_ever_take` says whether the instance passes the
    /// registration-time rules even though an earlier or later rule rejected it.
    pub(crate) fn rejected(&mut self, reason: Reason, could_ever_take: bool) {
        self.rejected_many(reason, 1);
        self.could_match |= could_ever_take;
    }

    /// Records `n` rejections for `reason`, counted without being looked at one by one;
    /// whether any of them could ever take the task is for [`Tally::could_match`].
    pub(crate) fn rejected_many(&mut self, reason: Reason, n: usize) {
        self.counts[reason as usize] += n;
    }

    /// Notes that some rejected instance could take the task if its state changed.
    pub(crate) fn could_match(&mut self) {
        self.could_match = true;
    }

    /// Notes selectors that instances rejected for lacking selectors miss.
    pub(crate) fn missing(&mut self, selectors: impl IntoIterator<Item = &'t Selector>) {
        self.missing.extend(selectors);
    }

    /// Notes the capability (an index into the task's) an instance was rejected for.
    pub(crate) fn unreachable(&mut self, capability: usize) {
        self.unreachable.insert(capability);
    }

    pub(crate) fn finish(self, task: &TaskInputs<'_>) -> Summary {
        let listed = |reason: Reason| -> Vec<String> {
            let set: BTreeSet<String> = match reason {
                Reason::LacksSelectors => self.missing.iter().map(ToString::to_string).collect(),
                Reason::UnsupportedTaskType => [task.task_type.to_string()].into(),
                Reason::CapabilityUnreachable => self
                    .unreachable
                    .iter()
                    .map(|&i| task.capabilities[i].basis().to_string())
                    .collect(),
                _ => BTreeSet::new(),
            };
            set.into_iter().collect()
        };
        let mut rejected: Vec<ReasonCount> = Reason::ALL
            .into_iter()
            .filter(|&reason| self.counts[reason as usize] > 0)
            .map(|reason| ReasonCount {
                reason,
                rule: reason.rule(),
                count: self.counts[reason as usize],
                listed: listed(reason),
            })
            .collect();
        rejected.sort_by(|a, b| b.count.cmp(&a.count).then(a.reason.cmp(&b.reason)));
        let outlook = if self.eligible > 0 {
            Outlook::Eligible
        } else if self.could_match {
            Outlook::Temporary
        } else {
            Outlook::Never
        };
        Summary {
            considered: self.considered,
            eligible: self.eligible,
            rejected,
            outlook,
            pools: Vec::new(),
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} delegates eligible", self.eligible, self.considered)?;
        if self.considered == 0 {
            f.write_str(": no delegates in this account")?;
            return self.fmt_outlook(f);
        }
        if self.eligible > 0 {
            return Ok(());
        }
        for (i, c) in self.rejected.iter().enumerate() {
            let sep = if i == 0 { ": " } else { ", " };
            let one = c.count == 1;
            let label = match c.reason {
                Reason::Disabled => "disabled".to_owned(),
                Reason::OutOfScope => "out of scope".to_owned(),
                Reason::LacksSelectors => {
                    format!("{} selectors {}", if one { "lacks" } else { "lack" }, list(&c.listed))
                }
                Reason::UnsupportedTaskType => {
                    format!(
                        "{} not support type {}",
                        if one { "does" } else { "do" },
                        c.listed.join(", ")
                    )
                }
                Reason::Disconnected => "disconnected".to_owned(),
                Reason::StaleHeartbeat => "stale heartbeat".to_owned(),
                Reason::Paused => "paused".to_owned(),
                Reason::Draining => "draining".to_owned(),
                Reason::Spent => "single-use, spent".to_owned(),
                Reason::AtCapacity => "at capacity".to_owned(),
                Reason::AlreadyTried => "already tried".to_owned(),
                Reason::CapabilityUnreachable => format!("cannot reach {}", list(&c.listed)),
            };
            write!(f, "{sep}{} {label}", c.count)?;
        }
        self.fmt_outlook(f)
    }
}

impl Summary {
    /// The kind of wait, after the counts: what could end it when it is temporary, or
    /// that nothing registered ever could (docs/rules.md, "Selection log and explanations":
    /// the summary says the kind of wait).
    fn fmt_outlook(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.outlook {
            Outlook::Eligible => Ok(()),
            Outlook::Never => f.write_str("; can never match"),
            Outlook::Temporary => {
                let mut unique: Vec<String> = Vec::new();
                for w in self.rejected.iter().filter_map(|c| waiting_for(c.reason)) {
                    if !unique.iter().any(|u| u == w) {
                        unique.push(w.to_owned());
                    }
                }
                for pool in &self.pools {
                    let disabled = if pool.disabled { ", disabled" } else { "" };
                    unique.push(format!(
                        "an instance of {} ({} running{disabled})",
                        pool.name, pool.instances
                    ));
                }
                if unique.is_empty() {
                    return f.write_str("; waiting");
                }
                write!(f, "; waiting for {}", unique.join(" or "))
            }
        }
    }
}

/// What a rejection for `reason` waits for, when a change of state can lift it; `None`
/// for the reasons fixed at registration (scope, selectors, task type).
fn waiting_for(reason: Reason) -> Option<&'static str> {
    match reason {
        Reason::Disabled => Some("a delegate to be enabled"),
        Reason::OutOfScope | Reason::LacksSelectors | Reason::UnsupportedTaskType => None,
        Reason::Disconnected => Some("a delegate to connect"),
        Reason::StaleHeartbeat => Some("a heartbeat"),
        Reason::Paused => Some("a pause to end"),
        Reason::Draining | Reason::Spent => Some("another instance"),
        Reason::AtCapacity => Some("capacity"),
        Reason::AlreadyTried => Some("an instance not yet tried"),
        Reason::CapabilityUnreachable => Some("a capability check to pass"),
    }
}
