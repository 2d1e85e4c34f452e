//! Delegate tokens, groups, instances, heartbeats, connectors and connector memory.
//!
//! Reads go to the reader pool; every write goes through the single writer connection
//! (see the crate documentation for why).

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use switchboard_domain::{
    Connector, ConnectorId, DelegateGroup, DelegateInstance, DelegateToken, GroupId, Ident, InstanceId, LastSuccess,
    Pause, Scope, SecretHash, Selectors, TokenId,
};
use switchboard_store::{Conflict, StoreError, StoreResult};

use crate::error::{is_foreign_key_violation, is_unique_violation};
use crate::rows::{self, CONNECTOR_COLUMNS, GROUP_COLUMNS, INSTANCE_COLUMNS, TOKEN_COLUMNS, ms, scope_values, to_json};
use crate::{Db, exists, map_err};

// --- tokens --------------------------------------------------------------------------

pub(crate) async fn create_token(db: &Db, token: &DelegateToken, secret: &SecretHash) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&token.scope);
    sqlx::query(
        "INSERT INTO delegate_tokens \
         (id, account, org, project, scope_path, name, secret_hash, status, created_at, revoked_at, \
          jit_group, expires_at, used_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(token.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(token.name.as_str())
    .bind(secret.as_bytes())
    .bind(token.status.as_str())
    .bind(ms(token.created_at))
    .bind(token.revoked_at.map(ms))
    .bind(token.jit.as_ref().map(|j| j.group_id.0))
    .bind(token.jit.as_ref().map(|j| ms(j.expires_at)))
    .bind(token.jit.as_ref().and_then(|j| j.used_at).map(ms))
    .execute(&db.writer)
    .await
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound("delegate group")
        } else if is_unique_violation(&e) {
            Conflict::Duplicate {
                what: "delegate token",
                name: token.name.to_string(),
            }
            .into()
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(crate) async fn get_token(db: &Db, id: TokenId) -> StoreResult<DelegateToken> {
    let row = sqlx::query(&format!("SELECT {TOKEN_COLUMNS} FROM delegate_tokens WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("delegate token"))?;
    rows::token(&row)
}

pub(crate) async fn token_by_secret(db: &Db, secret: &SecretHash) -> StoreResult<Option<DelegateToken>> {
    sqlx::query(&format!(
        "SELECT {TOKEN_COLUMNS} FROM delegate_tokens WHERE secret_hash = ?"
    ))
    .bind(secret.as_bytes())
    .fetch_optional(&db.reader)
    .await
    .map_err(map_err)?
    .map(|row| rows::token(&row))
    .transpose()
}

pub(crate) async fn list_tokens(db: &Db, within: Option<&Scope>) -> StoreResult<Vec<DelegateToken>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!(
        "SELECT {TOKEN_COLUMNS} FROM delegate_tokens WHERE jit_group IS NULL"
    ));
    rows::push_within(&mut q, within);
    q.push(" ORDER BY account, name");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::token).collect()
}

pub(crate) async fn revoke_token(db: &Db, id: TokenId, at: DateTime<Utc>) -> StoreResult<DelegateToken> {
    // COALESCE keeps the first revocation time: revoking again changes nothing.
    let row = sqlx::query(&format!(
        "UPDATE delegate_tokens SET status = 'revoked', revoked_at = COALESCE(revoked_at, ?) \
         WHERE id = ? RETURNING {TOKEN_COLUMNS}"
    ))
    .bind(ms(at))
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate token"))?;
    rows::token(&row)
}

pub(crate) async fn use_jit_token(db: &Db, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE delegate_tokens SET used_at = ? \
         WHERE id = ? AND jit_group IS NOT NULL AND used_at IS NULL AND expires_at > ? AND status = 'active'",
    )
    .bind(ms(at))
    .bind(id.0)
    .bind(ms(at))
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn remove_expired_jit_tokens(db: &Db, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query(
        "DELETE FROM delegate_tokens WHERE jit_group IS NOT NULL AND expires_at < ? \
         AND NOT EXISTS (SELECT 1 FROM delegate_instances i WHERE i.token_id = delegate_tokens.id)",
    )
    .bind(ms(before))
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}

// --- groups --------------------------------------------------------------------------

