//! The demand on a delegate, for autoscalers: the queued tasks it could take, the tasks on
//! its instances, its free slots and how many instances would be enough. Answered by
//! `GET /api/v1/delegates/{id}/demand` and exported per declared pool on `/metrics`.

use std::collections::{BTreeSet, HashMap};

use chrono::{DateTime, Duration, Utc};
use switchboard_domain::delegate::DEFAULT_CAPACITY;
use switchboard_domain::engine::effective_selectors;
use switchboard_domain::{ConnectorId, DelegateGroup, DelegateInstance, Liveness, Selectors, Task};
use switchboard_protocol::fleet::Demand;
use switchboard_store::{Store, StoreResult};

/// How many queued tasks of an account one reading takes at most.
pub const QUEUED_LIMIT: u32 = 10_000;

/// The queued tasks of an account, with the selectors of the connectors they inherit
/// selectors from: what [`of`] matches delegates against. Two or more store reads: the
/// queue (at most [`QUEUED_LIMIT`] tasks, highest priority first), then each connector
/// once.
#[derive(Debug, Default)]
pub struct Queue {
    pub tasks: Vec<Task>,
    pub truncated: bool,
    connectors: HashMap<ConnectorId, Selectors>,
}

impl Queue {
    pub async fn read(store: &dyn Store, account: &switchboard_domain::Ident) -> StoreResult<Queue> {
        let tasks = store.queued_tasks(Some(account), QUEUED_LIMIT).await?;
        let truncated = tasks.len() >= QUEUED_LIMIT as usize;
        let mut connectors = HashMap::new();
        let inherited: BTreeSet<ConnectorId> = tasks
            .iter()
            .filter(|t| t.spec.selectors.is_empty())
            .filter_map(|t| t.spec.connector_id)
            .collect();
        for c in inherited {
            // A connector deleted meanwhile leaves its tasks with their own (empty) selectors.
            if let Ok(connector) = store.get_connector(c).await {
                connectors.insert(c, connector.selectors);
            }
        }
        Ok(Queue {
            tasks,
            truncated,
            connectors,
        })
    }
}

/// The demand on `group`, whose `instances` are as this manager sees them now (the one
/// liveness rule applied), against `queue` (of the group's account).
pub fn of(
    group: &DelegateGroup,
    instances: &[DelegateInstance],
    queue: &Queue,
    now: DateTime<Utc>,
    heartbeat_timeout: Duration,
) -> Demand {
    // What each instance offers, built once rather than for every queued task.
    let offers: Vec<(&DelegateInstance, Selectors)> = instances.iter().map(|i| (i, i.selector_set(group))).collect();
    let (mut queued, mut oldest) = (0u64, None::<DateTime<Utc>>);
    for task in &queue.tasks {
        let spec = &task.spec;
        let connector = spec.connector_id.and_then(|c| queue.connectors.get(&c));
        let selectors = effective_selectors(&spec.selectors, connector);
        // As placement would, whatever the liveness of the instances: the pool as declared,
        // or one of its instances as registered.
        let fits = group.pool_fits(&spec.scope, &spec.task_type, selectors)
            || (group.scope.contains(&spec.scope)
                && offers
                    .iter()
                    .any(|(i, offered)| i.task_types.contains(&spec.task_type) && selectors.is_subset(offered)));
        if fits {
            queued += 1;
            oldest = Some(oldest.map_or(spec.created_at, |o| o.min(spec.created_at)));
        }
    }
    let connected: Vec<&DelegateInstance> = instances
        .iter()
        .filter(|i| i.liveness(now, heartbeat_timeout) == Liveness::Connected)
        .collect();
    let active: u64 = instances.iter().map(|i| u64::from(i.active_tasks)).sum();
    let free_slots: u64 = connected
        .iter()
        .map(|i| u64::from(i.capacity.get().saturating_sub(i.active_tasks)))
        .sum();
    let capacity_per_instance = instances
        .iter()
        .map(|i| i.capacity.get())
        .max()
        .unwrap_or(DEFAULT_CAPACITY)
        .max(1);
    let max_instances = group.declared.as_ref().and_then(|d| d.max_instances);
    // A disabled delegate gets no new task: what it runs still wants its instances, what
    // waits for it wants none until it is enabled again.
    let waiting = if group.disabled { 0 } else { queued };
    let wanted = (active + waiting).div_ceil(u64::from(capacity_per_instance));
    let desired = u32::try_from(wanted)
        .unwrap_or(u32::MAX)
        .min(max_instances.unwrap_or(u32::MAX));
    Demand {
        id: group.id,
        name: group.name.clone(),
        queued,
        queued_truncated: queue.truncated,
        oldest_queued_age_ms: oldest.map(|o| (now - o).num_milliseconds().max(0)),
        active,
        instances: u32::try_from(instances.len()).unwrap_or(u32::MAX),
        connected: u32::try_from(connected.len()).unwrap_or(u32::MAX),
        free_slots,
        capacity_per_instance,
        desired_instances: desired,
        max_instances,
    }
}
