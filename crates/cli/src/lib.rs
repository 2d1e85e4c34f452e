//! The operator commands of the `switchboard` binary (`tokens`, `delegates`, `connectors`,
//! `tasks`, `keys`): they talk to a running manager through `switchboard-client` and are
//! run by [`operate`]. The binary (in `switchboard-server`) adds `serve`, which runs the
//! manager, beside them.
//!
//! Exit codes scripts can rely on: 0 ok, 1 the manager refused (a 4xx problem, printed
//! as `error: <title>: <detail>`), 2 a usage error, 3 the manager could not be reached or
//! failed (5xx), 4 `tasks submit --wait` saw the task end other than `succeeded`.

#![forbid(unsafe_code)]

mod commands;
mod table;

use clap::{Args, Subcommand, ValueEnum};
use switchboard_domain::{Capability, Ident, Secret, TaskType};

pub use commands::operate;

/// Where the operator commands find the manager, and how they print. `serve` ignores these.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// The manager's URL.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_URL",
        default_value = "http://127.0.0.1:8080",
        value_name = "URL"
    )]
    pub url: String,
    /// The API key (SWITCHBOARD_KEY, else SWITCHBOARD_ADMIN_KEY). Never printed.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: Option<Secret>,
    /// How to print answers: human tables, or the API's JSON for scripts.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// A PEM file of CA certificates to trust for an https:// manager, besides the public
    /// ones (a company CA, or a self-signed manager's own certificate).
    #[arg(long, global = true, env = "SWITCHBOARD_CA_CERT", value_name = "PATH")]
    pub ca_cert: Option<std::path::PathBuf>,
    /// How long to wait for a manager that refuses connections (one still starting) before
    /// giving up with exit code 3, e.g. 10s or 0s.
    #[arg(
        long,
        global = true,
        env = "SWITCHBOARD_WAIT_FOR_MANAGER",
        default_value = "10s",
        value_parser = wait_duration,
        value_name = "DURATION"
    )]
    pub wait_for_manager: std::time::Duration,
}

fn wait_duration(raw: &str) -> Result<std::time::Duration, String> {
    switchboard_domain::duration::parse_duration(raw)
}

