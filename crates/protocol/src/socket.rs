//! The delegate socket protocol, version 1 (documented in `docs/protocol.md`).
//!
//! Every frame is one JSON text message with a `type` field. The socket carries
//! notifications and heartbeats only: task payloads and results always travel over HTTPS.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::{Attempt, Capability, CapabilityBasis, InstanceId, TaskId};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 1;

/// The largest frame either side accepts, in bytes. Heartbeats list at most a few
/// thousand running tasks; anything larger is a bug or an attack.
pub const MAX_FRAME_BYTES: usize = 256 * 1024;

/// WebSocket close codes the manager uses, with a reason string beside each.
pub mod close {
    /// The server is shutting down or draining: reconnect (elsewhere).
    pub const GOING_AWAY: u16 = 1001;
    /// A frame was not valid JSON of a known message (RFC 6455: inconsistent data).
    pub const INVALID_MESSAGE: u16 = 1007;
    /// A binary frame, or a text frame the protocol does not allow here.
    pub const UNSUPPORTED: u16 = 1003;
    /// A frame larger than [`super::MAX_FRAME_BYTES`].
    pub const TOO_BIG: u16 = 1009;
    /// Nothing was heard from the delegate for the silence limit (45 s).
    pub const SILENT: u16 = 4000;
    /// The same instance connected again; this older socket is replaced.
    pub const REPLACED: u16 = 4001;
    /// The token the instance registered with was revoked: do not reconnect.
    pub const TOKEN_REVOKED: u16 = 4002;
    /// The instance or its group was deleted: register again to come back.
    pub const REMOVED: u16 = 4003;
}

/// A task an instance reports as running, with the attempt it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RunningTask {
    pub task_id: TaskId,
    pub attempt: Attempt,
}

/// One capability check's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CheckResult {
    pub basis: CapabilityBasis,
    pub reachable: bool,
    /// What the check saw: a status line, an error message.
    #[serde(default)]
    pub detail: String,
}

/// Messages from the manager to a delegate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ServerMessage {
    /// The first frame on every socket.
    Hello {
        protocol: u32,
        instance_id: InstanceId,
        heartbeat_interval_ms: u64,
        server_time: DateTime<Utc>,
    },
    /// A task was assigned to this instance: acquire it over HTTPS with this attempt.
    TaskAvailable { task_id: TaskId, attempt: Attempt },
    /// Check these capabilities from where you run and answer with `validation_result`.
    Validate {
        request_id: String,
        capabilities: Vec<Capability>,
    },
    /// Stop running this task attempt.
    CancelTask { task_id: TaskId, attempt: Attempt },
    /// Finish what you run, take nothing new, and reconnect (to another manager).
    Drain { reason: String },
    /// The instance's token was revoked; the socket closes right after.
    Revoked { reason: String },
}

/// Messages from a delegate to the manager.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum DelegateMessage {
    /// I am alive; these are the tasks I run.
    Heartbeat {
        #[serde(default)]
        running: Vec<RunningTask>,
    },
    /// The answer to a `validate`.
    ValidationResult {
        request_id: String,
        results: Vec<CheckResult>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_tagged_by_type() {
        let m: DelegateMessage = serde_json::from_str(r#"{"type":"heartbeat","running":[]}"#).expect("valid");
        assert_eq!(m, DelegateMessage::Heartbeat { running: vec![] });
        let hello = ServerMessage::Drain {
            reason: "shutting down".into(),
        };
        assert_eq!(
            serde_json::to_value(&hello).expect("serializes"),
            serde_json::json!({"type": "drain", "reason": "shutting down"})
        );
    }

    #[test]
    fn unknown_messages_and_fields_are_refused() {
        assert!(serde_json::from_str::<DelegateMessage>(r#"{"type":"launch_missiles"}"#).is_err());
        assert!(serde_json::from_str::<DelegateMessage>(r#"{"type":"heartbeat","extra":1}"#).is_err());
        assert!(serde_json::from_str::<DelegateMessage>(r#"{"running":[]}"#).is_err());
    }
}
