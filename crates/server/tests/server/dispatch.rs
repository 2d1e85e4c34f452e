//! Tasks through the whole path: submitted over the API, placed by the engine, pushed over
//! a real socket to client-library delegates, acquired and reported over HTTPS; and the
//! lifecycle around it (fail-fast, waiting, idempotency, cancel, acknowledge timeout,
//! delegate loss, expiry, explain).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_domain::Capability;
use switchboard_protocol::delegate::{Outcome, RegisterRequest, Registered, TaskResult};
use switchboard_protocol::socket::{CheckResult, DelegateMessage, RunningTask, ServerMessage};

use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_on};

pub(super) async fn token(app: &TestApp) -> String {
    let body = json!({"name": format!("t{}", uuid_like()), "account": "acme"});
    let created: Value = app
        .post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

fn uuid_like() -> String {
    switchboard_domain::TaskId::new().to_string().replace('-', "")
}

/// What a test delegate does with offers.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Behaviour {
    /// Acquire, then report success with the payload as result.
    Work,
    /// Acquire and keep it running (never report).
    Hold,
    /// Ignore offers.
    Ignore,
    /// Acquire and keep it running, listing it in every heartbeat.
    HoldListed,
}

pub(super) struct Worker {
    pub(super) registered: Registered,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A connected client-library delegate that handles offers as `behaviour` says.
pub(super) async fn worker(app: &TestApp, token: &str, hostname: &str, tags: &[&str], behaviour: Behaviour) -> Worker {
    let request = json!({
        "name": "workers", "hostname": hostname, "version": "1.0.0", "tags": tags, "task_types": ["echo"], "capacity": 5
    });
    worker_with(app, token, request, behaviour, &[]).await
}

/// A worker registered with `request`. It answers validation questions by really
/// connecting, except to the ports in `firewalled`, which it cannot reach (the network
/// between it and them is "blocked").
pub(super) async fn worker_with(
    app: &TestApp,
    token: &str,
    request: Value,
    behaviour: Behaviour,
    firewalled: &[u16],
) -> Worker {
    let request: RegisterRequest = serde_json::from_value(request).unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &registered.session_token);
    let firewalled = firewalled.to_vec();
    let task = tokio::spawn(async move {
        while let Some(event) = session.events.recv().await {
            match event {
                Event::Message(ServerMessage::Validate {
                    request_id,
                    capabilities,
                }) => {
                    let mut results = Vec::new();
                    for c in capabilities {
                        results.push(check(&c, &firewalled).await);
                    }
                    let _ = session
                        .send(DelegateMessage::ValidationResult { request_id, results })
                        .await;
                }
                Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) if behaviour != Behaviour::Ignore => {
                    let Ok(acquired) = tasks.acquire(task_id, attempt).await else {
                        continue;
                    };
                    if behaviour == Behaviour::HoldListed {
                        session.set_running(vec![RunningTask { task_id, attempt }]);
                    }
                    if behaviour == Behaviour::Work {
                        let report = TaskResult {
                            attempt,
                            outcome: Outcome::Succeeded,
                            result: Some(acquired.payload),
                            error: None,
                            error_code: None,
                            retryable: None,
                        };
                        let _ = tasks.result(task_id, &report).await;
                    }
                }
                _ => {}
            }
        }
    });
    Worker { registered, task }
}

/// A real TCP check, unless the port is firewalled for this worker.
async fn check(capability: &Capability, firewalled: &[u16]) -> CheckResult {
    let basis = capability.basis();
    let Capability::Tcp { host, port } = capability else {
        return CheckResult {
            basis,
            reachable: false,
            detail: "only tcp checks in this test".into(),
        };
    };
    if firewalled.contains(port) {
        return CheckResult {
            basis,
            reachable: false,
            detail: "connection timed out (firewalled)".into(),
        };
    }
    match tokio::net::TcpStream::connect((host.as_str(), *port)).await {
        Ok(_) => CheckResult {
            basis,
            reachable: true,
            detail: "connected".into(),
        },
        Err(e) => CheckResult {
            basis,
            reachable: false,
            detail: e.to_string(),
        },
    }
}

