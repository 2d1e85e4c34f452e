//! Conformance cases for callers that give up: the server's request timeout, or a client
//! that disconnects, drops a store call's future at whatever `.await` it has reached. That
//! must never leave a pooled connection inside a transaction (the next borrower would run
//! in it, or be refused), and the abandoned write must have happened whole or not at all.
//!
//! The cut is made by polling, not by timers: [`cancel_after`] lets the call run until it
//! has been suspended a given number of times, then drops it. Trying every count from zero
//! until the call finishes on its own cuts it at each of its suspension points. Which
//! suspension is which varies from call to call (whether a pooled connection was free at
//! once, whether the database answered before the first poll), so the sweep is made
//! several times: a dangerous point that one sweep steps over, another lands on.

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::Poll;

use switchboard_domain::{Attempt, InstanceId, TaskState};

use super::fixtures::{fleet, now, queued, task};
use crate::{Claim, Store, StoreError};

/// Runs `call` until it has returned `Pending` `suspensions + 1` times, then drops it, as
/// a timeout would; `None` when it was dropped, its output when it finished first.
pub async fn cancel_after<F: Future>(call: F, suspensions: usize) -> Option<F::Output> {
    let mut call = pin!(call);
    let mut left = suspensions;
    std::future::poll_fn(|cx| match call.as_mut().poll(cx) {
        Poll::Ready(output) => Poll::Ready(Some(output)),
        Poll::Pending if left == 0 => Poll::Ready(None),
        Poll::Pending => {
            left -= 1;
            Poll::Pending
        }
    })
    .await
}

/// More suspensions than any single claim has: a claim still unfinished after this many is
/// stuck, not slow.
const MOST_SUSPENSIONS: usize = 1_000;

/// How many times every suspension point is cut.
const SWEEPS: usize = 10;

pub async fn a_claim_cancelled_at_any_await_is_all_or_nothing_and_the_store_still_writes(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 10_000).await;
    for _ in 0..SWEEPS {
        sweep(&store, instances[0].id).await;
    }
}

/// Cuts one claim at its first suspension, the next at its second, and so on until a
/// claim finishes first; after each cut, checks the abandoned claim and that the store
/// still writes.
async fn sweep(store: &Arc<dyn Store>, i: InstanceId) {
    for cut in 0..=MOST_SUSPENSIONS {
        let abandoned = queued(store, task("acme")).await;
        let finished = cancel_after(store.claim_task(abandoned.id(), i, now()), cut).await;

        // The store still takes writes (an insert, then a claim) and keeps what it
        // acknowledges.
        let next = queued(store, task("acme")).await;
        let claim = store
            .claim_task(next.id(), i, now())
            .await
            .unwrap_or_else(|e| panic!("a claim after one cancelled at suspension {cut} fails: {e}"));
        assert!(
            matches!(claim, Claim::Claimed(_)),
            "after a claim cancelled at suspension {cut}: {claim:?}"
        );
        let seen = store.get_task(next.id()).await.expect("the acknowledged claim is kept");
        assert_eq!(
            (seen.state, seen.attempt, seen.instance_id),
            (TaskState::Assigned, Attempt(1), Some(i))
        );

        // The abandoned claim assigned the task whole (a commit already on its way when
        // the caller left) or not at all.
        let abandoned = match store.get_task(abandoned.id()).await {
            Ok(t) => t,
            Err(StoreError::NotFound(_)) => panic!("the task inserted before the cut is gone"),
            Err(e) => panic!("reading after a claim cancelled at suspension {cut}: {e}"),
        };
        let state = (abandoned.state, abandoned.attempt, abandoned.instance_id);
        assert!(
            state == (TaskState::Queued, Attempt(0), None) || state == (TaskState::Assigned, Attempt(1), Some(i)),
            "a claim cancelled at suspension {cut} left the task half-assigned: {state:?}"
        );

        if let Some(result) = finished {
            // The claim finished before the cut: every suspension point has been tried.
            assert!(matches!(result.expect("claim"), Claim::Claimed(_)));
            return;
        }
    }
    panic!("a claim still unfinished after {MOST_SUSPENSIONS} suspensions");
}
