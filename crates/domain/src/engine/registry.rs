//! The registry snapshot the engine decides against, indexed once and queried many times.
//!
//! A manager decides for many queued tasks against the same picture of its delegates, so
//! the work that does not depend on the task is done here, once: each instance's selector
//! set is computed, its group resolved, the inputs of its verdict packed into `Facts`,
//! and the instances laid out and indexed so that a decision only walks the instances
//! that could serve the task's scope:
//!
//! - **Slots are laid out by account, then enabled before disabled, then by the group's
//!   scope** (account level, then each org followed by its projects), registration order
//!   within. So an account is one range of slots, its disabled instances one range at its
//!   end, and the instances of one group scope two ranges (enabled and disabled); see
//!   `AccountIndex`. A task's scope is served by at most three group scopes (its
//!   account's, its org's, its project's), so the instances that can serve it are at most
//!   three ranges, found by name, whatever the size of the account.
//! - **by (account, selector)**: a posting list of the instances offering that selector,
//!   in slot order. A task's candidates are the intersection of the lists of its effective
//!   selectors, and because slots are laid out by scope, the candidates within a scope's
//!   range are a sub-slice found by binary search.
//! - **task types are interned** into small numbers, so checking rule 4 is a bit test
//!   instead of string comparisons (see `TypeBits`).
//! - **capability results by basis, then instance**: a task looks up each of its
//!   capabilities once, then each instance is one hash probe per capability.
//!
//! Everything the selector index leaves out lacks at least one selector, and everything
//! outside the scope ranges is out of scope or disabled: how many of each is a matter of
//! range and list lengths, which keeps the summary exact without evaluating them one by
//! one (see `super::walk`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::ops::Range;

use super::prefer;
use crate::capability::{CapabilityBasis, CapabilityResult};
use crate::connector::LastSuccess;
use crate::delegate::{DelegateGroup, DelegateInstance};
use crate::ident::{Ident, Scope};
use crate::ids::{ConnectorId, GroupId, InstanceId};
use crate::selector::{Selector, Selectors};
use crate::task::TaskType;

/// Where an instance sits in [`Registry`]'s arrays; posting lists hold these, not ids, so
/// they stay small, and the layout (see the module docs) makes ranges of them meaningful.
pub(crate) type Slot = usize;

/// One instance with what an explanation needs about it, resolved once.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) instance: DelegateInstance,
    /// Index into [`Registry::groups`].
    pub(crate) group: usize,
    /// The full selector set (group tags, own tags, implicit selectors).
    pub(crate) selectors: Selectors,
    /// Its place in registration order (the order the snapshot listed it in), which orders
    /// the rejected verdicts of one reason; slots follow the index layout instead.
    pub(crate) seq: usize,
}

/// What rules 1 and 4 to 9 and the preference order read about an instance, packed small
/// and kept apart from [`Entry`], so a walk over thousands of instances stays in a few
/// cache lines per instance and never follows a pointer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Facts {
    pub(crate) id: InstanceId,
    /// The whole seconds of its last heartbeat (Unix time): settles rule 5 with one
    /// integer comparison unless the cut-off falls in the same second.
    pub(crate) heartbeat_secs: i64,
    /// The seed-independent half of the random tie-break (see [`prefer::id_hash`]).
    pub(crate) id_hash: u64,
    pub(crate) types: TypeBits,
    /// Index into [`Registry::groups`].
    pub(crate) group: u32,
    pub(crate) active: u32,
    pub(crate) capacity: u32,
    pub(crate) connected: bool,
    /// Rule 6: whether it takes new tasks, as far as the snapshot tells without the time
    /// of the decision.
    pub(crate) taking: Taking,
    /// Rule 6: paused (itself or its group) until this Unix millisecond, compared with
    /// the decision's time; [`NOT_PAUSED`] when not paused, `i64::MAX` until lifted.
    pub(crate) paused_until_ms: i64,
}

/// [`Facts::paused_until_ms`] of an instance that is not paused.
pub(crate) const NOT_PAUSED: i64 = i64::MIN;

