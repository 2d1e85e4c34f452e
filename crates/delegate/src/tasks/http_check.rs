//! `http_check`: one HTTP request to `url`; the result has the status and the latency.
//!
//! With `expect_status` the task succeeds only on that status. Without it, any status
//! below 400 succeeds: the service answered and did not report an error. Redirects are
//! not followed (see [`crate::probe::http_client`]), so a 301 counts as an answer.

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};
use switchboard_domain::Capability;

use super::{Output, TaskOutcome, parse_payload};
use crate::probe;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    url: String,
    #[serde(default)]
    expect_status: Option<u16>,
}

pub(super) async fn run(http: &reqwest::Client, payload: Value, timeout: Duration, output: &Output) -> TaskOutcome {
    let Payload { url, expect_status } = match parse_payload(payload) {
        Ok(p) => p,
        Err(refused) => return refused,
    };
    // The same URL rule as an `http` capability, so a task and its capability agree.
    if let Err(e) = Capability::http(&url) {
        return TaskOutcome::failure("bad_payload", e.to_string());
    }
    output.write(format!("GET {url}\n")).await;
    let answer = match probe::http(http, &url, timeout).await {
        Ok(answer) => answer,
        Err(seen) => {
            output.write(format!("unreachable: {seen}\n")).await;
            return TaskOutcome {
                succeeded: false,
                result: json!({"url": url, "error": "unreachable", "detail": seen}),
            };
        }
    };
    let mut result = json!({
        "url": url,
        "status": answer.status,
        "latency_ms": u64::try_from(answer.elapsed.as_millis()).unwrap_or(u64::MAX),
    });
    output
        .write(format!("HTTP {} in {} ms\n", answer.status, answer.elapsed.as_millis()))
        .await;
    let succeeded = match expect_status {
        Some(want) => answer.status == want,
        None => answer.status < 400,
    };
    if !succeeded {
        let wanted = expect_status.map_or_else(|| "a status below 400".to_owned(), |s| format!("HTTP {s}"));
        result["error"] = json!("unexpected_status");
        result["detail"] = json!(format!("expected {wanted}, got HTTP {}", answer.status));
    }
    TaskOutcome { succeeded, result }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use crate::cancel::CancelToken;
    use crate::tasks::tests::tt;
    use crate::tasks::{BuiltIn, Runner, TaskOutcome};
    use crate::testing::{http_responder, refused_addr, silent_listener};

    async fn check(payload: serde_json::Value, timeout: Duration) -> TaskOutcome {
        Runner::new(&[BuiltIn::HttpCheck])
            .run(&tt("http_check"), payload, timeout, CancelToken::new())
            .await
    }

    #[tokio::test]
    async fn a_successful_status_succeeds_with_status_and_latency() {
        let addr = http_responder("204 No Content").await;
        let url = format!("http://{addr}/ping");
        let out = check(json!({"url": url}), Duration::from_secs(5)).await;
        assert!(out.succeeded, "{out:?}");
        assert_eq!(out.result["status"], 204);
        assert_eq!(out.result["url"], url.as_str());
        assert!(out.result["latency_ms"].is_u64());
    }

    #[tokio::test]
    async fn an_expected_status_is_what_counts() {
        let addr = http_responder("404 Not Found").await;
        let url = format!("http://{addr}/gone");
        let out = check(json!({"url": url, "expect_status": 404}), Duration::from_secs(5)).await;
        assert!(out.succeeded, "{out:?}");
        let out = check(json!({"url": url, "expect_status": 200}), Duration::from_secs(5)).await;
        assert!(!out.succeeded);
        assert_eq!(out.error_code(), Some("unexpected_status"));
        assert_eq!(out.result["detail"], "expected HTTP 200, got HTTP 404");
        assert_eq!(out.result["status"], 404);
    }

    #[tokio::test]
    async fn an_error_status_fails_without_an_expectation() {
        let addr = http_responder("503 Service Unavailable").await;
        let out = check(json!({"url": format!("http://{addr}/")}), Duration::from_secs(5)).await;
        assert!(!out.succeeded);
        assert_eq!(out.error_code(), Some("unexpected_status"));
    }

    #[tokio::test]
    async fn an_unreachable_url_fails_with_what_was_seen() {
        let addr = refused_addr().await;
        let out = check(json!({"url": format!("http://{addr}/")}), Duration::from_secs(5)).await;
        assert_eq!(out.error_code(), Some("unreachable"));
        assert_eq!(out.result["detail"], "connection refused");
    }

    #[tokio::test]
    async fn a_silent_server_ends_the_check_at_the_timeout() {
        let (_listener, addr) = silent_listener().await;
        let out = check(json!({"url": format!("http://{addr}/")}), Duration::from_millis(100)).await;
        assert!(!out.succeeded);
        // The probe and the runner share the deadline; either may report it first.
        let code = out.error_code();
        assert!(code == Some("timed_out") || code == Some("unreachable"), "{out:?}");
    }

    #[tokio::test]
    async fn a_bad_url_is_a_bad_payload() {
        for bad in [
            json!({"url": "ftp://x"}),
            json!({}),
            json!({"url": "http://x", "method": "POST"}),
        ] {
            let out = check(bad.clone(), Duration::from_secs(5)).await;
            assert_eq!(out.error_code(), Some("bad_payload"), "{bad}");
        }
    }
}
