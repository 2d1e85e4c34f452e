//! F4, heartbeats: heartbeats a second a manager ingests, the store writes each costs,
//! and the manager's CPU, for a connected fleet that does nothing but beat.
//!
//! Each case is `DELEGATES` (at the manager's default interval, 60 s) or
//! `DELEGATES@INTERVAL` (the manager started with that `heartbeat_interval`). Once every
//! socket is open and a settle time has passed, `/metrics` and `/proc/<pid>/stat` are read
//! at the start and the end of a window: heartbeats received, store calls by operation
//! (writes are every operation that is not a read), CPU seconds.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::json;
use switchboard_client::Client;

use crate::BenchError;
use crate::fleet::{Fleet, Layout};
use crate::load::Recorder;
use crate::manager::{Manager, StoreKind};
use crate::metrics::{self, Scrape};
use crate::report::{Table, num};
use crate::scenario::f3::HEADROOM;
use crate::scenario::{Ctx, progress};

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
    /// Store calls in the window by operation (the two scrapes' own reads included).
    pub store_calls: BTreeMap<String, f64>,
    /// CPU time over the window, as a percentage of one core.
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
    let mut points = Vec::new();
    for case in &cases {
        let label = format!("f4-{}-{}", store.as_str(), case.delegates);
        let limit = ctx.machine.open_files_limit;
        if case.delegates as u64 + HEADROOM > limit {
            points.push(skipped(case, format!(
                "needs about {} open files per process, over this machine's limit of {limit} (RLIMIT_NOFILE, already raised to its hard limit)",
                case.delegates as u64 + HEADROOM
            )));
            continue;
        }
        let settings: Vec<(&str, String)> = case
            .interval
            .iter()
            .map(|i| ("SWITCHBOARD_HEARTBEAT_INTERVAL", i.clone()))
            .collect();
        let manager = ctx.manager(store, &label, &settings).await?;
        let outcome = measure(ctx, &manager, &label, case, args).await;
        manager.stop().await;
        points.push(outcome?);
    }

    let mut table = Table::new(
        format!("F4 heartbeats, {}: a fleet that only beats", store.as_str()),
        &[
            "delegates",
            "interval s",
            "open",
            "beats/s",
            "expected/s",
            "store writes/s",
            "writes/beat",
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
                p.connected.to_string(),
                num(p.heartbeats_per_s, 1),
                num(p.expected_per_s, 1),
                num(p.store_writes / p.window_s, 2),
                p.store_writes_per_heartbeat.map_or("-".to_owned(), |w| num(w, 4)),
                p.manager_cpu_percent.map_or("-".to_owned(), |c| num(c, 1)),
                p.manager_rss_kib.map_or("-".to_owned(), |k| num(k as f64 / 1024.0, 1)),
            ]),
        }
    }
    table.note("targets: at most 0.01 store writes per heartbeat; 100,000 delegates at the default interval under 10 % of one core");
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
    if ctx.common.manager.is_some() {
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
        store_calls: BTreeMap::new(),
        manager_cpu_percent: None,
        manager_rss_kib: None,
        skipped: Some(why),
    }
}

async fn measure(ctx: &Ctx, manager: &Manager, label: &str, case: &Case, args: &F4Args) -> Result<Point, BenchError> {
    let operator = Client::new(manager.url.clone(), Some(manager.api_key.clone()))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let mut fleet = Fleet::new(
        &operator,
        &manager.url,
        Layout::new(case.delegates)?,
        10,
        ctx.sources(case.delegates),
        Arc::new(Recorder::default()),
    )
    .await?;
    let bar = progress(&format!("{label}: registering"));
    fleet.grow(case.delegates, &bar).await?;
    bar.finish_and_clear();
    let bar = progress(&format!("{label}: connecting"));
    let connected = fleet
        .wait_connected(case.delegates, Duration::from_secs(600), &bar)
        .await;
    bar.finish_and_clear();
    tokio::time::sleep(Duration::from_secs(args.warmup_secs)).await;

    let period = case.period();
    let window = Duration::from_secs(args.window_secs.unwrap_or_else(|| (2 * period.as_secs()).max(20)))
        .max(Duration::from_secs(1));
    let before: (Scrape, Option<f64>, Instant) =
        (manager.scrape(&ctx.http).await?, manager.cpu_seconds(), Instant::now());
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
    let after: (Scrape, Option<f64>, Instant) =
        (manager.scrape(&ctx.http).await?, manager.cpu_seconds(), Instant::now());
    fleet.stop().await;

    let elapsed = after.2.duration_since(before.2).as_secs_f64();
    let heartbeats = after.0.value("switchboard_heartbeats_received_total")
        - before.0.value("switchboard_heartbeats_received_total");
    let (calls_before, calls_after) = (metrics::store_calls(&before.0), metrics::store_calls(&after.0));
    let store_calls: BTreeMap<String, f64> = calls_after
        .iter()
        .map(|(op, n)| (op.clone(), n - calls_before.get(op).copied().unwrap_or(0.0)))
        .filter(|(_, n)| *n > 0.0)
        .collect();
    let store_writes: f64 = store_calls
        .iter()
        .filter(|(op, _)| !metrics::is_read(op))
        .map(|(_, n)| n)
        .sum();
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
        store_calls,
        manager_cpu_percent: after.1.zip(before.1).map(|(a, b)| (a - b) / elapsed * 100.0),
        manager_rss_kib: manager.rss_kib(),
        skipped: None,
    };
    eprintln!(
        "{label}: {:.1} heartbeats/s, {:.4} store writes per heartbeat",
        point.heartbeats_per_s,
        point.store_writes_per_heartbeat.unwrap_or(f64::NAN)
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
