//! A fleet larger than one process can hold: every socket is a file descriptor, and a
//! process here may have at most 20,000 open. So a fleet of 100,000 runs in several
//! *drivers*, copies of this tool started as `switchboard-bench drive`, each holding the
//! delegates of one [`Part`] and reporting its counters on stdout.
//!
//! The driver's protocol is lines. On stdin, from the tool: `grow N` (register and connect
//! this part's delegates among the fleet's first `N`), `stop` (or the end of input: close
//! every socket and exit). On stdout, to the tool: a JSON object every 250 ms and after
//! each grow, `{"connected": .., "disconnects": .., "grown": ..}`, where `grown` is the
//! last fleet size this part has finished registering. The fleet's delegate token comes in
//! the environment (`SWITCHBOARD_BENCH_DELEGATE_TOKEN`), not on the command line.

use std::process::Stdio;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use switchboard_client::Client;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::BenchError;
use crate::fleet::{Fleet, Layout, Part, fleet_token};
use crate::load::Recorder;
use crate::manager::Manager;
use crate::procfs;
use crate::scenario::Ctx;

/// The variable a driver reads the fleet's delegate token from.
const TOKEN_VAR: &str = "SWITCHBOARD_BENCH_DELEGATE_TOKEN";

/// `switchboard-bench drive`: one part of a fleet, driven by the tool over stdin/stdout.
#[derive(clap::Args, Debug, Clone)]
pub struct DriveArgs {
    /// The managers the fleet is spread over (delegate `i` uses the `i % N`th).
    #[arg(long, value_delimiter = ',', required = true)]
    pub bases: Vec<String>,
    /// This part's number, from 0.
    #[arg(long)]
    pub part: usize,
    /// How many parts the fleet is in.
    #[arg(long)]
    pub parts: usize,
    /// Source addresses 127.0.0.1 to 127.0.0.N (delegate `i` uses the `i % N`th).
    #[arg(long)]
    pub sources: usize,
    /// The capacity each delegate registers with.
    #[arg(long, default_value_t = 10)]
    pub capacity: u32,
}

/// One report line of a driver.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
struct Report {
    connected: usize,
    disconnects: u64,
    grown: usize,
}

/// Runs one driver until its input ends or says `stop`.
pub async fn drive(args: DriveArgs) -> Result<(), BenchError> {
    let token = std::env::var(TOKEN_VAR)
        .map_err(|_| BenchError::Setup(format!("{TOKEN_VAR} is not set: `drive` is started by the tool itself")))?;
    if args.part >= args.parts {
        return Err(BenchError::Setup(format!(
            "part {} of {}: parts count from 0",
            args.part, args.parts
        )));
    }
    let part = Part {
        index: args.part,
        of: args.parts,
    };
    let mut fleet = Fleet::joined(
        switchboard_domain::Secret::presented(token),
        args.bases,
        part,
        Layout::new(0)?,
        args.capacity,
        args.sources,
        Arc::new(Recorder::default()),
    )?;
    let gauge = fleet.gauge();
    let grown = Arc::new(AtomicUsize::new(0));
    let report = {
        let (gauge, grown) = (gauge.clone(), Arc::clone(&grown));
        move || {
            let line = Report {
                connected: gauge.connected(),
                disconnects: gauge.disconnects(),
                grown: grown.load(Ordering::Relaxed),
            };
            // One `println!` is one locked write: lines from the reporter and the command
            // loop never interleave.
            println!("{}", serde_json::to_string(&line).unwrap_or_default());
        }
    };
    let reporter = {
        let report = report.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            loop {
                tick.tick().await;
                report();
            }
        })
    };
    let mut commands = BufReader::new(tokio::io::stdin()).lines();
    let hidden = ProgressBar::hidden();
    let outcome = loop {
        let Ok(Some(line)) = commands.next_line().await else {
            break Ok(());
        };
        let line = line.trim();
        if line == "stop" {
            break Ok(());
        }
        let Some(size) = line.strip_prefix("grow ").and_then(|n| n.trim().parse::<usize>().ok()) else {
            break Err(BenchError::Setup(format!("driver: unknown command {line:?}")));
        };
        if let Err(e) = fleet.grow(size, &hidden).await {
            break Err(e);
        }
        grown.store(size, Ordering::Relaxed);
        report();
    };
    fleet.stop().await;
    reporter.abort();
    report();
    outcome
}

