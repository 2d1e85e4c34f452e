//! The open endpoints for orchestrators and scrapers: liveness, readiness and the
//! Prometheus metrics; and the answer to a path no route matches.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde::Serialize;
use switchboard_domain::{DelegateGroup, Ident, Liveness};
use switchboard_protocol::fleet::Demand;
use switchboard_store::{Store, StoreError};
use utoipa::ToSchema;

use crate::config::Settings;
use crate::http::error::ApiError;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{ANY, STORE};
use crate::manager::cluster::Sockets;
use crate::manager::demand;
use crate::manager::dispatch::Placer;
use crate::metrics;

/// The body of `GET /healthz`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Healthy {
    /// Always `ok`.
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// Liveness: the process is up and serving.
///
/// It never touches the database, so a database outage does not get every replica
/// restarted by its orchestrator.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "probes",
    responses((status = 200, description = "The process is up.", body = Healthy), Errors<ANY>)
)]
pub async fn healthz() -> Json<Healthy> {
    Json(Healthy { status: "ok" })
}

/// The body of `GET /readyz` when ready.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    /// Always `ready`.
    #[schema(example = "ready")]
    pub status: &'static str,
    /// The storage backend: `postgres` or `sqlite`.
    pub store: &'static str,
    /// Whether this replica hears the others' signals: `listening` (PostgreSQL) or
    /// `alone` (SQLite: there can be no other).
    #[schema(example = "listening")]
    pub replicas: &'static str,
}

/// Readiness: the store answers, its migrations are applied, and (on PostgreSQL) this
/// replica hears the other replicas' signals.
///
/// A load balancer can route to this replica while it answers 200. The 503 says which of
/// those failed; the error itself is logged. A replica that does not hear the others
/// would not learn of their revocations, cancellations and offers for its sockets until
/// its listener is back.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "probes",
    responses((status = 200, description = "Ready to serve.", body = Ready), Errors<STORE>)
)]
pub async fn readyz(
    State(store): State<Arc<dyn Store>>,
    State(sockets): State<Sockets>,
) -> Result<Json<Ready>, ApiError> {
    let backend = store.backend().as_str();
    match store.check_ready().await {
        Ok(()) if !sockets.cluster.is_listening() => Err(ApiError::unavailable(
            "this replica does not hear the other replicas yet (its listening connection to PostgreSQL is \
             being set up or re-established); see the server log"
                .to_owned(),
            1,
        )),
        Ok(()) => Ok(Json(Ready {
            status: "ready",
            store: backend,
            replicas: if sockets.cluster.is_shared() {
                "listening"
            } else {
                "alone"
            },
        })),
        Err(error) => {
            tracing::warn!(store = backend, %error, "not ready");
            let why = match error {
                StoreError::Unavailable(_) => "the database cannot be reached",
                _ => "the database answered but is not usable (for example, a migration is missing)",
            };
            Err(ApiError::unavailable(
                format!("the {backend} store is not ready: {why}; see the server log"),
                1,
            ))
        }
    }
}

/// Any path no route matches.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    // The path is echoed to help with typos, shortened so a huge URI cannot bloat the answer.
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("there is no route {method} {path}"))
}

/// The Prometheus metrics of this manager, in the OpenMetrics text format.
///
/// Open, like `/healthz`, for the scraper (no key to configure there). Labels are
/// low-cardinality: no task ids, no raw selectors. The instance gauges are counted now,
/// from the store in aggregate (connections recorded, heartbeats flushed; a stale one this
/// manager has heard from since counts as connected): two small store reads per scrape, and for the declared pools' gauges a few more (the groups,
/// each such account's queue, each pool's instances). If the store cannot answer, the last counts stay and the
/// failure shows in `store_errors_total`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "probes",
    responses(
        (
            status = 200,
            description = "The metrics.",
            content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8",
            body = String
        ),
        Errors<ANY>
    )
)]
pub async fn metrics(
    State(placer): State<Placer>,
    State(sockets): State<Sockets>,
    State(settings): State<Arc<Settings>>,
) -> Response {
    let now = Utc::now();
    let timeout = chrono::Duration::from_std(settings.heartbeat_timeout).unwrap_or(chrono::Duration::MAX);
    if let Ok(counts) = placer.store().instance_counts(now - timeout).await {
        // The store's stale ones may have beaten here since the last flush.
        let fresher = counts
            .stale
            .iter()
            .filter(|&&id| {
                sockets
                    .heartbeats
                    .latest(id)
                    .is_some_and(|beat| now - beat.at <= timeout)
            })
            .count() as u64;
        let stale = counts.stale.len() as u64 - fresher;
        let gauge = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        placer.metrics().set_instances([
            (Liveness::Connected, gauge(counts.fresh + fresher)),
            (Liveness::Stale, gauge(stale)),
            (Liveness::Disconnected, gauge(counts.disconnected)),
        ]);
    }
    // The queue's depth and oldest wait: the aggregate of `GET /api/v1/queue`, without its
    // decisions (docs/benchmarks.md, Q1, has its cost). Left as it was when it fails.
    let query = switchboard_store::QueueQuery {
        max_shapes: crate::manager::queue::MAX_SHAPES,
        ..Default::default()
    };
    if let Ok(queue) = placer.store().queue_shapes(&query).await {
        let now = Utc::now();
        let oldest = queue
            .shapes
            .iter()
            .map(|s| s.oldest_created_at)
            .min()
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        placer.metrics().set_queue(queue.waiting, oldest);
    }
    placer
        .metrics()
        .set_replica(settings.max_sockets, sockets.cluster.is_listening());
    let pools = pool_demand(&placer, &sockets, &settings).await;
    let body = placer.metrics().render(placer.store().batch_stats().as_ref(), &pools);
    (StatusCode::OK, [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)], body).into_response()
}

/// The demand on every declared pool, for `/metrics`: the groups (one store read), then
/// per account with pools its queue, and per pool its instances. A pool whose reads fail
/// is left out of this scrape (the failure shows in `store_errors_total`).
async fn pool_demand(placer: &Placer, sockets: &Sockets, settings: &Settings) -> Vec<(Ident, Demand)> {
    let store = placer.store().as_ref();
    let Ok(groups) = store.list_groups(None).await else {
        return Vec::new();
    };
    let mut by_account: BTreeMap<Ident, Vec<DelegateGroup>> = BTreeMap::new();
    for group in groups.into_iter().filter(|g| g.declared.is_some()) {
        by_account
            .entry(group.scope.account_id().clone())
            .or_default()
            .push(group);
    }
    let timeout = chrono::Duration::from_std(settings.heartbeat_timeout).unwrap_or(chrono::Duration::MAX);
    let mut pools = Vec::new();
    for (account, groups) in by_account {
        let Ok(queue) = demand::Queue::read(store, &account).await else {
            continue;
        };
        for group in groups {
            let Ok(instances) = store.list_instances(Some(group.id)).await else {
                continue;
            };
            let instances: Vec<_> = instances.into_iter().map(|i| sockets.current(i)).collect();
            pools.push((
                account.clone(),
                demand::of(&group, &instances, &queue, Utc::now(), timeout),
            ));
        }
    }
    pools
}
