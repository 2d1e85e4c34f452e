//! The operator and pipeline API under `/api/v1`: every route needs an API key (or the
//! admin key); each handler checks the caller's permission in the resource's scope.

pub mod connectors;
pub mod delegates;
pub mod keys;
pub mod tasks;
pub mod tokens;

use axum::Router;
use axum::routing::{get, post, put};

use crate::routes;
use crate::state::AppState;

/// The `/api/v1` routes, without the authentication layer (see [`crate::app`]).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/status", get(routes::status))
        .route("/audit", get(crate::audit::list))
        .route("/api-keys", post(keys::create).get(keys::list))
        .route("/api-keys/{id}/revoke", post(keys::revoke))
        .route("/delegate-tokens", post(tokens::create).get(tokens::list))
        .route("/delegate-tokens/{id}", get(tokens::get))
        .route("/delegate-tokens/{id}/revoke", post(tokens::revoke))
        .route("/connectors", post(connectors::create).get(connectors::list))
        .route(
            "/connectors/{id}",
            get(connectors::get).put(connectors::update).delete(connectors::delete),
        )
        .route("/tasks", post(tasks::submit).get(tasks::list))
        .route("/tasks/explain", post(tasks::explain))
        .route("/tasks/{id}", get(tasks::get))
        .route("/tasks/{id}/cancel", post(tasks::cancel))
        .route("/tasks/{id}/wait", get(tasks::wait))
        .route("/tasks/{id}/selection-log", get(tasks::selection_log))
        .route("/delegates", get(delegates::list))
        .route("/delegates/{id}", get(delegates::get).delete(delegates::delete))
        .route("/delegates/{id}/tags", put(delegates::set_tags))
        .route("/delegates/{id}/disable", post(delegates::disable))
        .route("/delegates/{id}/enable", post(delegates::enable))
}
