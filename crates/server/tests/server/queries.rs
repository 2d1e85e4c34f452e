//! Every query string of the API is read by one extractor: an unknown or repeated
//! parameter, or a value of the wrong kind, is a 422 `validation` problem whose `field` is
//! the parameter and whose detail says what it takes, on every route that has one; and
//! the lists without filters refuse one by name. On
//! both stores, since the list routes' filters reach each store's queries.

use serde_json::{Value, json};

use super::support::{ADMIN_KEY, Backend, problem, spawn_on};

async fn every_bad_query_parameter_is_a_422_naming_it(backend: Backend) {
    let Some(app) = spawn_on(backend, |_| {}).await else {
        return;
    };
    let task = json!({"account": "acme", "type": "echo", "wait_for_delegate": true});
    let submitted: Value = app
        .post("/api/v1/tasks", Some(ADMIN_KEY), &task)
        .await
        .json()
        .await
        .unwrap();
    let wait = format!("/api/v1/tasks/{}/wait", submitted["id"].as_str().unwrap());
    let cases = [
        ("/api/v1/tasks?acount=acme", "acount", "`account`"),
        ("/api/v1/tasks?account=acme&account=globex", "account", "more than once"),
        ("/api/v1/tasks?account=a%21b", "account", "account"),
        ("/api/v1/tasks?limit=-1", "limit", "whole number"),
        ("/api/v1/tasks?limit=0", "limit", "1 to 500"),
        ("/api/v1/tasks?limit=501", "limit", "1 to 500"),
        ("/api/v1/tasks?before=not-a-uuid", "before", "cursor"),
        ("/api/v1/tasks?state=bogus", "state", "bogus"),
        ("/api/v1/tasks?type=Not%20A%20Type", "type", "type"),
        ("/api/v1/audit?user=x", "user", "`key_id`"),
        ("/api/v1/audit?since=notadate", "since", "RFC 3339"),
        ("/api/v1/audit?limit=-1", "limit", "whole number"),
        ("/api/v1/audit?limit=0", "limit", "1 to 500"),
        ("/api/v1/audit?limit=100000", "limit", "1 to 500"),
        ("/api/v1/audit?before_id=x", "before_id", "whole number"),
        ("/api/v1/audit?key_id=nope", "key_id", "key_id"),
        ("/api/v1/audit?limit=1&limit=2", "limit", "more than once"),
        ("/api/v1/connectors?acount=acme", "acount", "`account`"),
        // Lists without filters refuse one rather than ignore it and answer everything.
        ("/api/v1/api-keys?account=acme", "account", "takes no query parameters"),
        (
            "/api/v1/delegate-tokens?account=acme",
            "account",
            "takes no query parameters",
        ),
        ("/api/v1/delegates?account=acme", "account", "takes no query parameters"),
        (
            "/api/v1/connectors?account=acme&account=globex",
            "account",
            "more than once",
        ),
        ("/api/v1/connectors?account=1acme", "account", "account"),
        (&*format!("{wait}?state=bogus"), "state", "queued"),
        (&*format!("{wait}?timeout_ms=soon"), "timeout_ms", "0 to 300000"),
        (&*format!("{wait}?timeout_ms=-1"), "timeout_ms", "0 to 300000"),
        (
            &*format!("{wait}?timeout_ms=1&timeout_ms=2"),
            "timeout_ms",
            "more than once",
        ),
        (&*format!("{wait}?wait=1"), "wait", "`state`, `timeout_ms`"),
    ];
    for (path, field, says) in cases {
        let body = problem(app.get(path, Some(ADMIN_KEY)).await, 422, "validation").await;
        assert_eq!(body["field"], field, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap();
        assert!(detail.contains(field) && detail.contains(says), "{path}: {detail}");
    }
    // The good queries still answer.
    for path in [
        "/api/v1/tasks?account=acme&state=queued,running&limit=5",
        "/api/v1/tasks?limit=500",
        "/api/v1/audit?since=2026-01-31T12%3A00%3A00Z&limit=5",
        "/api/v1/connectors?account=acme",
        "/api/v1/api-keys",
        "/api/v1/delegates",
        &format!("{wait}?state=running&timeout_ms=0"),
    ] {
        assert_eq!(app.get(path, Some(ADMIN_KEY)).await.status(), 200, "{path}");
    }
    app.stop().await.unwrap();
}

crate::both_backends!(every_bad_query_parameter_is_a_422_naming_it);
