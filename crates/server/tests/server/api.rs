//! The HTTP API served by `run`: probes, admin-key authentication, problem+json errors.

use reqwest::StatusCode;
use reqwest::header::WWW_AUTHENTICATE;
use serde_json::Value;

use super::support::{ADMIN_KEY, problem, spawn_app, spawn_app_with};

#[tokio::test]
async fn healthz_answers_ok_while_the_process_is_up() {
    let app = spawn_app().await;
    let response = app.get("/healthz", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        serde_json::json!({"status": "ok"})
    );
}

#[tokio::test]
async fn readyz_answers_ready_on_a_fresh_sqlite_store() {
    let app = spawn_app().await;
    let response = app.get("/readyz", None).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["store"], "sqlite");
    assert_eq!(body["replicas"], "alone");
}

#[tokio::test]
async fn api_routes_refuse_a_request_without_a_key() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/status", None).await;
    assert!(
        response.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    let body = problem(response, 401, "unauthorized").await;
    assert!(
        body["detail"].as_str().unwrap().contains("Authorization: Bearer"),
        "{body}"
    );
}

#[tokio::test]
async fn api_routes_refuse_a_wrong_key() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/status", Some("test-admin-key-0123456789abcdeX")).await;
    assert!(
        response.headers()[WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
    problem(response, 401, "unauthorized").await;

    let response = app
        .client
        .get(app.url("/api/v1/status"))
        .basic_auth("admin", Some(ADMIN_KEY))
        .send()
        .await;
    problem(response.unwrap(), 401, "unauthorized").await;
}

#[tokio::test]
async fn status_reports_version_and_store_to_the_admin_key() {
    let app = spawn_app().await;
    let response = app.get("/api/v1/status", Some(ADMIN_KEY)).await;
    assert_eq!(response.status(), StatusCode::OK);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "store": "sqlite",
            "caller": {"kind": "admin"},
            "secrets": {
                "values": false,
                "references": true,
                "detail": "no secret_key_file: secret values are refused (409 no-secret-key); references are accepted"
            }
        })
    );
}

#[tokio::test]
async fn status_tells_an_api_key_who_it_is_without_its_secret() {
    let app = spawn_app().await;
    let created: Value = app
        .post(
            "/api/v1/api-keys",
            Some(ADMIN_KEY),
            &serde_json::json!({"name": "viewer", "account": "acme", "org": "web", "permissions": ["pipelines:execute"]}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = created["key"].as_str().unwrap();
    let body: Value = app.get("/api/v1/status", Some(secret)).await.json().await.unwrap();
    let caller = &body["caller"];
    assert_eq!(caller["kind"], "api_key");
    assert_eq!(caller["id"], created["id"]);
    assert_eq!(
        (
            caller["name"].as_str(),
            caller["account"].as_str(),
            caller["org"].as_str()
        ),
        (Some("viewer"), Some("acme"), Some("web"))
    );
    assert_eq!(
        caller["permissions"],
        serde_json::json!(["delegates:view", "pipelines:execute"])
    );
    assert!(!body.to_string().contains(secret), "the secret is echoed: {body}");
}

#[tokio::test]
async fn without_an_admin_key_api_requests_are_told_how_to_configure_one() {
    let app = spawn_app_with(|settings| settings.admin_key = None).await;
    let body = problem(app.get("/api/v1/status", Some(ADMIN_KEY)).await, 401, "unauthorized").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains("SWITCHBOARD_ADMIN_KEY") && detail.contains("admin_key"),
        "{detail}"
    );
}

#[tokio::test]
async fn probes_need_no_key() {
    let app = spawn_app_with(|settings| settings.admin_key = None).await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_unknown_route_is_a_404_problem() {
    let app = spawn_app().await;
    let body = problem(app.get("/no/such/thing", None).await, 404, "not-found").await;
    assert!(body["detail"].as_str().unwrap().contains("/no/such/thing"), "{body}");
    problem(app.get("/api/v1/nothing-here", Some(ADMIN_KEY)).await, 404, "not-found").await;
}

#[tokio::test]
async fn a_wrong_method_is_a_405_problem() {
    let app = spawn_app().await;
    let response = app.client.delete(app.url("/healthz")).send().await.unwrap();
    assert!(response.headers().contains_key(reqwest::header::ALLOW));
    problem(response, 405, "method-not-allowed").await;
}

#[tokio::test]
async fn a_body_over_the_limit_is_a_413_problem() {
    let app = spawn_app_with(|settings| settings.body_limit = 1024).await;
    let response = app
        .client
        .post(app.url("/api/v1/status"))
        .bearer_auth(ADMIN_KEY)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(vec![b' '; 2048])
        .send()
        .await
        .unwrap();
    problem(response, 413, "payload-too-large").await;
}

#[tokio::test]
async fn responses_carry_a_request_id() {
    let app = spawn_app().await;
    assert!(app.get("/healthz", None).await.headers().contains_key("x-request-id"));
}

#[tokio::test]
async fn run_returns_once_the_shutdown_future_completes() {
    let app = spawn_app().await;
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
    app.stop().await.expect("run ends cleanly");
}

#[tokio::test]
async fn readyz_is_503_when_a_migration_is_missing() {
    use sqlx::Connection;
    let app = spawn_app().await;
    assert_eq!(app.get("/readyz", None).await.status(), StatusCode::OK);
    // Someone rolled the schema back under the running manager.
    let url = format!("sqlite://{}", app.database.display());
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let response = app.get("/readyz", None).await;
    assert_eq!(response.headers()["retry-after"], "1");
    let body = problem(response, 503, "unavailable").await;
    assert!(body["detail"].as_str().unwrap().contains("not ready"), "{body}");
}

/// The delegate routes check the credential from the headers alone, before reading the
/// body: a request without one is answered 401 while its body is still arriving, rather
/// than held until the body read timeout (408).
#[tokio::test]
async fn a_delegate_route_refuses_a_missing_credential_before_reading_the_body() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(|settings| settings.body_read_timeout = std::time::Duration::from_secs(20)).await;
    let id = uuid::Uuid::now_v7();
    for path in [
        "/delegate/v1/register".to_owned(),
        format!("/delegate/v1/tasks/{id}/acquire"),
        format!("/delegate/v1/tasks/{id}/result"),
    ] {
        let mut stream = tokio::net::TcpStream::connect(app.address).await.unwrap();
        // A head that promises 100 bytes, and 2 of them: the rest never comes.
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\""
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read(&mut answer))
            .await
            .expect("answered before the body read timeout")
            .unwrap();
        let text = String::from_utf8_lossy(&answer[..n]);
        assert!(text.starts_with("HTTP/1.1 401"), "{path}: {text}");
    }
}
