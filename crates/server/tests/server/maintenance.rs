//! Taking delegates out and back (issue 17): pauses of an instance or a whole delegate,
//! with a note and an end; a delegate that says it is draining, whose offer not yet
//! acquired goes to another instance at once; single-use instances from JIT credentials.
//! On both stores, with client-library delegates on real sockets.

use std::time::{Duration, Instant};

use base64::Engine as _;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, Registered, TaskResult};
use switchboard_protocol::socket::{DelegateMessage, ServerMessage, close};

use super::dispatch::{Behaviour, log, submit, token, wait_for, worker};
use super::pools::logged;
use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_on};
use crate::both_backends;

both_backends!(
    a_paused_instance_gets_nothing_until_it_is_resumed,
    a_paused_delegate_resumes_by_itself_when_its_pause_ends,
    a_pause_is_checked_and_names_only_instances_of_its_delegate,
    a_draining_delegates_unacquired_offer_goes_to_another_instance_at_once,
    a_jit_credential_registers_once_and_its_instance_takes_one_task_and_is_removed,
);

async fn delegate(app: &TestApp, id: &str) -> Value {
    app.get(&format!("/api/v1/delegates/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap()
}

async fn a_paused_instance_gets_nothing_until_it_is_resumed(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let w = worker(&app, &t, "box-1", &[], Behaviour::Work).await;
    let (group, instance) = (w.registered.group_id, w.registered.instance_id);
    let path = format!("/api/v1/delegates/{group}/instances/{instance}");
    let paused = app
        .post(
            &format!("{path}/pause"),
            Some(ADMIN_KEY),
            &json!({"note": "kernel upgrade"}),
        )
        .await;
    assert_eq!(paused.status(), StatusCode::OK);
    let view: Value = paused.json().await.unwrap();
    let i = &view["instances"][0];
    assert_eq!(i["paused"]["note"], "kernel upgrade", "{view}");
    assert!(i["paused"].get("until").is_none(), "holds until resumed: {view}");
    assert_eq!(i["accepting"], false, "{view}");
    assert!(
        view.get("paused").is_none(),
        "the delegate itself is not paused: {view}"
    );

    // Paused is temporary: the task waits, and says why.
    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(task["state"], "queued", "{task}");
    let explanation = task["explanation"].as_str().unwrap();
    assert!(explanation.contains("1 paused"), "{task}");
    assert!(explanation.contains("waiting for a pause to end"), "{task}");
    let id = task["id"].as_str().unwrap();
    let verdicts = &log(&app, id).await[0]["detail"]["verdicts"];
    assert_eq!(verdicts[0]["detail"]["reason"], "paused", "{verdicts}");
    assert_eq!(verdicts[0]["detail"]["note"], "kernel upgrade", "{verdicts}");
    assert_eq!(verdicts[0]["detail"]["whole_delegate"], false, "{verdicts}");

    let resumed = app.post(&format!("{path}/resume"), Some(ADMIN_KEY), &json!({})).await;
    assert_eq!(resumed.status(), StatusCode::OK);
    let view: Value = resumed.json().await.unwrap();
    assert!(view["instances"][0].get("paused").is_none(), "{view}");
    assert_eq!(view["instances"][0]["accepting"], true, "{view}");
    let done = wait_for(&app, id, "succeeded").await;
    assert_eq!(done["attempt"], 1, "the paused instance's first offer: {done}");
}

async fn a_paused_delegate_resumes_by_itself_when_its_pause_ends(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let w = worker(&app, &t, "box-1", &[], Behaviour::Work).await;
    let group = w.registered.group_id.to_string();
    let paused = app
        .post(
            &format!("/api/v1/delegates/{group}/pause"),
            Some(ADMIN_KEY),
            &json!({"note": "window", "for": "2s"}),
        )
        .await;
    assert_eq!(paused.status(), StatusCode::OK);
    let view: Value = paused.json().await.unwrap();
    assert_eq!(view["paused"]["note"], "window", "{view}");
    assert!(view["paused"]["until"].is_string(), "{view}");
    assert_eq!(view["instances"][0]["accepting"], false, "{view}");

    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(task["state"], "queued", "{task}");
    let id = task["id"].as_str().unwrap();
    let verdicts = &log(&app, id).await[0]["detail"]["verdicts"];
    assert_eq!(verdicts[0]["detail"]["whole_delegate"], true, "{verdicts}");
    // Nobody resumes it: the pause ends, and the periodic sweep places the task.
    let done = wait_for(&app, id, "succeeded").await;
    let ended_at = chrono::DateTime::parse_from_rfc3339(view["paused"]["until"].as_str().unwrap()).unwrap();
    let assigned_at = chrono::DateTime::parse_from_rfc3339(done["assigned_at"].as_str().unwrap()).unwrap();
    assert!(assigned_at >= ended_at, "assigned only once the pause ended: {done}");
    let after = delegate(&app, &group).await;
    assert!(after.get("paused").is_none(), "an ended pause is not shown: {after}");
}

async fn a_pause_is_checked_and_names_only_instances_of_its_delegate(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let w = worker(&app, &t, "box-1", &[], Behaviour::Work).await;
    let group = w.registered.group_id;
    let pause = format!("/api/v1/delegates/{group}/pause");
    for (body, field) in [
        (json!({"note": "  "}), "note"),
        (json!({"note": "x".repeat(501)}), "note"),
        (json!({"note": "x", "for": "soon"}), "for"),
        (json!({"note": "x", "for": "31d"}), "until"),
        (json!({"note": "x", "until": "2001-01-01T00:00:00Z"}), "until"),
        (
            json!({"note": "x", "for": "1h", "until": "2999-01-01T00:00:00Z"}),
            "for",
        ),
    ] {
        let answer = problem(app.post(&pause, Some(ADMIN_KEY), &body).await, 422, "validation").await;
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
    // Nothing was stored by the refusals.
    assert!(delegate(&app, &group.to_string()).await.get("paused").is_none());

    // An instance of another delegate, or none, is not found under this one.
    let other_token = token(&app).await;
    let other = super::dispatch::worker_with(
        &app,
        &other_token,
        json!({"name": "others", "hostname": "o", "version": "1", "task_types": ["echo"]}),
        Behaviour::Work,
        &[],
    )
    .await;
    for instance in [
        other.registered.instance_id.to_string(),
        uuid::Uuid::new_v4().to_string(),
    ] {
        let path = format!("/api/v1/delegates/{group}/instances/{instance}/pause");
        problem(
            app.post(&path, Some(ADMIN_KEY), &json!({"note": "x"})).await,
            404,
            "not-found",
        )
        .await;
    }
    let bad = format!("/api/v1/delegates/{group}/instances/not-a-uuid/resume");
    problem(app.post(&bad, Some(ADMIN_KEY), &json!({})).await, 404, "not-found").await;
}

/// A connected session of a delegate registered with `request`, kept by the test so it
/// can send frames of its own (`draining`).
async fn session(app: &TestApp, token: &str, request: Value) -> (Registered, Session, TaskClient) {
    let request: RegisterRequest = serde_json::from_value(request).unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &registered.session_token);
    (registered, session, tasks)
}

/// The next offer the session hears, within PATIENCE.
async fn next_offer(session: &mut Session) -> (switchboard_domain::TaskId, switchboard_domain::Attempt) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        match tokio::time::timeout_at(deadline, session.events.recv()).await {
            Ok(Some(Event::Message(ServerMessage::TaskAvailable { task_id, attempt }))) => return (task_id, attempt),
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("no offer arrived"),
        }
    }
}

