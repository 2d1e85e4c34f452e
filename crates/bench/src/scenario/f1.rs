//! F1, throughput: the highest rate of full task lifecycles (submit, assign, push,
//! acquire, result, all committed) a manager sustains with a fleet of delegates.
//!
//! The rate steps up geometrically from `--start-rate` until a step is not sustained,
//! then bisects between the best sustained and the first failed rate `--refine` times.
//! A step is sustained when every accepted task completed within the drain time, no
//! submission or report failed, completions kept up with the offered rate (at least 90 %
//! of it, from the first intended time to the last completion), and the p99 of the full
//! lifecycle stayed under `--max-p99-ms`.
//!
//! Beside each step, where the cores went per lifecycle (the manager's, PostgreSQL's
//! backends', the bench's own), the store's commits and the sizes of the committer's
//! batches; beside the whole, the reference of the same run (pgbench for PostgreSQL, a
//! single-row INSERT loop for SQLite) that the best rate is a ratio of.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::BenchError;
use crate::chart::{self, Series};
use crate::load::{Offer, Step, run_step};
use crate::manager::StoreKind;
use crate::report::{Table, num};
use crate::scenario::{Ctx, Rig, progress};

/// The fleet a load scenario runs with.
#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct FleetArgs {
    /// Simulated delegates.
    #[arg(long, default_value_t = 1000)]
    pub delegates: usize,
    /// Parallel tasks each delegate takes.
    #[arg(long, default_value_t = 10)]
    pub capacity: u32,
}

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct F1Args {
    #[command(flatten)]
    pub fleet: FleetArgs,
    /// Try exactly these rates (tasks a second, comma-separated) instead of stepping up.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// The first rate tried, in tasks a second.
    #[arg(long, default_value_t = 25.0)]
    pub start_rate: f64,
    /// Each next rate is the last one times this.
    #[arg(long, default_value_t = 1.5)]
    pub factor: f64,
    /// The highest rate tried.
    #[arg(long, default_value_t = 20_000.0)]
    pub max_rate: f64,
    /// Bisection steps between the best sustained and the first failed rate.
    #[arg(long, default_value_t = 3)]
    pub refine: u32,
    /// How long each rate is offered.
    #[arg(long, default_value_t = 10)]
    pub step_secs: u64,
    /// How long, after a step's last submission, its tasks may take to complete.
    #[arg(long, default_value_t = 10)]
    pub drain_secs: u64,
    /// The highest p99 of the full lifecycle a sustained step may have, in ms.
    #[arg(long, default_value_t = 1000.0)]
    pub max_p99_ms: f64,
    /// Queue policy on (issue 18): every task carries a concurrency key (one of
    /// `--policy-keys`, never at its limit) and a retry policy, and the org the tasks come
    /// from has a fair-share weight and the account a default retry policy.
    #[arg(long)]
    pub policies: bool,
    /// Before the first step, this many seconds at half the first rate, not recorded: the
    /// manager's and the database's caches, pools and plans warm up on it (0: none).
    #[arg(long, default_value_t = 0)]
    pub warmup_secs: u64,
    /// With `--policies`: how many concurrency keys the tasks spread over. Claims of one
    /// key take turns (in every replica's transactions), so fewer keys cost more.
    #[arg(long, default_value_t = 100)]
    pub policy_keys: u64,
    /// Task logs on (issue 19): each simulated delegate appends this many lines (about
    /// 50 bytes each) to its task's log, in one chunk, between acquire and result (0: none).
    #[arg(long, default_value_t = 0)]
    pub log_lines: usize,
}

/// What F1 found.
#[derive(Debug, Clone, Serialize)]
pub struct F1Result {
    /// The highest sustained offered rate (0 when none was).
    pub best_rate: f64,
    /// The completions a second measured at that rate.
    pub best_throughput: f64,
    pub steps: Vec<Step>,
}

