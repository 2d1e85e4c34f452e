//! Several replicas on one store: what this manager tells the others, and what it does
//! when they tell it something.
//!
//! Each replica holds only its own delegate sockets ([`super::hub`]) and its
//! own long-poll waiters ([`super::dispatch::Dispatcher`]). Any replica may place any task
//! (on PostgreSQL it sees every replica's connected instances), so when the instance it
//! claimed for has its socket elsewhere, the offer travels as a [`ClusterEvent`]; so do a
//! task's changes (for long polls held elsewhere), cancellations, and the closing of a
//! revoked token's or a deleted group's sockets, which also forgets their sessions (the
//! task endpoints take sessions from memory: [`super::sessions`]).
//!
//! Events are coalesced: [`Cluster::publish`] only appends to an outbox; the publisher
//! task sends whatever is in it as one call ([`Replicas::publish`], one `NOTIFY`
//! statement on PostgreSQL) as soon as something arrives, then waits [`COALESCE`] before
//! the next call. So the signalling cost is at most one round trip per [`COALESCE`]
//! whatever the task rate, and a lone event leaves at once.
//!
//! Signals are hints: each replica's placement sweep (every `assign_interval`), the
//! acknowledge timeout and the long polls' own timeouts cover a signal that was lost.
//! On SQLite (one manager per file) nothing is published or heard.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use switchboard_domain::{Attempt, DelegateInstance, InstanceId, TaskId, TokenStatus};
use switchboard_protocol::socket::{ServerMessage, close};
use switchboard_store::{Backend, ClusterEvent, ClusterSignal, Replicas, SocketTarget, Store, StoreError};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::dispatch::{Placer, Reach};
use super::heartbeats::Heartbeats;
use super::hub::Hub;
use super::liveness::overlay;
use super::sessions::Sessions;
use super::workers::Workers;

/// The shortest pause between two publishes of one replica: the coalescing window.
pub const COALESCE: Duration = Duration::from_millis(2);

/// How long the listener waits before trying to subscribe again when the store refused.
const RESUBSCRIBE: Duration = Duration::from_secs(1);

/// This replica's side of the signalling.
#[derive(Debug)]
pub struct Cluster {
    /// Who we are in the signals: our own come back to us and are skipped.
    origin: uuid::Uuid,
    /// Whether other replicas can share the store (PostgreSQL).
    shared: bool,
    /// Events waiting for the publisher. A std mutex: pushes and one swap, never held
    /// across an await.
    outbox: Mutex<Vec<ClusterEvent>>,
    /// Wakes the publisher; a permit stored while it is busy makes it publish again.
    ready: Notify,
    /// Whether the listener has subscribed (and so hears what is published from now on).
    listening: watch::Sender<bool>,
    /// How many times the listener came back after losing its connection.
    resyncs: AtomicU64,
}

impl Cluster {
    /// The signalling of a manager on `backend`.
    pub fn new(backend: Backend) -> Self {
        Self {
            origin: uuid::Uuid::new_v4(),
            shared: backend == Backend::Postgres,
            outbox: Mutex::default(),
            ready: Notify::new(),
            listening: watch::channel(false).0,
            resyncs: AtomicU64::new(0),
        }
    }

    /// Returns once this replica hears the others (at once where there are none): what is
    /// published after that reaches it.
    pub async fn listening(&self) {
        if self.shared {
            let _ = self.listening.subscribe().wait_for(|l| *l).await;
        }
    }

    /// Whether this replica hears the others now (always, where there can be none):
    /// false before the listener first subscribes and while its connection is lost.
    pub fn is_listening(&self) -> bool {
        !self.shared || *self.listening.borrow()
    }

    /// Whether other replicas may share the store: then the store's `connected` flags
    /// (kept by whichever replica holds each socket) count, not only this hub.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// How many times the listener lost its connection and listens again.
    pub fn resyncs(&self) -> u64 {
        self.resyncs.load(Ordering::Relaxed)
    }

