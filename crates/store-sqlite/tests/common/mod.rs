//! Scratch database files for the test binaries.
//!
//! Each database gets its own directory under `CARGO_TARGET_TMPDIR/store-sqlite`, the
//! place Cargo provides for integration tests' scratch files (inside `target/`). The
//! directory is kept when the test ends: the conformance macro hands a case only an
//! `Arc<dyn Store>`, so nothing could own the directory for exactly as long as the store,
//! and deleting it under an open database would break the connections its pools open
//! later. Instead, each test binary removes, when it starts, the directories that earlier
//! runs left more than an hour ago, which keeps the leftovers bounded without ever
//! touching a run still in progress.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A path for a new database file, in a directory of its own.
pub fn database_path() -> PathBuf {
    static ROOT: OnceLock<PathBuf> = OnceLock::new();
    let root = ROOT.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("store-sqlite");
        std::fs::create_dir_all(&root).expect("the scratch root can be created");
        remove_stale(&root);
        root
    });
    tempfile::Builder::new()
        .prefix("db-")
        .tempdir_in(root)
        .expect("a scratch directory")
        .keep()
        .join("switchboard.db")
}

fn remove_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let age = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok());
        if age.is_some_and(|age| age > STALE_AFTER) {
            // Best effort: a directory that cannot be removed now will be tried next run.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}
