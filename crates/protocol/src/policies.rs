//! Operators' policies per scope: the weight of a scope's fair share and the retry policy
//! of its tasks that name none (`/api/v1/scope-policies`; docs/rules.md, "Fair shares").

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use switchboard_domain::Ident;
use switchboard_domain::fair::{DEFAULT_WEIGHT, MAX_WEIGHT};
use switchboard_domain::policy::{RetryPolicy, ScopePolicy};
use switchboard_domain::task::FieldError;

use crate::tasks::{RetryInput, RetryView};

/// `PUT /api/v1/scope-policies`: sets (replaces) what one scope's policy says.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(deny_unknown_fields)]
pub struct SetScopePolicy {
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// The weight of this scope's share of the delegates it competes for within its
    /// account: 1 to 1000 (default 1). Not inherited: each scope that submits tasks is a
    /// share of its own.
    #[serde(default)]
    #[cfg_attr(feature = "openapi", schema(minimum = 1, maximum = 1000))]
    pub weight: Option<u32>,
    /// The retry policy of this scope's tasks, and of the scopes below it that set none,
    /// when a task names none (the nearest scope's applies).
    #[serde(default)]
    pub retry: Option<RetryInput>,
}

impl SetScopePolicy {
    /// The weight and retry policy, checked.
    pub fn parts(&self) -> Result<(Option<u32>, Option<RetryPolicy>), FieldError> {
        if let Some(w) = self.weight
            && !(1..=MAX_WEIGHT).contains(&w)
        {
            return Err(FieldError::new("weight", format!("weight must be 1 to {MAX_WEIGHT}")));
        }
        let retry = match &self.retry {
            None => None,
            Some(r) => Some(r.clone().checked()?),
        };
        Ok((self.weight, retry))
    }
}

/// A scope's policy as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopePolicyView {
    pub account: Ident,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org: Option<Ident>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<Ident>,
    /// The share's weight (1 when not set).
    pub weight: u32,
    /// Whether `weight` was set, or is the default.
    pub weight_set: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryView>,
    pub updated_at: DateTime<Utc>,
}

impl From<&ScopePolicy> for ScopePolicyView {
    fn from(p: &ScopePolicy) -> Self {
        ScopePolicyView {
            account: p.scope.account_id().clone(),
            org: p.scope.org().cloned(),
            project: p.scope.project().cloned(),
            weight: p.weight.unwrap_or(DEFAULT_WEIGHT),
            weight_set: p.weight.is_some(),
            retry: p.retry.as_ref().map(RetryView::from),
            updated_at: p.updated_at,
        }
    }
}

/// `GET /api/v1/scope-policies`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScopePolicyList {
    pub items: Vec<ScopePolicyView>,
}
