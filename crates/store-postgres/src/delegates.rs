//! Delegate tokens, groups, instances, connectors and connector memory.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use sqlx::types::Json;
use switchboard_domain::{
    Connector, ConnectorId, DelegateGroup, DelegateInstance, DelegateToken, GroupId, Ident, InstanceId, LastSuccess,
    Pause, Scope, SecretHash, Selectors, TokenId, TokenStatus,
};
use switchboard_store::{Conflict, StoreError, StoreResult};
use uuid::Uuid;

use crate::error::is_unique_violation;
use crate::map_err;
use crate::rows::{self, scope_values, within, within_sql};

fn not_found(what: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| match e {
        sqlx::Error::RowNotFound => StoreError::NotFound(what),
        e => map_err(e),
    }
}

fn duplicate(what: &'static str, name: &Ident) -> impl FnOnce(sqlx::Error) -> StoreError {
    let name = name.to_string();
    move |e| {
        if is_unique_violation(&e) {
            Conflict::Duplicate { what, name }.into()
        } else {
            map_err(e)
        }
    }
}

// --- tokens ------------------------------------------------------------------------------

pub(crate) async fn create_token(pool: &PgPool, t: &DelegateToken, secret: &SecretHash) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&t.scope);
    sqlx::query(
        "INSERT INTO delegate_tokens (id, account, org, project, scope_path, name, secret_hash, status, created_at, revoked_at,
             jit_group, expires_at, used_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)",
    )
    .bind(t.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(t.name.as_str())
    .bind(secret.as_bytes())
    .bind(t.status.as_str())
    .bind(t.created_at)
    .bind(t.revoked_at)
    .bind(t.jit.as_ref().map(|j| j.group_id.0))
    .bind(t.jit.as_ref().map(|j| j.expires_at))
    .bind(t.jit.as_ref().and_then(|j| j.used_at))
    .execute(pool)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => StoreError::NotFound("delegate group"),
        e => duplicate("delegate token", &t.name)(e),
    })?;
    Ok(())
}

pub(crate) async fn get_token(pool: &PgPool, id: TokenId) -> StoreResult<DelegateToken> {
    let row = sqlx::query("SELECT * FROM delegate_tokens WHERE id = $1")
        .bind(id.0)
        .fetch_one(pool)
        .await
        .map_err(not_found("delegate token"))?;
    rows::token(&row)
}

pub(crate) async fn token_by_secret(pool: &PgPool, secret: &SecretHash) -> StoreResult<Option<DelegateToken>> {
    let row = sqlx::query("SELECT * FROM delegate_tokens WHERE secret_hash = $1")
        .bind(secret.as_bytes())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    row.as_ref().map(rows::token).transpose()
}

pub(crate) async fn list_tokens(pool: &PgPool, scope: Option<&Scope>) -> StoreResult<Vec<DelegateToken>> {
    let (a, o, p) = within(scope);
    let sql = format!(
        "SELECT * FROM delegate_tokens WHERE jit_group IS NULL AND {} ORDER BY account, name",
        within_sql(1)
    );
    let rows = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::token).collect()
}

pub(crate) async fn revoke_token(pool: &PgPool, id: TokenId, at: DateTime<Utc>) -> StoreResult<DelegateToken> {
    let row = sqlx::query(
        "UPDATE delegate_tokens SET status = $2, revoked_at = COALESCE(revoked_at, $3) WHERE id = $1 RETURNING *",
    )
    .bind(id.0)
    .bind(TokenStatus::Revoked.as_str())
    .bind(at)
    .fetch_one(pool)
    .await
    .map_err(not_found("delegate token"))?;
    rows::token(&row)
}

pub(crate) async fn use_jit_token(pool: &PgPool, id: TokenId, at: DateTime<Utc>) -> StoreResult<bool> {
    let done = sqlx::query(
        "UPDATE delegate_tokens SET used_at = $2
         WHERE id = $1 AND jit_group IS NOT NULL AND used_at IS NULL AND expires_at > $2 AND status = 'active'",
    )
    .bind(id.0)
    .bind(at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected() == 1)
}

pub(crate) async fn remove_expired_jit_tokens(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query(
        "DELETE FROM delegate_tokens t
         WHERE t.jit_group IS NOT NULL AND t.expires_at < $1
           AND NOT EXISTS (SELECT 1 FROM delegate_instances i WHERE i.token_id = t.id)",
    )
    .bind(before)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(done.rows_affected())
}

