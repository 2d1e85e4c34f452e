//! Driver errors into [`StoreError`], in one place.

use switchboard_store::StoreError;

/// Maps a driver error. Unique violations become `Conflict::Duplicate` at the call site
/// (only it knows what was duplicated), so they surface here as `Internal` only if a call
/// site forgot to handle them.
pub fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row"),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(ref db) if db.code().is_some_and(|c| c.starts_with("08") || c == "57P01") => {
            // Class 08: connection exceptions; 57P01: the server is shutting down.
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Internal(other.to_string()),
    }
}

/// Whether the error is a unique violation (SQLSTATE 23505).
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.code().as_deref() == Some("23505"))
}
