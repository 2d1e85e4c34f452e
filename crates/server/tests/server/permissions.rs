//! The permission matrix: for every `/api/v1` route, a request with no key, with a key
//! scoped outside the resource, with an in-scope key lacking the permission, and with an
//! in-scope key holding it. Outside the scope the answer is 404, as if the resource did
//! not exist; a missing permission is 403 naming it; no key is 401.

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use super::support::{ADMIN_KEY, TestApp, spawn_app};

async fn call(app: &TestApp, key: Option<&str>, method: &Method, path: &str, body: &Value) -> (StatusCode, Value) {
    let mut request = app.client.request(method.clone(), app.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    if *method == Method::POST || *method == Method::PUT {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn key(app: &TestApp, scope: Value, permissions: Value) -> String {
    let mut body = json!({"name": format!("k{}", switchboard_domain::TaskId::new().to_string().replace('-', "")), "permissions": permissions});
    body.as_object_mut().unwrap().extend(scope.as_object().unwrap().clone());
    let (status, created) = call(app, Some(ADMIN_KEY), &Method::POST, "/api/v1/api-keys", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    created["key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn every_route_answers_as_the_permission_matrix_says() {
    let app = spawn_app().await;
    let eng = json!({"account": "acme", "org": "eng"});
    let all = json!([
        "delegates:edit",
        "delegates:delete",
        "pipelines:execute",
        "connectors:access",
        "secrets:access"
    ]);
    let holder = key(&app, eng.clone(), all.clone()).await;
    let viewer = key(&app, eng.clone(), json!([])).await;
    let outsider = key(&app, json!({"account": "acme", "org": "ops"}), all).await;

    // Resources in acme/eng, made with the admin key.
    let admin = |m: Method, p: &str, b: Value| {
        let app = &app;
        let p = p.to_owned();
        async move { call(app, Some(ADMIN_KEY), &m, &p, &b).await.1 }
    };
    let token = admin(
        Method::POST,
        "/api/v1/delegate-tokens",
        json!({"name": "eng-token", "account": "acme", "org": "eng"}),
    )
    .await;
    let secret = token["token"].as_str().unwrap();
    let request: switchboard_protocol::delegate::RegisterRequest =
        serde_json::from_value(json!({"name": "eng-d", "hostname": "h", "version": "1"})).unwrap();
    let registered = switchboard_client::delegate::register(&app.client, &app.url(""), secret, &request)
        .await
        .unwrap();
    let connector = admin(
        Method::POST,
        "/api/v1/connectors",
        json!({"name": "eng-c", "account": "acme", "org": "eng"}),
    )
    .await;
    let task = admin(
        Method::POST,
        "/api/v1/tasks",
        json!({"account": "acme", "org": "eng", "type": "echo", "wait_for_delegate": true}),
    )
    .await;
    let (tid, gid, cid, kid) = (
        token["id"].as_str().unwrap().to_owned(),
        registered.group_id.to_string(),
        connector["id"].as_str().unwrap().to_owned(),
        task["id"].as_str().unwrap().to_owned(),
    );
    let iid = registered.instance_id.to_string();
    let new_token = json!({"name": "more", "account": "acme", "org": "eng"});
    let new_connector = json!({"name": "more", "account": "acme", "org": "eng"});
    let new_task = json!({"account": "acme", "org": "eng", "type": "echo", "wait_for_delegate": true});

    let secret = admin(
        Method::POST,
        "/api/v1/secrets",
        json!({"name": "eng-s", "account": "acme", "org": "eng", "reference": "env:ENG_S"}),
    )
    .await;
    let doomed = admin(
        Method::POST,
        "/api/v1/secrets",
        json!({"name": "eng-doomed", "account": "acme", "org": "eng", "reference": "env:ENG_D"}),
    )
    .await;
    let (sid, did) = (
        secret["id"].as_str().unwrap().to_owned(),
        doomed["id"].as_str().unwrap().to_owned(),
    );
    // (method, path, body, the permission needed; None = view, always granted in scope)
    let routes: Vec<(Method, String, Value, Option<&str>, StatusCode)> = vec![
        (
            Method::GET,
            format!("/api/v1/delegate-tokens/{tid}"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/delegate-tokens/{tid}/install?format=kubernetes"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/delegate-tokens/{tid}/install?format=compose&new_token=true"),
            Value::Null,
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/delegate-tokens".into(),
            new_token,
            Some("delegates:edit"),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            format!("/api/v1/delegates/{gid}"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/delegates/{gid}/demand"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/delegates".into(),
            json!({"name": "declared", "account": "acme", "org": "eng", "task_types": ["echo"]}),
            Some("delegates:edit"),
            StatusCode::CREATED,
        ),
        (
            Method::PUT,
            "/api/v1/scope-policies".into(),
            json!({"account": "acme", "org": "eng", "weight": 2}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::PUT,
            format!("/api/v1/delegates/{gid}/tags"),
            json!({"tags": ["x"]}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/disable"),
            json!({}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/enable"),
            json!({}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/pause"),
            json!({"note": "maintenance", "for": "1s"}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/resume"),
            json!({}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/instances/{iid}/pause"),
            json!({"note": "maintenance", "for": "1s"}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/instances/{iid}/resume"),
            json!({}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegates/{gid}/jit"),
            json!({}),
            Some("delegates:edit"),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            format!("/api/v1/connectors/{cid}"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/connectors".into(),
            new_connector,
            Some("connectors:access"),
            StatusCode::CREATED,
        ),
        (
            Method::PUT,
            format!("/api/v1/connectors/{cid}"),
            json!({"name": "eng-c2", "selectors": []}),
            Some("connectors:access"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/tasks".into(),
            new_task.clone(),
            Some("pipelines:execute"),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/v1/tasks/explain".into(),
            new_task,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{kid}"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{kid}/wait?timeout_ms=1"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{kid}/selection-log"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{kid}/attempts"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::GET,
            format!("/api/v1/tasks/{kid}/logs"),
            Value::Null,
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/v1/secrets".into(),
            json!({"name": "eng-new", "account": "acme", "org": "eng", "reference": "env:ENG_NEW"}),
            Some("secrets:access"),
            StatusCode::CREATED,
        ),
        (
            Method::GET,
            format!("/api/v1/secrets/{sid}"),
            Value::Null,
            Some("secrets:access"),
            StatusCode::OK,
        ),
        (
            Method::PUT,
            format!("/api/v1/secrets/{sid}"),
            json!({"reference": "env:ENG_S2"}),
            Some("secrets:access"),
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            format!("/api/v1/secrets/{did}"),
            Value::Null,
            Some("secrets:access"),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::POST,
            format!("/api/v1/tasks/{kid}/cancel"),
            json!({}),
            Some("pipelines:execute"),
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/v1/delegate-tokens/{tid}/revoke"),
            json!({}),
            Some("delegates:edit"),
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            "/api/v1/scope-policies?account=acme&org=eng".into(),
            Value::Null,
            Some("delegates:edit"),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::DELETE,
            format!("/api/v1/connectors/{cid}"),
            Value::Null,
            Some("connectors:access"),
            StatusCode::NO_CONTENT,
        ),
        (
            Method::DELETE,
            format!("/api/v1/delegates/{gid}"),
            Value::Null,
            Some("delegates:delete"),
            StatusCode::NO_CONTENT,
        ),
    ];
    for (method, path, body, needs, ok) in &routes {
        let case = format!("{method} {path}");
        assert_eq!(
            call(&app, None, method, path, body).await.0,
            StatusCode::UNAUTHORIZED,
            "no key: {case}"
        );
        let (status, answer) = call(&app, Some(&outsider), method, path, body).await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "outside the scope it does not exist: {case}: {answer}"
        );
        let (status, answer) = call(&app, Some(&viewer), method, path, body).await;
        match needs {
            None => assert_eq!(status, *ok, "view is always granted: {case}: {answer}"),
            Some(p) => {
                assert_eq!(status, StatusCode::FORBIDDEN, "{case}: {answer}");
                assert!(answer["detail"].as_str().unwrap().contains(p), "names {p}: {answer}");
            }
        }
        let (status, answer) = call(&app, Some(&holder), method, path, body).await;
        assert_eq!(status, *ok, "with {needs:?}: {case}: {answer}");
    }

    // Lists show only what lies in the key's scope.
    for list in [
        "/api/v1/delegate-tokens",
        "/api/v1/connectors",
        "/api/v1/tasks",
        "/api/v1/api-keys",
    ] {
        let (status, mine) = call(&app, Some(&viewer), &Method::GET, list, &Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        assert!(
            !mine["items"].as_array().unwrap().is_empty(),
            "{list} shows eng's items to an eng key"
        );
        let (_, theirs) = call(&app, Some(&outsider), &Method::GET, list, &Value::Null).await;
        let leaked: Vec<&Value> = theirs["items"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["org"] == "eng")
            .collect();
        assert!(leaked.is_empty(), "{list} leaks eng's items to an ops key: {leaked:?}");
    }
    // Scope policies: an eng key lists eng's, an ops key none of them, even by name.
    let policy = json!({"account": "acme", "org": "eng", "weight": 3});
    let (status, _) = call(&app, Some(&holder), &Method::PUT, "/api/v1/scope-policies", &policy).await;
    assert_eq!(status, StatusCode::OK);
    let (_, mine) = call(
        &app,
        Some(&viewer),
        &Method::GET,
        "/api/v1/scope-policies",
        &Value::Null,
    )
    .await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1, "{mine}");
    for path in ["/api/v1/scope-policies", "/api/v1/scope-policies?account=acme&org=eng"] {
        let (status, theirs) = call(&app, Some(&outsider), &Method::GET, path, &Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(theirs["items"], json!([]), "{path} leaks eng's policy to an ops key");
    }
    // The queue too: an eng key counts eng's waiting task, an ops key nothing of it, even
    // when it asks for eng by name.
    let (status, mine) = call(&app, Some(&viewer), &Method::GET, "/api/v1/queue", &Value::Null).await;
    assert_eq!(status, StatusCode::OK);
    assert!(mine["waiting"].as_u64().unwrap() >= 1, "{mine}");
    for path in ["/api/v1/queue", "/api/v1/queue?account=acme&org=eng"] {
        let (status, theirs) = call(&app, Some(&outsider), &Method::GET, path, &Value::Null).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(theirs["waiting"], 0, "{path} leaks eng's queue to an ops key: {theirs}");
    }
}

#[tokio::test]
async fn a_key_grants_only_what_it_holds_and_other_kinds_of_secret_are_refused() {
    let app = spawn_app().await;
    let eng = json!({"account": "acme", "org": "eng"});
    let executor = key(&app, eng.clone(), json!(["pipelines:execute"])).await;
    let mut body =
        json!({"name": "sub", "account": "acme", "org": "eng", "project": "web", "permissions": ["delegates:delete"]});
    let (status, answer) = call(&app, Some(&executor), &Method::POST, "/api/v1/api-keys", &body).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{answer}");
    body["permissions"] = json!(["pipelines:execute"]);
    let (status, created) = call(&app, Some(&executor), &Method::POST, "/api/v1/api-keys", &body).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    let sub = created["key"].as_str().unwrap();
    assert!(sub.starts_with("sbk_"));
    // The new key works below, and not above, its scope.
    let web_task =
        json!({"account": "acme", "org": "eng", "project": "web", "type": "echo", "wait_for_delegate": true});
    assert_eq!(
        call(&app, Some(sub), &Method::POST, "/api/v1/tasks", &web_task).await.0,
        StatusCode::CREATED
    );
    let eng_task = json!({"account": "acme", "org": "eng", "type": "echo", "wait_for_delegate": true});
    assert_eq!(
        call(&app, Some(sub), &Method::POST, "/api/v1/tasks", &eng_task).await.0,
        StatusCode::NOT_FOUND
    );

    // Revoked keys stop working.
    let id = created["id"].as_str().unwrap();
    let (status, _) = call(
        &app,
        Some(&executor),
        &Method::POST,
        &format!("/api/v1/api-keys/{id}/revoke"),
        &json!({}),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        call(&app, Some(sub), &Method::GET, "/api/v1/tasks", &Value::Null)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );

    // A delegate token is not an API key, and an API key is not a delegate token.
    let token = call(
        &app,
        Some(ADMIN_KEY),
        &Method::POST,
        "/api/v1/delegate-tokens",
        &json!({"name": "t", "account": "acme"}),
    )
    .await
    .1;
    let secret = token["token"].as_str().unwrap();
    assert_eq!(
        call(&app, Some(secret), &Method::GET, "/api/v1/tasks", &Value::Null)
            .await
            .0,
        StatusCode::UNAUTHORIZED
    );
    let register = app
        .client
        .post(app.url("/delegate/v1/register"))
        .bearer_auth(&executor)
        .json(&json!({"name": "d", "hostname": "h", "version": "1"}));
    assert_eq!(register.send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
}