// --- groups ------------------------------------------------------------------------------

pub(crate) async fn upsert_group(
    pool: &PgPool,
    scope: &Scope,
    name: &Ident,
    tags: &Selectors,
    at: DateTime<Utc>,
) -> StoreResult<DelegateGroup> {
    let (account, org, project, path) = scope_values(scope);
    // DO NOTHING + re-read rather than DO UPDATE: joining a group never changes its tags,
    // and two replicas registering at once must both land in the one group.
    sqlx::query(
        "INSERT INTO delegate_groups (id, account, org, project, scope_path, name, tags, disabled, created_at,
             last_instance_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, false, $8, $8)
         ON CONFLICT (scope_path, name) DO NOTHING",
    )
    .bind(GroupId::new().0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(&path)
    .bind(name.as_str())
    .bind(Json(tags))
    .bind(at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    let row = sqlx::query("SELECT * FROM delegate_groups WHERE scope_path = $1 AND name = $2")
        .bind(&path)
        .bind(name.as_str())
        .fetch_one(pool)
        .await
        .map_err(map_err)?;
    rows::group(&row)
}

pub(crate) async fn declare_group(pool: &PgPool, group: &DelegateGroup) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&group.scope);
    sqlx::query(
        "INSERT INTO delegate_groups (id, account, org, project, scope_path, name, tags, disabled, created_at,
             last_instance_at, declaration)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10)",
    )
    .bind(group.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(group.name.as_str())
    .bind(Json(&group.tags))
    .bind(group.disabled)
    .bind(group.created_at)
    .bind(group.declared.as_ref().map(Json))
    .execute(pool)
    .await
    .map_err(duplicate("delegate", &group.name))?;
    Ok(())
}