pub(crate) async fn upsert_group(
    db: &Db,
    scope: &Scope,
    name: &Ident,
    tags: &Selectors,
    at: DateTime<Utc>,
) -> StoreResult<DelegateGroup> {
    let (account, org, project, path) = scope_values(scope);
    let mut tx = db.write().await?;
    // Insert-if-absent then read, rather than read-then-insert: correct even if another
    // process on the same file registers the same group at the same moment.
    sqlx::query(
        "INSERT INTO delegate_groups (id, account, org, project, scope_path, name, tags, disabled, created_at, \
         last_instance_at) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?) ON CONFLICT (scope_path, name) DO NOTHING",
    )
    .bind(GroupId::new().0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(&path)
    .bind(name.as_str())
    .bind(to_json(tags)?)
    .bind(ms(at))
    .bind(ms(at))
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    let row = sqlx::query(&format!(
        "SELECT {GROUP_COLUMNS} FROM delegate_groups WHERE scope_path = ? AND name = ?"
    ))
    .bind(&path)
    .bind(name.as_str())
    .fetch_one(&mut *tx)
    .await
    .map_err(map_err)?;
    let group = rows::group(&row)?;
    tx.commit().await.map_err(map_err)?;
    Ok(group)
}

pub(crate) async fn get_group(db: &Db, id: GroupId) -> StoreResult<DelegateGroup> {
    let row = sqlx::query(&format!("SELECT {GROUP_COLUMNS} FROM delegate_groups WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn list_groups(db: &Db, within: Option<&Scope>) -> StoreResult<Vec<DelegateGroup>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {GROUP_COLUMNS} FROM delegate_groups WHERE 1 = 1"));
    rows::push_within(&mut q, within);
    q.push(" ORDER BY scope_path, name");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::group).collect()
}

