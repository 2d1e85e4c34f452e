//! A cancellation signal for one running task.
//!
//! The manager can cancel a task attempt at any time (`cancel_task` on the socket), and a
//! drain or shutdown may stop everything. The task runner waits on a [`CancelToken`]
//! beside the work itself; the registry holds its [`Canceller`] and fires it. Both are
//! tokio-util's `CancellationToken` (a token that starts waiting after the cancel still
//! sees it; one nobody fires never resolves), named for the side that holds them.

pub use tokio_util::sync::CancellationToken as CancelToken;

/// The side that fires: a clone of the token it cancels.
pub type Canceller = CancelToken;

/// A new, unfired cancellation: the canceller and the token it fires.
pub fn pair() -> (Canceller, CancelToken) {
    let token = CancelToken::new();
    (token.clone(), token)
}
