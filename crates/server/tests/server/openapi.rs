//! The OpenAPI document against the server that serves it: the document is well formed,
//! lists exactly the routes the server answers, and what the routes answer fits it (the
//! statuses, the content types, the fields of the bodies). The bad-request table is in
//! `openapi_errors.rs`.

use std::collections::BTreeSet;

use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

use super::support::{ADMIN_KEY, TestApp, spawn_app};

/// Every route of the server, as `METHOD /path/{param}`: adding or removing one must be a
/// deliberate change here too.
const ROUTES: &[&str] = &[
    "GET /healthz",
    "GET /readyz",
    "GET /metrics",
    "GET /openapi.json",
    "GET /docs",
    "GET /api/v1/status",
    "GET /api/v1/audit",
    "POST /api/v1/api-keys",
    "GET /api/v1/api-keys",
    "POST /api/v1/api-keys/{id}/revoke",
    "POST /api/v1/delegate-tokens",
    "GET /api/v1/delegate-tokens",
    "GET /api/v1/delegate-tokens/{id}",
    "POST /api/v1/delegate-tokens/{id}/revoke",
    "POST /api/v1/connectors",
    "GET /api/v1/connectors",
    "GET /api/v1/connectors/{id}",
    "PUT /api/v1/connectors/{id}",
    "DELETE /api/v1/connectors/{id}",
    "POST /api/v1/tasks",
    "GET /api/v1/tasks",
    "POST /api/v1/tasks/explain",
    "GET /api/v1/tasks/{id}",
    "POST /api/v1/tasks/{id}/cancel",
    "GET /api/v1/tasks/{id}/wait",
    "GET /api/v1/tasks/{id}/selection-log",
    "GET /api/v1/delegates",
    "GET /api/v1/delegates/{id}",
    "DELETE /api/v1/delegates/{id}",
    "PUT /api/v1/delegates/{id}/tags",
    "POST /api/v1/delegates/{id}/disable",
    "POST /api/v1/delegates/{id}/enable",
    "POST /delegate/v1/register",
    "GET /delegate/v1/stream",
    "POST /delegate/v1/tasks/{id}/acquire",
    "POST /delegate/v1/tasks/{id}/progress",
    "POST /delegate/v1/tasks/{id}/result",
];

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];

/// The document as the server serves it, with the look-ups the tests need.
pub struct Spec(pub Value);

impl Spec {
    pub async fn fetch(app: &TestApp) -> Spec {
        let response = app.get("/openapi.json", None).await;
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.headers()[header::CONTENT_TYPE], "application/json");
        Spec(response.json().await.unwrap())
    }

    /// Every operation, as (method, path template, operation).
    pub fn operations(&self) -> Vec<(Method, String, &Value)> {
        let mut operations = Vec::new();
        for (path, item) in self.0["paths"].as_object().expect("paths") {
            for method in METHODS {
                if let Some(op) = item.get(method) {
                    let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                    operations.push((method, path.clone(), op));
                }
            }
        }
        operations
    }

    pub fn operation(&self, method: &Method, template: &str) -> &Value {
        self.0["paths"][template]
            .get(method.as_str().to_lowercase())
            .unwrap_or_else(|| panic!("{method} {template} is not in the document"))
    }

    /// Follows `$ref`s to the schema they name.
    pub fn resolve<'a>(&'a self, mut schema: &'a Value) -> &'a Value {
        while let Some(reference) = schema.get("$ref").and_then(Value::as_str) {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .unwrap_or_else(|| panic!("{reference} is not a component schema"));
            schema = &self.0["components"]["schemas"][name];
            assert!(!schema.is_null(), "{reference} does not resolve");
        }
        schema
    }

    /// The problem `type` URIs `op` documents for `status` (empty when it documents none).
    pub fn problem_types(&self, op: &Value, status: u16) -> Vec<String> {
        let schema = &op["responses"][status.to_string()]["content"]["application/problem+json"]["schema"];
        schema["allOf"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|part| part["properties"]["type"]["enum"].as_array())
            .flatten()
            .map(|t| t.as_str().unwrap().to_owned())
            .collect()
    }

    /// Where `value` departs from `schema`: a wrong type, a value outside an enum, a missing
    /// required field, a field the schema does not list.
    pub fn mismatches(&self, value: &Value, schema: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        self.check(value, schema, "$", true, &mut errors);
        errors
    }

    /// `strict`: also refuse fields the schema does not list. Off for the parts of an
    /// `allOf`, which each list only some of the fields; the `allOf` checks their union.
    fn check(&self, value: &Value, schema: &Value, at: &str, strict: bool, errors: &mut Vec<String>) {
        let schema = self.resolve(schema);
        if let Some(parts) = schema.get("allOf").and_then(Value::as_array) {
            for part in parts {
                self.check(value, part, at, false, errors);
            }
            if strict {
                self.undocumented(value, schema, at, errors);
            }
            return;
        }
        if let Some(branches) = schema.get("oneOf").and_then(Value::as_array) {
            let fits = branches.iter().any(|branch| {
                let mut e = Vec::new();
                self.check(value, branch, at, strict, &mut e);
                e.is_empty()
            });
            if !fits {
                errors.push(format!("{at}: {value} fits none of the alternatives of {schema}"));
            }
            return;
        }
        let types: Vec<&str> = match &schema["type"] {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !types.is_empty() && !types.iter().any(|t| is_type(value, t)) {
            errors.push(format!("{at}: {value} is not {types:?}"));
            return;
        }
        if let Some(values) = schema.get("enum").and_then(Value::as_array)
            && !values.contains(value)
        {
            errors.push(format!("{at}: {value} is not one of {values:?}"));
        }
        match value {
            Value::Object(map) => {
                for name in schema["required"].as_array().into_iter().flatten() {
                    let name = name.as_str().unwrap();
                    if !map.contains_key(name) {
                        errors.push(format!("{at}: the required field {name:?} is missing"));
                    }
                }
                if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
                    for (name, field) in map {
                        if let Some(property) = properties.get(name) {
                            self.check(field, property, &format!("{at}.{name}"), true, errors);
                        }
                    }
                    if strict {
                        self.undocumented(value, schema, at, errors);
                    }
                }
            }
            Value::Array(items) => {
                if let Some(item) = schema.get("items") {
                    for (i, v) in items.iter().enumerate() {
                        self.check(v, item, &format!("{at}[{i}]"), true, errors);
                    }
                }
            }
            _ => {}
        }
    }

    fn undocumented(&self, value: &Value, schema: &Value, at: &str, errors: &mut Vec<String>) {
        let Some(map) = value.as_object() else { return };
        let known = self.fields(value, schema);
        for name in map.keys().filter(|name| !known.contains(*name)) {
            errors.push(format!("{at}: the field {name:?} is not in the document"));
        }
    }

    /// The fields `schema` lists for `value`: its properties, the union over an `allOf`,
    /// the branch of a `oneOf` that fits.
    fn fields(&self, value: &Value, schema: &Value) -> BTreeSet<String> {
        let schema = self.resolve(schema);
        let mut fields: BTreeSet<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            fields.extend(self.fields(value, part));
        }
        let fitting = schema["oneOf"].as_array().into_iter().flatten().find(|branch| {
            let mut e = Vec::new();
            self.check(value, branch, "", false, &mut e);
            e.is_empty()
        });
        if let Some(branch) = fitting {
            fields.extend(self.fields(value, branch));
        }
        fields
    }
}

