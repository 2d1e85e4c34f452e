//! The OpenAPI document against the server that serves it: the document is well formed,
//! lists exactly the routes the server answers, and what the routes answer fits it (the
//! statuses, the content types, the fields of the bodies). The bad-request table is in
//! `openapi_errors.rs`.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::spec::{METHODS, Spec, concrete, strings_under};
use super::support::{ADMIN_KEY, TestApp, spawn_app};

/// Every route of the server, as `METHOD /path/{param}`: adding or removing one must be a
/// deliberate change here too.
const ROUTES: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /ui",
    "GET /ui/",
    "GET /ui/{file}",
    "GET /api/v1/status",
    "GET /api/v1/audit",
    "POST /api/v1/api-keys",
    "GET /api/v1/api-keys",
    "POST /api/v1/api-keys/{id}/revoke",
    "POST /api/v1/delegate-tokens",
    "GET /api/v1/delegate-tokens",
    "GET /api/v1/delegate-tokens/{id}",
    "POST /api/v1/delegate-tokens/{id}/revoke",
    "GET /api/v1/delegate-tokens/{id}/install",
    "POST /api/v1/connectors",
    "GET /api/v1/connectors",
    "GET /api/v1/connectors/{id}",
    "PUT /api/v1/connectors/{id}",
    "DELETE /api/v1/connectors/{id}",
    "POST /api/v1/secrets",
    "GET /api/v1/secrets",
    "GET /api/v1/secrets/{id}",
    "PUT /api/v1/secrets/{id}",
    "DELETE /api/v1/secrets/{id}",
    "POST /api/v1/tasks",
    "GET /api/v1/tasks",
    "POST /api/v1/tasks/explain",
    "GET /api/v1/tasks/{id}",
    "POST /api/v1/tasks/{id}/cancel",
    "GET /api/v1/tasks/{id}/wait",
    "GET /api/v1/tasks/{id}/selection-log",
    "GET /api/v1/tasks/{id}/attempts",
    "GET /api/v1/tasks/{id}/logs",
    "PUT /api/v1/scope-policies",
    "GET /api/v1/scope-policies",
    "DELETE /api/v1/scope-policies",
    "GET /api/v1/queue",
    "GET /api/v1/queue/history",
    "GET /api/v1/events",
    "GET /api/v1/delegates",
    "POST /api/v1/delegates",
    "GET /api/v1/delegates/{id}",
    "DELETE /api/v1/delegates/{id}",
    "PUT /api/v1/delegates/{id}/tags",
    "GET /api/v1/delegates/{id}/demand",
    "POST /api/v1/delegates/{id}/disable",
    "POST /api/v1/delegates/{id}/enable",
    "POST /api/v1/delegates/{id}/pause",
    "POST /api/v1/delegates/{id}/resume",
    "POST /api/v1/delegates/{id}/instances/{instance_id}/pause",
    "POST /api/v1/delegates/{id}/instances/{instance_id}/resume",
    "POST /api/v1/delegates/{id}/jit",
    "POST /delegate/v1/register",
    "GET /delegate/v1/stream",
    "POST /delegate/v1/tasks/{id}/acquire",
    "POST /delegate/v1/tasks/{id}/progress",
    "POST /delegate/v1/tasks/{id}/logs",
    "POST /delegate/v1/tasks/{id}/result",
];

