//! A one-shot cancellation signal for one running task.
//!
//! The manager can cancel a task attempt at any time (`cancel_task` on the socket), and a
//! drain or shutdown may stop everything. The task runner waits on a [`CancelToken`]
//! beside the work itself; whoever holds the [`Canceller`] fires it. Built on a
//! `tokio::sync::watch` channel rather than a dedicated crate: it is a few lines, and a
//! watch keeps its value, so a token that starts waiting after the cancel still sees it.

use tokio::sync::watch;

/// Fires the cancellation. Dropping it without firing means "never cancelled".
#[derive(Debug)]
pub struct Canceller(watch::Sender<bool>);

/// Waits for the cancellation. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CancelToken(watch::Receiver<bool>);

/// A new, unfired cancellation.
pub fn pair() -> (Canceller, CancelToken) {
    let (tx, rx) = watch::channel(false);
    (Canceller(tx), CancelToken(rx))
}

impl Canceller {
    pub fn cancel(&self) {
        self.0.send_replace(true);
    }
}

impl CancelToken {
    /// A token nobody can fire, for work that is never cancelled.
    pub fn never() -> CancelToken {
        pair().1
    }

    pub fn is_cancelled(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once cancelled; never resolves if the [`Canceller`] is dropped unfired.
    pub async fn cancelled(&self) {
        let mut rx = self.0.clone();
        if rx.wait_for(|fired| *fired).await.is_err() {
            // The canceller is gone without firing: nothing can cancel this any more.
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_token_sees_a_cancel_fired_before_it_waits() {
        let (canceller, token) = pair();
        canceller.cancel();
        assert!(token.is_cancelled());
        token.cancelled().await;
    }

    #[tokio::test]
    async fn a_dropped_canceller_never_cancels() {
        let (canceller, token) = pair();
        drop(canceller);
        let waited = tokio::time::timeout(Duration::from_millis(20), token.cancelled()).await;
        assert!(waited.is_err(), "the token must keep waiting");
        assert!(!token.is_cancelled());
    }
}
