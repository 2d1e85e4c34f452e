//! The reference delegate: the program customers run inside their own network.
//!
//! It registers with a manager using a delegate token, keeps a socket open through the
//! client library, answers capability checks from where it runs, and runs the built-in
//! task types. The binary (`main.rs`) only parses settings, sets up logging and calls
//! [`agent::run`]; everything else lives in the modules below, one job each, so each can
//! be tested without a manager.
//!
//! - [`settings`]: flags and environment, validated once.
//! - [`register`]: registration, retried while the manager is unreachable.
//! - [`agent`]: the main loop over the session's events.
//! - [`checks`] and [`probe`]: capability checks (`http`, `tcp`) done for real.
//! - [`tasks`], [`registry`] and [`cancel`]: the built-in task types, the tasks running
//!   now, and how one is stopped.
//! - [`logfile`] and [`telemetry`]: `delegate.log` with daily and size rotation.
//! - [`runlog`]: `--run-log`, the delegate's own record of every attempt it ran.

#![forbid(unsafe_code)]

pub mod agent;
pub mod cancel;
pub mod checks;
pub mod health;
pub mod logfile;
pub mod logship;
pub mod probe;
pub mod register;
pub mod registry;
pub mod runlog;
pub mod secrets;
pub mod settings;
pub mod tasks;
pub mod telemetry;

#[cfg(test)]
mod testing;
