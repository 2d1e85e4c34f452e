//! The delegate's task endpoints: acquire, progress and result, fenced by the attempt.
//! Tasks are queued and claimed through the app's real store (submission over the API
//! comes with the assignment engine); everything the delegate does goes over HTTP.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_domain::task::limits;
use switchboard_domain::{
    Attempt, Connector, ConnectorId, Ident, InstanceId, NewTask, Scope, Selectors, TaskEvent, TaskId, TaskState,
    TaskType,
};
use switchboard_protocol::delegate::{RegisterRequest, Registered};
use switchboard_store::{Claim, Transition};

use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_on};

async fn delegate(app: &TestApp, hostname: &str) -> Registered {
    delegate_and_token(app, hostname).await.0
}

/// A registered delegate and the id of the token it registered with.
async fn delegate_and_token(app: &TestApp, hostname: &str) -> (Registered, String) {
    let created: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": hostname, "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let request: RegisterRequest =
        serde_json::from_value(json!({"name": "d", "hostname": hostname, "version": "1.0.0", "task_types": ["echo"]}))
            .unwrap();
    let token = created["token"].as_str().unwrap();
    let registered = switchboard_client::delegate::register(&app.client, &app.url(""), token, &request)
        .await
        .unwrap();
    (registered, created["id"].as_str().unwrap().to_owned())
}

