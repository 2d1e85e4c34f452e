//! [`AppState`]: what every handler can reach. Cheap to clone (one `Arc`), so axum can
//! hand a copy to each request.

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use axum::extract::FromRef;

use switchboard_domain::SecretHash;
use switchboard_store::{Backing, Replicas, Store};

use crate::config::Settings;
use crate::http::auth::Keys;
use crate::http::limits::{PerCredential, RateLimits};
use crate::http::middleware::Stopping;
use crate::manager::cluster::{Cluster, Sockets};
use crate::manager::dispatch::{Dispatcher, Placer, Timers};
use crate::manager::heartbeats::Heartbeats;
use crate::manager::hub::Hub;
use crate::manager::masks::Masks;
use crate::manager::sessions::Sessions;
use crate::metrics::Metrics;
use crate::storage::Instrumented;

/// The store and the settings, shared by every request.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// What placement and the lifecycle run with: the store, the kept registry snapshot,
    /// the dispatcher's coordination, the metrics, and the way to the sockets below.
    placer: Placer,
    settings: Arc<Settings>,
    /// The hash of the admin key, computed once: requests compare hashes in constant time
    /// and never hold the configured key in clear.
    admin_key: Option<SecretHash>,
    /// The delegate sockets open on this manager, their sessions, the latest heartbeats
    /// (ahead of the store by at most one flush interval), and what this replica tells the
    /// others and hears from them; shared with the placer, which reaches delegates through
    /// them.
    sockets: Sockets,
    /// Request rates per credential.
    limits: RateLimits,
    /// Set once shutdown begins: long polls then answer at once, so they do not hold the
    /// drain for their whole wait.
    stopping: Stopping,
    /// The secret values of running tasks (and the keys that open them).
    masks: Arc<Masks>,
}

impl AppState {
    /// A state whose admin key is the `admin_key` setting (or none).
    pub fn new(store: Arc<dyn Backing>, settings: Settings) -> Self {
        let admin_key = settings.admin_key.as_ref().map(|key| key.hash());
        Self::with_admin_key(store, settings, admin_key)
    }

    /// A state that accepts the admin key of this hash (see [`crate::bootstrap`]).
    pub fn with_admin_key(store: Arc<dyn Backing>, settings: Settings, admin_key: Option<SecretHash>) -> Self {
        let metrics = Arc::new(Metrics::new(settings.history_interval));
        // Every store call is timed for `GET /metrics`.
        // Bumped by the store writes that change the registry, so the kept snapshot is
        // rebuilt after them.
        let changes = Arc::new(AtomicU64::new(0));
        let instrumented = Arc::new(Instrumented::new(store, metrics.store_calls(), changes.clone()));
        let (store, replicas): (Arc<dyn Store>, Arc<dyn Replicas>) = (instrumented.clone(), instrumented);
        let opening = usize::try_from(settings.db_max_connections / 2).unwrap_or(1);
        let sockets = Sockets::new(store.backend(), settings.max_sockets, opening);
        let placer = Placer::new(
            store,
            replicas,
            changes,
            metrics,
            Timers::from(&settings),
            Arc::new(sockets.clone()),
        );
        Self {
            inner: Arc::new(Inner {
                placer,
                sockets,
                admin_key,
                limits: RateLimits {
                    api: Arc::new(PerCredential::new(settings.api_rate_limit, "API key")),
                    delegates: Arc::new(PerCredential::new(settings.delegate_rate_limit, "delegate credential")),
                },
                masks: Arc::new(Masks::new(settings.secret_key_file.clone())),
                settings: Arc::new(settings),
                stopping: Stopping::default(),
            }),
        }
    }

    /// What placement and the lifecycle run with ([`crate::manager::dispatch::placer`]).
    pub fn placer(&self) -> &Placer {
        &self.inner.placer
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        self.inner.placer.store()
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.sockets.hub
    }

    pub fn heartbeats(&self) -> &Heartbeats {
        &self.inner.sockets.heartbeats
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        self.inner.placer.dispatcher()
    }

    pub fn cluster(&self) -> &Cluster {
        &self.inner.sockets.cluster
    }

    pub fn sessions(&self) -> &Sessions {
        &self.inner.sockets.sessions
    }

    /// This manager's side of its delegates: sockets, sessions, heartbeats, the bus.
    pub fn sockets(&self) -> &Sockets {
        &self.inner.sockets
    }

    /// What the authentication middleware checks credentials against.
    pub fn keys(&self) -> Keys {
        Keys {
            admin: self.inner.admin_key,
            store: self.store().clone(),
        }
    }

    pub fn metrics(&self) -> &Metrics {
        self.inner.placer.metrics()
    }

    pub fn limits(&self) -> &RateLimits {
        &self.inner.limits
    }

    /// Tells long polls that shutdown has begun (see [`crate::run_with_tls`]).
    pub fn begin_shutdown(&self) {
        self.inner.stopping.begin();
    }

    /// How many requests are waiting on [`Stopping::wait`] (the long polls in flight), for
    /// tests that must stop the server during one.
    pub fn long_polls(&self) -> usize {
        self.inner.stopping.waiting()
    }
}

// What a route may take as its state (`State<Arc<dyn Store>>`, `State<Placer>`, ...):
// each handler names the parts it uses, and only the router sees the whole.

impl FromRef<AppState> for Arc<dyn Store> {
    fn from_ref(state: &AppState) -> Self {
        state.store().clone()
    }
}

impl FromRef<AppState> for Placer {
    fn from_ref(state: &AppState) -> Self {
        state.inner.placer.clone()
    }
}

impl FromRef<AppState> for Sockets {
    fn from_ref(state: &AppState) -> Self {
        state.inner.sockets.clone()
    }
}

impl FromRef<AppState> for Arc<Settings> {
    fn from_ref(state: &AppState) -> Self {
        state.inner.settings.clone()
    }
}

impl FromRef<AppState> for Arc<Masks> {
    fn from_ref(state: &AppState) -> Self {
        state.inner.masks.clone()
    }
}

impl FromRef<AppState> for Stopping {
    fn from_ref(state: &AppState) -> Self {
        state.inner.stopping.clone()
    }
}