pub(super) async fn submit(app: &TestApp, body: Value) -> (StatusCode, Value) {
    let response = app.post("/api/v1/tasks", Some(ADMIN_KEY), &body).await;
    (response.status(), response.json().await.unwrap())
}

/// Long-polls until the task leaves `seen`; returns the task.
pub(super) async fn wait_past(app: &TestApp, id: &str, seen: &str) -> Value {
    let path = format!("/api/v1/tasks/{id}/wait?state={seen}&timeout_ms=20000");
    let task: Value = app.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_ne!(task["state"], seen, "the task did not move on from {seen}");
    task
}

/// Long-polls until the task reaches `state` (through whatever states come first).
pub(super) async fn wait_for(app: &TestApp, id: &str, state: &str) -> Value {
    let started = std::time::Instant::now();
    let mut task: Value = app
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    while task["state"] != state {
        assert!(
            started.elapsed() < PATIENCE,
            "still {} after {PATIENCE:?}: {task}",
            task["state"]
        );
        task = wait_past(app, id, task["state"].as_str().unwrap()).await;
    }
    task
}

pub(super) async fn log(app: &TestApp, id: &str) -> Vec<Value> {
    let answer: Value = app
        .get(&format!("/api/v1/tasks/{id}/selection-log"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    answer["items"].as_array().unwrap().clone()
}

async fn a_submitted_task_is_assigned_at_once_pushed_acquired_and_succeeds(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let w = worker(&app, &t, "w1", &[], Behaviour::Work).await;
    let (status, task) = submit(&app, json!({"account": "acme", "type": "echo", "payload": {"n": 1}})).await;
    assert_eq!(status, StatusCode::CREATED, "{task}");
    assert_eq!(
        task["instance_id"],
        w.registered.instance_id.to_string(),
        "assigned at once: {task}"
    );
    let id = task["id"].as_str().unwrap();
    let done = wait_for(&app, id, "succeeded").await;
    assert_eq!(done["result"], json!({"n": 1}));
    let kinds: Vec<Value> = log(&app, id).await.iter().map(|e| e["kind"].clone()).collect();
    assert_eq!(kinds[..2], [json!("decision"), json!("assigned")], "{kinds:?}");
}

async fn a_task_no_registered_delegate_could_take_fails_at_once_unless_asked_to_wait(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let _w = worker(&app, &t, "w1", &["linux"], Behaviour::Work).await;
    let (status, task) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["gpu"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(task["state"], "failed");
    assert_eq!(task["failure"]["reason"], "no_eligible_delegate");
    assert!(
        task["explanation"].as_str().unwrap().contains("selectors [gpu]"),
        "{task}"
    );

    // Asked to wait, it waits; a matching delegate arriving takes it (no fallback before).
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "selectors": ["gpu"], "wait_for_delegate": true}),
    )
    .await;
    assert_eq!(task["state"], "queued");
    let id = task["id"].as_str().unwrap().to_owned();
    let gpu = worker(&app, &t, "w2", &["gpu"], Behaviour::Work).await;
    let done = wait_for(&app, &id, "succeeded").await;
    let attempts_by: Vec<Value> = log(&app, &id)
        .await
        .iter()
        .filter(|e| e["kind"] == "assigned")
        .map(|e| e["detail"]["instance_id"].clone())
        .collect();
    assert_eq!(attempts_by, [json!(gpu.registered.instance_id.to_string())], "{done}");
}

async fn resubmitting_with_the_same_idempotency_key_returns_the_same_task(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let body = json!({"account": "acme", "type": "echo", "payload": {"a": 1, "b": 2}, "wait_for_delegate": true});
    let send = |body: Value| {
        app.client
            .post(app.url("/api/v1/tasks"))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", "run-7")
            .json(&body)
            .send()
    };
    let first = send(body.clone()).await.unwrap();
    assert_eq!(first.status(), StatusCode::CREATED);
    let first: Value = first.json().await.unwrap();
    // Same content, keys in another order: the same request.
    let reordered = json!({"wait_for_delegate": true, "payload": {"b": 2, "a": 1}, "type": "echo", "account": "acme"});
    let again = send(reordered).await.unwrap();
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await.unwrap()["id"], first["id"]);
    let other = send(json!({"account": "acme", "type": "echo", "payload": {"a": 2}}))
        .await
        .unwrap();
    problem(other, 422, "idempotency-mismatch").await;
    let all: Value = app.get("/api/v1/tasks", Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(all["items"].as_array().unwrap().len(), 1);
}