/// Whether an instance takes new tasks (rule 6), besides a pause (see
/// [`Facts::paused_until_ms`]). One byte, so the facts stay one cache line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Taking {
    Yes,
    Draining,
    Spent,
}

impl Taking {
    fn of(instance: &DelegateInstance) -> Self {
        if instance.draining {
            Taking::Draining
        } else if instance.is_spent() {
            Taking::Spent
        } else {
            Taking::Yes
        }
    }
}

/// The end of the pause that holds the longest over an instance (its own or its
/// group's), as [`Facts::paused_until_ms`] keeps it.
fn paused_until_ms(instance: &DelegateInstance, group: &DelegateGroup) -> i64 {
    [group.paused.as_ref(), instance.paused.as_ref()]
        .into_iter()
        .flatten()
        .map(|p| p.until.map_or(i64::MAX, |u| u.timestamp_millis()))
        .max()
        .unwrap_or(NOT_PAUSED)
}

/// The task types an instance lists, as a bit set over the registry's interned types (a
/// type's bit is its number modulo 64). Exact while the registry knows at most 64 types,
/// the common case by far; beyond that a set bit is confirmed on the instance's own list.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct TypeBits(u64);

impl TypeBits {
    fn bit(number: usize) -> u64 {
        1 << (number % 64)
    }
}

/// A task type as the registry knows it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct WantedType {
    /// Its bit in [`TypeBits`]; zero when no instance lists it.
    bit: u64,
    /// Whether a set bit is proof (the registry has at most 64 types).
    exact: bool,
}

/// The instances of one group scope: two ranges of slots, enabled and disabled.
#[derive(Debug, Clone, Default)]
pub(crate) struct ScopeRanges {
    pub(crate) enabled: Range<Slot>,
    pub(crate) disabled: Range<Slot>,
}

/// The group scopes of one org: its own level and its projects.
#[derive(Debug, Default)]
pub(crate) struct OrgIndex {
    pub(crate) own: ScopeRanges,
    pub(crate) projects: HashMap<Ident, ScopeRanges>,
}

/// The instances of one account, laid out as the module docs say, and its selector
/// posting lists.
#[derive(Debug, Default)]
pub(crate) struct AccountIndex {
    /// Every instance of the account.
    pub(crate) all: Range<Slot>,
    /// The instances of disabled groups: the tail of `all`.
    pub(crate) disabled: Range<Slot>,
    /// The instances of account-level groups.
    pub(crate) own: ScopeRanges,
    pub(crate) orgs: HashMap<Ident, OrgIndex>,
    /// Selector to the instances offering it, in slot order.
    pub(crate) by_selector: HashMap<Selector, Vec<Slot>>,
}

/// An immutable, indexed snapshot of groups, instances, capability results and last
/// successes. Build it with [`Registry::new`] and pass it to [`super::decide`].
#[derive(Debug, Default)]
pub struct Registry {
    groups: Vec<DelegateGroup>,
    group_index: HashMap<GroupId, usize>,
    entries: Vec<Entry>,
    /// Parallel to `entries`: the walk reads these, explanations read the entries.
    facts: Vec<Facts>,
    by_account: HashMap<Ident, AccountIndex>,
    by_instance: HashMap<InstanceId, Slot>,
    /// Task types numbered in order of first appearance; see [`TypeBits`].
    task_types: HashMap<TaskType, usize>,
    /// The newest result per capability basis and instance; older ones are superseded.
    /// Keyed by basis first so a decision resolves each of its task's capabilities once.
    results: HashMap<CapabilityBasis, HashMap<InstanceId, CapabilityResult>>,
    /// The newest success per connector.
    last_success: HashMap<ConnectorId, LastSuccess>,
    /// Instances whose group was not in the snapshot: they are left out, because without
    /// a group they have no scope and could serve nobody.
    orphans: usize,
    /// The declared groups (pools) of each account, as indexes into `groups`, with how
    /// many instances each has in the snapshot.
    pools: HashMap<Ident, Vec<(usize, usize)>>,
}