#[tokio::test]
async fn the_document_is_openapi_3_1_and_every_reference_in_it_resolves() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let document = &spec.0;
    assert!(
        document["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        document["openapi"]
    );
    assert_eq!(document["info"]["title"], "Switchboard");
    assert_eq!(document["info"]["version"], env!("CARGO_PKG_VERSION"));

    let mut references = Vec::new();
    strings_under(document, "$ref", &mut references);
    assert!(references.len() > 50, "{}", references.len());
    for reference in references {
        spec.resolve(&json!({ "$ref": reference }));
    }

    let schemes = document["components"]["securitySchemes"].as_object().unwrap();
    let mut operation_ids = BTreeSet::new();
    for (method, template, op) in spec.operations() {
        let name = format!("{method} {template}");
        let id = op["operationId"]
            .as_str()
            .unwrap_or_else(|| panic!("{name} has no operationId"));
        assert!(
            operation_ids.insert(id.to_owned()),
            "{name}: operationId {id} is not unique"
        );
        assert!(
            op["summary"].as_str().is_some_and(|s| !s.is_empty()),
            "{name} has no summary"
        );
        assert_eq!(op["tags"].as_array().map(Vec::len), Some(1), "{name} needs one tag");
        for requirement in op["security"].as_array().into_iter().flatten() {
            for scheme in requirement.as_object().unwrap().keys() {
                assert!(schemes.contains_key(scheme), "{name} names the unknown scheme {scheme}");
            }
        }
        // Every `{param}` of the path is a documented, required path parameter.
        let declared: Vec<&str> = op["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "path" && p["required"] == true)
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        for param in template
            .split('/')
            .filter_map(|s| s.strip_prefix('{')?.strip_suffix('}'))
        {
            assert!(
                declared.contains(&param),
                "{name} does not declare the path parameter {param}"
            );
        }
        let responses = op["responses"].as_object().unwrap();
        assert!(
            responses.keys().any(|s| s.starts_with('2') || s == "101"),
            "{name} documents no success"
        );
        for (status, response) in responses {
            assert!(response["description"].as_str().is_some(), "{name} {status}");
            if status.starts_with(['4', '5']) {
                assert!(
                    !spec.problem_types(op, status.parse().unwrap()).is_empty(),
                    "{name} {status} names no problem type"
                );
            }
        }
    }
}

#[tokio::test]
async fn the_document_lists_exactly_the_routes_of_the_server() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let documented: BTreeSet<String> = spec
        .operations()
        .into_iter()
        .map(|(method, template, _)| format!("{method} {template}"))
        .collect();
    let expected: BTreeSet<String> = ROUTES.iter().map(|r| (*r).to_owned()).collect();
    assert_eq!(
        documented.difference(&expected).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "documented but not in ROUTES"
    );
    assert_eq!(
        expected.difference(&documented).collect::<Vec<_>>(),
        Vec::<&String>::new(),
        "in ROUTES but not documented"
    );
}

#[tokio::test]
async fn every_documented_operation_is_served_and_answers_a_bare_request_as_documented() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    for (method, template, op) in spec.operations() {
        let name = format!("{method} {template}");
        // No credentials, no body.
        let response = app
            .client
            .request(method.clone(), app.url(&concrete(&template)))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        if op.get("security").is_some() {
            assert_eq!(status, 401, "{name} answered {status} without credentials");
        }
        let documented = &op["responses"][status.to_string()];
        assert!(
            documented.is_object(),
            "{name} answered {status}, which it does not document"
        );
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let media_types: Vec<&String> = documented["content"].as_object().unwrap().keys().collect();
        assert!(
            media_types.iter().any(|m| content_type.starts_with(m.as_str())),
            "{name} {status} answered {content_type:?}, documented {media_types:?}"
        );
        if status >= 400 {
            let body: Value = response.json().await.unwrap();
            let kind = body["type"].as_str().unwrap().to_owned();
            assert!(
                spec.problem_types(op, status).contains(&kind),
                "{name} {status}: {kind}"
            );
        }
    }
}

#[tokio::test]
async fn a_method_the_document_does_not_list_for_a_path_is_refused_with_405() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    for (template, item) in spec.0["paths"].as_object().unwrap() {
        for method in METHODS.iter().filter(|m| item.get(**m).is_none()) {
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let response = app
                .client
                .request(method.clone(), app.url(&concrete(template)))
                .bearer_auth(ADMIN_KEY)
                .send()
                .await
                .unwrap();
            assert_eq!(
                response.status(),
                StatusCode::METHOD_NOT_ALLOWED,
                "{method} {template} is served but not documented"
            );
        }
    }
    // And paths it does not list are not served, with or without the /api/v1 prefix.
    for path in [
        "/api/v1",
        "/api/v1/tasks/x/result",
        "/delegate/v1/heartbeat",
        "/openapi.yaml",
        "/status",
    ] {
        let response = app.get(path, Some(ADMIN_KEY)).await;
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}

