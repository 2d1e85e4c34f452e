//! F4, heartbeats: heartbeats a second a manager (or `--replicas N` on one PostgreSQL)
//! ingests, the store writes each costs, and the managers' CPU, for a connected fleet
//! that does nothing but beat. Store writes are counted twice: those of the heartbeats
//! (their flushes), and every write the managers made in the window (their leases too).
//!
//! Each case is `DELEGATES` (at the manager's default interval, 60 s) or
//! `DELEGATES@INTERVAL` (the manager started with that `heartbeat_interval`). Once every
//! socket is open and a settle time has passed, `/metrics` and `/proc/<pid>/stat` are read
//! at the start and the end of a window: heartbeats received, store calls by operation
//! (writes are every operation that is not a read), CPU seconds.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;

use crate::BenchError;
use crate::manager::{Manager, StoreKind, stop_all};
use crate::metrics::{self, Scrape};
use crate::report::{Table, num};
use crate::scenario::f3::HEADROOM;
use crate::scenario::{Ctx, progress};
use crate::spread::Delegates;

/// The manager's heartbeat interval when none is set.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct F4Args {
    /// Cases, comma-separated: DELEGATES (the default interval) or DELEGATES@INTERVAL
    /// (e.g. 10000@1s).
    #[arg(long, value_delimiter = ',', default_values_t = ["100000".to_owned(), "10000@1s".to_owned()])]
    pub cases: Vec<String>,
    /// How long heartbeats are counted [default: two intervals, at least 20 s].
    #[arg(long)]
    pub window_secs: Option<u64>,
    /// How long the fleet runs after connecting before the window opens.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
}

/// One parsed case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    pub delegates: usize,
    /// The manager's `heartbeat_interval` as written, when set.
    pub interval: Option<String>,
}

impl Case {
    pub fn parse(raw: &str) -> Result<Case, BenchError> {
        let bad = || {
            BenchError::Setup(format!(
                "F4 case {raw:?}: expected DELEGATES or DELEGATES@INTERVAL, like 10000@1s"
            ))
        };
        let (count, interval) = match raw.split_once('@') {
            Some((count, interval)) => (count, Some(interval.trim().to_owned())),
            None => (raw, None),
        };
        let delegates = count.trim().replace('_', "").parse().map_err(|_| bad())?;
        if let Some(interval) = &interval {
            parse_duration(interval).ok_or_else(bad)?;
        }
        Ok(Case { delegates, interval })
    }

    fn period(&self) -> Duration {
        self.interval
            .as_deref()
            .and_then(parse_duration)
            .unwrap_or(DEFAULT_INTERVAL)
    }
}

/// `500ms`, `1s`, `2m`, as the manager's settings write them; never zero.
fn parse_duration(text: &str) -> Option<Duration> {
    switchboard_domain::duration::parse_duration(text)
        .ok()
        .filter(|d| !d.is_zero())
}

/// One case and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub delegates: usize,
    pub interval_s: f64,
    pub connected: usize,
    pub window_s: f64,
    pub heartbeats: f64,
    pub heartbeats_per_s: f64,
    /// `delegates / interval`: what the fleet should send.
    pub expected_per_s: f64,
    pub store_writes: f64,
    pub store_writes_per_heartbeat: Option<f64>,
    /// The heartbeats' own writes (`record_heartbeats`, `extend_run_deadlines`).
    pub heartbeat_writes: f64,
    pub heartbeat_writes_per_heartbeat: Option<f64>,
    pub replicas: usize,
    /// Each replica's CPU over the window, in % of one core.
    pub per_replica_cpu_percent: Vec<Option<f64>>,
    /// Store calls in the window by operation (the two scrapes' own reads included).
    pub store_calls: BTreeMap<String, f64>,
    /// CPU time over the window, as a percentage of one core (every replica's together).
    pub manager_cpu_percent: Option<f64>,
    pub manager_rss_kib: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
}

