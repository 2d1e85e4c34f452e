//! What a task may say about how it is queued and retried: a concurrency key with its
//! limit, and a retry policy (docs/rules.md, "Concurrency keys" and "Retries").
//!
//! Both are values checked once, at submission; the rules that use them live where they
//! are enforced: the concurrency limit in the stores' claim (`switchboard_store::batch`),
//! the retry policy in [`crate::Task::apply`].

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task::{Failure, FailureReason};

/// The longest concurrency key and error code, in bytes.
pub const KEY_MAX_BYTES: usize = 128;
/// The most tasks a concurrency key may let run at once.
pub const CONCURRENCY_LIMIT_MAX: u32 = 10_000;
/// The most error codes a retry policy may list.
pub const ERROR_CODES_MAX: usize = 16;
/// The longest backoff delay, initial or maximum (1 day).
pub const BACKOFF_MAX: Duration = Duration::from_secs(24 * 3600);
/// The largest backoff factor.
pub const BACKOFF_FACTOR_MAX: f64 = 10.0;

/// Checks a concurrency key or an error code: 1 to [`KEY_MAX_BYTES`] bytes of letters,
/// digits and `.` `_` `-` `:` `/` `@` (what environment names, branches and service
/// names are made of), so that it prints unquoted in a reason line.
pub fn check_key(s: &str) -> Result<(), String> {
    if s.is_empty() || s.len() > KEY_MAX_BYTES {
        return Err(format!("must be 1 to {KEY_MAX_BYTES} bytes"));
    }
    match s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | ':' | '/' | '@')))
    {
        Some(c) => Err(format!("{c:?} is not allowed: use letters, digits and . _ - : / @")),
        None => Ok(()),
    }
}

/// At most `limit` tasks carrying `key` in one account are assigned or running at once,
/// across every replica; the rest wait, `limited` (docs/rules.md, "Concurrency keys").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Concurrency {
    pub key: String,
    pub limit: u32,
    #[serde(default)]
    pub strategy: ConcurrencyStrategy,
}

impl Concurrency {
    pub fn new(key: String, limit: u32, strategy: ConcurrencyStrategy) -> Result<Self, (&'static str, String)> {
        check_key(&key).map_err(|e| ("concurrency_key", e))?;
        if !(1..=CONCURRENCY_LIMIT_MAX).contains(&limit) {
            return Err((
                "concurrency_limit",
                format!("concurrency_limit must be 1 to {CONCURRENCY_LIMIT_MAX}"),
            ));
        }
        Ok(Self { key, limit, strategy })
    }
}

/// What happens to the waiting tasks of a key when a new one arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ConcurrencyStrategy {
    /// Every task waits its turn.
    #[default]
    KeepAll,
    /// The key's tasks still waiting are cancelled: only the newest one matters (a
    /// deploy of the latest commit).
    CancelOlder,
}

impl ConcurrencyStrategy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyStrategy::KeepAll => "keep_all",
            ConcurrencyStrategy::CancelOlder => "cancel_older",
        }
    }
}

/// How a run can end that a retry policy may retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The delegate reported a failure.
    Failed,
    /// It ran past its execution timeout.
    TimedOut,
    /// Its instance was lost while it ran.
    DelegateLost,
}

impl Ending {
    pub fn as_str(self) -> &'static str {
        match self {
            Ending::Failed => "failed",
            Ending::TimedOut => "timed_out",
            Ending::DelegateLost => "delegate_lost",
        }
    }
}

impl fmt::Display for Ending {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The wait before a retry: `initial` before the first, multiplied by `factor` for each
/// later one, never more than `max`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Backoff {
    pub initial_ms: u64,
    pub factor: f64,
    pub max_ms: u64,
}

impl Default for Backoff {
    /// No wait at all: the retry is placed at once.
    fn default() -> Self {
        Backoff {
            initial_ms: 0,
            factor: 1.0,
            max_ms: 0,
        }
    }
}

impl Backoff {
    /// The wait before retry number `n` (1 for the first retry).
    pub fn delay(&self, n: u32) -> Duration {
        let exponent = i32::try_from(n.saturating_sub(1)).unwrap_or(i32::MAX);
        let ms = (self.initial_ms as f64) * self.factor.powi(exponent);
        // A NaN or an overflow (factor 10, tenth retry) is the maximum.
        let ms = if ms.is_finite() {
            ms.min(self.max_ms as f64)
        } else {
            self.max_ms as f64
        };
        Duration::from_millis(ms.max(0.0) as u64)
    }

    fn check(&self) -> Result<(), String> {
        let most = BACKOFF_MAX.as_millis() as u64;
        if self.initial_ms > most || self.max_ms > most {
            return Err(format!("initial_ms and max_ms must be at most {most}"));
        }
        if self.max_ms < self.initial_ms {
            return Err("max_ms must be at least initial_ms".into());
        }
        if !(1.0..=BACKOFF_FACTOR_MAX).contains(&self.factor) {
            return Err(format!("factor must be 1 to {BACKOFF_FACTOR_MAX}"));
        }
        Ok(())
    }
}

/// Which endings of a run put the task back in the queue (while its `max_attempts`
/// allow another run), after what wait, and where it prefers to run next.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RetryPolicy {
    /// The endings retried.
    pub on: BTreeSet<Ending>,
    /// With `failed` in `on`: only failures reported with one of these codes are
    /// retried. Empty: any failure the delegate did not mark not retryable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_codes: Vec<String>,
    #[serde(default)]
    pub backoff: Backoff,
    /// A retry goes to an instance that has not run the task yet when one is eligible;
    /// else to one that has.
    #[serde(default = "yes")]
    pub prefer_different_instance: bool,
}

fn yes() -> bool {
    true
}