/// Sends `body` (JSON) with the admin key and checks the answer against the document:
/// the status is the one expected and documented, and the body fits its schema.
async fn conforming(
    app: &TestApp,
    spec: &Spec,
    method: Method,
    template: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    conforming_with(app, spec, ADMIN_KEY, method, template, path, body).await
}

async fn conforming_with(
    app: &TestApp,
    spec: &Spec,
    key: &str,
    method: Method,
    template: &str,
    path: &str,
    body: Option<Value>,
) -> Value {
    let mut request = app.client.request(method.clone(), app.url(path)).bearer_auth(key);
    if let Some(body) = &body {
        request = request.json(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let answer: Value = response.json().await.unwrap();
    assert!((200..300).contains(&status), "{method} {path}: {status} {answer}");
    let op = spec.operation(&method, template);
    let schema = &op["responses"][status.to_string()]["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {template} does not document a JSON {status}"
    );
    let mismatches = spec.mismatches(&answer, schema);
    assert!(
        mismatches.is_empty(),
        "{method} {path}:\n{}\n{answer:#}",
        mismatches.join("\n")
    );
    answer
}

#[tokio::test]
async fn successful_answers_fit_the_schemas_the_document_gives_them() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let (get, post, put) = (Method::GET, Method::POST, Method::PUT);

    conforming(&app, &spec, get.clone(), "/api/v1/status", "/api/v1/status", None).await;
    let token = conforming(
        &app,
        &spec,
        post.clone(),
        "/api/v1/delegate-tokens",
        "/api/v1/delegate-tokens",
        Some(json!({"name": "ci", "account": "acme", "org": "eng"})),
    )
    .await;
    let token_id = token["id"].as_str().unwrap();
    let token_path = format!("/api/v1/delegate-tokens/{token_id}");
    conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/delegate-tokens/{id}",
        &token_path,
        None,
    )
    .await;
    conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/delegate-tokens",
        "/api/v1/delegate-tokens",
        None,
    )
    .await;

    // A delegate, registered over HTTP with the token (not connected: tasks wait).
    let secret = token["token"].as_str().unwrap();
    let registered = conforming_with(
        &app,
        &spec,
        secret,
        post.clone(),
        "/delegate/v1/register",
        "/delegate/v1/register",
        Some(
            json!({"name": "builder", "hostname": "h1", "version": "1.0.0", "tags": ["Linux"], "task_types": ["echo"]}),
        ),
    )
    .await;
    let group = registered["group_id"].as_str().unwrap();
    let delegates = conforming(&app, &spec, get.clone(), "/api/v1/delegates", "/api/v1/delegates", None).await;
    assert_eq!(
        delegates["items"][0]["instances"].as_array().unwrap().len(),
        1,
        "{delegates}"
    );
    let delegate_path = format!("/api/v1/delegates/{group}");
    conforming(&app, &spec, get.clone(), "/api/v1/delegates/{id}", &delegate_path, None).await;
    conforming(
        &app,
        &spec,
        put.clone(),
        "/api/v1/delegates/{id}/tags",
        &format!("{delegate_path}/tags"),
        Some(json!({"tags": ["gpu"]})),
    )
    .await;

    let connector = conforming(
        &app,
        &spec,
        post.clone(),
        "/api/v1/connectors",
        "/api/v1/connectors",
        Some(json!({"name": "k8s", "account": "acme", "selectors": ["Linux"]})),
    )
    .await;
    conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/connectors",
        "/api/v1/connectors?account=acme",
        None,
    )
    .await;

    let submission = json!({
        "account": "acme", "org": "eng", "type": "echo", "payload": {"n": 1},
        "connector": connector["id"], "wait_for_delegate": true,
        "capabilities": [{"kind": "http", "url": "https://example.test/"}, {"kind": "tcp", "host": "db", "port": 5432}]
    });
    let task = conforming(
        &app,
        &spec,
        post.clone(),
        "/api/v1/tasks",
        "/api/v1/tasks",
        Some(submission.clone()),
    )
    .await;
    assert!(task["explanation"].is_string(), "{task}");
    let task_path = format!("/api/v1/tasks/{}", task["id"].as_str().unwrap());
    conforming(&app, &spec, get.clone(), "/api/v1/tasks/{id}", &task_path, None).await;
    conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/tasks",
        "/api/v1/tasks?account=acme",
        None,
    )
    .await;
    conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/tasks/{id}/wait",
        &format!("{task_path}/wait?state=assigned&timeout_ms=1"),
        None,
    )
    .await;
    let log = conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/tasks/{id}/selection-log",
        &format!("{task_path}/selection-log"),
        None,
    )
    .await;
    assert!(!log["items"].as_array().unwrap().is_empty(), "{log}");
    let attempts = conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/tasks/{id}/attempts",
        &format!("{task_path}/attempts"),
        None,
    )
    .await;
    assert!(attempts["items"].is_array(), "{attempts}");
    let logs = conforming(
        &app,
        &spec,
        get.clone(),
        "/api/v1/tasks/{id}/logs",
        &format!("{task_path}/logs"),
        None,
    )
    .await;
    assert!(logs["chunks"].is_array(), "{logs}");
    let explained = conforming(
        &app,
        &spec,
        post.clone(),
        "/api/v1/tasks/explain",
        "/api/v1/tasks/explain",
        Some(submission),
    )
    .await;
    assert!(!explained["verdicts"].as_array().unwrap().is_empty(), "{explained}");
    conforming(
        &app,
        &spec,
        post.clone(),
        "/api/v1/tasks/{id}/cancel",
        &format!("{task_path}/cancel"),
        None,
    )
    .await;

    let key = conforming(
        &app,
        &spec,
        post.clone(),
        "/api/v1/api-keys",
        "/api/v1/api-keys",
        Some(json!({"name": "ops", "account": "acme", "permissions": ["pipelines:execute"]})),
    )
    .await;
    conforming(&app, &spec, get.clone(), "/api/v1/api-keys", "/api/v1/api-keys", None).await;
    conforming_with(
        &app,
        &spec,
        key["key"].as_str().unwrap(),
        get.clone(),
        "/api/v1/tasks",
        "/api/v1/tasks",
        None,
    )
    .await;
    let audit = conforming(&app, &spec, get.clone(), "/api/v1/audit", "/api/v1/audit", None).await;
    assert!(audit["items"].as_array().unwrap().len() >= 5, "{audit}");
    conforming(&app, &spec, get.clone(), "/readyz", "/readyz", None).await;
    conforming(&app, &spec, get, "/healthz", "/healthz", None).await;
}