/// Whether a step is sustained (see the module's doc).
pub fn sustained(step: &Step, max_p99_ms: f64) -> bool {
    step.submitted > 0
        && step.all_completed
        && step.submit_errors == 0
        && step.result_errors == 0
        && step.throughput >= 0.9 * step.offered_rate
        && step.complete.p99_ms <= max_p99_ms
}

pub async fn run(ctx: &Ctx, store: StoreKind, args: &F1Args) -> Result<F1Result, BenchError> {
    let reference = ctx.reference(store).await;
    let sqlite_reference = ctx.sqlite_reference(store).await;
    let label = format!("f1-{}", store.as_str());
    let mut rig = Rig::up(ctx, store, &label, args.fleet.delegates, args.fleet.capacity).await?;
    if args.policies
        && let Err(e) = rig.with_policies(args.policy_keys).await
    {
        rig.down().await;
        return Err(e);
    }
    rig.fleet.log_each_task(args.log_lines);
    let outcome = ramp(ctx, &rig, &label, args).await;
    let acquire_errors = rig.fleet.acquire_errors();
    let disconnects = rig.fleet.disconnects();
    rig.down().await;
    let steps = outcome?;

    let best = steps
        .iter()
        .filter(|s| sustained(s, args.max_p99_ms))
        .max_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    let result = F1Result {
        best_rate: best.map_or(0.0, |s| s.offered_rate),
        best_throughput: best.map_or(0.0, |s| s.throughput),
        steps,
    };

    let mut table = Table::new(
        format!(
            "F1 throughput, {} ({} delegates, {} tags, 3 scopes): full lifecycles, latency from the intended submit time (ms)",
            store.as_str(),
            args.fleet.delegates,
            crate::fleet::TAGS
        ),
        &[
            "offered/s",
            "done/s",
            "done",
            "of",
            "notify p50",
            "p99",
            "acquire p50",
            "p99",
            "lifecycle p50",
            "p99",
            "errors",
            "sustained",
            "mgr CPU %",
        ],
    );
    for s in &result.steps {
        table.row(vec![
            num(s.offered_rate, 0),
            num(s.throughput, 0),
            s.completed.to_string(),
            s.submitted.to_string(),
            num(s.notify.p50_ms, 2),
            num(s.notify.p99_ms, 2),
            num(s.acquire.p50_ms, 2),
            num(s.acquire.p99_ms, 2),
            num(s.complete.p50_ms, 2),
            num(s.complete.p99_ms, 2),
            (s.submit_errors + s.result_errors).to_string(),
            if sustained(s, args.max_p99_ms) { "yes" } else { "no" }.to_owned(),
            cpu(s),
        ]);
    }
    let cores = cores_table("F1", store, &result.steps);
    if let Some(top) = result.steps.last().and_then(|s| s.manager.as_ref()) {
        table.note(format!(
            "manager at the highest rate, per lifecycle: {:.1} store writes; most store time: {}; {:.1} decisions of {} ms",
            top.store_writes_per_task,
            top.top_store_ops(3),
            top.decisions_per_task,
            top.decision_mean_ms.map_or("-".to_owned(), |ms| num(ms, 3))
        ));
    }
    table.note(format!(
        "best sustained: {} lifecycles/s (measured {} /s); offers not acquired: {acquire_errors}; socket drops: {disconnects}",
        num(result.best_rate, 0),
        num(result.best_throughput, 0)
    ));
    let ratio = reference.as_ref().map(|r| result.best_throughput / r.insert_tps);
    if let (Some(r), Some(ratio)) = (&reference, ratio) {
        table.note(format!(
            "reference: pgbench single-row INSERT {} tps at {} clients; F1 / pgbench = {} (target >= 0.25, and >= 5,000/s)",
            num(r.insert_tps, 0),
            r.clients,
            num(ratio, 3)
        ));
    }
    let sqlite_ratio = sqlite_reference
        .as_ref()
        .map(|r| result.best_throughput / r.insert_commits_per_second);
    if let (Some(r), Some(ratio)) = (&sqlite_reference, sqlite_ratio) {
        table.note(format!(
            "reference: SQLite single-row INSERT {} commits/s (WAL, synchronous=FULL, {} s); F1 / SQLite INSERT = {} (target >= 2,000/s)",
            num(r.insert_commits_per_second, 0),
            num(r.seconds, 0),
            num(ratio, 3)
        ));
    }
    table.print();
    cores.print();

    let chart = ctx.chart_path("f1", store, "latency");
    chart::latency(
        &chart,
        &format!("F1 {}: latency against offered rate", store.as_str()),
        &latency_series(&result.steps),
    )?;
    ctx.write(
        "f1",
        store,
        reference.as_ref(),
        json!({
            "settings": args,
            "steps": result.steps,
            "result": {
                "best_rate": result.best_rate,
                "best_throughput": result.best_throughput,
                "ratio_to_pgbench_insert": ratio,
                "sqlite_reference": sqlite_reference,
                "ratio_to_sqlite_insert": sqlite_ratio,
                "acquire_errors": acquire_errors,
                "socket_drops": disconnects,
            },
            "charts": [chart.file_name().map(|n| n.to_string_lossy().into_owned())],
        }),
    )?;
    Ok(result)
}