pub(crate) async fn get_group(pool: &PgPool, id: GroupId) -> StoreResult<DelegateGroup> {
    let row = sqlx::query("SELECT * FROM delegate_groups WHERE id = $1")
        .bind(id.0)
        .fetch_one(pool)
        .await
        .map_err(not_found("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn list_groups(pool: &PgPool, scope: Option<&Scope>) -> StoreResult<Vec<DelegateGroup>> {
    let (a, o, p) = within(scope);
    let sql = format!(
        "SELECT * FROM delegate_groups WHERE {} ORDER BY scope_path, name",
        within_sql(1)
    );
    let rows = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::group).collect()
}

pub(crate) async fn set_group_tags(pool: &PgPool, id: GroupId, tags: &Selectors) -> StoreResult<DelegateGroup> {
    let row = sqlx::query("UPDATE delegate_groups SET tags = $2 WHERE id = $1 RETURNING *")
        .bind(id.0)
        .bind(Json(tags))
        .fetch_one(pool)
        .await
        .map_err(not_found("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn set_group_disabled(pool: &PgPool, id: GroupId, disabled: bool) -> StoreResult<DelegateGroup> {
    let row = sqlx::query("UPDATE delegate_groups SET disabled = $2 WHERE id = $1 RETURNING *")
        .bind(id.0)
        .bind(disabled)
        .fetch_one(pool)
        .await
        .map_err(not_found("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn set_group_pause(pool: &PgPool, id: GroupId, pause: Option<&Pause>) -> StoreResult<DelegateGroup> {
    let row = sqlx::query("UPDATE delegate_groups SET pause = $2 WHERE id = $1 RETURNING *")
        .bind(id.0)
        .bind(pause.map(Json))
        .fetch_one(pool)
        .await
        .map_err(not_found("delegate group"))?;
    rows::group(&row)
}

pub(crate) async fn delete_group(pool: &PgPool, id: GroupId) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM delegate_groups WHERE id = $1")
        .bind(id.0)
        .execute(pool)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("delegate group"));
    }
    Ok(())
}

// --- instances ---------------------------------------------------------------------------

/// Every read of instances: the row, with `connected` worked out from the lease of the
/// manager that recorded the connection (migration 0006). One expression, so placement,
/// the API and the metrics cannot disagree about it.
/// The columns are named, not `i.*`: the table still has the previous release's
/// `connected` flag, which this release never reads.
const INSTANCE_SELECT: &str = "SELECT i.id, i.group_id, i.token_id, i.hostname, i.version, i.flavour, i.tags, \
     i.task_types, i.capacity, i.active_tasks, i.registered_at, i.last_heartbeat_at, \
     i.pause, i.draining, i.max_tasks, i.tasks_taken, \
     EXISTS (SELECT 1 FROM manager_leases l WHERE l.id = i.connected_via AND l.expires_at > now()) AS connected \
     FROM delegate_instances i";

pub(crate) async fn register_instance(
    pool: &PgPool,
    replica: Uuid,
    i: &DelegateInstance,
    session: &SecretHash,
) -> StoreResult<()> {
    register(pool, replica, i, session, None).await.map(drop)
}

/// Uses the JIT credential the instance names (`token_id`) and stores the instance, in
/// one transaction: `false`, and nothing stored, when the credential is used, expired or
/// revoked; a failed insert leaves the credential unused.
pub(crate) async fn register_jit_instance(
    pool: &PgPool,
    replica: Uuid,
    i: &DelegateInstance,
    session: &SecretHash,
    at: DateTime<Utc>,
) -> StoreResult<bool> {
    register(pool, replica, i, session, Some(at)).await
}

async fn register(
    pool: &PgPool,
    replica: Uuid,
    i: &DelegateInstance,
    session: &SecretHash,
    jit_at: Option<DateTime<Utc>>,
) -> StoreResult<bool> {
    let mut tx = crate::begin(pool).await?;
    if let Some(at) = jit_at {
        let used = sqlx::query(
            "UPDATE delegate_tokens SET used_at = $2
             WHERE id = $1 AND jit_group IS NOT NULL AND used_at IS NULL AND expires_at > $2 AND status = 'active'",
        )
        .bind(i.token_id.0)
        .bind(at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        if used.rows_affected() != 1 {
            tx.rollback().await.map_err(map_err)?;
            return Ok(false);
        }
    }
    sqlx::query(
        "INSERT INTO delegate_instances (id, group_id, token_id, session_hash, hostname, version, flavour, tags,
             task_types, capacity, active_tasks, registered_at, last_heartbeat_at, connected_via,
             pause, draining, max_tasks, tasks_taken)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18)",
    )
    .bind(i.id.0)
    .bind(i.group_id.0)
    .bind(i.token_id.0)
    .bind(session.as_bytes())
    .bind(&i.hostname)
    .bind(&i.version)
    .bind(i.flavour.as_str())
    .bind(Json(&i.tags))
    .bind(Json(&i.task_types))
    .bind(i.capacity.get() as i32)
    .bind(i.active_tasks as i32)
    .bind(i.registered_at)
    .bind(i.last_heartbeat_at)
    .bind(i.connected.then_some(replica))
    .bind(i.paused.as_ref().map(Json))
    .bind(i.draining)
    .bind(i.max_tasks.map(|m| i32::try_from(m).unwrap_or(i32::MAX)))
    .bind(i32::try_from(i.tasks_taken).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => {
            // A foreign key: the group or the token is gone.
            StoreError::NotFound("delegate group or token")
        }
        e => map_err(e),
    })?;
    sqlx::query("UPDATE delegate_groups SET last_instance_at = GREATEST(last_instance_at, $2) WHERE id = $1")
        .bind(i.group_id.0)
        .bind(i.registered_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(true)
}

pub(crate) async fn remove_silent_instances(
    pool: &PgPool,
    before: DateTime<Utc>,
    at: DateTime<Utc>,
) -> StoreResult<Vec<InstanceId>> {
    // One statement: the deletion and the groups' memory of it commit together. An
    // instance with a socket or a task is left alone: losing those is handled elsewhere
    // first, and removing it here would orphan them.
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM delegate_instances
             WHERE last_heartbeat_at < $1 AND active_tasks = 0
               AND NOT EXISTS (SELECT 1 FROM manager_leases l
                               WHERE l.id = delegate_instances.connected_via AND l.expires_at > now())
             RETURNING id, group_id),
         touched AS (
             UPDATE delegate_groups SET last_instance_at = GREATEST(last_instance_at, $2)
             WHERE id IN (SELECT group_id FROM gone))
         SELECT id FROM gone",
    )
    .bind(before)
    .bind(at)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.into_iter().map(|(id,)| InstanceId(id)).collect())
}