fn is_type(value: &Value, t: &str) -> bool {
    match t {
        "null" => value.is_null(),
        "boolean" => value.is_boolean(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "string" => value.is_string(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        other => panic!("unknown JSON Schema type {other:?}"),
    }
}

/// Every string value in `value` under the key `key`, anywhere.
fn strings_under<'a>(value: &'a Value, key: &str, found: &mut Vec<&'a str>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                match v.as_str() {
                    Some(s) if k == key => found.push(s),
                    _ => strings_under(v, key, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|v| strings_under(v, key, found)),
        _ => {}
    }
}

/// A concrete path for `template`: each `{param}` becomes a fresh UUID.
pub fn concrete(template: &str) -> String {
    template
        .split('/')
        .map(|segment| {
            if segment.starts_with('{') {
                uuid::Uuid::new_v4().to_string()
            } else {
                segment.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

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

#[test]
fn the_conformance_check_catches_missing_undocumented_and_mistyped_fields() {
    let spec = Spec(json!({"components": {"schemas": {
        "Base": {"type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}},
        "Kind": {"oneOf": [
            {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": ["a"]}, "a": {"type": "integer"}}},
            {"type": "object", "required": ["kind"], "properties": {"kind": {"type": "string", "enum": ["b"]}, "b": {"type": ["string", "null"]}}}
        ]},
        "Both": {"allOf": [{"$ref": "#/components/schemas/Base"}, {"$ref": "#/components/schemas/Kind"},
            {"type": "object", "properties": {"tags": {"type": "array", "items": {"type": "string"}}}}]}
    }}}));
    let schema = json!({"$ref": "#/components/schemas/Both"});
    let fits = |value: Value| spec.mismatches(&value, &schema);
    assert_eq!(
        fits(json!({"id": "x", "kind": "a", "a": 1, "tags": ["t"]})),
        Vec::<String>::new()
    );
    assert_eq!(fits(json!({"id": "x", "kind": "b", "b": null})), Vec::<String>::new());
    for (bad, why) in [
        (json!({"kind": "a"}), "required field \"id\""),
        (
            json!({"id": "x", "kind": "a", "b": "y"}),
            "field \"b\" is not in the document",
        ),
        (json!({"id": 1, "kind": "a"}), "is not [\"string\"]"),
        (json!({"id": "x", "kind": "c"}), "fits none of the alternatives"),
        (json!({"id": "x", "kind": "a", "tags": [1]}), "$.tags[0]"),
    ] {
        let errors = fits(bad.clone()).join("\n");
        assert!(errors.contains(why), "{bad}: {errors}");
    }
}
