//! Runs many single decisions over the F5 fleet, for a profiler to look at (the bench's
//! criterion and percentile passes are too long to run under callgrind).
//!
//!     cargo build --release -p switchboard-domain --example engine_profile
//!     valgrind --tool=callgrind --toggle-collect='switchboard_domain::engine::decide' \
//!         target/release/examples/engine_profile 100000 200 placement
//!
//! Arguments: the fleet size (default 100,000), how many decisions (default 2,000), and
//! the mode, `placement` (no verdicts, the default) or `verdicts`.

// Shared with the bench, which also uses its list of sizes.
#[path = "../benches/support/fleet.rs"]
#[allow(dead_code)]
mod fleet;

use std::hint::black_box;
use std::time::Instant;

use switchboard_domain::engine::{Context, TaskInputs, decide};

fn main() {
    let mut args = std::env::args().skip(1);
    let size: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let count: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2_000);
    let verdicts = args.next().as_deref() == Some("verdicts");
    let mut rng = fleet::Rng(0x5EED_0000 + size as u64);
    let built = Instant::now();
    let fleet = fleet::fleet(size, &mut rng);
    println!("fleet of {size} generated and indexed in {:?}", built.elapsed());
    let tasks = fleet::tasks(&fleet, &mut rng, 256);
    let ctx = Context {
        verdicts,
        ..fleet::context()
    };
    let echo = fleet::echo();
    let started = Instant::now();
    for n in 0..count {
        let (scope, selectors) = &tasks[n % tasks.len()];
        black_box(decide(&TaskInputs::new(scope, &echo, selectors), &fleet.registry, &ctx));
    }
    let per = started.elapsed() / count.max(1) as u32;
    println!("{count} decisions over {size} instances (verdicts: {verdicts}): {per:?} each on average");
}