pub(crate) async fn remove_empty_groups(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<Vec<GroupId>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "DELETE FROM delegate_groups g
         WHERE last_instance_at < $1 AND declaration IS NULL
           AND NOT EXISTS (SELECT 1 FROM delegate_instances i WHERE i.group_id = g.id)
         RETURNING id",
    )
    .bind(before)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.into_iter().map(|(id,)| GroupId(id)).collect())
}

pub(crate) async fn get_instance(pool: &PgPool, id: InstanceId) -> StoreResult<DelegateInstance> {
    let row = sqlx::query(&format!("{INSTANCE_SELECT} WHERE i.id = $1"))
        .bind(id.0)
        .fetch_one(pool)
        .await
        .map_err(not_found("delegate instance"))?;
    rows::instance(&row)
}

pub(crate) async fn instance_by_session(pool: &PgPool, session: &SecretHash) -> StoreResult<Option<DelegateInstance>> {
    let row = sqlx::query(&format!("{INSTANCE_SELECT} WHERE i.session_hash = $1"))
        .bind(session.as_bytes())
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    row.as_ref().map(rows::instance).transpose()
}

pub(crate) async fn list_instances(pool: &PgPool, group: Option<GroupId>) -> StoreResult<Vec<DelegateInstance>> {
    let rows = sqlx::query(&format!(
        "{INSTANCE_SELECT} WHERE ($1::uuid IS NULL OR i.group_id = $1) ORDER BY i.group_id, i.registered_at"
    ))
    .bind(group.map(|g| g.0))
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter().map(rows::instance).collect()
}

pub(crate) async fn instance_counts(
    pool: &PgPool,
    stale_before: DateTime<Utc>,
) -> StoreResult<switchboard_store::InstanceCounts> {
    // Connected as `list_instances` says it: recorded by a manager whose lease is live.
    // One join with the few live leases, not a lookup per instance.
    let (fresh, disconnected): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE l.id IS NOT NULL AND i.last_heartbeat_at >= $1), \
                count(*) FILTER (WHERE l.id IS NULL) \
         FROM delegate_instances i \
         LEFT JOIN manager_leases l ON l.id = i.connected_via AND l.expires_at > now()",
    )
    .bind(stale_before)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    let stale: Vec<Uuid> = sqlx::query_scalar(
        "SELECT i.id FROM delegate_instances i \
         JOIN manager_leases l ON l.id = i.connected_via AND l.expires_at > now() \
         WHERE i.last_heartbeat_at < $1",
    )
    .bind(stale_before)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(switchboard_store::InstanceCounts {
        fresh: u64::try_from(fresh).unwrap_or(0),
        stale: stale.into_iter().map(InstanceId).collect(),
        disconnected: u64::try_from(disconnected).unwrap_or(0),
    })
}

pub(crate) async fn record_heartbeats(pool: &PgPool, beats: &[(InstanceId, DateTime<Utc>)]) -> StoreResult<u64> {
    if beats.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = beats.iter().map(|b| b.0.0).collect();
    let ats: Vec<DateTime<Utc>> = beats.iter().map(|b| b.1).collect();
    // The rows are locked first, in id order: the order of every other transaction that
    // locks instances (the committer's batches), so a flush waits for a batch but never
    // deadlocks with one. Then one statement, whatever the size. GREATEST keeps a
    // late-arriving older beat from moving the clock back; DISTINCT ON keeps one row per
    // instance.
    let mut tx = crate::begin(pool).await?;
    sqlx::query("SELECT id FROM delegate_instances WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE")
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let done = sqlx::query(
        "UPDATE delegate_instances i SET last_heartbeat_at = GREATEST(i.last_heartbeat_at, b.at)
         FROM (SELECT DISTINCT ON (id) id, at FROM unnest($1::uuid[], $2::timestamptz[]) AS u(id, at)
               ORDER BY id, at DESC) b
         WHERE i.id = b.id",
    )
    .bind(&ids)
    .bind(&ats)
    .execute(&mut *tx)
    .await
    .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(done.rows_affected())
}

