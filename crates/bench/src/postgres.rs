//! PostgreSQL for a run: a fresh database per manager (created on the server named by
//! `--database-url`, dropped when the run ends), what the server says about that database
//! at each step's start and end (its backends, its commits), and the `pgbench` reference
//! measured against the same server in the same run.
//!
//! Databases are named `sbbench_<unix seconds>_<random>`; one left behind by a run that
//! was killed is dropped by the first run that starts more than an hour later.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::{Connection, PgConnection};
use tokio::process::Command;

use crate::BenchError;

/// How old a leftover database must be before a new run drops it.
const STALE_AFTER: Duration = Duration::from_secs(3600);

/// A database made for one run; [`FreshDatabase::drop_now`] removes it.
#[derive(Debug)]
pub struct FreshDatabase {
    /// Where to reach the server's maintenance database (the `--database-url` given).
    admin_url: String,
    pub name: String,
    /// The URL of the new database, for the manager and pgbench.
    pub url: String,
}

impl FreshDatabase {
    /// Creates `sbbench_<now>_<random>` on the server of `admin_url`, first dropping
    /// leftovers of runs over an hour old.
    pub async fn create(admin_url: &str) -> Result<FreshDatabase, BenchError> {
        let mut admin = connect(admin_url).await?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        let leftovers: Vec<(String,)> =
            sqlx::query_as("SELECT datname FROM pg_database WHERE datname LIKE 'sbbench\\_%'")
                .fetch_all(&mut admin)
                .await
                .map_err(|e| BenchError::Postgres(format!("cannot list databases: {e}")))?;
        for (name,) in leftovers {
            let created = name
                .split('_')
                .nth(1)
                .and_then(|s| s.parse::<u64>().ok())
                .unwrap_or(now);
            if now.saturating_sub(created) > STALE_AFTER.as_secs() {
                let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .execute(&mut admin)
                    .await;
            }
        }
        let name = format!("sbbench_{now}_{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .map_err(|e| BenchError::Postgres(format!("cannot create the database {name}: {e}")))?;
        let _ = admin.close().await;
        let mut url = reqwest::Url::parse(admin_url)
            .map_err(|e| BenchError::Postgres(format!("the database URL is not a URL: {e}")))?;
        url.set_path(&format!("/{name}"));
        Ok(FreshDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }

    /// Drops the database, closing whatever connections are still open to it.
    pub async fn drop_now(self) {
        if let Ok(mut admin) = connect(&self.admin_url).await {
            let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name))
                .execute(&mut admin)
                .await;
            let _ = admin.close().await;
        }
    }
}

async fn connect(url: &str) -> Result<PgConnection, BenchError> {
    PgConnection::connect(url)
        .await
        .map_err(|e| BenchError::Postgres(format!("cannot connect to PostgreSQL at the database URL: {e}")))
}

/// A connection of the bench's own to a manager's database, to read the server's view of
/// it between steps.
#[derive(Debug)]
pub struct Monitor {
    /// A `tokio` mutex: a reading holds the connection across its query's await.
    conn: tokio::sync::Mutex<PgConnection>,
}

/// The server's view of one database at one moment.
#[derive(Debug, Clone, Default)]
pub struct Reading {
    /// The backends connected to the database (the manager's pool, autovacuum workers),
    /// this monitor's own excluded.
    pub backends: Vec<u32>,
    /// `pg_stat_database.xact_commit`: every committed transaction, read-only ones
    /// included. Each backend reports its counts when it goes idle, at most once a second
    /// (an idle one within 10 s), so the figure trails the commits by up to that much.
    pub xact_commit: i64,
    /// The next transaction id: it advances by one per transaction that wrote (committed
    /// or not), at once and exactly, but for the whole server, not this database alone.
    pub next_xid: i64,
}

impl Monitor {
    pub async fn connect(url: &str) -> Result<Monitor, BenchError> {
        Ok(Monitor {
            conn: tokio::sync::Mutex::new(connect(url).await?),
        })
    }

