//! The assignment engine: which instance gets a task, and why not the others.
//!
//! [`decide`] narrows the instances of a [`Registry`] snapshot by the nine rules of
//! docs/rules.md (in [`rules`]), ranks the survivors by the preference order (in [`prefer`])
//! and summarizes the outcome (in [`summary`]). It is a pure function of its inputs: the
//! clock and the randomness come in through [`Context`], so the same inputs always give
//! the same [`Decision`]. The manager acts on a decision (assigns, asks for validation,
//! waits, fails the task) and stores it as JSON in the selection log; a dry run
//! (`POST /api/v1/tasks/explain`) is the same call with [`Context::explain_all`] set.
//! Placing a task needs only the choice and the summary: with [`Context::verdicts`] off,
//! the same call gives exactly those, walking only the instances in the task's scope
//! (see [`registry`] for the indexes and `walk` for the two walks).
//!
//! ```
//! # use std::collections::BTreeSet;
//! # use chrono::Utc;
//! # use switchboard_domain::{Scope, Selectors, TaskType, Ident};
//! use switchboard_domain::engine::{decide, Context, Registry, TaskInputs};
//!
//! let registry = Registry::new(vec![], vec![], vec![], vec![]);
//! let scope = Scope::parse_path("acme/eng").unwrap();
//! let task_type = TaskType(Ident::parse("shell").unwrap());
//! let selectors = Selectors::new(); // the task's own, else its connector's
//! let task = TaskInputs::new(&scope, &task_type, &selectors);
//! let decision = decide(&task, &registry, &Context::new(Utc::now(), 42));
//! assert_eq!(decision.chosen, None);
//! assert!(decision.summary.can_never_match());
//! assert_eq!(decision.summary.to_string(), "0/0 delegates eligible: no delegates in this account; can never match");
//! ```

pub mod prefer;
pub mod registry;
pub mod rules;
pub mod summary;
mod walk;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod testkit;
#[cfg(test)]
mod tests;

use std::collections::BTreeSet;

use chrono::{DateTime, Duration, Utc};
use serde::Serialize;

pub use prefer::Preference;
pub use registry::Registry;
pub use rules::{Reason, Rejection};
pub use summary::{Outlook, PoolWait, ReasonCount, Summary};

use self::summary::Tally;
use crate::capability::{Capability, CapabilityBasis, ResultTtl};
use crate::ident::{Ident, Scope};
use crate::ids::{ConnectorId, GroupId, InstanceId};
use crate::selection::Rule;
use crate::selector::Selectors;
use crate::task::{NewTask, TaskType};

/// The default heartbeat timeout (docs/rules.md, "Delegates").
pub const DEFAULT_HEARTBEAT_TIMEOUT_SECS: i64 = 5 * 60;

static NOTHING_TRIED: BTreeSet<InstanceId> = BTreeSet::new();

/// What the engine needs to know about a task.
#[derive(Debug, Clone, Copy)]
pub struct TaskInputs<'a> {
    pub scope: &'a Scope,
    pub task_type: &'a TaskType,
    /// The EFFECTIVE selectors: the task's own if it has any, else its connector's (see
    /// [`effective_selectors`]). The engine does not know connectors; the caller resolves
    /// this, so explicit selectors are never widened.
    pub selectors: &'a Selectors,
    /// The connector the task names, for the last-success preference.
    pub connector_id: Option<ConnectorId>,
    pub capabilities: &'a [Capability],
    /// Instances that already lost, refused or failed validation for this task.
    pub tried: &'a BTreeSet<InstanceId>,
    /// Instances that ran it before, when its retry prefers a different instance: the
    /// others go first (empty otherwise).
    pub ran: &'a BTreeSet<InstanceId>,
}

impl<'a> TaskInputs<'a> {
    /// A task with no connector, no capabilities and nothing tried yet.
    pub fn new(scope: &'a Scope, task_type: &'a TaskType, selectors: &'a Selectors) -> Self {
        TaskInputs {
            scope,
            task_type,
            selectors,
            connector_id: None,
            capabilities: &[],
            tried: &NOTHING_TRIED,
            ran: &NOTHING_TRIED,
        }
    }

    /// The inputs of a submitted task, given its connector's selectors (if it names a
    /// connector), the instances already tried for it and those that ran it (see
    /// [`TaskInputs::ran`]).
    pub fn for_task(
        task: &'a NewTask,
        connector_selectors: Option<&'a Selectors>,
        tried: &'a BTreeSet<InstanceId>,
        ran: &'a BTreeSet<InstanceId>,
    ) -> Self {
        TaskInputs {
            scope: &task.scope,
            task_type: &task.task_type,
            selectors: effective_selectors(&task.selectors, connector_selectors),
            connector_id: task.connector_id,
            capabilities: &task.capabilities,
            tried,
            ran,
        }
    }
}

