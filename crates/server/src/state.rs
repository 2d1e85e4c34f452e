//! [`AppState`]: what every handler can reach. Cheap to clone (one `Arc`), so axum can
//! hand a copy to each request.

use std::sync::Arc;

use switchboard_domain::SecretHash;
use switchboard_store::Store;

use crate::config::Settings;
use crate::delegates::heartbeats::Heartbeats;
use crate::delegates::hub::Hub;
use crate::dispatch::Dispatcher;
use crate::metrics::Metrics;

/// The store and the settings, shared by every request.
#[derive(Clone, Debug)]
pub struct AppState {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Arc<dyn Store>,
    settings: Settings,
    /// The hash of the admin key, computed once: requests compare hashes in constant time
    /// and never hold the configured key in clear.
    admin_key: Option<SecretHash>,
    /// The delegate sockets open on this manager.
    hub: Hub,
    /// The latest heartbeats, ahead of the store by at most one flush interval.
    heartbeats: Heartbeats,
    /// Wakes placement, matches validation answers, announces task changes.
    dispatcher: Dispatcher,
    /// What `GET /metrics` exposes.
    metrics: Metrics,
}

impl AppState {
    pub fn new(store: Arc<dyn Store>, settings: Settings) -> Self {
        let admin_key = settings.admin_key.as_ref().map(|key| key.hash());
        Self {
            inner: Arc::new(Inner {
                store,
                settings,
                admin_key,
                hub: Hub::default(),
                heartbeats: Heartbeats::default(),
                dispatcher: Dispatcher::default(),
                metrics: Metrics::default(),
            }),
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.inner.store
    }

    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub fn heartbeats(&self) -> &Heartbeats {
        &self.inner.heartbeats
    }

    pub fn dispatcher(&self) -> &Dispatcher {
        &self.inner.dispatcher
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// `None` when no admin key is configured, and then `/api/v1` refuses everything.
    pub fn admin_key(&self) -> Option<&SecretHash> {
        self.inner.admin_key.as_ref()
    }
}
