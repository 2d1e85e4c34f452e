//! API keys.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use switchboard_domain::{ApiKey, ApiKeyId, Scope, SecretHash};
use switchboard_store::{AdminKey, StoreError, StoreResult};

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

pub(crate) async fn bootstrap_admin_key(
    pool: &PgPool,
    candidate: &SecretHash,
    at: DateTime<Utc>,
) -> StoreResult<AdminKey> {
    // One statement: the freshness check and the insert see the same snapshot, and the
    // primary key makes a second replica's concurrent insert a no-op.
    let created = sqlx::query(
        "INSERT INTO admin_key (id, secret_hash, created_at)
         SELECT 1, $1, $2
         WHERE NOT EXISTS (SELECT 1 FROM api_keys) AND NOT EXISTS (SELECT 1 FROM delegate_tokens)
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(candidate.as_bytes())
    .bind(at)
    .execute(pool)
    .await
    .map_err(map_err)?
    .rows_affected();
    if created == 1 {
        return Ok(AdminKey::Created);
    }
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT secret_hash FROM admin_key WHERE id = 1")
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    match stored {
        Some(bytes) => SecretHash::from_slice(&bytes)
            .map(AdminKey::Existing)
            .ok_or_else(|| StoreError::Internal("the stored admin key hash is not 32 bytes".into())),
        None => Ok(AdminKey::NotFresh),
    }
}
