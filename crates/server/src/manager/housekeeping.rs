//! The manager's upkeep: the connection lease renewed, heartbeats held in memory flushed
//! to the store in batches, and the sweep that removes long-gone instances and groups and
//! prunes the audit trail, the selection logs and the task logs past their retention.

use std::time::Duration;

use chrono::Utc;

use super::cluster::Sockets;
use super::dispatch::Placer;
use super::workers::Workers;
use crate::config::Settings;

/// The part of [`Settings`] the upkeep reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    pub connection_lease: Duration,
    pub heartbeat_flush_interval: Duration,
    pub sweep_interval: Duration,
    pub instance_retention: Duration,
    pub group_retention: Duration,
    pub audit_retention: Duration,
    pub selection_log_retention: Duration,
    pub history_interval: Duration,
}

impl From<&Settings> for Schedule {
    fn from(s: &Settings) -> Self {
        Self {
            connection_lease: s.connection_lease,
            heartbeat_flush_interval: s.heartbeat_flush_interval,
            sweep_interval: s.sweep_interval,
            instance_retention: s.instance_retention,
            group_retention: s.group_retention,
            audit_retention: s.audit_retention,
            selection_log_retention: s.selection_log_retention,
            history_interval: s.history_interval,
        }
    }
}

/// The upkeep's periodic work, stopped together.
#[derive(Debug)]
pub struct Housekeeping {
    workers: Workers,
    sockets: Sockets,
    placer: Placer,
}

impl Housekeeping {
    /// Starts the lease keeper, the heartbeat flusher and the sweep.
    pub fn start(placer: &Placer, sockets: &Sockets, schedule: Schedule) -> Self {
        let workers = Workers::default();
        // `interval` refuses a zero period: a lease of a few nanoseconds still ticks.
        let lease_every = (schedule.connection_lease / 4).max(Duration::from_millis(1));
        let (p, s) = (placer.clone(), sockets.clone());
        workers.every(lease_every, move || {
            let (p, s) = (p.clone(), s.clone());
            async move { keep_lease(&p, &s).await }
        });
        let (p, s) = (placer.clone(), sockets.clone());
        workers.spawn(move |stop| flush_heartbeats(p, s, schedule.heartbeat_flush_interval, stop));
        let p = placer.clone();
        workers.every(schedule.history_interval, move || {
            let p = p.clone();
            async move { sample_history(&p).await }
        });
        let (p, s) = (placer.clone(), sockets.clone());
        workers.every(schedule.sweep_interval, move || {
            let (p, s) = (p.clone(), s.clone());
            async move { sweep(&p, &s, &schedule).await }
        });
        Self {
            workers,
            sockets: sockets.clone(),
            placer: placer.clone(),
        }
    }

    /// Stops the periodic work and writes the heartbeats still held in memory.
    pub async fn stop(self) {
        self.workers.stop().await;
        if let Err(e) = self.sockets.heartbeats.flush(self.placer.store().as_ref()).await {
            tracing::warn!(error = %e, "cannot write the last heartbeats before stopping");
        }
    }
}

/// Writes the heartbeats held in memory every `interval`, or sooner when a batch's worth
/// is waiting (see [`super::heartbeats`]).
async fn flush_heartbeats(
    placer: Placer,
    sockets: Sockets,
    interval: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = sockets.heartbeats.batch_waiting() => ticker.reset(),
            () = stop.cancelled() => return,
        }
        if let Err(e) = sockets.heartbeats.flush(placer.store().as_ref()).await {
            tracing::warn!(error = %e, "cannot write heartbeats; keeping them for the next flush");
        }
    }
}

