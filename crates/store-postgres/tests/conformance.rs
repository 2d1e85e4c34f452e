//! The store conformance suite against a real PostgreSQL, and the cases only this backend
//! has (`pooled`, `leases`).
//!
//! The database comes from `DATABASE_URL`; each test gets its own schema (dropped by a
//! later run once it is an hour old, so a failed run leaves nothing for long). Without
//! `DATABASE_URL`, or with PostgreSQL unreachable, the suite is skipped with a notice on
//! the terminal, unless `CI=true`: then it fails loudly, because CI must run it.

#![allow(clippy::unwrap_used)]

mod leases;
mod pooled;

use std::io::Write;
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection;
use sqlx::postgres::{PgConnectOptions, PgConnection};
use switchboard_store::Store;
use switchboard_store_postgres::{PgOptions, PgStore};

static SKIP_NOTICE: Once = Once::new();

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Skips (with one notice written straight to the terminal, past the test harness's
/// output capture) or, under CI, fails.
fn skip<T>(reason: &str) -> Option<T> {
    if in_ci() {
        panic!("CI=true requires the PostgreSQL suite, but {reason}");
    }
    SKIP_NOTICE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "\n*** PostgreSQL conformance suite SKIPPED: {reason}. \
             Set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test to run it. ***\n"
        );
    });
    None
}

async fn fresh_store() -> Option<Arc<dyn Store>> {
    let options = fresh_schema().await?;
    let store = PgStore::connect_with(
        options,
        &PgOptions {
            max_connections: 8,
            ..PgOptions::default()
        },
    )
    .await
    .expect("the store connects and migrates a fresh schema");
    Some(Arc::new(store))
}

/// Connection options for a new, empty schema of its own (`None`: skip, see [`skip`]).
pub(crate) async fn fresh_schema() -> Option<PgConnectOptions> {
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return skip("DATABASE_URL is not set");
    };
    let options: PgConnectOptions = url.parse().expect("DATABASE_URL is a valid PostgreSQL URL");
    let mut admin = match PgConnection::connect_with(&options).await {
        Ok(c) => c,
        Err(e) => return skip(&format!("PostgreSQL at DATABASE_URL is unreachable ({e})")),
    };
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
    drop_old_schemas(&mut admin, now).await;
    let schema = format!("sbtest_{now}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE SCHEMA {schema}"))
        .execute(&mut admin)
        .await
        .unwrap();
    admin.close().await.unwrap();
    Some(options.options([("search_path", schema.as_str())]))
}

/// Drops test schemas more than an hour old: left by runs that failed or were killed.
async fn drop_old_schemas(admin: &mut PgConnection, now: u64) {
    let names: Vec<(String,)> = sqlx::query_as("SELECT nspname FROM pg_namespace WHERE nspname LIKE 'sbtest\\_%'")
        .fetch_all(&mut *admin)
        .await
        .unwrap();
    for (name,) in names {
        let created = name
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(now);
        if now.saturating_sub(created) > 3600 {
            // Another run may be dropping it too; losing that race is fine.
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut *admin)
                .await;
        }
    }
}

switchboard_store::conformance_tests!(fresh_store);
