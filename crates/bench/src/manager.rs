//! The manager under test: a real `switchboard serve` process that the tool starts (the
//! default) against a fresh store, or one already running that it is pointed at.
//!
//! A started manager listens on 127.0.0.1 with a port the system picks, has a random
//! admin key handed to it in `SWITCHBOARD_ADMIN_KEY`, and runs with the request-rate
//! limits off and `max_sockets` high: the bench measures the manager's engine and I/O, not
//! the limits that protect it from a misbehaving client. Its store is a fresh SQLite file
//! in a temporary directory or a fresh PostgreSQL database, removed when it stops. Its
//! stderr (warnings and errors only) goes to a log file next to the results.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::BenchError;
use crate::metrics::Scrape;
use crate::postgres::FreshDatabase;
use crate::procfs;

/// Where a started manager keeps its state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    Sqlite,
    Postgres,
}

impl StoreKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::Sqlite => "sqlite",
            StoreKind::Postgres => "postgres",
        }
    }
}

/// How to start a manager.
#[derive(Debug, Clone)]
pub struct Launch {
    /// The `switchboard` binary.
    pub binary: PathBuf,
    pub store: StoreKind,
    /// The PostgreSQL server to make a fresh database on (its maintenance database).
    pub database_url: String,
    /// The manager's PostgreSQL pool (`db_max_connections`).
    pub pool: u32,
    /// Where the manager's stderr is written.
    pub log: PathBuf,
    /// More settings, as `SWITCHBOARD_*` variables (a heartbeat interval, say).
    pub settings: Vec<(String, String)>,
}

/// A manager to drive.
#[derive(Debug)]
pub struct Manager {
    /// Its base URL, `http://127.0.0.1:PORT`.
    pub url: String,
    /// A key with every permission (the admin key of a started manager).
    pub api_key: String,
    /// Its process id, when known: memory and CPU are read from `/proc`.
    pub pid: Option<u32>,
    started: Option<Started>,
}

/// What the tool owns of a manager it started.
#[derive(Debug)]
struct Started {
    child: Child,
    /// How it was started, to start it again on the same address and store.
    launch: Launch,
    database_url: String,
    /// The SQLite file's directory (kept as long as the manager runs; shared by replicas,
    /// which are only started on PostgreSQL).
    dir: Arc<tempfile::TempDir>,
    /// Set on the manager that owns the fresh database (the first of a set of replicas):
    /// it drops it when it stops.
    database: Option<FreshDatabase>,
}

/// How long a manager may take to print its "listening on" line (a fresh PostgreSQL
/// database is migrated first).
const STARTUP: Duration = Duration::from_secs(120);

impl Manager {
    /// A manager that is already running; `pid` when it runs on this machine.
    pub fn external(url: &str, api_key: &str, pid: Option<u32>) -> Manager {
        Manager {
            url: url.trim_end_matches('/').to_owned(),
            api_key: api_key.to_owned(),
            pid,
            started: None,
        }
    }

    /// Starts `replicas` managers on one fresh store (a PostgreSQL database: SQLite is one
    /// process's file) and waits until each listens. They share the admin key; the first
    /// owns the database, so [`stop_all`] stops it last.
    pub async fn start_replicas(launch: &Launch, replicas: usize) -> Result<Vec<Manager>, BenchError> {
        if replicas > 1 && launch.store == StoreKind::Sqlite {
            return Err(BenchError::Setup(
                "replicas share one PostgreSQL database: use --store postgres with --replicas".into(),
            ));
        }
        let dir = Arc::new(tempfile::Builder::new().prefix("switchboard-bench-").tempdir()?);
        let mut database = match launch.store {
            StoreKind::Sqlite => None,
            StoreKind::Postgres => Some(FreshDatabase::create(&launch.database_url).await?),
        };
        let database_url = match &database {
            Some(db) => db.url.clone(),
            None => format!("sqlite://{}", dir.path().join("switchboard.db").display()),
        };
        let api_key = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let mut managers: Vec<Manager> = Vec::with_capacity(replicas);
        for n in 0..replicas.max(1) {
            let mut launch = launch.clone();
            if replicas > 1 {
                launch.log = replica_log(&launch.log, n);
            }
            match spawn(&launch, &database_url, dir.path(), &api_key, "127.0.0.1:0").await {
                Ok((child, url)) => managers.push(Manager {
                    url,
                    api_key: api_key.clone(),
                    pid: child.id(),
                    started: Some(Started {
                        child,
                        launch,
                        database_url: database_url.clone(),
                        dir: Arc::clone(&dir),
                        database: if n == 0 { database.take() } else { None },
                    }),
                }),
                Err(e) => {
                    stop_all(managers).await;
                    if let Some(db) = database {
                        db.drop_now().await;
                    }
                    return Err(e);
                }
            }
        }
        Ok(managers)
    }

