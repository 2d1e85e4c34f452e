//! Task logs: fenced appends kept within their bound, reads in order, and the retention
//! sweep. The rules are `switchboard_domain::tasklog`'s; this is their SQL, the same
//! steps as the PostgreSQL backend's `logs.rs`.
//!
//! Appends are items of the committer's batches (`TaskWrite::AppendLog`), so they share
//! commits with the rest of the task path; the plan checks their fences, and
//! [`write_appends`] writes them inside the batch's transaction.

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, SqliteConnection};
use switchboard_domain::tasklog::{self, Appended, LogAppend, LogChunk, LogPosition};
use switchboard_domain::{Attempt, TaskId};
use switchboard_store::batch::Plan;
use switchboard_store::{StoreError, StoreResult};

use crate::rows::{from_ms, ms};
use crate::{Db, map_err};

/// Writes the log chunks of a batch whose fences the plan checked, in order: one
/// already stored at its place is left alone, and its outcome says so.
pub(crate) async fn write_appends(conn: &mut SqliteConnection, plan: &mut Plan) -> StoreResult<()> {
    for (index, a) in std::mem::take(&mut plan.log_appends) {
        if append(conn, &a).await? == Appended::AlreadyStored {
            plan.log_appended(index, Appended::AlreadyStored);
        }
    }
    Ok(())
}

async fn append(conn: &mut SqliteConnection, a: &LogAppend) -> StoreResult<Appended> {
    let sizes = sqlx::query(
        "INSERT INTO task_log_sizes (task_id, last_at) VALUES (?1, ?2)
         ON CONFLICT (task_id) DO UPDATE SET last_at = max(last_at, excluded.last_at)
         RETURNING stored, received",
    )
    .bind(a.task.0)
    .bind(ms(a.stored_at))
    .fetch_one(&mut *conn)
    .await
    .map_err(map_err)?;
    let stored = bytes(sizes.try_get("stored").map_err(map_err)?);
    let received = bytes(sizes.try_get("received").map_err(map_err)?);
    let size = a.text.len() as u64;
    let inserted = sqlx::query(
        r#"INSERT INTO task_logs (task_id, attempt, "offset", text, bytes, head, stored_at)
           VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT DO NOTHING"#,
    )
    .bind(a.task.0)
    .bind(i64::from(a.at.attempt.0))
    .bind(offset(a.at.offset))
    .bind(&a.text)
    .bind(size as i64)
    .bind(tasklog::is_head(received, a.max_bytes))
    .bind(ms(a.stored_at))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?
    .rows_affected();
    if inserted == 0 {
        return Ok(Appended::AlreadyStored);
    }
    let mut stored = stored + size;
    if stored > a.max_bytes {
        stored -= cut(conn, a, stored).await?;
    }
    sqlx::query("UPDATE task_log_sizes SET stored = ?2, received = received + ?3 WHERE task_id = ?1")
        .bind(a.task.0)
        .bind(stored as i64)
        .bind(size as i64)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(Appended::Stored)
}

