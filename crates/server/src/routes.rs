//! The handlers: liveness and readiness probes, and the `/api/v1` routes.

use axum::Json;
use axum::extract::State;
use axum::http::{Method, Uri};
use serde::Serialize;
use serde_json::{Value, json};
use switchboard_store::StoreError;

use crate::error::ApiError;
use crate::state::AppState;

/// Liveness: the process is up and serving. It never touches the database, so a database
/// outage does not get every replica restarted by its orchestrator.
pub async fn healthz() -> Json<Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the store answers and its migrations are applied, so a load balancer can
/// route to this replica. The 503 says which of those failed; the error itself is logged.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let backend = state.store().backend().as_str();
    match state.store().check_ready().await {
        Ok(()) => Ok(Json(json!({ "status": "ready", "store": backend }))),
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
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: &'static str,
    pub store: &'static str,
}

/// What this manager is: its version and storage backend.
pub async fn status(State(state): State<AppState>) -> Json<Status> {
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        store: state.store().backend().as_str(),
    })
}

/// Any path no route matches.
pub async fn not_found(method: Method, uri: Uri) -> ApiError {
    // The path is echoed to help with typos, shortened so a huge URI cannot bloat the answer.
    let path: String = uri.path().chars().take(200).collect();
    ApiError::not_found(format!("there is no route {method} {path}"))
}
