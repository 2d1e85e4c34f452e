//! The one error type of every store.

use switchboard_domain::{Attempt, InvalidTransition, TaskState};

/// Why a store call failed. Backends map their driver errors into this in one place
/// (each backend's `map_err`), so the server never inspects driver errors.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// The named thing does not exist (or is outside what the caller may see).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// The request conflicts with what is stored; nothing was changed.
    #[error(transparent)]
    Conflict(#[from] Conflict),
    /// The database cannot be reached or refused the connection; retrying later may work.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// Anything else: a bug, a corrupt row, a failed migration. Logged, never shown.
    #[error("store error: {0}")]
    Internal(String),
}

/// The ways a write can conflict with stored state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Conflict {
    /// A unique name is already taken (a token name in its account, a connector name in
    /// its scope...).
    #[error("{what} {name:?} already exists")]
    Duplicate { what: &'static str, name: String },
    /// A report named an attempt that is no longer current (fencing).
    #[error("attempt {presented} is not the current attempt ({current}) of this task")]
    StaleAttempt { presented: Attempt, current: Attempt },
    /// A delegate reported on an attempt that is current but not assigned to it.
    #[error("attempt {attempt} of this task is not assigned to this instance (the task is {state})")]
    NotHolder { attempt: Attempt, state: TaskState },
    /// The state machine refuses the change.
    #[error(transparent)]
    Transition(#[from] InvalidTransition),
    /// An `Idempotency-Key` reused with a different request body.
    #[error("idempotency key {0:?} was used before with a different request")]
    IdempotencyMismatch(String),
    /// The task is not in a state this operation applies to.
    #[error("the task is {0}")]
    TaskState(TaskState),
    /// Someone else changed it between the caller's read and its write; read it again.
    #[error("the {0} was changed meanwhile; read it again and retry")]
    Changed(&'static str),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// A task-log append's refusal as the conflict every backend answers with: the same as a
/// report of that attempt would get.
pub fn append_refused(presented: Attempt, refused: switchboard_domain::tasklog::AppendRefused) -> StoreError {
    use switchboard_domain::tasklog::AppendRefused;
    match refused {
        AppendRefused::Stale { current } => Conflict::StaleAttempt { presented, current }.into(),
        AppendRefused::NotHolder { state } => Conflict::NotHolder {
            attempt: presented,
            state,
        }
        .into(),
    }
}
