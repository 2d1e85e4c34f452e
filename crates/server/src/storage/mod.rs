//! Opening the store the settings name: the one place that knows both backends, so the
//! rest of the server only ever sees `Arc<dyn Store>` (what is kept) and `Arc<dyn
//! Replicas>` (the bus and leadership of the replicas on it).

mod instrumented;

use std::sync::Arc;

use switchboard_store::{Backing, StoreResult};
use switchboard_store_postgres::{PgOptions, PgStore};
use switchboard_store_sqlite::SqliteStore;

use crate::config::{Database, Settings};

pub use instrumented::{Instrumented, OPERATIONS};

/// Connects to (or creates) the database and applies any pending migration.
pub async fn open_store(settings: &Settings) -> StoreResult<Arc<dyn Backing>> {
    match &settings.database_url {
        Database::Sqlite(path) => Ok(Arc::new(SqliteStore::open_exclusive(path).await?)),
        Database::Postgres(url) => {
            let options = PgOptions {
                max_connections: settings.db_max_connections,
                connection_lease: settings.connection_lease,
                ..PgOptions::default()
            };
            Ok(Arc::new(PgStore::connect(url, &options).await?))
        }
    }
}