pub(crate) async fn set_group_tags(db: &Db, id: GroupId, tags: &Selectors) -> StoreResult<DelegateGroup> {
    let row = sqlx::query(&format!(
        "UPDATE delegate_groups SET tags = ? WHERE id = ? RETURNING {GROUP_COLUMNS}"
    ))
    .bind(to_json(tags)?)
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn set_group_disabled(db: &Db, id: GroupId, disabled: bool) -> StoreResult<DelegateGroup> {
    let row = sqlx::query(&format!(
        "UPDATE delegate_groups SET disabled = ? WHERE id = ? RETURNING {GROUP_COLUMNS}"
    ))
    .bind(disabled)
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn set_group_pause(db: &Db, id: GroupId, pause: Option<&Pause>) -> StoreResult<DelegateGroup> {
    let row = sqlx::query(&format!(
        "UPDATE delegate_groups SET pause = ? WHERE id = ? RETURNING {GROUP_COLUMNS}"
    ))
    .bind(pause.map(to_json).transpose()?)
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn delete_group(db: &Db, id: GroupId) -> StoreResult<()> {
    // Its instances (and their capability results) go with it: ON DELETE CASCADE.
    let done = sqlx::query("DELETE FROM delegate_groups WHERE id = ?")
        .bind(id.0)
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("delegate group"));
    }
    Ok(())
}

// --- instances -----------------------------------------------------------------------

pub(crate) async fn register_instance(db: &Db, instance: &DelegateInstance, session: &SecretHash) -> StoreResult<()> {
    register(db, instance, session, None).await.map(drop)
}

/// Uses the JIT credential the instance names (`token_id`) and stores the instance, in
/// one transaction: `false`, and nothing stored, when the credential is used, expired or
/// revoked; a failed insert leaves the credential unused.
pub(crate) async fn register_jit_instance(
    db: &Db,
    instance: &DelegateInstance,
    session: &SecretHash,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    register(db, instance, session, Some(at)).await
}

async fn register(
    db: &Db,
    instance: &DelegateInstance,
    session: &SecretHash,
    jit_at: Option<DateTime<Utc>>,
) -> StoreResult<bool> {
    let task_types = to_json(&instance.task_types)?;
    let tags = to_json(&instance.tags)?;
    let mut tx = db.write().await?;
    if let Some(at) = jit_at {
        let used = sqlx::query(
            "UPDATE delegate_tokens SET used_at = ? \
             WHERE id = ? AND jit_group IS NOT NULL AND used_at IS NULL AND expires_at > ? AND status = 'active'",
        )
        .bind(ms(at))
        .bind(instance.token_id.0)
        .bind(ms(at))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if used.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
    }
    let inserted = sqlx::query(
        "INSERT INTO delegate_instances (id, group_id, token_id, session_hash, hostname, version, flavour, tags, \
         task_types, capacity, active_tasks, registered_at, last_heartbeat_at, connected, pause, draining, \
         max_tasks, tasks_taken) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(instance.id.0)
    .bind(instance.group_id.0)
    .bind(instance.token_id.0)
    .bind(session.as_bytes())
    .bind(&instance.hostname)
    .bind(&instance.version)
    .bind(instance.flavour.as_str())
    .bind(tags)
    .bind(task_types)
    .bind(i64::from(instance.capacity.get()))
    .bind(i64::from(instance.active_tasks))
    .bind(ms(instance.registered_at))
    .bind(ms(instance.last_heartbeat_at))
    .bind(instance.connected)
    .bind(instance.paused.as_ref().map(to_json).transpose()?)
    .bind(instance.draining)
    .bind(instance.max_tasks.map(i64::from))
    .bind(i64::from(instance.tasks_taken))
    .execute(&mut *tx)
    .await;
    match inserted {
        Ok(_) => {
            sqlx::query("UPDATE delegate_groups SET last_instance_at = max(last_instance_at, ?) WHERE id = ?")
                .bind(ms(instance.registered_at))
                .bind(instance.group_id.0)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        Err(e) if is_foreign_key_violation(&e) => {
            // SQLite does not say which reference failed; ask, in the same transaction.
            let group = exists(&mut tx, "delegate_groups", instance.group_id.0).await?;
            return Err(StoreError::NotFound(if group {
                "delegate token"
            } else {
                "delegate group"
            }));
        }
        Err(e) => return Err(map_err(e)),
    }
    tx.commit().await.map_err(map_err)?;
    Ok(true)
}

pub(crate) async fn remove_silent_instances(
    db: &Db,
    before: DateTime<Utc>,
    at: DateTime<Utc>,
) -> StoreResult<Vec<InstanceId>> {
    // An instance with a socket or a task is left alone: losing those is handled
    // elsewhere first, and removing it here would orphan them.
    let mut tx = db.write().await?;
    let gone: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "DELETE FROM delegate_instances WHERE last_heartbeat_at < ? AND connected = 0 AND active_tasks = 0 \
         RETURNING id, group_id",
    )
    .bind(ms(before))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut groups: Vec<uuid::Uuid> = gone.iter().map(|(_, g)| *g).collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        sqlx::query("UPDATE delegate_groups SET last_instance_at = max(last_instance_at, ?) WHERE id = ?")
            .bind(ms(at))
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(gone.into_iter().map(|(id, _)| InstanceId(id)).collect())
}

pub(crate) async fn remove_empty_groups(db: &Db, before: DateTime<Utc>) -> StoreResult<Vec<GroupId>> {
    let mut tx = db.write().await?;
    let gone: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "DELETE FROM delegate_groups WHERE last_instance_at < ? AND declaration IS NULL \
         AND NOT EXISTS (SELECT 1 FROM delegate_instances i WHERE i.group_id = delegate_groups.id) RETURNING id",
    )
    .bind(ms(before))
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(gone.into_iter().map(|(id,)| GroupId(id)).collect())
}

pub(crate) async fn get_instance(db: &Db, id: InstanceId) -> StoreResult<DelegateInstance> {
    let row = sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM delegate_instances WHERE id = ?"
    ))
    .bind(id.0)
    .fetch_optional(&db.reader)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate instance"))?;
    rows::instance(&row)
}

pub(crate) async fn instance_by_session(db: &Db, session: &SecretHash) -> StoreResult<Option<DelegateInstance>> {
    sqlx::query(&format!(
        "SELECT {INSTANCE_COLUMNS} FROM delegate_instances WHERE session_hash = ?"
    ))
    .bind(session.as_bytes())
    .fetch_optional(&db.reader)
    .await
    .map_err(map_err)?
    .map(|row| rows::instance(&row))
    .transpose()
}

pub(crate) async fn list_instances(db: &Db, group: Option<GroupId>) -> StoreResult<Vec<DelegateInstance>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {INSTANCE_COLUMNS} FROM delegate_instances"));
    if let Some(group) = group {
        q.push(" WHERE group_id = ").push_bind(group.0);
    }
    q.push(" ORDER BY group_id, registered_at, id");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::instance).collect()
}

pub(crate) async fn instance_counts(
    db: &Db,
    stale_before: DateTime<Utc>,
) -> StoreResult<switchboard_store::InstanceCounts> {
    let bound = ms(stale_before);
    let (fresh, disconnected): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(connected = 1 AND last_heartbeat_at >= ?), 0), coalesce(sum(connected = 0), 0) \
         FROM delegate_instances",
    )
    .bind(bound)
    .fetch_one(&db.reader)
    .await
    .map_err(map_err)?;
    let stale: Vec<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM delegate_instances WHERE connected = 1 AND last_heartbeat_at < ?")
            .bind(bound)
            .fetch_all(&db.reader)
            .await
            .map_err(map_err)?;
    Ok(switchboard_store::InstanceCounts {
        fresh: u64::try_from(fresh).unwrap_or(0),
        stale: stale.into_iter().map(InstanceId).collect(),
        disconnected: u64::try_from(disconnected).unwrap_or(0),
    })
}

