//! F2, latency: from submit to the delegate's notification and to the acquire committed,
//! p50, p99 and p99.9, at fractions (10 %, 50 %, 80 %) of F1's sustained rate. The rate
//! is `--f1-rate`, or measured by running F1 first with the same options.

use std::time::Duration;

use serde::Serialize;
use serde_json::json;

use crate::BenchError;
use crate::chart;
use crate::load::{Offer, Step, run_step};
use crate::manager::StoreKind;
use crate::report::{Table, num};
use crate::scenario::f1::{self, F1Args, latency_series};
use crate::scenario::{Ctx, Rig, progress};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct F2Args {
    #[command(flatten)]
    pub f1: F1Args,
    /// F1's sustained rate on this store (tasks a second); measured first when absent.
    #[arg(long)]
    pub f1_rate: Option<f64>,
    /// The fractions of F1's rate to offer (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [0.1, 0.5, 0.8])]
    pub fractions: Vec<f64>,
    /// How long each rate is offered.
    #[arg(long, default_value_t = 20)]
    pub duration_secs: u64,
}

/// One offered fraction and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub fraction: f64,
    #[serde(flatten)]
    pub step: Step,
}

pub async fn run(ctx: &Ctx, store: StoreKind, args: &F2Args) -> Result<Vec<Point>, BenchError> {
    let f1_rate = match args.f1_rate {
        Some(rate) => rate,
        None => f1::run(ctx, store, &args.f1).await?.best_rate,
    };
    if f1_rate < 1.0 {
        return Err(BenchError::Setup(format!(
            "F2 needs F1's sustained rate, and it was {f1_rate:.1}/s: pass --f1-rate"
        )));
    }
    let reference = ctx.reference(store).await;
    let label = format!("f2-{}", store.as_str());
    let rig = Rig::up(ctx, store, &label, args.f1.fleet.delegates, args.f1.fleet.capacity).await?;
    let mut points = Vec::new();
    for &fraction in &args.fractions {
        let rate = (f1_rate * fraction).max(1.0);
        let bar = progress(&format!("{label}: {:.0} % of {f1_rate:.0}/s", fraction * 100.0));
        let offer = Offer {
            rate,
            duration: Duration::from_secs(args.duration_secs.max(1)),
            drain: Duration::from_secs(args.f1.drain_secs),
        };
        let before = rig.snapshot(ctx).await;
        let mut step = run_step(&rig.operator, &rig.recorder, &rig.layout, offer, &bar).await;
        step.manager = Some(rig.usage_since(ctx, &before, step.completed).await);
        bar.finish_and_clear();
        rig.wait_idle(ctx, Duration::from_secs(60)).await;
        points.push(Point { fraction, step });
    }
    rig.down().await;

    let mut table = Table::new(
        format!(
            "F2 latency, {} ({} delegates), from the intended submit time (ms), F1 rate {f1_rate:.0}/s",
            store.as_str(),
            args.f1.fleet.delegates
        ),
        &[
            "% of F1",
            "rate/s",
            "done",
            "of",
            "notify p50",
            "p99",
            "p99.9",
            "acquire p50",
            "p99",
            "p99.9",
            "lifecycle p99",
            "mgr CPU %",
        ],
    );
    for p in &points {
        let s = &p.step;
        table.row(vec![
            num(p.fraction * 100.0, 0),
            num(s.offered_rate, 0),
            s.completed.to_string(),
            s.submitted.to_string(),
            num(s.notify.p50_ms, 2),
            num(s.notify.p99_ms, 2),
            num(s.notify.p999_ms, 2),
            num(s.acquire.p50_ms, 2),
            num(s.acquire.p99_ms, 2),
            num(s.acquire.p999_ms, 2),
            num(s.complete.p99_ms, 2),
            f1::cpu(s),
        ]);
    }
    table.note("targets at 50 % of F1: notification p50 < 2 ms, p99 < 10 ms");
    if let Some(r) = &reference {
        table.note(format!(
            "reference: pgbench single-row INSERT {} tps, UPDATE {} tps at {} clients; F1 rate / INSERT = {}",
            num(r.insert_tps, 0),
            num(r.update_tps, 0),
            r.clients,
            num(f1_rate / r.insert_tps, 3)
        ));
    }
    table.print();
    let steps: Vec<Step> = points.iter().map(|p| p.step.clone()).collect();
    f1::cores_table("F2", store, &steps).print();

    let chart = ctx.chart_path("f2", store, "latency");
    chart::latency(
        &chart,
        &format!("F2 {}: latency at fractions of F1's rate", store.as_str()),
        &latency_series(&steps),
    )?;
    ctx.write(
        "f2",
        store,
        reference.as_ref(),
        json!({
            "settings": args,
            "f1_rate": f1_rate,
            "points": points,
            "result": points.iter().map(|p| json!({
                "fraction": p.fraction,
                "rate": p.step.offered_rate,
                "notify": p.step.notify,
                "acquire": p.step.acquire,
            })).collect::<Vec<_>>(),
            "charts": [chart.file_name().map(|n| n.to_string_lossy().into_owned())],
        }),
    )?;
    Ok(points)
}
