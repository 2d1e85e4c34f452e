//! A manager killed with SIGKILL while batches of task writes are in flight (issue 15):
//! what it acknowledged is stored, what it refused is not, and a retry with the same
//! `Idempotency-Key` finds each stored submission exactly once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_domain::{Attempt, TaskId};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, TaskResult};
use switchboard_protocol::socket::ServerMessage;

use super::support::{ADMIN_KEY, Backend, Binary, DurableStore, PATIENCE};

/// Submissions sent at once; every third names a connector that does not exist.
const SUBMISSIONS: usize = 240;

fn body(n: usize) -> Value {
    // The priority tells the submissions apart in a task list (which shows no payload).
    let mut body = json!({
        "account": "acme", "type": "echo", "payload": {"n": n}, "priority": n, "wait_for_delegate": true
    });
    if n % 3 == 2 {
        body["connector_id"] = json!(TaskId::new().to_string());
    }
    body
}

async fn a_manager_killed_with_writes_in_flight_keeps_what_it_acknowledged_and_nothing_it_refused(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = DurableStore::new(backend, dir.path()).await else {
        return;
    };
    let env = [
        ("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY),
        ("SWITCHBOARD_DATABASE_URL", store.url.as_str()),
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_API_RATE_LIMIT", "0"),
        ("SWITCHBOARD_DELEGATE_RATE_LIMIT", "0"),
    ];
    let manager = Binary::start_with_env(dir.path(), &[], &env);
    let client = reqwest::Client::new();
    let base = format!("http://{}", manager.address);

    // A delegate that acquires what it is offered and reports success, recording every
    // result the manager acknowledged.
    let created: Value = client
        .post(format!("{base}/api/v1/delegate-tokens"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"name": "crash", "account": "acme"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let request: RegisterRequest = serde_json::from_value(json!({
        "name": "pool", "hostname": "worker", "version": "1.0.0", "task_types": ["echo"], "capacity": 50
    }))
    .unwrap();
    let registered = register(&client, &base, created["token"].as_str().unwrap(), &request)
        .await
        .unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    let reported: Arc<Mutex<Vec<(TaskId, Attempt)>>> = Arc::default();
    let tasks = TaskClient::new(client.clone(), &base, &registered.session_token);
    let worker = {
        let reported = reported.clone();
        tokio::spawn(async move {
            while let Some(event) = session.events.recv().await {
                if let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = event {
                    let (tasks, reported) = (tasks.clone(), reported.clone());
                    tokio::spawn(async move {
                        let Ok(acquired) = tasks.acquire(task_id, attempt).await else {
                            return;
                        };
                        let report = TaskResult {
                            attempt,
                            outcome: Outcome::Succeeded,
                            result: Some(acquired.payload),
                            error: None,
                            error_code: None,
                            retryable: None,
                        };
                        if tasks.result(task_id, &report).await.is_ok() {
                            reported.lock().unwrap().push((task_id, attempt));
                        }
                    });
                }
            }
        })
    };

    // Every submission at once, each with its own key; the manager is killed once a
    // sixth of them have been stored (answered 201), with the rest (and the delegate's
    // reports) in flight.
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    for n in 0..SUBMISSIONS {
        let (client, base, answers) = (client.clone(), base.clone(), answers.clone());
        tokio::spawn(async move {
            let answer = client
                .post(format!("{base}/api/v1/tasks"))
                .bearer_auth(ADMIN_KEY)
                .header("Idempotency-Key", format!("crash-{n}"))
                .json(&body(n))
                .send()
                .await;
            let outcome = match answer {
                Ok(r) => {
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or(Value::Null);
                    Some((status, body["id"].as_str().map(str::to_owned)))
                }
                // Cut by the kill: nobody knows whether it was stored.
                Err(_) => None,
            };
            let _ = answers.send((n, outcome));
        });
    }
    drop(answers);
    let mut outcomes: BTreeMap<usize, Option<(u16, Option<String>)>> = BTreeMap::new();
    let mut created = 0;
    while let Some((n, outcome)) = answered.recv().await {
        created += usize::from(matches!(outcome, Some((201, _))));
        outcomes.insert(n, outcome);
        if created == SUBMISSIONS / 6 {
            break;
        }
    }
    manager.kill();
    while let Some((n, outcome)) = answered.recv().await {
        outcomes.insert(n, outcome);
    }
    worker.abort();
    let reported = reported.lock().unwrap().clone();

    let acknowledged: BTreeMap<usize, String> = outcomes
        .iter()
        .filter_map(|(n, o)| match o {
            Some((200 | 201, Some(id))) => Some((*n, id.clone())),
            _ => None,
        })
        .collect();
    let refused: BTreeSet<usize> = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Some((status, _)) if (400..500).contains(status)))
        .map(|(n, _)| *n)
        .collect();
    assert!(
        !acknowledged.is_empty(),
        "nothing was acknowledged before the kill: {outcomes:?}"
    );
    assert!(
        acknowledged.keys().all(|n| n % 3 != 2) && refused.iter().all(|n| n % 3 == 2),
        "only submissions naming a missing connector are refused: {outcomes:?}"
    );

    // The same store, a new manager.
    let next = store.spawn_app().await;

    // Every acknowledged submission is stored; no refused one is.
    let mut stored: BTreeMap<u64, Value> = BTreeMap::new();
    let mut path = "/api/v1/tasks?limit=500".to_owned();
    loop {
        let page: Value = next.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
        for task in page["items"].as_array().unwrap() {
            let n = task["priority"].as_u64().unwrap();
            assert!(stored.insert(n, task.clone()).is_none(), "submission {n} stored twice");
        }
        match page["next"].as_str() {
            Some(cursor) => path = format!("/api/v1/tasks?limit=500&before={cursor}"),
            None => break,
        }
    }
    for (n, id) in &acknowledged {
        let task = stored.get(&(*n as u64));
        assert!(
            task.is_some_and(|t| t["id"] == id.as_str()),
            "acknowledged submission {n} ({id}) is not stored as answered: {task:?}"
        );
    }
    for n in &refused {
        assert!(!stored.contains_key(&(*n as u64)), "refused submission {n} was stored");
    }
    // Every acknowledged result is stored.
    for (task, attempt) in &reported {
        let view: Value = next
            .get(&format!("/api/v1/tasks/{task}"), Some(ADMIN_KEY))
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(
            (view["state"].as_str(), view["attempt"].as_u64()),
            (Some("succeeded"), Some(u64::from(attempt.0))),
            "an acknowledged result is lost: {view}"
        );
    }

    // A retry of each valid submission with its key finds the stored task (200), or
    // stores it now (201) if the kill cut it before it was stored; never a second one.
    for n in (0..SUBMISSIONS).filter(|n| n % 3 != 2) {
        let answer = next
            .client
            .post(next.url("/api/v1/tasks"))
            .bearer_auth(ADMIN_KEY)
            .header("Idempotency-Key", format!("crash-{n}"))
            .json(&body(n))
            .send()
            .await
            .unwrap();
        let status = answer.status().as_u16();
        let view: Value = answer.json().await.unwrap();
        match stored.get(&(n as u64)) {
            Some(task) => assert_eq!((status, &view["id"]), (200, &task["id"]), "retry of {n}: {view}"),
            None => assert_eq!(status, 201, "retry of {n}, never stored: {view}"),
        }
    }
}

crate::both_backends!(a_manager_killed_with_writes_in_flight_keeps_what_it_acknowledged_and_nothing_it_refused);