/// Queues a task (optionally naming a connector) and claims it for `instance`.
async fn assigned(app: &TestApp, instance: InstanceId, connector: Option<ConnectorId>) -> TaskId {
    let store = app.state.store();
    let task = NewTask {
        id: TaskId::new(),
        scope: Scope::parse_path("acme").unwrap(),
        task_type: TaskType(Ident::parse("echo").unwrap()),
        payload: json!({"message": "hi"}),
        selectors: Selectors::new(),
        connector_id: connector,
        capabilities: vec![],
        priority: 0,
        assign_timeout: limits::DEFAULT_ASSIGN_TIMEOUT,
        execution_timeout: limits::DEFAULT_EXECUTION_TIMEOUT,
        max_attempts: 1,
        wait_for_delegate: false,
        idempotency: None,
        concurrency: None,
        retry: None,
        secrets: Vec::new(),
        created_at: Utc::now(),
    };
    store.insert_task(&task).await.unwrap();
    assert!(matches!(
        store.claim_task(task.id, instance, Utc::now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    task.id
}

async fn call(app: &TestApp, who: &Registered, task: TaskId, what: &str, body: Value) -> reqwest::Response {
    let url = app.url(&format!("/delegate/v1/tasks/{task}/{what}"));
    app.client
        .post(url)
        .bearer_auth(who.session_token.expose())
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn a_delegate_acquires_its_attempt_reports_progress_and_succeeds(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = delegate(&app, "a").await;
    let task = assigned(&app, me.instance_id, None).await;

    let acquired = call(&app, &me, task, "acquire", json!({"attempt": 1})).await;
    assert_eq!(acquired.status(), StatusCode::OK);
    let acquired: Value = acquired.json().await.unwrap();
    assert_eq!(
        (acquired["payload"].clone(), acquired["task_type"].clone()),
        (json!({"message": "hi"}), json!("echo"))
    );

    let progress = call(
        &app,
        &me,
        task,
        "progress",
        json!({"attempt": 1, "progress": {"percent": 50}}),
    )
    .await;
    assert_eq!(progress.json::<Value>().await.unwrap()["state"], "running");
    let done = call(
        &app,
        &me,
        task,
        "result",
        json!({"attempt": 1, "outcome": "succeeded", "result": {"echo": "hi"}}),
    )
    .await;
    assert_eq!(done.json::<Value>().await.unwrap()["state"], "succeeded");

    let stored = app.state.store().get_task(task).await.unwrap();
    assert_eq!(
        (stored.state, stored.result),
        (TaskState::Succeeded, Some(json!({"echo": "hi"})))
    );
    assert_eq!(
        app.state
            .store()
            .get_instance(me.instance_id)
            .await
            .unwrap()
            .active_tasks,
        0
    );
    // Reporting again changes nothing.
    let again = call(&app, &me, task, "result", json!({"attempt": 1, "outcome": "failed"})).await;
    problem(again, 409, "conflict").await;
    assert_eq!(
        app.state.store().get_task(task).await.unwrap().state,
        TaskState::Succeeded
    );
}

async fn a_stale_attempt_is_refused_with_409_and_changes_nothing(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let first = delegate(&app, "first").await;
    let second = delegate(&app, "second").await;
    let task = assigned(&app, first.instance_id, None).await;
    // The first instance never acquires; the assignment is released and re-offered.
    let store = app.state.store();
    store
        .transition_task(&Transition::new(task, Some(Attempt(1)), TaskEvent::Release, Utc::now()))
        .await
        .unwrap();
    assert!(matches!(
        store.claim_task(task, second.instance_id, Utc::now()).await.unwrap(),
        Claim::Claimed(_)
    ));

    // The first instance comes back and tries attempt 1.
    for (what, body) in [
        ("acquire", json!({"attempt": 1})),
        ("progress", json!({"attempt": 1, "progress": {}})),
        ("result", json!({"attempt": 1, "outcome": "succeeded"})),
    ] {
        let body = problem(call(&app, &first, task, what, body).await, 409, "stale-attempt").await;
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains("attempt 1 is not the current attempt (2)"),
            "{body}"
        );
    }
    // Another instance cannot take the current attempt either.
    problem(
        call(&app, &first, task, "acquire", json!({"attempt": 2})).await,
        409,
        "conflict",
    )
    .await;
    let stored = store.get_task(task).await.unwrap();
    assert_eq!(
        (stored.state, stored.attempt, stored.instance_id),
        (TaskState::Assigned, Attempt(2), Some(second.instance_id))
    );
    assert_eq!(
        call(&app, &second, task, "acquire", json!({"attempt": 2}))
            .await
            .status(),
        StatusCode::OK
    );
}

async fn a_failure_is_recorded_with_its_message_and_a_success_remembers_the_connector(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = delegate(&app, "a").await;
    let store = app.state.store();
    let now = Utc::now();
    let connector = Connector {
        id: ConnectorId::new(),
        scope: Scope::parse_path("acme").unwrap(),
        name: Ident::parse("cluster").unwrap(),
        selectors: Selectors::new(),
        created_at: now,
        updated_at: now,
    };
    store.create_connector(&connector).await.unwrap();

    let failing = assigned(&app, me.instance_id, Some(connector.id)).await;
    call(&app, &me, failing, "acquire", json!({"attempt": 1})).await;
    call(
        &app,
        &me,
        failing,
        "result",
        json!({"attempt": 1, "outcome": "failed", "error": "exit 3"}),
    )
    .await;
    let failed = store.get_task(failing).await.unwrap();
    assert_eq!(failed.state, TaskState::Failed);
    assert_eq!(failed.failure.map(|f| f.detail), Some("exit 3".to_owned()));
    assert_eq!(
        store.last_success(connector.id).await.unwrap(),
        None,
        "a failure is no success"
    );

    let working = assigned(&app, me.instance_id, Some(connector.id)).await;
    call(&app, &me, working, "acquire", json!({"attempt": 1})).await;
    call(
        &app,
        &me,
        working,
        "result",
        json!({"attempt": 1, "outcome": "succeeded"}),
    )
    .await;
    let remembered = store.last_success(connector.id).await.unwrap().expect("remembered");
    assert_eq!(
        (remembered.instance_id, remembered.group_id),
        (me.instance_id, me.group_id)
    );
}

async fn task_endpoints_need_the_session_credential_and_well_formed_reports(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = delegate(&app, "a").await;
    let task = assigned(&app, me.instance_id, None).await;
    let url = app.url(&format!("/delegate/v1/tasks/{task}/acquire"));
    let without = app.client.post(&url).json(&json!({"attempt": 1})).send().await.unwrap();
    problem(without, 401, "unauthorized").await;
    let with_admin = app
        .client
        .post(&url)
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"attempt": 1}))
        .send()
        .await
        .unwrap();
    problem(with_admin, 401, "unauthorized").await;
    problem(
        call(&app, &me, task, "acquire", json!({"attempt": "one"})).await,
        422,
        "validation",
    )
    .await;
    problem(
        call(&app, &me, task, "result", json!({"attempt": 1, "outcome": "maybe"})).await,
        422,
        "validation",
    )
    .await;
    let big = json!({"attempt": 1, "progress": {"blob": "x".repeat(1024 * 1024 + 10)}});
    problem(call(&app, &me, task, "progress", big).await, 413, "payload-too-large").await;
    problem(
        call(&app, &me, TaskId::new(), "acquire", json!({"attempt": 1})).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(
        app.state.store().get_task(task).await.unwrap().state,
        TaskState::Assigned,
        "nothing changed"
    );
}

/// How many times the manager has asked its store for a session and its token so far
/// (`instance_by_session`, `get_token`), from its `/metrics`.
async fn session_reads(app: &TestApp) -> (f64, f64) {
    let text = app.get("/metrics", None).await.text().await.unwrap();
    let calls = |op: &str| {
        let series = format!("switchboard_store_call_seconds_count{{op=\"{op}\"}}");
        text.lines()
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(name, _)| *name == series)
            .map_or(0.0, |(_, n)| n.parse().unwrap())
    };
    (calls("instance_by_session"), calls("get_token"))
}

