//! Delegate tokens: create (the secret is answered once, as `token`), list, get, revoke.
//!
//! A token is stored only as the SHA-256 of its secret. Revoking one refuses new
//! registrations with it; closing the sockets of its instances is the hub's job.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use switchboard_domain::{DelegateToken, Permission, Scope, SecretKind, TokenId, TokenStatus};
use switchboard_protocol::socket::close;
use switchboard_protocol::tokens::{CreateToken, TokenCreated, TokenList, TokenView};
use switchboard_store::{SocketTarget, Store};

use crate::http::auth::Caller;
use crate::http::error::ApiError;
use crate::http::extract::{ApiJson, ApiQuery, IdPath, NoFilters};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, CONFLICT, FORBIDDEN, JSON_BODY, NOT_FOUND, QUERY};
use crate::manager::cluster::Sockets;
use crate::secrets;

/// Create a delegate token.
///
/// The secret is answered once, as `token`; only its hash is stored. A delegate registered
/// with it lands in the token's scope (or one below it). Names are unique per account.
#[utoipa::path(
    post,
    path = "/delegate-tokens",
    operation_id = "create_delegate_token",
    tag = "delegate-tokens",
    security(("api_key" = [])),
    request_body = CreateToken,
    responses(
        (status = 201, description = "The token, with its secret.", body = TokenCreated),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND | CONFLICT }>
    )
)]
pub async fn create(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateToken>,
) -> Result<(StatusCode, Json<TokenCreated>), ApiError> {
    let scope =
        Scope::new(body.account, body.org, body.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    caller.check(Permission::DelegatesEdit, &scope, "scope")?;
    let token = DelegateToken {
        id: TokenId::new(),
        name: body.name,
        scope,
        status: TokenStatus::Active,
        created_at: Utc::now(),
        revoked_at: None,
        jit: None,
    };
    let secret = secrets::generate(SecretKind::DelegateToken);
    store.create_token(&token, &secret.hash()).await?;
    tracing::info!(token.id = %token.id, token.name = %token.name, scope = %token.scope, "delegate token created");
    let created = TokenCreated {
        view: TokenView::from(&token),
        token: secret,
    };
    Ok((StatusCode::CREATED, Json(created)))
}

/// List the delegate tokens the caller may see (never their secrets).
#[utoipa::path(
    get,
    path = "/delegate-tokens",
    operation_id = "list_delegate_tokens",
    tag = "delegate-tokens",
    security(("api_key" = [])),
    responses((status = 200, description = "The tokens.", body = TokenList), Errors<{ API | QUERY }>)
)]
pub async fn list(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    _: ApiQuery<NoFilters>,
) -> Result<Json<TokenList>, ApiError> {
    let tokens = store.list_tokens(caller.visible()).await?;
    Ok(Json(TokenList {
        items: tokens.iter().map(TokenView::from).collect(),
    }))
}

/// One delegate token.
#[utoipa::path(
    get,
    path = "/delegate-tokens/{id}",
    operation_id = "get_delegate_token",
    tag = "delegate-tokens",
    security(("api_key" = [])),
    params(("id" = TokenId, Path, description = "The token's id.")),
    responses((status = 200, description = "The token.", body = TokenView), Errors<{ API | NOT_FOUND }>)
)]
pub async fn get(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<TokenId>,
) -> Result<Json<TokenView>, ApiError> {
    let token = store.get_token(id).await?;
    caller.check(Permission::DelegatesView, &token.scope, "delegate token")?;
    Ok(Json(TokenView::from(&token)))
}

/// Revoke a delegate token.
///
/// New registrations with it are refused, and the sockets of the instances registered
/// with it are closed. Revoking again is harmless.
#[utoipa::path(
    post,
    path = "/delegate-tokens/{id}/revoke",
    operation_id = "revoke_delegate_token",
    tag = "delegate-tokens",
    security(("api_key" = [])),
    params(("id" = TokenId, Path, description = "The token's id.")),
    responses(
        (status = 200, description = "The token, revoked.", body = TokenView),
        Errors<{ API | NOT_FOUND | FORBIDDEN }>
    )
)]
pub async fn revoke(
    State(store): State<Arc<dyn Store>>,
    State(sockets): State<Sockets>,
    caller: Caller,
    IdPath(id): IdPath<TokenId>,
) -> Result<Json<TokenView>, ApiError> {
    let existing = store.get_token(id).await?;
    caller.check(Permission::DelegatesEdit, &existing.scope, "delegate token")?;
    let token = store.revoke_token(id, Utc::now()).await?;
    let closed = sockets.close(
        SocketTarget::Token(token.id),
        close::TOKEN_REVOKED,
        "the delegate token was revoked",
    );
    tracing::info!(token.id = %token.id, token.name = %token.name, sockets = closed, "delegate token revoked");
    Ok(Json(TokenView::from(&token)))
}
