//! The SQLite reference: how many single-row INSERT commits a second this machine's disk
//! allows with the pragmas of the manager's SQLite store (`journal_mode=WAL`,
//! `synchronous=FULL`, see `crates/store-sqlite/src/lib.rs`), measured in the same run as
//! the F1 figures it stands beside, as pgbench stands beside PostgreSQL's.

use std::time::{Duration, Instant};

use serde::Serialize;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sqlx::{ConnectOptions, Connection};

use crate::BenchError;

/// What the loop measured.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub seconds: f64,
    pub inserts: u64,
    /// Autocommitted single-row INSERTs a second: each one its own transaction, so its
    /// own fsync of the WAL.
    pub insert_commits_per_second: f64,
    pub journal_mode: &'static str,
    pub synchronous: &'static str,
}

/// Runs autocommitted single-row INSERTs for `duration`, one after another on one
/// connection (the manager's store has one writer), into a scratch file in a temporary
/// directory that is removed afterwards.
pub async fn reference(duration: Duration) -> Result<Reference, BenchError> {
    let dir = tempfile::Builder::new().prefix("switchboard-bench-sqlite-").tempdir()?;
    let fail = |e: sqlx::Error| BenchError::Setup(format!("the SQLite reference failed: {e}"));
    let mut conn = SqliteConnectOptions::new()
        .filename(dir.path().join("reference.db"))
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .foreign_keys(true)
        .connect()
        .await
        .map_err(fail)?;
    sqlx::query("CREATE TABLE reference (id INTEGER PRIMARY KEY, v INTEGER NOT NULL)")
        .execute(&mut conn)
        .await
        .map_err(fail)?;
    let started = Instant::now();
    let mut inserts = 0u64;
    while started.elapsed() < duration {
        sqlx::query("INSERT INTO reference (v) VALUES (?)")
            .bind(1_i64)
            .execute(&mut conn)
            .await
            .map_err(fail)?;
        inserts += 1;
    }
    let seconds = started.elapsed().as_secs_f64();
    let _ = conn.close().await;
    Ok(Reference {
        seconds,
        inserts,
        insert_commits_per_second: inserts as f64 / seconds.max(1e-9),
        journal_mode: "WAL",
        synchronous: "FULL",
    })
}