/// A task's effective selectors: its own if it has any, else its connector's.
pub fn effective_selectors<'a>(own: &'a Selectors, connector: Option<&'a Selectors>) -> &'a Selectors {
    match connector {
        Some(c) if own.is_empty() => c,
        _ => own,
    }
}

/// Everything about the moment of a decision that is not the task or the registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Context {
    pub now: DateTime<Utc>,
    /// An instance whose last heartbeat is older than this is stale.
    pub heartbeat_timeout: Duration,
    pub ttl: ResultTtl,
    /// Seeds the random tie-break: the same seed gives the same order.
    pub seed: u64,
    /// Also give a verdict for each instance the index skipped for lacking selectors
    /// (a dry run, or a selection log that lists everyone). Costs one look per instance
    /// of the account; the summary is the same either way. Implies `verdicts`.
    pub explain_all: bool,
    /// Give a verdict for each instance offering the task's selectors (the default), as
    /// the selection log shows them. Without verdicts a decision carries the chosen
    /// instance (alone in [`Decision::ranked`]), what it must validate and the summary,
    /// all exactly as with them, and costs a pass over the enabled instances in the
    /// task's scope instead of one allocation-heavy verdict per instance of the account:
    /// what placing a task needs, tens of times faster on a large account.
    pub verdicts: bool,
}

impl Context {
    /// The defaults: a 5 min heartbeat timeout, the default result lifetimes, and
    /// verdicts for the instances the index found.
    pub fn new(now: DateTime<Utc>, seed: u64) -> Self {
        Context {
            now,
            heartbeat_timeout: Duration::seconds(DEFAULT_HEARTBEAT_TIMEOUT_SECS),
            ttl: ResultTtl::default(),
            seed,
            explain_all: false,
            verdicts: true,
        }
    }
}

/// An instance's load when it was ranked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Load {
    pub active: u32,
    pub capacity: u32,
}

/// The engine's word on one instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "verdict", rename_all = "snake_case")]
pub enum Verdict {
    Eligible {
        /// 1 for the first choice.
        rank: usize,
        /// The properties from the preference order it holds.
        preferred: Vec<Preference>,
        /// What put it ahead of the next eligible instance (absent for the last).
        #[serde(skip_serializing_if = "Option::is_none")]
        ahead_by: Option<Preference>,
        load: Load,
        /// The task's capabilities it has no valid result for: it must validate them first.
        unchecked: Vec<CapabilityBasis>,
    },
    Rejected {
        rule: Rule,
        detail: Rejection,
    },
}

/// A verdict with the names an operator recognizes the instance by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceVerdict {
    pub instance_id: InstanceId,
    pub group_id: GroupId,
    /// The delegate (group) name.
    pub delegate: Ident,
    /// The delegate's scope: what the API checks before showing this verdict to a caller
    /// (one outside it learns only that some instances were left out).
    #[cfg_attr(feature = "openapi", schema(value_type = crate::ident::ScopeParts))]
    pub scope: crate::ident::Scope,
    pub hostname: String,
    #[serde(flatten)]
    pub verdict: Verdict,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Decision {
    /// The instance to offer the task to, if any is eligible.
    pub chosen: Option<InstanceId>,
    /// The capabilities the chosen instance has no valid result for: ask it to validate
    /// these before giving it the task. Empty when nothing is chosen.
    pub to_validate: Vec<Capability>,
    /// The eligible instances, best first: the order to try them in. Without
    /// [`Context::verdicts`], only the first (the chosen one).
    pub ranked: Vec<InstanceId>,
    /// Eligible instances by rank, then rejected ones by rule. Lists every instance of the
    /// account the index found; with [`Context::explain_all`] every instance of the account;
    /// without [`Context::verdicts`], none.
    pub verdicts: Vec<InstanceVerdict>,
    pub summary: Summary,
}

impl Decision {
    pub fn verdict(&self, instance: InstanceId) -> Option<&Verdict> {
        self.verdicts
            .iter()
            .find(|v| v.instance_id == instance)
            .map(|v| &v.verdict)
    }
}

/// Decides which instance of `registry` should take `task` now.
pub fn decide(task: &TaskInputs<'_>, registry: &Registry, ctx: &Context) -> Decision {
    let mut decision = match registry.account(task.scope.account_id()) {
        None => Decision {
            chosen: None,
            to_validate: Vec::new(),
            ranked: Vec::new(),
            verdicts: Vec::new(),
            summary: Tally::new(0).finish(task),
        },
        Some(account) if ctx.verdicts || ctx.explain_all => walk::explained(registry, account, task, ctx),
        Some(account) => walk::quick(registry, account, task, ctx),
    };
    // Nobody can take it now: a declared pool it fits may grow (from zero) to take it, so
    // the task waits for that rather than failing.
    if decision.summary.eligible == 0 {
        decision.summary.pools = registry.pools_for(task);
        if !decision.summary.pools.is_empty() && decision.summary.outlook == Outlook::Never {
            decision.summary.outlook = Outlook::Temporary;
        }
    }
    decision
}
