//! Conformance cases for tokens, delegate groups and instances, connectors and API keys.

use std::sync::Arc;

use chrono::TimeDelta;
use switchboard_domain::{
    ApiKey, ApiKeyId, Connector, ConnectorId, Declaration, DelegateGroup, GroupId, LastSuccess, Permission, SecretKind,
    TaskType, TokenStatus,
};

use super::fixtures::{fleet, ident, instance, now, scope, secret, selectors, token};
use crate::{AdminKey, Conflict, Replicas, Store, StoreError};

pub async fn ready_after_migrations(store: Arc<dyn Store>) {
    store.check_ready().await.expect("a freshly migrated store is ready");
}

pub async fn a_lone_store_leads_and_keeps_the_lead(store: Arc<dyn Replicas>) {
    assert!(store.lead().await.expect("lead"), "the only manager of a store leads");
    assert!(store.lead().await.expect("lead"), "and keeps the lead while it lives");
}

pub async fn token_names_are_unique_per_account_and_tokens_are_found_by_secret(store: Arc<dyn Store>) {
    let t = token("acme", "prod");
    let s = secret(SecretKind::DelegateToken);
    store.create_token(&t, &s.hash()).await.expect("stored");

    let found = store
        .token_by_secret(&s.hash())
        .await
        .expect("lookup")
        .expect("found by its secret");
    assert_eq!(found, t);
    assert_eq!(store.get_token(t.id).await.expect("by id"), t);
    let other = secret(SecretKind::DelegateToken);
    assert_eq!(store.token_by_secret(&other.hash()).await.expect("lookup"), None);

    // The same name in the same account is refused, even at another level of the account.
    let dup = token("acme/eng", "prod");
    let err = store
        .create_token(&dup, &secret(SecretKind::DelegateToken).hash())
        .await
        .unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Duplicate { .. })),
        "{err:?}"
    );
    // The same name in another account is fine.
    store
        .create_token(&token("globex", "prod"), &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("stored");
    assert!(matches!(
        store.get_token(switchboard_domain::TokenId::new()).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn revoking_a_token_is_recorded_once(store: Arc<dyn Store>) {
    let t = token("acme", "ci");
    store
        .create_token(&t, &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("stored");
    let at = now();
    let revoked = store.revoke_token(t.id, at).await.expect("revoked");
    assert_eq!((revoked.status, revoked.revoked_at), (TokenStatus::Revoked, Some(at)));
    let again = store
        .revoke_token(t.id, at + TimeDelta::seconds(5))
        .await
        .expect("revoking again is harmless");
    assert_eq!(again.revoked_at, Some(at), "the first revocation time is kept");
    assert_eq!(store.list_tokens(None).await.expect("list"), vec![again]);
}

pub async fn groups_are_joined_by_name_within_a_scope(store: Arc<dyn Store>) {
    let at = now();
    let first = store
        .upsert_group(&scope("acme/eng"), &ident("k8s"), &selectors(&["a"]), at)
        .await
        .expect("created");
    let joined = store
        .upsert_group(&scope("acme/eng"), &ident("k8s"), &selectors(&["b"]), at)
        .await
        .expect("joined");
    assert_eq!(first, joined, "joining keeps the group and its tags");
    assert_eq!(first.tags, selectors(&["a"]));
    let elsewhere = store
        .upsert_group(&scope("acme"), &ident("k8s"), &selectors(&[]), at)
        .await
        .expect("created");
    assert_ne!(
        elsewhere.id, first.id,
        "the same name in another scope is another group"
    );
    assert_eq!(store.get_group(first.id).await.expect("by id"), first);
}

pub async fn concurrent_registrations_join_one_group(store: Arc<dyn Store>) {
    let at = now();
    let joins = (0..8).map(|_| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .upsert_group(&scope("acme"), &ident("edge"), &selectors(&[]), at)
                .await
        })
    });
    let groups: Vec<_> = futures::future::join_all(joins)
        .await
        .into_iter()
        .map(|r| r.expect("no panic").expect("upsert"))
        .collect();
    assert!(
        groups.iter().all(|g| g.id == groups[0].id),
        "every replica joined the one group"
    );
    assert_eq!(store.list_groups(None).await.expect("list").len(), 1);
}

pub async fn scope_filters_return_what_lies_at_or_below(store: Arc<dyn Store>) {
    let at = now();
    for (path, name) in [
        ("acme", "a"),
        ("acme/eng", "b"),
        ("acme/eng/web", "c"),
        ("acme/ops", "d"),
        ("globex", "e"),
    ] {
        store
            .upsert_group(&scope(path), &ident(name), &selectors(&[]), at)
            .await
            .expect("created");
    }
    let names = |groups: Vec<switchboard_domain::DelegateGroup>| {
        let mut n: Vec<String> = groups.into_iter().map(|g| g.name.to_string()).collect();
        n.sort();
        n
    };
    assert_eq!(
        names(store.list_groups(None).await.expect("list")),
        ["a", "b", "c", "d", "e"]
    );
    assert_eq!(
        names(store.list_groups(Some(&scope("acme"))).await.expect("list")),
        ["a", "b", "c", "d"]
    );
    assert_eq!(
        names(store.list_groups(Some(&scope("acme/eng"))).await.expect("list")),
        ["b", "c"]
    );
    assert_eq!(
        names(store.list_groups(Some(&scope("acme/eng/web"))).await.expect("list")),
        ["c"]
    );
    assert!(
        store
            .list_groups(Some(&scope("initech")))
            .await
            .expect("list")
            .is_empty()
    );
}

pub async fn instances_round_trip_and_are_found_by_session(store: Arc<dyn Store>) {
    let (group, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let session = secret(SecretKind::Session);
    let t = token("acme", "extra");
    store
        .create_token(&t, &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("token");
    let mine = instance(group.id, t.id, "Node-9", 7);
    store
        .register_instance(&mine, &session.hash())
        .await
        .expect("registered");

    assert_eq!(store.get_instance(mine.id).await.expect("by id"), mine);
    assert_eq!(
        store.instance_by_session(&session.hash()).await.expect("lookup"),
        Some(mine.clone())
    );
    let listed = store.list_instances(Some(group.id)).await.expect("list");
    assert_eq!(listed.len(), 3);
    assert!(listed.contains(&instances[0]) && listed.contains(&mine));

    store
        .set_instance_connected(mine.id, false)
        .await
        .expect("disconnected");
    assert!(!store.get_instance(mine.id).await.expect("by id").connected);
    let unknown = store
        .set_instance_connected(switchboard_domain::InstanceId::new(), true)
        .await;
    assert!(matches!(unknown, Err(StoreError::NotFound(_))), "{unknown:?}");
    // An instance of a group that does not exist is refused by the schema.
    let orphan = instance(switchboard_domain::GroupId::new(), t.id, "x", 1);
    assert!(
        store
            .register_instance(&orphan, &secret(SecretKind::Session).hash())
            .await
            .is_err()
    );
}

pub async fn heartbeats_are_written_in_one_batch_and_never_go_back(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 3, 5).await;
    let base = instances[0].last_heartbeat_at;
    let later = base + TimeDelta::seconds(30);
    let latest = base + TimeDelta::seconds(60);
    let beats = vec![
        (instances[0].id, later),
        (instances[1].id, latest),
        (instances[0].id, latest), // two beats of one instance in a batch: the newest wins
        (instances[2].id, instances[2].last_heartbeat_at - TimeDelta::seconds(60)), // an old beat: ignored
        (switchboard_domain::InstanceId::new(), later), // unknown: ignored
    ];
    let updated = store.record_heartbeats(&beats).await.expect("batch written");
    assert!(updated >= 2, "the known instances were updated, got {updated}");
    let at = |i: usize| {
        let store = store.clone();
        let id = instances[i].id;
        async move { store.get_instance(id).await.expect("by id").last_heartbeat_at }
    };
    assert_eq!(at(0).await, latest);
    assert_eq!(at(1).await, latest);
    assert_eq!(
        at(2).await,
        instances[2].last_heartbeat_at,
        "an older heartbeat never moves time backwards"
    );
    assert_eq!(store.record_heartbeats(&[]).await.expect("empty batch"), 0);
}

pub async fn instance_counts_agree_with_the_listed_instances(store: Arc<dyn Store>) {
    let (_, instances) = fleet(&store, "acme", "k8s", 4, 5).await;
    let base = instances[0].last_heartbeat_at;
    // 0 beats later than the bound; 1 is let go; 2 and 3 keep their registration's beat.
    store
        .record_heartbeats(&[(instances[0].id, base + TimeDelta::seconds(60))])
        .await
        .expect("beat");
    store
        .set_instance_connected(instances[1].id, false)
        .await
        .expect("let go");
    let bound = base + TimeDelta::seconds(30);
    let counts = store.instance_counts(bound).await.expect("counted");
    // The same rule over the rows `list_instances` reads.
    let listed = store.list_instances(None).await.expect("listed");
    let mut stale: Vec<_> = listed
        .iter()
        .filter(|i| i.connected && i.last_heartbeat_at < bound)
        .map(|i| i.id)
        .collect();
    let fresh = listed
        .iter()
        .filter(|i| i.connected && i.last_heartbeat_at >= bound)
        .count();
    let disconnected = listed.iter().filter(|i| !i.connected).count();
    let mut counted_stale = counts.stale.clone();
    stale.sort_unstable();
    counted_stale.sort_unstable();
    assert_eq!(counts.fresh, fresh as u64, "{counts:?} against {listed:#?}");
    assert_eq!(counted_stale, stale);
    assert_eq!(counts.disconnected, disconnected as u64);
    assert_eq!(
        counts.fresh + counts.stale.len() as u64 + counts.disconnected,
        4,
        "every instance counted once"
    );
    assert!(
        !counts.stale.contains(&instances[1].id),
        "a let-go instance is not stale"
    );
    assert!(counts.disconnected >= 1);
}

pub async fn group_changes_and_deletion_cascade_to_instances(store: Arc<dyn Store>) {
    let (group, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let tagged = store
        .set_group_tags(group.id, &selectors(&["x", "y"]))
        .await
        .expect("tags set");
    assert_eq!(tagged.tags, selectors(&["x", "y"]));
    let disabled = store.set_group_disabled(group.id, true).await.expect("disabled");
    assert!(disabled.disabled);
    assert_eq!(store.get_group(group.id).await.expect("by id"), disabled);

    store.delete_group(group.id).await.expect("deleted");
    assert!(matches!(store.get_group(group.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.get_instance(instances[0].id).await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store.delete_group(group.id).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn a_declared_group_round_trips_is_joined_by_name_and_outlives_the_empty_group_sweep(store: Arc<dyn Store>) {
    let declared = DelegateGroup {
        id: GroupId::new(),
        scope: scope("acme/payments"),
        name: ident("k8s-prod"),
        tags: selectors(&["gpu"]),
        disabled: false,
        created_at: now() - TimeDelta::days(30),
        declared: Some(Declaration {
            task_types: vec![TaskType(ident("deploy"))],
            max_instances: Some(10),
        }),
        paused: None,
    };
    store.declare_group(&declared).await.expect("declared");
    assert_eq!(store.get_group(declared.id).await.expect("get"), declared);
    assert_eq!(
        store.list_groups(Some(&scope("acme"))).await.expect("list"),
        vec![declared.clone()]
    );

    // Its name is taken in its scope: declaring it again is a conflict, and registration
    // (upsert by name) joins the declared group rather than making another.
    let again = DelegateGroup {
        id: GroupId::new(),
        ..declared.clone()
    };
    match store.declare_group(&again).await {
        Err(StoreError::Conflict(Conflict::Duplicate { what, name })) => {
            assert_eq!((what, name.as_str()), ("delegate", "k8s-prod"));
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
    let joined = store
        .upsert_group(&declared.scope, &declared.name, &selectors(&[]), now())
        .await
        .expect("joined");
    assert_eq!(joined, declared, "the declared group, declaration and tags kept");

    // Empty for a month, long past any retention: a group registration made would go,
    // the declared one stays.
    let plain = store
        .upsert_group(
            &scope("acme"),
            &ident("old"),
            &selectors(&[]),
            now() - TimeDelta::days(30),
        )
        .await
        .expect("a plain group");
    let gone = store.remove_empty_groups(now()).await.expect("swept");
    assert_eq!(gone, vec![plain.id]);
    assert_eq!(store.get_group(declared.id).await.expect("still there"), declared);
}

pub async fn silent_instances_and_long_empty_groups_are_removed(store: Arc<dyn Store>) {
    let (group, instances) = fleet(&store, "acme", "k8s", 4, 5).await;
    let (other_group, others) = fleet(&store, "acme", "edge", 1, 5).await;
    let registered = instances[0].last_heartbeat_at;
    let cutoff = registered + TimeDelta::hours(6);
    // instances[0]: silent and disconnected: removed. [1]: beat recently: kept.
    // [2]: silent but still connected: kept. [3]: silent but holds a task: kept.
    store
        .set_instance_connected(instances[0].id, false)
        .await
        .expect("disconnected");
    store
        .record_heartbeats(&[(instances[1].id, cutoff + TimeDelta::minutes(1))])
        .await
        .expect("beat");
    store
        .set_instance_connected(instances[3].id, false)
        .await
        .expect("disconnected");
    let t = super::fixtures::queued(&store, super::fixtures::task("acme")).await;
    store.claim_task(t.id(), instances[3].id, now()).await.expect("claimed");
    store
        .set_instance_connected(others[0].id, false)
        .await
        .expect("disconnected");

    let swept_at = cutoff + TimeDelta::minutes(2);
    let mut removed = store.remove_silent_instances(cutoff, swept_at).await.expect("swept");
    removed.sort();
    let mut expected = vec![instances[0].id, others[0].id];
    expected.sort();
    assert_eq!(removed, expected);
    assert_eq!(store.list_instances(Some(group.id)).await.expect("list").len(), 3);

    // The sweep passes `now - retention` as the cutoff: a group emptied after the cutoff
    // is kept, one emptied before it goes.
    assert!(
        store
            .remove_empty_groups(swept_at - TimeDelta::minutes(1))
            .await
            .expect("swept")
            .is_empty()
    );
    let gone = store
        .remove_empty_groups(swept_at + TimeDelta::minutes(1))
        .await
        .expect("swept");
    assert_eq!(gone, vec![other_group.id], "only the group without instances goes");
    assert!(store.get_group(group.id).await.is_ok());
    assert!(matches!(
        store.get_group(other_group.id).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn connectors_have_unique_names_per_scope(store: Arc<dyn Store>) {
    let at = now();
    let mut c = Connector {
        id: ConnectorId::new(),
        scope: scope("acme/eng"),
        name: ident("prod-cluster"),
        selectors: selectors(&["k8s"]),
        created_at: at,
        updated_at: at,
    };
    store.create_connector(&c).await.expect("created");
    assert_eq!(store.get_connector(c.id).await.expect("by id"), c);
    let dup = Connector {
        id: ConnectorId::new(),
        ..c.clone()
    };
    let err = store.create_connector(&dup).await.unwrap_err();
    assert!(
        matches!(err, StoreError::Conflict(Conflict::Duplicate { .. })),
        "{err:?}"
    );
    let other_scope = Connector {
        id: ConnectorId::new(),
        scope: scope("acme"),
        ..c.clone()
    };
    store
        .create_connector(&other_scope)
        .await
        .expect("same name in another scope");

    c.selectors = selectors(&["k8s", "eu"]);
    c.updated_at = at + TimeDelta::seconds(1);
    store.update_connector(&c).await.expect("updated");
    assert_eq!(store.get_connector(c.id).await.expect("by id"), c);
    assert_eq!(
        store.list_connectors(Some(&scope("acme/eng"))).await.expect("list"),
        vec![c.clone()]
    );
    assert_eq!(
        store.list_connectors(Some(&scope("acme"))).await.expect("list").len(),
        2
    );

    store.delete_connector(c.id).await.expect("deleted");
    assert!(matches!(store.get_connector(c.id).await, Err(StoreError::NotFound(_))));
    assert!(matches!(store.update_connector(&c).await, Err(StoreError::NotFound(_))));
}

pub async fn last_success_keeps_the_newest(store: Arc<dyn Store>) {
    let (group, instances) = fleet(&store, "acme", "k8s", 2, 5).await;
    let at = now();
    let c = Connector {
        id: ConnectorId::new(),
        scope: scope("acme"),
        name: ident("cluster"),
        selectors: selectors(&[]),
        created_at: at,
        updated_at: at,
    };
    store.create_connector(&c).await.expect("created");
    assert_eq!(store.last_success(c.id).await.expect("lookup"), None);
    let newer = LastSuccess {
        connector_id: c.id,
        instance_id: instances[1].id,
        group_id: group.id,
        at,
    };
    let older = LastSuccess {
        instance_id: instances[0].id,
        at: at - TimeDelta::seconds(10),
        ..newer
    };
    store.record_last_success(&newer).await.expect("recorded");
    store
        .record_last_success(&older)
        .await
        .expect("an older report is accepted but changes nothing");
    assert_eq!(store.last_success(c.id).await.expect("lookup"), Some(newer));
}

pub async fn api_keys_round_trip_and_revoke(store: Arc<dyn Store>) {
    let key = ApiKey {
        id: ApiKeyId::new(),
        name: ident("pipeline"),
        scope: scope("acme/eng"),
        permissions: [Permission::PipelinesExecute].into_iter().collect(),
        created_at: now(),
        revoked_at: None,
    };
    let s = secret(SecretKind::ApiKey);
    store.create_api_key(&key, &s.hash()).await.expect("stored");
    let found = store
        .api_key_by_secret(&s.hash())
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found, key);
    assert!(found.permissions.contains(Permission::DelegatesView));
    assert_eq!(
        store.list_api_keys(Some(&scope("acme"))).await.expect("list"),
        vec![key.clone()]
    );
    assert!(
        store
            .list_api_keys(Some(&scope("acme/ops")))
            .await
            .expect("list")
            .is_empty()
    );
    let at = now();
    assert_eq!(
        store.revoke_api_key(key.id, at).await.expect("revoked").revoked_at,
        Some(at)
    );
    assert!(matches!(
        store.revoke_api_key(ApiKeyId::new(), at).await,
        Err(StoreError::NotFound(_))
    ));
}

pub async fn an_admin_key_is_generated_once_on_a_fresh_store(store: Arc<dyn Store>) {
    // Replicas starting together: each offers its own candidate, exactly one is stored
    // and the others are handed its hash.
    let candidates: Vec<_> = (0..4).map(|_| secret(SecretKind::AdminKey)).collect();
    let answers = futures::future::join_all(candidates.iter().map(|c| {
        let store = store.clone();
        let hash = c.hash();
        async move { store.bootstrap_admin_key(&hash, now()).await.expect("bootstrap") }
    }))
    .await;
    let winners: Vec<usize> = (0..answers.len())
        .filter(|&i| answers[i] == AdminKey::Created)
        .collect();
    assert_eq!(winners.len(), 1, "{answers:?}");
    let stored = candidates[winners[0]].hash();
    for (i, answer) in answers.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(answer, &AdminKey::Existing(stored));
        }
    }
    // A later start, even once the store is in use, finds the same key.
    store
        .create_token(&token("acme", "prod"), &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("stored");
    let later = secret(SecretKind::AdminKey);
    assert_eq!(
        store
            .bootstrap_admin_key(&later.hash(), now())
            .await
            .expect("bootstrap"),
        AdminKey::Existing(stored)
    );
}

pub async fn no_admin_key_is_generated_on_a_store_in_use(store: Arc<dyn Store>) {
    store
        .create_token(&token("acme", "prod"), &secret(SecretKind::DelegateToken).hash())
        .await
        .expect("stored");
    let candidate = secret(SecretKind::AdminKey);
    assert_eq!(
        store
            .bootstrap_admin_key(&candidate.hash(), now())
            .await
            .expect("bootstrap"),
        AdminKey::NotFresh
    );
}
