//! Connection leases (issue 14, item 4): a connection recorded by a replica counts only
//! while that replica renews its lease, for every reader; a replica lets go only of the
//! connections it recorded; and a renewal clears what a lapsed replica left behind.

use std::sync::Arc;
use std::time::Duration;

use switchboard_domain::InstanceId;
use switchboard_store::Store;
use switchboard_store::conformance::fixtures::fleet;
use switchboard_store_postgres::{PgOptions, PgStore};

async fn connected(store: &Arc<dyn Store>, id: InstanceId) -> bool {
    store.get_instance(id).await.expect("by id").connected
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replicas_connections_count_only_while_its_lease_lives() {
    let Some(options) = crate::fresh_schema().await else {
        return;
    };
    let lease = Duration::from_secs(2);
    let store = |lease: Duration| {
        let options = options.clone();
        async move {
            let pg = PgOptions {
                max_connections: 2,
                connection_lease: lease,
                ..PgOptions::default()
            };
            Arc::new(PgStore::connect_with(options, &pg).await.expect("connects")) as Arc<dyn Store>
        }
    };
    // Replica `a` (a short lease, and it will stop renewing: it "crashes") records two
    // connections; replica `b` sees them.
    let a = store(lease).await;
    let b = store(Duration::from_secs(60)).await;
    let (_, instances) = fleet(&a, "acme", "k8s", 2, 5).await;
    let (stays, moves) = (instances[0].id, instances[1].id);
    // A fresh lease from here, whatever the setup cost on a busy machine.
    assert!(a.renew_lease().await.expect("renewed"), "a's lease is live");
    assert!(connected(&b, stays).await && connected(&b, moves).await);

    // The second delegate reconnects to `b`; `a` then notices its old socket closed, and
    // letting go must not erase `b`'s record (nor say the instance is gone).
    assert!(b.set_instance_connected(moves, true).await.expect("recorded by b"));
    assert!(
        !a.set_instance_connected(moves, false).await.expect("let go"),
        "the instance is held by another replica now"
    );
    assert!(connected(&a, moves).await, "b's record of the connection stands");

    // `a` renews no more. Within its lease its connection stops counting, for every
    // reader and every kind of read, while `b`'s stays.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while connected(&b, stays).await {
        assert!(tokio::time::Instant::now() < deadline, "a lapsed lease still counts");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!connected(&a, stays).await);
    let listed = b.list_instances(None).await.expect("list");
    let seen: Vec<(InstanceId, bool)> = listed.iter().map(|i| (i.id, i.connected)).collect();
    assert!(
        seen.contains(&(stays, false)) && seen.contains(&(moves, true)),
        "{seen:?}"
    );

    // `b`'s renewal clears what `a` left (so the removal sweep sees no socket either) ...
    assert!(b.renew_lease().await.expect("renewed"), "b's own lease is live");
    // ... and `a`, back at last, learns its lease had lapsed, so it records its sockets
    // again, which then count.
    assert!(!a.renew_lease().await.expect("renewed"), "a's lease had lapsed");
    assert!(
        !connected(&b, stays).await,
        "the lapsed record was cleared, not revived"
    );
    assert!(a.set_instance_connected(stays, true).await.expect("recorded again"));
    assert!(connected(&b, stays).await);
}
