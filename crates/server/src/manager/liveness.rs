//! The one rule for "is this instance connected and fresh" as this manager sees it now,
//! used by placement (the fleet snapshot), the API and the metrics alike.

use switchboard_domain::DelegateInstance;

use super::heartbeats::Heartbeats;
use super::hub::Hub;

/// `instance` as this manager sees it now: its heartbeat may be ahead of the store by up
/// to one flush interval, and its hub knows for certain which sockets are open here. So
/// an instance counts as connected with an open socket here, or with a connection the
/// store records for a manager whose lease lives (see [`Store::renew_lease`]), and its
/// heartbeat is the later of the stored one and the one held here.
///
/// [`Store::renew_lease`]: switchboard_store::Store::renew_lease
pub fn overlay(hub: &Hub, heartbeats: &Heartbeats, mut instance: DelegateInstance) -> DelegateInstance {
    if let Some(beat) = heartbeats.latest(instance.id) {
        instance.last_heartbeat_at = instance.last_heartbeat_at.max(beat.at);
    }
    instance.connected = instance.connected || hub.is_connected(instance.id);
    instance
}

#[cfg(test)]
mod tests {
    use chrono::{Duration, Utc};
    use switchboard_domain::{
        Capacity, DelegateInstance, GroupId, ImageFlavour, InstanceId, Liveness, Selectors, TokenId,
    };

    use super::*;

    fn recorded(connected: bool, beat_age: Duration) -> DelegateInstance {
        let now = Utc::now();
        DelegateInstance {
            id: InstanceId::new(),
            group_id: GroupId::new(),
            token_id: TokenId::new(),
            hostname: "host".into(),
            version: "1.0.0".into(),
            flavour: ImageFlavour::Minimal,
            tags: Selectors::new(),
            task_types: vec![],
            capacity: Capacity::default(),
            active_tasks: 0,
            registered_at: now - beat_age,
            last_heartbeat_at: now - beat_age,
            connected,
            paused: None,
            draining: false,
            max_tasks: None,
            tasks_taken: 0,
        }
    }

    /// The one rule the API, the metrics and placement's snapshot use
    /// (`cluster::Sockets::current` is this function): this manager's socket and
    /// its heartbeat not yet flushed count over what the store recorded, and nothing
    /// here makes a recorded connection count less.
    #[test]
    fn an_instance_is_as_alive_as_the_store_says_or_this_manager_knows() {
        let (hub, heartbeats) = (Hub::default(), Heartbeats::default());
        let timeout = Duration::minutes(5);
        let now = Utc::now();

        // Recorded disconnected (the manager that held it crashed, its lease lapsed) and
        // unknown here: disconnected.
        let gone = recorded(false, Duration::seconds(10));
        assert_eq!(
            overlay(&hub, &heartbeats, gone.clone()).liveness(now, timeout),
            Liveness::Disconnected
        );

        // Its socket is here now (it reconnected to this manager before the store heard).
        let _attached = hub.attach(gone.id, gone.token_id, gone.group_id);
        assert_eq!(
            overlay(&hub, &heartbeats, gone).liveness(now, timeout),
            Liveness::Connected
        );

        // Recorded connected with a heartbeat too old, but a fresh beat waits in memory
        // for the next flush: connected, with that beat.
        let beating = recorded(true, Duration::minutes(10));
        assert_eq!(beating.liveness(now, timeout), Liveness::Stale);
        heartbeats.record(beating.id, now, Vec::new());
        let seen = overlay(&hub, &heartbeats, beating);
        assert_eq!(seen.last_heartbeat_at, now);
        assert_eq!(seen.liveness(now, timeout), Liveness::Connected);

        // A beat in memory older than the stored one never moves it back.
        let fresh = recorded(true, Duration::seconds(1));
        heartbeats.record(fresh.id, now - Duration::minutes(1), Vec::new());
        assert_eq!(
            overlay(&hub, &heartbeats, fresh.clone()).last_heartbeat_at,
            fresh.last_heartbeat_at
        );
    }
}
