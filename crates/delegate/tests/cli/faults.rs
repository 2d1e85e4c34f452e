//! The fault-injection suite (issue 6): several `switchboard serve` processes on one
//! PostgreSQL schema behind one load-balanced URL, reference delegates that each keep
//! their own run log, a submitter at a steady rate, and faults on a schedule: replicas
//! killed with SIGKILL and restarted, the database cut and restored (through a relay),
//! a delegate frozen past the liveness limit and resumed, a delegate killed and
//! restarted, every connection through the load balancer dropped at once.
//!
//! At the end it waits (bounded) until every task has ended and checks, from the store and
//! from every run log, the invariants in `check.rs`: every acknowledged task is accounted
//! for, none succeeded twice, none ran on two delegates at once beyond its `max_attempts`,
//! and no stale attempt's result was accepted. Assertions are about those invariants only,
//! never about timings.
//!
//! `SWITCHBOARD_FAULTS` picks the form: unset or `short` (what `cargo test` and `.ci/run`
//! run: about a minute), `long` (100,000 tasks at 160 a second, so 625 s, with the
//! fault cycle repeated every minute; `SWITCHBOARD_FAULTS_RATE=N` submits the same 100,000
//! at N a second instead, for a machine that cannot keep up with 160), `off` (skipped). Without
//! `DATABASE_URL` it is skipped with a notice, except
//! under `CI=true`, where PostgreSQL is required. See docs/operations.md.

#[path = "faults/check.rs"]
mod check;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::Row as _;
use switchboard_client::Client;
use switchboard_delegate::runlog::RunLog;
use switchboard_domain::TaskId;
use switchboard_protocol::tasks::SubmitTask;
use tokio::sync::Semaphore;

use check::Row;
use switchboard_testkit::{Balancer, Relay, drop_schema, postgres_schema};

const ADMIN: &str = "fault-suite-admin-key-0123456789";
/// How long a process may take to come up (a replica ready, a delegate registered).
const PATIENCE: Duration = Duration::from_secs(30);

/// How big a run is and which faults it injects when.
#[derive(Debug)]
struct Scale {
    name: &'static str,
    replicas: usize,
    delegates: usize,
    tasks: usize,
    /// Submissions a second.
    rate: u32,
    /// Faults by offset from the start of submission; one cycle in the short form,
    /// repeated every minute in the long one.
    faults: Vec<(Duration, Fault)>,
    /// How long to wait after the last submission for every task to end.
    settle: Duration,
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// SIGKILL a replica; it is started again by a later `StartReplica`.
    KillReplica(usize),
    StartReplica(usize),
    /// Cut the relay in front of PostgreSQL (every connection dropped, new ones refused).
    CutDatabase,
    RestoreDatabase,
    /// SIGSTOP a delegate (past the liveness limit, so its running tasks are re-queued).
    Freeze(usize),
    /// SIGCONT it: it reconnects and reports what it ran meanwhile (stale by then).
    Thaw(usize),
    /// SIGKILL a delegate and start it again (a new instance, the same run log).
    KillDelegate(usize),
    /// Drop every connection through the load balancer (all delegates' sockets).
    ResetConnections,
}

