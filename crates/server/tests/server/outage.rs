//! PostgreSQL out of reach, through a TCP relay the test controls (the shared PostgreSQL
//! itself is never stopped): requests fail fast with 503 and `Retry-After`, `/readyz` says
//! not ready, and once the database is back the manager uses it again by itself, with
//! everything it had acknowledged still there.

use std::str::FromStr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use switchboard_testkit::Relay;

use super::support::{ADMIN_KEY, PATIENCE, postgres_schema, problem, spawn_app_with};
use switchboard_server::config::Database;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_postgres_out_of_reach_requests_fail_fast_and_the_manager_recovers_by_itself() {
    let Some(url) = postgres_schema().await else {
        return;
    };
    let options = PgConnectOptions::from_str(&url).unwrap();
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let relay = Relay::start(upstream.clone()).await;
    let relayed = if url.contains(&upstream) {
        url.replacen(&upstream, &relay.address, 1)
    } else {
        url.replacen(&format!("@{}/", options.get_host()), &format!("@{}/", relay.address), 1)
    };
    assert!(relayed.contains(&relay.address), "cannot point {url} at the relay");
    let app = spawn_app_with(|s| s.database_url = Database::Postgres(relayed)).await;

    let created = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "kept", "account": "acme"}),
        )
        .await;
    assert_eq!(created.status(), 201);

    relay.cut();
    // The first call after the cut finds out; the ones after it are refused at once.
    let mut answers = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let response = app.get("/api/v1/delegate-tokens", Some(ADMIN_KEY)).await;
        answers.push(started.elapsed());
        assert!(response.headers().contains_key("retry-after"));
        problem(response, 503, "unavailable").await;
    }
    eprintln!("answers with the database out of reach: {answers:?}");
    assert_eq!(app.get("/readyz", None).await.status(), 503);

    relay.restore();
    let started = Instant::now();
    while app.get("/readyz", None).await.status() != 200 {
        assert!(started.elapsed() < PATIENCE, "the manager did not reconnect");
        tokio::time::sleep(Duration::from_millis(100)).await; // waiting for the next probe
    }
    eprintln!("ready again {:?} after the database came back", started.elapsed());
    // Ready means the replica listener is back too, not only the pool.
    let ready: Value = app.get("/readyz", None).await.json().await.unwrap();
    assert_eq!(ready["replicas"], "listening", "{ready}");
    assert!(
        app.state.cluster().resyncs() >= 1,
        "the listener never said it was back"
    );
    let listed: Value = app
        .get("/api/v1/delegate-tokens", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["name"], "kept", "{listed}");
    app.stop().await.unwrap();
}
