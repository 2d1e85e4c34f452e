//! Delegates: named groups in a scope, their running instances, and the tokens they
//! register with.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ident::{Ident, Scope};
use crate::ids::{GroupId, InstanceId, TokenId};
use crate::selector::{Selector, Selectors};
use crate::task::TaskType;

/// The most task types an instance (at registration) or a declared pool may list.
pub const MAX_TASK_TYPES: usize = 64;

/// The most instances a declared pool may say it grows to.
pub const MAX_POOL_INSTANCES: u32 = 100_000;

/// The default number of tasks an instance runs in parallel.
pub const DEFAULT_CAPACITY: u32 = 10;

/// A delegate: a named group in a scope. Replicas register with the same name to join it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegateGroup {
    pub id: GroupId,
    #[serde(flatten)]
    pub scope: Scope,
    pub name: Ident,
    pub tags: Selectors,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// Set when an operator declared the group ahead of any instance (a pool an autoscaler
    /// grows and shrinks); `None` for a group that registration created. A declared group
    /// stays while it is declared, even at zero instances.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<Declaration>,
    /// An operator paused the whole delegate: none of its instances takes a new task
    /// while the pause holds (see [`Pause::holds_at`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
}

impl DelegateGroup {
    /// Whether this group, as a declared pool, could take a task of `scope`, `task_type`
    /// and (effective) `selectors` once it has an instance (and, if disabled, once it is
    /// enabled again), whatever instances it has now: it is declared, serves the scope,
    /// offers the selectors as its tags or its name, and declares the type (or no type,
    /// which means any). `false` for a group nobody declared.
    pub fn pool_fits(&self, scope: &Scope, task_type: &TaskType, selectors: &Selectors) -> bool {
        let Some(declared) = &self.declared else {
            return false;
        };
        let name = Selector::parse(self.name.as_str()).ok();
        self.scope.contains(scope)
            && selectors
                .iter()
                .all(|s| self.tags.contains(s) || name.as_ref() == Some(s))
            && (declared.task_types.is_empty() || declared.task_types.contains(task_type))
    }
}

/// What an operator says of a pool it declares: the task types its instances will run
/// (what placement can count on before any instance registers) and, optionally, how many
/// instances it may grow to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Declaration {
    pub task_types: Vec<TaskType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
}

/// The longest note a pause may carry, in characters.
pub const MAX_PAUSE_NOTE: usize = 500;

/// An operator's pause of a delegate or of one instance: it takes no new task, and what
/// it runs goes on. It holds until it is lifted or, when it has one, until `until`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Pause {
    /// Why, for whoever looks at the delegate next ("kernel upgrade, back at 14:00").
    pub note: String,
    pub since: DateTime<Utc>,
    /// When it ends by itself; `None` for a pause that holds until it is lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

impl Pause {
    /// Whether the pause still holds at `now`: it has no end, or its end is still ahead.
    pub fn holds_at(&self, now: DateTime<Utc>) -> bool {
        self.until.is_none_or(|until| now < until)
    }
}

/// Which image a delegate runs: `full` ships client tools (kubectl, helm...), `minimal` not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ImageFlavour {
    Full,
    Minimal,
}

impl ImageFlavour {
    pub fn as_str(self) -> &'static str {
        match self {
            ImageFlavour::Full => "full",
            ImageFlavour::Minimal => "minimal",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "full" => Some(ImageFlavour::Full),
            "minimal" => Some(ImageFlavour::Minimal),
            _ => None,
        }
    }
}

/// Capacity of an instance: how many tasks it runs at once. Never zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u32", into = "u32")]
pub struct Capacity(u32);

impl Capacity {
    pub const MAX: u32 = 10_000;

