//! The edge holds every request to what the OpenAPI document says, the same on both
//! stores (issue 14, items 6 and 10): a string or key holding U+0000 is a 422 naming the
//! field on SQLite as on PostgreSQL (which cannot store it), whether it comes in a task,
//! a delegate's report or a socket frame; an array is refused where an object is
//! required; numbers outside the documented range, repeated `uniqueItems`, and an
//! `Idempotency-Key` that is not visible ASCII are refused; the dashboard's files are
//! served with the content types the document lists.

use futures::{SinkExt, StreamExt};
use reqwest::header;
use serde_json::{Value, json};
use switchboard_protocol::delegate::{RegisterRequest, Registered};
use switchboard_protocol::socket::close;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::spec::Spec;
use super::support::{ADMIN_KEY, Backend, PATIENCE, TestApp, problem, spawn_app, spawn_on};
use crate::both_backends;

both_backends!(
    a_nul_in_a_task_is_refused_alike_naming_the_field,
    a_nul_in_a_delegate_report_is_refused_and_the_task_keeps_running,
    a_nul_or_an_array_in_a_socket_frame_closes_that_socket_with_1007,
    arrays_are_refused_wherever_the_document_requires_an_object,
    a_nul_in_names_tags_or_registration_fields_is_refused_naming_the_field,
);

