//! `GET /metrics`: open without a key, in a Prometheus content type, and counting what one
//! task through the whole path (submitted, assigned, run by a client-library delegate,
//! succeeded) did. Assertions read single series out of the exposition, never its text.

use std::time::Duration;

use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, TaskResult};
use switchboard_protocol::socket::ServerMessage;

use super::support::{ADMIN_KEY, PATIENCE, TestApp, spawn_app, spawn_app_with};

/// The exposition, after checking the status and content type.
async fn scrape(app: &TestApp) -> String {
    let response = app.get("/metrics", None).await;
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4")
            || content_type.starts_with("application/openmetrics-text; version=1.0.0"),
        "{content_type}"
    );
    response.text().await.unwrap()
}

/// The value of one series (`name` or `name{labels}`), if the exposition has it.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|line| !line.starts_with('#')).find_map(|line| {
        let (name, number) = line.rsplit_once(' ')?;
        (name == series).then(|| number.parse().unwrap())
    })
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no {series} in:\n{text}"))
}

#[tokio::test]
async fn metrics_need_no_key_and_list_every_family() {
    let app = spawn_app().await;
    let text = scrape(&app).await;
    for series in [
        "switchboard_tasks_submitted_total",
        "switchboard_assignments_total",
        "switchboard_queue_time_seconds_count",
        "switchboard_task_duration_seconds_count",
        "switchboard_assignment_decision_seconds_count",
        "switchboard_delegate_sockets_open",
        "switchboard_heartbeats_received_total",
        "switchboard_store_errors_total",
        "switchboard_store_call_seconds_count{op=\"insert_task\"}",
        "switchboard_delegate_instances{liveness=\"connected\"}",
        "switchboard_delegate_instances{liveness=\"stale\"}",
        "switchboard_delegate_instances{liveness=\"disconnected\"}",
    ] {
        assert_eq!(must(&text, series), 0.0, "{series}");
    }
    for state in ["succeeded", "failed", "cancelled", "expired", "timed_out"] {
        let series = format!("switchboard_tasks_finished_total{{state=\"{state}\"}}");
        assert_eq!(must(&text, &series), 0.0, "{series}");
    }
    for outcome in ["reachable", "unreachable", "silent"] {
        let series = format!("switchboard_validations_total{{outcome=\"{outcome}\"}}");
        assert_eq!(must(&text, &series), 0.0, "{series}");
    }
    // The admin key is not needed, and a wrong one is not refused either.
    let response = app.get("/metrics", Some("not-the-key")).await;
    assert_eq!(response.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_task_through_the_whole_path_is_counted() {
    let app = spawn_app_with(|settings| {
        settings.heartbeat_interval = Duration::from_millis(100);
    })
    .await;
    let body = json!({"name": "metrics", "account": "acme"});
    let created: Value = app
        .post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    let token = created["token"].as_str().unwrap();
    let request: RegisterRequest = serde_json::from_value(json!({
        "name": "workers", "hostname": "w1", "version": "1.0.0", "tags": [], "task_types": ["echo"], "capacity": 5
    }))
    .unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &registered.session_token);
    let worker = tokio::spawn(async move {
        while let Some(event) = session.events.recv().await {
            if let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = event {
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
            }
        }
    });

    let body = json!({"account": "acme", "type": "echo", "payload": {"n": 1}});
    let submitted: Value = app
        .post("/api/v1/tasks", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().unwrap();
    let path = format!("/api/v1/tasks/{id}/wait?state=succeeded&timeout_ms=20000");
    let started = std::time::Instant::now();
    loop {
        let task: Value = app.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
        if task["state"] == "succeeded" {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{task}");
    }

    // The worker beats every 100ms; wait for at least one beat to be counted.
    let started = std::time::Instant::now();
    let text = loop {
        let text = scrape(&app).await;
        if must(&text, "switchboard_heartbeats_received_total") > 0.0 {
            break text;
        }
        assert!(started.elapsed() < PATIENCE, "no heartbeat counted:\n{text}");
        tokio::time::sleep(Duration::from_millis(50)).await; // waiting for the next beat
    };
    assert_eq!(
        must(&text, "switchboard_tasks_finished_total{state=\"succeeded\"}"),
        1.0
    );
    assert_eq!(must(&text, "switchboard_tasks_finished_total{state=\"failed\"}"), 0.0);
    assert_eq!(must(&text, "switchboard_tasks_submitted_total"), 1.0);
    assert_eq!(must(&text, "switchboard_assignments_total"), 1.0);
    assert_eq!(must(&text, "switchboard_queue_time_seconds_count"), 1.0);
    assert_eq!(must(&text, "switchboard_task_duration_seconds_count"), 1.0);
    assert!(must(&text, "switchboard_assignment_decision_seconds_count") >= 1.0);
    assert_eq!(must(&text, "switchboard_delegate_sockets_open"), 1.0);
    assert_eq!(must(&text, "switchboard_store_errors_total"), 0.0);
    // The task stored already claimed, in one write.
    assert_eq!(
        must(&text, "switchboard_store_call_seconds_count{op=\"submit_task\"}"),
        1.0
    );
    assert_eq!(
        must(&text, "switchboard_store_call_seconds_count{op=\"claim_task\"}"),
        0.0
    );
    // Submission, acquire, result: one after the other, so three batches at least.
    assert!(must(&text, "switchboard_store_batch_items_count") >= 3.0);
    assert_eq!(must(&text, "switchboard_store_batches_failed_total"), 0.0);
    assert_eq!(
        must(&text, "switchboard_delegate_instances{liveness=\"connected\"}"),
        1.0
    );
    assert_eq!(
        must(&text, "switchboard_delegate_instances{liveness=\"disconnected\"}"),
        0.0
    );

    // The socket closing is counted too, and the instance is now disconnected. A scrape
    // is not one instant: the instance counts are read from the store before the socket
    // gauge, so a scrape may see the socket closed and the instance not yet: wait for both.
    worker.abort();
    let started = std::time::Instant::now();
    let text = loop {
        let text = scrape(&app).await;
        if must(&text, "switchboard_delegate_sockets_open") == 0.0
            && must(&text, "switchboard_delegate_instances{liveness=\"disconnected\"}") == 1.0
        {
            break text;
        }
        assert!(
            started.elapsed() < PATIENCE,
            "the socket is still counted as open:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await; // waiting for the close
    };
    assert_eq!(
        must(&text, "switchboard_delegate_instances{liveness=\"connected\"}"),
        0.0
    );
    assert_eq!(
        must(&text, "switchboard_delegate_instances{liveness=\"disconnected\"}"),
        1.0
    );
    app.stop().await.unwrap();
}
