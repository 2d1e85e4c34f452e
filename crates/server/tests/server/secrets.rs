//! Secrets end to end: a value sealed at rest, delivered only in the acquiring
//! instance's acquire answer, masked in what the task reports, never in the store in
//! clear; `secrets:access` and scope; a manager without a key; key rotation.

use chrono::Utc;
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_protocol::delegate::Registered;
use switchboard_server::sealing::SecretKeys;
use switchboard_store::Claim;

use super::support::{ADMIN_KEY, Backend, DurableStore, TestApp, problem, registered_delegate, spawn_app};

const KEY_A: &str = "3f1c0a9e8d7b6a5948372615f4e3d2c1b0a99887766554433221100ffeeddccb";
const KEY_B: &str = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90";

/// The value these tests keep: long and unusual, so finding it anywhere is no accident.
const VALUE: &str = "pw-7Hq2Zx9Lr4Kd1Vb8";

fn keys(lines: &str) -> Option<SecretKeys> {
    Some(SecretKeys::parse(lines).unwrap())
}

async fn call(app: &TestApp, method: reqwest::Method, path: &str, key: &str, body: Option<Value>) -> reqwest::Response {
    let mut request = app.client.request(method, app.url(path)).bearer_auth(key);
    if let Some(body) = body {
        request = request.json(&body);
    }
    request.send().await.unwrap()
}

async fn created(app: &TestApp, body: Value) -> Value {
    let answer = call(app, reqwest::Method::POST, "/api/v1/secrets", ADMIN_KEY, Some(body)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    answer.json().await.unwrap()
}

/// Submits `body` over the API (waiting for a delegate: none is connected) and claims
/// it for `me`; the task's id.
async fn assigned(app: &TestApp, key: &str, body: Value, me: &Registered) -> String {
    let answer = call(app, reqwest::Method::POST, "/api/v1/tasks", key, Some(body)).await;
    assert_eq!(answer.status(), StatusCode::CREATED);
    let task: Value = answer.json().await.unwrap();
    let id = task["id"].as_str().unwrap().to_owned();
    let claimed = app
        .state
        .store()
        .claim_task(id.parse().unwrap(), me.instance_id, Utc::now())
        .await
        .unwrap();
    assert!(matches!(claimed, Claim::Claimed(_)), "{claimed:?}");
    id
}

async fn report(app: &TestApp, who: &Registered, task: &str, what: &str, body: Value) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/delegate/v1/tasks/{task}/{what}")))
        .bearer_auth(who.session_token.expose())
        .json(&body)
        .send()
        .await
        .unwrap()
}