/// What the tool knows of one driver, from its report lines.
#[derive(Debug, Default)]
struct Seen {
    connected: AtomicUsize,
    disconnects: AtomicU64,
    grown: AtomicUsize,
    /// Set when its stdout ended: the driver exited (or failed).
    gone: Mutex<Option<String>>,
}

#[derive(Debug)]
struct Driver {
    child: Child,
    stdin: ChildStdin,
    seen: Arc<Seen>,
}

/// A fleet spread over driver processes.
#[derive(Debug)]
pub struct Drivers {
    drivers: Vec<Driver>,
}

impl Drivers {
    /// Starts `parts` drivers of a fleet whose token is `token`, spread over `bases`.
    pub async fn start(
        token: &switchboard_domain::Secret,
        bases: &[String],
        parts: usize,
        sources: usize,
        capacity: u32,
    ) -> Result<Drivers, BenchError> {
        let exe = std::env::current_exe()?;
        let mut drivers = Vec::with_capacity(parts);
        for part in 0..parts {
            let mut child = Command::new(&exe)
                .arg("drive")
                .arg("--bases")
                .arg(bases.join(","))
                .args(["--part", &part.to_string(), "--parts", &parts.to_string()])
                .args(["--sources", &sources.to_string(), "--capacity", &capacity.to_string()])
                .env(TOKEN_VAR, token.expose())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .map_err(|e| BenchError::Setup(format!("cannot start a driver ({}): {e}", exe.display())))?;
            let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
                return Err(BenchError::Setup("a driver without stdin or stdout".into()));
            };
            let seen = Arc::new(Seen::default());
            let reader = Arc::clone(&seen);
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(r) = serde_json::from_str::<Report>(&line) {
                        reader.connected.store(r.connected, Ordering::Relaxed);
                        reader.disconnects.store(r.disconnects, Ordering::Relaxed);
                        reader.grown.store(r.grown, Ordering::Relaxed);
                    }
                }
                *reader.gone.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                    Some(format!("driver {part} exited (its errors are on stderr above)"));
            });
            drivers.push(Driver { child, stdin, seen });
        }
        Ok(Drivers { drivers })
    }

    fn gone(&self) -> Option<String> {
        self.drivers.iter().find_map(|d| {
            d.seen
                .gone
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .clone()
        })
    }

    async fn tell(&mut self, line: &str) -> Result<(), BenchError> {
        for (n, d) in self.drivers.iter_mut().enumerate() {
            d.stdin
                .write_all(format!("{line}\n").as_bytes())
                .await
                .map_err(|e| BenchError::Setup(format!("driver {n} does not listen: {e}")))?;
        }
        Ok(())
    }

    pub fn connected(&self) -> usize {
        self.drivers
            .iter()
            .map(|d| d.seen.connected.load(Ordering::Relaxed))
            .sum()
    }

    pub fn disconnects(&self) -> u64 {
        self.drivers
            .iter()
            .map(|d| d.seen.disconnects.load(Ordering::Relaxed))
            .sum()
    }

    /// The drivers' resident memory together.
    pub fn rss_kib(&self) -> Option<u64> {
        self.drivers.iter().map(|d| procfs::rss_kib(d.child.id()?)).sum()
    }

    async fn grow(&mut self, size: usize, bar: &ProgressBar) -> Result<(), BenchError> {
        self.tell(&format!("grow {size}")).await?;
        bar.set_length(self.drivers.len() as u64);
        loop {
            let done = self
                .drivers
                .iter()
                .filter(|d| d.seen.grown.load(Ordering::Relaxed) >= size)
                .count();
            bar.set_position(done as u64);
            if done == self.drivers.len() {
                return Ok(());
            }
            if let Some(why) = self.gone() {
                return Err(BenchError::Incomplete(why));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn stop(mut self) {
        let _ = self.tell("stop").await;
        for d in &mut self.drivers {
            if tokio::time::timeout(Duration::from_secs(40), d.child.wait())
                .await
                .is_err()
            {
                let _ = d.child.kill().await;
            }
        }
    }
}

/// The delegates of F3 and F4: in this process, or spread over drivers.
#[derive(Debug)]
pub enum Delegates {
    Here(Box<Fleet>),
    Spread(Drivers),
}

impl Delegates {
    /// A fleet registering with `bases` (delegate `i` with the `i % N`th), in this process
    /// when `parts` is 1, else over `parts` drivers.
    pub async fn new(
        operator: &Client,
        bases: &[String],
        parts: usize,
        sources: usize,
        capacity: u32,
    ) -> Result<Delegates, BenchError> {
        let layout = Layout::new(0)?;
        let token = fleet_token(operator, &layout).await?;
        if parts <= 1 {
            let fleet = Fleet::joined(
                token,
                bases.to_vec(),
                Part::WHOLE,
                layout,
                capacity,
                sources,
                Arc::new(Recorder::default()),
            )?;
            Ok(Delegates::Here(Box::new(fleet)))
        } else {
            Ok(Delegates::Spread(
                Drivers::start(&token, bases, parts, sources, capacity).await?,
            ))
        }
    }

    /// The fleet of F3 and F4 for `managers` (replicas, or one), sized for `size`
    /// delegates (drivers and source addresses as [`Ctx`] says), with an operator client
    /// of the first manager.
    pub async fn over(ctx: &Ctx, managers: &[Manager], size: usize) -> Result<(Client, Delegates), BenchError> {
        let first = managers
            .first()
            .ok_or_else(|| BenchError::Manager("no manager to drive".into()))?;
        let operator = Client::new(first.url.clone(), Some(first.api_key.clone()))
            .map_err(|e| BenchError::Setup(e.to_string()))?;
        let bases: Vec<String> = managers.iter().map(|m| m.url.clone()).collect();
        let fleet = Delegates::new(&operator, &bases, ctx.drivers(size), ctx.sources(size), 10).await?;
        Ok((operator, fleet))
    }

    pub fn connected(&self) -> usize {
        match self {
            Delegates::Here(f) => f.connected(),
            Delegates::Spread(d) => d.connected(),
        }
    }

    pub fn disconnects(&self) -> u64 {
        match self {
            Delegates::Here(f) => f.disconnects(),
            Delegates::Spread(d) => d.disconnects(),
        }
    }

    /// The memory that holds the fleet's side of the sockets: this process's, plus the
    /// drivers'.
    pub fn rss_kib(&self) -> Option<u64> {
        let own = procfs::rss_kib(std::process::id());
        match self {
            Delegates::Here(_) => own,
            Delegates::Spread(d) => Some(own? + d.rss_kib()?),
        }
    }

    /// Registers delegates until the fleet has `size` and starts their sessions.
    pub async fn grow(&mut self, size: usize, bar: &ProgressBar) -> Result<(), BenchError> {
        match self {
            Delegates::Here(f) => f.grow(size, bar).await,
            Delegates::Spread(d) => d.grow(size, bar).await,
        }
    }

    /// Waits until `count` sockets are open (as the delegates see them), or `patience` has
    /// passed; returns how many are.
    pub async fn wait_connected(&self, count: usize, patience: Duration, bar: &ProgressBar) -> usize {
        crate::fleet::wait_connected(|| self.connected(), count, patience, bar).await
    }

    pub async fn stop(self) {
        match self {
            Delegates::Here(f) => f.stop().await,
            Delegates::Spread(d) => d.stop().await,
        }
    }
}
