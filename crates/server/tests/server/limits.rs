//! The request limits: a rate per API key and per delegate credential (429 with
//! `Retry-After`, other credentials unaffected), the cap on delegate sockets (503), and
//! `Accept` headers that rule JSON out (406).

use std::time::Duration;

use futures::StreamExt;
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, register};
use switchboard_protocol::delegate::RegisterRequest;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::spec::Spec;
use super::support::{ADMIN_KEY, PATIENCE, TestApp, problem, spawn_app, spawn_app_with};

async fn token(app: &TestApp) -> String {
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
    created["token"].as_str().unwrap().to_owned()
}

fn request(hostname: &str) -> RegisterRequest {
    serde_json::from_value(json!({"name": "d", "hostname": hostname, "version": "1.0.0", "task_types": ["echo"]}))
        .unwrap()
}

/// Sends `GET /api/v1/status` with `key` until one is refused; answers how many passed
/// and the refusal. Within 100 requests, or the limit does not hold.
async fn until_refused(app: &TestApp, key: &str) -> (usize, reqwest::Response) {
    for passed in 0..100 {
        let response = app.get("/api/v1/status", Some(key)).await;
        if response.status() == 429 {
            return (passed, response);
        }
        assert_eq!(response.status(), 200);
    }
    panic!("100 requests in a row were accepted at a rate of 5 a second");
}

#[tokio::test]
async fn an_api_key_over_its_rate_is_answered_429_and_other_keys_are_not() {
    let app = spawn_app_with(|s| s.api_rate_limit = 5).await;
    let created: Value = app
        .post(
            "/api/v1/api-keys",
            Some(ADMIN_KEY),
            &json!({"name": "ci", "account": "acme", "permissions": []}),
        )
        .await
        .json()
        .await
        .unwrap();
    let key = created["key"].as_str().unwrap().to_owned();

    let (passed, refused) = until_refused(&app, ADMIN_KEY).await;
    // The burst is the rate: 5, of which creating the key took one (a few more may have
    // been earned back while the requests were sent).
    assert!((4..=6).contains(&passed), "{passed} requests passed");
    let retry_after: u64 = refused.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry_after), "Retry-After: {retry_after}");
    let body = problem(refused, 429, "rate-limited").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("more than 5 requests a second"),
        "{body}"
    );
    // The OpenAPI document says so too (fetched without a key: it is not rate limited).
    let spec = Spec::fetch(&app).await;
    let documented = spec.problem_types(spec.operation(&reqwest::Method::GET, "/api/v1/status"), 429);
    assert_eq!(documented, ["https://switchboard.dev/problems/rate-limited"]);

    // The other key has a bucket of its own.
    assert_eq!(app.get("/api/v1/status", Some(&key)).await.status(), 200);
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_delegate_token_over_its_rate_is_answered_429() {
    let app = spawn_app_with(|s| s.delegate_rate_limit = 3).await;
    let token = token(&app).await;
    let mut refused = None;
    for n in 0..100 {
        match register(&app.client, &app.url(""), &token, &request(&format!("h{n}"))).await {
            Ok(_) => {}
            Err(switchboard_client::ClientError::Api(p)) => {
                refused = Some((n, p));
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    let (passed, problem) = refused.expect("100 registrations in a row were accepted at 3 a second");
    assert!((3..=4).contains(&passed), "{passed} registrations passed");
    assert_eq!(problem.status, 429);
    assert!(problem.kind.ends_with("/rate-limited"), "{problem:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn sockets_over_the_cap_are_refused_503_until_one_closes() {
    let app = spawn_app_with(|s| s.max_sockets = 1).await;
    let token = token(&app).await;
    let first = register(&app.client, &app.url(""), &token, &request("a"))
        .await
        .unwrap();
    let second = register(&app.client, &app.url(""), &token, &request("b"))
        .await
        .unwrap();

    let mut session = Session::start(first, Backoff::default());
    let event = tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap();
    assert_eq!(event, Some(Event::Connected));

    let open = || {
        let mut req = second.stream_url.as_str().into_client_request().unwrap();
        req.headers_mut().insert(
            "authorization",
            format!("Bearer {}", second.session_token.expose()).parse().unwrap(),
        );
        tokio_tungstenite::connect_async(req)
    };
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
            assert!(response.headers().contains_key("retry-after"));
        }
        other => panic!("a second socket over a cap of one: {:?}", other.map(|_| ())),
    }

    // Once the first socket is gone, its place is free again.
    session.stop();
    while !app.state.hub().is_empty() {
        tokio::time::sleep(Duration::from_millis(20)).await; // waiting for the close
    }
    let started = std::time::Instant::now();
    let (mut socket, _) = loop {
        // The place is released when the socket's task ends, just after the hub forgets it.
        match open().await {
            Ok(connected) => break connected,
            Err(e) => assert!(started.elapsed() < PATIENCE, "{e}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await; // waiting for the task to end
    };
    assert!(socket.next().await.is_some(), "the manager says hello");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn an_accept_header_without_json_is_answered_406() {
    let app = spawn_app().await;
    let get = |path: &str, accept: &str| {
        app.client
            .get(app.url(path))
            .bearer_auth(ADMIN_KEY)
            .header("accept", accept)
            .send()
    };
    let refused = get("/api/v1/status", "text/html").await.unwrap();
    let body = problem(refused, 406, "not-acceptable").await;
    assert!(body["detail"].as_str().unwrap().contains("text/html"), "{body}");
    problem(
        get("/api/v1/tasks", "application/xml, text/*;q=0.5").await.unwrap(),
        406,
        "not-acceptable",
    )
    .await;
    for fine in [
        "application/json",
        "*/*",
        "text/html, application/*;q=0.1",
        "application/problem+json",
    ] {
        assert_eq!(get("/api/v1/status", fine).await.unwrap().status(), 200, "{fine}");
    }
    // The delegate API too; /metrics answers its own type whatever the header says.
    let response = app
        .client
        .post(app.url("/delegate/v1/register"))
        .header("accept", "text/plain")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    problem(response, 406, "not-acceptable").await;
    assert_eq!(get("/metrics", "text/plain").await.unwrap().status(), 200);
    app.stop().await.unwrap();
}
