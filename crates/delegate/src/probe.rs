//! Low-level reachability probes: one HTTP request, one TCP connect, each bounded by a
//! timeout, each describing what it saw in words an operator can act on.
//!
//! Both capability checks ([`crate::checks`]) and the `http_check` task type use these,
//! so "reachable" means the same thing in a selection log and in a task result. The
//! descriptions are short ("connection refused", "no HTTP answer within 5 s") because
//! the manager shows them verbatim in its explanations.

use std::error::Error as _;
use std::io;
use std::time::{Duration, Instant};

use switchboard_client::Tls;

/// What an HTTP probe received.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpAnswer {
    pub status: u16,
    /// From sending the request to receiving the response head.
    pub elapsed: Duration,
}

/// The HTTP client probes use, trusting what `tls` trusts for `https://` URLs. It does
/// not follow redirects: a redirect is an answer from the URL that was asked about, which
/// is what reachability means here, and following it could wander to hosts the task
/// never needs.
pub fn http_client(tls: &Tls) -> reqwest::Client {
    tls.http_client()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Building fails only when the resolver cannot initialise, or the TLS config is
        // not of the rustls reqwest was built with (the same crate here, by Cargo.lock);
        // the default client then still checks http:// URLs.
        .unwrap_or_default()
}

/// Sends `GET url` and waits up to `timeout` for the response head. Any status counts as
/// an answer; the body is not read.
pub async fn http(client: &reqwest::Client, url: &str, timeout: Duration) -> Result<HttpAnswer, String> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, client.get(url).timeout(timeout).send()).await {
        Ok(Ok(response)) => Ok(HttpAnswer {
            status: response.status().as_u16(),
            elapsed: started.elapsed(),
        }),
        Ok(Err(e)) if e.is_timeout() => Err(format!("no HTTP answer within {}", human(timeout))),
        Ok(Err(e)) => Err(describe_http_error(&e)),
        Err(_) => Err(format!("no HTTP answer within {}", human(timeout))),
    }
}

/// Opens (and at once closes) a TCP connection to `host:port` within `timeout`; returns
/// how long the connect took.
pub async fn tcp(host: &str, port: u16, timeout: Duration) -> Result<Duration, String> {
    let started = Instant::now();
    match tokio::time::timeout(timeout, tokio::net::TcpStream::connect((host, port))).await {
        Ok(Ok(_stream)) => Ok(started.elapsed()),
        Ok(Err(e)) => Err(describe_io(&e)),
        Err(_) => Err(format!("no connection within {}", human(timeout))),
    }
}

/// A duration as people write it: `12 ms`, `5 s`.
pub fn human(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 1_000 && ms.is_multiple_of(1_000) {
        format!("{} s", ms / 1_000)
    } else {
        format!("{ms} ms")
    }
}

/// What an HTTP request failure actually was ("connection refused"), rather than
/// reqwest's "error sending request for url ...", which repeats the URL and hides the
/// cause. Registration uses it too, so its retry warnings say why.
pub fn describe_http_error(e: &reqwest::Error) -> String {
    // Before the I/O errors below: rustls reports an untrusted certificate as one.
    if let Some(problem) = switchboard_client::tls::certificate_error(e) {
        // The host answered, but with a certificate this delegate does not trust: say so
        // rather than let the error suggest the host is down.
        return format!(
            "the server's TLS certificate is not trusted ({problem}); if it comes from a private CA, pass that CA with --ca-cert"
        );
    }
    let mut source = e.source();
    let mut innermost = None;
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return describe_io(io);
        }
        innermost = Some(s);
        source = s.source();
    }
    innermost.map_or_else(|| e.to_string(), ToString::to_string)
}

fn describe_io(e: &io::Error) -> String {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
        io::ErrorKind::ConnectionReset => "connection reset".to_owned(),
        io::ErrorKind::TimedOut => "connection timed out".to_owned(),
        io::ErrorKind::HostUnreachable => "host unreachable".to_owned(),
        io::ErrorKind::NetworkUnreachable => "network unreachable".to_owned(),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_like_prose() {
        assert_eq!(human(Duration::from_millis(12)), "12 ms");
        assert_eq!(human(Duration::from_secs(5)), "5 s");
        assert_eq!(human(Duration::from_millis(1500)), "1500 ms");
    }
}
