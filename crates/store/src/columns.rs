//! How the parts of a task that no query looks inside are kept: one JSON document per
//! row, the same on every backend.

use serde::{Deserialize, Serialize};
use switchboard_domain::policy::{Concurrency, RetryPolicy};
use switchboard_domain::{NewTask, Task};

/// The `policy` column: a task's concurrency key and retry policy (its key is also a
/// column of its own, which the claim counts by).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoredPolicy {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
}

impl StoredPolicy {
    /// The column's value for `spec`; `None` when it has neither part.
    pub fn of(spec: &NewTask) -> Option<serde_json::Value> {
        if spec.concurrency.is_none() && spec.retry.is_none() {
            return None;
        }
        serde_json::to_value(StoredPolicy {
            concurrency: spec.concurrency.clone(),
            retry: spec.retry.clone(),
        })
        .ok()
    }

    /// Puts the column's parts into `spec`.
    pub fn fill(self, spec: &mut NewTask) {
        spec.concurrency = self.concurrency;
        spec.retry = self.retry;
    }
}

/// The concurrency key column of `task`.
pub fn concurrency_key(task: &Task) -> Option<&str> {
    task.spec.concurrency.as_ref().map(|c| c.key.as_str())
}
