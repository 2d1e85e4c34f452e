//! Queue policy end to end, with client-library delegates over real sockets: retries by
//! cause with backoff on another instance, failures that are not retried, concurrency
//! keys held back with their reason in every view, `cancel_older`, and a key's limit
//! held across two replicas under a race of submitters (docs/rules.md, "Concurrency
//! keys", "Retries").

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, TaskResult};
use switchboard_protocol::socket::ServerMessage;

use super::dispatch::{log, submit, token, wait_for};
use super::replicas::succeeded;
use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, spawn_on, spawn_replicas};

/// What a scripted delegate does with each task it acquires.
#[derive(Clone)]
enum Script {
    /// Reports a failure with this code, retryable or not.
    Fail { code: &'static str, retryable: bool },
    /// Keeps it running and never reports.
    Hold,
    /// Counts it as running (in `running`, keeping the most seen in `most`) for `work`,
    /// then reports success: a failed claim fence would show as two running at once.
    Count {
        running: Arc<AtomicUsize>,
        most: Arc<AtomicUsize>,
        work: Duration,
    },
    /// Sends its payload's `org` on `seen`, works for `work`, reports success.
    Record {
        seen: tokio::sync::mpsc::UnboundedSender<String>,
        work: Duration,
    },
    /// Sends its id on `acquired`, then reports success once `gate` lets one through.
    Gated {
        acquired: tokio::sync::mpsc::UnboundedSender<String>,
        gate: Arc<tokio::sync::Notify>,
    },
}

struct Agent {
    instance: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connected delegate in `acme` of `capacity`, tagged with its hostname, following
/// `script`.
async fn agent(app: &TestApp, token: &str, hostname: &str, capacity: u32, script: Script) -> Agent {
    let request: RegisterRequest = serde_json::from_value(json!({
        "name": "workers", "hostname": hostname, "version": "1.0.0", "task_types": ["echo"],
        "capacity": capacity, "tags": [hostname]
    }))
    .unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &registered.session_token);
    let task = tokio::spawn(async move {
        while let Some(event) = session.events.recv().await {
            let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = event else {
                continue;
            };
            let Ok(acquired) = tasks.acquire(task_id, attempt).await else {
                continue;
            };
            let (tasks, script) = (tasks.clone(), script.clone());
            tokio::spawn(async move {
                let report = match script {
                    Script::Hold => return,
                    Script::Fail { code, retryable } => TaskResult {
                        attempt,
                        outcome: Outcome::Failed,
                        result: None,
                        error: Some(format!("exited: {code}")),
                        error_code: Some(code.into()),
                        retryable: Some(retryable),
                    },
                    Script::Count { running, most, work } => {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(work).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        succeeded(attempt)
                    }
                    Script::Record { seen, work } => {
                        let org = acquired.payload["org"].as_str().unwrap_or("-").to_owned();
                        let _ = seen.send(org);
                        tokio::time::sleep(work).await;
                        succeeded(attempt)
                    }
                    Script::Gated { acquired, gate } => {
                        let _ = acquired.send(task_id.to_string());
                        gate.notified().await;
                        succeeded(attempt)
                    }
                };
                tasks.result(task_id, &report).await.unwrap();
            });
        }
    });
    Agent {
        instance: registered.instance_id.to_string(),
        task,
    }
}

async fn attempts(app: &TestApp, id: &str) -> Vec<Value> {
    let answer: Value = app
        .get(&format!("/api/v1/tasks/{id}/attempts"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    answer["items"].as_array().unwrap().clone()
}

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str().unwrap_or_else(|| panic!("a time: {v}")).parse().unwrap()
}

async fn a_failing_task_is_retried_after_its_backoff_on_another_instance_until_its_limit(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let token = token(&app).await;
    let fail = || Script::Fail {
        code: "exit:1",
        retryable: true,
    };
    let first = agent(&app, &token, "one", 1, fail()).await;
    let second = agent(&app, &token, "two", 1, fail()).await;
    let (status, submitted) = submit(
        &app,
        json!({
            "account": "acme", "type": "echo", "payload": {}, "max_attempts": 3,
            "retry": {"on": ["failed"], "error_codes": ["exit:1"], "initial_delay_ms": 300, "max_delay_ms": 2000}
        }),
    )
    .await;
    assert_eq!(status, 201, "{submitted}");
    let task = &submitted;
    assert_eq!(task["retry"]["on"], json!(["failed"]));
    assert_eq!(task["retry"]["backoff_factor"], 2.0);
    assert_eq!(task["retry"]["prefer_different_instance"], true);
    let id = task["id"].as_str().unwrap();

    let ended = wait_for(&app, id, "failed").await;
    assert_eq!(ended["runs"], 3, "{ended}");
    assert_eq!(ended["failure"]["code"], "exit:1");
    let tried = attempts(&app, id).await;
    assert_eq!(tried.len(), 3, "{tried:?}");
    assert_ne!(
        tried[0]["instance_id"], tried[1]["instance_id"],
        "the retry goes to the instance that has not run it"
    );
    let ours = [first.instance.as_str(), second.instance.as_str()];
    for (n, a) in tried.iter().enumerate() {
        assert!(ours.contains(&a["instance_id"].as_str().unwrap()));
        assert_eq!(a["outcome"], "failed", "attempt {n}: {a}");
        assert_eq!(a["failure"]["code"], "exit:1");
    }
    // Each retry waited out its backoff: 300 ms, then 600 ms, from the failure.
    for (n, wait_ms) in [(0, 300), (1, 600)] {
        let (ended_at, due) = (time(&tried[n]["ended_at"]), time(&tried[n]["retry_at"]));
        assert_eq!((due - ended_at).num_milliseconds(), wait_ms, "attempt {n}");
        let next = time(&tried[n + 1]["assigned_at"]);
        assert!(
            next >= due,
            "attempt {} was assigned at {next}, before it was due at {due}",
            n + 2
        );
    }
    assert!(tried[2].get("retry_at").is_none(), "the last run is not retried");
    let requeued: Vec<String> = log(&app, id)
        .await
        .iter()
        .filter(|e| e["kind"] == "requeued")
        .map(|e| e["summary"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(requeued.len(), 2, "{requeued:?}");
    assert!(
        requeued[0].contains("attempt 1 failed; retrying as attempt 2 at"),
        "{}",
        requeued[0]
    );
    app.stop().await.unwrap();
}

async fn a_failure_marked_not_retryable_or_not_named_by_the_policy_is_not_retried(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let token = token(&app).await;
    let fail = |code, retryable| Script::Fail { code, retryable };
    let _final = agent(&app, &token, "final", 4, fail("bad_payload", false)).await;
    let _flaky = agent(&app, &token, "flaky", 4, fail("exit:1", true)).await;
    let retried = json!({"on": ["failed"], "initial_delay_ms": 0});
    for (body, retryable) in [
        // Retried on every failure, but this one says a retry cannot help.
        (
            json!({"account": "acme", "type": "echo", "payload": {}, "max_attempts": 3, "retry": retried,
                   "selectors": ["final"]}),
            json!(false),
        ),
        // The default policy retries a lost delegate only.
        (
            json!({"account": "acme", "type": "echo", "payload": {}, "max_attempts": 3, "selectors": ["flaky"]}),
            Value::Null,
        ),
    ] {
        let (status, submitted) = submit(&app, body).await;
        assert_eq!(status, 201, "{submitted}");
        let id = submitted["id"].as_str().unwrap();
        let ended = wait_for(&app, id, "failed").await;
        assert_eq!(ended["runs"], 1, "{ended}");
        assert_eq!(ended["failure"]["retryable"], retryable, "{ended}");
        assert_eq!(attempts(&app, id).await.len(), 1);
    }
    app.stop().await.unwrap();
}

async fn a_task_held_back_by_its_concurrency_key_says_so_and_runs_when_the_key_frees(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let token = token(&app).await;
    let _agent = agent(&app, &token, "one", 5, Script::Hold).await;
    let keyed = |strategy: &str| {
        json!({
            "account": "acme", "type": "echo", "payload": {},
            "concurrency_key": "deploy-prod", "concurrency_limit": 1, "concurrency_strategy": strategy
        })
    };
    let (_, running) = submit(&app, keyed("keep_all")).await;
    assert_eq!(running["state"], "assigned", "{running}");
    assert_eq!(running["concurrency_key"], "deploy-prod");
    let running_id = running["id"].as_str().unwrap().to_owned();
    wait_for(&app, &running_id, "running").await;

    let limited = "limited by concurrency key deploy-prod: 1/1 running";
    let (status, waiting) = submit(&app, keyed("keep_all")).await;
    assert_eq!(status, 201);
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert_eq!(waiting["explanation"], limited);
    let waiting_id = waiting["id"].as_str().unwrap().to_owned();
    assert!(
        log(&app, &waiting_id).await.iter().any(|e| e["summary"] == limited),
        "the selection log says why"
    );
    let dry: Value = app
        .post("/api/v1/tasks/explain", Some(ADMIN_KEY), &keyed("keep_all"))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(dry["explanation"], limited, "{dry}");
    assert_eq!(
        dry["concurrency"],
        json!({"key": "deploy-prod", "limit": 1, "running": 1})
    );
    let queue: Value = app.get("/api/v1/queue", Some(ADMIN_KEY)).await.json().await.unwrap();
    let reason = &queue["reasons"][0];
    assert_eq!(
        (reason["reason"].as_str(), reason["tasks"].as_u64()),
        (Some("limited"), Some(1)),
        "{queue}"
    );
    assert_eq!(reason["line"], format!("1 {limited}"));

    // A newer one with cancel_older supersedes the one waiting; the running one stays.
    let (_, newest) = submit(&app, keyed("cancel_older")).await;
    let newest_id = newest["id"].as_str().unwrap().to_owned();
    let superseded = wait_for(&app, &waiting_id, "cancelled").await;
    assert_eq!(superseded["state"], "cancelled");
    let last = log(&app, &waiting_id).await.pop().unwrap();
    assert!(
        last["summary"]
            .as_str()
            .unwrap()
            .contains(&format!("superseded by task {newest_id}")),
        "{last}"
    );
    assert_eq!(wait_for(&app, &running_id, "running").await["state"], "running");

    // The running one ends: the newest takes the key's slot.
    let cancel = app
        .post(
            &format!("/api/v1/tasks/{running_id}/cancel"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await;
    assert_eq!(cancel.status(), 200);
    wait_for(&app, &newest_id, "running").await;
    app.stop().await.unwrap();
}

crate::both_backends!(
    a_failing_task_is_retried_after_its_backoff_on_another_instance_until_its_limit,
    a_failure_marked_not_retryable_or_not_named_by_the_policy_is_not_retried,
    a_task_held_back_by_its_concurrency_key_says_so_and_runs_when_the_key_frees,
);

/// Sixteen submitters race to submit tasks of one key with limit 1, half to each of two
/// replicas on one PostgreSQL, with delegates on both: never two run at once, as the
/// delegates see it and as the store counts it, and every task runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_concurrency_key_of_limit_1_never_runs_two_tasks_across_two_replicas() {
    const SUBMITTERS: usize = 16;
    const EACH: usize = 2;
    let Some((a, b)) = spawn_replicas(|_| {}).await else {
        return;
    };
    let token = token(&a).await;
    let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let script = || Script::Count {
        running: running.clone(),
        most: most.clone(),
        work: Duration::from_millis(20),
    };
    let _agents = [
        agent(&a, &token, "a1", 8, script()).await,
        agent(&a, &token, "a2", 8, script()).await,
        agent(&b, &token, "b1", 8, script()).await,
        agent(&b, &token, "b2", 8, script()).await,
    ];
    // The store's own count, sampled all along.
    let held_most = Arc::new(AtomicUsize::new(0));
    let sampler = {
        let (store, held_most) = (a.state.store().clone(), held_most.clone());
        tokio::spawn(async move {
            let account = switchboard_domain::Ident::parse("acme").unwrap();
            loop {
                let held = store.concurrency_held(&account, "deploy-prod").await.unwrap();
                held_most.fetch_max(held as usize, Ordering::SeqCst);
                tokio::task::yield_now().await;
            }
        })
    };
    let body = json!({
        "account": "acme", "type": "echo", "payload": {},
        "concurrency_key": "deploy-prod", "concurrency_limit": 1
    });
    let apps = [&a, &b];
    let submitters = (0..SUBMITTERS).map(|n| {
        let (app, body) = (apps[n % 2], body.clone());
        async move {
            let mut ids = Vec::new();
            for _ in 0..EACH {
                let (status, submitted) = submit(app, body.clone()).await;
                assert_eq!(status, 201, "{submitted}");
                ids.push(submitted["id"].as_str().unwrap().to_owned());
            }
            ids
        }
    });
    let ids: Vec<String> = futures::future::join_all(submitters)
        .await
        .into_iter()
        .flatten()
        .collect();
    for (n, id) in ids.iter().enumerate() {
        let task = wait_for(apps[n % 2], id, "succeeded").await;
        assert_eq!(task["runs"], 1);
    }
    sampler.abort();
    assert_eq!(most.load(Ordering::SeqCst), 1, "two tasks of the key ran at once");
    assert_eq!(
        held_most.load(Ordering::SeqCst),
        1,
        "the store counted two holding instances"
    );
    a.stop().await.unwrap();
    b.stop().await.unwrap();
}

/// Two orgs of one account compete for three account-level delegates, each with a
/// backlog: red (weight 2) gets two assignments for each of blue's (weight 1), where the
/// queue's order alone would alternate them.
async fn two_orgs_competing_for_account_delegates_get_assignments_in_the_ratio_of_their_weights(backend: Backend) {
    const EACH: usize = 60;
    const COUNTED: usize = 60;
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let set = app
        .client
        .put(app.url("/api/v1/scope-policies"))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"account": "acme", "org": "red", "weight": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(set.status(), 200);
    // The backlogs, alternating in the queue's order, before any delegate is there.
    for _ in 0..EACH {
        for org in ["red", "blue"] {
            let body = json!({"account": "acme", "org": org, "type": "echo", "payload": {"org": org},
                              "wait_for_delegate": true});
            let (status, task) = submit(&app, body).await;
            assert_eq!(
                (status.as_u16(), task["state"].as_str()),
                (201, Some("queued")),
                "{task}"
            );
        }
    }
    let token = token(&app).await;
    let (seen, mut order) = tokio::sync::mpsc::unbounded_channel();
    let record = || Script::Record {
        seen: seen.clone(),
        work: Duration::from_millis(5),
    };
    let _agents = [
        agent(&app, &token, "d1", 1, record()).await,
        agent(&app, &token, "d2", 1, record()).await,
        agent(&app, &token, "d3", 1, record()).await,
    ];
    let mut counted = Vec::with_capacity(COUNTED);
    while counted.len() < COUNTED {
        let org = tokio::time::timeout(PATIENCE, order.recv())
            .await
            .expect("assignments go on")
            .unwrap();
        counted.push(org);
    }
    let red = counted.iter().filter(|o| *o == "red").count();
    // 2:1 is 40 of 60; within 15 % of that (the queue's order alone gives 30).
    assert!(
        (34..=46).contains(&red),
        "red got {red} of the first {COUNTED} assignments (weight 2 to 1: 40 expected): {counted:?}"
    );
    app.stop().await.unwrap();
}

/// How long from freeing `acme`'s one slot to its next waiting task being acquired.
async fn freed_slot_to_next_acquired(
    app: &TestApp,
    acquired: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    gate: &tokio::sync::Notify,
) -> Duration {
    let body = json!({"account": "acme", "type": "echo", "payload": {}});
    let (_, running) = submit(app, body.clone()).await;
    let running_id = running["id"].as_str().unwrap().to_owned();
    let first = tokio::time::timeout(PATIENCE, acquired.recv()).await.unwrap().unwrap();
    assert_eq!(first, running_id);
    let (_, waiting) = submit(app, body).await;
    assert_eq!(waiting["state"], "queued", "the one slot is taken: {waiting}");
    let started = std::time::Instant::now();
    gate.notify_one();
    let next = tokio::time::timeout(PATIENCE, acquired.recv())
        .await
        .expect("the waiting task is placed")
        .unwrap();
    let elapsed = started.elapsed();
    assert_eq!(next, waiting["id"].as_str().unwrap());
    gate.notify_one();
    wait_for(app, &next, "succeeded").await;
    elapsed
}

/// A flood of 10,000 waiting tasks in one account does not delay another account's
/// placement: the time from a freed slot to the next task's acquisition grows by less
/// than the stated bound, 1 s (one `assign_interval`), over the same without the flood.
async fn a_flood_in_one_account_does_not_delay_another_accounts_placements(backend: Backend) {
    const FLOOD: usize = 10_000;
    const BOUND: Duration = Duration::from_secs(1);
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let token = token(&app).await;
    let (tx, mut acquired) = tokio::sync::mpsc::unbounded_channel();
    let gate = Arc::new(tokio::sync::Notify::new());
    let _calm = agent(
        &app,
        &token,
        "calm",
        1,
        Script::Gated {
            acquired: tx,
            gate: gate.clone(),
        },
    )
    .await;
    let before = freed_slot_to_next_acquired(&app, &mut acquired, &gate).await;

    // The flood: older than anything acme submits next, waiting for delegates that its
    // account does not have (written straight to the store, in batches).
    let store = app.state.store();
    for chunk in 0..FLOOD / 500 {
        let writes: Vec<switchboard_store::TaskWrite> = (0..500)
            .map(|n| {
                let task = switchboard_domain::NewTask {
                    id: switchboard_domain::TaskId::new(),
                    scope: switchboard_domain::Scope::parse_path(&format!("flood/p{}", (chunk * 500 + n) % 7)).unwrap(),
                    task_type: switchboard_domain::TaskType(switchboard_domain::Ident::parse("echo").unwrap()),
                    payload: json!({}),
                    selectors: switchboard_domain::Selectors::new(),
                    connector_id: None,
                    capabilities: vec![],
                    priority: 0,
                    assign_timeout: Duration::from_secs(3600),
                    execution_timeout: Duration::from_secs(60),
                    max_attempts: 1,
                    wait_for_delegate: true,
                    idempotency: None,
                    concurrency: None,
                    retry: None,
                    secrets: Vec::new(),
                    created_at: Utc::now(),
                };
                switchboard_store::TaskWrite::Submit(Box::new(switchboard_store::Submission {
                    task,
                    claim: None,
                    log: Vec::new(),
                    log_if_claimed: Vec::new(),
                    audit: None,
                }))
            })
            .collect();
        for written in store.write_tasks(writes).await.unwrap() {
            written.unwrap();
        }
    }
    let queue: Value = app
        .get("/api/v1/queue?account=flood", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(queue["waiting"], FLOOD as u64);

    let during = freed_slot_to_next_acquired(&app, &mut acquired, &gate).await;
    assert!(
        during <= before + BOUND,
        "with {FLOOD} tasks waiting in another account, a freed slot took {during:?} to be used (without: {before:?})"
    );
    app.stop().await.unwrap();
}

async fn a_scope_policy_is_checked_listed_and_gives_its_tasks_a_default_retry_policy(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let put = |body: Value| {
        app.client
            .put(app.url("/api/v1/scope-policies"))
            .bearer_auth(ADMIN_KEY)
            .json(&body)
            .send()
    };
    for (body, field) in [
        (json!({"account": "acme", "weight": 0}), "weight"),
        (json!({"account": "acme", "weight": 1001}), "weight"),
        (
            json!({"account": "acme", "retry": {"backoff_factor": 20}}),
            "retry.backoff_factor",
        ),
        (json!({"account": "acme", "retry": {"on": ["sometimes"]}}), ""),
        (json!({"account": "acme", "colour": "red"}), ""),
        (json!({"account": "acme", "project": "p"}), "project"),
    ] {
        let refused = super::support::problem(put(body.clone()).await.unwrap(), 422, "validation").await;
        if !field.is_empty() {
            assert_eq!(refused["field"], field, "{body}: {refused}");
        }
    }
    let retry = json!({"on": ["failed", "delegate_lost"], "error_codes": ["exit:137"], "initial_delay_ms": 1000});
    let set: Value = put(json!({"account": "acme", "retry": retry}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (set["weight"].as_u64(), set["weight_set"].as_bool()),
        (Some(1), Some(false)),
        "{set}"
    );
    let set: Value = put(json!({"account": "acme", "org": "red", "weight": 4}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(set["weight"], 4);
    let listed: Value = app
        .get("/api/v1/scope-policies?account=acme", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");

    // A task that names no retry policy gets the nearest scope's: here the account's.
    let body = json!({"account": "acme", "org": "red", "type": "echo", "payload": {}, "wait_for_delegate": true});
    let (_, task) = submit(&app, body).await;
    assert_eq!(task["retry"]["on"], json!(["failed", "delegate_lost"]), "{task}");
    assert_eq!(task["retry"]["error_codes"], json!(["exit:137"]));
    let own = json!({"account": "acme", "type": "echo", "payload": {}, "wait_for_delegate": true,
                     "retry": {"on": ["timed_out"]}});
    let (_, task) = submit(&app, own).await;
    assert_eq!(task["retry"]["on"], json!(["timed_out"]), "its own policy stays");

    let delete = |query: &'static str| {
        app.client
            .delete(app.url(&format!("/api/v1/scope-policies?{query}")))
            .bearer_auth(ADMIN_KEY)
            .send()
    };
    assert_eq!(delete("account=acme&org=red").await.unwrap().status(), 204);
    super::support::problem(delete("account=acme&org=red").await.unwrap(), 404, "not-found").await;
    app.stop().await.unwrap();
}

crate::both_backends!(
    two_orgs_competing_for_account_delegates_get_assignments_in_the_ratio_of_their_weights,
    a_flood_in_one_account_does_not_delay_another_accounts_placements,
    a_scope_policy_is_checked_listed_and_gives_its_tasks_a_default_retry_policy,
);
