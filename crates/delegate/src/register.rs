//! Registration with the manager, retried while the manager cannot answer.
//!
//! Delegates are often started before (or while) the manager restarts, so an unreachable
//! manager or a 5xx answer is retried with the client library's jittered backoff, for as
//! long as it takes, and so is a 429 (many instances sharing a token and starting at once).
//! Any other 4xx answer is different: the token is unknown or revoked, the
//! scope is wider than the token's, the version too old. Retrying cannot fix that, so it
//! ends the process with the manager's own explanation, which says what to change.

use std::future::Future;

use switchboard_client::ClientError;
use switchboard_client::delegate::{Backoff, register};
use switchboard_protocol::delegate::{RegisterRequest, Registered};

use crate::probe;

/// Why registration did not happen.
#[derive(Debug, PartialEq, Eq)]
pub enum NotRegistered {
    /// The manager refused it (4xx): the message is the manager's problem, in words.
    Refused(String),
    /// Shutdown was asked for while waiting for the manager.
    Stopped,
}

/// Registers, retrying on connection errors and 5xx answers, until it succeeds, the
/// manager refuses, or `shutdown` resolves.
pub async fn register_with_retry(
    http: &reqwest::Client,
    manager: &str,
    token: &str,
    request: &RegisterRequest,
    backoff: Backoff,
    shutdown: impl Future<Output = ()>,
) -> Result<Registered, NotRegistered> {
    tokio::pin!(shutdown);
    let mut attempt = 0u32;
    loop {
        let outcome = tokio::select! {
            outcome = register(http, manager, token, request) => outcome,
            () = &mut shutdown => return Err(NotRegistered::Stopped),
        };
        let error = match outcome {
            Ok(registered) => return Ok(registered),
            Err(e) => e,
        };
        if let Some(refusal) = refusal(&error) {
            return Err(NotRegistered::Refused(refusal));
        }
        let delay = backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        let error = match &error {
            ClientError::Transport(e) => {
                format!("cannot reach the manager: {}", probe::describe_http_error(e))
            }
            other => other.to_string(),
        };
        tracing::warn!(%error, retry_in_ms = delay.as_millis(), attempt, "cannot register yet; retrying");
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = &mut shutdown => return Err(NotRegistered::Stopped),
        }
    }
}

/// The message for an answer that retrying cannot change, or `None` to retry.
fn refusal(error: &ClientError) -> Option<String> {
    match error {
        // Over the token's request rate: only a matter of time.
        ClientError::Api(problem) if problem.status == 429 => None,
        ClientError::Api(problem) if (400..500).contains(&problem.status) => {
            let mut msg = format!(
                "the manager refused to register this delegate: {} (HTTP {})",
                problem.title, problem.status
            );
            if let Some(detail) = problem.detail.as_deref().filter(|d| !d.is_empty()) {
                msg.push_str(": ");
                msg.push_str(detail);
            }
            if let Some(field) = &problem.field {
                msg.push_str(&format!(" [field: {field}]"));
            }
            Some(msg)
        }
        ClientError::Unexpected { status, body } if (400..500).contains(status) => Some(format!(
            "the manager refused to register this delegate (HTTP {status}): {}",
            body.chars().take(500).collect::<String>()
        )),
        // Unreachable, a 5xx, or a body we cannot read: the manager may be restarting.
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use serde_json::json;
    use switchboard_domain::{GroupId, Ident, ImageFlavour, InstanceId, Secret};

    use super::*;
    use crate::testing::{Answer, refused_addr, scripted_http};

    fn request() -> RegisterRequest {
        RegisterRequest {
            name: Ident::parse("edge").unwrap(),
            hostname: "box".into(),
            version: "0.1.0".into(),
            flavour: ImageFlavour::Minimal,
            tags: vec![],
            task_types: vec![],
            capacity: Some(10),
            org: None,
            project: None,
            max_tasks: None,
        }
    }

    fn quick() -> Backoff {
        Backoff {
            initial: Duration::from_millis(1),
            max: Duration::from_millis(5),
        }
    }

    fn registered() -> Registered {
        Registered {
            instance_id: InstanceId::new(),
            group_id: GroupId::new(),
            account: Ident::parse("acme").unwrap(),
            org: None,
            project: None,
            session_token: Secret::presented("sess"),
            heartbeat_interval_ms: 60_000,
            stream_url: "ws://127.0.0.1:1/delegate/v1/stream".into(),
            max_tasks: None,
        }
    }

    #[tokio::test]
    async fn a_refusal_carries_the_managers_explanation() {
        let problem = json!({
            "type": "https://switchboard.dev/problems/token-revoked",
            "title": "Token revoked",
            "status": 401,
            "detail": "the token 'ci' was revoked; create a new token",
        });
        let (addr, _) = scripted_http(vec![Answer {
            status_line: "401 Unauthorized",
            content_type: "application/problem+json",
            body: problem.to_string(),
        }])
        .await;
        let err = register_with_retry(
            &reqwest::Client::new(),
            &format!("http://{addr}"),
            "t",
            &request(),
            quick(),
            std::future::pending(),
        )
        .await
        .unwrap_err();
        assert_eq!(
            err,
            NotRegistered::Refused(
                "the manager refused to register this delegate: Token revoked (HTTP 401): \
                 the token 'ci' was revoked; create a new token"
                    .into()
            )
        );
    }

    #[tokio::test]
    async fn dropped_connections_and_server_errors_are_retried_until_registration_succeeds() {
        let unavailable = Answer {
            status_line: "503 Service Unavailable",
            content_type: "text/plain",
            body: "restarting".into(),
        };
        let ok = Answer {
            status_line: "200 OK",
            content_type: "application/json",
            body: serde_json::to_string(&registered()).unwrap(),
        };
        let (addr, bodies) = scripted_http(vec![Answer::hang_up(), unavailable, ok]).await;
        let got = register_with_retry(
            &reqwest::Client::new(),
            &format!("http://{addr}"),
            "t",
            &request(),
            quick(),
            std::future::pending(),
        )
        .await
        .unwrap();
        assert_eq!(got.session_token.expose(), "sess");
        let bodies = bodies.lock().unwrap().clone();
        assert_eq!(bodies.len(), 3, "a hang-up, a 503, then success");
        let sent: RegisterRequest = serde_json::from_str(&bodies[2]).unwrap();
        assert_eq!(sent, request());
    }

    #[tokio::test]
    async fn waiting_for_an_unreachable_manager_ends_on_shutdown() {
        let addr = refused_addr().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (http, url, request) = (reqwest::Client::new(), format!("http://{addr}"), request());
        let attempt = register_with_retry(&http, &url, "t", &request, quick(), async move {
            let _ = stopped.await;
        });
        stop.send(()).unwrap();
        assert_eq!(attempt.await.unwrap_err(), NotRegistered::Stopped);
    }
}
