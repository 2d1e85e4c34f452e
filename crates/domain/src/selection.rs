//! The selection log: a record, per task and attempt, of every decision about it.
//!
//! The engine (a later part of this crate) fills [`SelectionLogEntry::detail`] with which
//! instances it considered and which [`Rule`] rejected each; the store keeps entries for
//! 30 days and the API shows them to operators asking why a task is where it is.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::TaskId;
use crate::task::Attempt;

/// The assignment rules, in the order they are applied; the first that fails is an
/// instance's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    Enabled,
    Scope,
    Selectors,
    TaskType,
    Liveness,
    /// Taking new tasks: not paused, not draining, not a spent single-use instance.
    Accepting,
    Capacity,
    AlreadyTried,
    Capabilities,
}

/// What kind of event an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum SelectionKind {
    /// The engine evaluated every instance.
    Decision,
    /// The task was assigned to an instance.
    Assigned,
    /// An instance was asked to validate a capability, or answered.
    Validation,
    /// The task went back to the queue.
    Requeued,
    /// The task ended without running (expired, failed to place).
    Ended,
}

impl SelectionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            SelectionKind::Decision => "decision",
            SelectionKind::Assigned => "assigned",
            SelectionKind::Validation => "validation",
            SelectionKind::Requeued => "requeued",
            SelectionKind::Ended => "ended",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Decision,
            Self::Assigned,
            Self::Validation,
            Self::Requeued,
            Self::Ended,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// One entry of a task's selection log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct SelectionLogEntry {
    pub task_id: TaskId,
    /// The attempt the entry belongs to (the next one, for a decision before assignment).
    pub attempt: Attempt,
    pub at: DateTime<Utc>,
    pub kind: SelectionKind,
    /// One line for people, e.g. `0/12 delegates eligible: 5 lack selectors [gpu], ...`.
    pub summary: String,
    /// The structured record (per-instance verdicts, validation answers).
    pub detail: serde_json::Value,
}
