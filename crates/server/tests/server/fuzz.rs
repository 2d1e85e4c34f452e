//! Arbitrary input never hurts the manager: random bytes and mangled variants of valid
//! bodies sent to every parser of a request body, and random frames sent on delegate
//! sockets. Every answer is a 4xx (or a 2xx when the mangling happened to stay valid),
//! never a 5xx or a dropped connection, and what a refused request leaves behind is
//! exactly what was there before. On both stores, every JSON body route and query
//! parameter that `/openapi.json` lists also gets the inputs an outside acceptance run
//! found to break the edge (issue 14): NULs, lone surrogates, deep nesting, huge numbers,
//! arrays in place of objects.

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::support::{ADMIN_KEY, TestApp, spawn_app};

/// A small deterministic generator (xorshift), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A body derived from `valid`: random bytes, or `valid` with a byte changed, a slice cut
/// out, garbage inserted, deep nesting, or a field's value replaced by another type.
fn mangle(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut body = valid.to_vec();
    match rng.below(7) {
        0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        1 if !body.is_empty() => {
            let i = rng.below(body.len());
            body[i] = rng.next() as u8;
            body
        }
        2 if !body.is_empty() => {
            let i = rng.below(body.len());
            body.truncate(i);
            body
        }
        3 => {
            let i = rng.below(body.len() + 1);
            let alphabet: &[u8] = b"{}[],:\"\\0123456789eE+-.nulltruefalse";
            let junk: Vec<u8> = (0..rng.below(20))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            body.splice(i..i, junk);
            body
        }
        4 => format!("{}{}", "[".repeat(rng.below(5000)), "]".repeat(rng.below(5000))).into_bytes(),
        5 => {
            let mut v: Value = serde_json::from_slice(valid).unwrap_or(json!({}));
            if let Some(map) = v.as_object_mut() {
                let keys: Vec<String> = map.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = &keys[rng.below(keys.len())];
                    let replacement = [
                        json!(null),
                        json!(-1),
                        json!(1e308),
                        json!("x"),
                        json!([]),
                        json!({}),
                        json!(true),
                    ];
                    map.insert(key.clone(), replacement[rng.below(replacement.len())].clone());
                }
            }
            serde_json::to_vec(&v).unwrap()
        }
        _ => body,
    }
}

async fn counts(app: &TestApp) -> Vec<usize> {
    let mut n = Vec::new();
    for list in [
        "/api/v1/delegate-tokens",
        "/api/v1/connectors",
        "/api/v1/tasks?limit=500",
        "/api/v1/api-keys",
        "/api/v1/delegates",
    ] {
        let answer: Value = app.get(list, Some(ADMIN_KEY)).await.json().await.unwrap();
        n.push(answer["items"].as_array().unwrap().len());
    }
    n
}