/// The rates to try: the given list, or a geometric ramp that stops after the first
/// unsustained step and then bisects.
async fn ramp(ctx: &Ctx, rig: &Rig, label: &str, args: &F1Args) -> Result<Vec<Step>, BenchError> {
    let offer = |rate: f64| Offer {
        rate,
        duration: Duration::from_secs(args.step_secs.max(1)),
        drain: Duration::from_secs(args.drain_secs),
    };
    if args.warmup_secs > 0 {
        let rate = args.rates.first().copied().unwrap_or(args.start_rate).max(2.0) / 2.0;
        let bar = progress(&format!("{label}: warming up at {rate:.0}/s"));
        let warm = Offer {
            rate,
            duration: Duration::from_secs(args.warmup_secs),
            drain: Duration::from_secs(args.drain_secs),
        };
        let s = run_step(&rig.operator, &rig.recorder, &rig.layout, warm, &bar).await;
        bar.finish_and_clear();
        eprintln!(
            "{label}: warm-up at {rate:.0}/s, {} of {} done (not recorded)",
            s.completed, s.submitted
        );
        rig.wait_idle(ctx, Duration::from_secs(60)).await;
    }
    let mut steps = Vec::new();
    let step = |rate: f64| {
        let bar = progress(&format!("{label}: {rate:.0}/s"));
        async move {
            let before = rig.snapshot(ctx).await;
            let mut s = run_step(&rig.operator, &rig.recorder, &rig.layout, offer(rate), &bar).await;
            s.manager = Some(rig.usage_since(ctx, &before, s.completed).await);
            bar.finish_and_clear();
            eprintln!(
                "{label}: offered {rate:.0}/s, completed {}/{} at {:.0}/s, lifecycle p99 {:.1} ms{}",
                s.completed,
                s.submitted,
                s.throughput,
                s.complete.p99_ms,
                if sustained(&s, args.max_p99_ms) {
                    ""
                } else {
                    " (not sustained)"
                }
            );
            rig.wait_idle(ctx, Duration::from_secs(60)).await;
            s
        }
    };
    if !args.rates.is_empty() {
        for &rate in &args.rates {
            steps.push(step(rate).await);
        }
        return Ok(steps);
    }
    let mut best: f64 = 0.0;
    let mut failed: Option<f64> = None;
    let mut rate = args.start_rate.max(1.0);
    while rate <= args.max_rate {
        let s = step(rate).await;
        let ok = sustained(&s, args.max_p99_ms);
        steps.push(s);
        if !ok {
            failed = Some(rate);
            break;
        }
        best = rate;
        rate *= args.factor.max(1.05);
    }
    if let Some(mut high) = failed {
        for _ in 0..args.refine {
            let middle = (best + high) / 2.0;
            if middle < 1.0 || (high - best) / high < 0.05 {
                break;
            }
            let s = step(middle).await;
            if sustained(&s, args.max_p99_ms) {
                best = middle;
            } else {
                high = middle;
            }
            steps.push(s);
        }
    }
    steps.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    Ok(steps)
}

