//! The registry snapshot the engine decides against, indexed once and queried many times.
//!
//! A manager decides for many queued tasks against the same picture of its delegates, so
//! the work that does not depend on the task is done here, once: each instance's selector
//! set is computed, its group resolved, and two indexes are built:
//!
//! - **by account**: the instances of each account. Nothing crosses accounts, so instances
//!   of other accounts are never looked at.
//! - **by (account, selector)**: a posting list of the instances offering that selector.
//!   A task's candidates are the intersection of the lists of its effective selectors,
//!   walked from the shortest list, so an instance lacking a selector is never visited.
//!
//! Everything the index leaves out lacks at least one selector; how many there are is
//! the account's size minus the candidates, which keeps the summary exact without
//! evaluating them one by one.

use std::collections::HashMap;

use crate::capability::{CapabilityBasis, CapabilityResult};
use crate::connector::LastSuccess;
use crate::delegate::{DelegateGroup, DelegateInstance};
use crate::ident::Ident;
use crate::ids::{ConnectorId, GroupId, InstanceId};
use crate::selector::{Selector, Selectors};

/// Where an instance sits in [`Registry`]'s arrays; posting lists hold these, not ids,
/// so they stay small and sort in registration order.
pub(crate) type Slot = usize;

/// One instance with what every decision needs about it, resolved once.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) instance: DelegateInstance,
    /// Index into [`Registry::groups`].
    pub(crate) group: usize,
    /// The full selector set (group tags, own tags, implicit selectors).
    pub(crate) selectors: Selectors,
}

/// The instances of one account and its selector posting lists.
#[derive(Debug, Default)]
pub(crate) struct AccountIndex {
    /// Every instance of the account, in slot order.
    pub(crate) all: Vec<Slot>,
    /// Selector to the instances offering it, in slot order.
    pub(crate) by_selector: HashMap<Selector, Vec<Slot>>,
}

/// An immutable, indexed snapshot of groups, instances, capability results and last
/// successes. Build it with [`Registry::new`] and pass it to [`super::decide`].
#[derive(Debug, Default)]
pub struct Registry {
    groups: Vec<DelegateGroup>,
    entries: Vec<Entry>,
    by_account: HashMap<Ident, AccountIndex>,
    by_instance: HashMap<InstanceId, Slot>,
    /// The newest result per instance and capability basis; older ones are superseded.
    results: HashMap<InstanceId, HashMap<CapabilityBasis, CapabilityResult>>,
    /// The newest success per connector.
    last_success: HashMap<ConnectorId, LastSuccess>,
    /// Instances whose group was not in the snapshot: they are left out, because without
    /// a group they have no scope and could serve nobody.
    orphans: usize,
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
        let mut group_slot: HashMap<GroupId, usize> = HashMap::new();
        for g in groups {
            match group_slot.get(&g.id) {
                Some(&i) => reg.groups[i] = g,
                None => {
                    group_slot.insert(g.id, reg.groups.len());
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
        for id in order {
            let Some(instance) = latest.remove(&id) else { continue };
            let Some(&group) = group_slot.get(&instance.group_id) else {
                reg.orphans += 1;
                continue;
            };
            reg.insert(instance, group);
        }
        for r in results {
            let per = reg.results.entry(r.instance_id).or_default();
            match per.get(&r.basis) {
                Some(old) if old.checked_at > r.checked_at => {}
                _ => {
                    per.insert(r.basis.clone(), r);
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

    fn insert(&mut self, instance: DelegateInstance, group: usize) {
        let slot = self.entries.len();
        let g = &self.groups[group];
        let selectors = instance.selector_set(g);
        let index = self.by_account.entry(g.scope.account_id().clone()).or_default();
        index.all.push(slot);
        for s in &selectors {
            index.by_selector.entry(s.clone()).or_default().push(slot);
        }
        self.by_instance.insert(instance.id, slot);
        self.entries.push(Entry {
            instance,
            group,
            selectors,
        });
    }

    /// How many instances are in the snapshot (orphans excluded).
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
        self.results.get(&instance)?.get(basis)
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

    pub(crate) fn entry(&self, slot: Slot) -> &Entry {
        &self.entries[slot]
    }

    pub(crate) fn group(&self, entry: &Entry) -> &DelegateGroup {
        &self.groups[entry.group]
    }

    pub(crate) fn account(&self, account: &Ident) -> Option<&AccountIndex> {
        self.by_account.get(account)
    }
}

impl AccountIndex {
    /// The instances offering every selector of `wanted`, in slot order. Walks only the
    /// shortest posting list and checks the others on each of its instances, so the cost
    /// is bounded by the rarest selector, not by the account's size.
    pub(crate) fn candidates(&self, wanted: &Selectors, registry: &Registry) -> Vec<Slot> {
        if wanted.is_empty() {
            return self.all.clone();
        }
        let mut lists = Vec::with_capacity(wanted.len());
        for s in wanted {
            match self.by_selector.get(s) {
                Some(list) => lists.push((s, list)),
                None => return Vec::new(),
            }
        }
        lists.sort_by_key(|(_, list)| list.len());
        let (shortest, rest) = lists.split_first().map(|(f, r)| (f.1, r)).unwrap_or((&self.all, &[]));
        shortest
            .iter()
            .copied()
            .filter(|&slot| rest.iter().all(|(s, _)| registry.entry(slot).selectors.contains(*s)))
            .collect()
    }

    /// The effective selectors that at least one instance of the account lacks: exactly
    /// the selectors the instances the index skipped are missing, taken together. Computed
    /// from list sizes alone.
    pub(crate) fn missing_somewhere(&self, wanted: &Selectors) -> Selectors {
        wanted
            .iter()
            .filter(|s| self.by_selector.get(*s).map_or(0, Vec::len) < self.all.len())
            .cloned()
            .collect()
    }
}