impl Connection {
    /// The key from `--key`/`SWITCHBOARD_KEY`, falling back to `SWITCHBOARD_ADMIN_KEY`.
    pub fn api_key(&self) -> Option<Secret> {
        self.key
            .clone()
            .or_else(|| std::env::var("SWITCHBOARD_ADMIN_KEY").ok().map(Secret::presented))
            .filter(|k| !k.expose().is_empty())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// The operator commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Delegate tokens: create (the secret is shown once), list, get, revoke.
    #[command(subcommand)]
    Tokens(TokensCommand),
    /// Delegates: list, show, tag, disable, enable, delete.
    #[command(subcommand)]
    Delegates(DelegatesCommand),
    /// Connectors: create, list, get, update, delete.
    #[command(subcommand)]
    Connectors(ConnectorsCommand),
    /// Secrets that tasks use: create, list, get, replace, delete (values are never
    /// shown).
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Scope policies (a scope's fair-share weight, its default retry policy): set, list,
    /// delete.
    #[command(subcommand)]
    Policies(PoliciesCommand),
    /// Tasks: submit, get, list, watch, explain, cancel, log.
    #[command(subcommand)]
    Tasks(Box<TasksCommand>),
    /// API keys: create (the secret is shown once), list, revoke.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// The waiting tasks as a whole: how many, and what holds them.
    Queue {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        project: Option<String>,
        #[arg(long = "type")]
        task_type: Option<String>,
        #[arg(long)]
        connector: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeysCommand {
    /// Create an API key; its secret is printed this once.
    Create {
        #[arg(long, value_parser = ident)]
        name: Ident,
        #[command(flatten)]
        scope: ScopeArgs,
        /// A permission to grant (repeatable): delegates:edit, delegates:delete,
        /// pipelines:execute, connectors:access. delegates:view is always granted.
        #[arg(long = "permission", value_parser = permission)]
        permissions: Vec<switchboard_domain::Permission>,
        /// Print only the secret, for `$(...)` in scripts.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the keys the caller may see (never their secrets).
    List,
    /// Revoke a key.
    Revoke { id: String },
}

fn permission(raw: &str) -> Result<switchboard_domain::Permission, String> {
    switchboard_domain::Permission::parse(raw).ok_or_else(|| {
        format!("{raw:?} is not a permission (delegates:view, delegates:edit, delegates:delete, pipelines:execute, connectors:access)")
    })
}

/// A scope: an account, optionally an org, optionally a project in it.
#[derive(Debug, Clone, Args)]
pub struct ScopeArgs {
    #[arg(long, value_parser = ident)]
    pub account: Ident,
    #[arg(long, value_parser = ident)]
    pub org: Option<Ident>,
    #[arg(long, value_parser = ident)]
    pub project: Option<Ident>,
}

#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Create a delegate token; its secret is printed this once.
    Create {
        #[arg(long, value_parser = ident)]
        name: Ident,
        #[command(flatten)]
        scope: ScopeArgs,
        /// Print only the secret, for `$(...)` in scripts.
        #[arg(long, short)]
        quiet: bool,
    },
    /// List the tokens (never their secrets).
    List,
    /// Show one token.
    Get { id: String },
    /// Revoke a token: no new registrations, its instances are disconnected.
    Revoke { id: String },
    /// Print an install file for a delegate with this token (`> delegate.yaml`); how to
    /// apply it goes to stderr.
    Install {
        id: String,
        /// kubernetes, compose or systemd.
        #[arg(long, default_value = "kubernetes")]
        format: String,
        /// The delegate's name (default: the token's).
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        replicas: Option<u32>,
        /// minimal or full.
        #[arg(long)]
        flavour: Option<String>,
        /// Comma-separated tags.
        #[arg(long)]
        tags: Option<String>,
        /// Parallel tasks per replica (resources scale with it).
        #[arg(long)]
        capacity: Option<u32>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// Mint a new token for this install and put it in the file (needs delegates:edit).
        #[arg(long)]
        new_token: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum DelegatesCommand {
    /// List the delegate groups and their instances.
    List,
    /// Declare a delegate (a pool) before any instance registers: it stays at zero
    /// instances, and tasks it fits wait for it instead of failing.
    Declare {
        #[arg(long, value_parser = ident)]
        name: Ident,
        #[command(flatten)]
        scope: ScopeArgs,
        /// A tag of the group, which every instance offers (repeatable).
        #[arg(long = "tag", value_name = "TAG")]
        tags: Vec<String>,
        /// A task type its instances will run (repeatable; none: any).
        #[arg(long = "type", value_name = "TYPE", value_parser = task_type)]
        task_types: Vec<TaskType>,
        /// How many instances it may grow to.
        #[arg(long, value_name = "N")]
        max_instances: Option<u32>,
    },
    /// Show one delegate group with its instances.
    Show { id: String },
    /// Replace the group's tags.
    Tag {
        id: String,
        /// The new tags (none clears them).
        tags: Vec<String>,
    },
    /// Give the group no more tasks.
    Disable { id: String },
    /// Give the group tasks again.
    Enable { id: String },
    /// Delete the group; its instances are told to drain.
    Delete { id: String },
    /// Pause the group, or one instance of it: no new task until resumed or until the
    /// pause ends by itself; what runs goes on.
    Pause {
        id: String,
        /// Pause this instance only.
        #[arg(long, value_name = "INSTANCE_ID")]
        instance: Option<String>,
        /// Why, for the next operator (shown by `delegates show` and the dashboard).
        #[arg(long)]
        note: String,
        /// How long the pause holds by itself (`30m`, `4h`); none: until resumed.
        #[arg(long = "for", value_name = "DURATION", conflicts_with = "until")]
        duration: Option<String>,
        /// When the pause ends by itself (RFC 3339).
        #[arg(long, value_name = "TIME")]
        until: Option<chrono::DateTime<chrono::Utc>>,
    },
    /// Lift the pause of the group, or of one instance of it.
    Resume {
        id: String,
        #[arg(long, value_name = "INSTANCE_ID")]
        instance: Option<String>,
    },
    /// Mint a single-use registration credential (shown once): it registers one
    /// instance, once, which takes one task and is then removed.
    Jit {
        id: String,
        /// How long the credential can register (1m to 24h; 1h when absent).
        #[arg(long, value_name = "DURATION")]
        expires_in: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum PoliciesCommand {
    /// Set (replace) a scope's policy.
    Set {
        #[command(flatten)]
        scope: ScopeArgs,
        /// The weight of the scope's fair share, 1 to 1000 (default 1).
        #[arg(long)]
        weight: Option<u32>,
        /// The retry policy of its tasks that name none, as JSON (as `tasks submit --retry`).
        #[arg(long, value_parser = retry_policy, value_name = "JSON")]
        retry: Option<switchboard_protocol::tasks::RetryInput>,
    },
    /// List the policies, optionally within a scope.
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Remove a scope's policy.
    Delete {
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConnectorsCommand {
    /// Create a connector.
    Create {
        #[arg(long, value_parser = ident)]
        name: Ident,
        #[command(flatten)]
        scope: ScopeArgs,
        /// A delegate selector (repeatable).
        #[arg(long = "selector", value_name = "SELECTOR")]
        selectors: Vec<String>,
    },
    /// List connectors, optionally within a scope.
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one connector.
    Get { id: String },
    /// Replace a connector's name and selectors.
    Update {
        id: String,
        #[arg(long, value_parser = ident)]
        name: Ident,
        /// A delegate selector (repeatable; none clears them).
        #[arg(long = "selector", value_name = "SELECTOR")]
        selectors: Vec<String>,
    },
    /// Delete a connector.
    Delete { id: String },
}

/// Where a secret's value comes from on the command line: never an argument (it would
/// show in `ps` and the shell's history), but a file or stdin; or a reference instead.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct SecretSourceArgs {
    /// Read the value from this file (`-` for stdin); one final newline is dropped.
    #[arg(long, value_name = "PATH")]
    pub value_file: Option<std::path::PathBuf>,
    /// Instead of a value: where the delegate finds it (`env:NAME`, `file:/path`, ...).
    #[arg(long, value_name = "REFERENCE")]
    pub reference: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Create a secret: a value (sealed by the manager) or a reference.
    Create {
        #[arg(long, value_parser = ident)]
        name: Ident,
        #[command(flatten)]
        scope: ScopeArgs,
        #[command(flatten)]
        source: SecretSourceArgs,
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List the secrets the key may use, optionally within a scope.
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        project: Option<String>,
    },
    /// Show one secret (never its value).
    Get { id: String },
    /// Replace what a secret holds: a new version.
    Replace {
        id: String,
        #[command(flatten)]
        source: SecretSourceArgs,
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete a secret.
    Delete { id: String },
}

/// What a task submission (or its dry run) says.
#[derive(Debug, Clone, Args)]
pub struct TaskArgs {
    #[command(flatten)]
    pub scope: ScopeArgs,
    /// The task type (`echo`, `http_check`, ...).
    #[arg(long = "type", value_parser = task_type)]
    pub task_type: TaskType,
    /// The payload, as JSON.
    #[arg(long, value_parser = json, value_name = "JSON")]
    pub payload: Option<serde_json::Value>,
    /// A delegate selector (repeatable).
    #[arg(long = "selector", value_name = "SELECTOR")]
    pub selectors: Vec<String>,
    /// A connector id.
    #[arg(long)]
    pub connector: Option<switchboard_domain::ConnectorId>,
    /// Something the task must reach: `http:URL` or `tcp:HOST:PORT` (repeatable).
    #[arg(long = "capability", value_parser = capability, value_name = "CAPABILITY")]
    pub capabilities: Vec<Capability>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    #[arg(long, value_name = "MS")]
    pub assign_timeout_ms: Option<u64>,
    #[arg(long, value_name = "MS")]
    pub execution_timeout_ms: Option<u64>,
    #[arg(long, value_name = "N")]
    pub max_attempts: Option<u32>,
    /// Wait in the queue even when no registered delegate could ever take it.
    #[arg(long)]
    pub wait_for_delegate: bool,
    /// At most `--concurrency-limit` tasks of this key run at once in the account.
    #[arg(long, value_name = "KEY")]
    pub concurrency_key: Option<String>,
    /// With `--concurrency-key`: how many may run at once (default 1).
    #[arg(long, value_name = "N")]
    pub concurrency_limit: Option<u32>,
    /// With `--concurrency-key`: `keep_all` (default) or `cancel_older`.
    #[arg(long, value_parser = concurrency_strategy, value_name = "STRATEGY")]
    pub concurrency_strategy: Option<switchboard_domain::policy::ConcurrencyStrategy>,
    /// The retry policy, as JSON: `{"on": ["failed", "timed_out", "delegate_lost"],
    /// "error_codes": [..], "initial_delay_ms": .., "backoff_factor": ..,
    /// "max_delay_ms": .., "prefer_different_instance": ..}` (docs/rules.md, "Retries").
    #[arg(long, value_parser = retry_policy, value_name = "JSON")]
    pub retry: Option<switchboard_protocol::tasks::RetryInput>,
    /// A secret the task uses, by name (repeat for more): needs `secrets:access` at the
    /// secret's scope.
    #[arg(long = "secret", value_parser = ident, value_name = "NAME")]
    pub secrets: Vec<Ident>,
}

#[derive(Debug, Subcommand)]
pub enum TasksCommand {
    /// Submit a task.
    Submit {
        #[command(flatten)]
        task: TaskArgs,
        /// Makes retries of this submission answer the original task.
        #[arg(long, value_name = "KEY")]
        idempotency_key: Option<String>,
        /// Wait for the task to end, printing each state; exit 4 unless it succeeded.
        #[arg(long)]
        wait: bool,
    },
    /// Show one task.
    Get { id: String },
    /// List tasks, newest first.
    List {
        #[arg(long)]
        account: Option<String>,
        #[arg(long)]
        org: Option<String>,
        #[arg(long)]
        project: Option<String>,
        /// States, comma-separated.
        #[arg(long)]
        state: Option<String>,
        #[arg(long = "type")]
        task_type: Option<String>,
        #[arg(long)]
        connector: Option<String>,
        /// The `next` cursor of the previous page.
        #[arg(long)]
        before: Option<String>,
        /// At most this many (1 to 500, the server's page limit).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=500))]
        limit: Option<u32>,
    },
    /// Print each state of a task until it ends; exits 0 whatever the end state.
    Watch {
        id: String,
        /// How long each long poll waits, in milliseconds (0 to 300000, the server's limit).
        #[arg(
            long,
            default_value_t = commands::DEFAULT_POLL_MS,
            value_name = "MS",
            value_parser = clap::value_parser!(u64).range(0..=switchboard_protocol::tasks::WAIT_MAX_MS)
        )]
        poll_ms: u64,
    },
    /// A dry run: which delegates would take this task now, and why not the others.
    Explain {
        #[command(flatten)]
        task: TaskArgs,
    },
    /// Cancel a task.
    Cancel { id: String },
    /// Every decision about a task: its selection log.
    Log { id: String },
    /// Every attempt of a task: where it ran, how each ended and why, when the next is due.
    Attempts { id: String },
    /// What a task's attempts printed: its whole log so far, or with --follow each new
    /// line as it is stored until the task ends.
    Logs {
        id: String,
        /// Keep printing what the task prints until it ends.
        #[arg(long)]
        follow: bool,
    },
}

fn ident(raw: &str) -> Result<Ident, String> {
    Ident::parse(raw).map_err(|e| e.to_string())
}

fn task_type(raw: &str) -> Result<TaskType, String> {
    ident(raw).map(TaskType)
}

fn json(raw: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))
}

fn concurrency_strategy(raw: &str) -> Result<switchboard_domain::policy::ConcurrencyStrategy, String> {
    serde_json::from_value(serde_json::Value::String(raw.to_owned()))
        .map_err(|_| "a strategy is keep_all or cancel_older".to_owned())
}

fn retry_policy(raw: &str) -> Result<switchboard_protocol::tasks::RetryInput, String> {
    serde_json::from_str(raw).map_err(|e| format!("not a retry policy: {e}"))
}

fn capability(raw: &str) -> Result<Capability, String> {
    let value = if raw.starts_with("http://") || raw.starts_with("https://") {
        serde_json::json!({"kind": "http", "url": raw})
    } else if let Some(url) = raw.strip_prefix("http:") {
        serde_json::json!({"kind": "http", "url": url})
    } else if let Some(rest) = raw.strip_prefix("tcp:") {
        let (host, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| "a tcp capability is tcp:HOST:PORT".to_owned())?;
        let port: u16 = port.parse().map_err(|_| format!("{port:?} is not a port"))?;
        serde_json::json!({"kind": "tcp", "host": host, "port": port})
    } else {
        return Err("a capability is http:URL or tcp:HOST:PORT".to_owned());
    };
    serde_json::from_value(value).map_err(|e| e.to_string())
}
