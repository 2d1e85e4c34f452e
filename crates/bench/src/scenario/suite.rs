//! The scenarios together: `reference` alone, `all` at full size, and `smoke`, a few
//! seconds of each at tiny sizes that CI runs to show the tool works end to end (it
//! prints figures and fails only when the tool did not run: a task submitted and not
//! completed, a socket not opened, a heartbeat not counted).

use serde_json::json;

use crate::BenchError;
use crate::manager::StoreKind;
use crate::report::{Table, num};
use crate::scenario::f1::{F1Args, FleetArgs};
use crate::scenario::f2::F2Args;
use crate::scenario::f3::F3Args;
use crate::scenario::f4::F4Args;
use crate::scenario::q1::Q1Args;
use crate::scenario::{Ctx, f1, f2, f3, f4, q1};

/// `reference`: pgbench alone, printed and written as `reference-postgres.json`.
pub async fn reference(ctx: &Ctx) -> Result<(), BenchError> {
    let Some(r) = ctx.reference(StoreKind::Postgres).await else {
        return Err(BenchError::Pgbench(
            "the reference could not be measured (see above)".into(),
        ));
    };
    let mut table = Table::new(
        "Reference: pgbench single-row transactions against the same PostgreSQL",
        &["clients", "seconds", "INSERT tps", "UPDATE tps"],
    );
    table.row(vec![
        r.clients.to_string(),
        r.seconds.to_string(),
        num(r.insert_tps, 0),
        num(r.update_tps, 0),
    ]);
    table.print();
    ctx.write("reference", StoreKind::Postgres, Some(&r), json!({ "result": r }))?;
    Ok(())
}

/// `all`: every scenario at its full size on each store; F2 at fractions of the F1 rate
/// just measured.
pub async fn all(
    ctx: &Ctx,
    stores: &[StoreKind],
    f1_args: &F1Args,
    f2_args: &F2Args,
    f3_args: &F3Args,
    f4_args: &F4Args,
    q1_args: &Q1Args,
) -> Result<(), BenchError> {
    for &store in stores {
        let f1 = f1::run(ctx, store, f1_args).await?;
        let f2_args = F2Args {
            f1_rate: Some(f1.best_rate.max(1.0)),
            ..f2_args.clone()
        };
        f2::run(ctx, store, &f2_args).await?;
        f3::run(ctx, store, f3_args).await?;
        f4::run(ctx, store, f4_args).await?;
        q1::run(ctx, store, q1_args).await?;
    }
    Ok(())
}

/// The sizes of `smoke`.
pub fn smoke_args() -> (F1Args, F2Args, F3Args, F4Args) {
    let f1 = F1Args {
        fleet: FleetArgs {
            delegates: 20,
            capacity: 10,
        },
        rates: vec![20.0, 50.0],
        start_rate: 20.0,
        factor: 2.0,
        max_rate: 50.0,
        refine: 0,
        step_secs: 2,
        drain_secs: 30,
        max_p99_ms: 5000.0,
        // The queue policy's path too (issue 18), so that it keeps working.
        policies: true,
        policy_keys: 10,
        warmup_secs: 1,
        // And the task logs' (issue 19).
        log_lines: 5,
    };
    let f2 = F2Args {
        f1: f1.clone(),
        f1_rate: None,
        fractions: vec![0.1, 0.5, 0.8],
        duration_secs: 2,
    };
    let f3 = F3Args {
        sizes: vec![20, 40],
        settle_secs: 1,
        restart: false,
    };
    let f4 = F4Args {
        cases: vec!["20@1s".to_owned()],
        window_secs: Some(3),
        warmup_secs: 1,
    };
    (f1, f2, f3, f4)
}