async fn cancelling_a_task_ends_it_and_a_second_cancel_is_a_conflict(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    let cancelled: Value = app
        .post(&format!("/api/v1/tasks/{id}/cancel"), Some(ADMIN_KEY), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    problem(
        app.post(&format!("/api/v1/tasks/{id}/cancel"), Some(ADMIN_KEY), &json!({}))
            .await,
        409,
        "conflict",
    )
    .await;
}

async fn an_offer_not_acquired_in_time_goes_back_to_the_queue_and_to_another_instance(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.acknowledge_timeout = Duration::from_millis(300)).await else {
        return;
    };
    let t = token(&app).await;
    let sleepy = worker(&app, &t, "sleepy", &["first"], Behaviour::Ignore).await;
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "selectors": ["workers"]}),
    )
    .await;
    assert_eq!(task["instance_id"], sleepy.registered.instance_id.to_string());
    let id = task["id"].as_str().unwrap().to_owned();
    let _awake = worker(&app, &t, "awake", &[], Behaviour::Work).await;
    let done = wait_for(&app, &id, "succeeded").await;
    assert_eq!(done["attempt"], 2, "the second attempt succeeded: {done}");
    let entries = log(&app, &id).await;
    assert!(
        entries
            .iter()
            .any(|e| e["summary"].as_str().unwrap().contains("acknowledge timeout")),
        "{entries:?}"
    );
}

async fn a_delegate_lost_mid_task_fails_it_with_one_attempt_and_requeues_it_with_two(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let holder = worker(&app, &t, "holder", &[], Behaviour::Hold).await;
    let (_, once) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    let (_, twice) = submit(&app, json!({"account": "acme", "type": "echo", "max_attempts": 2})).await;
    let (once, twice) = (
        once["id"].as_str().unwrap().to_owned(),
        twice["id"].as_str().unwrap().to_owned(),
    );
    wait_for(&app, &once, "running").await;
    wait_for(&app, &twice, "running").await;
    drop(holder); // its session task ends: the socket closes

    let failed = wait_for(&app, &once, "failed").await;
    assert_eq!(failed["failure"]["reason"], "delegate_lost");
    let _rescuer = worker(&app, &t, "rescuer", &[], Behaviour::Work).await;
    let done = wait_for(&app, &twice, "succeeded").await;
    assert_eq!((done["runs"].clone(), done["attempt"].clone()), (json!(2), json!(2)));
}

async fn a_task_not_assigned_within_its_assign_timeout_expires_with_the_last_explanation(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "wait_for_delegate": true, "assign_timeout_ms": 300}),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    wait_for(&app, id, "expired").await;
    let last = log(&app, id).await.pop().unwrap();
    assert_eq!(last["kind"], "ended");
    assert!(
        last["summary"].as_str().unwrap().contains("0/0 delegates eligible"),
        "{last}"
    );
}

async fn explain_agrees_with_the_real_decision_and_changes_nothing(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let gpu = worker(&app, &t, "gpu-box", &["gpu"], Behaviour::Hold).await;
    let _cpu = worker(&app, &t, "cpu-box", &["cpu"], Behaviour::Hold).await;
    let body = json!({"account": "acme", "type": "echo", "selectors": ["gpu"]});
    let explained: Value = app
        .post("/api/v1/tasks/explain", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(explained["chosen"], gpu.registered.instance_id.to_string());
    assert_eq!(explained["explanation"], "1/2 delegates eligible");
    let verdicts = explained["verdicts"].as_array().unwrap();
    assert_eq!(verdicts.len(), 2, "the dry run lists every instance");
    let cpu = verdicts.iter().find(|v| v["hostname"] == "cpu-box").unwrap();
    assert_eq!(
        (cpu["verdict"].clone(), cpu["rule"].clone()),
        (json!("rejected"), json!("selectors")),
        "{cpu}"
    );
    let listed: Value = app.get("/api/v1/tasks", Some(ADMIN_KEY)).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty(), "nothing was submitted");
    let (_, task) = submit(&app, body).await;
    assert_eq!(task["instance_id"], explained["chosen"]);
}

