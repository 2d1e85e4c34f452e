//! Builders for the conformance cases: valid domain values with sensible defaults.

use std::sync::Arc;

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use switchboard_domain::task::limits;
use switchboard_domain::{
    Capacity, DelegateGroup, DelegateInstance, DelegateToken, GroupId, Ident, ImageFlavour, InstanceId, NewTask, Scope,
    Secret, SecretKind, Selector, Selectors, TaskId, TaskType, TokenId, TokenStatus,
};

use crate::Store;

/// Now, to the millisecond: every backend keeps at least that precision, so values
/// round-trip exactly.
pub fn now() -> DateTime<Utc> {
    Utc::now()
        .duration_trunc(TimeDelta::milliseconds(1))
        .expect("truncation to 1 ms cannot overflow")
}

pub fn ident(s: &str) -> Ident {
    Ident::parse(s).expect("fixture identifiers are valid")
}

pub fn scope(path: &str) -> Scope {
    Scope::parse_path(path).expect("fixture scopes are valid")
}

pub fn selectors(tags: &[&str]) -> Selectors {
    tags.iter()
        .map(|t| Selector::parse(t).expect("fixture selectors are valid"))
        .collect()
}

/// A fresh random secret of `kind` (the randomness comes from UUIDv4s: good enough for
/// tests, and it keeps the store crate free of an RNG dependency).
pub fn secret(kind: SecretKind) -> Secret {
    let mut bytes = [0u8; 32];
    bytes[..16].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    Secret::from_random(kind, bytes)
}

pub fn token(scope_path: &str, name: &str) -> DelegateToken {
    DelegateToken {
        id: TokenId::new(),
        name: ident(name),
        scope: scope(scope_path),
        status: TokenStatus::Active,
        created_at: now(),
        revoked_at: None,
        jit: None,
    }
}

/// Stores a token, a group and `n` instances of `capacity` in `scope_path`.
pub async fn fleet(
    store: &Arc<dyn Store>,
    scope_path: &str,
    group: &str,
    n: usize,
    capacity: u32,
) -> (DelegateGroup, Vec<DelegateInstance>) {
    let t = token(scope_path, &format!("{group}-token"));
    store
        .create_token(&t, &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("token stored");
    let g = store
        .upsert_group(&scope(scope_path), &ident(group), &selectors(&["linux"]), now())
        .await
        .expect("group");
    let mut instances = Vec::with_capacity(n);
    for k in 0..n {
        let i = instance(g.id, t.id, &format!("{group}-host-{k}"), capacity);
        store
            .register_instance(&i, &secret(SecretKind::Session).hash())
            .await
            .expect("instance stored");
        instances.push(i);
    }
    (g, instances)
}

pub fn instance(group: GroupId, token: TokenId, hostname: &str, capacity: u32) -> DelegateInstance {
    let at = now();
    DelegateInstance {
        id: InstanceId::new(),
        group_id: group,
        token_id: token,
        hostname: hostname.to_owned(),
        version: "1.2.3".to_owned(),
        flavour: ImageFlavour::Minimal,
        tags: selectors(&["gpu"]),
        task_types: vec![TaskType(ident("echo")), TaskType(ident("http_check"))],
        capacity: Capacity::new(capacity).expect("fixture capacity is valid"),
        active_tasks: 0,
        registered_at: at,
        last_heartbeat_at: at,
        connected: true,
        paused: None,
        draining: false,
        max_tasks: None,
        tasks_taken: 0,
    }
}

pub fn task(scope_path: &str) -> NewTask {
    NewTask {
        id: TaskId::new(),
        scope: scope(scope_path),
        task_type: TaskType(ident("echo")),
        payload: serde_json::json!({"message": "hello"}),
        selectors: Selectors::new(),
        connector_id: None,
        capabilities: vec![],
        priority: 0,
        assign_timeout: limits::DEFAULT_ASSIGN_TIMEOUT,
        execution_timeout: limits::DEFAULT_EXECUTION_TIMEOUT,
        max_attempts: 1,
        wait_for_delegate: false,
        idempotency: None,
        concurrency: None,
        retry: None,
        secrets: Vec::new(),
        created_at: now(),
    }
}

/// Stores a task and returns it as stored.
pub async fn queued(store: &Arc<dyn Store>, t: NewTask) -> switchboard_domain::Task {
    store.insert_task(&t).await.expect("task stored").task().clone()
}