/// `smoke`: every scenario, briefly, on SQLite and (when `DATABASE_URL` is set) on
/// PostgreSQL.
pub async fn smoke(ctx: &Ctx) -> Result<(), BenchError> {
    let mut stores = vec![StoreKind::Sqlite];
    if ctx.common.database_url.is_some() {
        stores.push(StoreKind::Postgres);
    } else {
        eprintln!("smoke: DATABASE_URL is not set; PostgreSQL skipped");
    }
    let (f1_args, f2_args, f3_args, f4_args) = smoke_args();
    let mut failures = Vec::new();
    for store in stores {
        let f1 = f1::run(ctx, store, &f1_args).await?;
        for s in &f1.steps {
            if s.submitted == 0 || s.completed < s.submitted {
                failures.push(format!(
                    "f1 {}: {} of {} tasks completed at {}/s",
                    store.as_str(),
                    s.completed,
                    s.submitted,
                    s.offered_rate
                ));
            }
        }
        let f2_args = F2Args {
            f1_rate: Some(f1.best_rate.max(f1_args.rates[0])),
            ..f2_args.clone()
        };
        for p in f2::run(ctx, store, &f2_args).await? {
            if p.step.submitted == 0 || p.step.completed < p.step.submitted {
                failures.push(format!(
                    "f2 {}: {} of {} tasks completed",
                    store.as_str(),
                    p.step.completed,
                    p.step.submitted
                ));
            }
        }
        for p in f3::run(ctx, store, &f3_args).await? {
            if p.skipped.is_none() && p.connected < p.sockets {
                failures.push(format!(
                    "f3 {}: {} of {} sockets open",
                    store.as_str(),
                    p.connected,
                    p.sockets
                ));
            }
        }
        let q1_args = Q1Args {
            waiting: vec![300],
            shapes: 5,
            delegates: 10,
            calls: 3,
        };
        for p in q1::run(ctx, store, &q1_args).await? {
            if p.counted < p.waiting as u64 {
                failures.push(format!(
                    "q1 {}: the summary counted {} of {} waiting tasks",
                    store.as_str(),
                    p.counted,
                    p.waiting
                ));
            }
        }
        for p in f4::run(ctx, store, &f4_args).await? {
            if p.skipped.is_none() && p.heartbeats <= 0.0 {
                failures.push(format!(
                    "f4 {}: no heartbeat counted from {} delegates",
                    store.as_str(),
                    p.delegates
                ));
            }
        }
    }
    if ctx.common.database_url.is_some() {
        failures.extend(smoke_spread(ctx, &f3_args, &f4_args).await?);
    }
    if failures.is_empty() {
        println!("smoke: every scenario ran end to end");
        Ok(())
    } else {
        Err(BenchError::Incomplete(failures.join("; ")))
    }
}

/// F3 (with the restart) and F4 over two replicas on one PostgreSQL database, the fleet
/// in two driver processes: the multi-replica form of issue 20 at a few hundred sockets.
async fn smoke_spread(ctx: &Ctx, f3_args: &F3Args, f4_args: &F4Args) -> Result<Vec<String>, BenchError> {
    let mut common = ctx.common.clone();
    common.replicas = SPREAD.0;
    common.drivers = Some(SPREAD.1);
    let spread = Ctx::new(common)?;
    let mut failures = Vec::new();
    let f3_args = F3Args {
        sizes: vec![SPREAD_SOCKETS],
        restart: true,
        ..f3_args.clone()
    };
    let (points, storm) = f3::run_all(&spread, StoreKind::Postgres, &f3_args).await?;
    for p in &points {
        if p.connected < p.sockets || p.per_replica_sockets.len() != SPREAD.0 || p.per_replica_sockets.contains(&0.0) {
            failures.push(format!(
                "f3 over {} replicas: {} of {} sockets open, per replica {:?}",
                SPREAD.0, p.connected, p.sockets, p.per_replica_sockets
            ));
        }
    }
    match storm {
        Some(s) if s.reconnected_secs.is_some() => {}
        other => failures.push(format!(
            "f3 over {} replicas: the fleet did not come back after the restart: {other:?}",
            SPREAD.0
        )),
    }
    let f4_args = F4Args {
        cases: vec![format!("{SPREAD_SOCKETS}@1s")],
        ..f4_args.clone()
    };
    for p in f4::run(&spread, StoreKind::Postgres, &f4_args).await? {
        if p.heartbeats <= 0.0 || p.per_replica_cpu_percent.len() != SPREAD.0 {
            failures.push(format!(
                "f4 over {} replicas: {} heartbeats counted from {} delegates",
                SPREAD.0, p.heartbeats, p.delegates
            ));
        }
    }
    Ok(failures)
}

/// Replicas and driver processes of the smoke's spread fleet, and its size.
const SPREAD: (usize, usize) = (2, 2);
const SPREAD_SOCKETS: usize = 300;
