//! Task logs: fenced appends kept within their bound, reads in order, and the retention
//! sweep. The rules are `switchboard_domain::tasklog`'s; this is their SQL.
//!
//! Appends are items of the committer's batches (`TaskWrite::AppendLog`), so they share
//! commits with the rest of the task path; the plan checks their fences against the
//! batch's locked task rows, and [`write_appends`] writes them.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use sqlx::postgres::PgRow;
use sqlx::{PgConnection, PgPool, Row};
use switchboard_domain::tasklog::{self, Appended, LogAppend, LogChunk, LogPosition};
use switchboard_domain::{Attempt, TaskId};
use switchboard_store::batch::Plan;
use switchboard_store::{StoreError, StoreResult};
use uuid::Uuid;

use crate::{begin, map_err};

/// Writes the log chunks of a batch whose fences the plan checked (the batch holds their
/// tasks' rows locked): creates or locks each task's size row, inserts the chunks (one
/// already stored at its place is left alone, and its outcome says so), cuts what went
/// past a bound, and moves the sizes. Three statements, whatever the number of chunks,
/// plus the cuts.
pub(crate) async fn write_appends(conn: &mut PgConnection, plan: &mut Plan) -> StoreResult<()> {
    let appends = std::mem::take(&mut plan.log_appends);
    // Per task, in id order (the order its row was locked in): the latest append.
    let mut last: BTreeMap<Uuid, &LogAppend> = BTreeMap::new();
    for (_, a) in &appends {
        let seen = last.entry(a.task.0).or_insert(a);
        if a.stored_at >= seen.stored_at {
            *seen = a;
        }
    }
    let ids: Vec<Uuid> = last.keys().copied().collect();
    let times: Vec<DateTime<Utc>> = last.values().map(|a| a.stored_at).collect();
    let rows = sqlx::query(
        "INSERT INTO task_log_sizes (task_id, last_at) SELECT * FROM unnest($1::uuid[], $2::timestamptz[])
         ON CONFLICT (task_id) DO UPDATE SET last_at = greatest(task_log_sizes.last_at, excluded.last_at)
         RETURNING task_id, stored, received",
    )
    .bind(&ids)
    .bind(&times)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut sizes: HashMap<Uuid, (u64, u64)> = HashMap::new();
    for row in &rows {
        let id: Uuid = row.try_get("task_id").map_err(map_err)?;
        let stored = bytes(row.try_get("stored").map_err(map_err)?);
        let received = bytes(row.try_get("received").map_err(map_err)?);
        sizes.insert(id, (stored, received));
    }
    // The head is what arrives while less than half the bound was received.
    let mut received: HashMap<Uuid, u64> = sizes.iter().map(|(id, (_, r))| (*id, *r)).collect();
    let mut heads = Vec::with_capacity(appends.len());
    for (_, a) in &appends {
        let so_far = received.entry(a.task.0).or_default();
        heads.push(tasklog::is_head(*so_far, a.max_bytes));
        *so_far += a.text.len() as u64;
    }
    let tasks: Vec<Uuid> = appends.iter().map(|(_, a)| a.task.0).collect();
    let attempts: Vec<i32> = appends.iter().map(|(_, a)| attempt(a.at.attempt)).collect();
    let offsets: Vec<i64> = appends.iter().map(|(_, a)| offset(a.at.offset)).collect();
    let texts: Vec<&str> = appends.iter().map(|(_, a)| a.text.as_str()).collect();
    let sizes_of: Vec<i32> = appends
        .iter()
        .map(|(_, a)| i32::try_from(a.text.len()).unwrap_or(i32::MAX))
        .collect();
    let stored_at: Vec<DateTime<Utc>> = appends.iter().map(|(_, a)| a.stored_at).collect();
    let inserted = sqlx::query(
        r#"INSERT INTO task_logs (task_id, attempt, "offset", text, bytes, head, stored_at)
           SELECT * FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::text[], $5::int[], $6::bool[],
                                $7::timestamptz[])
           ON CONFLICT DO NOTHING RETURNING task_id, attempt, "offset""#,
    )
    .bind(&tasks)
    .bind(&attempts)
    .bind(&offsets)
    .bind(&texts)
    .bind(&sizes_of)
    .bind(&heads)
    .bind(&stored_at)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let mut fresh: HashSet<(Uuid, i32, i64)> = HashSet::new();
    for row in &inserted {
        fresh.insert((
            row.try_get("task_id").map_err(map_err)?,
            row.try_get("attempt").map_err(map_err)?,
            row.try_get("offset").map_err(map_err)?,
        ));
    }
    let mut added: BTreeMap<Uuid, u64> = BTreeMap::new();
    for (index, a) in &appends {
        // Taken out once: a second chunk at the same place in this batch was stored before.
        if fresh.remove(&(a.task.0, attempt(a.at.attempt), offset(a.at.offset))) {
            *added.entry(a.task.0).or_default() += a.text.len() as u64;
        } else {
            plan.log_appended(*index, Appended::AlreadyStored);
        }
    }
    let mut grown = Vec::new();
    let mut stored_now = Vec::new();
    let mut grew = Vec::new();
    for (id, more) in added {
        let (stored, _) = sizes.get(&id).copied().unwrap_or_default();
        let mut stored = stored + more;
        let a = last[&id];
        if stored > a.max_bytes {
            stored -= cut(conn, a, stored).await?;
        }
        grown.push(id);
        stored_now.push(i64::try_from(stored).unwrap_or(i64::MAX));
        grew.push(i64::try_from(more).unwrap_or(i64::MAX));
    }
    if !grown.is_empty() {
        sqlx::query(
            "UPDATE task_log_sizes AS s SET stored = u.stored, received = s.received + u.grew
             FROM unnest($1::uuid[], $2::bigint[], $3::bigint[]) AS u(task_id, stored, grew)
             WHERE s.task_id = u.task_id",
        )
        .bind(&grown)
        .bind(&stored_now)
        .bind(&grew)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// Cuts the oldest tail chunks until `stored` bytes fit the bound, and moves the count
/// onto the marker; returns the bytes cut.
async fn cut(conn: &mut PgConnection, a: &LogAppend, stored: u64) -> StoreResult<u64> {
    let tail = sqlx::query(
        r#"SELECT attempt, "offset", bytes FROM task_logs
           WHERE task_id = $1 AND NOT head AND cut_bytes IS NULL ORDER BY attempt, "offset""#,
    )
    .bind(a.task.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(map_err)?;
    let sizes: Vec<u64> = tail
        .iter()
        .map(|r| r.try_get::<i32, _>("bytes").map(|b| b as u64))
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
        r#"DELETE FROM task_logs WHERE task_id = $1 AND NOT head AND cut_bytes IS NULL
           AND (attempt, "offset") BETWEEN ($2, $3) AND ($4, $5)"#,
    )
    .bind(a.task.0)
    .bind(attempt(first.attempt))
    .bind(offset(first.offset))
    .bind(attempt(last.attempt))
    .bind(offset(last.offset))
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    // The marker stays where the first cut began; later cuts only add to its count.
    let marked =
        sqlx::query("UPDATE task_logs SET cut_bytes = cut_bytes + $2 WHERE task_id = $1 AND cut_bytes IS NOT NULL")
            .bind(a.task.0)
            .bind(cut as i64)
            .execute(&mut *conn)
            .await
            .map_err(map_err)?
            .rows_affected();
    if marked == 0 {
        sqlx::query(
            r#"INSERT INTO task_logs (task_id, attempt, "offset", text, bytes, head, cut_bytes, stored_at)
               VALUES ($1, $2, $3, '', 0, false, $4, $5)"#,
        )
        .bind(a.task.0)
        .bind(attempt(first.attempt))
        .bind(offset(first.offset))
        .bind(cut as i64)
        .bind(a.stored_at)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(cut)
}

pub(crate) async fn read(
    pool: &PgPool,
    task: TaskId,
    from: LogPosition,
    max_bytes: usize,
) -> StoreResult<Vec<LogChunk>> {
    let rows = sqlx::query(
        r#"SELECT t.id AS task, l.attempt, l."offset", l.text, l.cut_bytes, l.stored_at
           FROM tasks t LEFT JOIN LATERAL (
               SELECT * FROM task_logs WHERE task_id = t.id AND (attempt, "offset") >= ($2, $3)
               ORDER BY attempt, "offset" LIMIT $4
           ) l ON true
           WHERE t.id = $1"#,
    )
    .bind(task.0)
    .bind(attempt(from.attempt))
    .bind(offset(from.offset))
    .bind(tasklog::PAGE_CHUNKS as i64)
    .fetch_all(pool)
    .await
    .map_err(map_err)?;
    if rows.is_empty() {
        return Err(StoreError::NotFound("task"));
    }
    let mut chunks = Vec::new();
    let mut taken = 0usize;
    for row in &rows {
        if row.try_get::<Option<i32>, _>("attempt").map_err(map_err)?.is_none() {
            break;
        }
        if taken >= max_bytes && !chunks.is_empty() {
            break;
        }
        let chunk = LogChunk {
            at: position(row)?,
            text: row.try_get("text").map_err(map_err)?,
            stored_at: row.try_get("stored_at").map_err(map_err)?,
            cut_bytes: row.try_get::<Option<i64>, _>("cut_bytes").map_err(map_err)?.map(bytes),
        };
        taken += chunk.text.len();
        chunks.push(chunk);
    }
    Ok(chunks)
}

pub(crate) async fn prune(pool: &PgPool, before: DateTime<Utc>) -> StoreResult<u64> {
    let mut tx = begin(pool).await?;
    let old: Vec<Uuid> = sqlx::query_scalar("DELETE FROM task_log_sizes WHERE last_at < $1 RETURNING task_id")
        .bind(before)
        .fetch_all(&mut *tx)
        .await
        .map_err(map_err)?;
    sqlx::query("DELETE FROM task_logs WHERE task_id = ANY($1)")
        .bind(&old)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
    tx.commit().await.map_err(map_err)?;
    Ok(old.len() as u64)
}

fn position(row: &PgRow) -> StoreResult<LogPosition> {
    let attempt: i32 = row.try_get("attempt").map_err(map_err)?;
    let offset: i64 = row.try_get("offset").map_err(map_err)?;
    Ok(LogPosition {
        attempt: Attempt(u32::try_from(attempt).map_err(|e| StoreError::Internal(format!("corrupt attempt: {e}")))?),
        offset: u64::try_from(offset).map_err(|e| StoreError::Internal(format!("corrupt offset: {e}")))?,
    })
}

fn attempt(a: Attempt) -> i32 {
    i32::try_from(a.0).unwrap_or(i32::MAX)
}

fn offset(o: u64) -> i64 {
    i64::try_from(o).unwrap_or(i64::MAX)
}

fn bytes(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}