/// Renews this manager's connection lease (see [`switchboard_store::Store::renew_lease`]);
/// when it had lapsed (the store was out of reach for longer than the lease, and another
/// replica may have cleared this one's connections), records every socket open here again.
/// Renewed every quarter of the lease, so three renewals in a row may fail before the
/// connections stop counting.
#[tracing::instrument(name = "lease", skip_all)]
async fn keep_lease(placer: &Placer, sockets: &Sockets) {
    match placer.store().renew_lease().await {
        Ok(true) => {}
        Ok(false) => {
            let open = sockets.hub.instances();
            if !open.is_empty() {
                tracing::info!(
                    sockets = open.len(),
                    "connection lease had lapsed; recording this manager's sockets again"
                );
            }
            for id in open {
                if let Err(e) = placer.store().set_instance_connected(id, true).await {
                    tracing::warn!(instance.id = %id, error = %e, "cannot record a connection again");
                }
                // The socket may have closed meanwhile, its let-go written before this
                // record: undo it, or the instance would look connected for good.
                if !sockets.hub.is_connected(id) {
                    let _ = placer.store().set_instance_connected(id, false).await;
                }
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot renew the connection lease; retrying"),
    }
}

/// Samples the queue's counts per scope into the history of the dashboard's charts:
/// the aggregate of `GET /api/v1/queue` (without its decisions) and a count of the
/// assigned and running tasks. Every replica keeps its own history, so every one samples.
#[tracing::instrument(name = "history", skip_all)]
async fn sample_history(placer: &Placer) {
    let store = placer.store();
    let query = switchboard_store::QueueQuery {
        max_shapes: super::queue::MAX_SHAPES,
        ..Default::default()
    };
    let (queued, active) = match (store.queue_shapes(&query).await, store.active_by_scope().await) {
        (Ok(q), Ok(a)) => (q, a),
        (Err(e), _) | (_, Err(e)) => {
            tracing::warn!(error = %e, "cannot sample the queue for its history; the interval stays unsampled");
            return;
        }
    };
    let mut counts: std::collections::HashMap<switchboard_domain::Scope, (u64, u64)> = Default::default();
    for shape in queued.shapes {
        counts.entry(shape.scope).or_default().0 += shape.count;
    }
    for (scope, n) in active {
        counts.entry(scope).or_default().1 += n;
    }
    placer
        .metrics()
        .history()
        .sampled(Utc::now(), counts.into_iter().map(|(s, (q, r))| (s, q, r)));
}

/// Removes the single-use instances done with their tasks (see
/// [`switchboard_store::Store::retire_spent_instances`]) and tells each, wherever its
/// socket is, to exit: a `drain`, then close code 4004. Called when a task of a
/// single-use instance ends, and by every sweep for the endings that happen elsewhere
/// (a timeout, a cancel, a lost instance).
pub async fn retire_spent(placer: &Placer, sockets: &Sockets) {
    match placer.store().retire_spent_instances(Utc::now()).await {
        Ok(gone) => {
            for id in &gone {
                sockets.close(
                    switchboard_store::SocketTarget::Instance(*id),
                    switchboard_protocol::socket::close::RETIRED,
                    "this single-use instance ran its task and was removed; exit",
                );
                sockets.heartbeats.forget(*id);
                tracing::info!(instance.id = %id, "single-use instance retired");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot retire single-use instances; the next sweep tries again"),
    }
}

/// Removes instances silent for longer than the instance retention, groups empty for
/// longer than the group retention, and audit and selection-log entries past theirs. The
/// same work on every replica: the one that leads does it.
#[tracing::instrument(name = "upkeep", skip_all)]
async fn sweep(placer: &Placer, sockets: &Sockets, settings: &Schedule) {
    if !placer.leads().await {
        return;
    }
    let now = Utc::now();
    let retention = |d: Duration| chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX);
    retire_spent(placer, sockets).await;
    match placer
        .store()
        .remove_expired_jit_tokens(now - chrono::Duration::hours(1))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "deleted JIT credentials past their expiry"),
        Err(e) => tracing::warn!(error = %e, "the JIT credential sweep failed; it runs again next interval"),
    }
    match placer
        .store()
        .remove_silent_instances(now - retention(settings.instance_retention), now)
        .await
    {
        Ok(gone) if !gone.is_empty() => {
            // The other replicas need no signal: they trust a session only until its
            // instance could be swept (see `super::sessions`).
            sockets.sessions.forget_instances(&gone);
            for id in &gone {
                sockets.heartbeats.forget(*id);
            }
            tracing::info!(count = gone.len(), "removed instances without a heartbeat");
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the instance sweep failed; it runs again next interval"),
    }
    match placer
        .store()
        .remove_empty_groups(now - retention(settings.group_retention))
        .await
    {
        Ok(gone) if !gone.is_empty() => tracing::info!(count = gone.len(), "removed delegate groups left empty"),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "the group sweep failed; it runs again next interval"),
    }
    match placer
        .store()
        .prune_audit(now - retention(settings.audit_retention))
        .await
    {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "deleted audit entries past their retention"),
        Err(e) => tracing::warn!(error = %e, "the audit sweep failed; it runs again next interval"),
    }
    let log_cutoff = now - retention(settings.selection_log_retention);
    match placer.store().prune_selection_log(log_cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "deleted selection-log entries past their retention"),
        Err(e) => tracing::warn!(error = %e, "the selection-log sweep failed; it runs again next interval"),
    }
    // Task logs are kept as long as selection logs, from when they last grew.
    match placer.store().prune_task_logs(log_cutoff).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(count = n, "deleted task logs past their retention"),
        Err(e) => tracing::warn!(error = %e, "the task-log sweep failed; it runs again next interval"),
    }
}
