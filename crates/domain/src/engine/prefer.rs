//! Preference: the order in which the instances that passed every rule are offered a task.
//!
//! In order (docs/rules.md, "Assignment"): for a retry that prefers a different
//! instance, one that has not run the task; then the instance that last succeeded for the
//! task's connector, then the instances of that instance's group (both have been shown to
//! reach that infrastructure), then instances whose capability results for this task are
//! all known and positive (no validation round trip), then the lowest load, then a random
//! tie-break. The tie-break hashes the seed with the instance id, so it spreads work
//! evenly across decisions yet gives the same order for the same seed, whatever order the
//! registry listed the instances in.

use std::cmp::Ordering;

use serde::Serialize;

use crate::ids::InstanceId;

/// A criterion of the preference order; on an eligible verdict, either a property the
/// instance holds or what put it ahead of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Preference {
    /// It has not run the task before (a retry that prefers a different instance).
    NotRunBefore,
    /// It is the instance that last succeeded for the task's connector.
    LastSuccessInstance,
    /// Its group last succeeded for the task's connector.
    LastSuccessGroup,
    /// It holds a valid positive result for every capability of the task (which has some).
    CapabilitiesKnown,
    /// It is less loaded (active tasks over capacity).
    LowerLoad,
    /// Equal on everything else; the seeded random order decided.
    TieBreak,
}

/// Where one surviving instance stands on each criterion of the preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Standing {
    pub(crate) id: InstanceId,
    /// The properties it holds as bits, the most important highest, so that more is
    /// better: [`NOT_RUN`], [`LAST_INSTANCE`], [`LAST_GROUP`], [`CAPABILITIES_KNOWN`].
    held: u8,
    pub(crate) active: u32,
    pub(crate) capacity: u32,
    /// Its seeded random position, from [`tie_key`].
    tie: u64,
}

/// It has not run the task before, and the task's retry prefers a different instance.
pub(crate) const NOT_RUN: u8 = 0b1000;
/// It is the instance that last succeeded for the task's connector.
pub(crate) const LAST_INSTANCE: u8 = 0b100;
/// Its group last succeeded for the task's connector.
pub(crate) const LAST_GROUP: u8 = 0b010;
/// Every capability of the task has a valid positive result (never for a task without
/// capabilities: then it says nothing).
pub(crate) const CAPABILITIES_KNOWN: u8 = 0b001;

impl Standing {
    /// `held` is a combination of [`NOT_RUN`], [`LAST_INSTANCE`], [`LAST_GROUP`] and
    /// [`CAPABILITIES_KNOWN`]; `tie` comes from [`tie_key`].
    pub(crate) fn new(id: InstanceId, held: u8, active: u32, capacity: u32, tie: u64) -> Self {
        Standing {
            id,
            held,
            active,
            capacity,
            tie,
        }
    }

    /// The properties from the preference order it holds.
    pub(crate) fn holds(&self) -> Vec<Preference> {
        [
            (NOT_RUN, Preference::NotRunBefore),
            (LAST_INSTANCE, Preference::LastSuccessInstance),
            (LAST_GROUP, Preference::LastSuccessGroup),
            (CAPABILITIES_KNOWN, Preference::CapabilitiesKnown),
        ]
        .into_iter()
        .filter_map(|(bit, p)| (self.held & bit != 0).then_some(p))
        .collect()
    }

    /// Whether it comes before `other` in the preference order. The order is total (the
    /// id settles equal hashes), so the best of a set is the same whichever way it is
    /// found: by sorting everyone or by keeping the better of each pair. Spelled out
    /// rather than through [`first_difference`], which also names the criterion, because
    /// a placement compares every survivor with the best so far.
    #[inline]
    pub(crate) fn is_before(&self, other: &Standing) -> bool {
        let (a, b) = (self, other);
        if a.held != b.held {
            return a.held > b.held;
        }
        let (load_a, load_b) = (
            u64::from(a.active) * u64::from(b.capacity),
            u64::from(b.active) * u64::from(a.capacity),
        );
        if load_a != load_b {
            return load_a < load_b;
        }
        (a.tie, a.id) < (b.tie, b.id)
    }
}

