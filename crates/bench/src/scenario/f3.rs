//! F3, fleet: idle delegate sockets held by one manager or by `--replicas N` on one
//! PostgreSQL, and their resident memory per socket. The fleet grows to each size in
//! turn; at each, once every socket is open (as the delegates and the managers' own
//! gauges both say) and a settle time has passed, the managers' `VmRSS` is read. Memory
//! per socket is the growth over the managers' memory before any delegate registered,
//! divided by the sockets.
//!
//! With `--restart`, after the last size every replica is stopped at once (SIGTERM, as a
//! deploy does) and started again on the same address: the reconnect storm, timed until
//! every delegate is connected again, with each replica's socket count watched throughout.
//!
//! Every socket is a file descriptor in a manager and in the process that drives it: a
//! size that the open-file limit cannot hold is reported as skipped rather than
//! attempted. The fleet runs in as many driver processes as that limit needs.

use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use switchboard_client::Client;

use crate::BenchError;
use crate::chart::{self, Series};
use crate::manager::{Manager, StoreKind, stop_all};
use crate::report::{Table, num};
use crate::scenario::{Ctx, progress};
use crate::spread::Delegates;

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
    /// After the last size, restart every manager at once and time the reconnection.
    #[arg(long)]
    pub restart: bool,
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
    /// Sockets each manager counted open.
    pub per_replica_sockets: Vec<f64>,
    /// Each manager's RSS.
    pub per_replica_rss_kib: Vec<Option<u64>>,
    /// This tool's own memory (with its drivers'), for scale.
    pub bench_rss_kib: Option<u64>,
    /// Why the size was not measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

/// The reconnect storm after every replica restarted at once.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub sockets: usize,
    pub replicas: usize,
    /// From the stop signal until every manager listened again.
    pub restart_secs: f64,
    /// From the stop signal until the delegates all said connected again, and the
    /// managers' gauges added up to the fleet (`None`: not within the patience).
    pub reconnected_secs: Option<f64>,
    /// Sockets open when the patience ran out or all were back.
    pub connected: usize,
    /// The most sockets any replica counted at once during the storm, and its share of the
    /// fleet (`sockets / replicas`): a replica over its share is holding sockets twice.
    pub peak_replica_sockets: f64,
    pub share: f64,
    /// Delegate-side disconnects the storm caused.
    pub disconnects: u64,
}

/// What a fleet of this size does to the rest of the manager, measured at the last size.
#[derive(Debug, Clone, Serialize)]
pub struct Rest {
    pub sockets: usize,
    /// `GET /metrics`: the median of three scrapes, on each replica.
    pub metrics_ms: Vec<f64>,
    /// `GET /api/v1/delegates` on the first replica: how long, and how big.
    pub delegates_ms: Option<f64>,
    pub delegates_bytes: Option<usize>,
    /// Placement's snapshot rebuilds on the first replica while it placed a few tasks:
    /// how many, and their mean time (`switchboard_placement_snapshot_seconds`).
    pub snapshot_builds: f64,
    pub snapshot_mean_ms: Option<f64>,
    /// The tasks submitted for it, and how many of them succeeded within a minute.
    pub tasks: usize,
    pub tasks_succeeded: usize,
}

/// Tasks submitted to measure placement at the last size.
const PROBE_TASKS: usize = 5;

/// How long the storm may take before it is reported as not finished.
const STORM_PATIENCE: Duration = Duration::from_secs(300);

pub async fn run(ctx: &Ctx, store: StoreKind, args: &F3Args) -> Result<Vec<Point>, BenchError> {
    Ok(run_all(ctx, store, args).await?.0)
}

