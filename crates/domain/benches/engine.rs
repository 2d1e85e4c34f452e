//! F5 (issue 7): the assignment engine alone, `decide` over registries of 1,000, 10,000 and
//! 100,000 instances with a spread of accounts, orgs, projects and tags like a shared
//! manager's. Criterion measures the typical decision; a second pass times single
//! decisions one by one and prints p50 and p99, the figures the targets are stated in.
//!
//!     cargo bench -p switchboard-domain --bench engine
//!
//! Two modes, each for every size:
//!
//! - `placement`: `Context::verdicts` off, what placing a task needs (the chosen instance,
//!   what it must validate, the exact summary). The F5 targets are about this one.
//! - `verdicts`: the default, a verdict for every instance offering the task's selectors,
//!   as the selection log and the dry run show them.
//!
//! The registry (see `support/fleet.rs`): 10 accounts, each with 4 orgs of 3 projects;
//! groups of 10 instances at every level (a fifth at account level, a fifth at org level,
//! the rest in projects); 16 tags, two per group and one per instance; capacity 10 with a
//! random load; 95 % of the instances connected and fresh. Tasks: a random scope among
//! those in use (any level) and zero to two of the tags, type `echo`.

#[path = "support/fleet.rs"]
mod fleet;

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group};
use switchboard_domain::engine::{Context, TaskInputs, decide};

use self::fleet::{Rng, SIZES, context, echo, fleet, tasks};

/// The two modes: name, whether verdicts are written, and how many single decisions the
/// percentile pass times (fewer with verdicts: at 100,000 instances each takes
/// milliseconds).
const MODES: [(&str, bool, usize); 2] = [("placement", false, 20_000), ("verdicts", true, 2_000)];

fn context_for(verdicts: bool) -> Context {
    Context { verdicts, ..context() }
}

fn bench_decide(c: &mut Criterion) {
    let echo = echo();
    for (mode, verdicts, _) in MODES {
        let mut group = c.benchmark_group(format!("decide/{mode}"));
        for size in SIZES {
            let mut rng = Rng(0x5EED_0000 + size as u64);
            let fleet = fleet(size, &mut rng);
            let tasks = tasks(&fleet, &mut rng, 256);
            let ctx = context_for(verdicts);
            let mut i = 0;
            group.bench_with_input(BenchmarkId::from_parameter(size), &fleet, |b, fleet| {
                b.iter(|| {
                    let (scope, selectors) = &tasks[i % tasks.len()];
                    i += 1;
                    black_box(decide(&TaskInputs::new(scope, &echo, selectors), &fleet.registry, &ctx))
                })
            });
        }
        group.finish();
    }
}

/// p50 and p99 of single decisions, timed one by one after a tenth as many to warm up.
fn percentiles() {
    let echo = echo();
    for (mode, verdicts, count) in MODES {
        println!(
            "\n{mode}: single decisions, {count} per size (after {} to warm up)",
            count / 10
        );
        println!("{:>10} {:>12} {:>12} {:>12}", "instances", "p50", "p99", "max");
        for size in SIZES {
            let mut rng = Rng(0x5EED_0000 + size as u64);
            let fleet = fleet(size, &mut rng);
            let tasks = tasks(&fleet, &mut rng, 256);
            let ctx = context_for(verdicts);
            let mut times: Vec<Duration> = Vec::with_capacity(count);
            for n in 0..count + count / 10 {
                let (scope, selectors) = &tasks[n % tasks.len()];
                let started = Instant::now();
                black_box(decide(&TaskInputs::new(scope, &echo, selectors), &fleet.registry, &ctx));
                if n >= count / 10 {
                    times.push(started.elapsed());
                }
            }
            times.sort();
            let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
            println!(
                "{size:>10} {:>12.1?} {:>12.1?} {:>12.1?}",
                at(0.50),
                at(0.99),
                times[times.len() - 1]
            );
        }
    }
}

criterion_group!(benches, bench_decide);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
