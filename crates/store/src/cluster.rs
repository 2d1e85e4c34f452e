//! Signals between manager replicas that share one store.
//!
//! Each replica holds only its own delegate sockets and long-poll waiters, so whatever one
//! replica decides that another must act on (push an offer or a cancel to a socket it
//! holds, wake the long polls of a task, close the sockets of a revoked token) travels as
//! a [`ClusterEvent`]. The store carries them because it is the one thing every replica
//! shares: PostgreSQL with `LISTEN/NOTIFY`, SQLite not at all (one manager per file).
//!
//! Signals are hints, never the truth: a replica that misses one (its listening connection
//! dropped) still converges through the periodic sweeps, because everything a signal
//! announces is also in the store.

use std::pin::Pin;

use futures_core::Stream;
use serde::{Deserialize, Serialize};
use switchboard_domain::{Attempt, GroupId, InstanceId, TaskId, TokenId};

/// One signal for the other replicas.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum ClusterEvent {
    /// The task was claimed for `instance` as `attempt`: whichever replica holds the
    /// instance's socket sends it `task_available`.
    TaskAvailable {
        instance: InstanceId,
        task: TaskId,
        attempt: Attempt,
    },
    /// The task changed state: wake its long polls everywhere.
    TaskChanged { task: TaskId },
    /// The task's log grew: wake the readers following it everywhere.
    TaskLog { task: TaskId },
    /// Something may let a queued task be placed: run placement everywhere.
    Wake,
    /// Close the sockets of a token or a group, with this close code and reason.
    CloseSockets {
        target: SocketTarget,
        code: u16,
        reason: String,
    },
    /// The task was cancelled or timed out: whichever replica holds the instance's socket
    /// sends it `cancel_task`.
    Cancel {
        instance: InstanceId,
        task: TaskId,
        attempt: Attempt,
    },
}

/// Which sockets a [`ClusterEvent::CloseSockets`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SocketTarget {
    /// Every socket registered with this delegate token (it was revoked).
    Token(TokenId),
    /// Every socket of this delegate group (it was deleted).
    Group(GroupId),
    /// The socket of this instance (a single-use instance was retired).
    Instance(InstanceId),
}

/// What a replica hears from the others.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum ClusterSignal {
    /// Events published together by the replica `origin` (see
    /// [`crate::Replicas::publish`]), in order.
    Events {
        origin: uuid::Uuid,
        events: Vec<ClusterEvent>,
    },
    /// The listening connection broke: until [`ClusterSignal::Resync`], signals from
    /// the other replicas are not heard (the replica says so in `/readyz`).
    Lost,
    /// The listening connection was lost and is back: signals may have been missed
    /// meanwhile, so the listener should re-examine what it can (placement, long polls,
    /// sockets of tokens revoked or groups deleted elsewhere).
    Resync,
}

/// The signals of the other replicas, until the stream is dropped. It never ends by
/// itself: a lost connection is re-established inside and reported as
/// [`ClusterSignal::Resync`].
pub type ClusterSignals = Pin<Box<dyn Stream<Item = ClusterSignal> + Send>>;
