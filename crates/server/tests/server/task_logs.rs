//! Task logs end to end: a delegate appends chunks over HTTP, fenced like its reports;
//! operators read them a page at a time and follow them as server-sent events.

use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_client::LogEvent;
use switchboard_domain::task::limits;
use switchboard_domain::tasklog::LogPosition;
use switchboard_domain::{Ident, NewTask, Scope, Selectors, TaskId, TaskState, TaskType};
use switchboard_protocol::delegate::Registered;
use switchboard_store::Claim;

use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, registered_delegate, spawn_on};

/// A task claimed for `me` and acquired by it over HTTP: running attempt 1.
async fn running(app: &TestApp, me: &Registered) -> TaskId {
    let store = app.state.store();
    let task = NewTask {
        id: TaskId::new(),
        scope: Scope::parse_path("acme").unwrap(),
        task_type: TaskType(Ident::parse("echo").unwrap()),
        payload: json!({}),
        selectors: Selectors::new(),
        connector_id: None,
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
        store.claim_task(task.id, me.instance_id, Utc::now()).await.unwrap(),
        Claim::Claimed(_)
    ));
    let acquired = report(app, me, task.id, "acquire", json!({"attempt": 1})).await;
    assert_eq!(acquired.status(), StatusCode::OK);
    task.id
}

async fn report(app: &TestApp, who: &Registered, task: TaskId, what: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/delegate/v1/tasks/{task}/{what}")))
        .bearer_auth(who.session_token.expose())
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn append(app: &TestApp, who: &Registered, task: TaskId, offset: u64, text: &str) -> reqwest::Response {
    report(
        app,
        who,
        task,
        "logs",
        json!({"attempt": 1, "offset": offset, "text": text}),
    )
    .await
}

async fn page(app: &TestApp, task: TaskId, query: &str) -> Value {
    let answer = app
        .get(&format!("/api/v1/tasks/{task}/logs{query}"), Some(ADMIN_KEY))
        .await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json().await.unwrap()
}

fn text(page: &Value) -> String {
    page["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect()
}

async fn chunks_out_of_order_and_retried_are_stored_once_and_read_in_order(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = registered_delegate(&app, "a").await;
    let task = running(&app, &me).await;
    // "one\n" at 0, "two\n" at 4, "three\n" at 8: sent last first, then retried.
    for (offset, line) in [(8, "three\n"), (0, "one\n"), (4, "two\n"), (0, "one\n"), (8, "three\n")] {
        let answer = append(&app, &me, task, offset, line).await;
        assert_eq!(answer.status(), StatusCode::OK);
        let answer: Value = answer.json().await.unwrap();
        assert_eq!(answer["next_offset"], offset + line.len() as u64, "{answer}");
    }
    let whole = page(&app, task, "").await;
    assert_eq!(text(&whole), "one\ntwo\nthree\n");
    assert_eq!(whole["chunks"].as_array().unwrap().len(), 3, "each chunk once: {whole}");
    assert_eq!(
        (whole["ended"].clone(), whole["state"].clone()),
        (json!(false), json!("running"))
    );

    // Paging a byte at a time still moves a chunk at a time, from each answer's `next`.
    let mut read = String::new();
    let mut next = json!({"attempt": 1, "offset": 0});
    loop {
        let query = format!("?attempt={}&offset={}&limit_bytes=1", next["attempt"], next["offset"]);
        let one = page(&app, task, &query).await;
        if one["chunks"].as_array().unwrap().is_empty() {
            break;
        }
        assert_eq!(one["chunks"].as_array().unwrap().len(), 1);
        read.push_str(&text(&one));
        next = one["next"].clone();
    }
    assert_eq!(read, "one\ntwo\nthree\n");

    // Fenced like every report: a stale attempt, another instance.
    problem(
        report(&app, &me, task, "logs", json!({"attempt": 2, "offset": 0, "text": "x"})).await,
        409,
        "stale-attempt",
    )
    .await;
    let other = registered_delegate(&app, "b").await;
    problem(append(&app, &other, task, 14, "not mine\n").await, 409, "conflict").await;
    // Once the attempt ended, nothing more is appended; the log reads as ended.
    let done = report(&app, &me, task, "result", json!({"attempt": 1, "outcome": "succeeded"})).await;
    assert_eq!(done.status(), StatusCode::OK);
    problem(append(&app, &me, task, 14, "late\n").await, 409, "conflict").await;
    let last = page(&app, task, "").await;
    assert_eq!(text(&last), "one\ntwo\nthree\n");
    assert_eq!(
        (last["ended"].clone(), last["state"].clone()),
        (json!(true), json!("succeeded"))
    );
    // A task nobody knows, or outside the caller's view, is not found.
    problem(
        app.get(&format!("/api/v1/tasks/{}/logs", TaskId::new()), Some(ADMIN_KEY))
            .await,
        404,
        "not-found",
    )
    .await;
}

async fn a_followed_log_streams_each_line_as_it_is_stored_and_ends_with_the_task(backend: Backend) {
    // No periodic re-read: every line must come from the append's own wake-up.
    let Some(app) = spawn_on(backend, |s| s.log_follow_interval = Duration::from_secs(3600)).await else {
        return;
    };
    let me = registered_delegate(&app, "a").await;
    let task = running(&app, &me).await;
    assert_eq!(append(&app, &me, task, 0, "before\n").await.status(), StatusCode::OK);
    let operator = switchboard_client::Client::new(app.url(""), Some(ADMIN_KEY.to_owned())).unwrap();
    let mut follower = operator.follow_task_logs(&task.to_string(), LogPosition::default());
    let first = next(&mut follower).await;
    assert!(
        matches!(&first, LogEvent::Chunk(c) if c.text == "before\n"),
        "{first:?}"
    );
    let mut offset = 7u64;
    let mut slowest = Duration::ZERO;
    for i in 0..10 {
        let line = format!("line {i}\n");
        let sent = Instant::now();
        assert_eq!(append(&app, &me, task, offset, &line).await.status(), StatusCode::OK);
        let event = next(&mut follower).await;
        slowest = slowest.max(sent.elapsed());
        match event {
            LogEvent::Chunk(c) => assert_eq!((c.at.offset, c.text.as_str()), (offset, line.as_str())),
            other => panic!("expected a chunk, got {other:?}"),
        }
        offset += line.len() as u64;
    }
    // Reported, not asserted: speed is the benchmarks' business.
    println!("slowest append-to-follower delivery on {backend:?}: {slowest:?}");
    let done = report(&app, &me, task, "result", json!({"attempt": 1, "outcome": "failed"})).await;
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(next(&mut follower).await, LogEvent::End(TaskState::Failed));
    assert_eq!(follower.next().await.unwrap(), None);
}

/// The follower's next event (a test failure if the stream fails or hangs).
async fn next(follower: &mut switchboard_client::LogFollower<'_>) -> LogEvent {
    tokio::time::timeout(PATIENCE, follower.next())
        .await
        .expect("an event in time")
        .expect("the stream answers")
        .expect("an event before the end")
}

crate::both_backends!(
    chunks_out_of_order_and_retried_are_stored_once_and_read_in_order,
    a_followed_log_streams_each_line_as_it_is_stored_and_ends_with_the_task,
);
