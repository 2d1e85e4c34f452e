//! F3, fleet: idle delegate sockets held by one manager, and its resident memory per
//! socket. One manager; the fleet grows to each size in turn; at each, once every socket
//! is open (as the delegates and the manager's own gauge both say) and a settle time has
//! passed, the manager's `VmRSS` is read. Memory per socket is the growth over the
//! manager's memory before any delegate registered, divided by the sockets.
//!
//! Every socket is a file descriptor in this process and in the manager: a size that the
//! open-file limit cannot hold is reported as skipped rather than attempted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use switchboard_client::Client;

use crate::BenchError;
use crate::chart::{self, Series};
use crate::fleet::{Fleet, Layout};
use crate::load::Recorder;
use crate::manager::{Manager, StoreKind};
use crate::procfs;
use crate::report::{Table, num};
use crate::scenario::{Ctx, progress};

/// Descriptors kept free besides one per socket (HTTP connections, the store, logs).
pub const HEADROOM: u64 = 512;

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct F3Args {
    /// Socket counts to reach, in order (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000, 50_000, 100_000])]
    pub sizes: Vec<usize>,
    /// How long the manager settles at each size before its memory is read.
    #[arg(long, default_value_t = 5)]
    pub settle_secs: u64,
}

/// One size and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub sockets: usize,
    /// Sockets the delegates saw open.
    pub connected: usize,
    /// Sockets the manager counted open (`switchboard_delegate_sockets_open`).
    pub manager_sockets: f64,
    pub manager_rss_kib: Option<u64>,
    /// (RSS now - RSS before the fleet) / sockets.
    pub kib_per_socket: Option<f64>,
    /// This tool's own memory, for scale.
    pub bench_rss_kib: Option<u64>,
    /// Why the size was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

pub async fn run(ctx: &Ctx, store: StoreKind, args: &F3Args) -> Result<Vec<Point>, BenchError> {
    let reference = ctx.reference(store).await;
    let label = format!("f3-{}", store.as_str());
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    let manager = ctx.manager(store, &label, &[]).await?;
    let outcome = grow(ctx, &manager, &label, largest, args).await;
    manager.stop().await;
    let (baseline, points) = outcome?;

    let mut table = Table::new(
        format!("F3 fleet, {}: idle delegate sockets on one manager", store.as_str()),
        &[
            "sockets",
            "open (delegates)",
            "open (manager)",
            "manager RSS MiB",
            "KiB/socket",
            "bench RSS MiB",
        ],
    );
    let mib = |kib: Option<u64>| kib.map_or("-".to_owned(), |k| num(k as f64 / 1024.0, 1));
    table.row(vec![
        "0".into(),
        "0".into(),
        "0".into(),
        mib(baseline),
        "-".into(),
        "-".into(),
    ]);
    for p in &points {
        match &p.skipped {
            Some(why) => table.row(vec![p.sockets.to_string(), format!("skipped: {why}")]),
            None => table.row(vec![
                p.sockets.to_string(),
                p.connected.to_string(),
                num(p.manager_sockets, 0),
                mib(p.manager_rss_kib),
                p.kib_per_socket.map_or("-".to_owned(), |k| num(k, 2)),
                mib(p.bench_rss_kib),
            ]),
        }
    }
    table.note("target: 100,000 idle sockets on one manager, at most 10 KiB of manager memory per socket");
    if let Some(r) = &reference {
        table.note(format!(
            "reference (same run): pgbench single-row INSERT {} tps, UPDATE {} tps at {} clients (not a ratio here: memory)",
            num(r.insert_tps, 0),
            num(r.update_tps, 0),
            r.clients
        ));
    }
    table.print();

    let mut line = vec![(0.0, baseline.unwrap_or(0) as f64 / 1024.0)];
    line.extend(
        points
            .iter()
            .filter_map(|p| Some((p.sockets as f64, p.manager_rss_kib? as f64 / 1024.0))),
    );
    let chart = ctx.chart_path("f3", store, "memory");
    chart::memory(
        &chart,
        &format!("F3 {}: manager memory against idle sockets", store.as_str()),
        &[Series {
            name: "manager RSS (MiB)".into(),
            points: line,
        }],
    )?;
    ctx.write(
        "f3",
        store,
        reference.as_ref(),
        json!({
            "settings": args,
            "baseline_rss_kib": baseline,
            "points": points,
            "result": points.iter().map(|p| json!({
                "sockets": p.sockets,
                "kib_per_socket": p.kib_per_socket,
                "skipped": p.skipped,
            })).collect::<Vec<_>>(),
            "charts": [chart.file_name().map(|n| n.to_string_lossy().into_owned())],
        }),
    )?;
    Ok(points)
}

