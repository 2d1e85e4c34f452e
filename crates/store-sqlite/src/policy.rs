//! The fair sweep's read of the queue, and operators' policies per scope.

use sqlx::Row;
use switchboard_domain::policy::{RetryPolicy, ScopePolicy};
use switchboard_domain::{Scope, Task};
use switchboard_store::columns::{policy_filter, policy_key, policy_scope};
use switchboard_store::{StoreError, StoreResult};

use crate::rows::{self, TASK_COLUMNS, from_ms, ms, to_json};
use crate::{Db, map_err};

/// The shares with queued tasks after `after` (one probe of the share index each), then
/// the head of each by the same index. SQLite compares text by bytes.
pub(crate) async fn queue_heads(db: &Db, after: Option<&Scope>, shares: u32, rows: u32) -> StoreResult<Vec<Task>> {
    let mut next = after.map(policy_key).unwrap_or_default();
    let mut found = Vec::new();
    for _ in 0..shares {
        // The literal `state = 'queued'` lets SQLite use the partial index.
        let share: Option<(String, String, String)> = sqlx::query_as(
            "SELECT account, ifnull(org, ''), ifnull(project, '') FROM tasks WHERE state = 'queued' \
             AND (account, ifnull(org, ''), ifnull(project, '')) > (?, ?, ?) \
             ORDER BY account, ifnull(org, ''), ifnull(project, '') LIMIT 1",
        )
        .bind(&next.0)
        .bind(&next.1)
        .bind(&next.2)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?;
        let Some(share) = share else { break };
        next = share.clone();
        found.push(share);
    }
    let per_share = (rows / u32::try_from(found.len()).unwrap_or(u32::MAX).max(1)).max(2);
    let now = ms(chrono::Utc::now());
    let mut heads = Vec::new();
    for share in &found {
        let rows = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks WHERE state = 'queued' \
             AND account = ? AND ifnull(org, '') = ? AND ifnull(project, '') = ? \
             AND (retry_at IS NULL OR retry_at <= ?) \
             ORDER BY account, ifnull(org, ''), ifnull(project, ''), queue_key, id LIMIT ?"
        ))
        .bind(&share.0)
        .bind(&share.1)
        .bind(&share.2)
        .bind(now)
        .bind(i64::from(per_share))
        .fetch_all(&db.reader)
        .await
        .map_err(map_err)?;
        for row in &rows {
            heads.push(rows::task(row)?);
        }
    }
    Ok(heads)
}

pub(crate) async fn set_scope_policy(db: &Db, p: &ScopePolicy) -> StoreResult<()> {
    let (account, org, project) = policy_key(&p.scope);
    let retry = p.retry.as_ref().map(to_json).transpose()?;
    sqlx::query(
        "INSERT INTO scope_policies (account, org, project, weight, retry, updated_at) VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (account, org, project) DO UPDATE SET \
         weight = excluded.weight, retry = excluded.retry, updated_at = excluded.updated_at",
    )
    .bind(account)
    .bind(org)
    .bind(project)
    .bind(p.weight.map(i64::from))
    .bind(retry)
    .bind(ms(p.updated_at))
    .execute(&db.writer)
    .await
    .map_err(map_err)?;
    Ok(())
}

pub(crate) async fn delete_scope_policy(db: &Db, scope: &Scope) -> StoreResult<()> {
    let (account, org, project) = policy_key(scope);
    let done = sqlx::query("DELETE FROM scope_policies WHERE account = ? AND org = ? AND project = ?")
        .bind(account)
        .bind(org)
        .bind(project)
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NotFound("scope policy"));
    }
    Ok(())
}

pub(crate) async fn scope_policies(db: &Db, within: Option<&Scope>) -> StoreResult<Vec<ScopePolicy>> {
    let (account, org, project) = policy_filter(within);
    let found = sqlx::query(
        "SELECT account, org, project, weight, retry, updated_at FROM scope_policies \
         WHERE (?1 IS NULL OR account = ?1) AND (?2 IS NULL OR org = ?2) AND (?3 IS NULL OR project = ?3) \
         ORDER BY account, org, project",
    )
    .bind(account)
    .bind(org)
    .bind(project)
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    let corrupt = |what: &str, e: String| StoreError::Internal(format!("corrupt scope policy {what}: {e}"));
    found
        .iter()
        .map(|row| {
            let key = |col: &str| row.try_get::<String, _>(col).map_err(map_err);
            let scope = policy_scope(&key("account")?, &key("org")?, &key("project")?)?;
            let weight: Option<i64> = row.try_get("weight").map_err(map_err)?;
            let retry: Option<String> = row.try_get("retry").map_err(map_err)?;
            let retry: Option<RetryPolicy> = retry
                .map(|r| serde_json::from_str(&r).map_err(|e| corrupt("retry", e.to_string())))
                .transpose()?;
            Ok(ScopePolicy {
                scope,
                weight: weight.and_then(|w| u32::try_from(w).ok()),
                retry,
                updated_at: from_ms("updated_at", row.try_get("updated_at").map_err(map_err)?)?,
            })
        })
        .collect()
}
