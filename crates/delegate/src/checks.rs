//! Capability checks, performed for real from where the delegate runs.
//!
//! The manager asks (`validate` on the socket) whether this instance can reach what a
//! task needs; only the delegate can know. `http` is reachable when *any* HTTP response
//! arrives within the check timeout (a 404 or a 401 still proves the path works);
//! `tcp` is reachable when a connection opens. The answer's `detail` says what was seen,
//! because the manager shows it in selection logs when an instance is rejected.

use std::time::Duration;

use switchboard_domain::Capability;
use switchboard_protocol::socket::CheckResult;

use crate::probe;

/// Checks one capability within `timeout`.
pub async fn check(http: &reqwest::Client, capability: &Capability, timeout: Duration) -> CheckResult {
    let (reachable, detail) = match capability {
        Capability::Http { url } => match probe::http(http, url, timeout).await {
            Ok(answer) => (
                true,
                format!("HTTP {} in {}", answer.status, probe::human(answer.elapsed)),
            ),
            Err(seen) => (false, seen),
        },
        Capability::Tcp { host, port } => match probe::tcp(host, *port, timeout).await {
            Ok(elapsed) => (true, format!("connected in {}", probe::human(elapsed))),
            Err(seen) => (false, seen),
        },
    };
    CheckResult {
        basis: capability.basis(),
        reachable,
        detail,
    }
}

/// Checks every capability at once, so a validation takes as long as its slowest check
/// rather than their sum. Results come back in the order asked.
pub async fn check_all(http: &reqwest::Client, capabilities: &[Capability], timeout: Duration) -> Vec<CheckResult> {
    futures::future::join_all(capabilities.iter().map(|c| check(http, c, timeout))).await
}

#[cfg(test)]
mod tests {
    use switchboard_client::Tls;

    use super::*;
    use crate::testing::{http_responder, refused_addr, silent_listener};

    const TIMEOUT: Duration = Duration::from_secs(5);

    #[tokio::test]
    async fn any_http_answer_makes_a_url_reachable() {
        let addr = http_responder("404 Not Found").await;
        let cap = Capability::http(&format!("http://{addr}/health")).unwrap();
        let result = check(&probe::http_client(&Tls::default()), &cap, TIMEOUT).await;
        assert!(result.reachable, "{result:?}");
        assert_eq!(result.basis, cap.basis());
        assert!(result.detail.starts_with("HTTP 404 in "), "{}", result.detail);
        assert!(result.detail.ends_with(" ms"), "{}", result.detail);
    }

    #[tokio::test]
    async fn a_refused_http_connection_is_unreachable() {
        let addr = refused_addr().await;
        let cap = Capability::http(&format!("http://{addr}/")).unwrap();
        let result = check(&probe::http_client(&Tls::default()), &cap, TIMEOUT).await;
        assert!(!result.reachable);
        assert_eq!(result.detail, "connection refused");
    }

    #[tokio::test]
    async fn an_http_server_that_never_answers_is_unreachable_after_the_timeout() {
        let (_listener, addr) = silent_listener().await;
        let cap = Capability::http(&format!("http://{addr}/")).unwrap();
        let result = check(&probe::http_client(&Tls::default()), &cap, Duration::from_millis(200)).await;
        assert!(!result.reachable);
        assert_eq!(result.detail, "no HTTP answer within 200 ms");
    }

    #[tokio::test]
    async fn a_listening_port_is_reachable_over_tcp() {
        let (_listener, addr) = silent_listener().await;
        let cap = Capability::tcp("127.0.0.1", addr.port()).unwrap();
        let result = check(&probe::http_client(&Tls::default()), &cap, TIMEOUT).await;
        assert!(result.reachable, "{result:?}");
        assert_eq!(result.basis.0, format!("tcp:127.0.0.1:{}", addr.port()));
        assert!(result.detail.starts_with("connected in "), "{}", result.detail);
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_over_tcp() {
        let addr = refused_addr().await;
        let cap = Capability::tcp("127.0.0.1", addr.port()).unwrap();
        let result = check(&probe::http_client(&Tls::default()), &cap, TIMEOUT).await;
        assert!(!result.reachable);
        assert_eq!(result.detail, "connection refused");
    }

    #[tokio::test]
    async fn an_unknown_host_is_unreachable_with_the_resolver_error() {
        // `.invalid` is reserved (RFC 2606) and never resolves.
        let cap = Capability::tcp("no-such-host.invalid", 80).unwrap();
        let result = check(&probe::http_client(&Tls::default()), &cap, TIMEOUT).await;
        assert!(!result.reachable);
        assert!(!result.detail.is_empty());
    }

    #[tokio::test]
    async fn all_checks_run_and_keep_their_order() {
        let open = http_responder("200 OK").await;
        let closed = refused_addr().await;
        let caps = vec![
            Capability::tcp("127.0.0.1", closed.port()).unwrap(),
            Capability::http(&format!("http://{open}/")).unwrap(),
        ];
        let results = check_all(&probe::http_client(&Tls::default()), &caps, TIMEOUT).await;
        let seen: Vec<(String, bool)> = results.into_iter().map(|r| (r.basis.0, r.reachable)).collect();
        assert_eq!(seen, vec![(caps[0].basis().0, false), (caps[1].basis().0, true)]);
    }
}
