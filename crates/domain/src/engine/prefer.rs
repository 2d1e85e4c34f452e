//! Preference: the order in which the instances that passed every rule are offered a task.
//!
//! In order (PRODUCT.md, "narrow, then prefer"): the instance that last succeeded for the
//! task's connector, then the instances of that instance's group (both have been shown to
//! reach that infrastructure), then instances whose capability results for this task are
//! all known and positive (no validation round trip), then the lowest load, then a random
//! tie-break. The tie-break hashes the seed with the instance id, so it spreads work
//! evenly across decisions yet gives the same order for the same seed, whatever order the
//! registry listed the instances in.

use std::cmp::Ordering;

use serde::Serialize;

use crate::connector::LastSuccess;
use crate::ids::{GroupId, InstanceId};

/// A criterion of the preference order; on an eligible verdict, either a property the
/// instance holds or what put it ahead of the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Preference {
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

/// What the ranking needs to know about one surviving instance.
#[derive(Debug, Clone)]
pub(crate) struct Survivor<T> {
    pub(crate) id: InstanceId,
    pub(crate) group: GroupId,
    pub(crate) active: u32,
    pub(crate) capacity: u32,
    /// Every capability of the task has a valid positive result.
    pub(crate) capabilities_known: bool,
    /// Whatever the caller carries along (its slot and pending validations).
    pub(crate) data: T,
}

/// A survivor with its place in the order explained.
#[derive(Debug, Clone)]
pub(crate) struct Ranked<T> {
    pub(crate) survivor: Survivor<T>,
    /// The properties from the preference order it holds.
    pub(crate) holds: Vec<Preference>,
    /// What put it ahead of the next one in the order; `None` for the last.
    pub(crate) ahead_by: Option<Preference>,
}

struct Keyed<T> {
    survivor: Survivor<T>,
    last_instance: bool,
    last_group: bool,
    tie: u64,
}

/// Orders the survivors best first.
pub(crate) fn rank<T>(survivors: Vec<Survivor<T>>, last: Option<&LastSuccess>, seed: u64) -> Vec<Ranked<T>> {
    let mut keyed: Vec<Keyed<T>> = survivors
        .into_iter()
        .map(|s| Keyed {
            last_instance: last.is_some_and(|l| l.instance_id == s.id),
            last_group: last.is_some_and(|l| l.group_id == s.group),
            tie: tie_key(seed, s.id),
            survivor: s,
        })
        .collect();
    keyed.sort_by(|a, b| first_difference(a, b).map_or(Ordering::Equal, |(_, o)| o));
    let ahead: Vec<Option<Preference>> = keyed
        .windows(2)
        .map(|w| first_difference(&w[0], &w[1]).map(|(p, _)| p))
        .chain(std::iter::once(None))
        .collect();
    keyed
        .into_iter()
        .zip(ahead)
        .map(|(k, ahead_by)| {
            let holds = [
                (k.last_instance, Preference::LastSuccessInstance),
                (k.last_group, Preference::LastSuccessGroup),
                (k.survivor.capabilities_known, Preference::CapabilitiesKnown),
            ]
            .into_iter()
            .filter_map(|(held, p)| held.then_some(p))
            .collect();
            Ranked {
                survivor: k.survivor,
                holds,
                ahead_by,
            }
        })
        .collect()
}

/// The first criterion on which `a` and `b` differ, and which way (`Less`: `a` first).
fn first_difference<T>(a: &Keyed<T>, b: &Keyed<T>) -> Option<(Preference, Ordering)> {
    let (sa, sb) = (&a.survivor, &b.survivor);
    // Loads compared as exact fractions: active_a / capacity_a vs active_b / capacity_b.
    let load = (u64::from(sa.active) * u64::from(sb.capacity)).cmp(&(u64::from(sb.active) * u64::from(sa.capacity)));
    [
        (Preference::LastSuccessInstance, b.last_instance.cmp(&a.last_instance)),
        (Preference::LastSuccessGroup, b.last_group.cmp(&a.last_group)),
        (
            Preference::CapabilitiesKnown,
            sb.capabilities_known.cmp(&sa.capabilities_known),
        ),
        (Preference::LowerLoad, load),
        // The id settles the (astronomically unlikely) equal hash, keeping the order total.
        (Preference::TieBreak, a.tie.cmp(&b.tie).then(sa.id.cmp(&sb.id))),
    ]
    .into_iter()
    .find(|(_, o)| o.is_ne())
}

/// The seeded random position of an instance: splitmix64 over the seed mixed with both
/// halves of the id.
fn tie_key(seed: u64, id: InstanceId) -> u64 {
    let v = id.0.as_u128();
    let (hi, lo) = ((v >> 64) as u64, v as u64);
    splitmix64(seed ^ splitmix64(hi ^ splitmix64(lo)))
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