/// Records that `replica` holds the instance's socket, or lets go of it. Letting go
/// clears only a connection `replica` recorded: when the delegate has reconnected to
/// another live replica meanwhile, that one's record stays and the answer is `false`
/// (a record left by a replica whose lease is gone holds nothing: `true`).
pub(crate) async fn set_instance_connected(
    pool: &PgPool,
    replica: Uuid,
    id: InstanceId,
    connected: bool,
) -> StoreResult<bool> {
    let row: Option<(bool,)> = if connected {
        sqlx::query_as("UPDATE delegate_instances SET connected_via = $2 WHERE id = $1 RETURNING true")
            .bind(id.0)
            .bind(replica)
            .fetch_optional(pool)
            .await
            .map_err(map_err)?
    } else {
        // One statement: the instance's existence and whether another live replica
        // holds it, in one snapshot (which sees the row as it was before `cleared`).
        sqlx::query_as(
            "WITH cleared AS (UPDATE delegate_instances SET connected_via = NULL
                              WHERE id = $1 AND connected_via = $2 RETURNING id)
             SELECT EXISTS (SELECT 1 FROM cleared)
                 OR NOT EXISTS (SELECT 1 FROM manager_leases l
                                WHERE l.id = i.connected_via AND l.expires_at > now())
             FROM delegate_instances i WHERE i.id = $1",
        )
        .bind(id.0)
        .bind(replica)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?
    };
    match row {
        Some((held,)) => Ok(held),
        None => Err(StoreError::NotFound("delegate instance")),
    }
}

pub(crate) async fn set_instance_pause(
    pool: &PgPool,
    id: InstanceId,
    pause: Option<&Pause>,
) -> StoreResult<DelegateInstance> {
    let done = sqlx::query("UPDATE delegate_instances SET pause = $2 WHERE id = $1")
        .bind(id.0)
        .bind(pause.map(Json))
        .execute(pool)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("delegate instance"));
    }
    get_instance(pool, id).await
}

pub(crate) async fn set_instance_draining(pool: &PgPool, id: InstanceId) -> StoreResult<DelegateInstance> {
    let done = sqlx::query("UPDATE delegate_instances SET draining = true WHERE id = $1")
        .bind(id.0)
        .execute(pool)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("delegate instance"));
    }
    get_instance(pool, id).await
}

/// Deletes the spent single-use instances that hold no task. The `DELETE` re-checks its
/// condition on a row a claim holds locked once that claim commits, so a claim committed
/// first leaves `active_tasks` above zero and the instance stays.
pub(crate) async fn retire_spent_instances(pool: &PgPool, at: DateTime<Utc>) -> StoreResult<Vec<InstanceId>> {
    let rows: Vec<(Uuid,)> = sqlx::query_as(
        "WITH gone AS (DELETE FROM delegate_instances
                       WHERE max_tasks IS NOT NULL AND tasks_taken >= max_tasks AND active_tasks = 0
                       RETURNING id, group_id),
         touched AS (UPDATE delegate_groups SET last_instance_at = GREATEST(last_instance_at, $1)
                     WHERE id IN (SELECT group_id FROM gone))
         SELECT id FROM gone",
    )
    .bind(at)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    Ok(rows.into_iter().map(|(id,)| InstanceId(id)).collect())
}

/// Renews `replica`'s lease for `lease` from now, then clears the connections of the
/// managers whose lease lapsed and forgets those leases. Returns whether `replica`'s own
/// lease was still live; `false` (a first renewal, or one after the database was out of
/// reach for longer than the lease) tells the caller to record its sockets again, since
/// another replica may have cleared them.
pub(crate) async fn renew_lease(pool: &PgPool, replica: Uuid, lease: Duration) -> StoreResult<bool> {
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    // `renewed` extends only a live lease; a lapsed one (or none) is written afresh by
    // `inserted`, and the answer says which happened.
    let (was_live,): (bool,) = sqlx::query_as(
        "WITH renewed AS (
             UPDATE manager_leases SET expires_at = now() + $2 * interval '1 millisecond'
             WHERE id = $1 AND expires_at > now() RETURNING id),
         inserted AS (
             INSERT INTO manager_leases (id, expires_at)
             SELECT $1, now() + $2 * interval '1 millisecond' WHERE NOT EXISTS (SELECT 1 FROM renewed)
             ON CONFLICT (id) DO UPDATE SET expires_at = EXCLUDED.expires_at
             RETURNING id)
         SELECT EXISTS (SELECT 1 FROM renewed)",
    )
    .bind(replica)
    .bind(lease_ms)
    .fetch_one(pool)
    .await
    .map_err(map_err)?;
    sqlx::query(
        "WITH lapsed AS (DELETE FROM manager_leases WHERE expires_at <= now() AND id <> $1 RETURNING id)
         UPDATE delegate_instances SET connected_via = NULL WHERE connected_via IN (SELECT id FROM lapsed)",
    )
    .bind(replica)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(was_live)
}

