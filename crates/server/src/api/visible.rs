//! What a caller may learn about delegate instances from an explanation.
//!
//! The dry run and the selection log name instances: a verdict for each (its delegate,
//! hostname, id and scope), the choice and the ranking, the instance asked to validate,
//! the one assigned. A key sees a delegate only within its own scope (docs/rules.md:
//! "Explanations respect scope"), and outside it must not learn that one exists: such
//! instances are left out of verdicts and details, their ids become `null`, their ids in
//! summary lines a neutral phrase, and each redacted decision counts them in
//! `hidden_instances`. The engine's own counts ("3 out of scope") stay, as they name no
//! one. The instances that held the task (its attempts) are named whatever their scope:
//! the task itself names its holder (`instance_id`), and an account-wide delegate serving
//! a project's task is part of that task's record.
//!
//! Everything is redacted on the way out, from the JSON as stored, so the log keeps the
//! whole truth for operators whose key sees all of it.

use std::collections::HashMap;

use serde_json::Value;
use switchboard_domain::{InstanceId, Permission, Scope, SelectionLogEntry};
use switchboard_store::{Store, StoreError, StoreResult};

use crate::http::auth::Caller;

/// What replaces the id of an instance the caller may not see, in summary lines.
const HIDDEN: &str = "(an instance outside your scope)";

/// Which instances a caller may see, learnt from the verdicts' scopes and, for instances
/// named without one (an assignment, a validation question), from the store.
#[derive(Debug)]
struct Visibility<'c> {
    caller: &'c Caller,
    seen: HashMap<InstanceId, bool>,
}

impl<'c> Visibility<'c> {
    /// `None` when the caller sees every instance of any account it may ask about: the
    /// admin key, and keys scoped to a whole account.
    fn of(caller: &'c Caller) -> Option<Self> {
        let scope = caller.visible()?;
        scope.org()?;
        Some(Self {
            caller,
            seen: HashMap::new(),
        })
    }

    fn sees_scope(&self, scope: &Scope) -> bool {
        self.caller.check(Permission::DelegatesView, scope, "delegate").is_ok()
    }

    /// Notes the scope of every instance a serialized decision's verdicts name.
    fn learn(&mut self, decision: &Value) {
        let Some(verdicts) = decision.get("verdicts").and_then(Value::as_array) else {
            return;
        };
        for v in verdicts {
            let (Some(id), Some(scope)) = (instance_id(v.get("instance_id")), v.get("scope")) else {
                continue;
            };
            let sees = serde_json::from_value::<Scope>(scope.clone()).is_ok_and(|s| self.sees_scope(&s));
            // Never over what is known already (a holder stays named).
            self.seen.entry(id).or_insert(sees);
        }
    }

    /// Looks up the instances named that no verdict told about; an instance that is gone
    /// counts as not visible.
    async fn resolve(&mut self, store: &dyn Store, named: Vec<InstanceId>) -> StoreResult<()> {
        for id in named {
            if self.seen.contains_key(&id) {
                continue;
            }
            let sees = match store.get_instance(id).await {
                Ok(instance) => match store.get_group(instance.group_id).await {
                    Ok(group) => self.sees_scope(&group.scope),
                    Err(StoreError::NotFound(_)) => false,
                    Err(e) => return Err(e),
                },
                Err(StoreError::NotFound(_)) => false,
                Err(e) => return Err(e),
            };
            self.seen.insert(id, sees);
        }
        Ok(())
    }

    /// Whether the caller may see the instance `id` names (an unknown one: no).
    fn visible(&self, id: Option<InstanceId>) -> bool {
        id.is_some_and(|id| self.seen.get(&id).copied().unwrap_or(false))
    }

    /// Whether `id` names an instance the caller may not see.
    fn hidden(&self, id: Option<InstanceId>) -> bool {
        id.is_some() && !self.visible(id)
    }

    /// Redacts one entry's detail (a decision, or a record naming `instance_id`) in place.
    fn redact(&self, detail: &mut Value) {
        let Some(object) = detail.as_object_mut() else { return };
        if let Some(Value::Array(verdicts)) = object.get_mut("verdicts") {
            let before = verdicts.len();
            verdicts.retain(|v| self.visible(instance_id(v.get("instance_id"))));
            let hidden = before - verdicts.len();
            if hidden > 0 {
                object.insert("hidden_instances".into(), Value::from(hidden));
            }
        }
        if let Some(Value::Array(ranked)) = object.get_mut("ranked") {
            ranked.retain(|id| !self.hidden(instance_id(Some(id))));
        }
        for field in ["chosen", "instance_id"] {
            if let Some(slot) = object.get_mut(field)
                && self.hidden(instance_id(Some(slot)))
            {
                *slot = Value::Null;
            }
        }
    }

    fn redact_line(&self, line: &str) -> String {
        let mut line = line.to_owned();
        for (id, sees) in &self.seen {
            if !sees {
                line = line.replace(&id.to_string(), HIDDEN);
            }
        }
        line
    }
}

/// A selection log as `caller` may read it; `holders` are the instances that held the
/// task (named whatever their scope, as the task itself names them).
pub async fn selection_log(
    store: &dyn Store,
    caller: &Caller,
    holders: impl IntoIterator<Item = InstanceId>,
    mut entries: Vec<SelectionLogEntry>,
) -> StoreResult<Vec<SelectionLogEntry>> {
    let Some(mut visibility) = Visibility::of(caller) else {
        return Ok(entries);
    };
    visibility.seen.extend(holders.into_iter().map(|id| (id, true)));
    for entry in &entries {
        visibility.learn(&entry.detail);
    }
    for entry in &entries {
        let mut named = Vec::new();
        collect_ids(&entry.detail, &mut named);
        // The lines name instances by id ("assigned to instance ..."), sometimes with
        // nothing in the detail: those are looked up too.
        named.extend(
            entry
                .summary
                .split(|c: char| !c.is_ascii_hexdigit() && c != '-')
                .filter_map(|word| word.parse::<InstanceId>().ok()),
        );
        visibility.resolve(store, named).await?;
    }
    for entry in &mut entries {
        visibility.redact(&mut entry.detail);
        entry.summary = visibility.redact_line(&entry.summary);
    }
    Ok(entries)
}

/// A serialized decision (the dry run's answer) as `caller` may read it: its verdicts
/// carry every instance's scope, so nothing needs looking up.
pub fn decision(caller: &Caller, decision: &mut Value) {
    let Some(mut visibility) = Visibility::of(caller) else {
        return;
    };
    visibility.learn(decision);
    // An id the verdicts do not cover (none should be) stays hidden: `hidden` treats the
    // unknown as not visible.
    visibility.redact(decision);
}

fn instance_id(value: Option<&Value>) -> Option<InstanceId> {
    value?.as_str()?.parse().ok()
}

/// Every instance id `value` names where the log puts one: a top-level `instance_id` or
/// `chosen`, the `ranked` list, the verdicts.
fn collect_ids(value: &Value, into: &mut Vec<InstanceId>) {
    let Some(object) = value.as_object() else { return };
    for field in ["instance_id", "chosen"] {
        into.extend(instance_id(object.get(field)));
    }
    if let Some(Value::Array(ranked)) = object.get("ranked") {
        into.extend(ranked.iter().filter_map(|v| instance_id(Some(v))));
    }
    if let Some(Value::Array(verdicts)) = object.get("verdicts") {
        into.extend(verdicts.iter().filter_map(|v| instance_id(v.get("instance_id"))));
    }
}