/// Starts the app on `backend` and returns once it may take sessions from memory: on
/// PostgreSQL only once it hears the other replicas (none here). The delegate request
/// limit is off: the steady-state case makes requests as fast as they are answered.
async fn spawn_trusting(backend: Backend) -> Option<TestApp> {
    let app = spawn_on(backend, |s| s.delegate_rate_limit = 0).await?;
    tokio::time::timeout(PATIENCE, app.state.cluster().listening())
        .await
        .expect("the manager listens for other replicas");
    Some(app)
}

/// Acquires, reports progress on and completes `task` as `me`.
async fn run_to_the_end(app: &TestApp, me: &Registered, task: TaskId) {
    let acquired = call(app, me, task, "acquire", json!({"attempt": 1})).await;
    assert_eq!(acquired.status(), StatusCode::OK);
    let progress = call(app, me, task, "progress", json!({"attempt": 1, "progress": {"p": 1}})).await;
    assert_eq!(progress.status(), StatusCode::OK);
    let done = call(app, me, task, "result", json!({"attempt": 1, "outcome": "succeeded"})).await;
    assert_eq!(done.json::<Value>().await.unwrap()["state"], "succeeded");
}

async fn steady_state_acquire_progress_and_result_read_no_session_from_the_store(backend: Backend) {
    let Some(app) = spawn_trusting(backend).await else {
        return;
    };
    let me = delegate(&app, "a").await;
    // The first request checks the session against the store; nothing after it does.
    let first = assigned(&app, me.instance_id, None).await;
    run_to_the_end(&app, &me, first).await;
    let before = session_reads(&app).await;
    assert!(
        before.0 >= 1.0 && before.1 >= 1.0,
        "the first check read both: {before:?}"
    );

    // Load for longer than any short trust window would last (sessions used to be
    // checked again after 2 s): the loop is work, not a wait.
    let started = std::time::Instant::now();
    let mut tasks = 0;
    while tasks < 5 || started.elapsed() < std::time::Duration::from_secs(3) {
        let task = assigned(&app, me.instance_id, None).await;
        run_to_the_end(&app, &me, task).await;
        tasks += 1;
    }
    assert_eq!(
        session_reads(&app).await,
        before,
        "{} requests over {:?}, no session read",
        tasks * 3,
        started.elapsed()
    );
}

async fn a_revoked_token_is_refused_at_once_though_its_session_was_trusted(backend: Backend) {
    let Some(app) = spawn_trusting(backend).await else {
        return;
    };
    let (me, token_id) = delegate_and_token(&app, "a").await;
    let task = assigned(&app, me.instance_id, None).await;
    let acquired = call(&app, &me, task, "acquire", json!({"attempt": 1})).await;
    assert_eq!(acquired.status(), StatusCode::OK);
    assert_eq!(app.state.sessions().len(), 1, "the session is trusted now");

    let revoked = app
        .post(
            &format!("/api/v1/delegate-tokens/{token_id}/revoke"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await;
    assert!(revoked.status().is_success());
    // The very next request, with no pause: refused.
    let report = call(&app, &me, task, "result", json!({"attempt": 1, "outcome": "succeeded"})).await;
    problem(report, 401, "token-revoked").await;
    assert_eq!(
        app.state.store().get_task(task).await.unwrap().state,
        TaskState::Running,
        "the report was not taken"
    );
}

async fn a_deleted_delegates_sessions_are_refused_at_once_though_they_were_trusted(backend: Backend) {
    let Some(app) = spawn_trusting(backend).await else {
        return;
    };
    let me = delegate(&app, "a").await;
    let unknown = TaskId::new();
    // Checked and trusted (the task does not exist: 404, after authentication).
    problem(
        call(&app, &me, unknown, "acquire", json!({"attempt": 1})).await,
        404,
        "not-found",
    )
    .await;
    assert_eq!(app.state.sessions().len(), 1, "the session is trusted now");
    let deleted = app
        .client
        .delete(app.url(&format!("/api/v1/delegates/{}", me.group_id)))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    problem(
        call(&app, &me, unknown, "acquire", json!({"attempt": 1})).await,
        401,
        "unauthorized",
    )
    .await;
}

crate::both_backends!(
    steady_state_acquire_progress_and_result_read_no_session_from_the_store,
    a_revoked_token_is_refused_at_once_though_its_session_was_trusted,
    a_deleted_delegates_sessions_are_refused_at_once_though_they_were_trusted,
    a_delegate_acquires_its_attempt_reports_progress_and_succeeds,
    a_stale_attempt_is_refused_with_409_and_changes_nothing,
    a_failure_is_recorded_with_its_message_and_a_success_remembers_the_connector,
    task_endpoints_need_the_session_credential_and_well_formed_reports,
);
