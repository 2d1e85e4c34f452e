//! End-to-end tests of the manager: the app served by `run` on port 0 against a fresh
//! SQLite store, and the real `switchboard` binary started in a temporary directory.
//!
//! One test binary (this file) with its cases in `server/`, so the crate is linked once.

#![allow(clippy::unwrap_used)]

mod server {
    mod api;
    mod audit;
    mod binary;
    mod browser;
    mod cli;
    mod connectors;
    mod crash;
    mod dashboard;
    mod delegate_tasks;
    mod delegates;
    mod dispatch;
    mod edge;
    mod fuzz;
    mod install;
    mod layout;
    mod limits;
    mod long_poll;
    mod maintenance;
    mod metrics;
    mod monitoring;
    mod openapi;
    mod openapi_errors;
    mod outage;
    mod permissions;
    mod policy;
    mod pools;
    mod queries;
    mod queue;
    mod quickstart;
    mod raw_heads;
    mod replicas;
    mod rules;
    mod secrets;
    mod slow_clients;
    mod spec;
    mod support;
    mod task_logs;
    mod tls;
    mod tokens;
}
