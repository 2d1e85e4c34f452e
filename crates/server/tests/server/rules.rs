//! The rules an outside acceptance run found broken (issue 14), each end to end on both
//! stores with client-library delegates on real sockets: an instance whose heartbeat is
//! too old loses its tasks; a submission never waits on a validation answer, and a
//! silent instance is passed over; explanations leave out what the caller's key may not
//! see; a connection stops counting with its manager; a new socket is offered again what
//! its instance holds and has not acquired.

use std::time::Duration;

use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, register};
use switchboard_domain::{InstanceId, TaskId};
use switchboard_protocol::delegate::RegisterRequest;
use switchboard_protocol::socket::ServerMessage;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::dispatch::{Behaviour, log, submit, token, wait_for, wait_past, worker, worker_with};
use super::support::{ADMIN_KEY, Backend, Binary, DurableStore, PATIENCE, TestApp, spawn_on};

fn request(hostname: &str) -> Value {
    json!({"name": "pool", "hostname": hostname, "version": "1.0.0", "task_types": ["echo"], "capacity": 5})
}

/// An instance that stops beating (its socket stays open: the client library beats every
/// `heartbeat_interval`, a minute here) loses an assigned task at once, and a running
/// one with no attempts left fails `delegate_lost`, long before the acknowledge (30 s)
/// and execution (30 min) timeouts.
async fn an_instance_whose_heartbeat_is_too_old_loses_its_tasks_with_its_socket_open(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| {
        s.heartbeat_timeout = Duration::from_secs(3);
        s.heartbeat_flush_interval = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let t = token(&app).await;
    // Each delegate is registered right before its task, so its heartbeat (the one at
    // registration) is fresh when the task reaches it.
    let _holds = worker(&app, &t, "holds", &[], Behaviour::Hold).await;
    let (_, acquired) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["holds"]})).await;
    let acquired_id = acquired["id"].as_str().unwrap();
    let _ignores = worker(&app, &t, "ignores", &[], Behaviour::Ignore).await;
    let (_, offered) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "selectors": ["ignores"]}),
    )
    .await;
    assert_eq!(offered["state"], "assigned", "{offered}");

    let released = wait_past(&app, offered["id"].as_str().unwrap(), "assigned").await;
    assert_eq!(released["state"], "queued", "{released}");
    let lines: Vec<String> = log(&app, offered["id"].as_str().unwrap())
        .await
        .iter()
        .map(|e| e["summary"].as_str().unwrap().to_owned())
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l.contains("stopped sending heartbeats before acquiring it")),
        "{lines:?}"
    );
    // It ran (was acquired) before it was lost.
    let failed = wait_for(&app, acquired_id, "failed").await;
    assert_eq!(failed["failure"]["reason"], "delegate_lost", "{failed}");
    assert!(failed["started_at"].is_string(), "it was never acquired: {failed}");
}

/// A delegate that never answers `validate`: connected and beating, deaf to questions.
async fn deaf(app: &TestApp, token: &str, hostname: &str) -> (InstanceId, tokio::task::JoinHandle<()>) {
    let request: RegisterRequest = serde_json::from_value(request(hostname)).unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    let id = registered.instance_id;
    (
        id,
        tokio::spawn(async move { while session.events.recv().await.is_some() {} }),
    )
}

/// With two eligible instances that never answer, a submission is answered at once with
/// the task queued and saying it is validating; each silent instance is passed over
/// after the validation timeout (recorded as unable), and a delegate that answers gets
/// the task.
async fn a_submission_never_waits_on_validation_and_a_silent_instance_is_passed_over(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.validation_timeout = Duration::from_secs(1)).await else {
        return;
    };
    let t = token(&app).await;
    let (a, _a) = deaf(&app, &t, "deaf-a").await;
    let (b, _b) = deaf(&app, &t, "deaf-b").await;
    let database = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = database.local_addr().unwrap().port();
    let body = json!({"account": "acme", "type": "echo",
                      "capabilities": [{"kind": "tcp", "host": "127.0.0.1", "port": port}]});
    let (status, submitted) = submit(&app, body).await;
    assert_eq!(status, StatusCode::CREATED, "{submitted}");
    assert_eq!(submitted["state"], "queued", "{submitted}");
    let explanation = submitted["explanation"].as_str().unwrap();
    assert!(explanation.contains("validating"), "{explanation}");
    assert!(!explanation.contains(&a.to_string()) && !explanation.contains(&b.to_string()));

    let answers = worker_with(&app, &t, request("answers"), Behaviour::Work, &[]).await;
    let id = submitted["id"].as_str().unwrap();
    wait_for(&app, id, "succeeded").await;
    let lines: Vec<String> = log(&app, id)
        .await
        .iter()
        .map(|e| e["summary"].as_str().unwrap().to_owned())
        .collect();
    let assigned = format!("assigned to instance {}", answers.registered.instance_id);
    assert!(lines.iter().any(|l| l.starts_with(&assigned)), "{lines:?}");
    let silent = lines.iter().filter(|l| l.contains("did not answer within")).count();
    assert!(silent >= 1, "{lines:?}");
    let results = app.state.store().capability_results(&[a, b]).await.unwrap();
    assert!(results.iter().all(|r| !r.reachable), "{results:?}");
    drop(database);
}