async fn bad_submissions_are_refused_precisely_and_store_nothing(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    for (body, field) in [
        (json!({"account": "acme"}), None),
        (
            json!({"account": "acme", "type": "echo", "priority": 5000}),
            Some("priority"),
        ),
        (
            json!({"account": "acme", "type": "echo", "max_attempts": 0}),
            Some("max_attempts"),
        ),
        (
            json!({"account": "acme", "type": "echo", "selectors": [" "]}),
            Some("selectors"),
        ),
        (
            json!({"account": "acme", "type": "echo", "connector": "0190a8f0-0000-7000-8000-000000000000"}),
            Some("connector"),
        ),
        (
            json!({"account": "acme", "type": "echo", "assign_timeout_ms": 0}),
            Some("assign_timeout_ms"),
        ),
        (
            json!({"account": "acme", "type": "echo", "capabilities": [{"kind": "tcp", "host": "db", "port": 0}]}),
            None,
        ),
        (json!({"account": "acme", "type": "echo", "colour": "red"}), None),
    ] {
        let answer = problem(
            app.post("/api/v1/tasks", Some(ADMIN_KEY), &body).await,
            422,
            "validation",
        )
        .await;
        if let Some(field) = field {
            assert_eq!(answer["field"], field, "{answer}");
        }
    }
    let big = json!({"account": "acme", "type": "echo", "payload": {"x": "y".repeat(1024 * 1024)}});
    problem(
        app.post("/api/v1/tasks", Some(ADMIN_KEY), &big).await,
        413,
        "payload-too-large",
    )
    .await;
    let listed: Value = app.get("/api/v1/tasks", Some(ADMIN_KEY)).await.json().await.unwrap();
    assert!(listed["items"].as_array().unwrap().is_empty());
}

async fn a_burst_of_200_tasks_on_3_delegates_of_capacity_5_never_exceeds_capacity(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let mut workers = Vec::new();
    for n in 0..3 {
        workers.push(worker(&app, &t, &format!("w{n}"), &[], Behaviour::Work).await);
    }
    let mut ids = Vec::new();
    for n in 0..200 {
        let (status, task) = submit(&app, json!({"account": "acme", "type": "echo", "payload": {"n": n}})).await;
        assert_eq!(status, StatusCode::CREATED);
        ids.push(task["id"].as_str().unwrap().to_owned());
        // Capacity is checked where it is kept: the store's count never passes 5.
        for i in app.state.store().list_instances(None).await.unwrap() {
            assert!(i.active_tasks <= 5, "{} holds {}", i.hostname, i.active_tasks);
        }
    }
    for id in &ids {
        wait_for(&app, id, "succeeded").await;
    }
    let attempts: usize = {
        let mut total = 0;
        for id in &ids {
            total += log(&app, id).await.iter().filter(|e| e["kind"] == "assigned").count();
        }
        total
    };
    assert_eq!(attempts, 200, "each task was assigned exactly once");
}

