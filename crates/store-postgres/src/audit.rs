//! The audit log.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use switchboard_domain::AuditEntry;
use switchboard_store::query::MAX_PAGE;
use switchboard_store::{AuditQuery, StoreResult};

use crate::map_err;
use crate::rows::{self, within, within_sql};

pub(crate) async fn list_audit(pool: &PgPool, q: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
    // With a scope, `account = $1` also leaves out the admin key's entries (no account).
    let (a, o, p) = within(q.within.as_ref());
    let sql = format!(
        "SELECT * FROM audit_log
         WHERE {} AND ($4::uuid IS NULL OR key_id = $4) AND ($5::timestamptz IS NULL OR at >= $5)
           AND ($6::bigint IS NULL OR id < $6)
         ORDER BY id DESC LIMIT $7",
        within_sql(1)
    );
    let rows = sqlx::query(&sql)
        .bind(a)
        .bind(o)
        .bind(p)
        .bind(q.key_id.map(|k| k.0))
        .bind(q.since)
        .bind(q.before_id)
        .bind(i64::from(q.limit.clamp(1, MAX_PAGE)))
        .fetch_all(pool)
        .await
        .map_err(map_err)?;
    rows.iter().map(rows::audit_entry).collect()
}

pub(crate) async fn prune_audit(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM audit_log WHERE at < $1")
        .bind(before)
        .execute(pool)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}