pub async fn run(ctx: &Ctx, store: StoreKind, args: &F4Args) -> Result<Vec<Point>, BenchError> {
    let cases = args
        .cases
        .iter()
        .map(|c| Case::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    let reference = ctx.reference(store).await;
    let replicas = ctx.common.replicas.max(1);
    let mut points = Vec::new();
    for case in &cases {
        let label = format!("f4-{}-{}", store.as_str(), case.delegates);
        let limit = ctx.machine.open_files_limit;
        let per_replica = case.delegates.div_ceil(replicas) as u64 + HEADROOM;
        if per_replica > limit {
            points.push(skipped(case, format!(
                "needs about {per_replica} open files per manager, over this machine's limit of {limit} (RLIMIT_NOFILE, already raised to its hard limit): more --replicas",
            )));
            continue;
        }
        let settings: Vec<(&str, String)> = case
            .interval
            .iter()
            .map(|i| ("SWITCHBOARD_HEARTBEAT_INTERVAL", i.clone()))
            .collect();
        let managers = ctx.managers(store, &label, &settings, replicas).await?;
        let outcome = measure(ctx, &managers, &label, case, args).await;
        stop_all(managers).await;
        points.push(outcome?);
    }

    let mut table = Table::new(
        format!("F4 heartbeats, {}: a fleet that only beats", store.as_str()),
        &[
            "delegates",
            "interval s",
            "replicas",
            "open",
            "beats/s",
            "expected/s",
            "store writes/s",
            "writes/beat",
            "beat writes/beat",
            "CPU % of a core",
            "RSS MiB",
        ],
    );
    for p in &points {
        match &p.skipped {
            Some(why) => table.row(vec![
                p.delegates.to_string(),
                num(p.interval_s, 1),
                format!("skipped: {why}"),
            ]),
            None => table.row(vec![
                p.delegates.to_string(),
                num(p.interval_s, 1),
                p.replicas.to_string(),
                p.connected.to_string(),
                num(p.heartbeats_per_s, 1),
                num(p.expected_per_s, 1),
                num(p.store_writes / p.window_s, 2),
                p.store_writes_per_heartbeat.map_or("-".to_owned(), |w| num(w, 4)),
                p.heartbeat_writes_per_heartbeat.map_or("-".to_owned(), |w| num(w, 5)),
                p.manager_cpu_percent.map_or("-".to_owned(), |c| num(c, 1)),
                p.manager_rss_kib.map_or("-".to_owned(), |k| num(k as f64 / 1024.0, 1)),
            ]),
        }
    }
    for p in points.iter().filter(|p| p.replicas > 1) {
        let each: Vec<String> = p
            .per_replica_cpu_percent
            .iter()
            .map(|c| c.map_or("-".to_owned(), |c| format!("{} %", num(c, 1))))
            .collect();
        table.note(format!(
            "{} delegates: CPU per replica {}",
            p.delegates,
            each.join(", ")
        ));
    }
    table.note("targets: at most 0.001 store writes per heartbeat at 100,000; 100,000 delegates at the default interval under 10 % of one core across the replicas");
    if let Some(r) = &reference {
        for p in points.iter().filter(|p| p.skipped.is_none()) {
            table.note(format!(
                "reference: pgbench single-row UPDATE {} tps at {} clients; {} delegates: store writes/s / UPDATE tps = {}",
                num(r.update_tps, 0),
                r.clients,
                p.delegates,
                num(p.store_writes / p.window_s / r.update_tps, 5)
            ));
        }
    }
    if !ctx.common.manager.is_empty() {
        table.note("an external manager beats at its own interval: the @INTERVAL of the cases was not applied");
    }
    table.print();
    ctx.write(
        "f4",
        store,
        reference.as_ref(),
        json!({
            "settings": args,
            "points": points,
            "result": points.iter().map(|p| json!({
                "delegates": p.delegates,
                "interval_s": p.interval_s,
                "heartbeats_per_s": p.heartbeats_per_s,
                "store_writes_per_heartbeat": p.store_writes_per_heartbeat,
                "heartbeat_writes_per_heartbeat": p.heartbeat_writes_per_heartbeat,
                "replicas": p.replicas,
                "manager_cpu_percent": p.manager_cpu_percent,
                "skipped": p.skipped,
            })).collect::<Vec<_>>(),
        }),
    )?;
    Ok(points)
}

fn skipped(case: &Case, why: String) -> Point {
    Point {
        delegates: case.delegates,
        interval_s: case.period().as_secs_f64(),
        connected: 0,
        window_s: 0.0,
        heartbeats: 0.0,
        heartbeats_per_s: 0.0,
        expected_per_s: 0.0,
        store_writes: 0.0,
        store_writes_per_heartbeat: None,
        heartbeat_writes: 0.0,
        heartbeat_writes_per_heartbeat: None,
        replicas: 0,
        per_replica_cpu_percent: Vec::new(),
        store_calls: BTreeMap::new(),
        manager_cpu_percent: None,
        manager_rss_kib: None,
        skipped: Some(why),
    }
}

/// The store operations a heartbeat flush makes.
const HEARTBEAT_WRITES: &[&str] = &["record_heartbeats", "extend_run_deadlines"];

/// What the managers have counted and used at one moment.
struct Reading {
    scrapes: Vec<Scrape>,
    cpu: Vec<Option<f64>>,
    at: Instant,
}

async fn read(ctx: &Ctx, managers: &[Manager]) -> Result<Reading, BenchError> {
    let scrapes = futures::future::join_all(managers.iter().map(|m| m.scrape(&ctx.http)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Reading {
        scrapes,
        cpu: managers.iter().map(Manager::cpu_seconds).collect(),
        at: Instant::now(),
    })
}

async fn measure(
    ctx: &Ctx,
    managers: &[Manager],
    label: &str,
    case: &Case,
    args: &F4Args,
) -> Result<Point, BenchError> {
    let (_, mut fleet) = Delegates::over(ctx, managers, case.delegates).await?;
    let bar = progress(&format!("{label}: registering"));
    let grown = fleet.grow(case.delegates, &bar).await;
    bar.finish_and_clear();
    if let Err(e) = grown {
        fleet.stop().await;
        return Err(e);
    }
    let bar = progress(&format!("{label}: connecting"));
    let connected = fleet
        .wait_connected(case.delegates, Duration::from_secs(600), &bar)
        .await;
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let period = case.period();
    let window = Duration::from_secs(args.window_secs.unwrap_or_else(|| (2 * period.as_secs()).max(20)))
        .max(Duration::from_secs(1));
    let before = match read(ctx, managers).await {
        Ok(r) => r,
        Err(e) => {
            fleet.stop().await;
            return Err(e);
        }
    };
    let bar = progress(&format!("{label}: counting heartbeats for {} s", window.as_secs()));
    bar.set_length(window.as_secs());
    let end = Instant::now() + window;
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(250).min(end.saturating_duration_since(Instant::now()))).await;
        bar.set_position(
            window
                .as_secs()
                .saturating_sub(end.saturating_duration_since(Instant::now()).as_secs()),
        );
    }
    bar.finish_and_clear();
    let after = read(ctx, managers).await;
    fleet.stop().await;
    let after = after?;

    let elapsed = after.at.duration_since(before.at).as_secs_f64();
    let heartbeats: f64 = after
        .scrapes
        .iter()
        .zip(&before.scrapes)
        .map(|(a, b)| {
            a.value("switchboard_heartbeats_received_total") - b.value("switchboard_heartbeats_received_total")
        })
        .sum();
    let mut store_calls: BTreeMap<String, f64> = BTreeMap::new();
    for (a, b) in after.scrapes.iter().zip(&before.scrapes) {
        let (calls_before, calls_after) = (metrics::store_calls(b), metrics::store_calls(a));
        for (op, n) in calls_after {
            let d = n - calls_before.get(&op).copied().unwrap_or(0.0);
            if d > 0.0 {
                *store_calls.entry(op).or_default() += d;
            }
        }
    }
    let store_writes: f64 = store_calls
        .iter()
        .filter(|(op, _)| !metrics::is_read(op))
        .map(|(_, n)| n)
        .sum();
    let heartbeat_writes: f64 = store_calls
        .iter()
        .filter(|(op, _)| HEARTBEAT_WRITES.contains(&op.as_str()))
        .map(|(_, n)| n)
        .sum();
    let per_replica_cpu_percent: Vec<Option<f64>> = after
        .cpu
        .iter()
        .zip(&before.cpu)
        .map(|(a, b)| a.zip(*b).map(|(a, b)| (a - b) / elapsed * 100.0))
        .collect();
    let point = Point {
        delegates: case.delegates,
        interval_s: period.as_secs_f64(),
        connected,
        window_s: elapsed,
        heartbeats,
        heartbeats_per_s: heartbeats / elapsed,
        expected_per_s: connected as f64 / period.as_secs_f64(),
        store_writes,
        store_writes_per_heartbeat: (heartbeats > 0.0).then(|| store_writes / heartbeats),
        heartbeat_writes,
        heartbeat_writes_per_heartbeat: (heartbeats > 0.0).then(|| heartbeat_writes / heartbeats),
        replicas: managers.len(),
        store_calls,
        manager_cpu_percent: per_replica_cpu_percent.iter().copied().sum(),
        per_replica_cpu_percent,
        manager_rss_kib: managers.iter().map(Manager::rss_kib).sum(),
        skipped: None,
    };
    eprintln!(
        "{label}: {:.1} heartbeats/s, {:.4} store writes per heartbeat ({:.5} of them the heartbeats')",
        point.heartbeats_per_s,
        point.store_writes_per_heartbeat.unwrap_or(f64::NAN),
        point.heartbeat_writes_per_heartbeat.unwrap_or(f64::NAN)
    );
    Ok(point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases_name_a_fleet_and_optionally_an_interval() {
        assert_eq!(
            Case::parse("100000").unwrap(),
            Case {
                delegates: 100_000,
                interval: None
            }
        );
        let case = Case::parse("10_000@1s").unwrap();
        assert_eq!(case.delegates, 10_000);
        assert_eq!(case.period(), Duration::from_secs(1));
        assert_eq!(Case::parse("20@500ms").unwrap().period(), Duration::from_millis(500));
        assert!(Case::parse("many").is_err());
        assert!(Case::parse("10@soon").is_err());
        assert!(Case::parse("10@0s").is_err());
    }
}
