//! The handlers: liveness and readiness probes, and the `/api/v1` routes.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use serde::Serialize;
use switchboard_protocol::keys::ApiKeyView;
use switchboard_store::StoreError;
use utoipa::ToSchema;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::openapi::Errors;
use crate::openapi::errors::{ANY, API, STORE};
use crate::state::AppState;

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
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Ready>, ApiError> {
    let backend = state.store().backend().as_str();
    match state.store().check_ready().await {
        Ok(()) if !state.cluster().is_listening() => Err(ApiError::unavailable(
            "this replica does not hear the other replicas yet (its listening connection to PostgreSQL is \
             being set up or re-established); see the server log"
                .to_owned(),
            1,
        )),
        Ok(()) => Ok(Json(Ready {
            status: "ready",
            store: backend,
            replicas: if state.cluster().is_shared() {
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

/// The body of `GET /api/v1/status`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    /// The manager's version.
    pub version: &'static str,
    /// The storage backend: `postgres` or `sqlite`.
    pub store: &'static str,
    /// Who the request's credential is, so a client (the dashboard) can say whom it is
    /// signed in as and offer only what the key may do. The routes still check.
    pub caller: CallerView,
}

/// The credential a request came with.
#[derive(Debug, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallerView {
    /// The bootstrap admin key: every permission in every account.
    Admin,
    /// A scoped API key (never its secret).
    ApiKey(ApiKeyView),
}

/// What this manager is (its version and storage backend) and who is asking.
#[utoipa::path(
    get,
    path = "/status",
    operation_id = "status",
    tag = "status",
    security(("api_key" = [])),
    responses((status = 200, description = "This manager.", body = Status), Errors<API>)
)]
pub async fn status(State(state): State<AppState>, caller: Caller) -> Json<Status> {
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        store: state.store().backend().as_str(),
        caller: match caller {
            Caller::Admin => CallerView::Admin,
            Caller::Key(key) => CallerView::ApiKey(ApiKeyView::from(key.as_ref())),
        },
    })
}

/// Any path no route matches.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    // The path is echoed to help with typos, shortened so a huge URI cannot bloat the answer.
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("there is no route {method} {path}"))
}
