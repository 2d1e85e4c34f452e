//! API keys: create (the secret is answered once, as `key`), list, revoke.
//!
//! A key may create keys for its own scope or below it, granting only permissions it holds
//! itself, so no key can mint a more powerful one. The admin key may do anything.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::Utc;
use switchboard_domain::{ApiKey, ApiKeyId, Permission, Permissions, Scope, SecretKind};
use switchboard_protocol::keys::{ApiKeyCreated, ApiKeyList, ApiKeyView, CreateApiKey};

use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::extract::ApiJson;
use crate::secrets;
use crate::state::AppState;

pub async fn create(
    State(state): State<AppState>,
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
    state.store().create_api_key(&key, &secret.hash()).await?;
    tracing::info!(key.id = %key.id, key.name = %key.name, scope = %key.scope, by = %caller.describe(), "API key created");
    Ok((
        StatusCode::CREATED,
        Json(ApiKeyCreated {
            view: ApiKeyView::from(&key),
            key: secret.expose().to_owned(),
        }),
    ))
}

pub async fn list(State(state): State<AppState>, caller: Caller) -> Result<Json<ApiKeyList>, ApiError> {
    let keys = state.store().list_api_keys(caller.visible()).await?;
    Ok(Json(ApiKeyList {
        items: keys.iter().map(ApiKeyView::from).collect(),
    }))
}

/// `POST /api/v1/api-keys/{id}/revoke`: a key may revoke keys in its scope (itself too).
pub async fn revoke(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<ApiKeyView>, ApiError> {
    let id: ApiKeyId = id
        .parse()
        .map_err(|_| ApiError::not_found(format!("there is no API key {id:?}")))?;
    // Look it up among what the caller may see, so another team's key is simply absent.
    let visible = state.store().list_api_keys(caller.visible()).await?;
    let Some(target) = visible.iter().find(|k| k.id == id) else {
        return Err(ApiError::not_found(format!("API key {id} not found")));
    };
    caller.check(Permission::DelegatesView, &target.scope, "API key")?;
    let key = state.store().revoke_api_key(id, Utc::now()).await?;
    tracing::info!(key.id = %key.id, by = %caller.describe(), "API key revoked");
    Ok(Json(ApiKeyView::from(&key)))
}
