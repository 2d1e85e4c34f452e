//! The queue explained as a whole (issue 17): `GET /api/v1/queue` over a mixed queue,
//! counted per reason, on both stores, with client-library delegates on real sockets.

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, register};
use switchboard_protocol::delegate::RegisterRequest;

use super::dispatch::{Behaviour, submit, token, worker, worker_with};
use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_on};
use crate::both_backends;

both_backends!(the_queue_summary_counts_a_mixed_queue_by_reason,);

async fn queue(app: &TestApp, query: &str, key: &str) -> Value {
    let answer = app.get(&format!("/api/v1/queue{query}"), Some(key)).await;
    assert_eq!(answer.status(), StatusCode::OK);
    answer.json().await.unwrap()
}

fn reason<'a>(summary: &'a Value, name: &str) -> &'a Value {
    summary["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["reason"] == name)
        .unwrap_or_else(|| panic!("no {name} in {summary}"))
}

async fn the_queue_summary_counts_a_mixed_queue_by_reason(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let empty = queue(&app, "", ADMIN_KEY).await;
    assert_eq!(
        (&empty["waiting"], &empty["summary"]),
        (&json!(0), &json!("no task waiting"))
    );

    let t = token(&app).await;
    // k8s-prod: one instance of capacity 1, busy with a task it never finishes.
    let busy = worker_with(
        &app,
        &t,
        json!({"name": "k8s-prod", "hostname": "kp-1", "version": "1", "task_types": ["echo"], "capacity": 1}),
        Behaviour::Hold,
        &[],
    )
    .await;
    let on_prod = json!({"account": "acme", "type": "echo", "selectors": ["k8s-prod"]});
    let (_, first) = submit(&app, on_prod.clone()).await;
    assert_eq!(first["instance_id"], busy.registered.instance_id.to_string(), "{first}");
    for _ in 0..3 {
        submit(&app, on_prod.clone()).await;
    }
    // Nobody offers gpu: these wait only because they asked to.
    for _ in 0..2 {
        let (_, t) = submit(
            &app,
            json!({"account": "acme", "type": "echo", "selectors": ["gpu"], "wait_for_delegate": true}),
        )
        .await;
        assert_eq!(t["state"], "queued", "{t}");
    }
    // A declared pool at zero fits these.
    app.post(
        "/api/v1/delegates",
        Some(ADMIN_KEY),
        &json!({"name": "tpu-pool", "account": "acme", "tags": ["tpu"], "task_types": ["echo"]}),
    )
    .await;
    for _ in 0..2 {
        submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["tpu"]})).await;
    }
    // A paused delegate.
    let maint = worker(&app, &t, "maint-1", &["maint"], Behaviour::Work).await;
    let pause = format!("/api/v1/delegates/{}/pause", maint.registered.group_id);
    app.post(&pause, Some(ADMIN_KEY), &json!({"note": "patching"})).await;
    submit(&app, json!({"account": "acme", "type": "echo", "selectors": ["maint"]})).await;
    // A delegate that never answers a capability question: its task waits on the check.
    let request: RegisterRequest =
        serde_json::from_value(json!({"name": "checker", "hostname": "ck-1", "version": "1", "task_types": ["echo"]}))
            .unwrap();
    let registered = register(&app.client, &app.url(""), &t, &request).await.unwrap();
    let mut silent = Session::start(registered, Backoff::default());
    assert_eq!(
        tokio::time::timeout(PATIENCE, silent.events.recv()).await.unwrap(),
        Some(Event::Connected)
    );
    submit(
        &app,
        json!({"account": "acme", "type": "echo", "selectors": ["checker"],
               "capabilities": [{"kind": "tcp", "host": "db.internal", "port": 5432}]}),
    )
    .await;
    // Another account's task, which an acme key does not count.
    submit(
        &app,
        json!({"account": "globex", "type": "echo", "wait_for_delegate": true}),
    )
    .await;

    let all = queue(&app, "", ADMIN_KEY).await;
    assert_eq!(all["waiting"], 10, "{all}");
    let counted: Vec<(String, u64)> = all["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["reason"].as_str().unwrap().to_owned(), r["tasks"].as_u64().unwrap()))
        .collect();
    let total: u64 = counted.iter().map(|(_, n)| n).sum();
    assert_eq!(total, 10, "every waiting task has a reason: {counted:?}");

    let capacity = reason(&all, "at_capacity");
    assert_eq!(capacity["tasks"], 3, "{capacity}");
    assert_eq!(capacity["delegates"], json!(["k8s-prod"]));
    assert_eq!(capacity["line"], "3 wait on capacity of k8s-prod (1/1 busy)");
    assert!(capacity["oldest_queued_age_ms"].as_i64().unwrap() >= 0);
    assert_eq!(
        capacity["sample_task_ids"].as_array().unwrap().len(),
        2,
        "oldest and newest"
    );

    let lacking = reason(&all, "lacks_selectors");
    // The gpu tasks; globex has no delegate at all, which is a reason of its own.
    assert_eq!(lacking["tasks"], 2, "{all}");
    assert_eq!(lacking["listed"], json!(["gpu"]));
    assert_eq!(
        reason(&all, "no_delegates")["tasks"],
        1,
        "globex has no delegate: {all}"
    );

    let pool = reason(&all, "scaled_to_zero");
    assert_eq!((&pool["tasks"], &pool["delegates"]), (&json!(2), &json!(["tpu-pool"])));
    assert_eq!(pool["line"], "2 wait for an instance of tpu-pool (0 running)");

    let paused = reason(&all, "paused");
    assert_eq!(
        (&paused["tasks"], &paused["delegates"]),
        (&json!(1), &json!(["workers"]))
    );

    let checking = reason(&all, "validating");
    assert_eq!(checking["tasks"], 1, "{checking}");
    assert_eq!(checking["listed"], json!(["tcp:db.internal:5432"]));
    assert_eq!(checking["delegates"], json!(["checker"]));

    let headline = all["summary"].as_str().unwrap();
    assert!(
        headline.starts_with("10 tasks waiting: 3 wait on capacity of k8s-prod (1/1 busy)"),
        "{headline}"
    );

    // Filters narrow; an acme key sees acme's queue only.
    let acme = queue(&app, "?account=acme", ADMIN_KEY).await;
    assert_eq!(acme["waiting"], 9);
    let key: Value = app
        .post(
            "/api/v1/api-keys",
            Some(ADMIN_KEY),
            &json!({"name": "viewer", "account": "acme", "permissions": []}),
        )
        .await
        .json()
        .await
        .unwrap();
    let viewer = key["key"].as_str().unwrap();
    assert_eq!(queue(&app, "", viewer).await["waiting"], 9);
    assert_eq!(queue(&app, "?account=globex", viewer).await["waiting"], 0);
    let typed = queue(&app, "?account=acme&type=deploy", ADMIN_KEY).await;
    assert_eq!(typed["waiting"], 0);
    for bad in [
        "?org=eng",
        "?account=acme&colour=red",
        "?type=NOT%20A%20TYPE",
        "?connector=nope",
    ] {
        let answer = problem(
            app.get(&format!("/api/v1/queue{bad}"), Some(ADMIN_KEY)).await,
            422,
            "validation",
        )
        .await;
        assert!(answer["detail"].is_string(), "{bad}: {answer}");
    }
    // The same from the command line: the headline, then a row per reason.
    let printed = super::cli::cli(&app, &["queue", "--account", "acme"]).await;
    let out = printed.ok();
    assert!(
        out.starts_with("9 tasks waiting: 3 wait on capacity of k8s-prod"),
        "{out}"
    );
    let row = out
        .lines()
        .find(|l| l.starts_with("scaled_to_zero"))
        .expect("a row per reason");
    assert!(row.contains("tpu-pool") && row.contains(" 2 "), "{row}");
    drop(silent);
}

