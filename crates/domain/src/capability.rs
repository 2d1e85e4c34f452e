//! Capabilities: what a task needs to reach, and what an instance found when it checked.
//!
//! Only a delegate can check a capability, from where it runs. Its answer is kept per
//! instance and capability *basis* (the canonical string of the capability) and reused by
//! later tasks while it is valid: positive answers for 6 h, negative ones for 5 min.

use std::fmt;

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::InstanceId;

const URL_MAX_LEN: usize = 2048;
const HOST_MAX_LEN: usize = 253;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapabilityError {
    #[error("an http capability needs a url starting with http:// or https://, got {0:?}")]
    BadUrl(String),
    #[error("a url must be at most {URL_MAX_LEN} characters")]
    UrlTooLong,
    #[error("a tcp capability needs a host of 1 to {HOST_MAX_LEN} characters without spaces, got {0:?}")]
    BadHost(String),
    #[error("a tcp capability needs a port from 1 to 65535")]
    BadPort,
}

/// Something a task needs to reach.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Capability {
    /// A URL answers an HTTP request (any status counts as reachable).
    Http {
        /// `http://` or `https://`, at most 2048 characters, no spaces.
        #[cfg_attr(feature = "openapi", schema(pattern = "^https?://\\S+$", max_length = 2048))]
        url: String,
    },
    /// A host and port accept a TCP connection.
    Tcp {
        #[cfg_attr(feature = "openapi", schema(min_length = 1, max_length = 253))]
        host: String,
        #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 65535))]
        port: u16,
    },
}

/// The unchecked wire shape; [`Capability`] deserializes through it and validates.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum RawCapability {
    Http { url: String },
    Tcp { host: String, port: u16 },
}

impl Capability {
    pub fn http(url: &str) -> Result<Self, CapabilityError> {
        let url = url.trim();
        if url.len() > URL_MAX_LEN {
            return Err(CapabilityError::UrlTooLong);
        }
        let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
        match rest {
            Some(r) if !r.is_empty() && !url.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                Ok(Capability::Http { url: url.to_owned() })
            }
            _ => Err(CapabilityError::BadUrl(url.to_owned())),
        }
    }

    pub fn tcp(host: &str, port: u16) -> Result<Self, CapabilityError> {
        let host = host.trim();
        if host.is_empty() || host.len() > HOST_MAX_LEN || host.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(CapabilityError::BadHost(host.to_owned()));
        }
        if port == 0 {
            return Err(CapabilityError::BadPort);
        }
        Ok(Capability::Tcp {
            host: host.to_ascii_lowercase(),
            port,
        })
    }

    /// The canonical key results are stored under: `http:URL` or `tcp:HOST:PORT`.
    pub fn basis(&self) -> CapabilityBasis {
        CapabilityBasis(match self {
            Capability::Http { url } => format!("http:{url}"),
            Capability::Tcp { host, port } => format!("tcp:{host}:{port}"),
        })
    }
}

impl<'de> Deserialize<'de> for Capability {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawCapability::deserialize(d)?;
        match raw {
            RawCapability::Http { url } => Capability::http(&url),
            RawCapability::Tcp { host, port } => Capability::tcp(&host, port),
        }
        .map_err(serde::de::Error::custom)
    }
}

/// The canonical string of a capability; results are keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(transparent)]
pub struct CapabilityBasis(pub String);

impl fmt::Display for CapabilityBasis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How long check results stay valid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResultTtl {
    pub positive: Duration,
    pub negative: Duration,
}

impl Default for ResultTtl {
    fn default() -> Self {
        Self {
            positive: Duration::hours(6),
            negative: Duration::minutes(5),
        }
    }
}

/// What one instance found when it checked one capability.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilityResult {
    pub instance_id: InstanceId,
    pub basis: CapabilityBasis,
    pub reachable: bool,
    /// What the check saw (a status line, an error), shown in selection logs.
    pub detail: String,
    pub checked_at: DateTime<Utc>,
}

impl CapabilityResult {
    pub fn is_valid_at(&self, now: DateTime<Utc>, ttl: ResultTtl) -> bool {
        let life = if self.reachable { ttl.positive } else { ttl.negative };
        now - self.checked_at < life
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_validate_on_the_way_in() {
        assert!(Capability::http("https://example.internal/health").is_ok());
        assert!(matches!(Capability::http("ftp://x"), Err(CapabilityError::BadUrl(_))));
        assert!(matches!(Capability::http("http://"), Err(CapabilityError::BadUrl(_))));
        assert!(matches!(Capability::tcp("", 5432), Err(CapabilityError::BadHost(_))));
        assert_eq!(Capability::tcp("db", 0), Err(CapabilityError::BadPort));
        let bad = serde_json::from_str::<Capability>(r#"{"kind":"http","url":"nope"}"#);
        assert!(bad.is_err());
        let extra = serde_json::from_str::<Capability>(r#"{"kind":"tcp","host":"db","port":5432,"x":1}"#);
        assert!(extra.is_err(), "unknown fields are refused");
    }

    #[test]
    fn basis_is_canonical() {
        let a = Capability::tcp("DB.internal", 5432).expect("valid");
        assert_eq!(a.basis().0, "tcp:db.internal:5432");
        let h = serde_json::from_str::<Capability>(r#"{"kind":"http","url":" http://x/ "}"#).expect("valid");
        assert_eq!(h.basis().0, "http:http://x/");
    }

    #[test]
    fn positive_results_outlive_negative_ones() {
        let now = Utc::now();
        let ttl = ResultTtl::default();
        let mut r = CapabilityResult {
            instance_id: InstanceId::new(),
            basis: CapabilityBasis("tcp:db:5432".into()),
            reachable: true,
            detail: String::new(),
            checked_at: now - Duration::hours(1),
        };
        assert!(r.is_valid_at(now, ttl));
        r.reachable = false;
        assert!(!r.is_valid_at(now, ttl));
        r.checked_at = now - Duration::minutes(4);
        assert!(r.is_valid_at(now, ttl));
    }
}
