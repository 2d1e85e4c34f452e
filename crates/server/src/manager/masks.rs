//! The secret values of running tasks, for two jobs: handing them to the instance that
//! acquires a task, and masking them in what that task reports back (progress, result,
//! log chunks), so the store never keeps a value in clear (docs/rules.md, "Secrets").
//!
//! The values are opened from the store at acquire time and kept in memory, by task,
//! until the task's result arrives: a report for a task this replica saw acquired needs
//! no store read to be masked. A report that reaches another replica (behind a load
//! balancer) reads the task once there. A task without secrets is remembered as such, so
//! its reports cost a map lookup only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use switchboard_domain::vault::{SecretSource, TaskSecret};
use switchboard_domain::{Secret, Task, TaskId};
use switchboard_protocol::secrets::DeliveredSecret;
use switchboard_store::{Store, StoreResult};

use crate::sealing::SecretKeys;

/// More tasks remembered than this and the memory starts afresh (tasks whose result
/// never came, lost with their instance, would otherwise stay).
const REMEMBERED: usize = 100_000;

/// The values of a task's sealed secrets (references are resolved by the delegate: the
/// manager never sees their values).
pub type Values = Arc<Vec<String>>;

#[derive(Debug, Default)]
pub struct Masks {
    keys: Option<SecretKeys>,
    /// `None`: the task names no sealed secret.
    known: Mutex<HashMap<TaskId, Option<Values>>>,
}

impl Masks {
    pub fn new(keys: Option<SecretKeys>) -> Self {
        Masks {
            keys,
            known: Mutex::default(),
        }
    }

    /// Whether secret values can be sealed and opened here.
    pub fn has_keys(&self) -> bool {
        self.keys.is_some()
    }

    /// The secrets of `task` for the instance that just acquired it, and remembers their
    /// values for masking its reports. One that cannot be delivered comes with why
    /// (`missing`): the task is acquired already, so the delegate decides what to do.
    pub async fn deliver(&self, store: &dyn Store, task: &Task) -> Vec<DeliveredSecret> {
        if task.spec.secrets.is_empty() {
            self.remember(task.id(), None);
            return Vec::new();
        }
        let ids: Vec<_> = task.spec.secrets.iter().map(|u| u.id).collect();
        let found = match store.secrets_by_id(&ids).await {
            Ok(found) => found,
            Err(e) => {
                tracing::warn!(task.id = %task.id(), error = %e, "cannot read the task's secrets");
                return task
                    .spec
                    .secrets
                    .iter()
                    .map(|named| DeliveredSecret {
                        name: named.name.clone(),
                        value: None,
                        reference: None,
                        missing: Some(format!("the manager could not read the secret {}: {e}", named.name)),
                    })
                    .collect();
            }
        };
        let mut delivered = Vec::with_capacity(task.spec.secrets.len());
        let mut values = Vec::new();
        for named in &task.spec.secrets {
            let mut out = DeliveredSecret {
                name: named.name.clone(),
                value: None,
                reference: None,
                missing: None,
            };
            match found.iter().find(|s| s.id == named.id) {
                None => {
                    out.missing = Some(format!(
                        "the secret {} was deleted after the task was submitted",
                        named.name
                    ))
                }
                Some(secret) => match &secret.source {
                    SecretSource::Reference(r) => out.reference = Some(r.clone()),
                    SecretSource::Sealed(_) => match self.open(secret) {
                        Ok(value) => {
                            values.push(value.clone());
                            out.value = Some(Secret::presented(value));
                        }
                        Err(why) => {
                            tracing::error!(secret.id = %secret.id, error = %why, "cannot open a secret value");
                            out.missing = Some(format!("the manager cannot open the secret {}: {why}", named.name));
                        }
                    },
                },
            }
            delivered.push(out);
        }
        self.remember(task.id(), (!values.is_empty()).then(|| Arc::new(values)));
        delivered
    }

    /// The values to mask in `task`'s reports, if it has any: from memory, else read.
    pub async fn values(&self, store: &dyn Store, task: TaskId) -> StoreResult<Option<Values>> {
        if let Some(known) = self.lock().get(&task) {
            return Ok(known.clone());
        }
        let found = store.get_task(task).await?;
        if found.spec.secrets.is_empty() {
            self.remember(task, None);
            return Ok(None);
        }
        let ids: Vec<_> = found.spec.secrets.iter().map(|u| u.id).collect();
        let values: Vec<String> = store
            .secrets_by_id(&ids)
            .await?
            .iter()
            .filter(|s| matches!(s.source, SecretSource::Sealed(_)))
            .filter_map(|s| self.open(s).ok())
            .collect();
        let values = (!values.is_empty()).then(|| Arc::new(values));
        self.remember(task, values.clone());
        Ok(values)
    }

    /// Forgets `task` (its result is in).
    pub fn forget(&self, task: TaskId) {
        self.lock().remove(&task);
    }

    fn open(&self, secret: &TaskSecret) -> Result<String, String> {
        let SecretSource::Sealed(sealed) = &secret.source else {
            return Err("it is a reference".into());
        };
        let keys = self
            .keys
            .as_ref()
            .ok_or("this manager has no secret_key_file to open values with")?;
        let plain = keys
            .open(sealed, &TaskSecret::seal_context(secret.id, secret.version))
            .map_err(|e| e.to_string())?;
        String::from_utf8(plain).map_err(|_| "the value is not UTF-8".to_owned())
    }

    fn remember(&self, task: TaskId, values: Option<Values>) {
        let mut known = self.lock();
        if known.len() >= REMEMBERED {
            known.clear();
        }
        known.insert(task, values);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TaskId, Option<Values>>> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
