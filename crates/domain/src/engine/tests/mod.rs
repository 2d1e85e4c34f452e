//! Unit tests of the engine on small hand-built registries: one test per rule, per
//! preference step, and per promise of the summary.

mod prefer;
mod rules;
mod snapshot;
mod summary;

use std::collections::BTreeSet;

use super::testkit::*;
use super::{Context, Decision, Registry, TaskInputs, Verdict, decide};
use crate::capability::{Capability, CapabilityResult};
use crate::connector::LastSuccess;
use crate::delegate::{DelegateGroup, DelegateInstance};
use crate::ids::{ConnectorId, InstanceId};
use crate::selection::Rule;
use crate::selector::Selectors;

/// A task as the tests describe it; owns what [`TaskInputs`] borrows.
struct Task {
    scope: crate::ident::Scope,
    task_type: crate::task::TaskType,
    selectors: Selectors,
    connector: Option<ConnectorId>,
    capabilities: Vec<Capability>,
    tried: BTreeSet<InstanceId>,
    ran: BTreeSet<InstanceId>,
}

impl Task {
    /// A `shell` task in `scope_path` with the given effective selectors.
    fn new(scope_path: &str, selectors: &[&str]) -> Self {
        Task {
            scope: scope(scope_path),
            task_type: task_type("shell"),
            selectors: sels(selectors),
            connector: None,
            capabilities: Vec::new(),
            tried: BTreeSet::new(),
            ran: BTreeSet::new(),
        }
    }

    fn inputs(&self) -> TaskInputs<'_> {
        TaskInputs {
            scope: &self.scope,
            task_type: &self.task_type,
            selectors: &self.selectors,
            connector_id: self.connector,
            capabilities: &self.capabilities,
            tried: &self.tried,
            ran: &self.ran,
        }
    }

    fn decide(&self, reg: &Registry) -> Decision {
        self.decide_with(reg, Context::new(now(), 7))
    }

    fn explain(&self, reg: &Registry) -> Decision {
        self.decide_with(
            reg,
            Context {
                explain_all: true,
                ..Context::new(now(), 7)
            },
        )
    }

    /// Decides as a placement does: without verdicts.
    fn place(&self, reg: &Registry) -> Decision {
        self.decide_with(
            reg,
            Context {
                verdicts: false,
                ..Context::new(now(), 7)
            },
        )
    }

    fn decide_with(&self, reg: &Registry, ctx: Context) -> Decision {
        decide(&self.inputs(), reg, &ctx)
    }
}

fn registry(groups: Vec<DelegateGroup>, instances: Vec<DelegateInstance>) -> Registry {
    Registry::new(groups, instances, vec![], vec![])
}

fn registry_with(
    groups: Vec<DelegateGroup>,
    instances: Vec<DelegateInstance>,
    results: Vec<CapabilityResult>,
    last: Vec<LastSuccess>,
) -> Registry {
    Registry::new(groups, instances, results, last)
}

/// The rule that rejected `instance`, or `None` if it is eligible or absent.
fn rejected_by(d: &Decision, instance: InstanceId) -> Option<Rule> {
    match d.verdict(instance) {
        Some(Verdict::Rejected { rule, .. }) => Some(*rule),
        _ => None,
    }
}
