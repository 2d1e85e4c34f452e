//! Which instances a decision looks at, and how it counts the others.
//!
//! Rules 1 to 3 follow from where the registry's indexes place an instance (see
//! [`super::registry`]): an instance the selector index leaves out lacks a selector; one
//! in its account's disabled tail is disabled; one outside the (at most three) ranges of
//! the group scopes serving the task's scope is out of scope. Only the rest, the enabled
//! candidates in scope, need [`Prepared::check`]. Two walks use this:
//!
//! - [`explained`] writes a verdict for every candidate, as the selection log and the dry
//!   run show them, so it visits every instance offering the selectors (with
//!   [`Context::explain_all`], every instance of the account) and ranks every survivor.
//! - [`quick`] visits only the enabled candidates in scope (plus, until one is found, the
//!   disabled ones in scope that would support the task's type, for the outlook), counts
//!   the others from range and list lengths, and keeps only the best survivor. It never
//!   allocates per instance.
//!
//! Both give the same chosen instance and the same [`Summary`](super::Summary): the
//! preference order is total, so the best survivor is the same however it is found, and
//! the counts are of the same sets. A property test holds them to it.

use super::prefer::{Standing, rank};
use super::registry::{AccountIndex, Candidates, Registry, ScopeRanges, Slot};
use super::rules::{Check, Prepared, Reason};
use super::summary::Tally;
use super::{Context, Decision, InstanceVerdict, Load, TaskInputs, Verdict};
use crate::capability::Capability;

/// What both walks start from: the task resolved against the registry, its candidates,
/// the scopes serving it, and a tally that already counts the instances lacking selectors.
struct Start<'a> {
    reg: &'a Registry,
    prepared: Prepared<'a>,
    candidates: Candidates<'a>,
    serving: [ScopeRanges; 3],
    tally: Tally<'a>,
}

impl<'a> Start<'a> {
    fn new(reg: &'a Registry, account: &'a AccountIndex, task: &TaskInputs<'a>, ctx: &'a Context) -> Self {
        let candidates = account.candidates(task.selectors);
        let mut tally = Tally::new(account.all.len());
        // Everything the selector index left out lacks a selector. It is reported for
        // that even when its group is also disabled or out of scope: finding out would
        // mean looking at it, and "lacks selectors" is the more lasting reason anyway.
        let lacking = account.all.len() - candidates.len();
        if lacking > 0 {
            tally.rejected_many(Reason::LacksSelectors, lacking);
            tally.missing(account.missing_somewhere(task.selectors));
        }
        Start {
            reg,
            prepared: Prepared::new(reg, task, ctx),
            serving: account.serving(task.scope),
            candidates,
            tally,
        }
    }

    /// What a validation must check first on the eligible instance in `slot`.
    fn to_validate(&self, slot: Slot) -> Vec<Capability> {
        let task = self.prepared.task();
        self.prepared
            .unchecked(self.reg, slot)
            .into_iter()
            .map(|c| task.capabilities[c].clone())
            .collect()
    }
}

/// Counts the outcome of rules 4 to 9 on an enabled candidate in scope: whether its
/// capability results are all known if it passed, else the reason (and the capability
/// index, for rule 9).
#[inline(always)]
fn counted(tally: &mut Tally<'_>, check: Check) -> Result<bool, (Reason, usize)> {
    match check {
        Check::Pass { capabilities_known } => {
            tally.eligible();
            Ok(capabilities_known)
        }
        Check::Fail(reason) => {
            // In scope and offering the selectors: only the task type is permanent.
            tally.rejected(reason, reason != Reason::UnsupportedTaskType);
            Err((reason, 0))
        }
        Check::Unreachable(capability) => {
            tally.rejected(Reason::CapabilityUnreachable, true);
            tally.unreachable(capability);
            Err((Reason::CapabilityUnreachable, capability))
        }
    }
}

/// Counts the enabled candidate in scope in `slot` and keeps it as `best` if it passed
/// and comes before the best so far.
#[inline(always)]
fn consider(
    reg: &Registry,
    prepared: &Prepared<'_>,
    tally: &mut Tally<'_>,
    slot: Slot,
    best: &mut Option<(Standing, Slot)>,
) {
    if let Ok(known) = counted(tally, prepared.check(reg, slot)) {
        let standing = prepared.standing(reg, slot, known);
        if best.is_none_or(|(b, _)| standing.is_before(&b)) {
            *best = Some((standing, slot));
        }
    }
}