/// Cuts the oldest tail chunks until `stored` bytes fit the bound, and moves the count
/// onto the marker; returns the bytes cut.
async fn cut(conn: &mut SqliteConnection, a: &LogAppend, stored: u64) -> StoreResult<u64> {
    let tail = sqlx::query(
        r#"SELECT attempt, "offset", bytes FROM task_logs
           WHERE task_id = ? AND NOT head AND cut_bytes IS NULL ORDER BY attempt, "offset""#,
    )
    .bind(a.task.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let sizes: Vec<u64> = tail
        .iter()
        .map(|r| r.try_get::<i64, _>("bytes").map(bytes))
        .collect::<Result<_, _>>()
        .map_err(map_err)?;
    let n = tasklog::chunks_to_cut(stored, a.max_bytes, &sizes);
    if n == 0 {
        return Ok(0);
    }
    let cut: u64 = sizes[..n].iter().sum();
    let first = position(&tail[0])?;
    let last = position(&tail[n - 1])?;
    sqlx::query(
        r#"DELETE FROM task_logs WHERE task_id = ?1 AND NOT head AND cut_bytes IS NULL
           AND (attempt, "offset") >= (?2, ?3) AND (attempt, "offset") <= (?4, ?5)"#,
    )
    .bind(a.task.0)
    .bind(i64::from(first.attempt.0))
    .bind(offset(first.offset))
    .bind(i64::from(last.attempt.0))
    .bind(offset(last.offset))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    // The marker stays where the first cut began; later cuts only add to its count.
    let marked =
        sqlx::query("UPDATE task_logs SET cut_bytes = cut_bytes + ?2 WHERE task_id = ?1 AND cut_bytes IS NOT NULL")
            .bind(a.task.0)
            .bind(cut as i64)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?
            .rows_affected();
    if marked == 0 {
        sqlx::query(
            r#"INSERT INTO task_logs (task_id, attempt, "offset", text, bytes, head, cut_bytes, stored_at)
               VALUES (?1, ?2, ?3, '', 0, 0, ?4, ?5)"#,
        )
        .bind(a.task.0)
        .bind(i64::from(first.attempt.0))
        .bind(offset(first.offset))
        .bind(cut as i64)
        .bind(ms(a.stored_at))
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(cut)
}

pub(crate) async fn read(db: &Db, task: TaskId, from: LogPosition, max_bytes: usize) -> StoreResult<Vec<LogChunk>> {
    let known = sqlx::query("SELECT 1 FROM tasks WHERE id = ?")
        .bind(task.0)
        .fetch_optional(&db.reader)
        .await
        .map_err(map_err)?;
    if known.is_none() {
        return Err(StoreError::NotFound("task"));
    }
    let rows = sqlx::query(
        r#"SELECT attempt, "offset", text, cut_bytes, stored_at FROM task_logs
           WHERE task_id = ?1 AND (attempt, "offset") >= (?2, ?3)
           ORDER BY attempt, "offset" LIMIT ?4"#,
    )
    .bind(task.0)
    .bind(i64::from(from.attempt.0))
    .bind(offset(from.offset))
    .bind(tasklog::PAGE_CHUNKS as i64)
    .fetch_all(&db.reader)
    .await
    .map_err(map_err)?;
    let mut chunks = Vec::new();
    let mut taken = 0usize;
    for row in &rows {
        if taken >= max_bytes && !chunks.is_empty() {
            break;
        }
        let chunk = LogChunk {
            at: position(row)?,
            text: row.try_get("text").map_err(map_err)?,
            stored_at: from_ms("stored_at", row.try_get("stored_at").map_err(map_err)?)?,
            cut_bytes: row.try_get::<Option<i64>, _>("cut_bytes").map_err(map_err)?.map(bytes),
        };
        taken += chunk.text.len();
        chunks.push(chunk);
    }
    Ok(chunks)
}

pub(crate) async fn prune(db: &Db, before: DateTime<Utc>) -> StoreResult<u64> {
    let mut tx = db.write().await?;
    sqlx::query("DELETE FROM task_logs WHERE task_id IN (SELECT task_id FROM task_log_sizes WHERE last_at < ?1)")
        .bind(ms(before))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    let logs = sqlx::query("DELETE FROM task_log_sizes WHERE last_at < ?1")
        .bind(ms(before))
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
    tx.commit().await.map_err(map_err)?;
    Ok(logs)
}

fn position(row: &SqliteRow) -> StoreResult<LogPosition> {
    let attempt: i64 = row.try_get("attempt").map_err(map_err)?;
    let offset: i64 = row.try_get("offset").map_err(map_err)?;
    Ok(LogPosition {
        attempt: Attempt(u32::try_from(attempt).map_err(|e| StoreError::Internal(format!("corrupt attempt: {e}")))?),
        offset: u64::try_from(offset).map_err(|e| StoreError::Internal(format!("corrupt offset: {e}")))?,
    })
}

fn offset(o: u64) -> i64 {
    i64::try_from(o).unwrap_or(i64::MAX)
}

fn bytes(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
