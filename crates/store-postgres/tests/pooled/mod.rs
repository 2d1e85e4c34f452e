//! What only the PostgreSQL store has to get right about its pool, beyond the shared
//! conformance suite: a connection that a cancelled call gives back is never inside a
//! transaction. Here PostgreSQL would not refuse the next borrower (as SQLite does, which
//! the shared case sees); it would run the borrower's single-statement writes inside the
//! stale transaction, acknowledged but committed to nobody. So the case uses a pool of
//! one connection, which every call after the cancelled one must reuse, and looks at each
//! acknowledged write from a second store, on connections of its own.

use switchboard_store::Store;
use switchboard_store::conformance::cancellation::cancel_after;
use switchboard_store::conformance::fixtures::{fleet, now, queued, task};
use switchboard_store_postgres::{PgOptions, PgStore};

/// How many times every suspension point is cut (see the shared case).
const SWEEPS: usize = 10;

/// More suspensions than any single claim has.
const MOST_SUSPENSIONS: usize = 1_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_after_a_cancelled_claim_are_committed_not_held_in_its_transaction() {
    let Some(options) = crate::fresh_schema().await else {
        return;
    };
    let one = PgOptions {
        max_connections: 1,
        ..PgOptions::default()
    };
    let store: std::sync::Arc<dyn Store> =
        std::sync::Arc::new(PgStore::connect_with(options.clone(), &one).await.expect("connects"));
    let observer = PgStore::connect_with(options, &one)
        .await
        .expect("a second store connects");
    let (_, instances) = fleet(&store, "acme", "k8s", 1, 10_000).await;
    let i = instances[0].id;

    for _ in 0..SWEEPS {
        for cut in 0..=MOST_SUSPENSIONS {
            let abandoned = queued(&store, task("acme")).await;
            let finished = cancel_after(store.claim_task(abandoned.id(), i, now()), cut).await;

            // A single-statement write on the one connection, acknowledged: committed.
            let next = queued(&store, task("acme")).await;
            assert!(
                observer.get_task(next.id()).await.is_ok(),
                "a task inserted after a claim cancelled at suspension {cut} is invisible to other connections"
            );
            if finished.is_some() {
                break;
            }
            assert!(cut < MOST_SUSPENSIONS, "a claim never finishes");
        }
    }
}