/// The decision without verdicts: the chosen instance (alone in `ranked`), what it must
/// validate, and the summary.
pub(crate) fn quick<'a>(
    reg: &'a Registry,
    account: &'a AccountIndex,
    task: &TaskInputs<'a>,
    ctx: &'a Context,
) -> Decision {
    let mut w = Start::new(reg, account, task, ctx);
    let disabled = w.candidates.within(&account.disabled).len();
    w.tally.rejected_many(Reason::Disabled, disabled);
    let mut in_scope = 0;
    let mut best: Option<(Standing, Slot)> = None;
    for serving in w.serving.clone() {
        let enabled = w.candidates.within(&serving.enabled);
        in_scope += enabled.len();
        // One loop per kind of candidate set, so the loop itself is a plain range or slice.
        match &enabled {
            Candidates::Range(slots) => {
                for slot in slots.clone() {
                    consider(reg, &w.prepared, &mut w.tally, slot, &mut best);
                }
            }
            Candidates::List(slots) => {
                for &slot in slots.iter() {
                    consider(reg, &w.prepared, &mut w.tally, slot, &mut best);
                }
            }
        }
        // A disabled instance in scope that supports the type would serve if re-enabled.
        if w.candidates
            .within(&serving.disabled)
            .iter()
            .any(|slot| w.prepared.supports(reg, slot))
        {
            w.tally.could_match();
        }
    }
    w.tally
        .rejected_many(Reason::OutOfScope, w.candidates.len() - disabled - in_scope);
    let chosen = best.map(|(standing, _)| standing.id);
    Decision {
        chosen,
        to_validate: best.map(|(_, slot)| w.to_validate(slot)).unwrap_or_default(),
        ranked: chosen.into_iter().collect(),
        verdicts: Vec::new(),
        summary: w.tally.finish(task),
    }
}

/// The decision with a verdict for every candidate (with [`Context::explain_all`], for
/// every instance of the account), eligible ones by rank, then rejected ones by reason.
pub(crate) fn explained<'a>(
    reg: &'a Registry,
    account: &'a AccountIndex,
    task: &TaskInputs<'a>,
    ctx: &'a Context,
) -> Decision {
    let mut w = Start::new(reg, account, task, ctx);
    let serves = |ranges: &[ScopeRanges; 3], slot: Slot, disabled: bool| {
        ranges.iter().any(|r| {
            if disabled {
                r.disabled.contains(&slot)
            } else {
                r.enabled.contains(&slot)
            }
        })
    };
    let mut survivors = Vec::new();
    let mut rejected: Vec<(Slot, Reason, usize)> = Vec::new();
    let candidates: Vec<Slot> = w.candidates.iter().collect();
    for &slot in &candidates {
        if account.disabled.contains(&slot) {
            let could = serves(&w.serving, slot, true) && w.prepared.supports(reg, slot);
            w.tally.rejected(Reason::Disabled, could);
            rejected.push((slot, Reason::Disabled, 0));
        } else if !serves(&w.serving, slot, false) {
            w.tally.rejected(Reason::OutOfScope, false);
            rejected.push((slot, Reason::OutOfScope, 0));
        } else {
            match counted(&mut w.tally, w.prepared.check(reg, slot)) {
                Ok(known) => survivors.push((w.prepared.standing(reg, slot, known), slot)),
                Err((reason, capability)) => rejected.push((slot, reason, capability)),
            }
        }
    }
    if ctx.explain_all {
        // Already counted by `Start`; listed here one by one.
        let mut found = candidates.iter().peekable();
        for slot in account.all.clone() {
            if found.next_if_eq(&&slot).is_none() {
                rejected.push((slot, Reason::LacksSelectors, 0));
            }
        }
    }

    let ranked = rank(survivors);
    rejected.sort_by_key(|&(slot, reason, _)| (reason, reg.entry(slot).seq));
    let named = |slot: Slot, verdict: Verdict| {
        let entry = reg.entry(slot);
        InstanceVerdict {
            instance_id: entry.instance.id,
            group_id: entry.instance.group_id,
            delegate: reg.group(entry).name.clone(),
            scope: reg.group(entry).scope.clone(),
            hostname: entry.instance.hostname.clone(),
            verdict,
        }
    };
    let mut verdicts = Vec::with_capacity(ranked.len() + rejected.len());
    for (i, r) in ranked.iter().enumerate() {
        let verdict = Verdict::Eligible {
            rank: i + 1,
            preferred: r.standing.holds(),
            ahead_by: r.ahead_by,
            load: Load {
                active: r.standing.active,
                capacity: r.standing.capacity,
            },
            unchecked: w
                .prepared
                .unchecked(reg, r.data)
                .into_iter()
                .map(|c| task.capabilities[c].basis())
                .collect(),
        };
        verdicts.push(named(r.data, verdict));
    }
    for (slot, reason, capability) in rejected {
        let detail = w.prepared.rejection(reg, slot, reason, capability);
        verdicts.push(named(
            slot,
            Verdict::Rejected {
                rule: detail.rule(),
                detail,
            },
        ));
    }
    Decision {
        chosen: ranked.first().map(|r| r.standing.id),
        to_validate: ranked.first().map(|r| w.to_validate(r.data)).unwrap_or_default(),
        ranked: ranked.iter().map(|r| r.standing.id).collect(),
        verdicts,
        summary: w.tally.finish(task),
    }
}