    /// Stops a manager the tool started with `signal` (`TERM`, `KILL`) and waits (at most
    /// 20 s, then kills it) until it has exited; its store stays. [`Manager::relaunch`]
    /// starts it again.
    pub async fn halt(&mut self, signal: &str) {
        let Some(started) = self.started.as_mut() else {
            return;
        };
        if let Some(pid) = self.pid {
            let _ = Command::new("kill")
                .args([format!("-{signal}"), pid.to_string()])
                .status()
                .await;
        }
        if tokio::time::timeout(Duration::from_secs(20), started.child.wait())
            .await
            .is_err()
        {
            let _ = started.child.kill().await;
        }
    }

    /// Starts a halted manager again on the same address and store, as a restarted
    /// replica would be; the delegates' sockets come back to the same URL.
    pub async fn relaunch(&mut self) -> Result<(), BenchError> {
        let Some(started) = self.started.as_mut() else {
            return Err(BenchError::Setup(
                "an external manager cannot be restarted by the tool".into(),
            ));
        };
        let listen = self.url.trim_start_matches("http://").to_owned();
        let (child, url) = spawn(
            &started.launch,
            &started.database_url,
            started.dir.path(),
            &self.api_key,
            &listen,
        )
        .await?;
        self.pid = child.id();
        self.url = url;
        started.child = child;
        Ok(())
    }

    /// The URL of the fresh PostgreSQL database of a manager the tool started (unknown for
    /// an external one).
    pub fn database_url(&self) -> Option<&str> {
        let database = self.started.as_ref()?.database.as_ref()?;
        Some(database.url.as_str())
    }

    /// Its resident memory in KiB, when it runs on this machine.
    pub fn rss_kib(&self) -> Option<u64> {
        procfs::rss_kib(self.pid?)
    }

    /// The CPU time it has used, in seconds, when it runs on this machine.
    pub fn cpu_seconds(&self) -> Option<f64> {
        procfs::cpu_seconds(self.pid?)
    }

    /// Reads its `/metrics`.
    pub async fn scrape(&self, http: &reqwest::Client) -> Result<Scrape, BenchError> {
        let text = http
            .get(format!("{}/metrics", self.url))
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| BenchError::Manager(format!("cannot read /metrics: {e}")))?
            .text()
            .await
            .map_err(|e| BenchError::Manager(format!("cannot read /metrics: {e}")))?;
        Ok(Scrape::parse(&text))
    }

    /// Stops a manager the tool started (SIGTERM, then SIGKILL after 20 s) and removes its
    /// store when it owns it; leaves an external one alone.
    pub async fn stop(mut self) {
        self.halt("TERM").await;
        if let Some(db) = self.started.take().and_then(|mut s| s.database.take()) {
            db.drop_now().await;
        }
    }
}

/// Stops managers started together, the one that owns the database last.
pub async fn stop_all(mut managers: Vec<Manager>) {
    let first = if managers.is_empty() {
        None
    } else {
        Some(managers.remove(0))
    };
    futures::future::join_all(managers.into_iter().map(Manager::stop)).await;
    if let Some(first) = first {
        first.stop().await;
    }
}

/// `<out>/f3.manager.log` -> `<out>/f3.manager-2.log` for replica 2.
fn replica_log(log: &Path, n: usize) -> PathBuf {
    let stem = log.file_stem().and_then(|s| s.to_str()).unwrap_or("manager");
    log.with_file_name(format!("{stem}-{n}.log"))
}

