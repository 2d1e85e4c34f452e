//! [`Workers`]: background tasks that start together and stop together.
//!
//! The dispatcher's loops, the delegate side's periodic work and the replicas'
//! signalling each run a few tasks for as long as the manager runs. Each task gets the
//! stop token and returns soon after it is cancelled; [`Workers::stop`] cancels it and
//! waits for every task to have returned, so nothing is left writing after `run` ends.

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A set of background tasks sharing one stop token.
#[derive(Debug, Default)]
pub struct Workers {
    stop: CancellationToken,
    tracker: TaskTracker,
}

impl Workers {
    /// Spawns `work`, handing it the stop token.
    pub fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(CancellationToken) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(work(self.stop.clone()));
    }

    /// Spawns a task that runs `work` every `period` (the first at once) until the stop,
    /// which never cuts a run short. A run that overruns its period delays the next one
    /// rather than starting a burst to catch up.
    pub fn every<F, Fut>(&self, period: Duration, work: F)
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        self.spawn(move |stop| async move {
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = ticker.tick() => work().await,
                    () = stop.cancelled() => return,
                }
            }
        });
    }

    /// Cancels the stop token and waits until every task has returned.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test]
    async fn stop_returns_once_every_task_has_seen_the_token_and_returned() {
        let workers = Workers::default();
        let finished = Arc::new(AtomicUsize::new(0));
        for _ in 0..3 {
            let finished = finished.clone();
            workers.spawn(|stop| async move {
                stop.cancelled().await;
                // Work done after the stop is seen still counts: stop waits for it.
                tokio::task::yield_now().await;
                finished.fetch_add(1, Ordering::SeqCst);
            });
        }
        workers.stop().await;
        assert_eq!(finished.load(Ordering::SeqCst), 3);
    }
}