#[tokio::test]
async fn arbitrary_request_bodies_get_4xx_never_5xx_and_leave_state_unchanged() {
    let app = spawn_app().await;
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = token["token"].as_str().unwrap().to_owned();
    let routes: Vec<(&str, String, &str, Value)> = vec![
        (
            "POST",
            "/api/v1/delegate-tokens".into(),
            ADMIN_KEY,
            json!({"name": "n", "account": "acme"}),
        ),
        (
            "POST",
            "/api/v1/connectors".into(),
            ADMIN_KEY,
            json!({"name": "c", "account": "acme", "selectors": ["a"]}),
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            ADMIN_KEY,
            json!({"account": "acme", "type": "echo", "wait_for_delegate": true, "capabilities": [{"kind": "http", "url": "http://x/"}]}),
        ),
        (
            "POST",
            "/api/v1/tasks/explain".into(),
            ADMIN_KEY,
            json!({"account": "acme", "type": "echo"}),
        ),
        (
            "POST",
            "/api/v1/api-keys".into(),
            ADMIN_KEY,
            json!({"name": "k", "account": "acme", "permissions": []}),
        ),
        (
            "POST",
            "/delegate/v1/register".into(),
            secret.as_str(),
            json!({"name": "d", "hostname": "h", "version": "1"}),
        ),
    ];
    let mut rng = Rng(0x5EED_F00D);
    for (method, path, key, valid) in &routes {
        let valid = serde_json::to_vec(valid).unwrap();
        for round in 0..100 {
            let body = mangle(&mut rng, &valid);
            let before = counts(&app).await;
            let request = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.clone());
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} round {round}: connection failed: {e}"));
            let status = response.status();
            assert!(
                !status.is_server_error(),
                "{path} round {round}: {status} for {:?}",
                String::from_utf8_lossy(&body)
            );
            if status.is_client_error() {
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                assert!(problem["type"].is_string(), "{path}: a 4xx without a problem body");
                assert_eq!(
                    counts(&app).await,
                    before,
                    "{path} round {round}: a refused request changed state"
                );
            }
        }
    }
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn arbitrary_socket_frames_close_only_their_own_socket() {
    let app = spawn_app().await;
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = token["token"].as_str().unwrap();
    let request: switchboard_protocol::delegate::RegisterRequest =
        serde_json::from_value(json!({"name": "d", "hostname": "h", "version": "1"})).unwrap();
    let mut rng = Rng(0xC0FF_EE11);
    let valid = br#"{"type":"heartbeat","running":[]}"#;
    for round in 0..60 {
        let r = switchboard_client::delegate::register(&app.client, &app.url(""), secret, &request)
            .await
            .unwrap();
        let mut req = r.stream_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", r.session_token.expose()).parse().unwrap(),
        );
        let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let _hello = socket.next().await;
        let frame = match String::from_utf8(mangle(&mut rng, valid)) {
            Ok(text) => Message::text(text),
            Err(e) => Message::binary(e.into_bytes()),
        };
        socket.send(frame).await.unwrap();
        socket.send(Message::Ping(Default::default())).await.unwrap();
        // Either the manager closes with a protocol code, or it stays up and answers the ping.
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    let code = u16::from(f.code);
                    assert!([1003, 1007, 1009].contains(&code), "round {round}: closed with {code}");
                    break;
                }
                Ok(Some(Ok(Message::Pong(_)))) => break,
                Ok(Some(Ok(_))) => continue,
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

crate::both_backends!(hostile_json_on_every_documented_body_and_query_never_5xx_and_refusals_change_nothing);

/// Everything a refused request must leave as it was, read from the store itself (faster
/// than the API, and it sees what no list answer shows).
async fn dump(app: &TestApp) -> String {
    let store = app.state.store();
    let tasks = store
        .list_tasks(&switchboard_store::TaskQuery {
            limit: switchboard_store::query::MAX_PAGE,
            ..Default::default()
        })
        .await
        .unwrap();
    let audit = store
        .list_audit(&switchboard_store::AuditQuery {
            within: None,
            key_id: None,
            since: None,
            before_id: None,
            limit: switchboard_store::query::MAX_PAGE,
        })
        .await
        .unwrap();
    format!(
        "{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}\n{:?}",
        tasks.items,
        store.list_secrets(None).await.unwrap(),
        store.scope_policies(None).await.unwrap(),
        store.list_tokens(None).await.unwrap(),
        store.list_api_keys(None).await.unwrap(),
        store.list_connectors(None).await.unwrap(),
        store.list_groups(None).await.unwrap(),
        store.list_instances(None).await.unwrap(),
        audit,
    )
}

/// Where a hostile value goes in a body: the text of one leaf or object, by position.
const MARK: &str = "\u{1}MARK\u{1}";

