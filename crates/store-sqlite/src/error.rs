//! Driver errors into [`StoreError`], in one place.
//!
//! SQLite reports errors by result code (the extended code, as a decimal string, through
//! `DatabaseError::code`). The codes that mean "try again later" (the database is busy or
//! locked by another connection or process, the disk failed or is full, the file cannot be
//! opened) become [`StoreError::Unavailable`]; everything else is a bug or corruption and
//! becomes [`StoreError::Internal`].

use sqlx::error::ErrorKind;
use switchboard_store::StoreError;

// Primary result codes (the low byte of an extended code); see sqlite.org/rescode.html.
const SQLITE_BUSY: i64 = 5;
const SQLITE_LOCKED: i64 = 6;
const SQLITE_NOMEM: i64 = 7;
const SQLITE_READONLY: i64 = 8;
const SQLITE_IOERR: i64 = 10;
const SQLITE_FULL: i64 = 13;
const SQLITE_CANTOPEN: i64 = 14;
const SQLITE_PROTOCOL: i64 = 15;

/// Maps a driver error. Unique violations become `Conflict::Duplicate` at the call site
/// (only it knows what was duplicated), so they surface here as `Internal` only if a call
/// site forgot to handle them.
pub fn map_err(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::RowNotFound => StoreError::NotFound("row"),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::WorkerCrashed => {
            StoreError::Unavailable(e.to_string())
        }
        sqlx::Error::Database(ref db) if primary_code(db.as_ref()).is_some_and(is_transient) => {
            StoreError::Unavailable(e.to_string())
        }
        other => StoreError::Internal(other.to_string()),
    }
}

fn primary_code(db: &dyn sqlx::error::DatabaseError) -> Option<i64> {
    db.code()
        .and_then(|c| c.parse::<i64>().ok())
        .map(|extended| extended & 0xff)
}

fn is_transient(code: i64) -> bool {
    matches!(
        code,
        SQLITE_BUSY
            | SQLITE_LOCKED
            | SQLITE_NOMEM
            | SQLITE_READONLY
            | SQLITE_IOERR
            | SQLITE_FULL
            | SQLITE_CANTOPEN
            | SQLITE_PROTOCOL
    )
}

/// Whether the error is a unique (or primary key) violation.
pub(crate) fn is_unique_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation)
}

/// Whether the error is a foreign key violation: a row refers to one that does not exist.
pub(crate) fn is_foreign_key_violation(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.kind() == ErrorKind::ForeignKeyViolation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_locked_and_io_codes_are_transient() {
        // SQLITE_BUSY_SNAPSHOT (517) and SQLITE_IOERR_FSYNC (1034) by their primary codes.
        assert!(is_transient(517 & 0xff));
        assert!(is_transient(1034 & 0xff));
        assert!(is_transient(SQLITE_LOCKED));
        // SQLITE_CONSTRAINT_UNIQUE (2067) is not.
        assert!(!is_transient(2067 & 0xff));
    }
}
