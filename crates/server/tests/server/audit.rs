//! The audit log over the API: successful changes are recorded with their key, route,
//! path, status and the client's address; refused requests and dry runs are not; a key
//! sees only the changes of keys within its scope.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::support::{ADMIN_KEY, spawn_app};

#[tokio::test]
async fn successful_changes_are_audited_with_who_what_and_where_and_keys_see_their_scope() {
    let app = spawn_app().await;
    let created: Value = app
        .post(
            "/api/v1/api-keys",
            Some(ADMIN_KEY),
            &json!({"name": "eng", "account": "acme", "org": "eng", "permissions": ["pipelines:execute"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let eng = created["key"].as_str().unwrap().to_owned();
    let task = json!({"account": "acme", "org": "eng", "type": "echo", "wait_for_delegate": true});
    let submitted: Value = app.post("/api/v1/tasks", Some(&eng), &task).await.json().await.unwrap();
    let id = submitted["id"].as_str().unwrap();
    assert_eq!(
        app.post(&format!("/api/v1/tasks/{id}/cancel"), Some(&eng), &json!({}))
            .await
            .status(),
        StatusCode::OK
    );
    // Not audited: a refused change, and a dry run.
    assert_eq!(
        app.post(&format!("/api/v1/tasks/{id}/cancel"), Some(&eng), &json!({}))
            .await
            .status(),
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.post("/api/v1/tasks/explain", Some(&eng), &task).await.status(),
        StatusCode::OK
    );

    let all: Value = app.get("/api/v1/audit", Some(ADMIN_KEY)).await.json().await.unwrap();
    let routes: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["route"].as_str().unwrap())
        .collect();
    assert_eq!(
        routes,
        ["/api/v1/tasks/{id}/cancel", "/api/v1/tasks", "/api/v1/api-keys"],
        "newest first: {all}"
    );
    let cancel = &all["items"][0];
    assert_eq!(cancel["path"], format!("/api/v1/tasks/{id}/cancel"));
    assert_eq!(
        (cancel["method"].clone(), cancel["status"].clone()),
        (json!("POST"), json!(200))
    );
    assert_eq!(cancel["key_id"], created["id"]);
    assert!(cancel["actor"].as_str().unwrap().contains("eng"), "{cancel}");
    assert_eq!(cancel["remote"], "127.0.0.1");
    assert_eq!(all["items"][2]["actor"], "admin key");

    // The eng key sees its own changes, not the admin key's.
    let mine: Value = app.get("/api/v1/audit", Some(&eng)).await.json().await.unwrap();
    assert_eq!(mine["items"].as_array().unwrap().len(), 2, "{mine}");
    let by_key: Value = app
        .get(
            &format!("/api/v1/audit?key_id={}&limit=1", created["id"].as_str().unwrap()),
            Some(ADMIN_KEY),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_key["items"].as_array().unwrap().len(), 1);
    assert!(by_key["next"].is_i64(), "a full page has a cursor: {by_key}");
}
