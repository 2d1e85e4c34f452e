//! What every scenario shares: the options common to all, the manager each one starts, the
//! `pgbench` and SQLite references (each measured once per invocation), where the cores
//! went during a step, and where results go.

pub mod f1;
pub mod f2;
pub mod f3;
pub mod f4;
pub mod q1;
pub mod suite;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use switchboard_client::Client;
use tokio::sync::Mutex;

use crate::BenchError;
use crate::fleet::{Fleet, Layout};
use crate::load::Recorder;
use crate::manager::{Launch, Manager, StoreKind, manager_binary};
use crate::metrics::{self, Histogram, Scrape};
use crate::postgres::{self, Monitor, Reading, Reference};
use crate::procfs::{self, Machine};
use crate::report::write_json;
use crate::sqlite;

/// The PostgreSQL server used when neither `--database-url` nor `DATABASE_URL` names one.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Options of every scenario.
#[derive(clap::Args, Debug, Clone)]
pub struct Common {
    /// The PostgreSQL server (any database on it): each run makes a fresh database there
    /// and drops it at the end [default: postgres://postgres@127.0.0.1:5432/postgres].
    #[arg(long, env = "DATABASE_URL", global = true, hide_env_values = true)]
    pub database_url: Option<String>,
    /// Drive this manager instead of starting one (its store is whatever it was started on;
    /// --store then only labels the results and picks the reference). F3 and F4 take
    /// several, comma-separated: replicas on one store, the fleet spread over them.
    #[arg(long, value_name = "URL", value_delimiter = ',', global = true, requires = "api_key")]
    pub manager: Vec<String>,
    /// An API key with every permission on --manager.
    #[arg(long, env = "SWITCHBOARD_API_KEY", global = true, hide_env_values = true)]
    pub api_key: Option<String>,
    /// The process ids of --manager, in the same order, to read memory and CPU time from
    /// /proc.
    #[arg(long, value_delimiter = ',', global = true)]
    pub manager_pid: Vec<u32>,
    /// F3 and F4: start this many managers on one fresh PostgreSQL database and spread the
    /// fleet over them (delegate `i` registers with, and opens its socket to, replica
    /// `i % N`).
    #[arg(long, default_value_t = 1, global = true)]
    pub replicas: usize,
    /// F3 and F4: processes the fleet runs in (each holds one socket per delegate of its
    /// share, under the open-file limit) [default: as few as that limit allows].
    #[arg(long, global = true)]
    pub drivers: Option<usize>,
    /// The `switchboard` binary to start [default: the one next to this executable].
    #[arg(long, value_name = "PATH", global = true)]
    pub manager_bin: Option<PathBuf>,
    /// Where the JSON, the charts and the managers' logs go [default: target/bench].
    #[arg(long, value_name = "DIR", global = true)]
    pub out: Option<PathBuf>,
    /// The manager's PostgreSQL pool size, and pgbench's client count.
    #[arg(long, default_value_t = 16, global = true)]
    pub pool: u32,
    /// Source addresses (127.0.0.1 to 127.0.0.N) the delegates connect from [default: 4,
    /// or one per 10,000 delegates].
    #[arg(long, global = true)]
    pub sources: Option<usize>,
    /// The pgbench executable.
    #[arg(long, value_name = "PATH", default_value = "pgbench", global = true)]
    pub pgbench: PathBuf,
    /// How long each pgbench script runs.
    #[arg(long, default_value_t = 10, global = true)]
    pub reference_secs: u64,
}

/// One invocation's shared state.
#[derive(Debug)]
pub struct Ctx {
    pub common: Common,
    pub out: PathBuf,
    pub machine: Machine,
    /// For `/metrics`.
    pub http: reqwest::Client,
    /// The pgbench figures once measured (`Some(None)`: measuring failed).
    reference: Mutex<Option<Option<Reference>>>,
    /// The SQLite single-row INSERT figures once measured, likewise.
    sqlite_reference: Mutex<Option<Option<sqlite::Reference>>>,
}

/// The SQLite reference's loop: 3 s, or `--reference-secs` when that is shorter (smoke).
const SQLITE_REFERENCE: Duration = Duration::from_secs(3);