impl Registry {
    /// Builds and indexes a snapshot. Instances whose group is missing are dropped (see
    /// [`Registry::orphans`]); for a repeated instance id the last one wins; for several
    /// results of one instance and capability, or successes of one connector, the newest.
    pub fn new(
        groups: impl IntoIterator<Item = DelegateGroup>,
        instances: impl IntoIterator<Item = DelegateInstance>,
        results: impl IntoIterator<Item = CapabilityResult>,
        last_successes: impl IntoIterator<Item = LastSuccess>,
    ) -> Self {
        let mut reg = Registry::default();
        for g in groups {
            match reg.group_index.get(&g.id) {
                Some(&i) => reg.groups[i] = g,
                None => {
                    reg.group_index.insert(g.id, reg.groups.len());
                    reg.groups.push(g);
                }
            }
        }
        let mut latest: HashMap<InstanceId, DelegateInstance> = HashMap::new();
        let mut order = Vec::new();
        for i in instances {
            let id = i.id;
            if latest.insert(id, i).is_none() {
                order.push(id);
            }
        }
        let mut placed = Vec::with_capacity(order.len());
        for id in order {
            let Some(instance) = latest.remove(&id) else { continue };
            let Some(&group) = reg.group_index.get(&instance.group_id) else {
                reg.orphans += 1;
                continue;
            };
            placed.push((instance, group));
        }
        let mut members: HashMap<usize, usize> = HashMap::new();
        for (_, group) in &placed {
            *members.entry(*group).or_default() += 1;
        }
        for (i, g) in reg.groups.iter().enumerate() {
            if g.declared.is_some() {
                let count = members.get(&i).copied().unwrap_or(0);
                reg.pools
                    .entry(g.scope.account_id().clone())
                    .or_default()
                    .push((i, count));
            }
        }
        reg.lay_out(placed);
        for r in results {
            let per = reg.results.entry(r.basis.clone()).or_default();
            match per.get(&r.instance_id) {
                Some(old) if old.checked_at > r.checked_at => {}
                _ => {
                    per.insert(r.instance_id, r);
                }
            }
        }
        for s in last_successes {
            match reg.last_success.get(&s.connector_id) {
                Some(old) if old.at > s.at => {}
                _ => {
                    reg.last_success.insert(s.connector_id, s);
                }
            }
        }
        reg
    }

    /// Assigns slots in the layout the module docs describe and builds the indexes.
    fn lay_out(&mut self, placed: Vec<(DelegateInstance, usize)>) {
        let mut placed: Vec<(usize, DelegateInstance, usize)> = placed
            .into_iter()
            .enumerate()
            .map(|(seq, (i, g))| (seq, i, g))
            .collect();
        // Stable, so registration order holds within one group scope.
        placed.sort_by(|a, b| {
            let (ga, gb) = (&self.groups[a.2], &self.groups[b.2]);
            (ga.scope.account_id(), ga.disabled, &ga.scope).cmp(&(gb.scope.account_id(), gb.disabled, &gb.scope))
        });
        for (seq, instance, group) in placed {
            let slot = self.entries.len();
            let g = &self.groups[group];
            let selectors = instance.selector_set(g);
            let mut types = TypeBits::default();
            for t in &instance.task_types {
                let next = self.task_types.len();
                types.0 |= TypeBits::bit(*self.task_types.entry(t.clone()).or_insert(next));
            }
            let index = self.by_account.entry(g.scope.account_id().clone()).or_default();
            if index.all.is_empty() {
                index.all = slot..slot;
                index.disabled = slot..slot;
            }
            index.all.end = slot + 1;
            if !g.disabled {
                index.disabled = slot + 1..slot + 1;
            } else {
                index.disabled.end = slot + 1;
            }
            let ranges = match (g.scope.org(), g.scope.project()) {
                (None, _) => &mut index.own,
                (Some(org), None) => &mut index.orgs.entry(org.clone()).or_default().own,
                (Some(org), Some(project)) => index
                    .orgs
                    .entry(org.clone())
                    .or_default()
                    .projects
                    .entry(project.clone())
                    .or_default(),
            };
            let range = if g.disabled {
                &mut ranges.disabled
            } else {
                &mut ranges.enabled
            };
            if range.start == range.end {
                *range = slot..slot;
            }
            range.end = slot + 1;
            for s in &selectors {
                index.by_selector.entry(s.clone()).or_default().push(slot);
            }
            self.by_instance.insert(instance.id, slot);
            self.facts.push(Facts {
                id: instance.id,
                heartbeat_secs: instance.last_heartbeat_at.timestamp(),
                id_hash: prefer::id_hash(instance.id),
                types,
                group: u32::try_from(group).expect("fewer than 4 billion groups"),
                active: instance.active_tasks,
                capacity: instance.capacity.get(),
                connected: instance.connected,
                taking: Taking::of(&instance),
                paused_until_ms: paused_until_ms(&instance, g),
            });
            self.entries.push(Entry {
                instance,
                group,
                selectors,
                seq,
            });
        }
    }