pub(crate) async fn record_heartbeats(db: &Db, beats: &[(InstanceId, DateTime<Utc>)]) -> StoreResult<u64> {
    if beats.is_empty() {
        return Ok(0);
    }
    // The whole batch is one bound JSON array of [hex id, ms] pairs, joined in one UPDATE:
    // one statement whatever the batch size (no limit on bound parameters), one commit.
    // Duplicates of an instance in the batch collapse to their latest beat, and MAX keeps
    // a late, older beat from moving the time backwards.
    let batch: Vec<(String, i64)> = beats
        .iter()
        .map(|(id, at)| (id.0.simple().to_string(), ms(*at)))
        .collect();
    let done = sqlx::query(
        "UPDATE delegate_instances SET last_heartbeat_at = MAX(delegate_instances.last_heartbeat_at, beats.at) \
         FROM (SELECT unhex(value ->> 0) AS id, MAX(value ->> 1) AS at FROM json_each(?) GROUP BY 1) AS beats \
         WHERE delegate_instances.id = beats.id",
    )
    .bind(to_json(&batch)?)
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}

/// Forgets every recorded connection: for a manager that just took the file's lock, so
/// holds no socket yet. Returns how many were recorded (by a manager that crashed).
pub(crate) async fn forget_connections(db: &Db) -> StoreResult<u64> {
    let done = sqlx::query("UPDATE delegate_instances SET connected = 0 WHERE connected = 1")
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    if done.rows_affected() > 0 {
        tracing::info!(
            instances = done.rows_affected(),
            "forgot connections recorded by a manager that did not stop cleanly"
        );
    }
    Ok(done.rows_affected())
}

pub(crate) async fn set_instance_connected(db: &Db, id: InstanceId, connected: bool) -> StoreResult<()> {
    let done = sqlx::query("UPDATE delegate_instances SET connected = ? WHERE id = ?")
        .bind(connected)
        .bind(id.0)
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("delegate instance"));
    }
    Ok(())
}

pub(crate) async fn set_instance_pause(
    db: &Db,
    id: InstanceId,
    pause: Option<&Pause>,
) -> StoreResult<DelegateInstance> {
    let row = sqlx::query(&format!(
        "UPDATE delegate_instances SET pause = ? WHERE id = ? RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(pause.map(to_json).transpose()?)
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate instance"))?;
    rows::instance(&row)
}

pub(crate) async fn set_instance_draining(db: &Db, id: InstanceId) -> StoreResult<DelegateInstance> {
    let row = sqlx::query(&format!(
        "UPDATE delegate_instances SET draining = 1 WHERE id = ? RETURNING {INSTANCE_COLUMNS}"
    ))
    .bind(id.0)
    .fetch_optional(&db.writer)
    .await
    .map_err(map_err)?
    .ok_or(StoreError::NotFound("delegate instance"))?;
    rows::instance(&row)
}

/// Deletes the spent single-use instances that hold no task. The one writer orders it
/// with the batches that claim: a claim committed first leaves `active_tasks` above zero.
pub(crate) async fn retire_spent_instances(db: &Db, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>> {
    let mut tx = db.write().await?;
    let gone: Vec<(uuid::Uuid, uuid::Uuid)> = sqlx::query_as(
        "DELETE FROM delegate_instances \
         WHERE max_tasks IS NOT NULL AND tasks_taken >= max_tasks AND active_tasks = 0 RETURNING id, group_id",
    )
    .fetch_all(&mut *tx)
    .await
    .map_err(map_err)?;
    let mut groups: Vec<uuid::Uuid> = gone.iter().map(|(_, g)| *g).collect();
    groups.sort_unstable();
    groups.dedup();
    for group in groups {
        sqlx::query("UPDATE delegate_groups SET last_instance_at = max(last_instance_at, ?) WHERE id = ?")
            .bind(ms(at))
            .bind(group)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
    }
    tx.commit().await.map_err(map_err)?;
    Ok(gone.into_iter().map(|(id, _)| InstanceId(id)).collect())
}

// --- connectors -----------------------------------------------------------------------

fn duplicate_or(e: sqlx::Error, connector: &Connector) -> StoreError {
    duplicate(e, "connector", &connector.name)
}

fn duplicate(e: sqlx::Error, what: &'static str, name: &Ident) -> StoreError {
    if is_unique_violation(&e) {
        Conflict::Duplicate {
            what,
            name: name.to_string(),
        }
        .into()
    } else {
        map_err(e)
    }
}

pub(crate) async fn declare_group(db: &Db, group: &DelegateGroup) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&group.scope);
    let declaration = group.declared.as_ref().map(to_json).transpose()?;
    sqlx::query(
        "INSERT INTO delegate_groups (id, account, org, project, scope_path, name, tags, disabled, created_at, \
         last_instance_at, declaration) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(group.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(group.name.as_str())
    .bind(to_json(&group.tags)?)
    .bind(group.disabled)
    .bind(ms(group.created_at))
    .bind(ms(group.created_at))
    .bind(declaration)
    .execute(&db.writer)
    .await
    .map_err(|e| duplicate(e, "delegate", &group.name))?;
    Ok(())
}

pub(crate) async fn create_connector(db: &Db, connector: &Connector) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&connector.scope);
    sqlx::query(
        "INSERT INTO connectors (id, account, org, project, scope_path, name, selectors, created_at, updated_at) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(connector.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(connector.name.as_str())
    .bind(to_json(&connector.selectors)?)
    .bind(ms(connector.created_at))
    .bind(ms(connector.updated_at))
    .execute(&db.writer)
    .await
    .map_err(|e| duplicate_or(e, connector))?;
    Ok(())
}

pub(crate) async fn get_connector(db: &Db, id: ConnectorId) -> StoreResult<Connector> {
    let row = sqlx::query(&format!("SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE id = ?"))
        .bind(id.0)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?
        .ok_or(StoreError::NotFound("connector"))?;
    rows::connector(&row)
}

pub(crate) async fn list_connectors(db: &Db, within: Option<&Scope>) -> StoreResult<Vec<Connector>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {CONNECTOR_COLUMNS} FROM connectors WHERE 1 = 1"));
    rows::push_within(&mut q, within);
    q.push(" ORDER BY scope_path, name");
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::connector).collect()
}