impl Default for RetryPolicy {
    /// A task that says nothing: re-queued at once when its instance is lost while it
    /// runs, preferably elsewhere; a failure or a timeout ends it.
    fn default() -> Self {
        RetryPolicy {
            on: BTreeSet::from([Ending::DelegateLost]),
            error_codes: Vec::new(),
            backoff: Backoff::default(),
            prefer_different_instance: true,
        }
    }
}

impl RetryPolicy {
    /// Checks the policy's fields; the error names the field at fault.
    pub fn check(&self) -> Result<(), (&'static str, String)> {
        self.backoff.check().map_err(|e| ("retry.backoff", e))?;
        if self.error_codes.len() > ERROR_CODES_MAX {
            return Err(("retry.error_codes", format!("at most {ERROR_CODES_MAX} error codes")));
        }
        for code in &self.error_codes {
            check_key(code).map_err(|e| ("retry.error_codes", format!("{code:?}: {e}")))?;
        }
        if !self.error_codes.is_empty() && !self.on.contains(&Ending::Failed) {
            return Err((
                "retry.error_codes",
                "error_codes apply to failures: add \"failed\" to on".into(),
            ));
        }
        Ok(())
    }

    /// Whether a run that ended as `ending` (with `failure`) is retried, attempts
    /// allowing.
    pub fn retries(&self, ending: Ending, failure: Option<&Failure>) -> bool {
        if !self.on.contains(&ending) {
            return false;
        }
        match (ending, failure) {
            (_, Some(f)) if !f.retryable => false,
            (Ending::Failed, Some(f)) if !self.error_codes.is_empty() => {
                f.code.as_ref().is_some_and(|c| self.error_codes.contains(c))
            }
            (Ending::Failed, None) => self.error_codes.is_empty(),
            _ => true,
        }
    }
}

/// How a run ended, from the event that ended it and the failure it came with; `None`
/// for an event that does not end a run in a way a policy may retry.
pub fn ending_of(event: crate::TaskEvent, failure: Option<&Failure>) -> Option<Ending> {
    use crate::TaskEvent as E;
    match event {
        E::Fail if failure.is_some_and(|f| f.reason == FailureReason::DelegateLost) => Some(Ending::DelegateLost),
        E::Fail => Some(Ending::Failed),
        E::TimeOut => Some(Ending::TimedOut),
        E::Requeue => Some(Ending::DelegateLost),
        _ => None,
    }
}

/// What an operator sets for one scope (docs/rules.md, "Fair shares", "Retries"): the
/// weight of its share of the delegates it competes for, and the retry policy of its tasks
/// that name none (the nearest scope's, project before org before account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScopePolicy {
    pub scope: crate::Scope,
    /// 1 to [`crate::fair::MAX_WEIGHT`]; `None` for the default.
    pub weight: Option<u32>,
    pub retry: Option<RetryPolicy>,
    pub updated_at: chrono::DateTime<chrono::Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(code: Option<&str>, retryable: bool) -> Failure {
        Failure {
            reason: FailureReason::TaskError,
            detail: "exit 1".into(),
            code: code.map(str::to_owned),
            retryable,
        }
    }

    #[test]
    fn backoff_grows_by_its_factor_up_to_its_maximum() {
        let b = Backoff {
            initial_ms: 1_000,
            factor: 2.0,
            max_ms: 5_000,
        };
        let delays: Vec<u128> = (1..=5).map(|n| b.delay(n).as_millis()).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
        let huge = Backoff {
            initial_ms: 86_400_000,
            factor: 10.0,
            max_ms: 86_400_000,
        };
        assert_eq!(huge.delay(1_000).as_millis(), 86_400_000, "no overflow");
        assert_eq!(Backoff::default().delay(3), Duration::ZERO);
    }

    #[test]
    fn a_policy_retries_only_what_it_names() {
        let mut p = RetryPolicy {
            on: BTreeSet::from([Ending::Failed, Ending::TimedOut]),
            ..RetryPolicy::default()
        };
        assert!(p.retries(Ending::Failed, Some(&failure(None, true))));
        assert!(p.retries(Ending::TimedOut, None));
        assert!(!p.retries(Ending::DelegateLost, None));
        assert!(
            !p.retries(Ending::Failed, Some(&failure(None, false))),
            "the delegate said not retryable"
        );
        p.error_codes = vec!["E_NET".into()];
        assert!(p.retries(Ending::Failed, Some(&failure(Some("E_NET"), true))));
        assert!(!p.retries(Ending::Failed, Some(&failure(Some("E_AUTH"), true))));
        assert!(!p.retries(Ending::Failed, Some(&failure(None, true))));
        assert!(RetryPolicy::default().retries(Ending::DelegateLost, None));
        assert!(!RetryPolicy::default().retries(Ending::Failed, None));
    }

    #[test]
    fn bad_policies_name_their_field() {
        let bad_factor = RetryPolicy {
            backoff: Backoff {
                initial_ms: 1,
                factor: 0.5,
                max_ms: 2,
            },
            ..RetryPolicy::default()
        };
        assert_eq!(bad_factor.check().unwrap_err().0, "retry.backoff");
        let codes_without_failed = RetryPolicy {
            error_codes: vec!["E".into()],
            ..RetryPolicy::default()
        };
        assert_eq!(codes_without_failed.check().unwrap_err().0, "retry.error_codes");
        assert!(check_key("deploy-prod/eu-west-1").is_ok());
        assert!(check_key("has space").is_err());
        assert!(check_key("").is_err());
        assert_eq!(
            Concurrency::new("k".into(), 0, ConcurrencyStrategy::KeepAll)
                .unwrap_err()
                .0,
            "concurrency_limit"
        );
    }
}