    /// How many instances are in the snapshot (orphans excluded).
    /// The declared pools that could take `task` once they have an instance
    /// ([`DelegateGroup::pool_fits`]); a disabled one too, as a disabled instance that
    /// could take it keeps the task waiting.
    pub(crate) fn pools_for(&self, task: &super::TaskInputs<'_>) -> Vec<super::summary::PoolWait> {
        let Some(pools) = self.pools.get(task.scope.account_id()) else {
            return Vec::new();
        };
        pools
            .iter()
            .filter_map(|&(i, instances)| {
                let g = &self.groups[i];
                g.pool_fits(task.scope, task.task_type, task.selectors)
                    .then(|| super::summary::PoolWait {
                        group_id: g.id,
                        name: g.name.clone(),
                        instances,
                        disabled: g.disabled,
                    })
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How many instances were dropped because their group was not in the snapshot.
    pub fn orphans(&self) -> usize {
        self.orphans
    }

    pub fn instance(&self, id: InstanceId) -> Option<&DelegateInstance> {
        self.by_instance.get(&id).map(|&s| &self.entries[s].instance)
    }

    /// The group of an instance in the snapshot.
    pub fn group_of(&self, id: InstanceId) -> Option<&DelegateGroup> {
        self.by_instance.get(&id).map(|&s| &self.groups[self.entries[s].group])
    }

    /// The newest result of `instance` for `basis`, valid or not.
    pub fn result(&self, instance: InstanceId, basis: &CapabilityBasis) -> Option<&CapabilityResult> {
        self.results.get(basis)?.get(&instance)
    }

    /// The newest results for `basis`, by instance.
    pub(crate) fn results_for(&self, basis: &CapabilityBasis) -> Option<&HashMap<InstanceId, CapabilityResult>> {
        self.results.get(basis)
    }

    /// Who last succeeded for `connector`.
    pub fn last_success(&self, connector: ConnectorId) -> Option<&LastSuccess> {
        self.last_success.get(&connector)
    }

    /// Counts one more task on `id`: a claim made since the snapshot was taken, so that
    /// the decisions made against this snapshot until the next one see the load it
    /// added. Returns whether `id` is in the snapshot.
    pub fn count_claim(&mut self, id: InstanceId) -> bool {
        match self.by_instance.get(&id) {
            Some(&slot) => {
                let instance = &mut self.entries[slot].instance;
                instance.active_tasks = instance.active_tasks.saturating_add(1);
                instance.tasks_taken = instance.tasks_taken.saturating_add(1);
                self.facts[slot].active = instance.active_tasks;
                if instance.is_spent() {
                    self.facts[slot].taking = Taking::Spent;
                }
                true
            }
            None => false,
        }
    }

    /// Marks `id` as full: a claim found it at capacity, so its load in the snapshot was
    /// behind. Returns whether `id` is in the snapshot.
    pub fn mark_full(&mut self, id: InstanceId) -> bool {
        match self.by_instance.get(&id) {
            Some(&slot) => {
                let instance = &mut self.entries[slot].instance;
                instance.active_tasks = instance.active_tasks.max(instance.capacity.get());
                self.facts[slot].active = instance.active_tasks;
                true
            }
            None => false,
        }
    }

    /// Takes `success` as the connector's last success if it is newer than the one held.
    pub fn note_last_success(&mut self, success: LastSuccess) {
        match self.last_success.get(&success.connector_id) {
            Some(old) if old.at > success.at => {}
            _ => {
                self.last_success.insert(success.connector_id, success);
            }
        }
    }

    /// The index of a group in the snapshot.
    pub(crate) fn group_index(&self, id: GroupId) -> Option<usize> {
        self.group_index.get(&id).copied()
    }

    pub(crate) fn entry(&self, slot: Slot) -> &Entry {
        &self.entries[slot]
    }

    #[inline]
    pub(crate) fn facts(&self, slot: Slot) -> &Facts {
        &self.facts[slot]
    }

    pub(crate) fn group(&self, entry: &Entry) -> &DelegateGroup {
        &self.groups[entry.group]
    }

    pub(crate) fn account(&self, account: &Ident) -> Option<&AccountIndex> {
        self.by_account.get(account)
    }

    /// How the registry knows `task_type`.
    pub(crate) fn wanted_type(&self, task_type: &TaskType) -> WantedType {
        WantedType {
            bit: self.task_types.get(task_type).map_or(0, |&n| TypeBits::bit(n)),
            exact: self.task_types.len() <= 64,
        }
    }

    /// Rule 4: whether the instance in `slot` lists the wanted type.
    #[inline]
    pub(crate) fn supports(&self, slot: Slot, wanted: WantedType, task_type: &TaskType) -> bool {
        self.facts[slot].types.0 & wanted.bit != 0
            && (wanted.exact || self.entries[slot].instance.task_types.contains(task_type))
    }
}

impl AccountIndex {
    /// The slot ranges whose groups serve `scope` (a scope of this account): the
    /// account-level groups, the groups of its org, the groups of its project. Each
    /// comes as its enabled and its disabled range; absent levels are empty.
    pub(crate) fn serving(&self, scope: &Scope) -> [ScopeRanges; 3] {
        let org = scope.org().and_then(|o| self.orgs.get(o));
        let project = org.zip(scope.project()).and_then(|(o, p)| o.projects.get(p));
        [
            self.own.clone(),
            org.map(|o| o.own.clone()).unwrap_or_default(),
            project.cloned().unwrap_or_default(),
        ]
    }

    /// The instances offering every selector of `wanted`, in slot order. With one
    /// selector that is its posting list as is; with more, the intersection of the lists
    /// (see [`intersect`]), so the cost is bounded by the rarest selector, not by the
    /// account's size.
    pub(crate) fn candidates<'a>(&'a self, wanted: &Selectors) -> Candidates<'a> {
        if wanted.is_empty() {
            return Candidates::Range(self.all.clone());
        }
        let mut lists = Vec::with_capacity(wanted.len());
        for s in wanted {
            match self.by_selector.get(s) {
                Some(list) => lists.push(list.as_slice()),
                None => return Candidates::List(Cow::Borrowed(&[])),
            }
        }
        lists.sort_by_key(|list| list.len());
        match lists.as_slice() {
            [only] => Candidates::List(Cow::Borrowed(only)),
            [shortest, rest @ ..] => Candidates::List(Cow::Owned(intersect(shortest, rest))),
            [] => unreachable!("wanted is not empty"),
        }
    }

    /// The effective selectors that at least one instance of the account lacks: exactly
    /// the selectors the instances the index skipped are missing, taken together. Computed
    /// from list sizes alone.
    pub(crate) fn missing_somewhere<'a>(&self, wanted: &'a Selectors) -> impl Iterator<Item = &'a Selector> {
        wanted
            .iter()
            .filter(|s| self.by_selector.get(*s).map_or(0, Vec::len) < self.all.len())
    }
}