pub(crate) async fn update_connector(db: &Db, connector: &Connector) -> StoreResult<()> {
    // Name and selectors only: a connector never moves to another scope.
    let done = sqlx::query("UPDATE connectors SET name = ?, selectors = ?, updated_at = ? WHERE id = ?")
        .bind(connector.name.as_str())
        .bind(to_json(&connector.selectors)?)
        .bind(ms(connector.updated_at))
        .bind(connector.id.0)
        .execute(&db.writer)
        .await
        .map_err(|e| duplicate_or(e, connector))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("connector"));
    }
    Ok(())
}

pub(crate) async fn delete_connector(db: &Db, id: ConnectorId) -> StoreResult<()> {
    // Tasks naming it keep running without it (ON DELETE SET NULL); its last-success
    // memory goes with it (ON DELETE CASCADE).
    let done = sqlx::query("DELETE FROM connectors WHERE id = ?")
        .bind(id.0)
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("connector"));
    }
    Ok(())
}

pub(crate) async fn record_last_success(db: &Db, success: &LastSuccess) -> StoreResult<()> {
    // A success reported late (older than the stored one) changes nothing.
    sqlx::query(
        "INSERT INTO connector_last_success (connector_id, instance_id, group_id, succeeded_at) VALUES (?, ?, ?, ?) \
         ON CONFLICT (connector_id) DO UPDATE SET \
         instance_id = excluded.instance_id, group_id = excluded.group_id, succeeded_at = excluded.succeeded_at \
         WHERE excluded.succeeded_at >= connector_last_success.succeeded_at",
    )
    .bind(success.connector_id.0)
    .bind(success.instance_id.0)
    .bind(success.group_id.0)
    .bind(ms(success.at))
    .execute(&db.writer)
    .await
    .map_err(|e| {
        if is_foreign_key_violation(&e) {
            StoreError::NotFound("connector")
        } else {
            map_err(e)
        }
    })?;
    Ok(())
}

pub(crate) async fn last_success(db: &Db, connector: ConnectorId) -> StoreResult<Option<LastSuccess>> {
    sqlx::query(
        "SELECT connector_id, instance_id, group_id, succeeded_at FROM connector_last_success WHERE connector_id = ?",
    )
    .bind(connector.0)
    .fetch_optional(&db.reader)
    .await
    .map_err(map_err)?
    .map(|row| rows::last_success(&row))
    .transpose()
}