async fn a_secret_value_reaches_the_acquiring_instance_only_and_the_store_never_in_clear(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = DurableStore::new(backend, dir.path()).await else {
        return;
    };
    let app = store.spawn_app_with(|s| s.secret_key_file = keys(KEY_A)).await;
    let secret = created(
        &app,
        json!({"name": "db-password", "account": "acme", "value": VALUE, "description": "the db"}),
    )
    .await;
    assert_eq!(
        (secret["kind"].clone(), secret["version"].clone()),
        (json!("value"), json!(1))
    );
    let me = registered_delegate(&app, "a").await;
    let other = registered_delegate(&app, "b").await;
    let body =
        json!({"account": "acme", "org": "eng", "type": "echo", "secrets": ["db-password"], "wait_for_delegate": true});
    let task = assigned(&app, ADMIN_KEY, body, &me).await;

    // Another instance gets nothing; the holder gets the value in its acquire answer.
    problem(
        report(&app, &other, &task, "acquire", json!({"attempt": 1})).await,
        409,
        "conflict",
    )
    .await;
    let acquired: Value = report(&app, &me, &task, "acquire", json!({"attempt": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        acquired["secrets"],
        json!([{"name": "db-password", "value": VALUE}]),
        "{acquired}"
    );

    // What the task reports is stored masked.
    let progress = json!({"attempt": 1, "progress": {"line": format!("connecting with {VALUE}")}});
    assert_eq!(
        report(&app, &me, &task, "progress", progress).await.status(),
        StatusCode::OK
    );
    let chunk = json!({"attempt": 1, "offset": 0, "text": format!("password={VALUE}\n")});
    assert_eq!(report(&app, &me, &task, "logs", chunk).await.status(), StatusCode::OK);
    let result =
        json!({"attempt": 1, "outcome": "failed", "result": {(VALUE): [VALUE]}, "error": format!("bad {VALUE}")});
    assert_eq!(
        report(&app, &me, &task, "result", result).await.status(),
        StatusCode::OK
    );

    // No answer of the API carries it.
    for path in [
        "/api/v1/secrets".to_owned(),
        format!("/api/v1/secrets/{}", secret["id"].as_str().unwrap()),
        format!("/api/v1/tasks/{task}"),
        format!("/api/v1/tasks/{task}/logs"),
        format!("/api/v1/tasks/{task}/selection-log"),
        format!("/api/v1/tasks/{task}/attempts"),
        "/api/v1/tasks".to_owned(),
        "/api/v1/audit".to_owned(),
        "/metrics".to_owned(),
    ] {
        let answer = call(&app, reqwest::Method::GET, &path, ADMIN_KEY, None).await;
        assert_eq!(answer.status(), StatusCode::OK, "{path}");
        let text = answer.text().await.unwrap();
        assert!(!text.contains(VALUE), "{path} shows the value: {text}");
    }
    let view: Value = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/tasks/{task}"),
        ADMIN_KEY,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(view["secrets"], json!(["db-password"]));
    assert_eq!(view["result"], json!({"***": ["***"]}), "{view}");
    assert_eq!(view["failure"]["detail"], "bad ***");
    let logs: Value = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/tasks/{task}/logs"),
        ADMIN_KEY,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(logs["chunks"][0]["text"], "password=***\n");
    // Nor does the store, anywhere, as the database keeps it.
    assert!(!store.holds(VALUE).await, "the store holds the value in clear");
    assert!(store.holds("db-password").await, "the search finds what is there");
}

async fn secrets_access_and_scope_decide_which_secrets_a_task_may_name(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = DurableStore::new(backend, dir.path()).await else {
        return;
    };
    let app = store.spawn_app_with(|s| s.secret_key_file = keys(KEY_A)).await;
    created(
        &app,
        json!({"name": "org-db", "account": "acme", "org": "eng", "value": VALUE}),
    )
    .await;
    created(
        &app,
        json!({"name": "acct-db", "account": "acme", "value": "account-level-value"}),
    )
    .await;
    created(
        &app,
        json!({"name": "ops-db", "account": "acme", "org": "ops", "value": "ops-value"}),
    )
    .await;
    let key = |permissions: Value| {
        let app = &app;
        async move {
            let body = json!({"name": format!("k{}", uuid::Uuid::new_v4().simple()), "account": "acme", "org": "eng", "permissions": permissions});
            let made: Value = app
                .post("/api/v1/api-keys", Some(ADMIN_KEY), &body)
                .await
                .json()
                .await
                .unwrap();
            made["key"].as_str().unwrap().to_owned()
        }
    };
    let runner = key(json!(["pipelines:execute"])).await;
    let user = key(json!(["pipelines:execute", "secrets:access"])).await;
    let task = |secret: &str| json!({"account": "acme", "org": "eng", "project": "web", "type": "echo", "secrets": [secret], "wait_for_delegate": true});
    let submit = |key: String, body: Value| {
        let app = &app;
        async move { call(app, reqwest::Method::POST, "/api/v1/tasks", &key, Some(body)).await }
    };
    // In scope without the permission: 403 naming it; with it: stored.
    let refused = problem(submit(runner.clone(), task("org-db")).await, 403, "forbidden").await;
    assert!(
        refused["detail"].as_str().unwrap().contains("secrets:access"),
        "{refused}"
    );
    assert_eq!(submit(user.clone(), task("org-db")).await.status(), StatusCode::CREATED);
    // Above the key's scope, in another org, or unknown: as if it did not exist.
    for absent in ["acct-db", "ops-db", "no-such-secret"] {
        let body = problem(submit(user.clone(), task(absent)).await, 422, "validation").await;
        assert_eq!(body["field"], "secrets", "{body}");
        assert!(
            body["detail"]
                .as_str()
                .unwrap()
                .contains(&format!("there is no secret {absent} that serves acme/eng/web")),
            "{body}"
        );
    }
    // The admin key sees the account's secret: it serves the project below it.
    assert_eq!(
        submit(ADMIN_KEY.to_owned(), task("acct-db")).await.status(),
        StatusCode::CREATED
    );
    // The routes of secrets themselves: the key lists only what it may use.
    let listed: Value = call(&app, reqwest::Method::GET, "/api/v1/secrets", &user, None)
        .await
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["org-db"]);
    let listed: Value = call(&app, reqwest::Method::GET, "/api/v1/secrets", &runner, None)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"], json!([]));
    // Names are unique in a scope; a value and a reference are not both given.
    problem(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/secrets",
            ADMIN_KEY,
            Some(json!({"name": "org-db", "account": "acme", "org": "eng", "value": "x1234"})),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let both = problem(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/secrets",
            ADMIN_KEY,
            Some(json!({"name": "x", "account": "acme", "value": "x1234", "reference": "env:X"})),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert_eq!(both["field"], "reference");
    let bad_reference = problem(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/secrets",
            ADMIN_KEY,
            Some(json!({"name": "x", "account": "acme", "reference": "env:1-bad"})),
        )
        .await,
        422,
        "validation",
    )
    .await;
    assert!(
        bad_reference["detail"]
            .as_str()
            .unwrap()
            .contains("environment variable"),
        "{bad_reference}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manager_without_a_key_refuses_values_says_why_and_still_takes_references() {
    let app = spawn_app().await;
    let refused = problem(
        call(
            &app,
            reqwest::Method::POST,
            "/api/v1/secrets",
            ADMIN_KEY,
            Some(json!({"name": "db", "account": "acme", "value": VALUE})),
        )
        .await,
        409,
        "no-secret-key",
    )
    .await;
    assert!(
        refused["detail"].as_str().unwrap().contains("secret_key_file"),
        "{refused}"
    );
    let status: Value = app.get("/api/v1/status", Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(status["secrets"]["values"], false, "{status}");
    assert!(
        status["secrets"]["detail"]
            .as_str()
            .unwrap()
            .contains("secret_key_file")
    );
    let reference = created(
        &app,
        json!({"name": "db", "account": "acme", "reference": "env:DB_PASSWORD"}),
    )
    .await;
    assert_eq!(
        (reference["kind"].clone(), reference["reference"].clone()),
        (json!("reference"), json!("env:DB_PASSWORD"))
    );
    // Replacing a reference by a value is refused alike, and changes nothing.
    let id = reference["id"].as_str().unwrap();
    problem(
        call(
            &app,
            reqwest::Method::PUT,
            &format!("/api/v1/secrets/{id}"),
            ADMIN_KEY,
            Some(json!({"value": VALUE})),
        )
        .await,
        409,
        "no-secret-key",
    )
    .await;
    let kept: Value = call(
        &app,
        reqwest::Method::GET,
        &format!("/api/v1/secrets/{id}"),
        ADMIN_KEY,
        None,
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(
        (kept["version"].clone(), kept["kind"].clone()),
        (json!(1), json!("reference"))
    );
}

async fn a_rotated_key_file_still_opens_old_values_and_seals_new_ones_with_the_last_key(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let Some(store) = DurableStore::new(backend, dir.path()).await else {
        return;
    };
    let old = store.spawn_app_with(|s| s.secret_key_file = keys(KEY_A)).await;
    let secret = created(&old, json!({"name": "db", "account": "acme", "value": VALUE})).await;
    let id = secret["id"].as_str().unwrap().to_owned();
    old.stop().await.unwrap();

    // Rotated: A still opens, B seals.
    let rotated = store
        .spawn_app_with(|s| s.secret_key_file = keys(&format!("{KEY_A}\n{KEY_B}\n")))
        .await;
    let status: Value = rotated
        .get("/api/v1/status", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["secrets"]["keys"], 2, "{status}");
    let me = registered_delegate(&rotated, "a").await;
    let body = json!({"account": "acme", "type": "echo", "secrets": ["db"], "wait_for_delegate": true});
    let first = assigned(&rotated, ADMIN_KEY, body.clone(), &me).await;
    let acquired: Value = report(&rotated, &me, &first, "acquire", json!({"attempt": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(acquired["secrets"][0]["value"], VALUE, "an old value opens: {acquired}");
    let replaced = call(
        &rotated,
        reqwest::Method::PUT,
        &format!("/api/v1/secrets/{id}"),
        ADMIN_KEY,
        Some(json!({"value": "the-new-value-2"})),
    )
    .await;
    assert_eq!(replaced.status(), StatusCode::OK);
    assert_eq!(replaced.json::<Value>().await.unwrap()["version"], 2);
    rotated.stop().await.unwrap();

    // Only B now: the new value opens; a manager with A alone cannot open it and says so.
    let newer = store.spawn_app_with(|s| s.secret_key_file = keys(KEY_B)).await;
    let me = registered_delegate(&newer, "b").await;
    let second = assigned(&newer, ADMIN_KEY, body.clone(), &me).await;
    let acquired: Value = report(&newer, &me, &second, "acquire", json!({"attempt": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(acquired["secrets"][0]["value"], "the-new-value-2");
    newer.stop().await.unwrap();
    let stale = store.spawn_app_with(|s| s.secret_key_file = keys(KEY_A)).await;
    let me = registered_delegate(&stale, "c").await;
    let third = assigned(&stale, ADMIN_KEY, body, &me).await;
    let acquired: Value = report(&stale, &me, &third, "acquire", json!({"attempt": 1}))
        .await
        .json()
        .await
        .unwrap();
    assert!(acquired["secrets"][0].get("value").is_none(), "{acquired}");
    assert!(
        acquired["secrets"][0]["missing"]
            .as_str()
            .unwrap()
            .contains("not in the manager's secret_key_file"),
        "{acquired}"
    );
}

crate::both_backends!(
    a_secret_value_reaches_the_acquiring_instance_only_and_the_store_never_in_clear,
    secrets_access_and_scope_decide_which_secrets_a_task_may_name,
    a_rotated_key_file_still_opens_old_values_and_seals_new_ones_with_the_last_key,
);
