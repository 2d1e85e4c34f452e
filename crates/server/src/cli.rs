//! The command line of the `switchboard` binary. `serve` runs the manager; the operator
//! commands (delegates, tokens, tasks) join it as further subcommands.

use clap::{Parser, Subcommand};

use crate::config::ServeArgs;

/// Switchboard: the manager of a delegate system.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the manager: the HTTP API for delegates, pipeline engines and operators.
    Serve(ServeArgs),
}
