//! API keys.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use switchboard_domain::{ApiKey, ApiKeyId, Scope, SecretHash};
use switchboard_store::{AdminKey, StoreError, StoreResult};

use crate::rows::{self, API_KEY_COLUMNS, ms, scope_values, to_json};
use crate::{Db, map_err};

pub(crate) async fn create_api_key(db: &Db, key: &ApiKey, secret: &SecretHash) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&key.scope);
    sqlx::query(
        "INSERT INTO api_keys \
         (id, account, org, project, scope_path, name, secret_hash, permissions, created_at, revoked_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(key.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(key.name.as_str())
    .bind(secret.as_bytes())
    .bind(to_json(&key.permissions)?)
    .bind(ms(key.created_at))
    .bind(key.revoked_at.map(ms))
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn api_key_by_secret(db: &Db, secret: &SecretHash) -> StoreResult<Option<ApiKey>> {
    sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE secret_hash = ?"))
        .bind(secret.as_bytes())
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?
        .map(|row| rows::api_key(&row))
        .transpose()
}

pub(crate) async fn list_api_keys(db: &Db, within: Option<&Scope>) -> StoreResult<Vec<ApiKey>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {API_KEY_COLUMNS} FROM api_keys WHERE 1 = 1"));
    rows::push_within(&mut q, within);
    q.push(" ORDER BY id");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::api_key).collect()
}

pub(crate) async fn revoke_api_key(db: &Db, id: ApiKeyId, at: DateTime<Utc>) -> StoreResult<ApiKey> {
    // COALESCE keeps the first revocation time: revoking again changes nothing.
    let row = sqlx::query(&format!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? RETURNING {API_KEY_COLUMNS}"
    ))
    .bind(ms(at))
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("API key"))?;
    rows::api_key(&row)
}

pub(crate) async fn bootstrap_admin_key(db: &Db, candidate: &SecretHash, at: DateTime<Utc>) -> StoreResult<AdminKey> {
    // On the single writer: the freshness check and the insert are one statement, and the
    // primary key makes a repeated insert a no-op.
    let created = sqlx::query(
        "INSERT INTO admin_key (id, secret_hash, created_at) \
         SELECT 1, ?, ? \
         WHERE NOT EXISTS (SELECT 1 FROM api_keys) AND NOT EXISTS (SELECT 1 FROM delegate_tokens) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(candidate.as_bytes())
    .bind(ms(at))
    .execute(&db.writer)
    .await
    .map_err(map_err)?
    .rows_affected();
    if created == 1 {
        return Ok(AdminKey::Created);
    }
    let stored: Option<Vec<u8>> = sqlx::query_scalar("SELECT secret_hash FROM admin_key WHERE id = 1")
        .fetch_optional(&db.writer)
        .await
        .map_err(map_err)?;
    match stored {
        Some(bytes) => SecretHash::from_slice(&bytes)
            .map(AdminKey::Existing)
            .ok_or_else(|| StoreError::Internal("the stored admin key hash is not 32 bytes".into())),
        None => Ok(AdminKey::NotFresh),
    }
}