/// Starts one `switchboard serve` listening on `listen` and waits for its banner; returns
/// the process and its base URL.
async fn spawn(
    launch: &Launch,
    database_url: &str,
    dir: &Path,
    api_key: &str,
    listen: &str,
) -> Result<(Child, String), BenchError> {
    let log = std::fs::File::create(&launch.log)?;
    let mut command = Command::new(&launch.binary);
    command
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("SWITCHBOARD_LISTEN", listen)
        .env("SWITCHBOARD_DATABASE_URL", database_url)
        .env("SWITCHBOARD_ADMIN_KEY", api_key)
        .env("SWITCHBOARD_DB_MAX_CONNECTIONS", launch.pool.to_string())
        .env("SWITCHBOARD_API_RATE_LIMIT", "0")
        .env("SWITCHBOARD_DELEGATE_RATE_LIMIT", "0")
        .env("SWITCHBOARD_MAX_SOCKETS", "10000000")
        .env("SWITCHBOARD_LOG_LEVEL", "warn")
        .env("SWITCHBOARD_SHUTDOWN_GRACE", "2s")
        .envs(launch.settings.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log))
        .kill_on_drop(true);
    let mut child = command
        .spawn()
        .map_err(|e| BenchError::Manager(format!("cannot start {}: {e}", launch.binary.display())))?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| BenchError::Manager("no stdout from the manager".into()))?;
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(STARTUP, async {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("switchboard listening on ") {
                return Some(rest.to_owned());
            }
        }
        None
    })
    .await;
    match banner {
        Ok(Some(rest)) => {
            // Keep reading, so that a later line on stdout never meets a closed pipe.
            tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
            Ok((child, rest.split_whitespace().next().unwrap_or_default().to_owned()))
        }
        Ok(None) | Err(_) => {
            let _ = child.kill().await;
            let log = std::fs::read_to_string(&launch.log).unwrap_or_default();
            Err(BenchError::Manager(format!(
                "the manager did not start listening on {listen} within {STARTUP:?}; its log ({}): {}",
                launch.log.display(),
                log.trim()
            )))
        }
    }
}

/// The `switchboard` binary: `explicit` if given, else the one next to this executable
/// (cargo puts every binary of a profile in one directory). When it is missing and this
/// tool was started by cargo (`cargo run`, `cargo test`), it is built with the same
/// cargo, profile and target directory first, so a fresh clone needs one command.
pub fn manager_binary(explicit: Option<&Path>) -> Result<PathBuf, BenchError> {
    if let Some(path) = explicit {
        return if path.is_file() {
            Ok(path.to_owned())
        } else {
            Err(BenchError::Manager(format!("no manager binary at {}", path.display())))
        };
    }
    let exe = std::env::current_exe()?;
    let mut dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    if dir.ends_with("deps") {
        dir.pop();
    }
    let binary = dir.join("switchboard");
    if binary.is_file() {
        return Ok(binary);
    }
    let advice =
        "build it with `cargo build --release -p switchboard-server --bin switchboard`, or name one with --manager-bin";
    let (Ok(cargo), Some(profile), Some(target)) = (
        std::env::var("CARGO"),
        dir.file_name().and_then(|n| n.to_str()),
        dir.parent(),
    ) else {
        return Err(BenchError::Manager(format!(
            "no manager binary at {}: {advice}",
            binary.display()
        )));
    };
    let profile = if profile == "debug" { "dev" } else { profile };
    eprintln!("building the manager binary (cargo build --profile {profile} -p switchboard-server --bin switchboard)");
    let built = std::process::Command::new(cargo)
        .args([
            "build",
            "--profile",
            profile,
            "-p",
            "switchboard-server",
            "--bin",
            "switchboard",
        ])
        .arg("--target-dir")
        .arg(target)
        .status()?;
    if built.success() && binary.is_file() {
        Ok(binary)
    } else {
        Err(BenchError::Manager(format!(
            "no manager binary at {} and building it failed: {advice}",
            binary.display()
        )))
    }
}
