//! The delegate's HTTPS API: registration.

use serde::{Deserialize, Serialize};
use switchboard_domain::{GroupId, Ident, ImageFlavour, InstanceId, Secret, TaskType};

/// `POST /delegate/v1/register`, with the delegate token as bearer credential.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterRequest {
    /// The delegate (group) to create or join.
    pub name: Ident,
    /// 1 to 253 characters (after trimming), no control characters.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
    pub hostname: String,
    /// 1 to 64 characters (after trimming), no control characters; compared with the
    /// manager's `min_delegate_version` when one is set.
    #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 64))]
    pub version: String,
    #[serde(default = "default_flavour")]
    pub flavour: ImageFlavour,
    /// The instance's own tags (raw; the server normalizes them).
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(value_type = Vec<crate::schema::SelectorInput>))]
    pub tags: Vec<String>,
    /// At most 64.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(max_items = 64))]
    pub task_types: Vec<TaskType>,
    /// Parallel tasks; 10 when absent.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 10_000))]
    pub capacity: Option<u32>,
    /// A narrower scope than the token's, never a wider one. The account is always the
    /// token's.
    #[serde(default)]
    pub org: Option<Ident>,
    #[serde(default)]
    pub project: Option<Ident>,
    /// Makes the instance single-use: it takes this many tasks in its life (1 to 1000),
    /// then, once they ended, is told to exit and is removed. Absent: no limit. An instance
    /// registered with a JIT credential takes 1 whatever this says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub max_tasks: Option<u32>,
}

/// The most tasks a single-use instance may ask to take (`max_tasks`).
pub const MAX_TASKS_LIMIT: u32 = 1000;

fn default_flavour() -> ImageFlavour {
    ImageFlavour::Full
}

/// The answer to a registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Registered {
    pub instance_id: InstanceId,
    pub group_id: GroupId,
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// The instance's own credential for the socket and the task endpoints. Shown once.
    // A `Secret`: `Debug` masks it; on the wire it is the plain string.
    #[cfg_attr(feature = "openapi", schema(value_type = String))]
    pub session_token: Secret,
    pub heartbeat_interval_ms: u64,
    /// Where to open the socket, e.g. `ws://manager:8080/delegate/v1/stream`.
    pub stream_url: String,
    /// Set for a single-use instance: how many tasks it takes in its life. After them it
    /// exits (the manager also says so, with `drain` and close code 4004).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_tasks: Option<u32>,
}

/// `POST /delegate/v1/tasks/{id}/acquire`: the instance takes the attempt it was offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Acquire {
    pub attempt: switchboard_domain::Attempt,
}

/// The answer to an acquire: what to run. The payload travels only here, over HTTPS.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AcquiredTask {
    pub task_id: switchboard_domain::TaskId,
    pub attempt: switchboard_domain::Attempt,
    pub task_type: TaskType,
    pub payload: serde_json::Value,
    pub execution_timeout_ms: u64,
    /// The secrets the task names, with their values (or where to find them): sent to
    /// this instance only, here. Mask them in anything reported back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<crate::secrets::DeliveredSecret>,
}

/// `POST /delegate/v1/tasks/{id}/progress`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub attempt: switchboard_domain::Attempt,
    pub progress: serde_json::Value,
}

/// `POST /delegate/v1/tasks/{id}/logs`: a chunk of what the attempt printed. `offset` is
/// the byte offset of the chunk's first byte in the attempt's output (UTF-8), so a chunk
/// sent again is kept once and chunks that arrive out of order are read in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct LogAppendBody {
    pub attempt: switchboard_domain::Attempt,
    pub offset: u64,
    /// At most 256 KiB of UTF-8 text; not empty.
    pub text: String,
}

/// The answer to a log append.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogAppended {
    pub task_id: switchboard_domain::TaskId,
    pub attempt: switchboard_domain::Attempt,
    pub offset: u64,
    /// `stored`, or `already_stored` for a chunk sent before (nothing changed).
    pub outcome: switchboard_domain::tasklog::Appended,
    /// Where the next chunk of this attempt starts.
    pub next_offset: u64,
}

/// How a run ended, as the delegate reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Succeeded,
    Failed,
}

/// `POST /delegate/v1/tasks/{id}/result`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct TaskResult {
    pub attempt: switchboard_domain::Attempt,
    pub outcome: Outcome,
    /// What the task produced (JSON, at most 1 MiB).
    #[serde(default)]
    pub result: Option<serde_json::Value>,
    /// With `failed`: what went wrong, for people.
    #[serde(default)]
    pub error: Option<String>,
    /// With `failed`: a code for what went wrong (letters, digits and `. _ - : / @`, at
    /// most 128 bytes), which a task's retry policy may name in `error_codes`.
    #[serde(default)]
    pub error_code: Option<String>,
    /// With `failed`: `false` when running the task again cannot help; then it is not
    /// retried whatever its policy (default true).
    #[serde(default)]
    pub retryable: Option<bool>,
}

/// The answer to progress and result reports: where the task stands now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TaskStatus {
    pub task_id: switchboard_domain::TaskId,
    pub attempt: switchboard_domain::Attempt,
    pub state: switchboard_domain::TaskState,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_registration_answer_carries_the_session_credential_but_never_prints_it() {
        let wire = serde_json::json!({
            "instance_id": InstanceId::new(),
            "group_id": GroupId::new(),
            "account": "acme",
            "session_token": "sbs_0123456789abcdef",
            "heartbeat_interval_ms": 60000,
            "stream_url": "ws://manager/delegate/v1/stream",
        });
        let registered: Registered = serde_json::from_value(wire.clone()).unwrap();
        assert_eq!(registered.session_token.expose(), "sbs_0123456789abcdef");
        assert_eq!(
            serde_json::to_value(&registered).unwrap(),
            wire,
            "the wire form is unchanged"
        );
        assert!(
            !format!("{registered:?}").contains("0123456789abcdef"),
            "Debug printed the session credential"
        );
    }
}
