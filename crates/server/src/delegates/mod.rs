//! The delegate side of the manager: registration, the socket channel, heartbeats held in
//! memory and flushed in batches, and the sweep that removes long-gone instances and
//! groups.

pub mod auth;
pub mod heartbeats;
pub mod hub;
pub mod register;
pub mod stream;
pub mod tasks;

use std::time::Duration;

use chrono::Utc;
use switchboard_domain::DelegateInstance;
use tokio_util::sync::CancellationToken;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use self::heartbeats::Heartbeats;
use self::hub::Hub;
use crate::state::AppState;
use crate::workers::Workers;

/// The `/delegate/v1` routes. Not behind the admin key: delegates authenticate with their
/// token (registration) or their session credential (everything after).
pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register::register))
        .routes(routes!(stream::stream))
        .routes(routes!(tasks::acquire))
        .routes(routes!(tasks::progress))
        .routes(routes!(tasks::result))
}

/// `instance` as this manager sees it now: its heartbeat may be ahead of the store by up to
/// one flush interval, and its hub knows for certain which sockets are open here. The one
/// rule for "is this instance connected and fresh", used by placement (the fleet
/// snapshot), the API and the metrics alike: an open socket here, or a connection the
/// store records for a manager whose lease lives (see [`Store::renew_lease`]).
///
/// [`Store::renew_lease`]: switchboard_store::Store::renew_lease
pub fn current(state: &AppState, instance: DelegateInstance) -> DelegateInstance {
    overlay(state.hub(), state.heartbeats(), instance)
}

/// [`current`] from the parts it reads: what placement's snapshot uses too
/// ([`crate::cluster::Sockets`]), so the API, the metrics and placement agree.
pub fn overlay(hub: &Hub, heartbeats: &Heartbeats, mut instance: DelegateInstance) -> DelegateInstance {
    if let Some(beat) = heartbeats.latest(instance.id) {
        instance.last_heartbeat_at = instance.last_heartbeat_at.max(beat.at);
    }
    instance.connected = instance.connected || hub.is_connected(instance.id);
    instance
}

/// The periodic work of the delegate side, stopped together.
#[derive(Debug)]
pub struct Background {
    workers: Workers,
}

impl Background {
    /// Starts the heartbeat flusher, the lease keeper and the sweep.
    pub fn start(state: &AppState) -> Self {
        let workers = Workers::default();
        let settings = state.settings();
        // `interval` refuses a zero period: a lease of a few nanoseconds still ticks.
        let lease_every = (settings.connection_lease / 4).max(Duration::from_millis(1));
        every(
            &workers,
            state,
            lease_every,
            |state| async move { keep_lease(&state).await },
        );
        every(&workers, state, settings.heartbeat_flush_interval, |state| async move {
            if let Err(e) = state.heartbeats().flush(state.store().as_ref()).await {
                tracing::warn!(error = %e, "cannot write heartbeats; keeping them for the next flush");
            }
        });
        every(&workers, state, settings.sweep_interval, |state| async move {
            sweep(&state).await
        });
        Self { workers }
    }

    /// Stops the periodic work and writes the heartbeats still held in memory.
    pub async fn stop(self, state: &AppState) {
        self.workers.stop().await;
        if let Err(e) = state.heartbeats().flush(state.store().as_ref()).await {
            tracing::warn!(error = %e, "cannot write the last heartbeats before stopping");
        }
    }
}

/// Renews this manager's connection lease (see [`switchboard_store::Store::renew_lease`]);
/// when it had lapsed (the store was out of reach for longer than the lease, and another
/// replica may have cleared this one's connections), records every socket open here again.
/// Renewed every quarter of the lease, so three renewals in a row may fail before the
/// connections stop counting.
pub async fn keep_lease(state: &AppState) {
    match state.store().renew_lease().await {
        Ok(true) => {}
        Ok(false) => {
            let open = state.hub().instances();
            if !open.is_empty() {
                tracing::info!(
                    sockets = open.len(),
                    "connection lease had lapsed; recording this manager's sockets again"
                );
            }
            for id in open {
                if let Err(e) = state.store().set_instance_connected(id, true).await {
                    tracing::warn!(instance.id = %id, error = %e, "cannot record a connection again");
                }
                // The socket may have closed meanwhile, its let-go written before this
                // record: undo it, or the instance would look connected for good.
                if !state.hub().is_connected(id) {
                    let _ = state.store().set_instance_connected(id, false).await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot renew the connection lease; retrying"),
    }
}

/// Runs `work` on the state every `period` among `workers`, until they stop (never in the
/// middle of a run).
fn every<F, Fut>(workers: &Workers, state: &AppState, period: Duration, work: F)
where
    F: Fn(AppState) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let state = state.clone();
    workers.spawn(move |stop: CancellationToken| async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticker.tick() => work(state.clone()).await,
                () = stop.cancelled() => return,
            }
        }
    });
}

/// Removes instances silent for longer than the instance retention, groups empty for
/// longer than the group retention, and selection-log entries past theirs; and forgets
/// the request rates of credentials that have gone quiet.
async fn sweep(state: &AppState) {
    state.limits().api.forget_idle();
    state.limits().delegates.forget_idle();
    // The rest is the same work on every replica: the one that leads does it.
    if !state.placer().leads().await {
        return;
    }
    let settings = state.settings();
    let now = Utc::now();
    let retention = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    match state
        .store()
        .remove_silent_instances(now - retention(settings.instance_retention), now)
        .await
    {
        Ok(gone) if !gone.is_empty() => {
            // The other replicas need no signal: they trust a session only until its
            // instance could be swept (see `auth`).
            state.sessions().forget_instances(&gone);
            for id in &gone {
                state.heartbeats().forget(*id);
            }
            tracing::info!(count = gone.len(), "removed instances without a heartbeat");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the instance sweep failed; it runs again next interval"),
    }
    match state
        .store()
        .remove_empty_groups(now - retention(settings.group_retention))
        .await
    {
        Ok(gone) if !gone.is_empty() => tracing::info!(count = gone.len(), "removed delegate groups left empty"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the group sweep failed; it runs again next interval"),
    }
    match state
        .store()
        .prune_audit(now - retention(settings.audit_retention))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "deleted audit entries past their retention"),
        Err(e) => tracing::warn!(error = %e, "the audit sweep failed; it runs again next interval"),
    }
    let log_cutoff = now - retention(settings.selection_log_retention);
    match state.store().prune_selection_log(log_cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "deleted selection-log entries past their retention"),
        Err(e) => tracing::warn!(error = %e, "the selection-log sweep failed; it runs again next interval"),
    }
}

#[cfg(test)]
mod tests {
    use chrono::Duration;
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
        }
    }

    /// The one rule the API, the metrics and placement's snapshot use
    /// (`cluster::Sockets::current` is this function too): this manager's socket and
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