impl Ctx {
    pub fn new(common: Common) -> Result<Ctx, BenchError> {
        let out = match &common.out {
            Some(dir) => dir.clone(),
            None => default_out_dir()?,
        };
        std::fs::create_dir_all(&out)?;
        Ok(Ctx {
            common,
            out,
            machine: Machine::describe(),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .map_err(|e| BenchError::Setup(e.to_string()))?,
            reference: Mutex::new(None),
            sqlite_reference: Mutex::new(None),
        })
    }

    pub fn database_url(&self) -> &str {
        self.common.database_url.as_deref().unwrap_or(DEFAULT_DATABASE_URL)
    }

    /// Source addresses for a fleet of `delegates`.
    pub fn sources(&self, delegates: usize) -> usize {
        self.common.sources.unwrap_or_else(|| delegates.div_ceil(10_000).max(4))
    }

    /// The manager to drive: `--manager`, or a fresh one on `store` with `settings`
    /// (`SWITCHBOARD_*` pairs), logging to `<out>/<label>.manager.log`.
    pub async fn manager(
        &self,
        store: StoreKind,
        label: &str,
        settings: &[(&str, String)],
    ) -> Result<Manager, BenchError> {
        let mut managers = self.managers(store, label, settings, 1).await?;
        managers.truncate(1);
        managers.pop().ok_or_else(|| BenchError::Manager("no manager".into()))
    }

    /// The managers F3 and F4 drive: every `--manager`, or `replicas` fresh ones on one
    /// store (see [`Ctx::manager`]); stop them with [`crate::manager::stop_all`].
    pub async fn managers(
        &self,
        store: StoreKind,
        label: &str,
        settings: &[(&str, String)],
        replicas: usize,
    ) -> Result<Vec<Manager>, BenchError> {
        if let (false, Some(key)) = (self.common.manager.is_empty(), &self.common.api_key) {
            return Ok(self
                .common
                .manager
                .iter()
                .enumerate()
                .map(|(n, url)| Manager::external(url, key, self.common.manager_pid.get(n).copied()))
                .collect());
        }
        let launch = Launch {
            binary: manager_binary(self.common.manager_bin.as_deref())?,
            store,
            database_url: self.database_url().to_owned(),
            pool: self.common.pool,
            log: self.out.join(format!("{label}.manager.log")),
            settings: settings.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect(),
        };
        Manager::start_replicas(&launch, replicas).await
    }

    /// How many processes a fleet of `delegates` runs in: `--drivers`, else as few as
    /// keep each under the open-file limit.
    pub fn drivers(&self, delegates: usize) -> usize {
        let per_process = self
            .machine
            .open_files_limit
            .saturating_sub(crate::scenario::f3::HEADROOM)
            .max(1);
        self.common
            .drivers
            .unwrap_or_else(|| delegates.div_ceil(usize::try_from(per_process).unwrap_or(usize::MAX)))
            .max(1)
    }

    /// The pgbench reference for a PostgreSQL scenario, measured on first use.
    pub async fn reference(&self, store: StoreKind) -> Option<Reference> {
        if store != StoreKind::Postgres {
            return None;
        }
        let mut cached = self.reference.lock().await;
        if let Some(reference) = cached.as_ref() {
            return reference.clone();
        }
        eprintln!(
            "reference: pgbench single-row INSERT and UPDATE, {} clients, {} s each",
            self.common.pool, self.common.reference_secs
        );
        let measured = postgres::reference(
            &self.common.pgbench,
            self.database_url(),
            self.common.pool,
            self.common.reference_secs,
        )
        .await;
        let reference = match measured {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("reference not measured: {e}");
                None
            }
        };
        *cached = Some(reference.clone());
        reference
    }

    /// The SQLite reference for an SQLite scenario, measured on first use.
    pub async fn sqlite_reference(&self, store: StoreKind) -> Option<sqlite::Reference> {
        if store != StoreKind::Sqlite {
            return None;
        }
        let mut cached = self.sqlite_reference.lock().await;
        if let Some(reference) = cached.as_ref() {
            return reference.clone();
        }
        let duration = SQLITE_REFERENCE.min(Duration::from_secs(self.common.reference_secs.max(1)));
        eprintln!(
            "reference: SQLite single-row INSERT commits (WAL, synchronous=FULL), {} s",
            duration.as_secs()
        );
        let reference = match sqlite::reference(duration).await {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("SQLite reference not measured: {e}");
                None
            }
        };
        *cached = Some(reference.clone());
        reference
    }

    /// Writes a scenario's JSON, with the machine and the reference beside its figures.
    pub fn write(
        &self,
        scenario: &str,
        store: StoreKind,
        reference: Option<&Reference>,
        mut body: serde_json::Value,
    ) -> Result<PathBuf, BenchError> {
        if let Some(map) = body.as_object_mut() {
            map.insert("scenario".into(), json!(scenario));
            map.insert("store".into(), json!(store.as_str()));
            map.insert("machine".into(), json!(self.machine));
            map.insert("reference".into(), json!(reference));
            map.insert(
                "manager".into(),
                json!(if !self.common.manager.is_empty() {
                    "external"
                } else {
                    "started"
                }),
            );
        }
        let path = write_json(&self.out, scenario, store.as_str(), &body)?;
        println!("wrote {}", path.display());
        Ok(path)
    }

    pub fn chart_path(&self, scenario: &str, store: StoreKind, what: &str) -> PathBuf {
        self.out.join(format!("{scenario}-{}-{what}.svg", store.as_str()))
    }
}