    /// Queues `event` for the other replicas (nothing when there can be none).
    pub fn publish(&self, event: ClusterEvent) {
        if !self.shared {
            return;
        }
        lock(&self.outbox).push(event);
        self.ready.notify_one();
    }

    /// The queued events, in order, without repeats.
    fn take(&self) -> Vec<ClusterEvent> {
        let pending = std::mem::take(&mut *lock(&self.outbox));
        let mut seen = HashSet::new();
        pending.into_iter().filter(|e| seen.insert(e.clone())).collect()
    }
}

/// This manager's side of its delegates: their open sockets, their sessions, their latest
/// heartbeats, and the bus to the replicas that hold the others. Also how the dispatcher
/// reaches delegates ([`Reach`]): through this manager's hub when the instance's socket is
/// here, else as an event to whichever replica holds it.
#[derive(Debug, Clone)]
pub struct Sockets {
    /// The delegate sockets open on this manager.
    pub hub: Arc<Hub>,
    /// Delegate sessions checked against the store and not invalidated since.
    pub sessions: Arc<Sessions>,
    /// The latest heartbeats, ahead of the store by at most one flush interval.
    pub heartbeats: Arc<Heartbeats>,
    /// What this replica tells the others and hears from them.
    pub cluster: Arc<Cluster>,
    /// Sockets being opened (their session checked, their connection recorded, their
    /// offers read) at once: after a restart the whole fleet reconnects within seconds,
    /// and without a bound those store calls queue for the pool past its timeout, fail,
    /// and the delegates come back to fail again. The rest wait their turn.
    pub opening: Arc<tokio::sync::Semaphore>,
}

impl Sockets {
    /// Sockets for a manager on `backend` holding at most `max_sockets` at once and
    /// opening at most `opening` at once (half the store's pool: the other half serves
    /// everything else meanwhile).
    pub fn new(backend: Backend, max_sockets: usize, opening: usize) -> Self {
        Self {
            hub: Arc::new(Hub::new(max_sockets)),
            sessions: Arc::new(Sessions::default()),
            heartbeats: Arc::new(Heartbeats::default()),
            cluster: Arc::new(Cluster::new(backend)),
            opening: Arc::new(tokio::sync::Semaphore::new(opening.max(1))),
        }
    }

    /// `instance` as this manager sees it now ([`overlay`]: the one liveness rule).
    pub fn current(&self, instance: DelegateInstance) -> DelegateInstance {
        overlay(&self.hub, &self.heartbeats, instance)
    }

    /// Closes the sockets of `target` on every replica, and forgets their sessions.
    /// Returns how many were open here.
    pub fn close(&self, target: SocketTarget, code: u16, reason: &str) -> usize {
        self.cluster.publish(ClusterEvent::CloseSockets {
            target,
            code,
            reason: reason.to_owned(),
        });
        self.close_here(target, code, reason)
    }

    fn close_here(&self, target: SocketTarget, code: u16, reason: &str) -> usize {
        match target {
            SocketTarget::Token(token) => self.sessions.forget_token(token),
            SocketTarget::Group(group) => self.sessions.forget_group(group),
            SocketTarget::Instance(instance) => self.sessions.forget_instances(&[instance]),
        }
        match target {
            SocketTarget::Token(token) => self.hub.close_token(token, code, reason),
            SocketTarget::Group(group) => self.hub.close_group(group, code, reason),
            SocketTarget::Instance(instance) => self.hub.close_instance(instance, code, reason),
        }
    }

    /// `message` to the socket of `instance` if it is on this manager, else `event` to
    /// the replica that holds it.
    fn send_anywhere(&self, instance: InstanceId, message: ServerMessage, event: ClusterEvent) {
        if !self.hub.send(instance, message) {
            self.cluster.publish(event);
        }
    }
}

