//! API keys.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use switchboard_domain::{ApiKey, ApiKeyId, Scope, SecretHash};
use switchboard_store::{StoreError, StoreResult};

use crate::map_err;
use crate::rows::{self, scope_values, within, within_sql};

pub(crate) async fn create_api_key(pool: &PgPool, k: &ApiKey, secret: &SecretHash) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&k.scope);
    sqlx::query(
        "INSERT INTO api_keys (id, account, org, project, scope_path, name, secret_hash, permissions, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(k.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(k.name.as_str())
    .bind(secret.as_bytes())
    .bind(Json(&k.permissions))
    .bind(k.created_at)
    .bind(k.revoked_at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn api_key_by_secret(pool: &PgPool, secret: &SecretHash) -> StoreResult<Option<ApiKey>> {
    let row = sqlx::query("SELECT * FROM api_keys WHERE secret_hash = $1")
        .bind(secret.as_bytes())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    row.as_ref().map(rows::api_key).transpose()
}

pub(crate) async fn list_api_keys(pool: &PgPool, scope: Option<&Scope>) -> StoreResult<Vec<ApiKey>> {
    let (a, o, p) = within(scope);
    let sql = format!(
        "SELECT * FROM api_keys WHERE {} ORDER BY scope_path, name, id",
        within_sql(1)
    );
    let rows = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::api_key).collect()
}

pub(crate) async fn revoke_api_key(pool: &PgPool, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<ApiKey> {
    let row = sqlx::query("UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1 RETURNING *")
        .bind(id.0)
        .bind(at)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    rows::api_key(&row.ok_or(StoreError::NotFound("API key"))?)
}