    pub fn new(n: u32) -> Result<Self, String> {
        if n == 0 || n > Self::MAX {
            return Err(format!("capacity must be between 1 and {}, got {n}", Self::MAX));
        }
        Ok(Self(n))
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for Capacity {
    fn default() -> Self {
        Self(DEFAULT_CAPACITY)
    }
}

impl TryFrom<u32> for Capacity {
    type Error = String;
    fn try_from(n: u32) -> Result<Self, Self::Error> {
        Capacity::new(n)
    }
}

impl From<Capacity> for u32 {
    fn from(c: Capacity) -> u32 {
        c.0
    }
}

/// One running process of a delegate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegateInstance {
    pub id: InstanceId,
    pub group_id: GroupId,
    /// The token it registered with: revoking the token disconnects it.
    pub token_id: TokenId,
    pub hostname: String,
    pub version: String,
    pub flavour: ImageFlavour,
    /// The instance's own tags, on top of its group's.
    pub tags: Selectors,
    pub task_types: Vec<TaskType>,
    pub capacity: Capacity,
    /// Tasks assigned to or running on it. Kept by the store in the same transaction as
    /// every assignment and release, so it is exact, not an estimate.
    pub active_tasks: u32,
    pub registered_at: DateTime<Utc>,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Whether a manager holds an open socket for it right now.
    pub connected: bool,
    /// An operator paused this instance (its group may be paused as well).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// The delegate said it is stopping (a `draining` frame): it is offered nothing more,
    /// finishes what it runs and goes away. Never cleared: a new process registers anew.
    #[serde(default)]
    pub draining: bool,
    /// How many tasks it takes in its life: `Some(1)` for a single-use instance (one
    /// registered with a JIT credential, or that asked for `max_tasks`); `None` for no
    /// limit. Once it has taken them and they ended, it is told to exit and removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
    /// How many tasks it was ever assigned (kept by the store with each claim).
    #[serde(default)]
    pub tasks_taken: u32,
}

/// A delegate version, compared by its dotted numeric parts (`1.10.0` > `1.9.3`); a
/// pre-release or build suffix after `-` or `+` is ignored. Missing parts count as zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version(Vec<u64>);

impl Version {
    pub fn parse(s: &str) -> Option<Self> {
        let core = s.trim().trim_start_matches('v').split(['-', '+']).next()?;
        let parts = core
            .split('.')
            .map(|p| p.parse::<u64>().ok())
            .collect::<Option<Vec<_>>>()?;
        (!parts.is_empty() && parts.len() <= 8).then_some(Self(parts))
    }

    /// Whether this version is at least `minimum`.
    pub fn at_least(&self, minimum: &Version) -> bool {
        let n = self.0.len().max(minimum.0.len());
        let part = |v: &Version, i: usize| v.0.get(i).copied().unwrap_or(0);
        (0..n).map(|i| part(self, i).cmp(&part(minimum, i))).find(|o| o.is_ne()) != Some(std::cmp::Ordering::Less)
    }
}

/// Liveness as docs/rules.md defines it ("Delegates").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// Socket open and heartbeat fresh.
    Connected,
    /// Heartbeat older than the heartbeat timeout.
    Stale,
    /// No socket.
    Disconnected,
}

impl DelegateInstance {
    /// The instance's full selector set: group tags, own tags, and the implicit selectors
    /// (group name, hostname, instance id). Selectors that do not parse (a hostname is
    /// free text) are left out rather than failing the whole set.
    pub fn selector_set(&self, group: &DelegateGroup) -> Selectors {
        let mut set = group.tags.clone();
        set.extend(self.tags.iter().cloned());
        let implicit = [group.name.to_string(), self.hostname.clone(), self.id.to_string()];
        set.extend(implicit.iter().filter_map(|s| Selector::parse(s).ok()));
        set
    }

    pub fn liveness(&self, now: DateTime<Utc>, heartbeat_timeout: Duration) -> Liveness {
        if !self.connected {
            Liveness::Disconnected
        } else if now - self.last_heartbeat_at > heartbeat_timeout {
            Liveness::Stale
        } else {
            Liveness::Connected
        }
    }

    pub fn has_free_slot(&self) -> bool {
        self.active_tasks < self.capacity.get()
    }

    /// Whether a single-use instance has taken all the tasks it may ever take.
    pub fn is_spent(&self) -> bool {
        self.max_tasks.is_some_and(|max| self.tasks_taken >= max)
    }

    /// The pause that keeps this instance from new tasks at `now`, its group's or its
    /// own, if one holds; the group's first, as it says more.
    pub fn pause_at<'a>(&'a self, group: &'a DelegateGroup, now: DateTime<Utc>) -> Option<&'a Pause> {
        [group.paused.as_ref(), self.paused.as_ref()]
            .into_iter()
            .flatten()
            .find(|p| p.holds_at(now))
    }
}

