//! The operator's view of delegates: `/api/v1/delegates`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{GroupId, Ident, ImageFlavour, InstanceId, Liveness, Pause, Selector, TaskType, TokenId};

/// A delegate group with its instances.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegateView {
    pub id: GroupId,
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    pub tags: Vec<Selector>,
    pub disabled: bool,
    pub created_at: DateTime<Utc>,
    /// Present when an operator declared this delegate ahead of any instance (a pool): it
    /// stays, at zero instances too, and tasks it fits wait for it instead of failing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub declared: Option<DeclarationView>,
    /// Present while an operator's pause of the whole delegate holds: none of its
    /// instances takes a new task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    pub instances: Vec<InstanceView>,
}

/// `POST /api/v1/delegates/{id}/pause` (and `.../instances/{instance_id}/pause`): no new
/// task until it is resumed, or until the pause ends by itself. What runs goes on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct PauseRequest {
    /// Why, for whoever looks next: 1 to 500 characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 500))]
    pub note: String,
    /// When the pause ends by itself (RFC 3339, in the future). At most one of `until`
    /// and `for`; neither: it holds until resumed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
    /// How long the pause holds, as a duration (`90s`, `30m`, `4h`; at most 30 days).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub duration: Option<String>,
}

/// `POST /api/v1/delegates/{id}/jit`: mints a single-use registration credential.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MintJit {
    /// How long the credential can register, as a duration (`10m`, `1h`): 1 minute to
    /// 24 hours; 1 hour when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in: Option<String>,
}

/// The answer to `POST /api/v1/delegates/{id}/jit`. The credential is shown once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JitCredential {
    /// The credential's id: the `token_id` of the instance it registers.
    pub id: TokenId,
    pub group_id: GroupId,
    /// The delegate's name, which the instance registers under.
    pub name: Ident,
    pub expires_at: DateTime<Utc>,
    /// A delegate token (`sbd_...`) that registers one instance of this delegate, once,
    /// before `expires_at`; that instance takes one task, then is told to exit.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub token: switchboard_domain::Secret,
    /// The same, with the manager's URL and the delegate's name, for the reference
    /// delegate's `--jit-config`: base64 (URL-safe, unpadded) of
    /// `{"url": ..., "token": ..., "name": ...}`.
    pub jit_config: String,
}

/// What an operator declared of a pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeclarationView {
    /// The task types its instances will run; empty: any.
    pub task_types: Vec<TaskType>,
    /// How many instances it may grow to, if the operator said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
}

/// `POST /api/v1/delegates`: declares a delegate (a pool of instances an autoscaler grows
/// and shrinks) before any instance registers. Registrations with its name in its scope
/// join it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct DeclareDelegate {
    /// Unique in the delegate's scope.
    pub name: Ident,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// The group's tags: every instance offers them.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SelectorInput>))]
    pub tags: Vec<String>,
    /// The task types its instances will run (at most 64); empty: any.
    #[serde(default)]
    pub task_types: Vec<TaskType>,
    /// How many instances it may grow to: 1 to 100000.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 100000))]
    pub max_instances: Option<u32>,
}

/// One running process of a delegate, as an operator sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InstanceView {
    pub id: InstanceId,
    pub hostname: String,
    pub version: String,
    pub flavour: ImageFlavour,
    pub state: Liveness,
    pub last_heartbeat_at: DateTime<Utc>,
    /// Milliseconds since the last heartbeat, as of the answer.
    pub heartbeat_age_ms: i64,
    /// Tasks assigned to or running on it.
    pub load: u32,
    pub capacity: u32,
    /// The instance's own tags.
    pub tags: Vec<Selector>,
    /// Everything a task can select it by: group tags, own tags, group name, hostname, id.
    pub selectors: Vec<Selector>,
    pub task_types: Vec<TaskType>,
    pub token_id: TokenId,
    /// The token's name, when the token still exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_name: Option<Ident>,
    pub registered_at: DateTime<Utc>,
    /// Present while an operator's pause of this instance holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<Pause>,
    /// The delegate said it is stopping: it takes nothing new and finishes what it runs.
    pub draining: bool,
    /// For a single-use instance, how many tasks it takes in its life (1 for one
    /// registered with a JIT credential), and how many it has taken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
    pub tasks_taken: u32,
    /// Whether it takes new tasks now: not paused (nor its delegate), not draining, not a
    /// spent single-use instance, and its delegate not disabled.
    pub accepting: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DelegateList {
    pub items: Vec<DelegateView>,
}

