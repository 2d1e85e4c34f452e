//! Q1, the queue summary: what `GET /api/v1/queue` costs with many tasks waiting.
//!
//! Each case fills a fresh manager's queue with `WAITING` tasks that wait (they select
//! delegates nobody runs, spread over `--shapes` selector sets and the three scope
//! levels), beside a connected fleet of `--delegates` that the engine walks for each
//! shape. Then the summary is asked for `--calls` times, one after another, and timed from
//! outside; beside it, in the same run, one page of the task list (500 queued tasks) as
//! an API reference, and the store's own reference (pgbench or SQLite's single-row rate).

use std::time::{Duration, Instant};

use futures::StreamExt;
use serde::Serialize;
use serde_json::json;
use switchboard_client::{Client, TaskFilter};
use switchboard_protocol::tasks::SubmitTask;

use crate::BenchError;
use crate::fleet::{Fleet, Layout};
use crate::load::Recorder;
use crate::manager::{Manager, StoreKind};
use crate::report::{Table, num};
use crate::scenario::{Ctx, progress};

#[derive(clap::Args, Debug, Clone, Serialize)]
pub struct Q1Args {
    /// How many tasks wait, per case (comma-separated).
    #[arg(long, value_delimiter = ',', default_values_t = [10_000usize, 100_000])]
    pub waiting: Vec<usize>,
    /// How many different selector sets they use (each with three scope levels).
    #[arg(long, default_value_t = 20)]
    pub shapes: usize,
    /// Connected delegates the engine walks.
    #[arg(long, default_value_t = 200)]
    pub delegates: usize,
    /// Summaries asked for, one after another.
    #[arg(long, default_value_t = 20)]
    pub calls: usize,
}

/// One case and what it measured.
#[derive(Debug, Clone, Serialize)]
pub struct Point {
    pub waiting: usize,
    pub shapes_seen: u32,
    pub submit_per_s: f64,
    pub summary_p50_ms: f64,
    pub summary_p95_ms: f64,
    pub summary_max_ms: f64,
    /// `GET /api/v1/tasks?state=queued&limit=500`, the same way: an API reference.
    pub list_page_p50_ms: f64,
    pub counted: u64,
}

pub async fn run(ctx: &Ctx, store: StoreKind, args: &Q1Args) -> Result<Vec<Point>, BenchError> {
    let pgbench = ctx.reference(store).await;
    let sqlite = ctx.sqlite_reference(store).await;
    let mut points = Vec::new();
    for &waiting in &args.waiting {
        let label = format!("q1-{}-{waiting}", store.as_str());
        let manager = ctx.manager(store, &label, &[]).await?;
        let outcome = measure(ctx, &manager, &label, waiting, args).await;
        manager.stop().await;
        points.push(outcome?);
    }
    let mut table = Table::new(
        format!(
            "Q1 queue summary, {}: GET /api/v1/queue with many tasks waiting",
            store.as_str()
        ),
        &[
            "waiting",
            "shapes",
            "seeded/s",
            "summary p50 ms",
            "p95 ms",
            "max ms",
            "list page p50 ms",
            "summary / list page",
        ],
    );
    for p in &points {
        table.row(vec![
            p.waiting.to_string(),
            p.shapes_seen.to_string(),
            num(p.submit_per_s, 0),
            num(p.summary_p50_ms, 1),
            num(p.summary_p95_ms, 1),
            num(p.summary_max_ms, 1),
            num(p.list_page_p50_ms, 1),
            num(p.summary_p50_ms / p.list_page_p50_ms.max(0.001), 1),
        ]);
    }
    table.note(format!(
        "{} delegates connected; the tasks select delegates nobody runs, so each waits; one call at a time",
        args.delegates
    ));
    if let Some(r) = &pgbench {
        table.note(format!(
            "reference: pgbench single-row UPDATE {} tps at {} clients, in this run",
            num(r.update_tps, 0),
            r.clients
        ));
    }
    if let Some(r) = &sqlite {
        table.note(format!(
            "reference: SQLite single-row INSERT commits {} a second, in this run",
            num(r.insert_commits_per_second, 0)
        ));
    }
    table.print();
    ctx.write(
        "q1",
        store,
        pgbench.as_ref(),
        json!({
            "settings": args,
            "sqlite_reference": sqlite,
            "points": points,
            "result": points.iter().map(|p| json!({
                "waiting": p.waiting,
                "summary_p50_ms": p.summary_p50_ms,
                "summary_p95_ms": p.summary_p95_ms,
            })).collect::<Vec<_>>(),
        }),
    )?;
    Ok(points)
}