impl Scale {
    fn from_env() -> Option<Scale> {
        let s = Duration::from_secs;
        let cycle = |at: u64, replicas: usize, delegates: usize, n: usize| {
            let (a, b) = (n % replicas, (n + 1) % replicas);
            let (frozen, killed) = ((2 * n + 1) % delegates, (2 * n + 2) % delegates);
            vec![
                (s(at + 4), Fault::KillReplica(a)),
                (s(at + 6), Fault::StartReplica(a)),
                (s(at + 9), Fault::CutDatabase),
                (s(at + 11), Fault::RestoreDatabase),
                (s(at + 13), Fault::Freeze(frozen)),
                (s(at + 17), Fault::KillDelegate(killed)),
                (s(at + 20), Fault::Thaw(frozen)),
                (s(at + 22), Fault::KillReplica(b)),
                (s(at + 24), Fault::StartReplica(b)),
                (s(at + 27), Fault::ResetConnections),
            ]
        };
        match std::env::var("SWITCHBOARD_FAULTS").as_deref() {
            Ok("off") => None,
            Ok("long") => {
                // 100,000 tasks whatever the rate: 625 s of submission at the default 160 a
                // second, longer at a lower rate; a fault cycle every minute throughout.
                let (tasks, rate) = (100_000, long_rate());
                let minutes = (tasks as u64).div_ceil(u64::from(rate) * 60).max(10);
                Some(Scale {
                    name: "long",
                    replicas: 3,
                    delegates: 30,
                    tasks,
                    rate,
                    faults: (0..minutes as usize)
                        .flat_map(|n| cycle(60 * n as u64, 3, 30, n))
                        .collect(),
                    settle: s(300),
                })
            }
            Ok("short") | Err(_) => Some(Scale {
                name: "short",
                replicas: 3,
                delegates: 8,
                tasks: 330,
                rate: 10, // 33 s of submission
                faults: cycle(0, 3, 8, 0),
                settle: s(60),
            }),
            Ok(other) => panic!("SWITCHBOARD_FAULTS must be short, long or off, not {other:?}"),
        }
    }
}

