//! Secrets that tasks use: create, list, get, replace what one holds, delete
//! (docs/rules.md, "Secrets"). Every route needs `secrets:access` at the secret's scope;
//! a secret outside the key's scope is answered as if it did not exist. No answer carries
//! a value: a value is sealed by the manager's key as it arrives and opened only for the
//! instance that acquires a task naming it (`crate::delegate_api::tasks::acquire`).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{Duration, SubsecRound, Utc};
use switchboard_domain::vault::{self, SecretReference, SecretSource, TaskSecret};
use switchboard_domain::{Ident, Permission, Scope, Secret, SecretId};
use switchboard_protocol::secrets::{CreateSecret, ReplaceSecret, SecretList, SecretView};
use switchboard_store::Store;

use crate::config::Settings;
use crate::http::auth::Caller;
use crate::http::error::{ApiError, Problem};
use crate::http::extract::{ApiJson, ApiQuery, IdPath};
use crate::http::openapi::Errors;
use crate::http::openapi::errors::{API, CONFLICT, FORBIDDEN, INVALID, JSON_BODY, NOT_FOUND, QUERY, bit};
use crate::sealing::SecretKeys;

/// Create a secret: a value (sealed by the manager's key) or a reference for the delegate
/// to resolve.
///
/// Names are unique in their scope (409). A value on a manager without `secret_key_file`
/// is refused with 409 `no-secret-key`; a reference needs no key.
#[utoipa::path(
    post,
    path = "/secrets",
    operation_id = "create_secret",
    tag = "secrets",
    security(("api_key" = [])),
    request_body = CreateSecret,
    responses(
        (status = 201, description = "The secret (never its value).", body = SecretView),
        Errors<{ API | JSON_BODY | FORBIDDEN | NOT_FOUND | CONFLICT | bit(Problem::NoSecretKey) }>
    )
)]
pub async fn create(
    State(store): State<Arc<dyn Store>>,
    State(settings): State<Arc<Settings>>,
    caller: Caller,
    ApiJson(body): ApiJson<CreateSecret>,
) -> Result<(StatusCode, Json<SecretView>), ApiError> {
    let scope =
        Scope::new(body.account, body.org, body.project).map_err(|e| ApiError::validation("project", e.to_string()))?;
    caller.check(Permission::SecretsAccess, &scope, "scope")?;
    check_description(&body.description)?;
    let held = held(body.value, body.reference)?;
    let now = Utc::now().trunc_subsecs(3);
    let id = SecretId::new();
    let secret = TaskSecret {
        id,
        scope,
        name: body.name,
        description: body.description,
        source: source(settings.secret_key_file.as_ref(), held, id, 1)?,
        version: 1,
        created_at: now,
        updated_at: now,
    };
    store.create_secret(&secret).await?;
    tracing::info!(secret.id = %secret.id, secret.name = %secret.name, scope = %secret.scope, "secret created");
    Ok((StatusCode::CREATED, Json(SecretView::from(&secret))))
}

/// List the secrets the key may use: all, or those within a scope.
#[utoipa::path(
    get,
    path = "/secrets",
    operation_id = "list_secrets",
    tag = "secrets",
    security(("api_key" = [])),
    params(SecretFilter),
    responses((status = 200, description = "The secrets (never their values).", body = SecretList), Errors<{ API | QUERY | INVALID }>)
)]
pub async fn list(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    ApiQuery(filter): ApiQuery<SecretFilter>,
) -> Result<Json<SecretList>, ApiError> {
    let requested = match filter.account {
        None if filter.org.is_some() || filter.project.is_some() => {
            return Err(ApiError::validation("account", "org and project need account"));
        }
        None => None,
        Some(account) => Some(
            Scope::new(account, filter.org, filter.project)
                .map_err(|e| ApiError::validation("project", e.to_string()))?,
        ),
    };
    let Ok(within) = caller.narrow(requested) else {
        return Ok(Json(SecretList { items: Vec::new() }));
    };
    let secrets = store.list_secrets(within.as_ref()).await?;
    let items = secrets
        .iter()
        .filter(|s| caller.check(Permission::SecretsAccess, &s.scope, "secret").is_ok())
        .map(SecretView::from)
        .collect();
    Ok(Json(SecretList { items }))
}

/// One secret's metadata.
#[utoipa::path(
    get,
    path = "/secrets/{id}",
    operation_id = "get_secret",
    tag = "secrets",
    security(("api_key" = [])),
    params(("id" = SecretId, Path, description = "The secret's id.")),
    responses((status = 200, description = "The secret (never its value).", body = SecretView), Errors<{ API | NOT_FOUND | FORBIDDEN }>)
)]
pub async fn get(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<SecretId>,
) -> Result<Json<SecretView>, ApiError> {
    let secret = store.get_secret(id).await?;
    caller.check(Permission::SecretsAccess, &secret.scope, "secret")?;
    Ok(Json(SecretView::from(&secret)))
}

