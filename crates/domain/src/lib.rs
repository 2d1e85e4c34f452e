//! Switchboard's domain: the types docs/rules.md names and the rules between them.
//!
//! This crate is pure: no I/O, no async, no SQL. Everything arriving from outside (HTTP
//! bodies, rows) is parsed into these types once, at the edge; past that line nothing
//! re-checks. The stores persist these types and the server speaks them.

#![forbid(unsafe_code)]

pub mod audit;
pub mod auth;
pub mod capability;
pub mod connector;
pub mod delegate;
pub mod duration;
pub mod engine;
pub mod fair;
pub mod ident;
pub mod ids;
pub mod policy;
pub mod secret;
pub mod selection;
pub mod selector;
pub mod task;
pub mod tasklog;
pub mod vault;

pub use audit::AuditEntry;
pub use auth::{ApiKey, Denied, Permission, Permissions};
pub use capability::{Capability, CapabilityBasis, CapabilityResult, ResultTtl};
pub use connector::{Connector, LastSuccess};
pub use delegate::{
    Capacity, Declaration, DelegateGroup, DelegateInstance, DelegateToken, ImageFlavour, JitGrant, Liveness, Pause,
    TokenStatus,
};
pub use ident::{Ident, Scope, ScopeLevel};
pub use ids::{ApiKeyId, ConnectorId, GroupId, InstanceId, SecretId, TaskId, TokenId};
pub use secret::{Secret, SecretHash, SecretKind};
pub use selection::{Rule, SelectionKind, SelectionLogEntry};
pub use selector::{Selector, Selectors};
pub use task::{
    Attempt, Failure, FailureReason, Idempotency, InvalidTransition, NewTask, Task, TaskAttempt, TaskEvent, TaskState,
    TaskType, transition,
};