/// F3, and the storm when `--restart` asked for it.
pub async fn run_all(ctx: &Ctx, store: StoreKind, args: &F3Args) -> Result<(Vec<Point>, Option<Storm>), BenchError> {
    let reference = ctx.reference(store).await;
    let replicas = ctx.common.replicas.max(1);
    let label = if replicas > 1 {
        format!("f3-{}-x{replicas}", store.as_str())
    } else {
        format!("f3-{}", store.as_str())
    };
    let largest = args.sizes.iter().copied().max().unwrap_or(0);
    let mut managers = ctx.managers(store, &label, &[], replicas).await?;
    let outcome = grow(ctx, &mut managers, &label, largest, args).await;
    stop_all(managers).await;
    let (baseline, points, rest, storm) = outcome?;
    let replicas = points
        .iter()
        .map(|p| p.per_replica_sockets.len())
        .max()
        .unwrap_or(replicas)
        .max(1);

    let mut table = Table::new(
        if replicas > 1 {
            format!(
                "F3 fleet, {}: idle delegate sockets over {replicas} replicas on one database",
                store.as_str()
            )
        } else {
            format!("F3 fleet, {}: idle delegate sockets on one manager", store.as_str())
        },
        &[
            "sockets",
            "open (delegates)",
            "open (managers)",
            "managers' RSS MiB",
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
    if replicas > 1 {
        for p in points.iter().filter(|p| p.skipped.is_none()) {
            let each: Vec<String> = p
                .per_replica_sockets
                .iter()
                .zip(&p.per_replica_rss_kib)
                .map(|(n, rss)| format!("{} in {} MiB", num(*n, 0), mib(*rss)))
                .collect();
            table.note(format!("{} sockets: per replica {}", p.sockets, each.join(", ")));
        }
    }
    if let Some(r) = &rest {
        table.note(format!(
            "at {} sockets: GET /metrics {} ms (median of 3, slowest replica); GET /api/v1/delegates {} ms, {} KiB; placement snapshot rebuilt {} times, {} ms each on average; {} of {} tasks placed and succeeded",
            r.sockets,
            num(r.metrics_ms.iter().copied().fold(0.0, f64::max), 1),
            r.delegates_ms.map_or("-".to_owned(), |ms| num(ms, 1)),
            r.delegates_bytes.map_or("-".to_owned(), |b| num(b as f64 / 1024.0, 0)),
            num(r.snapshot_builds, 0),
            r.snapshot_mean_ms.map_or("-".to_owned(), |ms| num(ms, 1)),
            r.tasks_succeeded,
            r.tasks,
        ));
    }
    if let Some(storm) = &storm {
        table.note(format!(
            "restart of all {} replicas at once: listening again after {} s; {} of {} delegates connected again after {}; busiest replica {} sockets (share {})",
            storm.replicas,
            num(storm.restart_secs, 1),
            storm.connected,
            storm.sockets,
            storm.reconnected_secs.map_or(format!("more than {} s", STORM_PATIENCE.as_secs()), |s| format!("{} s", num(s, 1))),
            num(storm.peak_replica_sockets, 0),
            num(storm.share, 0),
        ));
    }
    table.note("target: 100,000 idle sockets (over 5 replicas), at most 10 KiB of manager memory per socket");
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
    let scenario = if replicas > 1 {
        format!("f3-x{replicas}")
    } else {
        "f3".to_owned()
    };
    let chart = ctx.chart_path(&scenario, store, "memory");
    chart::memory(
        &chart,
        &format!("F3 {}: managers' memory against idle sockets", store.as_str()),
        &[Series {
            name: "managers' RSS (MiB)".into(),
            points: line,
        }],
    )?;
    ctx.write(
        &scenario,
        store,
        reference.as_ref(),
        json!({
            "settings": args,
            "replicas": replicas,
            "baseline_rss_kib": baseline,
            "points": points,
            "storm": storm,
            "rest": rest,
            "result": points.iter().map(|p| json!({
                "sockets": p.sockets,
                "kib_per_socket": p.kib_per_socket,
                "skipped": p.skipped,
            })).collect::<Vec<_>>(),
            "charts": [chart.file_name().map(|n| n.to_string_lossy().into_owned())],
        }),
    )?;
    Ok((points, storm))
}

/// The median of a few timings, in ms.
fn median_ms(mut timings: Vec<Duration>) -> f64 {
    timings.sort_unstable();
    timings.get(timings.len() / 2).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

/// Times `/metrics` on every replica and the delegates list on the first, and places a
/// few tasks through the first while the fleet is up.
async fn the_rest(ctx: &Ctx, managers: &[Manager], operator: &Client, sockets: usize) -> Result<Rest, BenchError> {
    let mut metrics_ms = Vec::with_capacity(managers.len());
    for manager in managers {
        let mut timings = Vec::new();
        for _ in 0..3 {
            let started = Instant::now();
            manager.scrape(&ctx.http).await?;
            timings.push(started.elapsed());
        }
        metrics_ms.push(median_ms(timings));
    }
    let first = &managers[0];
    let started = Instant::now();
    let listed = ctx
        .http
        .get(format!("{}/api/v1/delegates", first.url))
        .bearer_auth(&first.api_key)
        .timeout(Duration::from_secs(120))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status);
    let (delegates_ms, delegates_bytes) = match listed {
        Ok(response) => match response.bytes().await {
            Ok(body) => (Some(started.elapsed().as_secs_f64() * 1000.0), Some(body.len())),
            Err(_) => (None, None),
        },
        Err(e) => {
            eprintln!("GET /api/v1/delegates failed: {e}");
            (None, None)
        }
    };

    let before = first.scrape(&ctx.http).await?;
    let layout = crate::fleet::Layout::new(0)?;
    let mut ids = Vec::with_capacity(PROBE_TASKS);
    for _ in 0..PROBE_TASKS {
        let body = switchboard_protocol::tasks::SubmitTask {
            account: layout.account.clone(),
            org: None,
            project: None,
            task_type: layout.task_type.clone(),
            payload: json!({}),
            selectors: Vec::new(),
            connector: None,
            capabilities: Vec::new(),
            priority: 0,
            assign_timeout_ms: Some(60_000),
            execution_timeout_ms: None,
            max_attempts: None,
            wait_for_delegate: true,
            concurrency_key: None,
            concurrency_limit: None,
            concurrency_strategy: None,
            retry: None,
            secrets: Vec::new(),
        };
        match operator.submit_task(&body, None).await {
            Ok(submitted) => ids.push(submitted.task.id.to_string()),
            Err(e) => eprintln!("a probe task was not submitted: {e}"),
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut succeeded = 0;
    for id in &ids {
        loop {
            let done = operator
                .get_task(id)
                .await
                .is_ok_and(|t| t.state == switchboard_domain::TaskState::Succeeded);
            if done || Instant::now() >= deadline {
                succeeded += usize::from(done);
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    let after = first.scrape(&ctx.http).await?;
    let builds = after.value("switchboard_placement_snapshot_seconds_count")
        - before.value("switchboard_placement_snapshot_seconds_count");
    let seconds = after.value("switchboard_placement_snapshot_seconds_sum")
        - before.value("switchboard_placement_snapshot_seconds_sum");
    Ok(Rest {
        sockets,
        metrics_ms,
        delegates_ms,
        delegates_bytes,
        snapshot_builds: builds,
        snapshot_mean_ms: (builds > 0.0).then(|| seconds / builds * 1000.0),
        tasks: ids.len(),
        tasks_succeeded: succeeded,
    })
}

/// The managers' memory together (`None` when one cannot be read).
fn total_rss(managers: &[Manager]) -> Option<u64> {
    managers.iter().map(Manager::rss_kib).sum()
}

/// Each manager's socket gauge (0 when it cannot be read).
async fn sockets_open(ctx: &Ctx, managers: &[Manager]) -> Vec<f64> {
    let scrapes = futures::future::join_all(managers.iter().map(|m| m.scrape(&ctx.http))).await;
    scrapes
        .into_iter()
        .map(|s| s.map_or(0.0, |s| s.value("switchboard_delegate_sockets_open")))
        .collect()
}

/// Grows a fleet of idle delegates through `args.sizes` (and restarts the managers when
/// asked); returns the managers' memory before the fleet, the points and the storm.
async fn grow(
    ctx: &Ctx,
    managers: &mut [Manager],
    label: &str,
    largest: usize,
    args: &F3Args,
) -> Result<(Option<u64>, Vec<Point>, Option<Rest>, Option<Storm>), BenchError> {
    let (operator, mut fleet) = Delegates::over(ctx, managers, largest).await?;
    let drivers = ctx.drivers(largest);
    let settle = Duration::from_secs(args.settle_secs);
    tokio::time::sleep(settle).await;
    let baseline = total_rss(managers);
    let limit = ctx.machine.open_files_limit;
    let mut points = Vec::new();
    let mut outcome = Ok(());
    for &size in &args.sizes {
        let per_process = size.div_ceil(managers.len()).max(size.div_ceil(drivers)) as u64 + HEADROOM;
        if per_process > limit {
            points.push(Point {
                sockets: size,
                connected: fleet.connected(),
                manager_sockets: 0.0,
                manager_rss_kib: None,
                kib_per_socket: None,
                per_replica_sockets: Vec::new(),
                per_replica_rss_kib: Vec::new(),
                bench_rss_kib: None,
                skipped: Some(format!(
                    "needs about {per_process} open files in a manager or a driver, over this machine's limit of {limit} (RLIMIT_NOFILE, already raised to its hard limit): more --replicas",
                )),
            });
            continue;
        }
        let bar = progress(&format!("{label}: registering up to {size}"));
        let grown = fleet.grow(size, &bar).await;
        bar.finish_and_clear();
        if let Err(e) = grown {
            outcome = Err(e);
            break;
        }
        let bar = progress(&format!("{label}: connecting"));
        let connected = fleet.wait_connected(size, Duration::from_secs(600), &bar).await;
        bar.finish_and_clear();
        let manager_sockets = manager_sockets_at_least(ctx, managers, connected, Duration::from_secs(60)).await;
        tokio::time::sleep(settle).await;
        let rss = total_rss(managers);
        let point = Point {
            sockets: size,
            connected,
            manager_sockets,
            manager_rss_kib: rss,
            kib_per_socket: rss
                .zip(baseline)
                .map(|(now, before)| now.saturating_sub(before) as f64 / size as f64),
            per_replica_sockets: sockets_open(ctx, managers).await,
            per_replica_rss_kib: managers.iter().map(Manager::rss_kib).collect(),
            bench_rss_kib: fleet.rss_kib(),
            skipped: None,
        };
        eprintln!(
            "{label}: {size} sockets: managers' RSS {} KiB, {} KiB/socket",
            rss.map_or("?".to_owned(), |r| r.to_string()),
            point.kib_per_socket.map_or("?".to_owned(), |k| num(k, 2))
        );
        points.push(point);
    }
    let measured = points.iter().rev().find(|p| p.skipped.is_none()).map(|p| p.sockets);
    let rest = match (outcome.is_ok(), measured) {
        (true, Some(size)) => match the_rest(ctx, managers, &operator, size).await {
            Ok(rest) => Some(rest),
            Err(e) => {
                eprintln!("{label}: the rest not measured: {e}");
                None
            }
        },
        _ => None,
    };
    let storm = match (outcome.is_ok() && args.restart, measured) {
        (true, Some(size)) => match restart(ctx, managers, &fleet, label, size).await {
            Ok(storm) => Some(storm),
            Err(e) => {
                outcome = Err(e);
                None
            }
        },
        _ => None,
    };
    fleet.stop().await;
    outcome.map(|()| (baseline, points, rest, storm))
}

/// Stops every manager at once, starts them again on the same addresses, and watches the
/// fleet come back.
async fn restart(
    ctx: &Ctx,
    managers: &mut [Manager],
    fleet: &Delegates,
    label: &str,
    size: usize,
) -> Result<Storm, BenchError> {
    let disconnects_before = fleet.disconnects();
    let share = size as f64 / managers.len() as f64;
    eprintln!("{label}: restarting all {} managers at once", managers.len());
    let began = Instant::now();
    futures::future::join_all(managers.iter_mut().map(|m| m.halt("TERM"))).await;
    let relaunched = futures::future::join_all(managers.iter_mut().map(Manager::relaunch)).await;
    relaunched.into_iter().collect::<Result<Vec<()>, _>>()?;
    let restart_secs = began.elapsed().as_secs_f64();
    let bar = progress(&format!("{label}: reconnecting"));
    bar.set_length(size as u64);
    let mut peak: f64 = 0.0;
    let reconnected = loop {
        let open = sockets_open(ctx, managers).await;
        peak = open.iter().copied().fold(peak, f64::max);
        let connected = fleet.connected();
        bar.set_position(connected.min(size) as u64);
        if connected >= size && open.iter().sum::<f64>() >= size as f64 {
            break Some(began.elapsed().as_secs_f64());
        }
        if began.elapsed() >= STORM_PATIENCE {
            break None;
        }
        // Not faster: every replica's `/metrics` is read each time.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    bar.finish_and_clear();
    let storm = Storm {
        sockets: size,
        replicas: managers.len(),
        restart_secs,
        reconnected_secs: reconnected,
        connected: fleet.connected(),
        peak_replica_sockets: peak,
        share,
        disconnects: fleet.disconnects().saturating_sub(disconnects_before),
    };
    eprintln!(
        "{label}: storm: {} of {size} back after {}",
        storm.connected,
        reconnected.map_or("-".to_owned(), |s| format!("{s:.1} s"))
    );
    Ok(storm)
}

/// Waits until the managers' socket gauges add up to `count` (or `patience` passes);
/// returns their sum.
async fn manager_sockets_at_least(ctx: &Ctx, managers: &[Manager], count: usize, patience: Duration) -> f64 {
    let deadline = Instant::now() + patience;
    loop {
        let open: f64 = sockets_open(ctx, managers).await.iter().sum();
        if open >= count as f64 || Instant::now() >= deadline {
            return open;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
