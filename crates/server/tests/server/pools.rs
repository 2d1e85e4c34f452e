//! Declared pools (issue 17): a delegate an operator declares ahead of any instance, so a
//! task it fits waits for an instance of it (an autoscaler's pool at zero) instead of
//! failing, and its first instance takes that task. On both stores, with a client-library
//! delegate on a real socket.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::dispatch::{Behaviour, log, submit, token, wait_for, worker_with};
use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_on};
use crate::both_backends;

both_backends!(
    a_task_for_a_declared_pool_at_zero_waits_and_its_first_instance_takes_it,
    a_declaration_is_checked_and_its_name_is_unique_in_its_scope,
);

async fn a_task_for_a_declared_pool_at_zero_waits_and_its_first_instance_takes_it(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let declared = app
        .post(
            "/api/v1/delegates",
            Some(ADMIN_KEY),
            &json!({"name": "k8s-prod", "account": "acme", "tags": ["gpu"], "task_types": ["echo"], "max_instances": 10}),
        )
        .await;
    assert_eq!(declared.status(), StatusCode::CREATED);
    let pool: Value = declared.json().await.unwrap();
    assert_eq!(
        pool["declared"],
        json!({"task_types": ["echo"], "max_instances": 10}),
        "{pool}"
    );
    assert_eq!(pool["instances"], json!([]));

    // Nobody could ever take a task the pool does not fit: it fails at once, as before.
    let (_, unfit) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["tpu"]})).await;
    assert_eq!(unfit["state"], "failed", "{unfit}");
    assert_eq!(unfit["failure"]["reason"], "no_eligible_delegate", "{unfit}");

    // One it fits waits for an instance of it, and says so.
    let (status, waiting) = submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["gpu"]})).await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(waiting["state"], "queued", "{waiting}");
    let explanation = waiting["explanation"].as_str().unwrap_or_default();
    assert!(
        explanation.contains("waiting for an instance of k8s-prod (0 running)"),
        "{waiting}"
    );

    // An autoscaler asks how far to grow it: one instance, for the one task it could take.
    let demand_path = format!("/api/v1/delegates/{}/demand", pool["id"].as_str().unwrap());
    let demand: Value = app.get(&demand_path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(demand["queued"], 1, "the unfit task is not counted: {demand}");
    assert_eq!(demand["desired_instances"], 1, "{demand}");
    assert_eq!(demand["instances"], 0, "{demand}");
    assert_eq!(
        demand["capacity_per_instance"], 10,
        "the default, with no instance: {demand}"
    );
    assert_eq!(demand["max_instances"], 10, "{demand}");
    assert!(demand["oldest_queued_age_ms"].as_i64().is_some(), "{demand}");
    // The same for Prometheus, one series per declared pool.
    let scraped = app.get("/metrics", None).await.text().await.unwrap();
    let series = format!(
        "switchboard_pool_desired_instances{{account=\"acme\",pool=\"k8s-prod\",pool_id=\"{}\"}} 1",
        pool["id"].as_str().unwrap()
    );
    assert!(scraped.contains(&series), "{series} not in:\n{scraped}");
    assert!(scraped.contains("switchboard_pool_queued_tasks{account=\"acme\",pool=\"k8s-prod\""));

    // Disabled, the pool still keeps the task waiting (as a disabled instance would), and
    // wants no instance for it until it is enabled again.
    let pool_path = format!("/api/v1/delegates/{}", pool["id"].as_str().unwrap());
    let id = waiting["id"].as_str().unwrap();
    app.post(&format!("{pool_path}/disable"), Some(ADMIN_KEY), &json!({}))
        .await;
    let line = logged(&app, id, "(0 running, disabled)").await;
    assert!(line.contains("waiting for an instance of k8s-prod"), "{line}");
    let task: Value = app
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "queued", "{task}");
    let demand: Value = app.get(&demand_path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(
        (&demand["queued"], &demand["desired_instances"]),
        (&json!(1), &json!(0)),
        "{demand}"
    );
    app.post(&format!("{pool_path}/enable"), Some(ADMIN_KEY), &json!({}))
        .await;

    // The pool's first instance registers by its name and takes the task.
    let t = token(&app).await;
    let request =
        json!({"name": "k8s-prod", "hostname": "pod-1", "version": "1.0.0", "task_types": ["echo"], "capacity": 5});
    let _worker = worker_with(&app, &t, request, Behaviour::Work, &[]).await;
    wait_for(&app, id, "succeeded").await;

    let group: Value = app
        .get(
            &format!("/api/v1/delegates/{}", pool["id"].as_str().unwrap()),
            Some(ADMIN_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(group["instances"].as_array().unwrap().len(), 1, "{group}");
    assert!(group["declared"].is_object(), "it stays declared: {group}");

    // Nothing left to do: no instance wanted, the one there has all its slots free.
    let demand: Value = app.get(&demand_path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(
        (&demand["queued"], &demand["active"], &demand["desired_instances"]),
        (&json!(0), &json!(0), &json!(0)),
        "{demand}"
    );
    assert_eq!(
        (&demand["instances"], &demand["free_slots"]),
        (&json!(1), &json!(5)),
        "{demand}"
    );
    assert_eq!(demand["capacity_per_instance"], 5, "{demand}");
}

/// Waits (within PATIENCE) for a selection-log entry of task `id` whose summary contains
/// `text`, and returns that summary.
pub(super) async fn logged(app: &TestApp, id: &str, text: &str) -> String {
    let started = std::time::Instant::now();
    loop {
        let entries = log(app, id).await;
        if let Some(line) = entries
            .iter()
            .filter_map(|e| e["summary"].as_str())
            .find(|s| s.contains(text))
        {
            return line.to_owned();
        }
        assert!(started.elapsed() < PATIENCE, "no entry says {text:?}: {entries:?}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

async fn a_declaration_is_checked_and_its_name_is_unique_in_its_scope(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let declare = |body: Value| {
        let app = &app;
        async move { app.post("/api/v1/delegates", Some(ADMIN_KEY), &body).await }
    };
    let first = declare(json!({"name": "pool", "account": "acme", "org": "eng"})).await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let body: Value = first.json().await.unwrap();
    assert_eq!(body["declared"], json!({"task_types": []}), "no types declared: any");
    problem(
        declare(json!({"name": "pool", "account": "acme", "org": "eng"})).await,
        409,
        "conflict",
    )
    .await;
    // The same name in another scope is another delegate.
    assert_eq!(
        declare(json!({"name": "pool", "account": "acme"})).await.status(),
        StatusCode::CREATED
    );
    for (body, field) in [
        (
            json!({"name": "p2", "account": "acme", "max_instances": 0}),
            "max_instances",
        ),
        (
            json!({"name": "p2", "account": "acme", "max_instances": 100001}),
            "max_instances",
        ),
        (json!({"name": "p2", "account": "acme", "tags": ["  "]}), "tags"),
        (json!({"name": "p2", "account": "acme", "project": "x"}), "project"),
    ] {
        let answer = problem(declare(body.clone()).await, 422, "validation").await;
        assert_eq!(answer["field"], field, "{body}: {answer}");
    }
}
