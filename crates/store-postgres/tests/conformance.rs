//! The store conformance suite against a real PostgreSQL, and the cases only this backend
//! has (`pooled`, `leases`).
//!
//! The database comes from `DATABASE_URL`; each test gets its own schema from the
//! testkit (dropped by a later run once it is an hour old, so a failed run leaves nothing
//! for long). Without `DATABASE_URL`, or with PostgreSQL unreachable, the suite is
//! skipped with a notice on the terminal, unless `CI=true`: then it fails loudly, because
//! CI must run it.

#![allow(clippy::unwrap_used)]

mod leases;
mod pooled;

use std::sync::Arc;

use sqlx::postgres::PgConnectOptions;
use switchboard_store::Backing;
use switchboard_store_postgres::{PgOptions, PgStore};

async fn fresh_store() -> Option<Arc<dyn Backing>> {
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

/// Connection options for a new, empty schema of its own; `None` (with a notice) when
/// there is no PostgreSQL to use, a failure under `CI=true` (the testkit's rule).
pub(crate) async fn fresh_schema() -> Option<PgConnectOptions> {
    let schema = switchboard_testkit::postgres_schema("sbtest", "the PostgreSQL conformance suite").await?;
    Some(schema.url.parse().expect("the schema's URL is a valid PostgreSQL URL"))
}

switchboard_store::conformance_tests!(fresh_store);
