//! Secrets that tasks use: rows of `secrets`, sealed values as `bytea`, never clear text.

use sqlx::PgPool;
use sqlx::postgres::PgRow;
use switchboard_domain::vault::TaskSecret;
use switchboard_domain::{Ident, Scope, SecretId};
use switchboard_store::columns::{secret_columns, secret_source};
use switchboard_store::{Conflict, StoreError, StoreResult};
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::map_err;
use crate::rows::{self, get, scope_values, within, within_sql};

pub(crate) async fn create(pool: &PgPool, s: &TaskSecret) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&s.scope);
    let (sealed, reference) = secret_columns(s);
    sqlx::query(
        "INSERT INTO secrets (id, account, org, project, scope_path, name, description, sealed, reference, version,
                              created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(s.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(s.name.as_str())
    .bind(&s.description)
    .bind(sealed)
    .bind(reference)
    .bind(i32::try_from(s.version).unwrap_or(i32::MAX))
    .bind(s.created_at)
    .bind(s.updated_at)
    .execute(pool)
    .await
    .map_err(|e| {
        if is_unique_violation(&e) {
            Conflict::Duplicate {
                what: "secret",
                name: s.name.to_string(),
            }
            .into()
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(crate) async fn get_one(pool: &PgPool, id: SecretId) -> StoreResult<TaskSecret> {
    let row = sqlx::query("SELECT * FROM secrets WHERE id = $1")
        .bind(id.0)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("secret"))?;
    secret(&row)
}

pub(crate) async fn list(pool: &PgPool, scope: Option<&Scope>) -> StoreResult<Vec<TaskSecret>> {
    let (a, o, p) = within(scope);
    let sql = format!(
        "SELECT * FROM secrets WHERE {} ORDER BY scope_path, name",
        within_sql(1)
    );
    let found = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    found.iter().map(secret).collect()
}

pub(crate) async fn named(pool: &PgPool, account: &Ident, names: &[Ident]) -> StoreResult<Vec<TaskSecret>> {
    let names: Vec<&str> = names.iter().map(Ident::as_str).collect();
    let found = sqlx::query("SELECT * FROM secrets WHERE account = $1 AND name = ANY($2)")
        .bind(account.as_str())
        .bind(&names)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    found.iter().map(secret).collect()
}

pub(crate) async fn by_id(pool: &PgPool, ids: &[SecretId]) -> StoreResult<Vec<TaskSecret>> {
    let ids: Vec<Uuid> = ids.iter().map(|i| i.0).collect();
    let found = sqlx::query("SELECT * FROM secrets WHERE id = ANY($1)")
        .bind(&ids)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    found.iter().map(secret).collect()
}

pub(crate) async fn replace(pool: &PgPool, s: &TaskSecret) -> StoreResult<()> {
    let (sealed, reference) = secret_columns(s);
    let version = i32::try_from(s.version).unwrap_or(i32::MAX);
    let done = sqlx::query(
        "UPDATE secrets SET sealed = $2, reference = $3, description = $4, version = $5, updated_at = $6
         WHERE id = $1 AND version = $5 - 1",
    )
    .bind(s.id.0)
    .bind(sealed)
    .bind(reference)
    .bind(&s.description)
    .bind(version)
    .bind(s.updated_at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        get_one(pool, s.id).await?;
        return Err(Conflict::Changed("secret").into());
    }
    Ok(())
}

pub(crate) async fn delete(pool: &PgPool, id: SecretId) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM secrets WHERE id = $1")
        .bind(id.0)
        .execute(pool)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("secret"));
    }
    Ok(())
}

fn secret(row: &PgRow) -> StoreResult<TaskSecret> {
    let sealed: Option<Vec<u8>> = get(row, "sealed")?;
    let reference: Option<String> = get(row, "reference")?;
    let source = secret_source(sealed, reference)?;
    let version: i32 = get(row, "version")?;
    Ok(TaskSecret {
        id: SecretId(get(row, "id")?),
        scope: rows::scope(row)?,
        name: rows::ident(row, "name")?,
        description: get(row, "description")?,
        source,
        version: u32::try_from(version).map_err(|e| StoreError::Internal(format!("corrupt secret version: {e}")))?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}