impl Reach for Sockets {
    fn send_here(&self, instance: InstanceId, message: ServerMessage) -> bool {
        self.hub.send(instance, message)
    }

    fn offer(&self, instance: InstanceId, task: TaskId, attempt: Attempt) {
        let message = ServerMessage::TaskAvailable { task_id: task, attempt };
        let event = ClusterEvent::TaskAvailable {
            instance,
            task,
            attempt,
        };
        self.send_anywhere(instance, message, event);
    }

    fn cancel(&self, instance: InstanceId, task: TaskId, attempt: Attempt) {
        let message = ServerMessage::CancelTask { task_id: task, attempt };
        let event = ClusterEvent::Cancel {
            instance,
            task,
            attempt,
        };
        self.send_anywhere(instance, message, event);
    }

    fn announce(&self, task: TaskId) {
        self.cluster.publish(ClusterEvent::TaskChanged { task });
    }

    fn current(&self, instance: DelegateInstance) -> DelegateInstance {
        Sockets::current(self, instance)
    }

    fn heard_at(&self, instance: InstanceId) -> Option<DateTime<Utc>> {
        self.heartbeats.latest(instance).map(|beat| beat.at)
    }
}

/// Wakes placement on every replica.
pub fn wake_everywhere(placer: &Placer, sockets: &Sockets) {
    placer.dispatcher().wake();
    sockets.cluster.publish(ClusterEvent::Wake);
}

/// Applies what another replica signalled, to this replica's sockets and waiters only.
fn apply(placer: &Placer, sockets: &Sockets, event: ClusterEvent) {
    match event {
        ClusterEvent::TaskAvailable {
            instance,
            task,
            attempt,
        } => {
            if sockets
                .hub
                .send(instance, ServerMessage::TaskAvailable { task_id: task, attempt })
            {
                tracing::debug!(task.id = %task, instance.id = %instance, "offer relayed from another replica");
            }
        }
        ClusterEvent::Cancel {
            instance,
            task,
            attempt,
        } => {
            sockets
                .hub
                .send(instance, ServerMessage::CancelTask { task_id: task, attempt });
        }
        ClusterEvent::TaskChanged { task } => placer.dispatcher().changed(task),
        ClusterEvent::TaskLog { task } => placer.dispatcher().log_grew(task),
        // Sent when a delegate connects to another replica: a snapshot taken before it
        // does not know that instance is there.
        ClusterEvent::Wake => {
            placer.fleet().invalidate();
            placer.dispatcher().wake();
        }
        ClusterEvent::CloseSockets { target, code, reason } => {
            let closed = sockets.close_here(target, code, &reason);
            if closed > 0 {
                tracing::info!(?target, sockets = closed, "sockets closed for another replica");
            }
        }
    }
}

/// The publisher and the listener of one running manager.
#[derive(Debug)]
pub struct Signalling {
    workers: Workers,
}

impl Signalling {
    /// Starts both when the store can be shared; otherwise there is nothing to run.
    pub fn start(placer: &Placer, sockets: &Sockets) -> Self {
        let workers = Workers::default();
        if sockets.cluster.is_shared() {
            workers.spawn(|stop| publish_forever(placer.replicas().clone(), sockets.cluster.clone(), stop));
            workers.spawn(|stop| listen_forever(placer.clone(), sockets.clone(), stop));
        }
        Self { workers }
    }

    /// Stops both, after a last publish of what is queued.
    pub async fn stop(self) {
        self.workers.stop().await;
    }
}

async fn publish_forever(replicas: Arc<dyn Replicas>, cluster: Arc<Cluster>, stop: CancellationToken) {
    loop {
        // Once stopped (seen here or by the pause below), this round is the last: what is
        // queued is published, then the task returns.
        let stopping = tokio::select! {
            biased;
            () = stop.cancelled() => true,
            () = cluster.ready.notified() => false,
        };
        let events = cluster.take();
        if !events.is_empty()
            && let Err(e) = replicas.publish(cluster.origin, &events).await
        {
            // The other replicas' sweeps and timeouts cover what they miss.
            tracing::warn!(error = %e, events = events.len(), "cannot signal the other replicas");
        }
        if stopping {
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(COALESCE) => {}
            () = stop.cancelled() => {}
        }
    }
}

