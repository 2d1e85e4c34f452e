//! Fair shares in the dispatcher: which waiting tasks a sweep looks at, in which order,
//! and the operators' policies per scope that weigh them (docs/rules.md, "Fair shares").
//!
//! * A sweep reads the head of each share's queue ([`Store::queue_heads`]: of each of at
//!   most [`SHARES`] shares, the next sweep going on from the last share read, the first
//!   few tasks, [`ROWS`] in all and at least 2 each), so however many tasks one share
//!   holds, the others' are in the sweep.
//! * **Across accounts** (delegates never cross them), the accounts' lists are
//!   interleaved round-robin, so a flood of tasks in one account never puts another's
//!   behind it.
//! * **Within an account**, each scope that submits tasks is a share, ordered by a
//!   virtual clock per account ([`switchboard_domain::fair::Clock`]) that every assignment
//!   this replica makes moves on by `1 / weight`. Each replica keeps its own clocks:
//!   replicas that each serve their part fairly serve the whole fairly.
//! * The policies (weights, default retry policies) are read from the store at most every
//!   [`POLICY_TTL`] and at once after a change through this replica; another replica's
//!   change is seen within the TTL.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use switchboard_domain::fair::{Clock, DEFAULT_WEIGHT, round_robin};
use switchboard_domain::policy::{RetryPolicy, ScopePolicy};
use switchboard_domain::{Ident, Scope, Task};
use switchboard_store::{Store, StoreResult};

/// The most shares one sweep reads the queue of.
pub const SHARES: u32 = 100;
/// About how many tasks a sweep reads in all (at least 2 of each share).
pub const ROWS: u32 = 200;
/// How long the policies read from the store are used before they are read again.
pub const POLICY_TTL: Duration = Duration::from_secs(5);

/// The operators' policies, by scope.
pub type PolicyMap = HashMap<Scope, ScopePolicy>;

/// The weight of `scope`'s share: its own policy's, else the default.
pub fn weight(policies: &PolicyMap, scope: &Scope) -> u32 {
    policies.get(scope).and_then(|p| p.weight).unwrap_or(DEFAULT_WEIGHT)
}

/// The retry policy a task of `scope` gets when it names none: the nearest scope's that
/// sets one (its project, its org, its account).
pub fn default_retry(policies: &PolicyMap, scope: &Scope) -> Option<RetryPolicy> {
    let account = scope.account_id().clone();
    let mut nearest = vec![scope.clone()];
    if let Some(org) = scope.org() {
        if scope.project().is_some() {
            nearest.extend(Scope::new(account.clone(), Some(org.clone()), None).ok());
        }
        nearest.push(Scope::account(account));
    }
    nearest
        .iter()
        .find_map(|s| policies.get(s).and_then(|p| p.retry.clone()))
}

/// The dispatcher's fair-share state. Cheap to share; every lock is held for a few map
/// operations, never across an await.
#[derive(Debug, Default)]
pub struct Shares {
    clocks: Mutex<HashMap<Ident, Clock<Scope>>>,
    /// Where the next sweep's read of the shares starts (after this one).
    cursor: Mutex<Option<Scope>>,
    policies: RwLock<Option<(Instant, Arc<PolicyMap>)>>,
}