/// `PUT /api/v1/delegates/{id}/tags`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetTags {
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SelectorInput>))]
    pub tags: Vec<String>,
}

/// `GET /api/v1/delegates/{id}/demand`: what an autoscaler needs to size this delegate.
/// KEDA's metrics-api scaler reads `desired_instances` with a target of 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Demand {
    pub id: GroupId,
    pub name: Ident,
    /// Queued tasks this delegate could take (scope, selectors and type fit it or one of
    /// its instances), whatever the liveness of its instances. At most `queued_limit`
    /// are read; `queued_truncated` says when there were more.
    pub queued: u64,
    pub queued_truncated: bool,
    /// How long the oldest of them has waited, in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_queued_age_ms: Option<i64>,
    /// Tasks assigned to or running on its instances.
    pub active: u64,
    /// Registered instances, and those connected now.
    pub instances: u32,
    pub connected: u32,
    /// Free task slots on its connected instances.
    pub free_slots: u64,
    /// Tasks one instance runs at once: the largest capacity among its instances, else
    /// the default (10).
    pub capacity_per_instance: u32,
    /// Enough instances of that capacity for what is active and queued (only what is
    /// active, while the delegate is disabled), at most the declared `max_instances`; 0
    /// when there is nothing to do.
    pub desired_instances: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_instances: Option<u32>,
}

/// `GET /api/v1/queue`: the waiting tasks as a whole, grouped by what holds them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueSummary {
    /// Every queued task the filters match.
    pub waiting: u64,
    /// `412 tasks waiting: 300 lack selectors [gpu], 100 wait on capacity of k8s-prod
    /// (10/10 busy), 12 wait for a capability check`.
    pub summary: String,
    /// The groups of tasks placement cannot tell apart that were decided (one engine
    /// decision each), and whether there were more than the 1,000 largest: then the
    /// tasks of the rest count in `waiting` but in no reason.
    pub shapes: u32,
    pub shapes_truncated: bool,
    /// Largest first.
    pub reasons: Vec<QueueReason>,
}

/// The tasks one reason holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueReason {
    /// What holds them: `placing` (a delegate can take them now), `validating` (the
    /// chosen delegate checks a capability first), `no_delegates` (none in the account),
    /// `scaled_to_zero` (a declared pool fits, with no instance that can take them), or
    /// the rejection that the delegates closest to taking them have: `disabled`,
    /// `out_of_scope`, `lacks_selectors`, `unsupported_task_type`, `disconnected`,
    /// `stale_heartbeat`, `paused`, `draining`, `spent`, `at_capacity`, `already_tried`,
    /// `capability_unreachable`; or, before any delegate is asked, `limited` (their
    /// concurrency key is at its limit) or `retrying` (waiting out a retry's backoff).
    pub reason: String,
    pub tasks: u64,
    /// How long the oldest of them has waited.
    pub oldest_queued_age_ms: i64,
    /// One line, e.g. `100 wait on capacity of k8s-prod (10/10 busy)`.
    pub line: String,
    /// The delegates concerned: those at capacity, paused, the pools scaled to zero...
    pub delegates: Vec<Ident>,
    /// For `lacks_selectors`: the selectors the delegates lack; for
    /// `capability_unreachable`, `validating`: the capabilities; for `limited`: the key.
    pub listed: Vec<String>,
    /// A few of the tasks (the oldest and newest of each group), to look at.
    pub sample_task_ids: Vec<switchboard_domain::TaskId>,
    /// The engine's summary line for the largest group of them.
    pub explanation: String,
}

/// `GET /api/v1/queue/history`: the last hour of the queue, interval by interval.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct QueueHistory {
    /// The length of each interval (the manager's `history_interval`).
    pub interval_ms: u64,
    /// Oldest first, at most an hour's worth.
    pub points: Vec<HistoryPoint>,
}

/// One interval of the queue's history, summed over the scopes the key sees.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HistoryPoint {
    /// The interval's start.
    pub at: DateTime<Utc>,
    /// Tasks queued, and assigned or running, at the interval's last sample; absent when
    /// it was not sampled (yet).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running: Option<u64>,
    /// Tasks this replica assigned in the interval, and how long they had waited: the
    /// upper bound of the bucket (5 ms to 1 h) that holds each percentile.
    pub assigned: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_p50_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_p95_ms: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait_p99_ms: Option<f64>,
}