    /// One reading, in a single statement (so this monitor adds one read-only commit per
    /// reading to `xact_commit`, nothing to `next_xid`).
    pub async fn read(&self) -> Result<Reading, BenchError> {
        let mut conn = self.conn.lock().await;
        let (backends, xact_commit, next_xid): (Option<Vec<i32>>, Option<i64>, i64) = sqlx::query_as(
            "SELECT (SELECT array_agg(pid) FROM pg_stat_activity \
                      WHERE datname = current_database() AND pid <> pg_backend_pid()), \
                    (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
                    pg_snapshot_xmax(pg_current_snapshot())::text::bigint",
        )
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| BenchError::Postgres(format!("cannot read pg_stat_activity: {e}")))?;
        Ok(Reading {
            backends: backends
                .unwrap_or_default()
                .into_iter()
                .filter_map(|pid| u32::try_from(pid).ok())
                .collect(),
            xact_commit: xact_commit.unwrap_or(0),
            next_xid,
        })
    }

    pub async fn close(self) {
        let _ = self.conn.into_inner().close().await;
    }
}

/// What `pgbench` measured: single-row transactions a second at `clients` connections.
#[derive(Debug, Clone, Serialize)]
pub struct Reference {
    pub clients: u32,
    pub seconds: u64,
    pub insert_tps: f64,
    pub update_tps: f64,
}

/// The rows the update script picks from.
const ROWS: u32 = 100_000;

/// Runs `pgbench` (no vacuum, `clients` connections, two threads) for `seconds` each with
/// a single-row INSERT script and a single-row UPDATE script, against a scratch table in a
/// database of its own on the server of `admin_url`.
pub async fn reference(pgbench: &Path, admin_url: &str, clients: u32, seconds: u64) -> Result<Reference, BenchError> {
    let db = FreshDatabase::create(admin_url).await?;
    let outcome = run_reference(pgbench, &db.url, clients, seconds).await;
    db.drop_now().await;
    outcome
}

async fn run_reference(pgbench: &Path, url: &str, clients: u32, seconds: u64) -> Result<Reference, BenchError> {
    let mut conn = connect(url).await?;
    for statement in [
        "CREATE TABLE bench_reference (id bigserial PRIMARY KEY, v bigint NOT NULL DEFAULT 0)",
        &format!("INSERT INTO bench_reference (v) SELECT 0 FROM generate_series(1, {ROWS})"),
        "VACUUM ANALYZE bench_reference",
    ] {
        sqlx::query(statement)
            .execute(&mut conn)
            .await
            .map_err(|e| BenchError::Postgres(format!("cannot prepare the pgbench table: {e}")))?;
    }
    let _ = conn.close().await;
    let scripts = tempfile::tempdir()?;
    let insert = scripts.path().join("insert.sql");
    let update = scripts.path().join("update.sql");
    std::fs::write(&insert, "INSERT INTO bench_reference (v) VALUES (1);\n")?;
    std::fs::write(
        &update,
        format!("\\set id random(1, {ROWS})\nUPDATE bench_reference SET v = v + 1 WHERE id = :id;\n"),
    )?;
    let update_tps = pgbench_tps(pgbench, url, &update, clients, seconds).await?;
    let insert_tps = pgbench_tps(pgbench, url, &insert, clients, seconds).await?;
    Ok(Reference {
        clients,
        seconds,
        insert_tps,
        update_tps,
    })
}

async fn pgbench_tps(pgbench: &Path, url: &str, script: &Path, clients: u32, seconds: u64) -> Result<f64, BenchError> {
    let threads = clients.clamp(1, 2);
    let output = Command::new(pgbench)
        .arg("-n")
        .args(["-c", &clients.to_string(), "-j", &threads.to_string()])
        .args(["-T", &seconds.to_string()])
        .arg("-f")
        .arg(script)
        .arg(url)
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| BenchError::Pgbench(format!("cannot run {}: {e}", pgbench.display())))?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(BenchError::Pgbench(format!(
            "{} failed ({}): {}",
            pgbench.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        )));
    }
    parse_tps(&stdout).ok_or_else(|| BenchError::Pgbench(format!("no \"tps = \" line in pgbench's output: {stdout}")))
}

/// The `tps = N (without initial connection time)` figure of pgbench's report.
fn parse_tps(report: &str) -> Option<f64> {
    report
        .lines()
        .filter_map(|line| line.trim().strip_prefix("tps = "))
        .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tps_figure_is_read_from_pgbench_output() {
        let report = "transaction type: insert.sql\nnumber of clients: 16\n\
                      latency average = 1.2 ms\ninitial connection time = 12.3 ms\n\
                      tps = 13245.678901 (without initial connection time)\n";
        assert_eq!(parse_tps(report), Some(13245.678901));
        assert_eq!(parse_tps("nothing here"), None);
    }
}