async fn a_draining_delegates_unacquired_offer_goes_to_another_instance_at_once(backend: Backend) {
    // The acknowledge timeout is the default 30 s: a hand-over within seconds is the drain's.
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let t = token(&app).await;
    let request = json!({"name": "workers", "hostname": "leaving", "version": "1", "task_types": ["echo"]});
    let (leaving, mut session, _tasks) = session(&app, &t, request).await;
    // Offered to the one instance there is; it is stopping and does not acquire it.
    let (_, task) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(task["instance_id"], leaving.instance_id.to_string(), "{task}");
    let id = task["id"].as_str().unwrap().to_owned();
    let (offered, _) = next_offer(&mut session).await;
    assert_eq!(offered.to_string(), id);
    let _other = worker(&app, &t, "staying", &[], Behaviour::Work).await;

    let said = Instant::now();
    session
        .send(DelegateMessage::Draining {
            reason: "SIGTERM".into(),
        })
        .await
        .unwrap();
    let done = wait_for(&app, &id, "succeeded").await;
    let handed_over = said.elapsed();
    eprintln!("draining: the offer went to another instance and succeeded {handed_over:?} after the frame");
    // The leaving session never acquires: the second attempt is the other instance's.
    assert_eq!(done["attempt"], 2, "{done}");
    assert!(
        handed_over < Duration::from_secs(10),
        "given back at once, not at the 30 s acknowledge timeout: {handed_over:?}"
    );
    let line = logged(&app, &id, "is draining").await;
    assert!(line.contains("queued"), "{line}");

    // From the frame on it is offered nothing, even a task that names it.
    let view = delegate(&app, &leaving.group_id.to_string()).await;
    let me = view["instances"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == leaving.instance_id.to_string())
        .unwrap();
    assert_eq!(
        (&me["draining"], &me["accepting"]),
        (&json!(true), &json!(false)),
        "{me}"
    );
    let (_, named) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "selectors": ["leaving"]}),
    )
    .await;
    assert_eq!(named["state"], "queued", "{named}");
    assert!(named["explanation"].as_str().unwrap().contains("1 draining"), "{named}");
    drop(session);
}