/// The slots of `shortest` that are in every list of `rest` (all sorted), intersecting
/// one list at a time, so later steps work on an ever shorter result.
fn intersect(shortest: &[Slot], rest: &[&[Slot]]) -> Vec<Slot> {
    let mut found = shortest.to_vec();
    for list in rest {
        found = intersect_two(&found, list);
    }
    found
}

/// The slots of `short` also in `long`, both sorted. Lists of similar lengths are merged
/// (a few instructions per slot of either list). When `long` is much longer, each slot of
/// `short` is looked up in it by galloping forward from the previous hit: probing 1, 2,
/// 4... places ahead, then a binary search, so the cost follows the shorter list.
fn intersect_two(short: &[Slot], long: &[Slot]) -> Vec<Slot> {
    let mut found = Vec::with_capacity(short.len());
    if short.len() * 16 < long.len() {
        let mut from = 0;
        for &slot in short {
            let (mut below, mut probe, mut step) = (from, from, 1);
            while probe < long.len() && long[probe] < slot {
                below = probe + 1;
                probe += step;
                step *= 2;
            }
            from = below + long[below..probe.min(long.len())].partition_point(|&s| s < slot);
            if long.get(from) == Some(&slot) {
                found.push(slot);
            }
        }
    } else {
        let (mut i, mut j) = (0, 0);
        while i < short.len() && j < long.len() {
            let (a, b) = (short[i], long[j]);
            if a == b {
                found.push(a);
            }
            i += usize::from(a <= b);
            j += usize::from(b <= a);
        }
    }
    found
}