/// A survivor with its place in the order explained.
#[derive(Debug, Clone)]
pub(crate) struct Ranked<T> {
    pub(crate) standing: Standing,
    /// Whatever the caller carries along (its slot and pending validations).
    pub(crate) data: T,
    /// What put it ahead of the next one in the order; `None` for the last.
    pub(crate) ahead_by: Option<Preference>,
}

/// Orders the survivors best first, each with what put it ahead of the next.
pub(crate) fn rank<T>(mut survivors: Vec<(Standing, T)>) -> Vec<Ranked<T>> {
    survivors.sort_unstable_by(|a, b| first_difference(&a.0, &b.0).map_or(Ordering::Equal, |(_, o)| o));
    let ahead: Vec<Option<Preference>> = survivors
        .windows(2)
        .map(|w| first_difference(&w[0].0, &w[1].0).map(|(p, _)| p))
        .chain(std::iter::once(None))
        .collect();
    survivors
        .into_iter()
        .zip(ahead)
        .map(|((standing, data), ahead_by)| Ranked {
            standing,
            data,
            ahead_by,
        })
        .collect()
}

/// The first criterion on which `a` and `b` differ, and which way (`Less`: `a` first).
fn first_difference(a: &Standing, b: &Standing) -> Option<(Preference, Ordering)> {
    // Loads compared as exact fractions: active_a / capacity_a vs active_b / capacity_b.
    let load = (u64::from(a.active) * u64::from(b.capacity)).cmp(&(u64::from(b.active) * u64::from(a.capacity)));
    let held = |s: &Standing, bit: u8| s.held & bit != 0;
    [
        (Preference::NotRunBefore, held(b, NOT_RUN).cmp(&held(a, NOT_RUN))),
        (
            Preference::LastSuccessInstance,
            held(b, LAST_INSTANCE).cmp(&held(a, LAST_INSTANCE)),
        ),
        (
            Preference::LastSuccessGroup,
            held(b, LAST_GROUP).cmp(&held(a, LAST_GROUP)),
        ),
        (
            Preference::CapabilitiesKnown,
            held(b, CAPABILITIES_KNOWN).cmp(&held(a, CAPABILITIES_KNOWN)),
        ),
        (Preference::LowerLoad, load),
        // The id settles the (astronomically unlikely) equal hash, keeping the order total.
        (Preference::TieBreak, a.tie.cmp(&b.tie).then(a.id.cmp(&b.id))),
    ]
    .into_iter()
    .find(|(_, o)| o.is_ne())
}

/// The seeded random position of an instance: splitmix64 over the seed mixed with both
/// halves of the id, `id_hash` being [`id_hash`] of the id (the part that does not depend
/// on the seed, which the registry computes once per instance).
pub(crate) fn tie_key(seed: u64, id_hash: u64) -> u64 {
    splitmix64(seed ^ id_hash)
}

/// The seed-independent half of [`tie_key`].
pub(crate) fn id_hash(id: InstanceId) -> u64 {
    let v = id.0.as_u128();
    let (hi, lo) = ((v >> 64) as u64, v as u64);
    splitmix64(hi ^ splitmix64(lo))
}

/// One step of splitmix64 (Steele, Lea and Flood), used as a hash: fast, and every input
/// bit affects every output bit.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix64_matches_its_reference_values() {
        // The first outputs of the reference generator seeded with 0 (state advanced by the
        // golden gamma each step, which is what the added constant does here).
        assert_eq!(splitmix64(0), 0xE220_A839_7B1D_CDAF);
        assert_eq!(splitmix64(0x9E37_79B9_7F4A_7C15), 0x6E78_9E6A_A1B9_65F4);
    }
}