async fn the_last_delegate_to_succeed_for_a_connector_is_preferred_over_a_less_loaded_one(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let connector: Value = app
        .post(
            "/api/v1/connectors",
            Some(ADMIN_KEY),
            &json!({"name": "prod", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let connector = connector["id"].as_str().unwrap().to_owned();
    let first = worker(&app, &t, "first", &[], Behaviour::Work).await;
    let (_, warmup) = submit(&app, json!({"account": "acme", "type": "echo", "connector": connector})).await;
    assert_eq!(warmup["instance_id"], first.registered.instance_id.to_string());
    wait_for(&app, warmup["id"].as_str().unwrap(), "succeeded").await;

    // Give the first instance a task it holds (claimed straight in the store, so no
    // worker finishes it): it is now busier than the idle one that joins next.
    let store = app.state.store();
    let mut held = switchboard_domain::NewTask {
        id: switchboard_domain::TaskId::new(),
        created_at: chrono::Utc::now(),
        ..serde_json::from_value::<switchboard_domain::Task>(warmup_task(&app, &warmup).await)
            .unwrap()
            .spec
    };
    held.connector_id = None;
    held.idempotency = None;
    // Selects nobody and waits, so the dispatcher leaves it queued for the claim below.
    held.selectors = [switchboard_domain::Selector::parse("nobody").unwrap()].into();
    held.wait_for_delegate = true;
    store.insert_task(&held).await.unwrap();
    store
        .claim_task(held.id, first.registered.instance_id, chrono::Utc::now())
        .await
        .unwrap();
    let idle = worker(&app, &t, "idle", &[], Behaviour::Work).await;
    for _ in 0..3 {
        let (_, task) = submit(&app, json!({"account": "acme", "type": "echo", "connector": connector})).await;
        assert_eq!(
            task["instance_id"],
            first.registered.instance_id.to_string(),
            "last success wins over {}",
            idle.registered.instance_id
        );
        wait_for(&app, task["id"].as_str().unwrap(), "succeeded").await;
    }
}

/// The stored form of a task, as JSON (for building a similar one).
async fn warmup_task(app: &TestApp, view: &Value) -> Value {
    let id: switchboard_domain::TaskId = view["id"].as_str().unwrap().parse().unwrap();
    serde_json::to_value(app.state.store().get_task(id).await.unwrap()).unwrap()
}

async fn the_sweep_deletes_selection_log_entries_past_their_retention(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| {
        s.selection_log_retention = Duration::from_millis(200);
        s.sweep_interval = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
    )
    .await;
    let id = task["id"].as_str().unwrap();
    assert!(!log(&app, id).await.is_empty(), "the decision was logged");
    let started = std::time::Instant::now();
    while !log(&app, id).await.is_empty() {
        assert!(
            started.elapsed() < PATIENCE,
            "the log was never pruned: {:?}",
            log(&app, id).await
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn scope_decides_who_may_take_a_task_across_the_full_3x3_table(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let mut by_level = Vec::new();
    for (level, org, project) in [
        ("account", None, None),
        ("org", Some("eng"), None),
        ("project", Some("eng"), Some("web")),
    ] {
        let request = json!({"name": level, "hostname": level, "version": "1", "task_types": ["echo"], "org": org, "project": project});
        by_level.push((level, worker_with(&app, &t, request, Behaviour::Work, &[]).await));
    }
    // Task scope -> the delegate levels that may take it.
    let table = [
        (json!({}), vec!["account"]),
        (json!({"org": "eng"}), vec!["account", "org"]),
        (
            json!({"org": "eng", "project": "web"}),
            vec!["account", "org", "project"],
        ),
    ];
    for (scope, allowed) in table {
        let mut body = json!({"account": "acme", "type": "echo"});
        body.as_object_mut().unwrap().extend(scope.as_object().unwrap().clone());
        let explained: Value = app
            .post("/api/v1/tasks/explain", Some(ADMIN_KEY), &body)
            .await
            .json()
            .await
            .unwrap();
        for (level, w) in &by_level {
            let id = w.registered.instance_id.to_string();
            let verdict = explained["verdicts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|v| v["instance_id"] == id)
                .unwrap();
            let eligible = verdict["verdict"] == "eligible";
            assert_eq!(
                eligible,
                allowed.contains(level),
                "{level} delegate for task scope {scope}: {verdict}"
            );
            if !eligible {
                assert_eq!(verdict["rule"], "scope", "{verdict}");
            }
        }
        // Read from its attempt once it ran: the submission's own answer may say `queued`
        // when the queue sweep began placing the new task a moment before it did.
        let (_, task) = submit(&app, body).await;
        let id = task["id"].as_str().unwrap();
        wait_for(&app, id, "succeeded").await;
        let attempts = app.state.store().task_attempts(id.parse().unwrap()).await.unwrap();
        let level = by_level
            .iter()
            .find(|(_, w)| attempts.iter().any(|a| a.instance_id == w.registered.instance_id))
            .map(|(l, _)| *l);
        assert!(
            level.is_some_and(|l| allowed.contains(&l)),
            "task for {scope} went to {level:?}"
        );
    }
}

async fn implicit_selectors_pick_a_delegate_by_group_name_or_hostname(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let request =
        |group: &str, host: &str| json!({"name": group, "hostname": host, "version": "1", "task_types": ["echo"]});
    let _a = worker_with(&app, &t, request("builders", "Build-1"), Behaviour::Work, &[]).await;
    let b = worker_with(
        &app,
        &t,
        request("deployers", "deploy-7.internal"),
        Behaviour::Work,
        &[],
    )
    .await;
    for selector in ["DEPLOYERS", "deploy-7.internal", &b.registered.instance_id.to_string()] {
        let (_, task) = submit(
            &app,
            json!({"account": "acme", "type": "echo", "selectors": [selector]}),
        )
        .await;
        assert_eq!(
            task["instance_id"],
            b.registered.instance_id.to_string(),
            "selector {selector}: {task}"
        );
    }
}

async fn an_explicitly_selected_delegate_that_is_stale_is_waited_for_never_replaced(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.heartbeat_timeout = Duration::from_millis(300)).await else {
        return;
    };
    let t = token(&app).await;
    // Both beat every 60 s (the default), so after 300 ms both are stale...
    let _gpu = worker(&app, &t, "gpu-box", &["gpu"], Behaviour::Work).await;
    tokio::time::sleep(Duration::from_millis(400)).await; // let the heartbeat age past the timeout (not synchronisation)
    // ...and a fresh delegate without the selector joins.
    let fresh = worker(&app, &t, "cpu-box", &["cpu"], Behaviour::Work).await;
    let (status, task) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["gpu"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(task["state"], "queued", "a stale match is temporary: it waits: {task}");
    let explanation = task["explanation"].as_str().unwrap();
    assert!(explanation.contains("stale heartbeat"), "{explanation}");
    let id = task["id"].as_str().unwrap();
    let entries = log(&app, id).await;
    assert!(
        entries.iter().all(|e| e["kind"] != "assigned"),
        "never fell back to {}",
        fresh.registered.instance_id
    );
}

async fn a_connectors_selectors_apply_when_the_task_has_none(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let _linux = worker(&app, &t, "linux-box", &["linux"], Behaviour::Work).await;
    let win = worker(&app, &t, "win-box", &["windows"], Behaviour::Work).await;
    let body = json!({"name": "win-farm", "account": "acme", "selectors": ["windows"]});
    let connector: Value = app
        .post("/api/v1/connectors", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    for _ in 0..3 {
        let (_, task) = submit(
            &app,
            json!({"account": "acme", "type": "echo", "connector": connector["id"]}),
        )
        .await;
        assert_eq!(task["instance_id"], win.registered.instance_id.to_string(), "{task}");
        wait_for(&app, task["id"].as_str().unwrap(), "succeeded").await;
    }
    // The task's own selectors win over the connector's.
    let (_, own) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "connector": connector["id"], "selectors": ["linux"]}),
    )
    .await;
    assert_ne!(own["instance_id"], win.registered.instance_id.to_string());
}

async fn a_capability_reachable_from_one_delegate_only_goes_there_and_the_answer_is_reused(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let database = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let artifacts = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (db_port, art_port) = (
        database.local_addr().unwrap().port(),
        artifacts.local_addr().unwrap().port(),
    );
    let request = |host: &str| json!({"name": "pool", "hostname": host, "version": "1", "task_types": ["echo"]});
    // `walled` cannot reach the database; `open` reaches both.
    let walled = worker_with(&app, &t, request("walled"), Behaviour::Work, &[db_port]).await;
    let open = worker_with(&app, &t, request("open"), Behaviour::Work, &[]).await;
    let needs_db = json!({"account": "acme", "type": "echo", "capabilities": [{"kind": "tcp", "host": "127.0.0.1", "port": db_port}]});
    let mut questions = 0;
    for _ in 0..3 {
        let (_, task) = submit(&app, needs_db.clone()).await;
        let id = task["id"].as_str().unwrap();
        // The first submission is answered before the delegates are asked (it says
        // so); the answers then place it.
        wait_for(&app, id, "succeeded").await;
        let attempts = app.state.store().task_attempts(id.parse().unwrap()).await.unwrap();
        assert_eq!(
            attempts.iter().map(|a| a.instance_id).collect::<Vec<_>>(),
            [open.registered.instance_id]
        );
        questions += log(&app, id)
            .await
            .iter()
            .filter(|e| e["summary"].as_str().unwrap().starts_with("asked"))
            .count();
    }
    // Each instance was asked at most once: later tasks reuse the stored answers.
    assert!(
        (1..=2).contains(&questions),
        "{questions} validation questions for 3 tasks"
    );
    let store = app.state.store();
    let results = store
        .capability_results(&[walled.registered.instance_id, open.registered.instance_id])
        .await
        .unwrap();
    for r in &results {
        assert_eq!(r.reachable, r.instance_id == open.registered.instance_id, "{r:?}");
    }

    // When no eligible delegate can reach it, the task fails validation_failed, naming who could not.
    let both_walled = worker_with(&app, &t, request("walled-too"), Behaviour::Work, &[art_port]).await;
    drop(open);
    let needs_art = json!({"account": "acme", "type": "echo", "selectors": ["walled-too"], "capabilities": [{"kind": "tcp", "host": "127.0.0.1", "port": art_port}]});
    let (_, submitted) = submit(&app, needs_art).await;
    let failed = wait_for(&app, submitted["id"].as_str().unwrap(), "failed").await;
    assert_eq!(failed["failure"]["reason"], "validation_failed", "{failed}");
    // It says what could not be reached, and names no instance (the submitter's key may
    // not see them; the selection log names them, for those who may).
    let detail = failed["failure"]["detail"].as_str().unwrap();
    assert!(detail.contains(&format!("127.0.0.1:{art_port}")), "{failed}");
    assert!(!detail.contains("walled-too"), "{failed}");
    let _ = (database, artifacts, both_walled);
}

async fn a_disabled_delegate_gets_no_tasks_until_it_is_enabled(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let w = worker(&app, &t, "w", &[], Behaviour::Work).await;
    let group = format!("/api/v1/delegates/{}", w.registered.group_id);
    app.post(&format!("{group}/disable"), Some(ADMIN_KEY), &json!({})).await;
    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(task["state"], "queued", "disabled is temporary: it waits: {task}");
    assert!(task["explanation"].as_str().unwrap().contains("disabled"), "{task}");
    app.post(&format!("{group}/enable"), Some(ADMIN_KEY), &json!({})).await;
    // Enabling is a change the dispatcher is not told of; its periodic sweep finds it.
    let done = wait_for(&app, task["id"].as_str().unwrap(), "succeeded").await;
    assert_eq!(done["attempt"], 1);
}

async fn a_delegate_that_does_not_support_the_task_type_is_never_chosen(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let request = json!({"name": "shells", "hostname": "sh", "version": "1", "task_types": ["shell"]});
    let _shell_only = worker_with(&app, &t, request, Behaviour::Work, &[]).await;
    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(task["failure"]["reason"], "no_eligible_delegate", "{task}");
    assert!(task["explanation"].as_str().unwrap().contains("echo"), "{task}");
    let echo = worker(&app, &t, "echo-box", &[], Behaviour::Work).await;
    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(task["instance_id"], echo.registered.instance_id.to_string());
}

async fn the_least_loaded_delegate_is_preferred(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let busy = worker(&app, &t, "busy", &["pool"], Behaviour::Hold).await;
    let (_, first) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["busy"]})).await;
    assert_eq!(first["instance_id"], busy.registered.instance_id.to_string());
    let quiet = worker(&app, &t, "quiet", &["pool"], Behaviour::Hold).await;
    // busy holds 1/5, quiet 0/5: the next goes to quiet, then they are level.
    let (_, second) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["pool"]})).await;
    assert_eq!(
        second["instance_id"],
        quiet.registered.instance_id.to_string(),
        "{second}"
    );
    let entries = log(&app, second["id"].as_str().unwrap()).await;
    let decision = &entries[0]["detail"];
    let quiet_verdict = decision["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["hostname"] == "quiet")
        .unwrap();
    assert_eq!(quiet_verdict["ahead_by"], "lower_load", "{quiet_verdict}");
}