#[tokio::test]
async fn the_reference_page_shows_every_operation_and_schema_and_loads_nothing_from_elsewhere() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let response = app.get("/docs", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[header::CONTENT_TYPE], "text/html; charset=utf-8");
    let page = response.text().await.unwrap();
    assert!(
        page.starts_with("<!doctype html>\n<html lang=\"en\">"),
        "{}",
        &page[..100]
    );
    for (method, template, op) in spec.operations() {
        let id = op["operationId"].as_str().unwrap();
        let heading = format!(
            "<article id=\"op-{id}\">\n<h3><span class=\"method\">{method}</span> <code>{template}</code></h3>"
        );
        assert!(page.contains(&heading), "the page lacks {method} {template}");
    }
    for name in spec.0["components"]["schemas"].as_object().unwrap().keys() {
        assert!(
            page.contains(&format!("<article id=\"schema-{name}\">")),
            "the page lacks {name}"
        );
    }
    // Self-contained: no script, no stylesheet or image to fetch, links only within the
    // page or to the document.
    for forbidden in ["<script", "<link", "<img", "src=", "@import", "url("] {
        assert!(!page.contains(forbidden), "the page contains {forbidden}");
    }
    for link in page.split("href=\"").skip(1) {
        assert!(
            link.starts_with('#') || link.starts_with("/openapi.json"),
            "{}",
            &link[..40]
        );
    }
}
