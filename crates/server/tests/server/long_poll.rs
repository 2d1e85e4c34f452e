//! The long poll `GET /api/v1/tasks/{id}/wait` is governed by its own documented limit,
//! not by `request_timeout`: a wait longer than that answers 200 with the task as it is
//! once its own `timeout_ms` has passed; a `timeout_ms` over the maximum is refused by
//! name; and a wait in flight answers at once when the manager shuts down, so it never
//! holds the drain for its whole wait. On both stores.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_on};

/// A task no delegate takes: it stays `queued`, so a wait on `queued` lasts its timeout.
async fn queued_task(app: &TestApp) -> String {
    let task = json!({"account": "acme", "type": "echo", "wait_for_delegate": true});
    let submitted: Value = app
        .post("/api/v1/tasks", Some(ADMIN_KEY), &task)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(submitted["state"], "queued", "{submitted}");
    submitted["id"].as_str().unwrap().to_owned()
}

async fn a_wait_longer_than_request_timeout_answers_200_after_its_own_timeout(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| s.request_timeout = Duration::from_secs(1)).await else {
        return;
    };
    let id = queued_task(&app).await;
    let started = Instant::now();
    let response = app
        .get(
            &format!("/api/v1/tasks/{id}/wait?state=queued&timeout_ms=2000"),
            Some(ADMIN_KEY),
        )
        .await;
    let waited = started.elapsed();
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert_eq!(
        (task["id"].as_str(), task["state"].as_str()),
        (Some(id.as_str()), Some("queued"))
    );
    assert!(
        waited >= Duration::from_secs(2),
        "answered after {waited:?}, before its own timeout"
    );

    // The route's own bound is what is refused, by name; its maximum itself is accepted
    // (a task not in `state` answers at once whatever the timeout).
    let body = problem(
        app.get(
            &format!("/api/v1/tasks/{id}/wait?state=queued&timeout_ms=300001"),
            Some(ADMIN_KEY),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "timeout_ms", "{body}");
    assert!(body["detail"].as_str().unwrap().contains("300000"), "{body}");
    let at_once = app
        .get(
            &format!("/api/v1/tasks/{id}/wait?state=running&timeout_ms=300000"),
            Some(ADMIN_KEY),
        )
        .await;
    assert_eq!(at_once.status(), 200);
    app.stop().await.unwrap();
}

async fn a_wait_in_flight_answers_at_once_when_the_manager_shuts_down(backend: Backend) {
    let Some(app) = spawn_on(backend, |s| {
        s.request_timeout = Duration::from_secs(1);
        s.shutdown_grace = PATIENCE;
    })
    .await
    else {
        return;
    };
    let id = queued_task(&app).await;
    let request = app
        .client
        .get(app.url(&format!("/api/v1/tasks/{id}/wait?state=queued&timeout_ms=300000")))
        .bearer_auth(ADMIN_KEY)
        .send();
    let waiting = tokio::spawn(request);
    // Shut down only once the wait is in flight (it then listens for shutdown).
    let polled = Instant::now();
    while app.state.long_polls() == 0 {
        assert!(polled.elapsed() < PATIENCE, "the wait never started");
        tokio::task::yield_now().await;
    }
    let stopping = Instant::now();
    app.stop().await.unwrap();
    let stopped = stopping.elapsed();
    let response = waiting.await.unwrap().expect("the wait is answered, not cut off");
    assert_eq!(response.status(), 200);
    let task: Value = response.json().await.unwrap();
    assert_eq!(task["state"], "queued", "{task}");
    // Well within the grace (the whole patience): the wait did not hold the drain.
    assert!(stopped < PATIENCE / 3, "shutdown took {stopped:?}");
}

crate::both_backends!(
    a_wait_longer_than_request_timeout_answers_200_after_its_own_timeout,
    a_wait_in_flight_answers_at_once_when_the_manager_shuts_down,
);