impl Shares {
    /// The policies, from the store when those held are older than [`POLICY_TTL`]. On a
    /// failed read the old ones (or none) serve: fairness never blocks placement.
    pub async fn policies(&self, store: &dyn Store) -> Arc<PolicyMap> {
        if let Some((at, held)) = self.policies.read().unwrap_or_else(|e| e.into_inner()).as_ref()
            && at.elapsed() < POLICY_TTL
        {
            return held.clone();
        }
        match store.scope_policies(None).await {
            Ok(found) => {
                let map: Arc<PolicyMap> = Arc::new(found.into_iter().map(|p| (p.scope.clone(), p)).collect());
                *self.policies.write().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), map.clone()));
                map
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the scope policies; using those held");
                let held = self.policies.read().unwrap_or_else(|e| e.into_inner());
                held.as_ref().map(|(_, m)| m.clone()).unwrap_or_default()
            }
        }
    }

    /// Forgets the policies held, so the next use reads them (after a change here).
    pub fn policies_changed(&self) {
        *self.policies.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// A task of `scope` was assigned by this replica.
    pub fn assigned(&self, scope: &Scope, policies: &PolicyMap) {
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        clocks
            .entry(scope.account_id().clone())
            .or_default()
            .assigned(scope.clone(), weight(policies, scope));
    }

    /// The waiting tasks a sweep looks at, in the order it should try them: the head of
    /// each share's queue, each account's in its clock's order, the accounts
    /// interleaved, at most `limit` in all.
    pub async fn sweep_list(&self, store: &dyn Store, limit: usize) -> StoreResult<Vec<Task>> {
        let after = self.cursor.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut heads = store.queue_heads(after.as_ref(), SHARES, ROWS).await?;
        let mut seen: HashSet<Scope> = heads.iter().map(|t| t.spec.scope.clone()).collect();
        // Short of the most shares: the read reached the last one, so the next starts from
        // the first; and this one goes on from there, up to where it began.
        let next = if seen.len() < SHARES as usize {
            if after.is_some() {
                let room = SHARES - u32::try_from(seen.len()).unwrap_or(SHARES);
                let again = store
                    .queue_heads(
                        None,
                        room,
                        ROWS.saturating_sub(u32::try_from(heads.len()).unwrap_or(ROWS))
                            .max(2 * room),
                    )
                    .await?;
                let fresh: Vec<Task> = again.into_iter().filter(|t| !seen.contains(&t.spec.scope)).collect();
                seen.extend(fresh.iter().map(|t| t.spec.scope.clone()));
                heads.extend(fresh);
            }
            None
        } else {
            heads.last().map(|t| t.spec.scope.clone())
        };
        *self.cursor.lock().unwrap_or_else(|e| e.into_inner()) = next;
        // One account's tasks together, whichever read they came from, in the queue's
        // order (which breaks the clock's ties).
        heads.sort_by_cached_key(|t| {
            let order = switchboard_domain::task::queue_key(t.spec.created_at, t.spec.priority);
            (t.spec.scope.account_id().clone(), order, t.id())
        });
        let policies = self.policies(store).await;
        let mut by_account: Vec<(Ident, Vec<Task>)> = Vec::new();
        for task in heads {
            let account = task.spec.scope.account_id();
            match by_account.last_mut() {
                Some((a, tasks)) if a == account => tasks.push(task),
                _ => by_account.push((account.clone(), vec![task])),
            }
        }
        let clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        let ordered: Vec<Vec<Task>> = by_account
            .into_iter()
            .map(|(account, tasks)| {
                let queued = tasks
                    .into_iter()
                    .map(|t| (t.spec.scope.clone(), weight(&policies, &t.spec.scope), t))
                    .collect();
                match clocks.get(&account) {
                    Some(clock) => clock.order(queued),
                    None => Clock::default().order(queued),
                }
            })
            .collect();
        drop(clocks);
        let mut list = round_robin(ordered);
        list.truncate(limit);
        Ok(list)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(path: &str, weight: Option<u32>, retry: bool) -> (Scope, ScopePolicy) {
        let scope = Scope::parse_path(path).unwrap();
        let retry = retry.then(|| RetryPolicy {
            error_codes: vec![path.replace('/', "-")],
            on: [switchboard_domain::policy::Ending::Failed].into_iter().collect(),
            ..RetryPolicy::default()
        });
        (
            scope.clone(),
            ScopePolicy {
                scope,
                weight,
                retry,
                updated_at: chrono::Utc::now(),
            },
        )
    }

    #[test]
    fn a_weight_is_its_own_scopes_and_a_retry_policy_the_nearest_scopes() {
        let policies: PolicyMap = [
            policy("acme", Some(5), true),
            policy("acme/red", None, true),
            policy("acme/blue/web", Some(3), false),
        ]
        .into_iter()
        .collect();
        let scope = |p: &str| Scope::parse_path(p).unwrap();
        assert_eq!(weight(&policies, &scope("acme")), 5);
        assert_eq!(
            weight(&policies, &scope("acme/red")),
            DEFAULT_WEIGHT,
            "weights are not inherited"
        );
        assert_eq!(weight(&policies, &scope("acme/blue/web")), 3);
        let code = |p: &str| default_retry(&policies, &scope(p)).map(|r| r.error_codes[0].clone());
        assert_eq!(code("acme/red/api").as_deref(), Some("acme-red"), "the org's, nearest");
        assert_eq!(
            code("acme/blue/web").as_deref(),
            Some("acme"),
            "the project sets none: the account's"
        );
        assert_eq!(code("acme").as_deref(), Some("acme"));
        assert_eq!(code("globex"), None);
    }
}