async fn listen_forever(placer: Placer, sockets: Sockets, stop: CancellationToken) {
    let store = placer.store().clone();
    let replicas = placer.replicas().clone();
    let cluster = &sockets.cluster;
    loop {
        let signals = tokio::select! {
            s = subscribe(&*replicas) => s,
            () = stop.cancelled() => return,
        };
        let Some(mut signals) = signals else { return };
        cluster.listening.send_replace(true);
        loop {
            let signal = tokio::select! {
                s = signals.next() => s,
                () = stop.cancelled() => return,
            };
            match signal {
                Some(ClusterSignal::Events { origin, events }) => {
                    if origin != cluster.origin {
                        for event in events {
                            apply(&placer, &sockets, event);
                        }
                    }
                }
                Some(ClusterSignal::Lost) => {
                    // What the others publish from now until the resync is not heard: no
                    // session is taken from memory meanwhile, and none checked before stays
                    // (see `super::sessions`).
                    cluster.listening.send_replace(false);
                    sockets.sessions.forget_all();
                }
                Some(ClusterSignal::Resync) => {
                    // Offers missed meanwhile are released by the acknowledge timeout;
                    // placement looks at the whole queue again now.
                    tracing::info!("the replica listener reconnected; signals may have been missed");
                    cluster.listening.send_replace(true);
                    cluster.resyncs.fetch_add(1, Ordering::Relaxed);
                    placer.fleet().invalidate();
                    sockets.sessions.forget_all();
                    placer.dispatcher().wake();
                    tokio::spawn(recheck_sockets(store.clone(), sockets.clone()));
                }
                // The stream does not end by itself; if it does, listen afresh (not
                // hearing the others until then).
                None => {
                    cluster.listening.send_replace(false);
                    sockets.sessions.forget_all();
                    break;
                }
            }
        }
    }
}

/// After a gap in the signals: closes the sockets here whose token another replica
/// revoked, or whose group it deleted, meanwhile (its signal to close them may be lost).
async fn recheck_sockets(store: Arc<dyn Store>, sockets: Sockets) {
    let (tokens, groups) = sockets.hub.targets();
    let mut closed = 0;
    for token in tokens {
        match store.get_token(token).await {
            Ok(t) if t.status == TokenStatus::Active => {}
            Ok(_) | Err(StoreError::NotFound(_)) => {
                closed += sockets.close_here(
                    SocketTarget::Token(token),
                    close::TOKEN_REVOKED,
                    "the delegate token was revoked",
                );
            }
            Err(e) => return tracing::warn!(error = %e, "cannot recheck the sockets' tokens after a resync"),
        }
    }
    for group in groups {
        match store.get_group(group).await {
            Ok(_) => {}
            Err(StoreError::NotFound(_)) => {
                closed += sockets.close_here(
                    SocketTarget::Group(group),
                    close::REMOVED,
                    "the delegate was deleted by an operator",
                );
            }
            Err(e) => return tracing::warn!(error = %e, "cannot recheck the sockets' groups after a resync"),
        }
    }
    if closed > 0 {
        tracing::info!(
            sockets = closed,
            "sockets closed after a resync: revoked or deleted meanwhile"
        );
    }
}

/// Subscribes, trying again until the store accepts; `None` when it has no signals.
async fn subscribe(replicas: &dyn Replicas) -> Option<switchboard_store::ClusterSignals> {
    loop {
        match replicas.subscribe().await {
            Ok(signals) => return signals,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for the other replicas; retrying");
                tokio::time::sleep(RESUBSCRIBE).await;
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Each critical section is one push or swap: a poisoned lock holds no half-done update.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
