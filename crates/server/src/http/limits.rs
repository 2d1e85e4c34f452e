//! Request limits of our own: a rate per credential (API key, delegate token, session
//! credential) and the media types a client accepts.
//!
//! Rates are kept per credential, keyed by the SHA-256 of what was presented (never the
//! secret itself), and checked before the credential is looked up, so a client over its
//! rate costs the store nothing. The buckets are GCRA cells from `governor`: a credential
//! may send `rate` requests in a burst and then `rate` per second; the answer to one more
//! is 429 with `Retry-After`. Requests without a credential are not counted here: they are
//! answered 401 without touching the store.
//!
//! Each manager counts on its own: behind a load balancer over N replicas a credential
//! may reach up to N times its rate.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use switchboard_domain::{Secret, SecretHash};

use super::error::{ApiError, Problem};
use super::middleware::bearer_token;

/// A rate per credential; `None` when the setting is 0 (no limit).
#[derive(Debug)]
pub struct PerCredential {
    limiter: Option<DefaultKeyedRateLimiter<SecretHash>>,
    per_second: u32,
    clock: DefaultClock,
    /// What the credentials are, for the 429's detail ("API key", "delegate credential").
    what: &'static str,
}

impl PerCredential {
    /// `per_second` requests a second, in bursts of as many; 0 turns the limit off.
    pub fn new(per_second: u32, what: &'static str) -> Self {
        Self {
            limiter: NonZeroU32::new(per_second).map(|n| RateLimiter::keyed(Quota::per_second(n))),
            per_second,
            clock: DefaultClock::default(),
            what,
        }
    }

    /// Counts one request of `credential`; `Err` is the 429 to answer.
    pub fn check(&self, credential: &SecretHash) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        limiter.check_key(credential).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            // Whole seconds, at least one: Retry-After has no fractions.
            let secs = u32::try_from(wait.as_secs()).unwrap_or(u32::MAX).saturating_add(1);
            ApiError::rate_limited(
                format!(
                    "this {} sent more than {} requests a second; retry after {secs}s",
                    self.what, self.per_second
                ),
                secs,
            )
        })
    }

    /// Forgets credentials whose bucket is full again (idle ones), so that the memory held
    /// follows the credentials in use, not every credential ever seen.
    pub fn forget_idle(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many credentials are being counted.
    pub fn tracked(&self) -> usize {
        self.limiter.as_ref().map_or(0, |l| l.len())
    }
}

/// The rates of this manager: one for `/api/v1`, one for `/delegate/v1`.
#[derive(Debug, Clone)]
pub struct RateLimits {
    pub api: Arc<PerCredential>,
    pub delegates: Arc<PerCredential>,
}

impl RateLimits {
    /// Forgets the buckets of credentials that have gone quiet (run now and then).
    pub fn forget_idle(&self) {
        self.api.forget_idle();
        self.delegates.forget_idle();
    }
}

/// The middleware: counts a request against its credential's rate in `limit` (an API key's
/// on `/api/v1`; a token's or session credential's on `/delegate/v1`).
pub async fn rate(State(limit): State<Arc<PerCredential>>, request: Request, next: Next) -> Response {
    if let Some(presented) = bearer_token(request.headers())
        && let Err(refused) = limit.check(&Secret::presented(presented).hash())
    {
        return refused.into_response();
    }
    next.run(request).await
}

/// Answers 406 when the request's `Accept` header rules out JSON: every answer of the API
/// is `application/json` or `application/problem+json`.
pub async fn accept_json(request: Request, next: Next) -> Response {
    if !accepts_json(request.headers()) {
        let offered = request
            .headers()
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        return ApiError::new(
            Problem::NotAcceptable,
            format!("this API answers application/json (errors application/problem+json), not {offered:?}"),
        )
        .into_response();
    }
    next.run(request).await
}

/// Whether the `Accept` headers (any number, each a list) allow a JSON answer. No header
/// allows anything; a media range with `q=0` is a refusal, not an offer.
pub fn accepts_json(headers: &HeaderMap) -> bool {
    let mut any = false;
    for value in headers.get_all(header::ACCEPT) {
        let Ok(value) = value.to_str() else {
            // Not text: unreadable, so not a refusal we can act on.
            return true;
        };
        for range in value.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
            if media.is_empty() {
                continue;
            }
            any = true;
            let refused = parts.any(|p| {
                let p = p.trim();
                p.strip_prefix("q=")
                    .or_else(|| p.strip_prefix("Q="))
                    .and_then(|q| q.trim().parse::<f32>().ok())
                    .is_some_and(|q| q <= 0.0)
            });
            if !refused
                && matches!(
                    media.as_str(),
                    "*/*" | "application/*" | "application/json" | "application/problem+json"
                )
            {
                return true;
            }
        }
    }
    !any
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn accept(values: &[&'static str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append(header::ACCEPT, HeaderValue::from_static(v));
        }
        headers
    }

    #[test]
    fn json_is_acceptable_unless_every_range_rules_it_out() {
        assert!(accepts_json(&HeaderMap::new()));
        assert!(accepts_json(&accept(&["application/json"])));
        assert!(accepts_json(&accept(&["*/*"])));
        assert!(accepts_json(&accept(&["text/html, application/*;q=0.5"])));
        assert!(accepts_json(&accept(&["text/html", "application/problem+json"])));
        assert!(accepts_json(&accept(&["APPLICATION/JSON; charset=utf-8"])));
        assert!(!accepts_json(&accept(&["text/html"])));
        assert!(!accepts_json(&accept(&["text/html, text/plain;q=0.9"])));
        assert!(!accepts_json(&accept(&["application/json;q=0"])));
        assert!(!accepts_json(&accept(&["application/xml"])));
    }

    #[test]
    fn a_credential_gets_its_burst_then_a_429_with_retry_after() {
        let limit = PerCredential::new(3, "API key");
        let a = Secret::presented("sbk_a").hash();
        let b = Secret::presented("sbk_b").hash();
        for _ in 0..3 {
            limit.check(&a).expect("within the burst");
        }
        let refused = limit.check(&a).expect_err("over the rate");
        assert_eq!(refused.problem(), Problem::RateLimited);
        assert!(
            refused.detail().contains("more than 3 requests a second"),
            "{}",
            refused.detail()
        );
        // Another credential has its own bucket.
        limit.check(&b).expect("another key is not limited by the first");
        assert_eq!(limit.tracked(), 2);
    }

    #[test]
    fn a_rate_of_zero_is_no_limit() {
        let limit = PerCredential::new(0, "API key");
        let a = Secret::presented("sbk_a").hash();
        for _ in 0..10_000 {
            limit.check(&a).expect("unlimited");
        }
        assert_eq!(limit.tracked(), 0);
    }
}