async fn a_jit_credential_registers_once_and_its_instance_takes_one_task_and_is_removed(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let declared: Value = app
        .post(
            "/api/v1/delegates",
            Some(ADMIN_KEY),
            &json!({"name": "oneshot", "account": "acme", "task_types": ["echo"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let group = declared["id"].as_str().unwrap().to_owned();
    let minted = app
        .post(
            &format!("/api/v1/delegates/{group}/jit"),
            Some(ADMIN_KEY),
            &json!({"expires_in": "10m"}),
        )
        .await;
    assert_eq!(minted.status(), StatusCode::CREATED);
    let jit: Value = minted.json().await.unwrap();
    let secret = jit["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sbd_"), "{jit}");
    let config: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jit["jit_config"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(config, json!({"url": app.url(""), "token": secret, "name": "oneshot"}));
    // Not one of the named tokens.
    let tokens: Value = app
        .get("/api/v1/delegate-tokens", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert!(!tokens.to_string().contains(jit["id"].as_str().unwrap()), "{tokens}");

    let register_as = |name: &str| json!({"name": name, "hostname": "pod-x", "version": "1.0.0", "task_types": ["echo"], "capacity": 5});
    // A registration under another name is refused and does not use the credential up.
    let refused = app
        .client
        .post(app.url("/delegate/v1/register"))
        .bearer_auth(&secret)
        .json(&register_as("elsewhere"))
        .send()
        .await
        .unwrap();
    let answer = problem(refused, 422, "validation").await;
    assert_eq!(answer["field"], "name", "{answer}");

    let (registered, mut session, tasks) = session(&app, &secret, register_as("oneshot")).await;
    assert_eq!(registered.max_tasks, Some(1));
    assert_eq!(registered.group_id.to_string(), group);
    let again = app
        .client
        .post(app.url("/delegate/v1/register"))
        .bearer_auth(&secret)
        .json(&register_as("oneshot"))
        .send()
        .await
        .unwrap();
    let answer = problem(again, 401, "unauthorized").await;
    assert!(answer["detail"].as_str().unwrap().contains("already used"), "{answer}");

    // Two tasks: it takes one; the other waits, saying why.
    let (_, first) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    let (_, second) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(first["instance_id"], registered.instance_id.to_string(), "{first}");
    assert_eq!(second["state"], "queued", "{second}");
    assert!(
        second["explanation"].as_str().unwrap().contains("single-use, spent"),
        "{second}"
    );
    let (task_id, attempt) = next_offer(&mut session).await;
    let acquired = tasks.acquire(task_id, attempt).await.unwrap();
    let report = TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        result: Some(acquired.payload),
        error: None,
        error_code: None,
        retryable: None,
    };
    tasks.result(task_id, &report).await.unwrap();

    // Its task ended: it is told to exit (drain, then close 4004) and is removed.
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut drained = false;
    let ended = loop {
        match tokio::time::timeout_at(deadline, session.events.recv()).await {
            Ok(Some(Event::Message(ServerMessage::Drain { .. }))) => drained = true,
            Ok(Some(Event::Ended { reason })) => break reason,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => panic!("the single-use instance was not told to go"),
        }
    };
    assert!(drained, "told to drain first");
    assert!(ended.contains(&format!("({})", close::RETIRED)), "{ended}");
    let view = delegate(&app, &group).await;
    assert_eq!(view["instances"], json!([]), "removed: {view}");
    assert_eq!(second["state"], "queued");
    let still: Value = app
        .get(
            &format!("/api/v1/tasks/{}", second["id"].as_str().unwrap()),
            Some(ADMIN_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        still["state"], "queued",
        "the pool waits for its next instance: {still}"
    );
    // The session credential died with the instance.
    let gone = tasks.acquire(task_id, attempt).await.unwrap_err();
    assert!(!gone.is_transient(), "{gone}");

    // A plain token may ask for a single-use instance too, within bounds.
    let plain = token(&app).await;
    for bad in [0, 1001] {
        let mut body = register_as("oneshot");
        body["max_tasks"] = json!(bad);
        let refused = app
            .client
            .post(app.url("/delegate/v1/register"))
            .bearer_auth(&plain)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(problem(refused, 422, "validation").await["field"], "max_tasks");
    }
    let mut body = register_as("oneshot");
    body["max_tasks"] = json!(2);
    let request: RegisterRequest = serde_json::from_value(body).unwrap();
    let two = register(&app.client, &app.url(""), &plain, &request).await.unwrap();
    assert_eq!(two.max_tasks, Some(2));
    let view = delegate(&app, &group).await;
    assert_eq!(view["instances"][0]["max_tasks"], 2, "{view}");
}
