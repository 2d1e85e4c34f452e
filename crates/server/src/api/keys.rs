//! API keys: create (the secret is answered once, as `key`), list, revoke.
//!
//! A key may create keys for its own scope or below it, granting only permissions it holds
//! itself, so no key can mint a more powerful one. The admin key may do anything.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use switchboard_domain::{ApiKey, ApiKeyId, Permission, Permissions, Scope, SecretKind};
use switchboard_protocol::keys::{ApiKeyCreated, ApiKeyList, ApiKeyView, CreateApiKey};
use switchboard_store::Store;

use crate::http::auth::Caller;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiQuery, IdPath, NoFilters};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, FORBIDDEN, JSON_BODY, NOT_FOUND, QUERY};
use crate::secrets;

/// Create an API key.
///
/// The secret is answered once, as `key`; only its hash is stored. A key may create keys
/// for its own scope or below it, granting only permissions it holds itself.
#[utoipa::path(
    post,
    path = "/api-keys",
    operation_id = "create_api_key",
    tag = "api-keys",
    security(("api_key" = [])),
    request_body = CreateApiKey,
    responses(
        (status = 201, description = "The key, with its secret.", body = ApiKeyCreated),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND }>
    )
)]
pub async fn create(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateApiKey>,
) -> Result<(StatusCode, Json<ApiKeyCreated>), ApiError> {
    let scope =
        Scope::new(body.account, body.org, body.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    let permissions: Permissions = body.permissions.into_iter().collect();
    if let Caller::Key(mine) = &caller {
        caller.check(Permission::DelegatesView, &scope, "scope")?;
        if let Some(p) = permissions.iter().find(|p| !mine.permissions.contains(*p)) {
            return Err(ApiError::new(
                Problem::Forbidden,
                format!("a key can only grant permissions it holds itself, and this one lacks {p}"),
            ));
        }
    }
    let key = ApiKey {
        id: ApiKeyId::new(),
        name: body.name,
        scope,
        permissions,
        created_at: Utc::now(),
        revoked_at: None,
    };
    let secret = secrets::generate(SecretKind::ApiKey);
    store.create_api_key(&key, &secret.hash()).await?;
    tracing::info!(key.id = %key.id, key.name = %key.name, scope = %key.scope, by = %caller.describe(), "API key created");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            view: ApiKeyView::from(&key),
            key: secret,
        }),
    ))
}

/// List the API keys the caller may see (never their secrets).
#[utoipa::path(
    get,
    path = "/api-keys",
    operation_id = "list_api_keys",
    tag = "api-keys",
    security(("api_key" = [])),
    responses((status = 200, description = "The keys.", body = ApiKeyList), Errors<{ API | QUERY }>)
)]
pub async fn list(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    _: ApiQuery<NoFilters>,
) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = store.list_api_keys(caller.visible()).await?;
    Ok(Json(ApiKeyList {
        items: keys.iter().map(ApiKeyView::from).collect(),
    }))
}

/// Revoke an API key.
///
/// A key may revoke keys in its scope (itself too). A revoked key is refused at once.
#[utoipa::path(
    post,
    path = "/api-keys/{id}/revoke",
    operation_id = "revoke_api_key",
    tag = "api-keys",
    security(("api_key" = [])),
    params(("id" = ApiKeyId, Path, description = "The key's id.")),
    responses((status = 200, description = "The key, revoked.", body = ApiKeyView), Errors<{ API | NOT_FOUND }>)
)]
pub async fn revoke(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<ApiKeyId>,
) -> Result<Json<ApiKeyView>, ApiError> {
    // Look it up among what the caller may see, so another team's key is simply absent.
    let visible = store.list_api_keys(caller.visible()).await?;
    let Some(target) = visible.iter().find(|k| k.id == id) else {
        return Err(ApiError::not_found(format!("API key {id} not found")));
    };
    caller.check(Permission::DelegatesView, &target.scope, "API key")?;
    let key = store.revoke_api_key(id, Utc::now()).await?;
    tracing::info!(key.id = %key.id, by = %caller.describe(), "API key revoked");
    Ok(Json(ApiKeyView::from(&key)))
}
