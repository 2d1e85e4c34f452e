//! How the parts of a task that no query looks inside are kept: one JSON document per
//! row, the same on every backend.

use serde::{Deserialize, Serialize};
use switchboard_domain::policy::{Concurrency, RetryPolicy};
use switchboard_domain::vault::{SecretReference, SecretSource, SecretUse, TaskSecret};
use switchboard_domain::{Ident, NewTask, Scope, Task};

use crate::{StoreError, StoreResult};

/// The `policy` column: a task's concurrency key and retry policy (its key is also a
/// column of its own, which the claim counts by), and the secrets it uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<SecretUse>,
}

impl StoredPolicy {
    /// The column's value for `spec`; `None` when it has neither part.
    pub fn of(spec: &NewTask) -> Option<serde_json::Value> {
        if spec.concurrency.is_none() && spec.retry.is_none() && spec.secrets.is_empty() {
            return None;
        }
        serde_json::to_value(StoredPolicy {
            concurrency: spec.concurrency.clone(),
            retry: spec.retry.clone(),
            secrets: spec.secrets.clone(),
        })
        .ok()
    }

    /// Puts the column's parts into `spec`.
    pub fn fill(self, spec: &mut NewTask) {
        spec.concurrency = self.concurrency;
        spec.retry = self.retry;
        spec.secrets = self.secrets;
    }
}

/// The concurrency key column of `task`.
pub fn concurrency_key(task: &Task) -> Option<&str> {
    task.spec.concurrency.as_ref().map(|c| c.key.as_str())
}

/// The primary key of a scope's row in `scope_policies`: account, org, project, with ''
/// for "no org" and "no project" (so that the key holds one row per scope).
pub fn policy_key(scope: &Scope) -> (String, String, String) {
    (
        scope.account_id().to_string(),
        scope.org().map(ToString::to_string).unwrap_or_default(),
        scope.project().map(ToString::to_string).unwrap_or_default(),
    )
}

/// The `scope_policies` filter for "at or below `within`": each `None` matches anything.
pub fn policy_filter(within: Option<&Scope>) -> (Option<String>, Option<String>, Option<String>) {
    match within {
        Some(s) => {
            let (a, o, p) = policy_key(s);
            (
                Some(a),
                Some(o).filter(|o| !o.is_empty()),
                Some(p).filter(|p| !p.is_empty()),
            )
        }
        None => (None, None, None),
    }
}

/// The scope of a `scope_policies` row, from its key columns.
pub fn policy_scope(account: &str, org: &str, project: &str) -> StoreResult<Scope> {
    let corrupt = |e: String| StoreError::Internal(format!("corrupt scope policy in the database: {e}"));
    let part = |s: &str| -> StoreResult<Option<Ident>> {
        if s.is_empty() {
            return Ok(None);
        }
        Ident::parse(s).map(Some).map_err(|e| corrupt(e.to_string()))
    };
    let account = part(account)?.ok_or_else(|| corrupt("no account".into()))?;
    Scope::new(account, part(org)?, part(project)?).map_err(|e| corrupt(e.to_string()))
}

/// The `sealed` and `reference` columns of a secret: exactly one is set.
pub fn secret_columns(secret: &TaskSecret) -> (Option<&[u8]>, Option<&str>) {
    match &secret.source {
        SecretSource::Sealed(bytes) => (Some(bytes.as_slice()), None),
        SecretSource::Reference(r) => (None, Some(r.as_str())),
    }
}

/// What a secret holds, from its `sealed` and `reference` columns.
pub fn secret_source(sealed: Option<Vec<u8>>, reference: Option<String>) -> StoreResult<SecretSource> {
    match (sealed, reference) {
        (Some(bytes), None) => Ok(SecretSource::Sealed(bytes)),
        (None, Some(r)) => SecretReference::parse(&r)
            .map(SecretSource::Reference)
            .map_err(|e| StoreError::Internal(format!("corrupt secret reference: {e}"))),
        _ => Err(StoreError::Internal(
            "corrupt secret: neither sealed nor a reference".into(),
        )),
    }
}