/// `target/bench` of the target directory this executable was built in, else
/// `./target/bench`.
fn default_out_dir() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .find(|dir| dir.file_name().is_some_and(|name| name == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"));
    Ok(target.join("bench"))
}

/// A manager with a fleet of connected delegates and an operator client: what the
/// load scenarios (F1, F2) run on.
#[derive(Debug)]
pub struct Rig {
    pub store: StoreKind,
    pub manager: Manager,
    /// A connection to the manager's PostgreSQL database, when the tool made it: its
    /// backends and commits at each step's start and end.
    monitor: Option<Monitor>,
    pub operator: Client,
    pub fleet: Fleet,
    pub layout: Layout,
    pub recorder: Arc<Recorder>,
}

impl Rig {
    /// Starts a manager and connects `delegates` delegates of `capacity` to it.
    pub async fn up(
        ctx: &Ctx,
        store: StoreKind,
        label: &str,
        delegates: usize,
        capacity: u32,
    ) -> Result<Rig, BenchError> {
        let manager = ctx.manager(store, label, &[]).await?;
        let monitor = match manager.database_url() {
            Some(url) => match Monitor::connect(url).await {
                Ok(monitor) => Some(monitor),
                Err(e) => {
                    eprintln!("{label}: PostgreSQL's backends and commits not measured: {e}");
                    None
                }
            },
            None => None,
        };
        match Self::fleet(ctx, &manager, label, delegates, capacity).await {
            Ok((operator, layout, recorder, fleet)) => Ok(Rig {
                store,
                monitor,
                manager,
                operator,
                fleet,
                layout,
                recorder,
            }),
            Err(e) => {
                if let Some(monitor) = monitor {
                    monitor.close().await;
                }
                // Stopped properly, so that its fresh database is dropped too.
                manager.stop().await;
                Err(e)
            }
        }
    }

    /// Turns the queue policy on (issue 18): the tasks carry a concurrency key and a retry
    /// policy, the org a weight, the account a default retry policy.
    pub async fn with_policies(&mut self, keys: u64) -> Result<(), BenchError> {
        self.layout.policies = Some(keys);
        let (account, org) = self.layout.org_scope();
        let set = |org: Option<switchboard_domain::Ident>, weight: Option<u32>, retry: Option<serde_json::Value>| {
            switchboard_protocol::policies::SetScopePolicy {
                account: account.clone(),
                org,
                project: None,
                weight,
                retry: retry.and_then(|r| serde_json::from_value(r).ok()),
            }
        };
        for body in [
            set(Some(org.clone()), Some(2), None),
            set(
                None,
                None,
                Some(serde_json::json!({"on": ["delegate_lost"], "initial_delay_ms": 500})),
            ),
        ] {
            self.operator
                .set_scope_policy(&body)
                .await
                .map_err(|e| BenchError::Setup(format!("cannot set a scope policy: {e}")))?;
        }
        Ok(())
    }

    /// Registers and connects the fleet of [`Rig::up`].
    async fn fleet(
        ctx: &Ctx,
        manager: &Manager,
        label: &str,
        delegates: usize,
        capacity: u32,
    ) -> Result<(Client, Layout, Arc<Recorder>, Fleet), BenchError> {
        let operator = Client::new(manager.url.clone(), Some(manager.api_key.clone()))
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let layout = Layout::new(delegates)?;
        let recorder = Arc::new(Recorder::default());
        let mut fleet = Fleet::new(
            &operator,
            &manager.url,
            layout.clone(),
            capacity,
            ctx.sources(delegates),
            Arc::clone(&recorder),
        )
        .await?;
        let bar = progress(&format!("{label}: registering {delegates} delegates"));
        fleet.grow(delegates, &bar).await?;
        bar.finish_and_clear();
        let bar = progress(&format!("{label}: connecting"));
        let connected = fleet.wait_connected(delegates, Duration::from_secs(300), &bar).await;
        bar.finish_and_clear();
        if connected < delegates {
            fleet.stop().await;
            return Err(BenchError::Manager(format!(
                "only {connected} of {delegates} delegates connected within 5 minutes"
            )));
        }
        Ok((operator, layout, recorder, fleet))
    }

    /// Waits (at most `patience`) until the manager has finished every task submitted to
    /// it, so that the next step starts without a backlog.
    pub async fn wait_idle(&self, ctx: &Ctx, patience: Duration) {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let Ok(scrape) = self.manager.scrape(&ctx.http).await else {
                return;
            };
            let submitted = scrape.value("switchboard_tasks_submitted_total");
            let finished: f64 = scrape
                .by_label("switchboard_tasks_finished_total", "state")
                .values()
                .sum();
            if finished >= submitted {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// What the manager, its database and the bench have done so far, to compare with
    /// after a step.
    pub async fn snapshot(&self, ctx: &Ctx) -> Snapshot {
        let postgres = match &self.monitor {
            Some(monitor) => match monitor.read().await {
                Ok(reading) => {
                    let backend_cpu = reading
                        .backends
                        .iter()
                        .filter_map(|&pid| Some((pid, procfs::postgres_cpu_seconds(pid)?)))
                        .collect();
                    Some((reading, backend_cpu))
                }
                Err(e) => {
                    eprintln!("PostgreSQL not read: {e}");
                    None
                }
            },
            None => None,
        };
        Snapshot {
            scrape: self.manager.scrape(&ctx.http).await.unwrap_or_default(),
            cpu_seconds: self.manager.cpu_seconds(),
            bench_cpu_seconds: procfs::own_cpu_seconds(),
            postgres,
            at: Instant::now(),
        }
    }

    /// Where the manager's time went since `before`, per task completed in between.
    pub async fn usage_since(&self, ctx: &Ctx, before: &Snapshot, completed: u64) -> Usage {
        let after = self.snapshot(ctx).await;
        let elapsed = after.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let per_task = |delta: f64| delta / completed.max(1) as f64;
        let delta = |series: &str, label: &str| -> BTreeMap<String, f64> {
            let old = before.scrape.by_label(series, label);
            after
                .scrape
                .by_label(series, label)
                .into_iter()
                .map(|(op, n)| {
                    let d = n - old.get(&op).copied().unwrap_or(0.0);
                    (op, d)
                })
                .filter(|(_, d)| *d > 0.0)
                .collect()
        };
        let calls = delta("switchboard_store_call_seconds_count", "op");
        let seconds = delta("switchboard_store_call_seconds_sum", "op");
        let decisions = after.scrape.value("switchboard_assignment_decision_seconds_count")
            - before.scrape.value("switchboard_assignment_decision_seconds_count");
        let decision_seconds = after.scrape.value("switchboard_assignment_decision_seconds_sum")
            - before.scrape.value("switchboard_assignment_decision_seconds_sum");
        let used = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| (a - b).max(0.0));
        let manager_cpu = used(after.cpu_seconds, before.cpu_seconds);
        let bench_cpu = used(after.bench_cpu_seconds, before.bench_cpu_seconds);
        let postgres_cpu = match (&before.postgres, &after.postgres) {
            (Some((_, at_start)), Some((_, at_end))) => Some(backends_cpu(at_start, at_end)),
            _ => None,
        };
        let writes: f64 = calls
            .iter()
            .filter(|(op, _)| !metrics::is_read(op))
            .map(|(_, n)| n)
            .sum();
        let batches = Histogram::read(&after.scrape, metrics::BATCH_ITEMS)
            .zip(Histogram::read(&before.scrape, metrics::BATCH_ITEMS))
            .map(|(a, b)| a.since(&b));
        let (commits, commits_from) = match (self.store, &before.postgres, &after.postgres) {
            (StoreKind::Postgres, Some((start, _)), Some((end, _))) => (
                Some((end.xact_commit - start.xact_commit).max(0) as f64),
                "pg_stat_database.xact_commit",
            ),
            (StoreKind::Postgres, _, _) => (None, "unknown: the database is not the tool's own"),
            (StoreKind::Sqlite, _, _) => match &batches {
                Some(b) => (Some(b.count + other_writes(&calls)), "batches + other store writes"),
                None => (None, "unknown: the manager exports no switchboard_store_batch_items"),
            },
        };
        let write_transactions = match (&before.postgres, &after.postgres) {
            (Some((start, _)), Some((end, _))) => Some((end.next_xid - start.next_xid).max(0) as f64),
            _ => None,
        };
        let percent = |seconds: f64| seconds / elapsed * 100.0;
        let micros = |seconds: f64| per_task(seconds * 1e6);
        Usage {
            cpu_percent: manager_cpu.map(percent),
            cpu_us_per_task: manager_cpu.map(micros),
            postgres_cpu_percent: postgres_cpu.map(|(s, _)| percent(s)),
            postgres_cpu_us_per_task: postgres_cpu.map(|(s, _)| micros(s)),
            postgres_backends: postgres_cpu.map(|(_, n)| n),
            bench_cpu_percent: bench_cpu.map(percent),
            bench_cpu_us_per_task: bench_cpu.map(micros),
            commits_per_task: commits.map(per_task),
            commits_from,
            write_transactions_per_task: write_transactions.map(per_task),
            batches: batches.map(|b| BatchSizes {
                count: b.count,
                mean: b.mean(),
                p50: b.quantile(0.5),
                p99: b.quantile(0.99),
            }),
            store_writes_per_task: per_task(writes),
            store_calls_per_task: calls.iter().map(|(op, n)| (op.clone(), per_task(*n))).collect(),
            store_ms_per_task: seconds
                .iter()
                .map(|(op, s)| (op.clone(), per_task(s * 1000.0)))
                .collect(),
            decisions_per_task: per_task(decisions),
            decision_mean_ms: (decisions > 0.0).then(|| decision_seconds / decisions * 1000.0),
        }
    }

    pub async fn down(self) {
        if let Some(monitor) = self.monitor {
            monitor.close().await;
        }
        self.fleet.stop().await;
        self.manager.stop().await;
    }
}

/// The CPU PostgreSQL's backends used between two readings, in seconds, and how many
/// backends that counts. A backend seen at both ends counts its difference; one seen only
/// at the end (it connected meanwhile) counts everything it used; one seen at the start
/// and gone at the end counts nothing, as what it used after the start can no longer be
/// read. A backend reused by a new process under the same pid would count negative, so
/// it counts from zero instead.
fn backends_cpu(at_start: &BTreeMap<u32, f64>, at_end: &BTreeMap<u32, f64>) -> (f64, usize) {
    let used = at_end
        .iter()
        .map(|(pid, end)| match at_start.get(pid) {
            Some(start) if start <= end => end - start,
            _ => *end,
        })
        .sum();
    (used, at_end.len())
}

/// The store operations whose writes go through the committer: their commits are the
/// batches the histogram counts, not one each.
const BATCHED: &[&str] = &[
    "write_tasks",
    "submit_task",
    "insert_task",
    "claim_task",
    "transition_task",
    "record_progress",
    "append_selection_log",
    "append_audit",
];

/// Store writes that commit on their own (not through the committer's batches).
fn other_writes(calls: &BTreeMap<String, f64>) -> f64 {
    calls
        .iter()
        .filter(|(op, _)| !metrics::is_read(op) && !BATCHED.contains(&op.as_str()))
        .map(|(_, n)| n)
        .sum()
}

/// The manager's counters, its CPU time, PostgreSQL's and the bench's at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    scrape: Scrape,
    cpu_seconds: Option<f64>,
    bench_cpu_seconds: Option<f64>,
    /// The database's reading and the CPU time of each backend in it that `/proc` shows.
    postgres: Option<(Reading, BTreeMap<u32, f64>)>,
    at: Instant,
}

/// Batches of task writes the manager committed during a step, from its
/// `switchboard_store_batch_items` histogram (p50 and p99 estimated from the buckets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct BatchSizes {
    pub count: f64,
    pub mean: Option<f64>,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
}