/// Grows a fleet of idle delegates through `args.sizes`; returns the manager's memory
/// before the fleet and the points.
async fn grow(
    ctx: &Ctx,
    manager: &Manager,
    label: &str,
    largest: usize,
    args: &F3Args,
) -> Result<(Option<u64>, Vec<Point>), BenchError> {
    let operator = Client::new(manager.url.clone(), Some(manager.api_key.clone()))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut fleet = Fleet::new(
        &operator,
        &manager.url,
        Layout::new(largest)?,
        10,
        ctx.sources(largest),
        Arc::new(Recorder::default()),
    )
    .await?;
    let settle = Duration::from_secs(args.settle_secs);
    tokio::time::sleep(settle).await;
    let baseline = manager.rss_kib();
    let limit = ctx.machine.open_files_limit;
    let mut points = Vec::new();
    for &size in &args.sizes {
        if size as u64 + HEADROOM > limit {
            points.push(Point {
                sockets: size,
                connected: fleet.connected(),
                manager_sockets: 0.0,
                manager_rss_kib: None,
                kib_per_socket: None,
                bench_rss_kib: None,
                skipped: Some(format!(
                    "needs about {} open files per process, over this machine's limit of {limit} (RLIMIT_NOFILE, already raised to its hard limit)",
                    size as u64 + HEADROOM
                )),
            });
            continue;
        }
        let bar = progress(&format!("{label}: registering up to {size}"));
        fleet.grow(size, &bar).await?;
        bar.finish_and_clear();
        let bar = progress(&format!("{label}: connecting"));
        let connected = fleet.wait_connected(size, Duration::from_secs(600), &bar).await;
        bar.finish_and_clear();
        let manager_sockets = manager_sockets_at_least(ctx, manager, connected, Duration::from_secs(60)).await;
        tokio::time::sleep(settle).await;
        let rss = manager.rss_kib();
        let point = Point {
            sockets: size,
            connected,
            manager_sockets,
            manager_rss_kib: rss,
            kib_per_socket: rss
                .zip(baseline)
                .map(|(now, before)| now.saturating_sub(before) as f64 / size as f64),
            bench_rss_kib: procfs::rss_kib(std::process::id()),
            skipped: None,
        };
        eprintln!(
            "{label}: {size} sockets: manager RSS {} KiB, {} KiB/socket",
            rss.map_or("?".to_owned(), |r| r.to_string()),
            point.kib_per_socket.map_or("?".to_owned(), |k| num(k, 2))
        );
        points.push(point);
    }
    fleet.stop().await;
    Ok((baseline, points))
}

/// Waits until the manager's socket gauge reaches `count` (or `patience` passes); returns it.
async fn manager_sockets_at_least(ctx: &Ctx, manager: &Manager, count: usize, patience: Duration) -> f64 {
    let deadline = Instant::now() + patience;
    loop {
        let open = manager
            .scrape(&ctx.http)
            .await
            .map(|s| s.value("switchboard_delegate_sockets_open"))
            .unwrap_or(0.0);
        if open >= count as f64 || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
