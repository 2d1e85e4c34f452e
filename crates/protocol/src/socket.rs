//! The delegate socket protocol, version 1 (documented in `docs/protocol.md`).
//!
//! Every frame is one JSON text message with a `type` field. The socket carries
//! notifications and heartbeats only: task payloads and results always travel over HTTPS.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
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
    /// A single-use instance ran its tasks and was removed: exit, do not register again.
    pub const RETIRED: u16 = 4004;
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
///
/// `Deserialize` is written out (below) rather than derived: serde reads an internally
/// tagged enum's variant from a buffer of its own, where [`Strict`](crate::strict::Strict)
/// cannot see it, and the manager refuses an array in place of any object of a frame
/// (`running[0]`, `results[0]`) as it does in HTTP bodies.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
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
    /// I am stopping: offer me nothing more; I finish what I run, then go. A task offered
    /// just before and not yet acquired is given back at once, for another instance.
    Draining {
        /// Why, for the manager's log (`SIGTERM`, `maintenance`); may be empty.
        #[serde(default)]
        reason: String,
    },
}

/// [`DelegateMessage`] as serde derives it externally tagged (`{"heartbeat": {...}}`), so
/// that every struct in it is read through [`Strict`](crate::strict::Strict).
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum DelegateWire {
    Heartbeat {
        #[serde(default)]
        running: Vec<RunningTask>,
    },
    ValidationResult {
        request_id: String,
        results: Vec<CheckResult>,
    },
    Draining {
        #[serde(default)]
        reason: String,
    },
}

impl<'de> Deserialize<'de> for DelegateMessage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        use serde_json::{Map, Value};
        let mut object = Map::deserialize(deserializer)?;
        let tag = match object.remove("type") {
            Some(Value::String(tag)) => tag,
            Some(_) => return Err(D::Error::custom("`type` must be a string")),
            None => return Err(D::Error::missing_field("type")),
        };
        let external = Value::Object(Map::from_iter([(tag.clone(), Value::Object(object))]));
        let wire = serde_path_to_error::deserialize(crate::strict::Strict::new(external, true)).map_err(|e| {
            // The path starts with the variant, which the frame spells as its `type`.
            let path = e.path().to_string();
            let path = path.strip_prefix(&tag).unwrap_or(&path).trim_start_matches('.');
            match path {
                "" | "?" => D::Error::custom(e.into_inner()),
                _ => D::Error::custom(format_args!("at {path}: {}", e.into_inner())),
            }
        })?;
        Ok(match wire {
            DelegateWire::Heartbeat { running } => DelegateMessage::Heartbeat { running },
            DelegateWire::ValidationResult { request_id, results } => {
                DelegateMessage::ValidationResult { request_id, results }
            }
            DelegateWire::Draining { reason } => DelegateMessage::Draining { reason },
        })
    }
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
        assert!(serde_json::from_str::<DelegateMessage>(r#"["heartbeat",[]]"#).is_err());
    }

    #[test]
    fn an_array_for_a_nested_object_is_refused_naming_where() {
        let running = r#"{"type":"heartbeat","running":[["00000000-0000-0000-0000-000000000000",1]]}"#;
        let error = serde_json::from_str::<DelegateMessage>(running).expect_err("an array for a task");
        assert!(
            error.to_string().contains("at running[0]: an array where an object"),
            "{error}"
        );
        let valid =
            r#"{"type":"validation_result","request_id":"r","results":[{"basis":"tcp:db:1","reachable":true}]}"#;
        assert!(serde_json::from_str::<DelegateMessage>(valid).is_ok());
    }
}