/// Replace what a secret holds: a new value or reference, as a new version.
///
/// Tasks submitted before and acquired after get the new version. 409 when another
/// replacement won meanwhile (read it and retry).
#[utoipa::path(
    put,
    path = "/secrets/{id}",
    operation_id = "replace_secret",
    tag = "secrets",
    security(("api_key" = [])),
    params(("id" = SecretId, Path, description = "The secret's id.")),
    request_body = ReplaceSecret,
    responses(
        (status = 200, description = "The secret, at its new version.", body = SecretView),
        Errors<{ API | JSON_BODY | NOT_FOUND | FORBIDDEN | CONFLICT | bit(Problem::NoSecretKey) }>
    )
)]
pub async fn replace(
    State(store): State<Arc<dyn Store>>,
    State(settings): State<Arc<Settings>>,
    caller: Caller,
    IdPath(id): IdPath<SecretId>,
    ApiJson(body): ApiJson<ReplaceSecret>,
) -> Result<Json<SecretView>, ApiError> {
    if let Some(description) = &body.description {
        check_description(description)?;
    }
    let held = held(body.value, body.reference)?;
    let mut secret = store.get_secret(id).await?;
    caller.check(Permission::SecretsAccess, &secret.scope, "secret")?;
    let version = secret.version.checked_add(1).ok_or_else(|| {
        ApiError::new(
            Problem::Conflict,
            "this secret was replaced too many times; create a new one",
        )
    })?;
    secret.source = source(settings.secret_key_file.as_ref(), held, id, version)?;
    secret.version = version;
    if let Some(description) = body.description {
        secret.description = description;
    }
    secret.updated_at = Utc::now()
        .trunc_subsecs(3)
        .max(secret.updated_at + Duration::milliseconds(1));
    store.replace_secret(&secret).await?;
    tracing::info!(secret.id = %id, version, "secret replaced");
    Ok(Json(SecretView::from(&secret)))
}

/// Delete a secret. Tasks that name it and are acquired later fail to get it (the
/// acquire answer says it is missing).
#[utoipa::path(
    delete,
    path = "/secrets/{id}",
    operation_id = "delete_secret",
    tag = "secrets",
    security(("api_key" = [])),
    params(("id" = SecretId, Path, description = "The secret's id.")),
    responses((status = 204, description = "Deleted."), Errors<{ API | NOT_FOUND | FORBIDDEN }>)
)]
pub async fn delete(
    State(store): State<Arc<dyn Store>>,
    caller: Caller,
    IdPath(id): IdPath<SecretId>,
) -> Result<StatusCode, ApiError> {
    let secret = store.get_secret(id).await?;
    caller.check(Permission::SecretsAccess, &secret.scope, "secret")?;
    store.delete_secret(id).await?;
    tracing::info!(secret.id = %id, "secret deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// What a request says the secret holds.
enum Held {
    Value(Secret),
    Reference(SecretReference),
}

fn held(value: Option<Secret>, reference: Option<SecretReference>) -> Result<Held, ApiError> {
    match (value, reference) {
        (Some(value), None) => {
            let size = value.expose().len();
            if size == 0 {
                return Err(ApiError::validation("value", "a secret's value is not empty"));
            }
            if size > vault::VALUE_MAX_BYTES {
                return Err(ApiError::validation(
                    "value",
                    format!(
                        "a secret's value is at most {} bytes; this one is {size}",
                        vault::VALUE_MAX_BYTES
                    ),
                ));
            }
            if value.expose().contains('\0') {
                return Err(ApiError::validation("value", "a secret's value holds no U+0000"));
            }
            Ok(Held::Value(value))
        }
        (None, Some(reference)) => Ok(Held::Reference(reference)),
        (Some(_), Some(_)) => Err(ApiError::validation(
            "reference",
            "give a value or a reference, not both",
        )),
        (None, None) => Err(ApiError::validation(
            "value",
            "give the secret's value, or a reference (env:NAME, file:/path, ...) for the delegate to resolve",
        )),
    }
}

/// The stored form: a value sealed under the manager's key for this id and version.
fn source(keys: Option<&SecretKeys>, held: Held, id: SecretId, version: u32) -> Result<SecretSource, ApiError> {
    match held {
        Held::Reference(r) => Ok(SecretSource::Reference(r)),
        Held::Value(value) => {
            let keys = keys.ok_or_else(|| {
                ApiError::new(
                    Problem::NoSecretKey,
                    "this manager has no key to seal secret values with (the setting secret_key_file); \
                     give it one (`openssl rand -hex 32 > keys`), or store a reference the delegate resolves instead",
                )
            })?;
            let sealed = keys
                .seal(value.expose().as_bytes(), &TaskSecret::seal_context(id, version))
                .map_err(|e| {
                    tracing::error!(error = %e, "cannot seal a secret value");
                    ApiError::internal()
                })?;
            Ok(SecretSource::Sealed(sealed))
        }
    }
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() > vault::DESCRIPTION_MAX_CHARS {
        return Err(ApiError::validation(
            "description",
            format!("a description is at most {} characters", vault::DESCRIPTION_MAX_CHARS),
        ));
    }
    if description.contains('\0') {
        return Err(ApiError::validation("description", "a description holds no U+0000"));
    }
    Ok(())
}

/// The query string of `GET /api/v1/secrets`.
#[derive(Debug, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SecretFilter {
    /// Only secrets in this account.
    account: Option<Ident>,
    /// Only secrets in this org (needs `account`).
    org: Option<Ident>,
    /// Only secrets in this project (needs `account` and `org`).
    project: Option<Ident>,
}