/// The instances of an account that offer every effective selector, in slot order.
#[derive(Debug)]
pub(crate) enum Candidates<'a> {
    /// A task without selectors: the whole account.
    Range(Range<Slot>),
    /// The intersection of the selectors' posting lists.
    List(Cow<'a, [Slot]>),
}

impl Candidates<'_> {
    pub(crate) fn len(&self) -> usize {
        match self {
            Candidates::Range(r) => r.len(),
            Candidates::List(l) => l.len(),
        }
    }

    /// The candidates within `range`, found by binary search.
    pub(crate) fn within(&self, range: &Range<Slot>) -> Candidates<'_> {
        match self {
            Candidates::Range(r) => Candidates::Range(range.start.max(r.start)..range.end.min(r.end)),
            Candidates::List(l) => {
                let (from, to) = (
                    l.partition_point(|&s| s < range.start),
                    l.partition_point(|&s| s < range.end),
                );
                Candidates::List(Cow::Borrowed(&l[from..to.max(from)]))
            }
        }
    }

    /// Every candidate, in slot order.
    pub(crate) fn iter(&self) -> CandidateIter<'_> {
        match self {
            Candidates::Range(r) => CandidateIter::Range(r.clone()),
            Candidates::List(l) => CandidateIter::List(l.iter()),
        }
    }
}

/// Iterates [`Candidates`] without boxing.
#[derive(Debug)]
pub(crate) enum CandidateIter<'a> {
    Range(Range<Slot>),
    List(std::slice::Iter<'a, Slot>),
}

impl Iterator for CandidateIter<'_> {
    type Item = Slot;

    fn next(&mut self) -> Option<Slot> {
        match self {
            CandidateIter::Range(r) => r.next(),
            CandidateIter::List(l) => l.next().copied(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn intersecting_posting_lists_keeps_exactly_the_common_slots(
            lists in prop::collection::vec(prop::collection::btree_set(0..2_000usize, 0..400), 2..4),
            rare in prop::collection::btree_set(0..2_000usize, 0..8),
        ) {
            // A rare list next to long ones takes the galloping path, similar lengths the merge.
            for lists in [lists.clone(), [vec![rare], lists].concat()] {
                let mut sorted: Vec<Vec<Slot>> = lists.iter().map(|l| l.iter().copied().collect()).collect();
                sorted.sort_by_key(Vec::len);
                let rest: Vec<&[Slot]> = sorted[1..].iter().map(Vec::as_slice).collect();
                let expected: Vec<Slot> = lists[0]
                    .iter()
                    .copied()
                    .filter(|s| lists.iter().all(|l: &BTreeSet<Slot>| l.contains(s)))
                    .collect();
                prop_assert_eq!(intersect(&sorted[0], &rest), expected);
            }
        }
    }
}

#[cfg(test)]
mod layout {
    #[test]
    fn the_facts_of_an_instance_fit_one_cache_line() {
        // The walk reads one `Facts` per candidate; past 64 bytes each takes two lines.
        assert!(
            std::mem::size_of::<super::Facts>() <= 64,
            "{} bytes",
            std::mem::size_of::<super::Facts>()
        );
    }
}