/// The long form's submission rate: `SWITCHBOARD_FAULTS_RATE`, else 160 a second.
fn long_rate() -> u32 {
    match std::env::var("SWITCHBOARD_FAULTS_RATE") {
        Ok(v) => v
            .parse()
            .ok()
            .filter(|r| *r > 0)
            .unwrap_or_else(|| panic!("SWITCHBOARD_FAULTS_RATE must be a positive whole number, not {v:?}")),
        Err(_) => 160,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_replica_database_and_delegate_faults_nothing_is_lost_or_run_twice() {
    let Some(scale) = Scale::from_env() else {
        eprintln!("fault suite skipped: SWITCHBOARD_FAULTS=off");
        return;
    };
    let Some(switchboard_testkit::PgSchema { url, name: schema }) = postgres_schema("sbfault", "the fault suite").await
    else {
        return;
    };
    let began = Instant::now();
    let server = Path::new(env!("CARGO_BIN_EXE_switchboard-delegate")).with_file_name("switchboard");
    assert!(
        server.is_file(),
        "the fault suite needs the manager binary at {} (cargo builds it for this crate's tests \
         through the switchboard-server dev-dependency; run `cargo build -p switchboard-server`)",
        server.display()
    );
    let work = tempfile::Builder::new()
        .prefix("switchboard-faults-")
        .tempdir()
        .unwrap();

    // The network: a relay in front of PostgreSQL, a load balancer in front of the replicas.
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    let upstream = format!("{}:{}", options.get_host(), options.get_port());
    let relay = Relay::start(upstream.clone()).await;
    let relayed = if url.contains(&upstream) {
        url.replacen(&upstream, &relay.address, 1)
    } else {
        url.replacen(&format!("@{}/", options.get_host()), &format!("@{}/", relay.address), 1)
    };
    assert!(relayed.contains(&relay.address), "cannot point {url} at the relay");
    let ports: Vec<u16> = (0..scale.replicas).map(|_| free_port()).collect();
    let balancer = Balancer::start().await;
    balancer.set_upstreams(ports.iter().map(|p| format!("127.0.0.1:{p}")));
    let lb = format!("http://{}", balancer.address);

    // The replicas, one after the other (the first migrates the fresh schema).
    let mut replicas: Vec<Replica> = ports
        .iter()
        .enumerate()
        .map(|(i, &port)| Replica {
            port,
            env: replica_env(port, &relayed, &lb),
            log: work.path().join(format!("replica-{i}.log")),
            binary: server.clone(),
            child: None,
        })
        .collect();
    for replica in &mut replicas {
        replica.start().await;
    }

    let client = Client::new(lb.clone(), Some(ADMIN.to_owned())).unwrap();
    let token = client
        .create_token(&serde_json::from_value(serde_json::json!({"name": "fleet", "account": "acme"})).unwrap())
        .await
        .unwrap()
        .token;
    let mut delegates: Vec<Delegate> = (0..scale.delegates)
        .map(|i| Delegate {
            name: format!("d{i}"),
            dir: work.path().join(format!("d{i}")),
            manager: lb.clone(),
            token: token.expose().to_owned(),
            child: None,
        })
        .collect();
    let registered: Vec<_> = delegates.iter_mut().map(Delegate::start).collect();
    for line in registered {
        let line = tokio::time::timeout(PATIENCE, line)
            .await
            .expect("registered in time")
            .unwrap();
        assert!(line.starts_with("switchboard-delegate registered as "), "{line:?}");
    }
    let started_up = began.elapsed();

    // Submission and faults at once; faults are scheduled by time, which decides only
    // when they happen, never what is asserted.
    let start = Instant::now();
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let refused = Arc::new(Mutex::new(0usize));
    let submitting = submit(&scale, &client, &acknowledged, &refused);
    let injecting = async {
        let mut done = Vec::new();
        for &(at, fault) in &scale.faults {
            tokio::time::sleep_until((start + at).into()).await;
            match fault {
                Fault::KillReplica(i) => replicas[i].kill(),
                Fault::StartReplica(i) => replicas[i].start().await,
                Fault::CutDatabase => relay.cut(),
                Fault::RestoreDatabase => relay.restore(),
                Fault::Freeze(i) => delegates[i].signal("STOP"),
                Fault::Thaw(i) => delegates[i].signal("CONT"),
                Fault::KillDelegate(i) => {
                    delegates[i].kill();
                    drop(delegates[i].start());
                }
                Fault::ResetConnections => balancer.reset(),
            }
            done.push(fault);
        }
        done
    };
    let ((), injected) = tokio::join!(submitting, injecting);
    let submitted_in = start.elapsed();

    // Wait (bounded) for every task to end, then stop the delegates so their logs are whole.
    let db = sqlx::PgPool::connect(&url).await.unwrap();
    let settle = Instant::now();
    loop {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM tasks WHERE state IN ('queued', 'assigned', 'running')")
                .fetch_one(&db)
                .await
                .unwrap();
        if open == 0 {
            break;
        }
        if settle.elapsed() > scale.settle {
            eprintln!(
                "{open} tasks still open after {:?}; logs in {}",
                scale.settle,
                keep(work)
            );
            panic!(
                "{open} tasks did not end within {:?} after the last submission",
                scale.settle
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let settled_in = settle.elapsed();
    for d in &mut delegates {
        d.stop();
    }

    let rows = sqlx::query("SELECT id::text, state, attempt, runs, max_attempts FROM tasks")
        .fetch_all(&db)
        .await
        .unwrap();
    let store: HashMap<TaskId, Row> = rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            let row = Row {
                state: r.get(1),
                attempt: r.get::<i32, _>(2) as u32,
                runs: r.get::<i32, _>(3) as u32,
                max_attempts: r.get::<i32, _>(4) as u32,
            };
            (id.parse().unwrap(), row)
        })
        .collect();
    let latency: f64 =
        sqlx::query_scalar("SELECT COALESCE(max(EXTRACT(EPOCH FROM finished_at - created_at)), 0)::float8 FROM tasks")
            .fetch_one(&db)
            .await
            .unwrap();
    let logs: Vec<(String, Vec<_>)> = delegates
        .iter()
        .map(|d| (d.name.clone(), RunLog::read(&d.run_log()).unwrap_or_default()))
        .collect();
    let acknowledged = acknowledged.lock().unwrap().clone();
    let refused = *refused.lock().unwrap();
    drop(db);
    drop(replicas);
    drop_schema(&url, &schema).await;

    let verdict = check::verify(&acknowledged, &store, &logs);
    let mut states: BTreeMap<&str, usize> = BTreeMap::new();
    for row in store.values() {
        *states.entry(row.state.as_str()).or_default() += 1;
    }
    let requeues: u32 = store.values().map(|r| r.runs.saturating_sub(1)).sum();
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    for f in &injected {
        let name = format!("{f:?}");
        *faults
            .entry(name.split('(').next().unwrap_or_default().to_owned())
            .or_default() += 1;
    }
    let mut summary = format!(
        "\nfault suite ({} form): {} replicas, {} delegates, {}/s\n",
        scale.name, scale.replicas, scale.delegates, scale.rate
    );
    let mut line = |k: &str, v: String| summary.push_str(&format!("  {k:<28} {v}\n"));
    line("start-up", format!("{started_up:.1?}"));
    line("submitting", format!("{submitted_in:.1?}"));
    line("settling after", format!("{settled_in:.1?}"));
    line("acknowledged", acknowledged.len().to_string());
    line("submissions not acknowledged", refused.to_string());
    line("tasks in the store", store.len().to_string());
    for (state, n) in &states {
        line(&format!("  {state}"), n.to_string());
    }
    line("faults injected", format!("{faults:?}"));
    line("re-queued runs", requeues.to_string());
    if let Ok(tally) = &verdict {
        line("attempts run (run logs)", tally.runs.to_string());
        line("stale results refused", tally.stale_results.to_string());
        line("tasks run twice at once", tally.overlapping.to_string());
    }
    line("max latency (submit to end)", format!("{latency:.2} s"));
    line("wall time", format!("{:.1?}", began.elapsed()));
    eprintln!("{summary}");
    if let Err(problems) = verdict {
        let shown: Vec<_> = problems.iter().take(20).collect();
        panic!(
            "{} invariant violations (logs in {}):\n{shown:#?}",
            problems.len(),
            keep(work)
        );
    }
    assert_eq!(faults.values().sum::<usize>(), scale.faults.len());
}

/// Submits `scale.tasks` tasks at `scale.rate` a second through the load balancer; each
/// answered 200/201 is acknowledged, anything else (503 during an outage, a connection
/// cut by a dying replica) is counted and not retried.
async fn submit(scale: &Scale, client: &Client, acknowledged: &Mutex<Vec<TaskId>>, refused: &Mutex<usize>) {
    let in_flight = Arc::new(Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / scale.rate);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut jobs = tokio::task::JoinSet::new();
    for n in 0..scale.tasks {
        tick.tick().await;
        let permit = in_flight.clone().acquire_owned().await.unwrap();
        let client = client.clone();
        jobs.spawn(async move {
            let _permit = permit;
            let answer = tokio::time::timeout(Duration::from_secs(15), client.submit_task(&task(n), None)).await;
            match answer {
                Ok(Ok(submitted)) => Some(submitted.task.id),
                _ => None,
            }
        });
    }
    while let Some(done) = jobs.join_next().await {
        match done.unwrap() {
            Some(id) => acknowledged.lock().unwrap().push(id),
            None => *refused.lock().unwrap() += 1,
        }
    }
}

/// The `n`th task: mostly short sleeps (so some are running whenever a fault hits), some
/// echoes; up to 3 attempts, and an execution timeout that ends a run whose result report
/// was lost.
fn task(n: usize) -> SubmitTask {
    let mut body = if n.is_multiple_of(5) {
        serde_json::json!({"type": "echo", "payload": {"n": n}})
    } else {
        serde_json::json!({"type": "sleep", "payload": {"ms": 50 + (n * 137) % 750}})
    };
    body["account"] = "acme".into();
    body["max_attempts"] = 3.into();
    body["execution_timeout_ms"] = 5000.into();
    body["wait_for_delegate"] = true.into();
    serde_json::from_value(body).unwrap()
}

fn replica_env(port: u16, database: &str, public: &str) -> Vec<(&'static str, String)> {
    let mut env: Vec<(&'static str, String)> = vec![
        ("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}")),
        ("SWITCHBOARD_DATABASE_URL", database.to_owned()),
        ("SWITCHBOARD_ADMIN_KEY", ADMIN.to_owned()),
        ("SWITCHBOARD_PUBLIC_URL", public.to_owned()),
    ];
    for (k, v) in [
        ("SWITCHBOARD_HEARTBEAT_INTERVAL", "1s"),
        ("SWITCHBOARD_HEARTBEAT_TIMEOUT", "3s"),
        ("SWITCHBOARD_ACKNOWLEDGE_TIMEOUT", "3s"),
        ("SWITCHBOARD_ASSIGN_INTERVAL", "200ms"),
        ("SWITCHBOARD_SOCKET_PING_INTERVAL", "1s"),
        ("SWITCHBOARD_SOCKET_SILENCE_TIMEOUT", "3s"),
        ("SWITCHBOARD_DB_MAX_CONNECTIONS", "8"),
        ("SWITCHBOARD_SHUTDOWN_GRACE", "2s"),
        ("SWITCHBOARD_API_RATE_LIMIT", "0"),
        ("SWITCHBOARD_DELEGATE_RATE_LIMIT", "0"),
        ("SWITCHBOARD_LOG_LEVEL", "info"),
    ] {
        env.push((k, v.to_owned()));
    }
    env
}

/// A `switchboard serve` process on a fixed port (so the load balancer finds it again
/// after a restart); killed when dropped.
struct Replica {
    port: u16,
    env: Vec<(&'static str, String)>,
    log: PathBuf,
    binary: PathBuf,
    child: Option<Child>,
}

impl Replica {
    /// Starts it and waits until `/readyz` answers 200 on its own port.
    async fn start(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(&self.binary)
            .arg("serve")
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        let http = reqwest::Client::new();
        let ready = format!("http://127.0.0.1:{}/readyz", self.port);
        let began = Instant::now();
        loop {
            if let Ok(r) = http.get(&ready).timeout(Duration::from_secs(2)).send().await
                && r.status() == 200
            {
                return;
            }
            assert!(began.elapsed() < PATIENCE, "replica on port {} not ready", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: no drain, no goodbye on its sockets.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A `switchboard-delegate` process with its own run log (kept across restarts); killed
/// when dropped.
struct Delegate {
    name: String,
    dir: PathBuf,
    manager: String,
    token: String,
    child: Option<Child>,
}

impl Delegate {
    fn run_log(&self) -> PathBuf {
        self.dir.join("runs.jsonl")
    }

    /// Starts it; the receiver gets its first stdout line ("registered as ...").
    fn start(&mut self) -> tokio::sync::oneshot::Receiver<String> {
        std::fs::create_dir_all(&self.dir).unwrap();
        let mut child = Command::new(super::BIN)
            .args(["--manager", &self.manager, "--name", "fleet", "--hostname", &self.name])
            .args(["--task-types", "sleep,echo", "--capacity", "4", "--log-dir"])
            .arg(&self.dir)
            .arg("--run-log")
            .arg(self.run_log())
            .env_clear()
            .env("SWITCHBOARD_TOKEN", &self.token)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        self.child = Some(child);
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            let mut reader = std::io::BufReader::new(stdout);
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            let _ = tx.send(line);
            // Keep draining so the delegate never writes into a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        rx
    }

    /// Sends SIGSTOP or SIGCONT to this delegate's own process (never a group).
    fn signal(&self, name: &str) {
        let child = self.child.as_ref().expect("running");
        assert!(child.id() > 1);
        let sent = Command::new("kill")
            .args([format!("-{name}"), child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success(), "kill -{name} {}", child.id());
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM, and SIGKILL if it has not exited within [`PATIENCE`].
    fn stop(&mut self) {
        let Some(child) = self.child.as_mut() else { return };
        if child.try_wait().ok().flatten().is_none() {
            self.signal("TERM");
        }
        let child = self.child.as_mut().expect("running");
        let began = Instant::now();
        while child.try_wait().ok().flatten().is_none() && began.elapsed() < PATIENCE {
            std::thread::sleep(Duration::from_millis(20));
        }
        self.kill();
    }
}

impl Drop for Delegate {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A port free now, for a replica that must come back on the same one.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Keeps the work directory (replica and delegate logs) for a failed run; returns its path.
fn keep(work: tempfile::TempDir) -> String {
    work.keep().display().to_string()
}
