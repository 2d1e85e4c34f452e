//! Conformance cases for the audit log.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use switchboard_domain::{ApiKeyId, AuditEntry};

use super::fixtures::{now, scope};
use crate::{AuditQuery, Store};

/// An entry made with `key` (scoped at `key_scope`), or with the admin key when `None`.
fn entry(at: DateTime<Utc>, key: Option<(ApiKeyId, &str)>, path: &str, status: u16) -> AuditEntry {
    AuditEntry {
        id: 0,
        at,
        actor: match key {
            Some((_, s)) => format!("API key for {s}"),
            None => "admin key".into(),
        },
        key_id: key.map(|(id, _)| id),
        key_scope: key.map(|(_, s)| scope(s)),
        method: "POST".into(),
        route: "/api/v1/tasks/{id}/cancel".into(),
        path: path.into(),
        status,
        remote: key.map(|_| "192.0.2.7:40312".into()),
    }
}

fn query() -> AuditQuery {
    AuditQuery {
        limit: 100,
        ..AuditQuery::default()
    }
}

async fn ids(store: &Arc<dyn Store>, q: AuditQuery) -> Vec<i64> {
    store
        .list_audit(&q)
        .await
        .expect("listed")
        .iter()
        .map(|e| e.id)
        .collect()
}

pub async fn the_audit_log_lists_newest_first_filters_by_scope_and_key_and_prunes_by_age(store: Arc<dyn Store>) {
    let t = now();
    let (acme, eng, web, globex) = (ApiKeyId::new(), ApiKeyId::new(), ApiKeyId::new(), ApiKeyId::new());
    let written = [
        entry(t - TimeDelta::days(40), None, "/api/v1/keys", 201),
        entry(t - TimeDelta::seconds(1), Some((acme, "acme")), "/api/v1/tasks", 201),
        entry(t, Some((eng, "acme/eng")), "/api/v1/tasks/1/cancel", 200),
        entry(t, Some((web, "acme/eng/web")), "/api/v1/connectors/2", 204),
        entry(t, Some((globex, "globex")), "/api/v1/tasks", 201),
        entry(
            t + TimeDelta::seconds(1),
            Some((eng, "acme/eng")),
            "/api/v1/tasks/3/cancel",
            409,
        ),
        entry(t, None, "/api/v1/groups/4", 599),
    ];
    let mut stored = Vec::new();
    for e in &written {
        let s = store.append_audit(e).await.expect("appended");
        assert_eq!(AuditEntry { id: s.id, ..e.clone() }, s, "stored as given, with an id");
        stored.push(s);
    }
    assert!(stored.windows(2).all(|w| w[0].id < w[1].id), "ids increase");
    let id = |k: usize| stored[k].id;

    // Everything, newest first, every field round-tripped.
    let mut newest_first = stored.clone();
    newest_first.reverse();
    assert_eq!(store.list_audit(&query()).await.expect("listed"), newest_first);

    // Within a scope: the entries of keys at or below it, never the admin key's.
    let within = |s: &str| AuditQuery {
        within: Some(scope(s)),
        ..query()
    };
    assert_eq!(ids(&store, within("acme")).await, [id(5), id(3), id(2), id(1)]);
    assert_eq!(ids(&store, within("acme/eng")).await, [id(5), id(3), id(2)]);
    assert_eq!(ids(&store, within("acme/eng/web")).await, [id(3)]);
    assert_eq!(ids(&store, within("acme/ops")).await, Vec::<i64>::new());
    assert_eq!(ids(&store, within("globex")).await, [id(4)]);

    // By key, by time, and every filter together.
    let by_key = AuditQuery {
        key_id: Some(eng),
        ..query()
    };
    assert_eq!(ids(&store, by_key.clone()).await, [id(5), id(2)]);
    let since = AuditQuery {
        since: Some(t),
        ..query()
    };
    assert_eq!(ids(&store, since).await, [id(6), id(5), id(4), id(3), id(2)]);
    let all_filters = AuditQuery {
        within: Some(scope("acme")),
        since: Some(t + TimeDelta::seconds(1)),
        ..by_key
    };
    assert_eq!(ids(&store, all_filters).await, [id(5)]);

    // Pages: at most `limit` (at least one), the next one below the last id seen.
    let page = |before_id: Option<i64>, limit: u32| AuditQuery {
        before_id,
        limit,
        ..query()
    };
    assert_eq!(ids(&store, page(None, 2)).await, [id(6), id(5)]);
    assert_eq!(ids(&store, page(Some(id(5)), 2)).await, [id(4), id(3)]);
    assert_eq!(ids(&store, page(Some(id(1)), 2)).await, [id(0)]);
    assert_eq!(ids(&store, page(Some(id(0)), 2)).await, Vec::<i64>::new());
    assert_eq!(
        ids(&store, page(None, 0)).await,
        [id(6)],
        "a limit of 0 still lists one"
    );
    assert_eq!(ids(&store, page(None, u32::MAX)).await.len(), stored.len());

    // Pruning deletes what is older than the cutoff, and only that.
    let pruned = store.prune_audit(t - TimeDelta::days(30)).await.expect("pruned");
    assert_eq!(pruned, 1);
    assert_eq!(store.list_audit(&query()).await.expect("listed"), newest_first[..6]);
    assert_eq!(store.prune_audit(t - TimeDelta::days(30)).await.expect("pruned"), 0);

    // Ids keep increasing after a prune.
    let later = store.append_audit(&written[0]).await.expect("appended");
    assert!(later.id > id(6), "ids are never reused");
}
