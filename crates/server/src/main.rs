//! The `switchboard` binary: parses the command line and hands over to the library.
//!
//! The operator commands (`tokens`, `delegates`, `connectors`, `tasks`, `keys`) come from
//! `switchboard-cli` and are run by [`switchboard_cli::operate`] against a running manager.
//!
//! `serve` loads the settings, sets up logging, opens the store, binds the listener and
//! runs until SIGTERM or ctrl-c (SIGINT). A startup failure is one `error: ...` line on stderr and
//! exit code 2 for a bad setting or 1 for anything else, never a panic: this output is
//! what an operator reads in `kubectl logs` when a pod will not start.

#![forbid(unsafe_code)]

use std::io::Write;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard_cli::{Connection, operate};
use switchboard_server::config::ServeArgs;
use switchboard_server::{AppState, Settings, bootstrap, open_store, run_with_tls, telemetry, tls};
use tokio::net::TcpListener;

/// mimalloc rather than the system allocator: on the task path glibc's malloc took about a
/// third of the manager's CPU (see docs/benchmarks.md, "Group commit").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Switchboard: the manager of a delegate system.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
struct Cli {
    #[command(flatten)]
    connection: Connection,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the manager: the HTTP API for delegates, pipeline engines and operators.
    Serve(Box<ServeArgs>),
    #[command(flatten)]
    Operator(Box<switchboard_cli::Command>),
}

/// A failed start: what to print and the exit code.
struct Failure {
    code: u8,
    message: String,
}

impl Failure {
    fn config(message: impl ToString) -> Self {
        Self {
            code: 2,
            message: message.to_string(),
        }
    }

    fn runtime(message: impl ToString) -> Self {
        Self {
            code: 1,
            message: message.to_string(),
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(&args),
        // The operator commands print their own errors and choose their exit codes.
        Command::Operator(command) => return ExitCode::from(operate(&cli.connection, *command)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            // One line, whatever the error's own formatting.
            eprintln!("error: {}", failure.message.replace('\n', " "));
            ExitCode::from(failure.code)
        }
    }
}

fn serve(args: &ServeArgs) -> Result<(), Failure> {
    let settings = Settings::load(args).map_err(Failure::config)?;
    telemetry::init(settings.log_format, &settings.log_level).map_err(Failure::config)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::runtime(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(serve_async(settings))
}

async fn serve_async(settings: Settings) -> Result<(), Failure> {
    // Before the store and the listener: an unusable certificate is a setting to fix.
    let acceptor = tls::acceptor(&settings).map_err(Failure::config)?;
    let scheme = if acceptor.is_some() { "https" } else { "http" };
    let database = settings.database_url.clone();
    let store = open_store(&settings)
        .await
        .map_err(|e| Failure::runtime(format!("cannot open the {database} store: {e}")))?;

    let admin_key = bootstrap::admin_key(store.as_ref(), &settings)
        .await
        .map_err(|e| Failure::runtime(format!("cannot read the admin key from the {database} store: {e}")))?;

    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        Failure::runtime(format!(
            "cannot listen on {}: {}",
            settings.listen,
            describe_bind_error(&e)
        ))
    })?;
    let address = listener
        .local_addr()
        .map_err(|e| Failure::runtime(format!("cannot read the bound address: {e}")))?;
    let shutdown = shutdown_signal().map_err(|e| Failure::runtime(format!("cannot listen for signals: {e}")))?;

    bootstrap::announce(&admin_key, &mut std::io::stdout())
        .map_err(|e| Failure::runtime(format!("cannot print the generated admin key: {e}")))?;
    // The one line on stdout: scripts and tests wait for it to know the server is up.
    println!("switchboard listening on {scheme}://{address} (store: {database})");
    let _ = std::io::stdout().flush();
    tracing::info!(%address, scheme, store = %database, "listening");

    let state = AppState::with_admin_key(store, settings, admin_key.hash());
    run_with_tls(listener, state, acceptor, shutdown)
        .await
        .map_err(|e| Failure::runtime(format!("the server stopped: {e}")))?;
    tracing::info!("stopped");
    Ok(())
}

/// "address in use" rather than "Address already in use (os error 98)".
fn describe_bind_error(error: &std::io::Error) -> String {
    match error.kind() {
        std::io::ErrorKind::AddrInUse => "address in use".to_owned(),
        std::io::ErrorKind::AddrNotAvailable => "address not available on this machine".to_owned(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
        _ => error.to_string(),
    }
}

/// A future that completes on SIGTERM (what container runtimes send to stop a process) or
/// ctrl-c. The handlers are installed here, before the "listening" line is printed, so a
/// signal sent as soon as that line appears is never missed (or fatal).
#[cfg(unix)]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    Ok(async move {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
        };
        tracing::info!(signal = name, "shutdown requested");
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    Ok(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        tracing::info!(signal = "ctrl-c", "shutdown requested");
    })
}