/// Per step of `scenario`, where the cores went and what was committed, per lifecycle
/// ("-": unknown).
pub fn cores_table(scenario: &str, store: StoreKind, steps: &[Step]) -> Table {
    let mut table = Table::new(
        format!(
            "{scenario} {}: per lifecycle, CPU (µs, and % of one core) and store commits; batches of task writes",
            store.as_str()
        ),
        &[
            "offered/s",
            "done/s",
            "manager µs",
            "%",
            "postgres µs",
            "%",
            "bench µs",
            "%",
            "commits",
            "write xacts",
            "batches",
            "mean",
            "p50",
            "p99",
        ],
    );
    let cell = |v: Option<f64>, decimals: usize| v.map_or("-".to_owned(), |v| num(v, decimals));
    for s in steps {
        let Some(u) = &s.manager else { continue };
        let batches = u.batches.as_ref();
        table.row(vec![
            num(s.offered_rate, 0),
            num(s.throughput, 0),
            cell(u.cpu_us_per_task, 0),
            cell(u.cpu_percent, 0),
            cell(u.postgres_cpu_us_per_task, 0),
            cell(u.postgres_cpu_percent, 0),
            cell(u.bench_cpu_us_per_task, 0),
            cell(u.bench_cpu_percent, 0),
            cell(u.commits_per_task, 2),
            cell(u.write_transactions_per_task, 2),
            cell(batches.map(|b| b.count), 0),
            cell(batches.and_then(|b| b.mean), 1),
            cell(batches.and_then(|b| b.p50), 1),
            cell(batches.and_then(|b| b.p99), 1),
        ]);
    }
    if let Some(u) = steps.iter().find_map(|s| s.manager.as_ref()) {
        table.note(format!("commits counted from: {}", u.commits_from));
        if u.batches.is_none() {
            table.note("batches: the manager exports no switchboard_store_batch_items (an older manager)");
        }
        if store == StoreKind::Postgres {
            table.note(
                "postgres: the backends of the bench database (pg_stat_activity, /proc/<pid>/stat); \
                 write xacts: transaction ids used, server-wide",
            );
        }
    }
    table
}

/// The manager's CPU during a step, for a table cell.
pub fn cpu(step: &Step) -> String {
    step.manager
        .as_ref()
        .and_then(|u| u.cpu_percent)
        .map_or("-".to_owned(), |c| num(c, 0))
}

/// p50 and p99 of notification, acquire and lifecycle against offered rate.
pub fn latency_series(steps: &[Step]) -> Vec<Series> {
    let mut sorted: Vec<&Step> = steps.iter().filter(|s| s.completed > 0).collect();
    sorted.sort_by(|a, b| a.offered_rate.total_cmp(&b.offered_rate));
    let line = |name: &str, pick: &dyn Fn(&Step) -> f64| Series {
        name: name.to_owned(),
        points: sorted.iter().map(|s| (s.offered_rate, pick(s))).collect(),
    };
    vec![
        line("notify p50", &|s| s.notify.p50_ms),
        line("notify p99", &|s| s.notify.p99_ms),
        line("acquire p50", &|s| s.acquire.p50_ms),
        line("acquire p99", &|s| s.acquire.p99_ms),
        line("lifecycle p50", &|s| s.complete.p50_ms),
        line("lifecycle p99", &|s| s.complete.p99_ms),
    ]
}