/// Where the cores went during a step: the profile beside each figure. `None` is
/// unknown (not readable on this machine, or not exported by this manager).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Usage {
    /// The manager's CPU time over the step, in % of one core.
    pub cpu_percent: Option<f64>,
    /// The manager's CPU time per completed task, in µs.
    pub cpu_us_per_task: Option<f64>,
    /// The CPU of PostgreSQL's backends serving the manager's database (see
    /// [`backends_cpu`]), in % of one core and in µs per completed task.
    pub postgres_cpu_percent: Option<f64>,
    pub postgres_cpu_us_per_task: Option<f64>,
    /// How many backends that counted.
    pub postgres_backends: Option<usize>,
    /// The bench's own CPU (its fleet, submitter and scrapes), likewise.
    pub bench_cpu_percent: Option<f64>,
    pub bench_cpu_us_per_task: Option<f64>,
    /// Store commits per completed task; where they were counted is `commits_from`.
    pub commits_per_task: Option<f64>,
    pub commits_from: &'static str,
    /// PostgreSQL: transactions that wrote, per completed task (the server's transaction
    /// id counter, exact and immediate, but server-wide).
    pub write_transactions_per_task: Option<f64>,
    pub batches: Option<BatchSizes>,
    pub store_writes_per_task: f64,
    /// Store calls per completed task, by operation.
    pub store_calls_per_task: BTreeMap<String, f64>,
    /// Milliseconds spent in store calls per completed task, by operation (calls overlap).
    pub store_ms_per_task: BTreeMap<String, f64>,
    pub decisions_per_task: f64,
    /// The engine's mean time per decision.
    pub decision_mean_ms: Option<f64>,
}

