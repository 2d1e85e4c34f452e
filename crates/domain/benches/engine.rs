//! F5 (issue 7): the assignment engine alone, `decide` over registries of 1,000, 10,000 and
//! 100,000 instances with a spread of accounts, orgs, projects and tags like a shared
//! manager's. Criterion measures the typical decision; a second pass times 20,000 single
//! decisions per size and prints p50 and p99, the figures the targets are stated in.
//!
//!     cargo bench -p switchboard-domain --bench engine
//!
//! The registry: 10 accounts, each with 4 orgs of 3 projects; groups of 10 instances at
//! every level (a fifth at account level, a fifth at org level, the rest in projects); 16
//! tags, two per group and one per instance; capacity 10 with a random load; 95 % of the
//! instances connected and fresh. Tasks: a random scope among those in use (any level) and
//! zero to two of the tags, type `echo`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group};
use switchboard_domain::engine::{Context, Registry, TaskInputs, decide};
use switchboard_domain::{
    Capacity, DelegateGroup, DelegateInstance, GroupId, Ident, ImageFlavour, InstanceId, Scope, Selector, Selectors,
    TaskType, TokenId,
};

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const TAGS: usize = 16;
const PER_GROUP: usize = 10;

/// A small deterministic generator (xorshift), so every run builds the same registry.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn tag(i: usize) -> Selector {
    Selector::parse(&format!("tag-{i}")).expect("valid selector")
}

fn scope_of(rng: &mut Rng) -> String {
    let (a, o, p) = (rng.below(10), rng.below(4), rng.below(3));
    match rng.below(5) {
        0 => format!("acct{a}"),
        1 => format!("acct{a}/org{o}"),
        _ => format!("acct{a}/org{o}/proj{p}"),
    }
}

struct Fleet {
    registry: Registry,
    scopes: Vec<Scope>,
}

fn fleet(instances: usize, rng: &mut Rng) -> Fleet {
    let now = Utc
        .with_ymd_and_hms(2026, 1, 1, 12, 0, 0)
        .single()
        .expect("a valid instant");
    let echo = TaskType(Ident::parse("echo").expect("valid"));
    let mut groups = Vec::new();
    let mut members = Vec::new();
    let mut scopes = Vec::new();
    for g in 0..instances.div_ceil(PER_GROUP) {
        let scope = Scope::parse_path(&scope_of(rng)).expect("valid scope");
        let group = DelegateGroup {
            id: GroupId::new(),
            scope: scope.clone(),
            name: Ident::parse(&format!("group-{g}")).expect("valid"),
            tags: [tag(rng.below(TAGS)), tag(rng.below(TAGS))].into_iter().collect(),
            disabled: false,
            created_at: now,
        };
        scopes.push(scope);
        for n in 0..PER_GROUP {
            let fresh = rng.below(100) < 95;
            members.push(DelegateInstance {
                id: InstanceId::new(),
                group_id: group.id,
                token_id: TokenId::new(),
                hostname: format!("host-{g}-{n}"),
                version: "1.0.0".to_owned(),
                flavour: ImageFlavour::Minimal,
                tags: [tag(rng.below(TAGS))].into_iter().collect(),
                task_types: vec![echo.clone()],
                capacity: Capacity::new(10).expect("valid"),
                active_tasks: rng.below(10) as u32,
                registered_at: now,
                last_heartbeat_at: if fresh { now } else { now - chrono::Duration::hours(1) },
                connected: fresh,
            });
        }
        groups.push(group);
    }
    Fleet {
        registry: Registry::new(groups, members, [], []),
        scopes,
    }
}

/// A task's scope and selectors.
fn tasks(fleet: &Fleet, rng: &mut Rng, n: usize) -> Vec<(Scope, Selectors)> {
    (0..n)
        .map(|_| {
            let scope = fleet.scopes[rng.below(fleet.scopes.len())].clone();
            let selectors: Selectors = (0..rng.below(3)).map(|_| tag(rng.below(TAGS))).collect();
            (scope, selectors)
        })
        .collect()
}

fn context() -> Context {
    Context::new(Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 30).single().expect("valid"), 7)
}

fn bench_decide(c: &mut Criterion) {
    let echo = TaskType(Ident::parse("echo").expect("valid"));
    let mut group = c.benchmark_group("decide");
    for size in SIZES {
        let mut rng = Rng(0x5EED_0000 + size as u64);
        let fleet = fleet(size, &mut rng);
        let tasks = tasks(&fleet, &mut rng, 256);
        let ctx = context();
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

/// p50 and p99 of single decisions, timed one by one.
fn percentiles() {
    let echo = TaskType(Ident::parse("echo").expect("valid"));
    println!("\nsingle decisions, 20,000 per size (after 2,000 to warm up)");
    println!("{:>10} {:>12} {:>12} {:>12}", "instances", "p50", "p99", "max");
    for size in SIZES {
        let mut rng = Rng(0x5EED_0000 + size as u64);
        let fleet = fleet(size, &mut rng);
        let tasks = tasks(&fleet, &mut rng, 256);
        let ctx = context();
        let mut times: Vec<Duration> = Vec::with_capacity(20_000);
        for n in 0..22_000 {
            let (scope, selectors) = &tasks[n % tasks.len()];
            let started = Instant::now();
            black_box(decide(&TaskInputs::new(scope, &echo, selectors), &fleet.registry, &ctx));
            if n >= 2_000 {
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

criterion_group!(benches, bench_decide);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    percentiles();
}
