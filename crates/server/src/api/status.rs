//! `GET /api/v1/status`: what this manager is and who is asking.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use switchboard_protocol::keys::ApiKeyView;
use switchboard_store::Store;
use utoipa::ToSchema;

use crate::config::Settings;
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
    /// Whether this manager can keep secret values (it has a `secret_key_file`), and if
    /// not, why.
    pub secrets: SecretsStatus,
}

/// What this manager can do with secrets.
#[derive(Debug, Serialize, ToSchema)]
pub struct SecretsStatus {
    /// Secret values can be stored (sealed under the key `sealing_key`).
    pub values: bool,
    /// References (`env:`, `file:`, ...) are always accepted: the delegate resolves them.
    pub references: bool,
    /// The id of the key new values are sealed with (the first 8 bytes of its SHA-256, in
    /// hex), and how many keys open values.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sealing_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keys: Option<usize>,
    /// Without a key: what to do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<&'static str>,
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
pub async fn status(
    State(store): State<Arc<dyn Store>>,
    State(settings): State<Arc<Settings>>,
    caller: Caller,
) -> Json<Status> {
    let keys = settings.secret_key_file.as_ref();
    Json(Status {
        secrets: SecretsStatus {
            values: keys.is_some(),
            references: true,
            sealing_key: keys.map(|k| k.sealing_key_id()),
            keys: keys.map(|k| k.len()),
            detail: keys.is_none().then_some(
                "no secret_key_file: secret values are refused (409 no-secret-key); references are accepted",
            ),
        },
        version: env!("CARGO_PKG_VERSION"),
        store: store.backend().as_str(),
        caller: match caller {
            Caller::Admin => CallerView::Admin,
            Caller::Key(key) => CallerView::ApiKey(ApiKeyView::from(key.as_ref())),
        },
    })
}