async fn an_assigned_task_goes_back_to_the_queue_at_once_when_its_delegate_disconnects(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let deaf = worker(&app, &t, "deaf", &[], Behaviour::Ignore).await;
    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(
        (task["state"].clone(), task["instance_id"].clone()),
        (json!("assigned"), json!(deaf.registered.instance_id.to_string()))
    );
    let id = task["id"].as_str().unwrap().to_owned();
    drop(deaf); // gone before acquiring: the default 30 s acknowledge timeout is not waited for
    let back = wait_past(&app, &id, "assigned").await;
    assert_eq!(back["state"], "queued", "{back}");
    let helper = worker(&app, &t, "helper", &[], Behaviour::Work).await;
    let done = wait_for(&app, &id, "succeeded").await;
    assert_eq!(done["attempt"], 2);
    let _ = helper;
}

async fn heartbeats_keep_a_running_task_alive_and_without_them_it_times_out(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| {
        s.heartbeat_interval = Duration::from_millis(50);
        s.heartbeat_flush_interval = Duration::from_millis(50);
    })
    .await
    else {
        return;
    };
    let t = token(&app).await;
    let listed = worker(&app, &t, "lister", &["lister"], Behaviour::HoldListed).await;
    let silent = worker(&app, &t, "silent", &["silent"], Behaviour::Hold).await;
    let task = |who: &str| json!({"account": "acme", "type": "echo", "selectors": [who], "execution_timeout_ms": 400});
    let (_, kept) = submit(&app, task("lister")).await;
    let (_, lost) = submit(&app, task("silent")).await;
    let (kept, lost) = (
        kept["id"].as_str().unwrap().to_owned(),
        lost["id"].as_str().unwrap().to_owned(),
    );
    wait_for(&app, &kept, "running").await;
    // The unlisted run times out once its deadline passes...
    let timed_out = wait_for(&app, &lost, "timed_out").await;
    assert!(
        timed_out["failure"]["detail"]
            .as_str()
            .unwrap()
            .contains("execution timeout"),
        "{timed_out}"
    );
    // ...while the listed one, started at the same time, is still running well past it.
    tokio::time::sleep(Duration::from_millis(600)).await; // time passing is the point here
    let still: Value = app
        .get(&format!("/api/v1/tasks/{kept}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(still["state"], "running", "{still}");
    let _ = (listed, silent);
}

crate::both_backends!(
    a_disabled_delegate_gets_no_tasks_until_it_is_enabled,
    a_delegate_that_does_not_support_the_task_type_is_never_chosen,
    the_least_loaded_delegate_is_preferred,
    an_assigned_task_goes_back_to_the_queue_at_once_when_its_delegate_disconnects,
    heartbeats_keep_a_running_task_alive_and_without_them_it_times_out,
    scope_decides_who_may_take_a_task_across_the_full_3x3_table,
    implicit_selectors_pick_a_delegate_by_group_name_or_hostname,
    an_explicitly_selected_delegate_that_is_stale_is_waited_for_never_replaced,
    a_connectors_selectors_apply_when_the_task_has_none,
    a_capability_reachable_from_one_delegate_only_goes_there_and_the_answer_is_reused,
    a_submitted_task_is_assigned_at_once_pushed_acquired_and_succeeds,
    a_task_no_registered_delegate_could_take_fails_at_once_unless_asked_to_wait,
    resubmitting_with_the_same_idempotency_key_returns_the_same_task,
    cancelling_a_task_ends_it_and_a_second_cancel_is_a_conflict,
    an_offer_not_acquired_in_time_goes_back_to_the_queue_and_to_another_instance,
    a_delegate_lost_mid_task_fails_it_with_one_attempt_and_requeues_it_with_two,
    a_task_not_assigned_within_its_assign_timeout_expires_with_the_last_explanation,
    explain_agrees_with_the_real_decision_and_changes_nothing,
    bad_submissions_are_refused_precisely_and_store_nothing,
    a_burst_of_200_tasks_on_3_delegates_of_capacity_5_never_exceeds_capacity,
    the_last_delegate_to_succeed_for_a_connector_is_preferred_over_a_less_loaded_one,
    the_sweep_deletes_selection_log_entries_past_their_retention,
);
