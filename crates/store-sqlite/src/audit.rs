//! The audit log.

use chrono::{DateTime, Utc};
use sqlx::{QueryBuilder, Sqlite};
use switchboard_domain::AuditEntry;
use switchboard_store::query::MAX_PAGE;
use switchboard_store::{AuditQuery, StoreResult};

use crate::rows::{self, AUDIT_COLUMNS, ms};
use crate::{Db, map_err};

pub(crate) async fn list_audit(db: &Db, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
    let mut q = QueryBuilder::<Sqlite>::new(format!("SELECT {AUDIT_COLUMNS} FROM audit_log WHERE 1 = 1"));
    // With a scope, `account = ?` also leaves out the admin key's entries (no account).
    rows::push_within(&mut q, query.within.as_ref());
    if let Some(key) = query.key_id {
        q.push(" AND key_id = ").push_bind(key.0);
    }
    if let Some(since) = query.since {
        q.push(" AND at >= ").push_bind(ms(since));
    }
    if let Some(before) = query.before_id {
        q.push(" AND id < ").push_bind(before);
    }
    q.push(" ORDER BY id DESC LIMIT ")
        .push_bind(i64::from(query.limit.clamp(1, MAX_PAGE)));
    let found = q.build().fetch_all(&db.reader).await.map_err(map_err)?;
    found.iter().map(rows::audit_entry).collect()
}

pub(crate) async fn prune_audit(db: &Db, before: DateTime<Utc>) -> StoreResult<u64> {
    let done = sqlx::query("DELETE FROM audit_log WHERE at < ?")
        .bind(ms(before))
        .execute(&db.writer)
        .await
        .map_err(map_err)?;
    Ok(done.rows_affected())
}
