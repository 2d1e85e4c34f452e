//! `switchboard-delegate`: parses settings, sets up logging, runs the agent, and turns
//! its outcome into an exit code (0 stopped, 1 failed, 2 bad settings, 3 token revoked).
//! Everything else lives in the library (`lib.rs`) so it can be tested.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use switchboard_delegate::settings::{Settings, SettingsError};
use switchboard_delegate::{agent, telemetry};

fn main() -> ExitCode {
    let settings = match Settings::parse_from(std::env::args_os()) {
        Ok(settings) => settings,
        Err(e) => return settings_error(e),
    };
    if let Err(e) = telemetry::init(&settings.log_dir, settings.log_limits) {
        eprintln!(
            "error: cannot write delegate.log in {}: {e}",
            settings.log_dir.display()
        );
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let exit = runtime.block_on(async {
        // Counts the stop signals: the first drains, the second stops at once.
        let (stops, watch) = tokio::sync::watch::channel(0u32);
        tokio::spawn(async move {
            loop {
                shutdown_signal().await;
                stops.send_modify(|n| *n += 1);
            }
        });
        agent::run(&settings, watch).await
    });
    ExitCode::from(exit.code())
}

/// `--help` and `--version` print and succeed; anything else is one line and code 2.
fn settings_error(e: SettingsError) -> ExitCode {
    match (e.one_line(), e) {
        (Some(line), _) => {
            eprintln!("{line}");
            ExitCode::from(2)
        }
        (None, SettingsError::Clap(e)) => {
            let _ = e.print();
            ExitCode::SUCCESS
        }
        (None, SettingsError::Invalid(_)) => ExitCode::from(2),
    }
}

/// Resolves on the next ctrl-c or SIGTERM (what container runtimes send to stop a process).
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
