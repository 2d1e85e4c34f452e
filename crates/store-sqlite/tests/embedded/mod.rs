//! What only the embedded store has to get right, beyond the shared conformance suite:
//! the file survives a restart, a manager's exclusive open refuses a second manager, and
//! two stores on one file (opened without the lock: two processes, in effect, each with
//! its own writer connection) still claim exactly once.

use std::sync::Arc;

use switchboard_domain::{InstanceId, TaskId, TaskState};
use switchboard_store::conformance::fixtures::{fleet, now, queued, task};
use switchboard_store::{Claim, Store};
use switchboard_store_sqlite::SqliteStore;

#[tokio::test]
async fn data_survives_reopening_and_migrations_run_once() {
    let path = crate::common::database_path();
    let first: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("opens"));
    let t = queued(&first, task("acme")).await;
    drop(first);

    let again = SqliteStore::open(&path)
        .await
        .expect("reopens: applied migrations are skipped");
    again.check_ready().await.expect("ready");
    assert_eq!(again.get_task(t.id()).await.expect("still there"), t);
    assert!(
        path.with_file_name("switchboard.db-wal").exists(),
        "the database is in WAL mode"
    );
}

#[tokio::test]
async fn an_exclusive_open_refuses_a_second_manager_until_the_first_is_gone() {
    let path = crate::common::database_path();
    let first = SqliteStore::open_exclusive(&path).await.expect("opens");
    let clone = first.clone();
    let refused = SqliteStore::open_exclusive(&path)
        .await
        .expect_err("a second manager on the same file is refused");
    let message = refused.to_string();
    assert!(
        message.contains("another manager is using") && message.contains("PostgreSQL"),
        "{message}"
    );
    // The lock lives as long as any clone of the store.
    drop(first);
    assert!(
        SqliteStore::open_exclusive(&path).await.is_err(),
        "a clone still holds it"
    );
    drop(clone);
    SqliteStore::open_exclusive(&path)
        .await
        .expect("reopens once the first manager is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_claim_each_task_once() {
    const TASKS: usize = 40;
    let path = crate::common::database_path();
    let a: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("opens"));
    let b: Arc<dyn Store> = Arc::new(SqliteStore::open(&path).await.expect("opens a second time"));
    let (_, instances) = fleet(&a, "acme", "k8s", 2, 15).await;
    let mut tasks = Vec::with_capacity(TASKS);
    for _ in 0..TASKS {
        tasks.push(queued(&a, task("acme")).await.id());
    }
    let tasks = Arc::new(tasks);

    // Both stores race over every task; their writers contend for the file's write lock.
    let race = |store: Arc<dyn Store>, instance: InstanceId| {
        let tasks = tasks.clone();
        tokio::spawn(async move {
            let mut won: Vec<TaskId> = Vec::new();
            for t in tasks.iter() {
                if let Claim::Claimed(c) = store.claim_task(*t, instance, now()).await.expect("claim") {
                    won.push(c.id());
                }
            }
            won
        })
    };
    let (wa, wb) = tokio::join!(race(a.clone(), instances[0].id), race(b.clone(), instances[1].id));
    let (wa, wb) = (wa.expect("no panic"), wb.expect("no panic"));

    assert_eq!(wa.len() + wb.len(), 30, "exactly the 30 slots were filled");
    assert!(wa.iter().all(|t| !wb.contains(t)), "no task was claimed twice");
    for (i, won) in [(&instances[0], &wa), (&instances[1], &wb)] {
        let stored = b.get_instance(i.id).await.expect("instance");
        assert_eq!(stored.active_tasks as usize, won.len());
        for t in won {
            let t = a.get_task(*t).await.expect("task");
            assert_eq!((t.state, t.instance_id), (TaskState::Assigned, Some(i.id)));
        }
    }
}

#[tokio::test]
async fn a_manager_opening_the_file_forgets_the_connections_a_crashed_one_recorded() {
    let path = crate::common::database_path();
    // A manager records its delegates' connections, then dies without letting go (the
    // fixture's instances are registered connected; no close, no disconnect).
    let crashed: Arc<dyn Store> = Arc::new(SqliteStore::open_exclusive(&path).await.expect("opens"));
    let (_, instances) = fleet(&crashed, "acme", "k8s", 2, 5).await;
    assert!(crashed.get_instance(instances[0].id).await.expect("by id").connected);
    drop(crashed);

    let next = SqliteStore::open_exclusive(&path)
        .await
        .expect("the next manager opens");
    for i in &instances {
        assert!(
            !next.get_instance(i.id).await.expect("by id").connected,
            "a connection recorded by a manager that is gone still counts"
        );
    }
    assert!(
        next.renew_lease().await.expect("no lease to renew"),
        "one manager never lapses"
    );
    assert!(
        next.set_instance_connected(instances[0].id, true)
            .await
            .expect("recorded"),
        "nobody else can hold the socket"
    );
    assert!(next.get_instance(instances[0].id).await.expect("by id").connected);
}
