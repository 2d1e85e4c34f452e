//! Logging: human lines on stderr, the same events in `delegate.log` (see [`crate::logfile`]).
//!
//! Both outputs share one filter, `RUST_LOG` when set, else `info`. Events carry
//! structured fields (`task.id = %id`) rather than prose with values pasted in, so the
//! file can be searched. Secrets are never recorded: the token is only ever held in a
//! type whose `Debug` hides it.

use std::io::IsTerminal;
use std::path::Path;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::logfile::{Limits, LogFile, SystemClock};

/// Installs the global subscriber. Fails when the log file cannot be opened, which the
/// caller reports as a settings problem (the log directory).
pub fn init(log_dir: &Path, limits: Limits) -> std::io::Result<()> {
    let file = LogFile::open(log_dir, limits, SystemClock)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false);
    let file = tracing_subscriber::fmt::layer().with_writer(file).with_ansi(false);
    // `try_init` fails only when a subscriber is already installed (tests); keeping the
    // existing one is right then.
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(stderr)
        .with(file)
        .try_init();
    Ok(())
}
