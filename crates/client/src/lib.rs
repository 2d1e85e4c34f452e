//! A typed client for Switchboard's HTTP API.
//!
//! The CLI, the reference delegate, the benchmark tool and the end-to-end tests all talk
//! to a manager through this crate, so the wire format is written down once. Errors
//! carry the manager's problem+json answer when there is one, so a caller can show the
//! operator the manager's own explanation.

#![forbid(unsafe_code)]

pub mod delegate;
pub mod operator;
pub mod tls;

pub use operator::{LogEvent, LogFollower, ScopeFilter, TaskFilter, TaskPage};
pub use tls::{Tls, TlsError};

use std::time::Duration;

use serde::Deserialize;
use serde::de::DeserializeOwned;
use switchboard_domain::Secret;

/// A problem+json answer (RFC 9457) from the manager.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: String,
    pub status: u16,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub field: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The manager answered with an error.
    #[error("{} ({}): {}", .0.title, .0.status, .0.detail.as_deref().unwrap_or(""))]
    Api(Problem),
    /// The manager answered with something that is not what the API promises.
    #[error("unexpected answer from the manager (HTTP {status}): {body}")]
    Unexpected { status: u16, body: String },
    /// The session has ended; nothing more can be sent on it.
    #[error("the session has ended")]
    Closed,
    /// The manager could not be reached.
    #[error("cannot reach the manager: {0}")]
    Transport(#[from] reqwest::Error),
}

impl ClientError {
    /// Whether the manager refused a report because its attempt is no longer current.
    pub fn is_stale_attempt(&self) -> bool {
        matches!(self, ClientError::Api(p) if p.kind.ends_with("/stale-attempt"))
    }

    /// Whether trying again later may succeed: the manager could not be reached, failed
    /// (5xx) or said the caller is over its rate (429). Any other refusal stands.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Api(problem) => problem.status == 429 || problem.status >= 500,
            ClientError::Unexpected { status, .. } => *status == 429 || *status >= 500,
            ClientError::Transport(_) => true,
            ClientError::Closed => false,
        }
    }
}

/// What `GET /api/v1/status` answers.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Status {
    pub version: String,
    pub store: String,
}

/// A client for one manager.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    // A `Secret`: `Debug` masks it.
    api_key: Option<Secret>,
}

impl Client {
    /// `base` is the manager's URL, e.g. `http://127.0.0.1:8080`; an `https://` manager
    /// must have a certificate from a public CA (see [`Client::with_tls`] otherwise).
    pub fn new(base: impl Into<String>, api_key: Option<String>) -> Result<Self, ClientError> {
        Self::with_tls(base, api_key, &Tls::default())
    }

    /// Like [`Client::new`], trusting what `tls` trusts (a private CA, say).
    pub fn with_tls(base: impl Into<String>, api_key: Option<String>, tls: &Tls) -> Result<Self, ClientError> {
        let http = tls.http_client().timeout(Duration::from_secs(30)).build()?;
        Ok(Self {
            http,
            base: base.into().trim_end_matches('/').to_owned(),
            api_key: api_key.map(Secret::presented),
        })
    }

    /// Whether the process is up (`/healthz`).
    pub async fn healthy(&self) -> Result<bool, ClientError> {
        Ok(self
            .http
            .get(format!("{}/healthz", self.base))
            .send()
            .await?
            .status()
            .is_success())
    }

    /// Whether the manager is ready to serve (`/readyz`): the store answers and its
    /// migrations are applied.
    pub async fn ready(&self) -> Result<bool, ClientError> {
        Ok(self
            .http
            .get(format!("{}/readyz", self.base))
            .send()
            .await?
            .status()
            .is_success())
    }

    pub async fn status(&self) -> Result<Status, ClientError> {
        self.get("/api/v1/status").await
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let mut req = self.http.get(format!("{}{}", self.base, path));
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        decode(req.send().await?).await
    }
}

pub(crate) async fn decode<T: DeserializeOwned>(resp: reqwest::Response) -> Result<T, ClientError> {
    let status = resp.status().as_u16();
    let body = resp.bytes().await?;
    if (200..300).contains(&status) {
        return serde_json::from_slice(&body).map_err(|_| ClientError::Unexpected {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        });
    }
    match serde_json::from_slice::<Problem>(&body) {
        Ok(problem) => Err(ClientError::Api(problem)),
        Err(_) => Err(ClientError::Unexpected {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16) -> ClientError {
        ClientError::Api(Problem {
            kind: "https://switchboard.dev/problems/x".into(),
            title: "x".into(),
            status,
            detail: None,
            field: None,
        })
    }

    #[test]
    fn only_an_unreachable_failing_or_rate_limited_manager_is_worth_trying_again() {
        for status in [429, 500, 502, 503] {
            assert!(problem(status).is_transient(), "{status}");
            let unexpected = ClientError::Unexpected {
                status,
                body: String::new(),
            };
            assert!(unexpected.is_transient(), "{status}");
        }
        for status in [400, 401, 403, 404, 409, 413, 422] {
            assert!(!problem(status).is_transient(), "{status}");
        }
        assert!(!ClientError::Closed.is_transient());
    }
}