impl Usage {
    /// The `n` operations with the most store time per task, as `op 1.2 ms (3.0 calls)`.
    pub fn top_store_ops(&self, n: usize) -> String {
        let mut ops: Vec<(&String, &f64)> = self.store_ms_per_task.iter().collect();
        ops.sort_by(|a, b| b.1.total_cmp(a.1));
        ops.iter()
            .take(n)
            .map(|(op, ms)| {
                let calls = self.store_calls_per_task.get(*op).copied().unwrap_or(0.0);
                format!("{op} {ms:.2} ms ({calls:.1} calls)")
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A progress bar of counted items (hidden when stderr is not a terminal).
pub fn progress(message: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{elapsed_precise}] {wide_bar} {pos}/{len} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_prefix(message.to_owned());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backends_count_what_they_used_between_the_readings_they_were_seen_in() {
        let at_start = BTreeMap::from([(10, 1.0), (11, 2.0), (12, 5.0)]);
        // 10 used 0.5 s; 11 is gone (nothing readable); 13 connected meanwhile (all of
        // it); 12 is a new process under a reused pid (from zero).
        let at_end = BTreeMap::from([(10, 1.5), (12, 0.25), (13, 0.75)]);
        let (used, backends) = backends_cpu(&at_start, &at_end);
        assert!((used - 1.5).abs() < 1e-9, "{used}");
        assert_eq!(backends, 3);
    }

    #[test]
    fn the_committers_own_store_call_is_not_counted_again_beside_its_batches() {
        let calls = BTreeMap::from([
            ("write_tasks".to_owned(), 10.0),
            ("transition_task".to_owned(), 4.0),
            ("submit_task".to_owned(), 3.0),
            ("register_instance".to_owned(), 2.0),
            ("get_task".to_owned(), 7.0),
        ]);
        assert_eq!(other_writes(&calls), 2.0);
    }
}
