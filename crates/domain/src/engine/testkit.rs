//! Small builders for hand-made registries, shared by the engine's unit and property tests.
//!
//! Ids are derived from small numbers and time is a fixed instant, so every test is
//! reproducible and a failing case reads plainly.

use chrono::{DateTime, Duration, TimeZone, Utc};
use uuid::Uuid;

use crate::capability::{Capability, CapabilityResult};
use crate::delegate::{Capacity, DelegateGroup, DelegateInstance, ImageFlavour};
use crate::ident::{Ident, Scope};
use crate::ids::{GroupId, InstanceId, TokenId};
use crate::selector::{Selector, Selectors};
use crate::task::TaskType;

/// The instant every test decides at.
pub(super) fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid instant")
}

pub(super) fn sel(s: &str) -> Selector {
    Selector::parse(s).expect("valid selector")
}

pub(super) fn sels(list: &[&str]) -> Selectors {
    list.iter().map(|s| sel(s)).collect()
}

pub(super) fn scope(path: &str) -> Scope {
    Scope::parse_path(path).expect("valid scope")
}

pub(super) fn task_type(s: &str) -> TaskType {
    TaskType(Ident::parse(s).expect("valid type"))
}

pub(super) fn group_id(n: u128) -> GroupId {
    GroupId(Uuid::from_u128(0x6000_0000 + n))
}

pub(super) fn instance_id(n: u128) -> InstanceId {
    InstanceId(Uuid::from_u128(0x1000_0000 + n))
}

/// An enabled group `n` in `scope`, named `name`, with `tags`.
pub(super) fn group(n: u128, scope_path: &str, name: &str, tags: &[&str]) -> DelegateGroup {
    DelegateGroup {
        id: group_id(n),
        scope: scope(scope_path),
        name: Ident::parse(name).expect("valid name"),
        tags: sels(tags),
        disabled: false,
        created_at: now() - Duration::days(1),
        declared: None,
        paused: None,
    }
}

/// Instance `n` of `group`: connected, beat just now, supports `shell`, idle, capacity 10.
pub(super) fn instance(n: u128, group: &DelegateGroup) -> DelegateInstance {
    DelegateInstance {
        id: instance_id(n),
        group_id: group.id,
        token_id: TokenId(Uuid::from_u128(1)),
        hostname: format!("host-{n}"),
        version: "1.0.0".into(),
        flavour: ImageFlavour::Full,
        tags: Selectors::new(),
        task_types: vec![task_type("shell")],
        capacity: Capacity::default(),
        active_tasks: 0,
        registered_at: now() - Duration::hours(1),
        last_heartbeat_at: now(),
        connected: true,
        paused: None,
        draining: false,
        max_tasks: None,
        tasks_taken: 0,
    }
}

pub(super) fn capacity(n: u32) -> Capacity {
    Capacity::new(n).expect("valid capacity")
}

pub(super) fn tcp(host: &str) -> Capability {
    Capability::tcp(host, 5432).expect("valid capability")
}

/// What `instance` found for `capability`, `age` ago.
pub(super) fn result(
    instance: InstanceId,
    capability: &Capability,
    reachable: bool,
    age: Duration,
) -> CapabilityResult {
    CapabilityResult {
        instance_id: instance,
        basis: capability.basis(),
        reachable,
        detail: if reachable {
            "connected".into()
        } else {
            "connection refused".into()
        },
        checked_at: now() - age,
    }
}