async fn measure(
    ctx: &Ctx,
    manager: &Manager,
    label: &str,
    waiting: usize,
    args: &Q1Args,
) -> Result<Point, BenchError> {
    let operator = Client::new(manager.url.clone(), Some(manager.api_key.clone()))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    let layout = Layout::new(args.delegates)?;
    let mut fleet = Fleet::new(
        &operator,
        &manager.url,
        layout.clone(),
        10,
        ctx.sources(args.delegates),
        std::sync::Arc::new(Recorder::default()),
    )
    .await?;
    let bar = progress(&format!("{label}: connecting {} delegates", args.delegates));
    fleet.grow(args.delegates, &bar).await?;
    fleet
        .wait_connected(args.delegates, Duration::from_secs(120), &bar)
        .await;
    bar.finish_and_clear();

    let bar = progress(&format!("{label}: filling the queue"));
    bar.set_length(waiting as u64);
    let started = Instant::now();
    let submitted = futures::stream::iter(0..waiting)
        .map(|i| {
            let operator = &operator;
            let body = task(&layout, i, args.shapes);
            async move { operator.submit_task(&body, None).await }
        })
        .buffer_unordered(64)
        .fold(0usize, |n, outcome| {
            bar.inc(1);
            async move { n + usize::from(outcome.is_ok()) }
        })
        .await;
    let submit_per_s = submitted as f64 / started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if submitted < waiting {
        fleet.stop().await;
        return Err(BenchError::Incomplete(format!(
            "{label}: {submitted} of {waiting} tasks submitted"
        )));
    }

    let mut summary_ms = Vec::new();
    let mut counted = 0;
    let mut shapes_seen = 0;
    for _ in 0..args.calls {
        let t = Instant::now();
        let summary = operator.queue(&TaskFilter::default()).await;
        summary_ms.push(t.elapsed().as_secs_f64() * 1000.0);
        match summary {
            Ok(s) => {
                counted = s.waiting;
                shapes_seen = s.shapes;
            }
            Err(e) => {
                fleet.stop().await;
                return Err(BenchError::Manager(format!("GET /api/v1/queue: {e}")));
            }
        }
    }
    let page = TaskFilter {
        state: Some("queued".into()),
        limit: Some(500),
        ..TaskFilter::default()
    };
    let mut list_ms = Vec::new();
    for _ in 0..args.calls {
        let t = Instant::now();
        operator
            .list_tasks(&page)
            .await
            .map_err(|e| BenchError::Manager(format!("GET /api/v1/tasks: {e}")))?;
        list_ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    fleet.stop().await;
    if counted < waiting as u64 {
        return Err(BenchError::Incomplete(format!(
            "{label}: the summary counted {counted} of {waiting} waiting tasks"
        )));
    }
    Ok(Point {
        waiting,
        shapes_seen,
        submit_per_s,
        summary_p50_ms: quantile(&mut summary_ms, 0.5),
        summary_p95_ms: quantile(&mut summary_ms, 0.95),
        summary_max_ms: quantile(&mut summary_ms, 1.0),
        list_page_p50_ms: quantile(&mut list_ms, 0.5),
        counted,
    })
}

/// The `i`th waiting task: a selector nobody offers (one of `shapes`), at one of the
/// three scope levels of the layout, waiting an hour at most.
fn task(layout: &Layout, i: usize, shapes: usize) -> SubmitTask {
    let slot = layout.slot(i);
    SubmitTask {
        account: layout.account.clone(),
        org: slot.org.cloned(),
        project: slot.project.cloned(),
        task_type: layout.task_type.clone(),
        payload: json!({}),
        selectors: vec![format!("absent-{}", i % shapes.max(1))],
        connector: None,
        capabilities: vec![],
        priority: 0,
        assign_timeout_ms: Some(3_600_000),
        execution_timeout_ms: None,
        max_attempts: None,
        wait_for_delegate: true,
        concurrency_key: None,
        concurrency_limit: None,
        concurrency_strategy: None,
        retry: None,
        secrets: Vec::new(),
    }
}

fn quantile(values: &mut [f64], q: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() - 1) as f64 * q).round() as usize;
    values[i.min(values.len() - 1)]
}