/// `body` as sent, byte for byte (with the JSON content type), so escapes arrive as written.
async fn send(app: &TestApp, method: &str, path: &str, key: &str, body: &str) -> reqwest::Response {
    app.client
        .request(method.parse().unwrap(), app.url(path))
        .bearer_auth(key)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// Expects a 422 `validation` naming `field` (none when `field` is empty: the whole
/// body is to blame); returns the detail.
async fn refused(response: reqwest::Response, field: &str) -> String {
    let body = problem(response, 422, "validation").await;
    assert_eq!(
        body.get("field").and_then(Value::as_str).unwrap_or_default(),
        field,
        "{body}"
    );
    body["detail"].as_str().unwrap().to_owned()
}

async fn task_count(app: &TestApp) -> usize {
    let list: Value = app.get("/api/v1/tasks", Some(ADMIN_KEY)).await.json().await.unwrap();
    list["items"].as_array().unwrap().len()
}

async fn a_nul_in_a_task_is_refused_alike_naming_the_field(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let task =
        |payload: &str| format!(r#"{{"account":"acme","type":"echo","wait_for_delegate":true,"payload":{payload}}}"#);
    for (payload, field) in [
        (r#""a\u0000b""#, "payload"),
        (r#"{"a":"x\u0000"}"#, "payload.a"),
        (r#"{"a":[1,{"b":"\u0000"}]}"#, "payload.a[1].b"),
        (r#"{"a\u0000":1}"#, "payload"),
    ] {
        let detail = refused(
            send(&app, "POST", "/api/v1/tasks", ADMIN_KEY, &task(payload)).await,
            field,
        )
        .await;
        assert!(detail.contains("U+0000"), "{detail}");
    }
    // Elsewhere in the body too: an identifier, a selector, a capability's URL.
    let body = r#"{"account":"acme","type":"echo","selectors":["gpu\u0000"]}"#;
    refused(
        send(&app, "POST", "/api/v1/tasks", ADMIN_KEY, body).await,
        "selectors[0]",
    )
    .await;
    let body = r#"{"account":"acme","type":"echo","capabilities":[{"kind":"http","url":"http://x/\u0000"}]}"#;
    refused(
        send(&app, "POST", "/api/v1/tasks", ADMIN_KEY, body).await,
        "capabilities[0].url",
    )
    .await;
    // A lone surrogate is not a character at all: the body is not JSON we can read.
    problem(
        send(&app, "POST", "/api/v1/tasks", ADMIN_KEY, &task(r#""\ud800""#)).await,
        400,
        "bad-request",
    )
    .await;
    assert_eq!(task_count(&app).await, 0, "a refused submission stored a task");

    // An escaped backslash followed by `u0000` is six ordinary characters, kept as sent.
    let created = send(&app, "POST", "/api/v1/tasks", ADMIN_KEY, &task(r#"{"a":"\\u0000"}"#)).await;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await.unwrap();
    let id = created["id"].as_str().unwrap().parse().unwrap();
    let stored = app.state.store().get_task(id).await.unwrap();
    assert_eq!(stored.spec.payload, json!({"a": "\\u0000"}));
}

/// A delegate token and an instance registered with it (capable of `echo`).
async fn delegate(app: &TestApp) -> Registered {
    let created: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let request: RegisterRequest =
        serde_json::from_value(json!({"name": "d", "hostname": "h", "version": "1.0.0", "task_types": ["echo"]}))
            .unwrap();
    switchboard_client::delegate::register(&app.client, &app.url(""), created["token"].as_str().unwrap(), &request)
        .await
        .unwrap()
}

async fn a_nul_in_a_delegate_report_is_refused_and_the_task_keeps_running(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = delegate(&app).await;
    // Queued and claimed through the store, as the delegate task tests do: the socket and
    // placement are not what this is about.
    let task: Value = app
        .post(
            "/api/v1/tasks",
            Some(ADMIN_KEY),
            &json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id: switchboard_domain::TaskId = task["id"].as_str().unwrap().parse().unwrap();
    let claim = app
        .state
        .store()
        .claim_task(id, me.instance_id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(claim, switchboard_store::Claim::Claimed(_)));
    let report = |what: &str| format!("/delegate/v1/tasks/{id}/{what}");
    let acquired = send(
        &app,
        "POST",
        &report("acquire"),
        me.session_token.expose(),
        r#"{"attempt":1}"#,
    )
    .await;
    assert_eq!(acquired.status(), 200);

    for (what, body, field) in [
        (
            "progress",
            r#"{"attempt":1,"progress":{"step":"a\u0000"}}"#,
            "progress.step",
        ),
        ("progress", r#"{"attempt":1,"progress":{"\u0000":1}}"#, "progress"),
        (
            "result",
            r#"{"attempt":1,"outcome":"succeeded","result":{"out":"\u0000"}}"#,
            "result.out",
        ),
        (
            "result",
            r#"{"attempt":1,"outcome":"succeeded","result":"\u0000"}"#,
            "result",
        ),
        (
            "result",
            r#"{"attempt":1,"outcome":"failed","error":"boom\u0000"}"#,
            "error",
        ),
    ] {
        refused(
            send(&app, "POST", &report(what), me.session_token.expose(), body).await,
            field,
        )
        .await;
    }
    // Nothing was lost: the task still runs, and a clean result ends it.
    let stored = app.state.store().get_task(id).await.unwrap();
    assert_eq!(stored.state, switchboard_domain::TaskState::Running);
    assert_eq!((stored.progress, stored.result), (None, None));
    let done = send(
        &app,
        "POST",
        &report("result"),
        me.session_token.expose(),
        r#"{"attempt":1,"outcome":"succeeded","result":{"out":"\\u0000"}}"#,
    )
    .await;
    assert_eq!(done.json::<Value>().await.unwrap()["state"], "succeeded");
    let stored = app.state.store().get_task(id).await.unwrap();
    assert_eq!(stored.result, Some(json!({"out": "\\u0000"})));
}

async fn a_nul_in_names_tags_or_registration_fields_is_refused_naming_the_field(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = delegate(&app).await;
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t2", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let before = app.state.store().list_instances(None).await.unwrap().len();
    for (path, key, body, field) in [
        (
            "/api/v1/delegate-tokens",
            ADMIN_KEY,
            r#"{"name":"a\u0000","account":"acme"}"#,
            "name",
        ),
        (
            "/api/v1/api-keys",
            ADMIN_KEY,
            r#"{"name":"k","account":"acme\u0000"}"#,
            "account",
        ),
        (
            "/api/v1/connectors",
            ADMIN_KEY,
            r#"{"name":"c","account":"acme","selectors":["\u0000"]}"#,
            "selectors[0]",
        ),
        (
            "/delegate/v1/register",
            token.as_str(),
            r#"{"name":"d","hostname":"h\u0000","version":"1.0.0"}"#,
            "hostname",
        ),
        (
            "/delegate/v1/register",
            token.as_str(),
            r#"{"name":"d","hostname":"h","version":"1\u0000"}"#,
            "version",
        ),
        (
            "/delegate/v1/register",
            token.as_str(),
            r#"{"name":"d","hostname":"h","version":"1","tags":["x\u0000"]}"#,
            "tags[0]",
        ),
    ] {
        let detail = refused(send(&app, "POST", path, key, body).await, field).await;
        assert!(detail.contains("U+0000"), "{path}: {detail}");
    }
    let tags = format!("/api/v1/delegates/{}/tags", me.group_id);
    refused(
        send(&app, "PUT", &tags, ADMIN_KEY, r#"{"tags":["ok","\u0000"]}"#).await,
        "tags[1]",
    )
    .await;
    assert_eq!(app.state.store().list_instances(None).await.unwrap().len(), before);
    assert_eq!(app.state.store().list_tokens(None).await.unwrap().len(), 2);
    assert_eq!(app.state.store().list_api_keys(None).await.unwrap().len(), 0);
    assert_eq!(app.state.store().list_connectors(None).await.unwrap().len(), 0);
}

/// Opens the instance's socket and reads its hello.
async fn socket(
    r: &Registered,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = r.stream_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", r.session_token.expose()).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.expect("socket opens");
    let _hello = socket.next().await.unwrap().unwrap();
    socket
}

async fn a_nul_or_an_array_in_a_socket_frame_closes_that_socket_with_1007(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let me = delegate(&app).await;
    for (frame, named) in [
        (
            r#"{"type":"validation_result","request_id":"r","results":[{"basis":"tcp:db:1","reachable":false,"detail":"refused\u0000"}]}"#,
            "results[0].detail",
        ),
        (
            r#"{"type":"validation_result","request_id":"r","results":[{"basis":"tcp:\u0000:1","reachable":true}]}"#,
            "results[0].basis",
        ),
        (r#"["heartbeat",[]]"#, "invalid type: sequence, expected a map"),
        (
            r#"{"type":"heartbeat","running":[["00000000-0000-0000-0000-000000000000",1]]}"#,
            "running[0]",
        ),
    ] {
        let mut socket = socket(&me).await;
        socket.send(Message::text(frame)).await.unwrap();
        // One deadline for the whole wait: the manager's pings would otherwise keep a
        // per-frame timeout from ever firing on a socket it does not close.
        let closing = async {
            loop {
                match socket.next().await {
                    Some(Ok(Message::Close(Some(f)))) => break (u16::from(f.code), f.reason.to_string()),
                    Some(Ok(_)) => continue,
                    other => panic!("{frame}: expected a close frame, got {other:?}"),
                }
            }
        };
        let (code, reason) = tokio::time::timeout(PATIENCE, closing)
            .await
            .unwrap_or_else(|_| panic!("{frame}: the socket stayed open"));
        assert_eq!(code, close::INVALID_MESSAGE, "{frame}: {reason}");
        assert!(reason.contains(named), "{frame}: {reason}");
    }
    // Nothing of the refused frames was stored, and the manager is fine.
    let results = app.state.store().capability_results(&[me.instance_id]).await.unwrap();
    assert_eq!(results, vec![]);
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

async fn arrays_are_refused_wherever_the_document_requires_an_object(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let detail = refused(
        send(&app, "POST", "/api/v1/delegate-tokens", ADMIN_KEY, r#"["name","acme"]"#).await,
        "",
    )
    .await;
    assert!(detail.contains("an array where an object"), "{detail}");
    let tokens: Value = app
        .get("/api/v1/delegate-tokens", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(tokens["items"], json!([]));
    for (path, body, field) in [
        ("/api/v1/api-keys", r#"["k","acme",null,null,[]]"#, ""),
        ("/api/v1/connectors", r#"["c","acme"]"#, ""),
        (
            "/api/v1/tasks",
            r#"{"account":"acme","type":"echo","capabilities":[["tcp","db",5432]]}"#,
            "capabilities[0]",
        ),
        (
            "/api/v1/tasks",
            r#"{"account":"acme","type":"echo","capabilities":[["http","http://x/"]]}"#,
            "capabilities[0]",
        ),
        ("/api/v1/tasks/explain", r#"["acme",null,null,"echo"]"#, ""),
    ] {
        let response = send(&app, "POST", path, ADMIN_KEY, body).await;
        let problem = problem(response, 422, "validation").await;
        assert_eq!(
            problem.get("field").and_then(Value::as_str).unwrap_or(""),
            field,
            "{path} {body}: {problem}"
        );
    }
    assert_eq!(task_count(&app).await, 0);
}

/// The integer bounds of a schema (following `$ref`s and a nullable `oneOf`).
fn bounds(spec: &Spec, schema: &Value) -> Option<(i64, i64)> {
    let schema = spec.resolve(schema);
    let schema = schema
        .get("oneOf")
        .and_then(|alternatives| alternatives.as_array()?.iter().find(|a| a["type"] != "null"))
        .map_or(schema, |s| spec.resolve(s));
    Some((schema.get("minimum")?.as_i64()?, schema.get("maximum")?.as_i64()?))
}

#[tokio::test]
async fn every_documented_range_of_a_query_or_task_field_is_what_the_server_enforces() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let mut checked = Vec::new();
    // Query parameters: every integer parameter with bounds, on every operation.
    for (method, template, op) in spec.operations() {
        if method != reqwest::Method::GET || template.contains('{') {
            continue;
        }
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] != "query" {
                continue;
            }
            let name = param["name"].as_str().unwrap();
            let Some((min, max)) = bounds(&spec, &param["schema"]) else {
                continue;
            };
            for (value, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
                let response = app.get(&format!("{template}?{name}={value}"), Some(ADMIN_KEY)).await;
                if ok {
                    assert_eq!(response.status(), 200, "{template}?{name}={value}");
                } else {
                    refused(response, name).await;
                }
            }
            checked.push(format!("{template}?{name}"));
        }
    }
    // The task body's numbers, through the dry run (which stores nothing).
    let submit = spec.resolve(&spec.operation(&reqwest::Method::POST, "/api/v1/tasks")["requestBody"]["content"]["application/json"]["schema"]);
    for (name, schema) in submit["properties"].as_object().unwrap() {
        let Some((min, max)) = bounds(&spec, schema) else {
            continue;
        };
        for (value, ok) in [(min, true), (max, true), (min - 1, false), (max + 1, false)] {
            let body = json!({"account": "acme", "type": "echo", name.as_str(): value});
            let response = app.post("/api/v1/tasks/explain", Some(ADMIN_KEY), &body).await;
            if ok {
                assert_eq!(response.status(), 200, "{name}={value}");
            } else {
                refused(response, name).await;
            }
        }
        checked.push(format!("SubmitTask.{name}"));
    }
    // The task body's lists: at the documented `maxItems`, and one past it.
    for (name, schema) in submit["properties"].as_object().unwrap() {
        let Some(max) = schema.get("maxItems").and_then(Value::as_u64) else {
            continue;
        };
        let item = |i: u64| match name.as_str() {
            "selectors" => json!(format!("s{i}")),
            "capabilities" => json!({"kind": "tcp", "host": format!("h{i}"), "port": 1}),
            other => panic!("no item generator for {other}"),
        };
        for (n, ok) in [(max, true), (max + 1, false)] {
            let body = json!({"account": "acme", "type": "echo", name.as_str(): (0..n).map(item).collect::<Vec<_>>()});
            let response = app.post("/api/v1/tasks/explain", Some(ADMIN_KEY), &body).await;
            if ok {
                assert_eq!(response.status(), 200, "{n} {name}");
            } else {
                refused(response, name).await;
            }
        }
        checked.push(format!("SubmitTask.{name}[]"));
    }
    for expected in [
        "SubmitTask.selectors[]",
        "SubmitTask.capabilities[]",
        "/api/v1/tasks?limit",
        "/api/v1/audit?limit",
        "SubmitTask.priority",
        "SubmitTask.max_attempts",
        "SubmitTask.assign_timeout_ms",
        "SubmitTask.execution_timeout_ms",
    ] {
        assert!(
            checked.iter().any(|c| c == expected),
            "{expected} has no documented range: {checked:?}"
        );
    }
    // A port outside 1..=65535, and a limit no u32 holds, are refused too.
    let port =
        json!({"account": "acme", "type": "echo", "capabilities": [{"kind": "tcp", "host": "db", "port": 65536}]});
    refused(
        app.post("/api/v1/tasks/explain", Some(ADMIN_KEY), &port).await,
        "capabilities[0]",
    )
    .await;
    let past_u32 = problem(
        app.get("/api/v1/tasks?limit=4294967296", Some(ADMIN_KEY)).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(past_u32["field"], "limit", "{past_u32}");
}

#[tokio::test]
async fn a_permission_listed_twice_is_refused_as_the_document_says_unique_items() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let schema = &spec.0["components"]["schemas"]["CreateApiKey"];
    assert_eq!(schema["properties"]["permissions"]["uniqueItems"], true, "{schema}");
    let body = json!({"name": "k", "account": "acme", "permissions": ["pipelines:execute", "delegates:edit", "pipelines:execute"]});
    let detail = refused(
        app.post("/api/v1/api-keys", Some(ADMIN_KEY), &body).await,
        "permissions",
    )
    .await;
    assert!(detail.contains("item 2 repeats"), "{detail}");
    let keys: Value = app.get("/api/v1/api-keys", Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(keys["items"], json!([]));
    let body = json!({"name": "k", "account": "acme", "permissions": ["pipelines:execute", "delegates:edit"]});
    assert_eq!(app.post("/api/v1/api-keys", Some(ADMIN_KEY), &body).await.status(), 201);
}

#[tokio::test]
async fn an_idempotency_key_that_is_not_visible_ascii_is_a_400_as_its_error_says() {
    let app = spawn_app().await;
    let body = json!({"account": "acme", "type": "echo", "wait_for_delegate": true});
    let submit = |key: reqwest::header::HeaderValue| {
        app.client
            .post(app.url("/api/v1/tasks"))
            .bearer_auth(ADMIN_KEY)
            .header("idempotency-key", key)
            .json(&body)
            .send()
    };
    for bad in [&b"two words"[..], b"tab\there", "ключ".as_bytes(), &[b'k'; 256]] {
        let value = reqwest::header::HeaderValue::from_bytes(bad).unwrap();
        let problem = problem(submit(value).await.unwrap(), 400, "bad-request").await;
        assert!(
            problem["detail"].as_str().unwrap().contains("visible ASCII"),
            "{problem}"
        );
    }
    assert_eq!(task_count(&app).await, 0);
    let good = reqwest::header::HeaderValue::from_static("deploy-42:step/1");
    assert_eq!(submit(good.clone()).await.unwrap().status(), 201);
    assert_eq!(submit(good).await.unwrap().status(), 200);
}

#[tokio::test]
async fn every_dashboard_file_is_answered_with_a_content_type_the_document_lists() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let op = spec.operation(&reqwest::Method::GET, "/ui/{file}");
    let listed: Vec<&String> = op["responses"]["200"]["content"].as_object().unwrap().keys().collect();
    for file in ["app.js", "app.css", "index.html"] {
        let response = app.get(&format!("/ui/{file}"), None).await;
        assert_eq!(response.status(), 200, "{file}");
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        assert!(
            listed.iter().any(|m| content_type.starts_with(m.as_str())),
            "{file} is sent as {content_type}; the document lists {listed:?}"
        );
    }
}

#[tokio::test]
async fn a_selector_is_refused_past_the_length_the_document_gives_it() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let input = &spec.0["components"]["schemas"]["SelectorInput"];
    let max = input["maxLength"].as_u64().expect("a documented maxLength") as usize;
    for (selector, ok) in [
        ("s".repeat(max), true),
        ("s".repeat(max + 1), false),
        (String::new(), false),
    ] {
        let body = json!({"account": "acme", "type": "echo", "selectors": [selector]});
        let response = app.post("/api/v1/tasks/explain", Some(ADMIN_KEY), &body).await;
        if ok {
            assert_eq!(response.status(), 200, "{} characters", selector.len());
        } else {
            refused(response, "selectors").await;
        }
    }
}