async fn key(app: &TestApp, scope: Value, permissions: Value) -> String {
    let mut body =
        json!({"name": format!("k{}", TaskId::new().to_string().replace('-', "")), "permissions": permissions});
    body.as_object_mut().unwrap().extend(scope.as_object().unwrap().clone());
    let created: Value = app
        .post("/api/v1/api-keys", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    created["key"].as_str().unwrap().to_owned()
}

async fn scoped_token(app: &TestApp, org: &str) -> String {
    let body = json!({"name": format!("t-{org}"), "account": "acme", "org": org});
    let created: Value = app
        .post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

/// A key scoped to `acme/eng` learns nothing of an `acme/ops` delegate from the dry run
/// or from its own task's selection log: not its name, hostname, id or scope; only a
/// count. The admin key still reads everything.
async fn explanations_leave_out_instances_outside_the_callers_scope(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let mine = worker(&app, &scoped_token(&app, "eng").await, "eng-host", &[], Behaviour::Work).await;
    let ops_request =
        json!({"name": "ops-secret-pool", "hostname": "ops-secret-host", "version": "1.0.0", "task_types": ["echo"]});
    let theirs = worker_with(
        &app,
        &scoped_token(&app, "ops").await,
        ops_request,
        Behaviour::Work,
        &[],
    )
    .await;
    let hidden_id = theirs.registered.instance_id.to_string();
    let eng = key(
        &app,
        json!({"account": "acme", "org": "eng"}),
        json!(["pipelines:execute"]),
    )
    .await;
    let leaks = |text: &str| text.contains(&hidden_id) || text.contains("ops-secret") || text.contains("\"ops\"");

    let body =
        json!({"account": "acme", "org": "eng", "type": "echo", "selectors": ["gpu"], "wait_for_delegate": true});
    let explained = app.post("/api/v1/tasks/explain", Some(&eng), &body).await;
    assert_eq!(explained.status(), StatusCode::OK);
    let explained: Value = explained.json().await.unwrap();
    assert!(!leaks(&explained.to_string()), "{explained}");
    assert_eq!(explained["hidden_instances"], 1, "{explained}");
    let listed: Vec<&str> = explained["verdicts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["hostname"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["eng-host"]);

    let submitted: Value = app.post("/api/v1/tasks", Some(&eng), &body).await.json().await.unwrap();
    let id = submitted["id"].as_str().unwrap();
    let path = format!("/api/v1/tasks/{id}/selection-log");
    let as_eng: Value = app.get(&path, Some(&eng)).await.json().await.unwrap();
    assert!(!as_eng["items"].as_array().unwrap().is_empty());
    assert!(!leaks(&as_eng.to_string()), "{as_eng}");
    let as_admin: Value = app.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert!(
        as_admin.to_string().contains(&hidden_id),
        "the admin key reads everything"
    );
    let _ = (mine, theirs);
}

/// An instance whose task was assigned while it had no socket (the offer went nowhere)
/// is offered it again on its next socket, right after `hello`.
async fn a_reconnecting_instance_is_offered_again_what_it_holds_unacquired(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let request: RegisterRequest = serde_json::from_value(request("returning")).unwrap();
    let registered = register(&app.client, &app.url(""), &t, &request).await.unwrap();
    let (_, submitted) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
    )
    .await;
    let task: TaskId = submitted["id"].as_str().unwrap().parse().unwrap();
    // The assignment a manager made on a connection record that was out of date.
    let store = app.state.store();
    let claim = store
        .claim_task(task, registered.instance_id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(claim, switchboard_store::Claim::Claimed(_)), "{claim:?}");

    let mut req = registered.stream_url.as_str().into_client_request().unwrap();
    let bearer = format!("Bearer {}", registered.session_token.expose());
    req.headers_mut().insert("authorization", bearer.parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.expect("socket opens");
    let mut frames = Vec::new();
    for _ in 0..2 {
        let frame = tokio::time::timeout(PATIENCE, socket.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        frames.push(serde_json::from_str::<ServerMessage>(frame.to_text().unwrap()).unwrap());
    }
    assert!(matches!(frames[0], ServerMessage::Hello { .. }), "{frames:?}");
    assert_eq!(
        frames[1],
        ServerMessage::TaskAvailable {
            task_id: task,
            attempt: switchboard_domain::Attempt(1)
        }
    );
}

crate::both_backends!(
    an_instance_whose_heartbeat_is_too_old_loses_its_tasks_with_its_socket_open,
    a_submission_never_waits_on_validation_and_a_silent_instance_is_passed_over,
    explanations_leave_out_instances_outside_the_callers_scope,
    a_reconnecting_instance_is_offered_again_what_it_holds_unacquired,
);

/// The liveness of `instance` as an API caller, the metrics and placement see it on the
/// manager at `address`, once they agree.
async fn agreed_liveness(
    client: &reqwest::Client,
    address: &str,
    r: &switchboard_protocol::delegate::Registered,
) -> String {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let view: Value = client
            .get(format!("http://{address}/api/v1/delegates/{}", r.group_id))
            .bearer_auth(ADMIN_KEY)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let state = view["instances"]
            .as_array()
            .and_then(|all| all.iter().find(|i| i["id"] == r.instance_id.to_string()))
            .and_then(|i| i["state"].as_str())
            .unwrap_or_default()
            .to_owned();
        let metrics = client
            .get(format!("http://{address}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let gauge = |liveness: &str| {
            metrics
                .lines()
                .find(|l| l.starts_with(&format!("switchboard_delegate_instances{{liveness=\"{liveness}\"}}")))
                .and_then(|l| l.split_whitespace().last())
                .unwrap_or("?")
                .to_owned()
        };
        if state == "disconnected" && gauge("connected") == "0" && gauge("disconnected") == "1" {
            return state;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still {state} (connected gauge {}) after {PATIENCE:?}",
            gauge("connected")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A manager killed with SIGKILL leaves its delegate's connection recorded. Started again
/// (SQLite) or replaced by another replica (PostgreSQL), with the delegate gone for good,
/// the API, the metrics and placement all say disconnected within the lease, and a task
/// for that delegate waits instead of going to it.
async fn a_killed_managers_connections_stop_counting_everywhere(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = DurableStore::new(backend, dir.path()).await else {
        return;
    };
    let env = [
        ("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY),
        ("SWITCHBOARD_DATABASE_URL", store.url.as_str()),
        ("SWITCHBOARD_LISTEN", "127.0.0.1:0"),
        ("SWITCHBOARD_CONNECTION_LEASE", "1s"),
    ];
    let first = Binary::start_with_env(dir.path(), &[], &env);
    let client = reqwest::Client::new();
    let base = format!("http://{}", first.address);
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
    let request: RegisterRequest = serde_json::from_value(request("never-back")).unwrap();
    let registered = register(&client, &base, created["token"].as_str().unwrap(), &request)
        .await
        .unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    first.kill();
    // The delegate never comes back.
    drop(session);

    // The same store, so a restart (SQLite) or another replica taking over (PostgreSQL).
    let next = store.spawn_app().await;
    let address = next.address.to_string();
    assert_eq!(
        agreed_liveness(&next.client, &address, &registered).await,
        "disconnected"
    );
    let (_, submitted) = submit(
        &next,
        json!({"account": "acme", "type": "echo", "selectors": ["never-back"], "wait_for_delegate": true}),
    )
    .await;
    assert_eq!(submitted["state"], "queued", "{submitted}");
    let explanation = submitted["explanation"].as_str().unwrap();
    assert!(explanation.contains("1 disconnected"), "{explanation}");
}

crate::both_backends!(a_killed_managers_connections_stop_counting_everywhere);
