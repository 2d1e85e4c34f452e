//! The summary of a decision: one line for people and a few counts for machines.
//!
//! `0/12 delegates eligible: 5 lack selectors [gpu], 4 stale heartbeat, 3 out of scope`
//! is what an operator reads in a selection log; [`Outlook`] is what the manager acts on:
//! a task whose outlook is [`Outlook::Never`] fails at once as `no_eligible_delegate`
//! (unless its submitter asked to wait), one that is [`Outlook::Temporary`] waits.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::Serialize;

use super::rules::{Reason, Rejection, list};
use crate::selection::Rule;
use crate::selector::Selectors;

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

/// Accumulates a [`Summary`] while the engine evaluates instances.
#[derive(Debug, Default)]
pub(crate) struct Tally {
    considered: usize,
    eligible: usize,
    could_match: bool,
    counts: BTreeMap<Reason, (usize, BTreeSet<String>)>,
}

impl Tally {
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
    pub(crate) fn rejected(&mut self, rejection: &Rejection, could_ever_take: bool) {
        self.could_match |= could_ever_take;
        let (n, listed) = self.counts.entry(rejection.reason()).or_default();
        *n += 1;
        match rejection {
            Rejection::LacksSelectors { missing } => listed.extend(missing.iter().map(ToString::to_string)),
            Rejection::UnsupportedTaskType { task_type } => {
                listed.insert(task_type.to_string());
            }
            Rejection::CapabilityUnreachable { capability, .. } => {
                listed.insert(capability.to_string());
            }
            _ => {}
        }
    }

    /// Records `n` instances the index skipped for lacking selectors, all of them
    /// together missing `missing`; they count without being looked at.
    pub(crate) fn skipped(&mut self, n: usize, missing: &Selectors) {
        if n == 0 {
            return;
        }
        let (count, listed) = self.counts.entry(Reason::LacksSelectors).or_default();
        *count += n;
        listed.extend(missing.iter().map(ToString::to_string));
    }

    pub(crate) fn finish(self) -> Summary {
        let mut rejected: Vec<ReasonCount> = self
            .counts
            .into_iter()
            .map(|(reason, (count, listed))| ReasonCount {
                reason,
                rule: reason.rule(),
                count,
                listed: listed.into_iter().collect(),
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
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} delegates eligible", self.eligible, self.considered)?;
        if self.considered == 0 {
            return f.write_str(": no delegates in this account");
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
                Reason::AtCapacity => "at capacity".to_owned(),
                Reason::AlreadyTried => "already tried".to_owned(),
                Reason::CapabilityUnreachable => format!("cannot reach {}", list(&c.listed)),
            };
            write!(f, "{sep}{} {label}", c.count)?;
        }
        Ok(())
    }
}
