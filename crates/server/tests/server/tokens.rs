//! Delegate tokens over the API: the secret is shown once and stored only hashed, names
//! are unique per account, bad input is a precise 4xx.

use reqwest::StatusCode;
use serde_json::{Value, json};

use super::support::{ADMIN_KEY, problem, spawn_app};

#[tokio::test]
async fn a_created_token_shows_its_secret_once_and_lists_without_it() {
    let app = spawn_app().await;
    let body = json!({"name": "prod", "account": "acme", "org": "eng"});
    let response = app.post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    let created: Value = response.json().await.unwrap();
    let secret = created["token"].as_str().unwrap();
    assert!(secret.starts_with("sbd_") && secret.len() == 68, "{created}");
    assert_eq!(
        (created["name"].as_str(), created["status"].as_str()),
        (Some("prod"), Some("active"))
    );
    assert_eq!(
        (created["account"].as_str(), created["org"].as_str()),
        (Some("acme"), Some("eng"))
    );

    let listed: Value = app
        .get("/api/v1/delegate-tokens", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    assert!(!listed.to_string().contains(secret), "the secret is never shown again");
    let id = created["id"].as_str().unwrap();
    let one: Value = app
        .get(&format!("/api/v1/delegate-tokens/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one, listed["items"][0]);

    // Only the hash is stored.
    let raw = std::fs::read(&app.database).unwrap();
    assert!(
        !raw.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the secret is not in the database file"
    );
}

#[tokio::test]
async fn a_token_name_is_unique_in_its_account() {
    let app = spawn_app().await;
    let first = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "ci", "account": "acme"}),
        )
        .await;
    assert_eq!(first.status(), StatusCode::CREATED);
    let again = json!({"name": "ci", "account": "acme", "org": "eng"});
    let body = problem(
        app.post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &again).await,
        409,
        "conflict",
    )
    .await;
    assert!(
        body["detail"].as_str().unwrap().contains("\"ci\" already exists"),
        "{body}"
    );
    let elsewhere = json!({"name": "ci", "account": "globex"});
    assert_eq!(
        app.post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &elsewhere)
            .await
            .status(),
        StatusCode::CREATED
    );
}

#[tokio::test]
async fn bad_token_requests_name_the_field() {
    let app = spawn_app().await;
    let cases = [
        (json!({"name": "9bad", "account": "acme"}), "name"),
        (json!({"name": "ok", "account": "acme", "project": "web"}), "project"),
        (json!({"name": "ok", "account": "acme", "colour": "red"}), "."),
        (json!({"account": "acme"}), "."),
    ];
    for (body, field) in cases {
        let answer = problem(
            app.post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body).await,
            422,
            "validation",
        )
        .await;
        if field != "." {
            assert_eq!(answer["field"], field, "{answer}");
        }
        assert!(answer["detail"].as_str().unwrap().len() > 10, "{answer}");
    }
    assert!(
        app.get("/api/v1/delegate-tokens", Some(ADMIN_KEY))
            .await
            .json::<Value>()
            .await
            .unwrap()["items"]
            .as_array()
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn revoking_a_token_is_recorded_and_unknown_tokens_are_404() {
    let app = spawn_app().await;
    let created: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "ci", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let id = created["id"].as_str().unwrap();
    let revoked: Value = app
        .post(
            &format!("/api/v1/delegate-tokens/{id}/revoke"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(revoked["status"], "revoked");
    assert!(revoked["revoked_at"].is_string());
    let unknown = "/api/v1/delegate-tokens/0190a8f0-0000-7000-8000-000000000000/revoke";
    problem(app.post(unknown, Some(ADMIN_KEY), &json!({})).await, 404, "not-found").await;
    problem(
        app.get("/api/v1/delegate-tokens/not-a-uuid", Some(ADMIN_KEY)).await,
        404,
        "not-found",
    )
    .await;
}