/// Reads the stream until a `changed` event whose data satisfies `ok`, within PATIENCE.
async fn next_change(response: &mut reqwest::Response, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut buffer = String::new();
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream is still open");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.lines().any(|l| l == "event: changed") {
                continue;
            }
            let data = block.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            let data: Value = serde_json::from_str(data).unwrap();
            if ok(&data) {
                return data;
            }
        }
    }
}

#[tokio::test]
async fn the_event_stream_says_when_tasks_and_delegates_change_and_ends_at_shutdown() {
    let app = super::support::spawn_app().await;
    let refused = app.get("/api/v1/events", None).await;
    assert_eq!(refused.status(), StatusCode::UNAUTHORIZED);
    let mut events = app.get("/api/v1/events", Some(ADMIN_KEY)).await;
    assert_eq!(events.status(), StatusCode::OK);
    assert!(
        events.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream"),
        "{:?}",
        events.headers()
    );
    // A task changes: the stream says tasks changed, and names nothing.
    submit(
        &app,
        json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
    )
    .await;
    let change = next_change(&mut events, |d| d["tasks"] == true).await;
    assert_eq!(
        change.as_object().unwrap().len(),
        2,
        "only which kinds changed: {change}"
    );
    // A delegate registers: the stream says delegates changed.
    let t = token(&app).await;
    let request: RegisterRequest =
        serde_json::from_value(json!({"name": "d", "hostname": "h", "version": "1", "task_types": ["echo"]})).unwrap();
    register(&app.client, &app.url(""), &t, &request).await.unwrap();
    next_change(&mut events, |d| d["delegates"] == true).await;
    // The manager stops: the stream ends rather than holding the shutdown.
    let stopping = tokio::spawn(async move { app.stop().await });
    let ended = tokio::time::timeout(PATIENCE, async {
        loop {
            match events.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return,
            }
        }
    })
    .await;
    assert!(ended.is_ok(), "the stream did not end at shutdown");
    tokio::time::timeout(PATIENCE, stopping)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn the_queue_history_counts_waiting_and_running_tasks_and_the_waits_of_assignments() {
    let app = super::support::spawn_app_with(|s| s.history_interval = std::time::Duration::from_millis(100)).await;
    let t = token(&app).await;
    let _busy = worker(&app, &t, "w-1", &[], Behaviour::Hold).await;
    let (_, running) = submit(&app, json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(running["state"], "assigned", "{running}");
    submit(
        &app,
        json!({"account": "acme", "org": "eng", "type": "echo", "selectors": ["gpu"], "wait_for_delegate": true}),
    )
    .await;
    submit(
        &app,
        json!({"account": "globex", "type": "echo", "wait_for_delegate": true}),
    )
    .await;

    // The last sampled interval, of acme's scope and of every scope.
    let last_sampled = |history: &Value| {
        history["points"]
            .as_array()
            .unwrap()
            .iter()
            .rev()
            .find(|p| p["queued"].is_number())
            .cloned()
    };
    let started = std::time::Instant::now();
    let (point, all) = loop {
        let acme = queue(&app, "/history?account=acme", ADMIN_KEY).await;
        let all = queue(&app, "/history", ADMIN_KEY).await;
        assert_eq!(acme["interval_ms"], 100);
        let assigned: u64 = acme["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["assigned"].as_u64().unwrap())
            .sum();
        if let (Some(mine), Some(everyone)) = (last_sampled(&acme), last_sampled(&all))
            && assigned == 1
            && everyone["queued"] == 2
            && mine["queued"] == 1
        {
            break (mine, all);
        }
        assert!(
            started.elapsed() < PATIENCE,
            "no sampled interval with every task: {all}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert_eq!(
        (&point["queued"], &point["running"]),
        (&json!(1), &json!(1)),
        "acme only: {point}"
    );
    let waited = all["points"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["assigned"] == 1)
        .unwrap()
        .clone();
    assert!(waited["wait_p50_ms"].as_f64().unwrap() > 0.0, "{waited}");
    for bad in ["/history?org=eng", "/history?limit=3"] {
        problem(
            app.get(&format!("/api/v1/queue{bad}"), Some(ADMIN_KEY)).await,
            422,
            "validation",
        )
        .await;
    }
}

#[tokio::test]
async fn a_waiting_task_shows_its_effective_priority_in_its_view_and_its_log() {
    let app = super::support::spawn_app().await;
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "priority": -2, "wait_for_delegate": true}),
    )
    .await;
    assert_eq!(task["state"], "queued", "{task}");
    let id = task["id"].as_str().unwrap();
    let view: Value = app
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    // Just submitted: it has not aged a step (10 s) yet.
    assert_eq!(
        (&view["priority"], &view["effective_priority"]),
        (&json!(-2), &json!(-2)),
        "{view}"
    );
    let entries = super::dispatch::log(&app, id).await;
    let decision = entries.iter().find(|e| e["kind"] == "decision").expect("a decision");
    assert_eq!(decision["detail"]["effective_priority"], -2, "{decision}");
    // Assigned, it no longer waits: no effective priority.
    let t = token(&app).await;
    let _w = worker(&app, &t, "w-1", &[], Behaviour::Hold).await;
    let started = std::time::Instant::now();
    loop {
        let view: Value = app
            .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
            .await
            .json()
            .await
            .unwrap();
        if view["state"] != "queued" {
            assert!(view.get("effective_priority").is_none(), "{view}");
            break;
        }
        assert!(started.elapsed() < PATIENCE, "never assigned: {view}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
