//! Secrets that tasks use: rows of `secrets`, sealed values as `BLOB`, never clear text.

use sqlx::sqlite::{Sqlite, SqliteRow};
use sqlx::{QueryBuilder, Row};
use switchboard_domain::vault::TaskSecret;
use switchboard_domain::{Ident, Scope, SecretId};
use switchboard_store::columns::{secret_columns, secret_source};
use switchboard_store::{Conflict, StoreError, StoreResult};

use crate::error::is_unique_violation;
use crate::rows::{self, from_ms, ms, scope_values};
use crate::{Db, map_err};

pub(crate) async fn create(db: &Db, s: &TaskSecret) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&s.scope);
    let (sealed, reference) = secret_columns(s);
    sqlx::query(
        "INSERT INTO secrets (id, account, org, project, scope_path, name, description, sealed, reference, version,
                              created_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
    .bind(i64::from(s.version))
    .bind(ms(s.created_at))
    .bind(ms(s.updated_at))
    .execute(&db.writer)
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

pub(crate) async fn get_one(db: &Db, id: SecretId) -> StoreResult<TaskSecret> {
    let row = sqlx::query("SELECT * FROM secrets WHERE id = ?")
        .bind(id.0)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("secret"))?;
    secret(&row)
}

pub(crate) async fn list(db: &Db, within: Option<&Scope>) -> StoreResult<Vec<TaskSecret>> {
    let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM secrets WHERE 1 = 1");
    rows::push_within(&mut q, within);
    q.push(" ORDER BY scope_path, name");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(secret).collect()
}

pub(crate) async fn named(db: &Db, account: &Ident, names: &[Ident]) -> StoreResult<Vec<TaskSecret>> {
    if names.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM secrets WHERE account = ");
    q.push_bind(account.as_str()).push(" AND name IN (");
    let mut list = q.separated(", ");
    for name in names {
        list.push_bind(name.as_str());
    }
    q.push(")");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(secret).collect()
}

pub(crate) async fn by_id(db: &Db, ids: &[SecretId]) -> StoreResult<Vec<TaskSecret>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let mut q = QueryBuilder::<Sqlite>::new("SELECT * FROM secrets WHERE id IN (");
    let mut list = q.separated(", ");
    for id in ids {
        list.push_bind(id.0);
    }
    q.push(")");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(secret).collect()
}

pub(crate) async fn replace(db: &Db, s: &TaskSecret) -> StoreResult<()> {
    let (sealed, reference) = secret_columns(s);
    let done = sqlx::query(
        "UPDATE secrets SET sealed = ?2, reference = ?3, description = ?4, version = ?5, updated_at = ?6
         WHERE id = ?1 AND version = ?5 - 1",
    )
    .bind(s.id.0)
    .bind(sealed)
    .bind(reference)
    .bind(&s.description)
    .bind(i64::from(s.version))
    .bind(ms(s.updated_at))
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    if done.rows_affected() == 0 {
        get_one(db, s.id).await?;
        return Err(Conflict::Changed("secret").into());
    }
    Ok(())
}

pub(crate) async fn delete(db: &Db, id: SecretId) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM secrets WHERE id = ?")
        .bind(id.0)
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("secret"));
    }
    Ok(())
}

fn secret(row: &SqliteRow) -> StoreResult<TaskSecret> {
    let get = |e: sqlx::Error| map_err(e);
    let sealed: Option<Vec<u8>> = row.try_get("sealed").map_err(get)?;
    let reference: Option<String> = row.try_get("reference").map_err(get)?;
    let source = secret_source(sealed, reference)?;
    let version: i64 = row.try_get("version").map_err(get)?;
    Ok(TaskSecret {
        id: SecretId(row.try_get("id").map_err(get)?),
        scope: rows::scope(row)?,
        name: rows::ident(row, "name")?,
        description: row.try_get("description").map_err(get)?,
        source,
        version: u32::try_from(version).map_err(|e| StoreError::Internal(format!("corrupt secret version: {e}")))?,
        created_at: from_ms("created_at", row.try_get("created_at").map_err(get)?)?,
        updated_at: from_ms("updated_at", row.try_get("updated_at").map_err(get)?)?,
    })
}