/// Whether a delegate token still admits registrations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum TokenStatus {
    Active,
    Revoked,
}

impl TokenStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStatus::Active => "active",
            TokenStatus::Revoked => "revoked",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "active" => Some(TokenStatus::Active),
            "revoked" => Some(TokenStatus::Revoked),
            _ => None,
        }
    }
}

/// A delegate token, as stored: the secret itself is only ever held as a hash.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DelegateToken {
    pub id: TokenId,
    /// Unique in its account.
    pub name: Ident,
    #[serde(flatten)]
    pub scope: Scope,
    pub status: TokenStatus,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set for a JIT credential: a token that registers one single-use instance of one
    /// group, once, before it expires (`POST /api/v1/delegates/{id}/jit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jit: Option<JitGrant>,
}

/// What a JIT credential allows: one registration into `group_id` before `expires_at`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JitGrant {
    pub group_id: GroupId,
    pub expires_at: DateTime<Utc>,
    /// When the registration that used it happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_at: Option<DateTime<Utc>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{GroupId, InstanceId, TokenId};

    fn sel(s: &str) -> Selector {
        Selector::parse(s).expect("valid")
    }

    fn fixture() -> (DelegateGroup, DelegateInstance) {
        let now = Utc::now();
        let group = DelegateGroup {
            id: GroupId::new(),
            scope: Scope::parse_path("acme").expect("valid"),
            name: Ident::parse("K8s-Prod").expect("valid"),
            tags: [sel("linux")].into(),
            disabled: false,
            created_at: now,
            declared: None,
            paused: None,
        };
        let instance = DelegateInstance {
            id: InstanceId::new(),
            group_id: group.id,
            token_id: TokenId::new(),
            hostname: "Node-1.internal".into(),
            version: "1.0.0".into(),
            flavour: ImageFlavour::Full,
            tags: [sel("gpu")].into(),
            task_types: vec![],
            capacity: Capacity::default(),
            active_tasks: 0,
            registered_at: now,
            last_heartbeat_at: now,
            connected: true,
            paused: None,
            draining: false,
            max_tasks: None,
            tasks_taken: 0,
        };
        (group, instance)
    }

    #[test]
    fn selector_set_holds_tags_and_implicit_selectors() {
        let (group, instance) = fixture();
        let set = instance.selector_set(&group);
        for s in ["linux", "gpu", "k8s-prod", "node-1.internal", &instance.id.to_string()] {
            assert!(set.contains(&sel(s)), "missing {s} in {set:?}");
        }
    }

    #[test]
    fn liveness_depends_on_socket_and_heartbeat_age() {
        let (_, mut i) = fixture();
        let timeout = Duration::minutes(5);
        let now = i.last_heartbeat_at + Duration::minutes(1);
        assert_eq!(i.liveness(now, timeout), Liveness::Connected);
        assert_eq!(
            i.liveness(i.last_heartbeat_at + Duration::minutes(6), timeout),
            Liveness::Stale
        );
        i.connected = false;
        assert_eq!(i.liveness(now, timeout), Liveness::Disconnected);
    }

    #[test]
    fn versions_compare_by_numeric_parts() {
        let v = |s: &str| Version::parse(s).expect("valid version");
        assert!(v("1.10.0").at_least(&v("1.9.3")));
        assert!(!v("1.9.3").at_least(&v("1.10")));
        assert!(v("2").at_least(&v("2.0.0")) && v("2.0.0").at_least(&v("2")));
        assert!(v("24.03.82600-rc1").at_least(&v("24.03.82600")));
        assert!(v("v1.2").at_least(&v("1.2")));
        assert_eq!(Version::parse("latest"), None);
        assert_eq!(Version::parse("1..2"), None);
    }

    #[test]
    fn capacity_is_never_zero() {
        assert!(Capacity::new(0).is_err());
        assert!(serde_json::from_str::<Capacity>("0").is_err());
        assert_eq!(Capacity::default().get(), 10);
    }
}