// --- connectors --------------------------------------------------------------------------

pub(crate) async fn create_connector(pool: &PgPool, c: &Connector) -> StoreResult<()> {
    let (account, org, project, path) = scope_values(&c.scope);
    sqlx::query(
        "INSERT INTO connectors (id, account, org, project, scope_path, name, selectors, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(c.id.0)
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(path)
    .bind(c.name.as_str())
    .bind(Json(&c.selectors))
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(pool)
    .await
    .map_err(duplicate("connector", &c.name))?;
    Ok(())
}

pub(crate) async fn get_connector(pool: &PgPool, id: ConnectorId) -> StoreResult<Connector> {
    let row = sqlx::query("SELECT * FROM connectors WHERE id = $1")
        .bind(id.0)
        .fetch_one(pool)
        .await
        .map_err(not_found("connector"))?;
    rows::connector(&row)
}

pub(crate) async fn list_connectors(pool: &PgPool, scope: Option<&Scope>) -> StoreResult<Vec<Connector>> {
    let (a, o, p) = within(scope);
    let sql = format!(
        "SELECT * FROM connectors WHERE {} ORDER BY scope_path, name",
        within_sql(1)
    );
    let rows = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::connector).collect()
}

pub(crate) async fn update_connector(pool: &PgPool, c: &Connector) -> StoreResult<()> {
    let done = sqlx::query("UPDATE connectors SET name = $2, selectors = $3, updated_at = $4 WHERE id = $1")
        .bind(c.id.0)
        .bind(c.name.as_str())
        .bind(Json(&c.selectors))
        .bind(c.updated_at)
        .execute(pool)
        .await
        .map_err(duplicate("connector", &c.name))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("connector"));
    }
    Ok(())
}

pub(crate) async fn delete_connector(pool: &PgPool, id: ConnectorId) -> StoreResult<()> {
    let done = sqlx::query("DELETE FROM connectors WHERE id = $1")
        .bind(id.0)
        .execute(pool)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("connector"));
    }
    Ok(())
}

pub(crate) async fn record_last_success(pool: &PgPool, s: &LastSuccess) -> StoreResult<()> {
    // Only a newer success replaces the memory: reports can arrive out of order.
    sqlx::query(
        "INSERT INTO connector_last_success (connector_id, instance_id, group_id, succeeded_at)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (connector_id) DO UPDATE
           SET instance_id = EXCLUDED.instance_id, group_id = EXCLUDED.group_id, succeeded_at = EXCLUDED.succeeded_at
           WHERE connector_last_success.succeeded_at <= EXCLUDED.succeeded_at",
    )
    .bind(s.connector_id.0)
    .bind(s.instance_id.0)
    .bind(s.group_id.0)
    .bind(s.at)
    .execute(pool)
    .await
    .map_err(|e| match e {
        sqlx::Error::Database(ref db) if db.code().as_deref() == Some("23503") => StoreError::NotFound("connector"),
        e => map_err(e),
    })?;
    Ok(())
}

pub(crate) async fn last_success(pool: &PgPool, connector: ConnectorId) -> StoreResult<Option<LastSuccess>> {
    let row = sqlx::query("SELECT * FROM connector_last_success WHERE connector_id = $1")
        .bind(connector.0)
        .fetch_optional(pool)
        .await
        .map_err(map_err)?;
    row.map(|r| {
        Ok(LastSuccess {
            connector_id: ConnectorId(rows::get(&r, "connector_id")?),
            instance_id: InstanceId(rows::get(&r, "instance_id")?),
            group_id: GroupId(rows::get(&r, "group_id")?),
            at: rows::get(&r, "succeeded_at")?,
        })
    })
    .transpose()
}