/// Every leaf and object of `value` (root included) replaced, one at a time, by [`MARK`]:
/// the bodies into which each hostile text is spliced.
fn marked(value: &Value) -> Vec<String> {
    fn walk(value: &Value, at: &mut Vec<Value>, out: &mut Vec<Value>, root: &Value) {
        // `at` is the path as JSON keys/indices; rebuild the body with MARK there.
        let mut with_mark = root.clone();
        let mut slot = &mut with_mark;
        for step in at.iter() {
            slot = match step {
                Value::String(k) => &mut slot[k.as_str()],
                Value::Number(i) => &mut slot[i.as_u64().unwrap() as usize],
                _ => unreachable!(),
            };
        }
        *slot = Value::String(MARK.into());
        out.push(with_mark);
        match value {
            Value::Object(map) => {
                for (k, v) in map {
                    at.push(Value::String(k.clone()));
                    walk(v, at, out, root);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    at.push(json!(i));
                    walk(v, at, out, root);
                    at.pop();
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(value, &mut Vec::new(), &mut out, value);
    let mark = serde_json::to_string(MARK).unwrap();
    out.iter()
        .map(|v| serde_json::to_string(v).unwrap().replace(&mark, "@"))
        .collect()
}

/// The hostile texts spliced in place of a leaf or an object (at `@`): NULs in a value
/// and in a key, a lone surrogate, deep nesting, numbers no JSON parser keeps exactly,
/// and an array of the object's values where the object was.
fn hostile(valid: &Value) -> Vec<String> {
    let deep_arrays = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_objects = format!("{}1{}", "{\"a\":".repeat(10_000), "}".repeat(10_000));
    let texts = [
        r#""a\u0000b""#.to_owned(),
        r#"{"k\u0000":1}"#.to_owned(),
        r#""\ud800""#.to_owned(),
        r#"{"\udc00":1}"#.to_owned(),
        deep_arrays,
        deep_objects,
        "1e400".to_owned(),
        "1180591620717411303424".to_owned(),
        "-18446744073709551616".to_owned(),
        "[]".to_owned(),
    ];
    let mut bodies = Vec::new();
    for template in marked(valid) {
        for text in &texts {
            bodies.push(template.replace('@', text));
        }
    }
    // Each object as the array of its values (the sequence form serde would take).
    fn arrays(value: &Value, out: &mut Vec<Value>, rebuild: &dyn Fn(Value) -> Value) {
        if let Value::Object(map) = value {
            out.push(rebuild(Value::Array(map.values().cloned().collect())));
            for (k, v) in map {
                let k = k.clone();
                let map = map.clone();
                arrays(v, out, &|inner| {
                    let mut m = map.clone();
                    m.insert(k.clone(), inner);
                    rebuild(Value::Object(m))
                });
            }
        } else if let Value::Array(items) = value {
            for (i, v) in items.iter().enumerate() {
                let items = items.clone();
                arrays(v, out, &|inner| {
                    let mut list = items.clone();
                    list[i] = inner;
                    rebuild(Value::Array(list))
                });
            }
        }
    }
    let mut shapes = Vec::new();
    arrays(valid, &mut shapes, &|v| v);
    bodies.extend(shapes.iter().map(|v| serde_json::to_string(v).unwrap()));
    bodies
}

/// Query values no parameter takes: NULs, invalid UTF-8 (a surrogate's bytes), numbers
/// past every integer type, brackets.
const HOSTILE_QUERY: [&str; 8] = [
    "%00",
    "a%00b",
    "%ED%A0%80",
    "1e400",
    "1180591620717411303424",
    "-18446744073709551616",
    "%5B%5D",
    "-1",
];

async fn hostile_json_on_every_documented_body_and_query_never_5xx_and_refusals_change_nothing(
    backend: super::support::Backend,
) {
    let Some(app) = super::support::spawn_on(backend, |_| {}).await else {
        return;
    };
    let spec = super::spec::Spec::fetch(&app).await;
    // What the routes with ids need: a connector, a delegate (group and instance) with a
    // task it has acquired, so that its reports are read as far as the body.
    let post = |path: &'static str, body: Value| {
        let app = &app;
        async move {
            app.post(path, Some(ADMIN_KEY), &body)
                .await
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let token = post("/api/v1/delegate-tokens", json!({"name": "t", "account": "acme"})).await;
    let secret = token["token"].as_str().unwrap().to_owned();
    let connector = post("/api/v1/connectors", json!({"name": "c", "account": "acme"})).await;
    let connector = connector["id"].as_str().unwrap().to_owned();
    let stored_secret = post(
        "/api/v1/secrets",
        json!({"name": "s", "account": "acme", "reference": "env:S"}),
    )
    .await;
    let stored_secret = stored_secret["id"].as_str().unwrap().to_owned();
    let request =
        serde_json::from_value(json!({"name": "d", "hostname": "h", "version": "1.0.0", "task_types": ["echo"]}))
            .unwrap();
    let me = switchboard_client::delegate::register(&app.client, &app.url(""), &secret, &request)
        .await
        .unwrap();
    let task = post(
        "/api/v1/tasks",
        json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
    )
    .await;
    let task: switchboard_domain::TaskId = task["id"].as_str().unwrap().parse().unwrap();
    let claim = app
        .state
        .store()
        .claim_task(task, me.instance_id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(claim, switchboard_store::Claim::Claimed(_)));
    let session = me.session_token.clone();
    let task_body = json!({
        "account": "acme", "org": "o", "type": "echo", "wait_for_delegate": true,
        "payload": {"k": "v", "n": [1, {"x": "y"}]}, "selectors": ["a"],
        "capabilities": [{"kind": "tcp", "host": "db", "port": 5432}, {"kind": "http", "url": "http://x/"}],
        "priority": 1, "max_attempts": 2
    });
    // Every operation of the document that takes a JSON body, with a valid body for it.
    let routes: Vec<(&str, &str, String, &str, Value)> = vec![
        (
            "POST",
            "/api/v1/delegate-tokens",
            "/api/v1/delegate-tokens".into(),
            ADMIN_KEY,
            json!({"name": "n", "account": "acme", "org": "o"}),
        ),
        (
            "POST",
            "/api/v1/connectors",
            "/api/v1/connectors".into(),
            ADMIN_KEY,
            json!({"name": "c2", "account": "acme", "selectors": ["a"]}),
        ),
        (
            "PUT",
            "/api/v1/connectors/{id}",
            format!("/api/v1/connectors/{connector}"),
            ADMIN_KEY,
            json!({"name": "c", "selectors": ["b"]}),
        ),
        (
            "POST",
            "/api/v1/secrets",
            "/api/v1/secrets".into(),
            ADMIN_KEY,
            json!({"name": "s2", "account": "acme", "org": "o", "reference": "env:S2", "description": "d"}),
        ),
        (
            "PUT",
            "/api/v1/secrets/{id}",
            format!("/api/v1/secrets/{stored_secret}"),
            ADMIN_KEY,
            json!({"reference": "file:/run/s", "description": "d"}),
        ),
        (
            "POST",
            "/api/v1/tasks",
            "/api/v1/tasks".into(),
            ADMIN_KEY,
            task_body.clone(),
        ),
        (
            "POST",
            "/api/v1/tasks/explain",
            "/api/v1/tasks/explain".into(),
            ADMIN_KEY,
            task_body,
        ),
        (
            "POST",
            "/api/v1/api-keys",
            "/api/v1/api-keys".into(),
            ADMIN_KEY,
            json!({"name": "k", "account": "acme", "permissions": ["delegates:edit"]}),
        ),
        (
            "POST",
            "/api/v1/delegates",
            "/api/v1/delegates".into(),
            ADMIN_KEY,
            json!({"name": "declared", "account": "acme", "tags": ["t"], "task_types": ["echo"], "max_instances": 3}),
        ),
        (
            "PUT",
            "/api/v1/scope-policies",
            "/api/v1/scope-policies".to_owned(),
            ADMIN_KEY,
            json!({"account": "acme", "org": "x", "weight": 2, "retry": {"on": ["failed"], "initial_delay_ms": 10}}),
        ),
        (
            "PUT",
            "/api/v1/delegates/{id}/tags",
            format!("/api/v1/delegates/{}/tags", me.group_id),
            ADMIN_KEY,
            json!({"tags": ["x"]}),
        ),
        (
            "POST",
            "/api/v1/delegates/{id}/pause",
            format!("/api/v1/delegates/{}/pause", me.group_id),
            ADMIN_KEY,
            json!({"note": "window", "for": "1s"}),
        ),
        (
            "POST",
            "/api/v1/delegates/{id}/instances/{instance_id}/pause",
            format!("/api/v1/delegates/{}/instances/{}/pause", me.group_id, me.instance_id),
            ADMIN_KEY,
            json!({"note": "window", "for": "10m"}),
        ),
        (
            "POST",
            "/api/v1/delegates/{id}/jit",
            format!("/api/v1/delegates/{}/jit", me.group_id),
            ADMIN_KEY,
            json!({"expires_in": "5m"}),
        ),
        (
            "POST",
            "/delegate/v1/register",
            "/delegate/v1/register".into(),
            secret.as_str(),
            json!({"name": "d", "hostname": "h2", "version": "1.0.0", "tags": ["t"], "task_types": ["echo"], "capacity": 2, "max_tasks": 3}),
        ),
        (
            "POST",
            "/delegate/v1/tasks/{id}/acquire",
            format!("/delegate/v1/tasks/{task}/acquire"),
            session.expose(),
            json!({"attempt": 1}),
        ),
        (
            "POST",
            "/delegate/v1/tasks/{id}/progress",
            format!("/delegate/v1/tasks/{task}/progress"),
            session.expose(),
            json!({"attempt": 1, "progress": {"p": "x"}}),
        ),
        (
            "POST",
            "/delegate/v1/tasks/{id}/logs",
            format!("/delegate/v1/tasks/{task}/logs"),
            session.expose(),
            json!({"attempt": 1, "offset": 0, "text": "a line\n"}),
        ),
        (
            "POST",
            "/delegate/v1/tasks/{id}/result",
            format!("/delegate/v1/tasks/{task}/result"),
            session.expose(),
            json!({"attempt": 1, "outcome": "failed", "result": {"r": "x"}, "error": "e"}),
        ),
    ];
    let documented: std::collections::BTreeSet<(String, String)> = spec
        .operations()
        .into_iter()
        .filter(|(_, _, op)| op.get("requestBody").is_some())
        .map(|(m, t, _)| (m.to_string(), t))
        .collect();
    let covered: std::collections::BTreeSet<(String, String)> =
        routes.iter().map(|(m, t, ..)| (m.to_string(), t.to_string())).collect();
    assert_eq!(
        covered, documented,
        "every documented JSON body route, and only those, is fuzzed"
    );

    let mut expected = dump(&app).await;
    let mut sent = 0;
    for (method, _, path, key, valid) in &routes {
        for body in hostile(valid) {
            let response = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await
                .unwrap_or_else(|e| panic!("{method} {path}: connection failed: {e}"));
            let status = response.status();
            let shown: String = body.chars().take(200).collect();
            assert!(!status.is_server_error(), "{method} {path}: {status} for {shown}");
            let now = dump(&app).await;
            if status.is_client_error() {
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                assert!(
                    problem["type"].is_string(),
                    "{method} {path}: a 4xx without a problem body"
                );
                assert_eq!(now, expected, "{method} {path}: {status} for {shown} changed state");
            }
            expected = now;
            sent += 1;
        }
    }
    // Every query parameter of every operation, with values no parameter takes.
    for (method, template, op) in spec.operations() {
        if method != reqwest::Method::GET {
            continue;
        }
        let path = template
            .replace("/tasks/{id}", &format!("/tasks/{task}"))
            .replace("{id}", &uuid::Uuid::new_v4().to_string());
        for param in op["parameters"].as_array().into_iter().flatten() {
            if param["in"] != "query" {
                continue;
            }
            let name = param["name"].as_str().unwrap();
            for value in HOSTILE_QUERY {
                let response = app.get(&format!("{path}?{name}={value}"), Some(ADMIN_KEY)).await;
                let status = response.status();
                assert!(!status.is_server_error(), "GET {path}?{name}={value}: {status}");
                sent += 1;
            }
        }
    }
    assert_eq!(dump(&app).await, expected, "a GET changed state");
    assert!(sent > 500, "only {sent} requests were sent");
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}
