//! A task's log: what its attempts printed, appended by the delegate that runs them in
//! chunks and read back by anyone who may view the task (docs/rules.md, "Task logs").
//!
//! A chunk sits at a [`LogPosition`]: the attempt that printed it and the byte offset of
//! its first byte in that attempt's output. The position is the chunk's identity, so a
//! chunk sent twice (a retried request) is kept once, and chunks that arrive out of order
//! are read back in order.
//!
//! A task keeps at most a bounded number of bytes. The first half of the bound is the
//! *head*, kept for good; past it, the newest chunks are the *tail*, and when the bound is
//! reached the oldest tail chunks are cut. One marker chunk stands where the cut began and
//! counts the bytes cut, so a reader sees the head, `[... N bytes cut ...]`, and the tail.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{InstanceId, TaskId};
use crate::task::{Attempt, TaskState};

/// The most text one append may carry, in bytes of UTF-8.
pub const CHUNK_MAX_BYTES: usize = 256 * 1024;

/// The most chunks one read returns (a page ends at whichever of this and its byte limit
/// comes first).
pub const PAGE_CHUNKS: usize = 1000;

/// The default bound of a task's log, in bytes (the setting `task_log_max_bytes`).
pub const DEFAULT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// The smallest bound a manager accepts: the largest chunk, twice (a head and a tail).
pub const MIN_MAX_BYTES: u64 = 2 * CHUNK_MAX_BYTES as u64;

/// Where a chunk sits: the attempt that printed it, then its first byte's offset in that
/// attempt's output. Ordered attempt first, so a task's log reads attempt by attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogPosition {
    pub attempt: Attempt,
    pub offset: u64,
}

impl Default for LogPosition {
    /// The start of a task's log: the first byte of its first attempt.
    fn default() -> Self {
        LogPosition {
            attempt: Attempt(1),
            offset: 0,
        }
    }
}

/// One stored piece of a task's log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LogChunk {
    #[serde(flatten)]
    pub at: LogPosition,
    /// What was printed (empty for a cut marker).
    pub text: String,
    /// When the manager stored it.
    pub stored_at: DateTime<Utc>,
    /// On the cut marker only: how many bytes were cut here to keep the log within its
    /// bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cut_bytes: Option<u64>,
}

impl LogChunk {
    /// Where a reader continues after this chunk.
    pub fn next(&self) -> LogPosition {
        let len = if self.cut_bytes.is_some() {
            // A marker stands in for what was cut; nothing else starts at its position.
            1
        } else {
            self.text.len() as u64
        };
        LogPosition {
            attempt: self.at.attempt,
            offset: self.at.offset.saturating_add(len.max(1)),
        }
    }
}

/// An append a delegate asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogAppend {
    pub task: TaskId,
    pub instance: InstanceId,
    pub at: LogPosition,
    pub text: String,
    pub stored_at: DateTime<Utc>,
    /// The bound of the task's log, in bytes.
    pub max_bytes: u64,
}

/// What an append did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Appended {
    /// The chunk is stored (possibly cutting older tail chunks).
    Stored,
    /// A chunk at that position was stored before (a retried request): nothing changed.
    AlreadyStored,
}

/// Why an append is refused: the same fences as every report of a delegate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendRefused {
    /// The attempt is not the task's current attempt.
    Stale { current: Attempt },
    /// The attempt is current but not this instance's, or the task is not running it.
    NotHolder { state: TaskState },
}

/// Whether an append for `attempt` by `instance` may be stored, given the task's current
/// attempt, holder and state: only the holder of the current attempt, while it is
/// assigned or running, appends.
pub fn check_append(
    attempt: Attempt,
    instance: InstanceId,
    current: Attempt,
    holder: Option<InstanceId>,
    state: TaskState,
) -> Result<(), AppendRefused> {
    if attempt != current {
        return Err(AppendRefused::Stale { current });
    }
    let active = matches!(state, TaskState::Assigned | TaskState::Running);
    if holder != Some(instance) || !active {
        return Err(AppendRefused::NotHolder { state });
    }
    Ok(())
}

/// Whether a chunk arriving when `received` bytes were received for the task before it
/// (kept and cut alike) belongs to the head, which is never cut.
pub fn is_head(received: u64, max_bytes: u64) -> bool {
    received < max_bytes / 2
}

/// How many of the oldest tail chunks (their sizes, oldest first) to cut so that `stored`
/// bytes fit within `max_bytes`. Cuts as few as fit; all of them if even that is not
/// enough (the head alone never exceeds half the bound, so that cannot happen with a
/// bound of at least [`MIN_MAX_BYTES`]).
pub fn chunks_to_cut(stored: u64, max_bytes: u64, tail_sizes: &[u64]) -> usize {
    let mut left = stored;
    for (i, size) in tail_sizes.iter().enumerate() {
        if left <= max_bytes {
            return i;
        }
        left = left.saturating_sub(*size);
    }
    tail_sizes.len()
}

/// The line a reader sees where a cut began.
pub fn cut_line(bytes: u64) -> String {
    format!("[... {bytes} bytes cut to keep this log within its bound ...]\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u128) -> InstanceId {
        InstanceId(uuid::Uuid::from_u128(n))
    }

    #[test]
    fn only_the_holder_of_the_current_attempt_appends_while_it_runs() {
        let me = id(1);
        assert_eq!(
            check_append(Attempt(2), me, Attempt(2), Some(me), TaskState::Running),
            Ok(())
        );
        assert_eq!(
            check_append(Attempt(2), me, Attempt(2), Some(me), TaskState::Assigned),
            Ok(())
        );
        assert_eq!(
            check_append(Attempt(1), me, Attempt(2), Some(me), TaskState::Running),
            Err(AppendRefused::Stale { current: Attempt(2) })
        );
        assert_eq!(
            check_append(Attempt(2), me, Attempt(2), Some(id(9)), TaskState::Running),
            Err(AppendRefused::NotHolder {
                state: TaskState::Running
            })
        );
        assert_eq!(
            check_append(Attempt(2), me, Attempt(2), Some(me), TaskState::Succeeded),
            Err(AppendRefused::NotHolder {
                state: TaskState::Succeeded
            })
        );
    }

    #[test]
    fn the_head_is_the_first_half_of_the_bound() {
        assert!(is_head(0, 100));
        assert!(is_head(49, 100));
        assert!(!is_head(50, 100));
    }

    #[test]
    fn cuts_the_fewest_oldest_tail_chunks_that_fit() {
        assert_eq!(chunks_to_cut(100, 100, &[10, 10]), 0);
        assert_eq!(chunks_to_cut(101, 100, &[10, 10]), 1);
        assert_eq!(chunks_to_cut(115, 100, &[10, 10, 10]), 2);
        assert_eq!(chunks_to_cut(200, 100, &[10, 10]), 2);
    }

    #[test]
    fn a_reader_continues_after_a_chunk_or_a_marker() {
        let chunk = LogChunk {
            at: LogPosition {
                attempt: Attempt(1),
                offset: 10,
            },
            text: "héllo\n".into(),
            stored_at: Utc::now(),
            cut_bytes: None,
        };
        assert_eq!(chunk.next().offset, 10 + "héllo\n".len() as u64);
        let marker = LogChunk {
            text: String::new(),
            cut_bytes: Some(500),
            ..chunk
        };
        assert_eq!(marker.next().offset, 11);
    }
}
