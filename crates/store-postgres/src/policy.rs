//! The fair sweep's read of the queue, and operators' policies per scope.

use sqlx::PgPool;
use sqlx::types::Json;
use switchboard_domain::policy::{RetryPolicy, ScopePolicy};
use switchboard_domain::{Scope, Task};
use switchboard_store::columns::{policy_filter, policy_key, policy_scope};
use switchboard_store::{StoreError, StoreResult};

use crate::map_err;
use crate::rows::{self, TASK_COLUMNS, get};

/// The shares with queued tasks after `after`, found by a walk of the share index (one
/// probe per share, however many tasks each holds), then the head of each by the same
/// index. Every comparison is by bytes (`COLLATE "C"`), as the index is.
pub(crate) async fn queue_heads(
    pool: &PgPool,
    after: Option<&Scope>,
    shares: u32,
    rows: u32,
) -> StoreResult<Vec<Task>> {
    const A: &str = r#"(account COLLATE "C")"#;
    const O: &str = r#"(coalesce(org, '') COLLATE "C")"#;
    const P: &str = r#"(coalesce(project, '') COLLATE "C")"#;
    let columns: String = TASK_COLUMNS
        .split(',')
        .map(|c| format!("h.{}", c.trim()))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "WITH RECURSIVE shares(a, o, p, n) AS (
             (SELECT {A}, {O}, {P}, 1 FROM tasks
              WHERE state = 'queued' AND ({A}, {O}, {P}) > ($1 COLLATE \"C\", $2 COLLATE \"C\", $3 COLLATE \"C\")
              ORDER BY 1, 2, 3 LIMIT 1)
             UNION ALL
             SELECT next.a, next.o, next.p, s.n + 1 FROM shares s CROSS JOIN LATERAL (
                 SELECT {A} AS a, {O} AS o, {P} AS p FROM tasks
                 WHERE state = 'queued' AND ({A}, {O}, {P}) > (s.a, s.o, s.p)
                 ORDER BY 1, 2, 3 LIMIT 1
             ) next
             WHERE s.n < $4
         )
         SELECT {columns} FROM shares s CROSS JOIN LATERAL (
             SELECT {TASK_COLUMNS}, queue_key FROM tasks
             WHERE state = 'queued' AND {A} = s.a AND {O} = s.o AND {P} = s.p
               AND (retry_at IS NULL OR retry_at <= $6)
             ORDER BY {A}, {O}, {P}, queue_key, id
             LIMIT greatest(2, $5 / greatest(1, (SELECT count(*) FROM shares)))
         ) h
         ORDER BY s.a, s.o, s.p, h.queue_key, h.id"
    );
    let (account, org, project) = after.map(policy_key).unwrap_or_default();
    let rows = sqlx::query(&sql)
        .bind(account)
        .bind(org)
        .bind(project)
        .bind(i64::from(shares))
        .bind(i64::from(rows))
        .bind(chrono::Utc::now())
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::task).collect()
}

pub(crate) async fn set_scope_policy(pool: &PgPool, p: &ScopePolicy) -> StoreResult<()> {
    let (account, org, project) = policy_key(&p.scope);
    sqlx::query(
        "INSERT INTO scope_policies (account, org, project, weight, retry, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6)
         ON CONFLICT (account, org, project) DO UPDATE
           SET weight = EXCLUDED.weight, retry = EXCLUDED.retry, updated_at = EXCLUDED.updated_at",
    )
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(p.weight.map(|w| i32::try_from(w).unwrap_or(i32::MAX)))
    .bind(p.retry.as_ref().map(Json))
    .bind(p.updated_at)
    .execute(pool)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn delete_scope_policy(pool: &PgPool, scope: &Scope) -> StoreResult<()> {
    let (account, org, project) = policy_key(scope);
    let done = sqlx::query("DELETE FROM scope_policies WHERE account = $1 AND org = $2 AND project = $3")
        .bind(account)
        .bind(org)
        .bind(project)
        .execute(pool)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("scope policy"));
    }
    Ok(())
}

pub(crate) async fn scope_policies(pool: &PgPool, within: Option<&Scope>) -> StoreResult<Vec<ScopePolicy>> {
    let (account, org, project) = policy_filter(within);
    let rows = sqlx::query(
        "SELECT account, org, project, weight, retry, updated_at FROM scope_policies
         WHERE ($1::text IS NULL OR account = $1) AND ($2::text IS NULL OR org = $2)
           AND ($3::text IS NULL OR project = $3)
         ORDER BY account, org, project",
    )
    .bind(account)
    .bind(org)
    .bind(project)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    rows.iter()
        .map(|row| {
            let key = |col: &str| get::<String>(row, col);
            let scope = policy_scope(&key("account")?, &key("org")?, &key("project")?)?;
            let weight: Option<i32> = get(row, "weight")?;
            let retry: Option<Json<RetryPolicy>> = get(row, "retry")?;
            Ok(ScopePolicy {
                scope,
                weight: weight.and_then(|w| u32::try_from(w).ok()),
                retry: retry.map(|r| r.0),
                updated_at: get(row, "updated_at")?,
            })
        })
        .collect()
}
