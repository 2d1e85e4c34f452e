//! Conformance cases for the secrets tasks use: unique names per scope, lookups by name
//! across an account and by id, replacement fenced by version, deletion.

use std::sync::Arc;

use chrono::TimeDelta;
use switchboard_domain::SecretId;
use switchboard_domain::vault::{SecretReference, SecretSource, TaskSecret};

use super::fixtures::{ident, now, scope};
use crate::{Conflict, Store, StoreError};

fn secret(path: &str, name: &str, source: SecretSource) -> TaskSecret {
    let at = now();
    TaskSecret {
        id: SecretId::new(),
        scope: scope(path),
        name: ident(name),
        description: format!("{name} of {path}"),
        source,
        version: 1,
        created_at: at,
        updated_at: at,
    }
}

fn sealed(bytes: &[u8]) -> SecretSource {
    SecretSource::Sealed(bytes.to_vec())
}

pub async fn secrets_round_trip_are_unique_per_scope_and_are_found_by_name_and_id(store: Arc<dyn Store>) {
    let account = secret("acme", "db", sealed(&[1, 2, 3, 0, 255]));
    let org = secret(
        "acme/eng",
        "db",
        SecretSource::Reference(SecretReference::parse("env:DB").unwrap()),
    );
    let other = secret("acme/eng", "api", sealed(b"x"));
    let elsewhere = secret("globex", "db", sealed(b"y"));
    for s in [&account, &org, &other, &elsewhere] {
        store.create_secret(s).await.expect("stored");
    }
    assert_eq!(store.get_secret(account.id).await.unwrap(), account);
    assert_eq!(store.get_secret(org.id).await.unwrap(), org);
    let taken = store
        .create_secret(&secret("acme/eng", "db", sealed(b"z")))
        .await
        .unwrap_err();
    assert!(
        matches!(taken, StoreError::Conflict(Conflict::Duplicate { what: "secret", .. })),
        "{taken:?}"
    );

    let mut named = store
        .secrets_named(&ident("acme"), &[ident("db"), ident("nope")])
        .await
        .unwrap();
    named.sort_by_key(|s| s.scope.path());
    assert_eq!(named, vec![account.clone(), org.clone()], "both scopes, one account");
    assert!(store.secrets_named(&ident("acme"), &[]).await.unwrap().is_empty());
    let by_id = store.secrets_by_id(&[other.id, SecretId::new()]).await.unwrap();
    assert_eq!(by_id, vec![other.clone()]);

    let within_eng: Vec<SecretId> = store
        .list_secrets(Some(&scope("acme/eng")))
        .await
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(within_eng, vec![other.id, org.id], "by scope, then name");
    assert_eq!(store.list_secrets(None).await.unwrap().len(), 4);

    // A replacement names the next version; a stale one is refused and changes nothing.
    let mut next = org.clone();
    next.source = sealed(b"sealed v2");
    next.version = 2;
    next.updated_at = org.updated_at + TimeDelta::seconds(1);
    store.replace_secret(&next).await.expect("replaced");
    assert_eq!(store.get_secret(org.id).await.unwrap(), next);
    let stale = store.replace_secret(&next).await.unwrap_err();
    assert!(
        matches!(stale, StoreError::Conflict(Conflict::Changed("secret"))),
        "{stale:?}"
    );
    let mut unknown = next.clone();
    unknown.id = SecretId::new();
    assert!(matches!(
        store.replace_secret(&unknown).await.unwrap_err(),
        StoreError::NotFound("secret")
    ));

    store.delete_secret(account.id).await.expect("deleted");
    assert!(matches!(
        store.get_secret(account.id).await.unwrap_err(),
        StoreError::NotFound("secret")
    ));
    assert!(matches!(
        store.delete_secret(account.id).await.unwrap_err(),
        StoreError::NotFound("secret")
    ));
}
