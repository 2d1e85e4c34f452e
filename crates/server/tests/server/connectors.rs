//! Connectors over the API: selectors are normalized on the way in, names are unique per
//! scope, bad input is a precise 4xx that stores nothing, lists filter by scope, and all of
//! it sits behind the admin key.

use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_protocol::connectors::{ConnectorList, ConnectorView};

use super::support::{ADMIN_KEY, TestApp, problem, spawn_app};

const CONNECTORS: &str = "/api/v1/connectors";

/// Creates a connector, expecting success.
async fn created(app: &TestApp, body: Value) -> ConnectorView {
    let response = app.post(CONNECTORS, Some(ADMIN_KEY), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED, "{body}");
    response.json().await.unwrap()
}

async fn listed(app: &TestApp, query: &str) -> Vec<ConnectorView> {
    let response = app.get(&format!("{CONNECTORS}{query}"), Some(ADMIN_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK, "{query}");
    response.json::<ConnectorList>().await.unwrap().items
}

fn names(items: &[ConnectorView]) -> Vec<&str> {
    let mut names: Vec<&str> = items.iter().map(|c| c.name.as_str()).collect();
    names.sort_unstable();
    names
}

async fn put(app: &TestApp, path: &str, body: &Value) -> reqwest::Response {
    app.client
        .put(app.url(path))
        .bearer_auth(ADMIN_KEY)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn delete(app: &TestApp, path: &str) -> reqwest::Response {
    app.client
        .delete(app.url(path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_created_connector_reads_back_with_its_selectors_trimmed_lowercased_deduplicated_and_sorted() {
    let app = spawn_app().await;
    let body = json!({
        "name": "prod-cluster",
        "account": "acme",
        "org": "eng",
        "project": "web",
        "selectors": [" K8s", "gpu", "GPU ", "eu-west"],
    });
    let response = app.post(CONNECTORS, Some(ADMIN_KEY), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let raw: Value = response.json().await.unwrap();
    assert_eq!(raw["selectors"], json!(["eu-west", "gpu", "k8s"]), "{raw}");
    assert_eq!(
        (&raw["name"], &raw["account"], &raw["org"], &raw["project"]),
        (&json!("prod-cluster"), &json!("acme"), &json!("eng"), &json!("web"))
    );
    assert_eq!(raw["created_at"], raw["updated_at"], "{raw}");
    let id = raw["id"].as_str().unwrap();

    let one: Value = app
        .get(&format!("{CONNECTORS}/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, raw, "the answer to the creation is what is stored");
    let all: Value = app.get(CONNECTORS, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(all, json!({ "items": [raw] }));

    // Selectors are optional; an account-level connector has no org or project.
    let bare = created(&app, json!({"name": "nexus", "account": "acme"})).await;
    assert!(bare.selectors.is_empty());
    assert_eq!((bare.org, bare.project), (None, None));
}

#[tokio::test]
async fn a_connector_name_is_unique_in_its_scope_but_free_in_any_other() {
    let app = spawn_app().await;
    created(&app, json!({"name": "k8s", "account": "acme", "org": "eng"})).await;
    let again = json!({"name": "k8s", "account": "acme", "org": "eng", "selectors": ["other"]});
    let body = problem(app.post(CONNECTORS, Some(ADMIN_KEY), &again).await, 409, "conflict").await;
    assert!(body["detail"].as_str().unwrap().contains("\"k8s\""), "{body}");

    for elsewhere in [
        json!({"name": "k8s", "account": "acme"}),
        json!({"name": "k8s", "account": "acme", "org": "ops"}),
        json!({"name": "k8s", "account": "acme", "org": "eng", "project": "web"}),
        json!({"name": "k8s", "account": "globex", "org": "eng"}),
    ] {
        created(&app, elsewhere).await;
    }
    assert_eq!(listed(&app, "").await.len(), 5);
}

#[tokio::test]
async fn every_bad_connector_body_is_a_precise_4xx_naming_the_field_and_stores_nothing() {
    let app = spawn_app().await;
    let too_many: Vec<String> = (0..33).map(|i| format!("s{i}")).collect();
    let long = "x".repeat(129);
    // (body, field the problem names, text its detail contains)
    let cases = [
        (json!({"name": "9lives", "account": "acme"}), Some("name"), "9"),
        (json!({"name": "a b", "account": "acme"}), Some("name"), "' '"),
        (json!({"name": "k8s", "account": ""}), Some("account"), "empty"),
        (
            json!({"name": "k8s", "account": "acme", "org": "e/ng"}),
            Some("org"),
            "/",
        ),
        (
            json!({"name": "k8s", "account": "acme", "project": "web"}),
            Some("project"),
            "org",
        ),
        (
            json!({"name": "k8s", "account": "acme", "selectors": ["gpu", "   "]}),
            Some("selectors"),
            "\"   \"",
        ),
        (
            json!({"name": "k8s", "account": "acme", "selectors": ["ok", long]}),
            Some("selectors"),
            long.as_str(),
        ),
        (
            json!({"name": "k8s", "account": "acme", "selectors": ["a\u{7}b"]}),
            Some("selectors"),
            "control",
        ),
        (
            json!({"name": "k8s", "account": "acme", "selectors": too_many}),
            Some("selectors"),
            "at most 32",
        ),
        (
            json!({"name": "k8s", "account": "acme", "selectors": "gpu"}),
            Some("selectors"),
            "sequence",
        ),
        (
            json!({"name": "k8s", "account": "acme", "selectors": [1]}),
            Some("selectors[0]"),
            "string",
        ),
        (
            json!({"name": "k8s", "account": "acme", "colour": "red"}),
            Some("colour"),
            "unknown field",
        ),
        (json!({"name": "k8s"}), None, "account"),
        (json!({"account": "acme"}), None, "name"),
        (json!(["k8s"]), None, "struct"),
    ];
    for (body, field, detail) in &cases {
        let answer = problem(app.post(CONNECTORS, Some(ADMIN_KEY), body).await, 422, "validation").await;
        assert_eq!(answer["field"].as_str(), *field, "{body}: {answer}");
        assert!(answer["detail"].as_str().unwrap().contains(detail), "{body}: {answer}");
    }

    let not_json = app
        .client
        .post(app.url(CONNECTORS))
        .bearer_auth(ADMIN_KEY)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(r#"{"name": "k8s", "#)
        .send()
        .await
        .unwrap();
    problem(not_json, 400, "bad-request").await;
    let not_declared = app
        .client
        .post(app.url(CONNECTORS))
        .bearer_auth(ADMIN_KEY)
        .body(r#"{"name": "k8s", "account": "acme"}"#)
        .send()
        .await
        .unwrap();
    problem(not_declared, 415, "unsupported-media-type").await;

    assert!(listed(&app, "").await.is_empty(), "nothing was stored");
}

#[tokio::test]
async fn a_connector_is_renamed_and_reselected_in_place_then_deleted_and_unknown_ids_are_404() {
    let app = spawn_app().await;
    let original = created(
        &app,
        json!({"name": "k8s", "account": "acme", "org": "eng", "selectors": ["gpu"]}),
    )
    .await;
    created(&app, json!({"name": "taken", "account": "acme", "org": "eng"})).await;
    let path = format!("{CONNECTORS}/{}", original.id);

    let response = put(
        &app,
        &path,
        &json!({"name": "k8s-prod", "selectors": ["EU", " arm64 "]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let updated: ConnectorView = response.json().await.unwrap();
    assert_eq!(updated.name.as_str(), "k8s-prod");
    assert_eq!(
        updated.selectors.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        ["arm64", "eu"]
    );
    assert_eq!(
        (&updated.id, &updated.account, &updated.org, &updated.project),
        (&original.id, &original.account, &original.org, &original.project),
        "the scope never changes"
    );
    assert_eq!(updated.created_at, original.created_at);
    assert!(updated.updated_at > original.updated_at, "{updated:?}");
    let read: ConnectorView = app.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(read, updated);

    // Refused without changing anything: a taken name, a scope change, a bad selector,
    // a missing field.
    problem(
        put(&app, &path, &json!({"name": "taken", "selectors": []})).await,
        409,
        "conflict",
    )
    .await;
    let moved = json!({"name": "k8s-prod", "selectors": [], "account": "globex"});
    let body = problem(put(&app, &path, &moved).await, 422, "validation").await;
    assert!(body["detail"].as_str().unwrap().contains("account"), "{body}");
    let body = problem(
        put(&app, &path, &json!({"name": "k8s-prod", "selectors": [""]})).await,
        422,
        "validation",
    )
    .await;
    assert_eq!(body["field"], "selectors", "{body}");
    let body = problem(put(&app, &path, &json!({"name": "k8s-prod"})).await, 422, "validation").await;
    assert!(body["detail"].as_str().unwrap().contains("selectors"), "{body}");
    let read: ConnectorView = app.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(read, updated);

    // Unknown ids, well-formed or not.
    let unknown = format!("{CONNECTORS}/{}", uuid::Uuid::now_v7());
    let bad = format!("{CONNECTORS}/not-a-uuid");
    let rename = json!({"name": "x", "selectors": []});
    for missing in [&unknown, &bad] {
        problem(app.get(missing, Some(ADMIN_KEY)).await, 404, "not-found").await;
        problem(put(&app, missing, &rename).await, 404, "not-found").await;
        problem(delete(&app, missing).await, 404, "not-found").await;
    }

    assert_eq!(delete(&app, &path).await.status(), StatusCode::NO_CONTENT);
    problem(app.get(&path, Some(ADMIN_KEY)).await, 404, "not-found").await;
    problem(delete(&app, &path).await, 404, "not-found").await;
    assert_eq!(names(&listed(&app, "").await), ["taken"]);
}

#[tokio::test]
async fn the_list_keeps_only_connectors_within_the_scope_asked_for() {
    let app = spawn_app().await;
    for (name, scope) in [
        ("a", json!({"account": "acme"})),
        ("b", json!({"account": "acme", "org": "eng"})),
        ("c", json!({"account": "acme", "org": "eng", "project": "web"})),
        ("d", json!({"account": "acme", "org": "ops"})),
        ("e", json!({"account": "globex", "org": "eng"})),
    ] {
        let mut body = scope;
        body["name"] = json!(name);
        created(&app, body).await;
    }
    for (query, expected) in [
        ("", vec!["a", "b", "c", "d", "e"]),
        ("?account=acme", vec!["a", "b", "c", "d"]),
        ("?account=acme&org=eng", vec!["b", "c"]),
        ("?account=acme&org=eng&project=web", vec!["c"]),
        ("?account=globex", vec!["e"]),
        ("?account=initech", vec![]),
    ] {
        assert_eq!(names(&listed(&app, query).await), expected, "{query}");
    }

    for (query, field) in [
        ("?org=eng", "org"),
        ("?account=acme&project=web", "project"),
        ("?project=web", "project"),
        ("?account=1acme", "account"),
        ("?account=acme&account=globex", "account"),
        ("?acount=acme", "acount"),
    ] {
        let body = problem(
            app.get(&format!("{CONNECTORS}{query}"), Some(ADMIN_KEY)).await,
            422,
            "validation",
        )
        .await;
        assert_eq!(body["field"], field, "{query}: {body}");
    }
}

#[tokio::test]
async fn connectors_need_the_admin_key() {
    let app = spawn_app().await;
    let body = json!({"name": "k8s", "account": "acme"});
    for key in [None, Some("not-the-admin-key")] {
        problem(app.post(CONNECTORS, key, &body).await, 401, "unauthorized").await;
        problem(app.get(CONNECTORS, key).await, 401, "unauthorized").await;
    }
    let id = created(&app, body).await.id;
    let path = format!("{CONNECTORS}/{id}");
    problem(app.get(&path, None).await, 401, "unauthorized").await;
    let put = app
        .client
        .put(app.url(&path))
        .json(&json!({"name": "x", "selectors": []}))
        .send()
        .await
        .unwrap();
    problem(put, 401, "unauthorized").await;
    problem(
        app.client.delete(app.url(&path)).send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(listed(&app, "").await.len(), 1, "nothing changed without the key");
}
