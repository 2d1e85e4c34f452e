//! `GET /api/v1/status`: what this manager is and who is asking.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use switchboard_protocol::keys::ApiKeyView;
use switchboard_store::Store;
use utoipa::ToSchema;

use crate::http::auth::Caller;
use crate::http::openapi::Errors;
use crate::http::openapi::errors::API;

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
pub async fn status(State(store): State<Arc<dyn Store>>, caller: Caller) -> Json<Status> {
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        store: store.backend().as_str(),
        caller: match caller {
            Caller::Admin => CallerView::Admin,
            Caller::Key(key) => CallerView::ApiKey(ApiKeyView::from(key.as_ref())),
        },
    })
}
