//! `switchboard-bench`: the load tool of issue 7. It drives a real manager from outside,
//! over real sockets, through the client library: simulated delegates on WebSockets, an
//! open-loop submitter, HDR histograms of latency measured from each task's intended
//! submit time. Each scenario prints a table and writes JSON (and charts) to `--out`.
//!
//! By default it starts the manager itself (the `switchboard` binary of the same build)
//! on a fresh SQLite file or a fresh PostgreSQL database, so that on a fresh clone
//! `cargo run --release -p switchboard-bench -- f1 --store postgres` is the whole setup.
//! `docs/benchmarks.md` explains the method and records the figures.

#![forbid(unsafe_code)]

mod chart;
mod fleet;
mod load;
mod manager;
mod metrics;
mod postgres;
mod procfs;
mod report;
mod scenario;
mod spread;
mod sqlite;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::manager::StoreKind;
use crate::scenario::f1::F1Args;
use crate::scenario::f2::F2Args;
use crate::scenario::f3::F3Args;
use crate::scenario::f4::F4Args;
use crate::scenario::q1::Q1Args;
use crate::scenario::{Common, Ctx, f1, f2, f3, f4, q1, suite};

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
    #[error("manager: {0}")]
    Manager(String),
    #[error("PostgreSQL: {0}")]
    Postgres(String),
    #[error("pgbench: {0}")]
    Pgbench(String),
    #[error("chart: {0}")]
    Chart(String),
    #[error("the run did not complete: {0}")]
    Incomplete(String),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Parser, Debug)]
#[command(
    name = "switchboard-bench",
    version,
    about = "Load tool for Switchboard: throughput, latency, fleet size and heartbeat cost of a real manager."
)]
struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(Subcommand, Debug)]
enum Scenario {
    /// Throughput: the highest sustained rate of full task lifecycles.
    F1 {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[command(flatten)]
        args: F1Args,
    },
    /// Latency: submit to notification and to acquire, at fractions of F1's rate.
    F2 {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[command(flatten)]
        args: F2Args,
    },
    /// Fleet: idle sockets on one manager and its memory per socket.
    F3 {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[command(flatten)]
        args: F3Args,
    },
    /// Heartbeats: heartbeats a second, store writes per heartbeat, manager CPU.
    F4 {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[command(flatten)]
        args: F4Args,
    },
    /// Queue summary: what `GET /api/v1/queue` costs with many tasks waiting.
    Q1 {
        #[arg(long, value_enum, default_value = "sqlite")]
        store: StoreKind,
        #[command(flatten)]
        args: Q1Args,
    },
    /// pgbench single-row INSERT and UPDATE against the PostgreSQL server.
    Reference,
    /// One part of a fleet spread over processes (started by F3 and F4 themselves).
    #[command(hide = true)]
    Drive(spread::DriveArgs),
    /// Every scenario for a few seconds at tiny sizes (SQLite, and PostgreSQL when
    /// DATABASE_URL is set); fails only if the tool did not run end to end.
    Smoke,
    /// Every scenario at full size on each store.
    All {
        /// The stores, comma-separated.
        #[arg(long, value_enum, value_delimiter = ',', default_values_t = [StoreKind::Sqlite, StoreKind::Postgres])]
        stores: Vec<StoreKind>,
        #[command(flatten)]
        args: F2Args,
        #[command(flatten)]
        f3: F3Args,
        #[command(flatten)]
        f4: F4Args,
        #[command(flatten)]
        q1: Q1Args,
    },
}

fn main() -> ExitCode {
    let mut cli = Cli::parse();
    if matches!(cli.scenario, Scenario::Smoke) {
        // Short, like everything in the smoke run.
        cli.common.reference_secs = cli.common.reference_secs.min(2);
    }
    let limit = procfs::raise_open_files();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(async move {
        let ctx = Ctx::new(cli.common)?;
        // A driver's parent already said all this.
        if !matches!(cli.scenario, Scenario::Drive(_)) {
            eprintln!(
                "switchboard-bench: {} cores, open-file limit {limit}, results in {}",
                ctx.machine.cores,
                ctx.out.display()
            );
        }
        match cli.scenario {
            Scenario::F1 { store, args } => f1::run(&ctx, store, &args).await.map(drop),
            Scenario::F2 { store, args } => f2::run(&ctx, store, &args).await.map(drop),
            Scenario::F3 { store, args } => f3::run(&ctx, store, &args).await.map(drop),
            Scenario::F4 { store, args } => f4::run(&ctx, store, &args).await.map(drop),
            Scenario::Q1 { store, args } => q1::run(&ctx, store, &args).await.map(drop),
            Scenario::Reference => suite::reference(&ctx).await,
            Scenario::Drive(args) => spread::drive(args).await,
            Scenario::Smoke => suite::smoke(&ctx).await,
            Scenario::All {
                stores,
                args,
                f3,
                f4,
                q1,
            } => suite::all(&ctx, &stores, &args.f1, &args, &f3, &f4, &q1).await,
        }
    });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
