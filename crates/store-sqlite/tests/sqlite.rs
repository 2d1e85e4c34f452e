//! The SQLite store's one test binary: the shared conformance suite
//! (`switchboard_store::conformance`), one test per case, each on its own fresh database
//! file (see `common`), and the cases only the embedded store has (`embedded`).

mod common;
mod embedded;

use std::sync::Arc;

use switchboard_store::Backing;
use switchboard_store_sqlite::SqliteStore;

async fn fresh_store() -> Option<Arc<dyn Backing>> {
    let store = SqliteStore::open(&common::database_path())
        .await
        .expect("the store opens");
    Some(Arc::new(store))
}

switchboard_store::conformance_tests!(fresh_store);
