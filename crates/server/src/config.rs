//! The manager's settings and where they come from.
//!
//! Four layers, each overriding the one before: built-in defaults, an optional TOML file
//! (`--config PATH` or `SWITCHBOARD_CONFIG`), `SWITCHBOARD_*` environment variables, then
//! command-line flags. Every layer hands over text, and the same parser reads it whatever
//! its source, so `30s` means the same thing in a file, a variable and a flag.
//!
//! The settings are listed once, in the `settings!` invocation below: it produces the
//! [`Settings`] struct, its defaults, the flags, and the key list that the file and
//! environment layers are checked against. Adding a setting is one entry there and one row
//! in the README's table.
//!
//! A bad value is an error naming the key, the value (never a secret) and its source, in
//! one line, because it is printed as the whole of a failed startup's output.

mod values;

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use switchboard_domain::Secret;

pub use values::{Database, LogFormat, format_duration, parse_duration, redact_url};

/// Declares every setting once. Each entry: its doc (also the flag's help), the clap
/// attributes of its flag (`skip` for none), its name (the TOML key; the environment
/// variable is `SWITCHBOARD_` + the name in capitals), its type, default and parser.
macro_rules! settings {
    ($(
        $(#[doc = $doc:literal])*
        flag($($flag:tt)*)
        $name:ident: $ty:ty = $default:expr, parse = $parse:path;
    )*) => {
        /// Everything the manager can be configured with, fully validated.
        #[derive(Clone, Debug)]
        pub struct Settings {
            $( $(#[doc = $doc])* pub $name: $ty, )*
        }

        impl Default for Settings {
            fn default() -> Self {
                Self { $( $name: $default, )* }
            }
        }

        /// The command-line flag of each setting, as text: parsed by the same parser as
        /// the other layers so that errors read the same.
        #[derive(clap::Args, Clone, Debug, Default)]
        pub struct SettingFlags {
            $( $(#[doc = $doc])* #[arg($($flag)*)] pub $name: Option<String>, )*
        }

        /// Every setting's key, as written in the TOML file.
        pub const KEYS: &[&str] = &[$(stringify!($name)),*];

        impl Settings {
            /// Parses `raw` into the setting `key`; `None` when there is no such setting.
            fn set(&mut self, key: &str, raw: &str) -> Option<Result<(), String>> {
                match key {
                    $( stringify!($name) => Some($parse(raw).map(|v| self.$name = v)), )*
                    _ => None,
                }
            }
        }

        impl SettingFlags {
            /// The flags given, as `(key, value)`.
            fn given(&self) -> Vec<(&'static str, &str)> {
                let mut given = Vec::new();
                $( if let Some(v) = &self.$name { given.push((stringify!($name), v.as_str())); } )*
                given
            }
        }
    };
}

settings! {
    /// Address and port to listen on (127.0.0.1:8080).
    flag(long, value_name = "ADDR")
    listen: SocketAddr = SocketAddr::from(([127, 0, 0, 1], 8080)), parse = values::parse_listen;

    /// Where state is kept: postgres://... or postgresql://... for PostgreSQL, sqlite://PATH
    /// or sqlite:PATH for an SQLite file (default: SQLite in ./switchboard.db).
    flag(long, value_name = "URL")
    database_url: Database = Database::default(), parse = values::parse_database_url;

    /// The key operators present as `Authorization: Bearer <key>` on /api/v1 (no default:
    /// without it /api/v1 refuses every request). No flag, so it never shows in `ps`.
    flag(skip)
    admin_key: Option<Secret> = None, parse = values::parse_admin_key;

    /// Log output: human or json (human).
    flag(long, value_name = "FORMAT")
    log_format: LogFormat = LogFormat::Human, parse = values::parse_log_format;

    /// Log filter, in tracing's EnvFilter syntax (info).
    flag(long, value_name = "FILTER")
    log_level: String = "info".to_owned(), parse = values::parse_log_level;

    /// Longest time a request may take before it is answered 503 (30s).
    flag(long, value_name = "DURATION")
    request_timeout: Duration = Duration::from_secs(30), parse = values::parse_positive_duration;

    /// Largest request body accepted, in bytes or with KiB/MiB (2MiB: task payloads are up
    /// to 1 MiB of JSON, with room for the rest of the request).
    flag(long, value_name = "BYTES")
    body_limit: usize = 2 * 1024 * 1024, parse = values::parse_byte_size;

    /// Most PostgreSQL connections this manager opens (16).
    flag(long, value_name = "N")
    db_max_connections: u32 = 16, parse = values::parse_connections;

    /// How long shutdown waits for requests in flight before closing anyway (30s).
    flag(long, value_name = "DURATION")
    shutdown_grace: Duration = Duration::from_secs(30), parse = values::parse_duration;

    /// The URL delegates reach this manager at, used to build the socket URL handed out at
    /// registration (default: from the registration request's Host header).
    flag(long, value_name = "URL")
    public_url: Option<String> = None, parse = values::parse_public_url;

    /// How often delegates send heartbeats (60s).
    flag(long, value_name = "DURATION")
    heartbeat_interval: Duration = Duration::from_secs(60), parse = values::parse_positive_duration;

    /// A delegate whose last heartbeat is older than this is stale and gets no tasks (5m).
    flag(long, value_name = "DURATION")
    heartbeat_timeout: Duration = Duration::from_secs(300), parse = values::parse_positive_duration;

    /// How often heartbeats held in memory are written to the store, in one batch (5s);
    /// sooner when 2,000 are waiting.
    flag(long, value_name = "DURATION")
    heartbeat_flush_interval: Duration = Duration::from_secs(5), parse = values::parse_positive_duration;

    /// How long a quiet delegate socket has to answer its ping (15s): a socket from which
    /// nothing has arrived for the silence limit less this is pinged.
    flag(long, value_name = "DURATION")
    socket_ping_interval: Duration = Duration::from_secs(15), parse = values::parse_positive_duration;

    /// A socket from which nothing (no frame, no pong) arrives for this long is closed (45s).
    flag(long, value_name = "DURATION")
    socket_silence_timeout: Duration = Duration::from_secs(45), parse = values::parse_positive_duration;

    /// Delegates older than this version are refused at registration (none).
    flag(long, value_name = "VERSION")
    min_delegate_version: Option<String> = None, parse = values::parse_min_version;

    /// Instances without a heartbeat for this long are removed (6h).
    flag(long, value_name = "DURATION")
    instance_retention: Duration = Duration::from_secs(6 * 3600), parse = values::parse_positive_duration;

    /// Delegate groups without instances for this long are removed (7d).
    flag(long, value_name = "DURATION")
    group_retention: Duration = Duration::from_secs(7 * 24 * 3600), parse = values::parse_positive_duration;

    /// How long the connections a manager records count without it renewing its lease
    /// (10s): a crashed replica's delegates stop looking connected within this. Renewed
    /// every quarter of it. PostgreSQL only (one SQLite manager forgets them at start).
    flag(long, value_name = "DURATION")
    connection_lease: Duration = Duration::from_secs(10), parse = values::parse_positive_duration;

    /// How long a delegate has to answer a capability question (15s); one that does not
    /// is recorded as unable to reach it, like a negative answer (kept 5 min), so the task
    /// goes to another delegate meanwhile.
    flag(long, value_name = "DURATION")
    validation_timeout: Duration = Duration::from_secs(15), parse = values::parse_positive_duration;

    /// An assigned task not acquired within this long goes back to the queue (30s).
    flag(long, value_name = "DURATION")
    acknowledge_timeout: Duration = Duration::from_secs(30), parse = values::parse_positive_duration;

    /// How often the queue is re-examined even when nothing woke it (1s).
    flag(long, value_name = "DURATION")
    assign_interval: Duration = Duration::from_secs(1), parse = values::parse_positive_duration;

    /// Selection-log entries older than this are deleted by the sweep (30d).
    flag(long, value_name = "DURATION")
    selection_log_retention: Duration = Duration::from_secs(30 * 24 * 3600), parse = values::parse_positive_duration;

    /// The most a task's log keeps (10MiB): the first half as it came, then the newest
    /// output, with a marker where older output was cut. At least 512KiB. Logs are kept
    /// as long as selection logs (`selection_log_retention`) after they last grew.
    flag(long, value_name = "SIZE")
    task_log_max_bytes: usize = 10 * 1024 * 1024, parse = values::parse_log_bound;

    /// How often a followed task log (`GET /api/v1/tasks/{id}/logs?follow=true`) is read
    /// again when no append was heard (1s): appends on this replica, and on the others
    /// through PostgreSQL, wake it at once; this bounds the wait if a wake-up is missed.
    flag(long, value_name = "DURATION")
    log_follow_interval: Duration = Duration::from_secs(1), parse = values::parse_positive_duration;

    /// Audit-log entries older than this are deleted by the sweep (90d).
    flag(long, value_name = "DURATION")
    audit_retention: Duration = Duration::from_secs(90 * 24 * 3600), parse = values::parse_positive_duration;

    /// How often the removal sweep runs (1m).
    flag(long, value_name = "DURATION")
    sweep_interval: Duration = Duration::from_secs(60), parse = values::parse_positive_duration;

    /// The length of one interval of the queue's history, the dashboard's charts; an hour
    /// is 360 of them at the default (10s).
    flag(long, value_name = "DURATION")
    history_interval: Duration = Duration::from_secs(10), parse = values::parse_positive_duration;

    /// Requests a second each API key may make on /api/v1, in bursts of as many; 0 for no
    /// limit (1000).
    flag(long, value_name = "N")
    api_rate_limit: u32 = 1000, parse = values::parse_rate;

    /// Requests a second each delegate token or session credential may make on
    /// /delegate/v1, in bursts of as many; 0 for no limit (100).
    flag(long, value_name = "N")
    delegate_rate_limit: u32 = 100, parse = values::parse_rate;

    /// Most delegate sockets this manager holds open; more are answered 503 (100000).
    flag(long, value_name = "N")
    max_sockets: usize = 100_000, parse = values::parse_max_sockets;
    /// The manager's certificate chain, a PEM file: with tls_key, the manager serves HTTPS
    /// and WSS itself (none: plain HTTP).
    flag(long, value_name = "PATH")
    tls_cert: Option<PathBuf> = None, parse = values::parse_path;

    /// The private key of tls_cert, a PEM file (PKCS#8, PKCS#1 or SEC1).
    flag(long, value_name = "PATH")
    tls_key: Option<PathBuf> = None, parse = values::parse_path;

    /// The reference delegate's image in install files, without its tag (the manager's
    /// version is the tag; `-full` for the full flavour).
    flag(long, value_name = "IMAGE")
    delegate_image: String = "ghcr.io/switchboard-dev/switchboard-delegate".to_owned(), parse = values::parse_image;

    /// A file of keys that seal secret values: one per line, 32 bytes as 64 hex
    /// characters (`openssl rand -hex 32`); the last seals, all of them open (append a
    /// key to rotate). Read at startup. None: secret values are refused (references to
    /// values the delegate resolves still work).
    flag(long, value_name = "PATH")
    secret_key_file: Option<crate::sealing::SecretKeys> = None, parse = values::parse_secret_key_file;

    /// Longest a client may take to complete the TLS handshake, and then to send each
    /// request's headers; past it the connection is closed (10s).
    flag(long, value_name = "DURATION")
    header_read_timeout: Duration = Duration::from_secs(10), parse = values::parse_positive_duration;

    /// Longest a request's body may take to arrive after its headers; past it the answer
    /// is 408 and the connection is closed (30s).
    flag(long, value_name = "DURATION")
    body_read_timeout: Duration = Duration::from_secs(30), parse = values::parse_positive_duration;
}

/// The settings never echoed in error messages.
const SECRET_KEYS: &[&str] = &["admin_key"];

/// The environment variable naming the config file.
pub const CONFIG_ENV: &str = "SWITCHBOARD_CONFIG";

/// The arguments of `switchboard serve`.
#[derive(clap::Args, Clone, Debug, Default)]
pub struct ServeArgs {
    /// Read settings from this TOML file (also SWITCHBOARD_CONFIG).
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Write logs as JSON, one object per line (same as --log-format json).
    #[arg(long, conflicts_with = "log_format")]
    pub log_json: bool,

    #[command(flatten)]
    pub settings: SettingFlags,
}

/// Where a value came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "in config file {}", path.display()),
            Origin::Env(var) => write!(f, "from environment variable {var}"),
            Origin::Flag(flag) => write!(f, "from flag {flag}"),
        }
    }
}

/// The shortest `connection_lease` accepted.
const MIN_CONNECTION_LEASE: Duration = Duration::from_secs(1);

/// Why the settings could not be loaded. Each message is one line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {} ({origin}): {reason}", path.display())]
    Read {
        path: PathBuf,
        origin: Origin,
        reason: std::io::Error,
    },
    #[error("config file {} is not valid TOML: line {line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("unknown setting {key:?} in config file {}; the settings are: {}", path.display(), KEYS.join(", "))]
    UnknownKey { path: PathBuf, key: String },
    #[error("invalid {key} {shown} ({origin}): {reason}")]
    Invalid {
        key: String,
        shown: String,
        origin: Origin,
        reason: String,
    },
    #[error(
        "{given} is set but {missing} is not ({}, {}): HTTPS needs both the certificate and its key, plain HTTP neither",
        env_var(missing),
        flag_name(missing)
    )]
    Incomplete { given: &'static str, missing: &'static str },
    #[error("{0}")]
    Inconsistent(String),
}

/// The environment variable of a setting: `SWITCHBOARD_` and the key in capitals.
pub fn env_var(key: &str) -> String {
    format!("SWITCHBOARD_{}", key.to_ascii_uppercase())
}

/// The flag of a setting: `--` and the key with dashes.
pub fn flag_name(key: &str) -> String {
    format!("--{}", key.replace('_', "-"))
}

impl Settings {
    /// Loads the settings for `switchboard serve` from its arguments, the process
    /// environment and the config file they name.
    pub fn load(args: &ServeArgs) -> Result<Settings, ConfigError> {
        Self::load_with_env(args, |name| {
            std::env::var_os(name).map(|v| v.to_string_lossy().into_owned())
        })
    }

    /// Like [`Settings::load`], reading environment variables through `env` (tests pass a
    /// map instead of mutating the process environment, which other tests share).
    ///
    /// An empty environment variable counts as unset, as in `docker compose` files that
    /// declare a variable without a value.
    pub fn load_with_env(args: &ServeArgs, env: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        let env = |name: &str| env(name).filter(|v| !v.is_empty());
        let mut settings = Settings::default();

        let file = match (&args.config, env(CONFIG_ENV)) {
            (Some(path), _) => Some((path.clone(), Origin::Flag("--config".to_owned()))),
            (None, Some(path)) => Some((PathBuf::from(path), Origin::Env(CONFIG_ENV.to_owned()))),
            (None, None) => None,
        };
        if let Some((path, origin)) = file {
            for (key, raw) in read_file(&path, origin)? {
                settings.apply(&key, &raw, Origin::File(path.clone()))?;
            }
        }

        for key in KEYS {
            let var = env_var(key);
            if let Some(raw) = env(&var) {
                settings.apply(key, &raw, Origin::Env(var))?;
            }
        }

        if args.log_json {
            settings.log_format = LogFormat::Json;
        }
        for (key, raw) in args.settings.given() {
            settings.apply(key, raw, Origin::Flag(flag_name(key)))?;
        }
        settings.check_pairs()?;
        Ok(settings)
    }

    /// Settings that only make sense together: a certificate without its key (or the
    /// reverse) is a mistake to stop at, not a reason to serve plain HTTP.
    fn check_pairs(&self) -> Result<(), ConfigError> {
        match (&self.tls_cert, &self.tls_key) {
            (Some(_), None) => Err(ConfigError::Incomplete {
                given: "tls_cert",
                missing: "tls_key",
            }),
            (None, Some(_)) => Err(ConfigError::Incomplete {
                given: "tls_key",
                missing: "tls_cert",
            }),
            _ => Ok(()),
        }?;
        // A delegate beats every interval; one that looked stale between two beats would
        // lose its tasks to the liveness timer every time.
        if self.heartbeat_timeout <= self.heartbeat_interval {
            return Err(ConfigError::Inconsistent(format!(
                "heartbeat_timeout ({}) must be longer than heartbeat_interval ({}): delegates beat every \
                 interval and would look stale, and lose their tasks, between two beats",
                format_duration(self.heartbeat_timeout),
                format_duration(self.heartbeat_interval)
            )));
        }
        // Renewed every quarter of it: a shorter lease would mean thousands of writes a
        // second, and one missed renewal would make every delegate look disconnected.
        if self.connection_lease < MIN_CONNECTION_LEASE {
            return Err(ConfigError::Inconsistent(format!(
                "connection_lease ({}) must be at least {}",
                format_duration(self.connection_lease),
                format_duration(MIN_CONNECTION_LEASE)
            )));
        }
        Ok(())
    }

    fn apply(&mut self, key: &str, raw: &str, origin: Origin) -> Result<(), ConfigError> {
        let unknown = || match &origin {
            Origin::File(path) => ConfigError::UnknownKey {
                path: path.clone(),
                key: key.to_owned(),
            },
            // Only the file layer can name keys that do not exist; the others iterate KEYS.
            _ => ConfigError::Invalid {
                key: key.to_owned(),
                shown: String::new(),
                origin: origin.clone(),
                reason: "no such setting".to_owned(),
            },
        };
        match self.set(key, raw) {
            Some(Ok(())) => Ok(()),
            Some(Err(reason)) => Err(ConfigError::Invalid {
                key: key.to_owned(),
                shown: shown(key, raw),
                origin,
                reason,
            }),
            None => Err(unknown()),
        }
    }
}

/// How a bad value is echoed: secrets hidden, passwords in URLs masked.
fn shown(key: &str, raw: &str) -> String {
    if SECRET_KEYS.contains(&key) {
        "(value hidden)".to_owned()
    } else {
        format!("{:?}", redact_url(raw.trim()))
    }
}

/// Reads the TOML file into `(key, text)` pairs, refusing unknown keys: a misspelt key
/// silently ignored is a setting silently left at its default.
fn read_file(path: &Path, origin: Origin) -> Result<Vec<(String, String)>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|reason| ConfigError::Read {
        path: path.to_owned(),
        origin,
        reason,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Syntax {
        path: path.to_owned(),
        line: e.span().map_or(1, |span| {
            text.bytes().take(span.start).filter(|b| *b == b'\n').count() + 1
        }),
        message: e.message().trim().replace('\n', " "),
    })?;
    let mut pairs = Vec::with_capacity(table.len());
    for (key, value) in table {
        if !KEYS.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                path: path.to_owned(),
                key,
            });
        }
        let raw = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            other => {
                return Err(ConfigError::Invalid {
                    shown: format!("of type {}", other.type_str()),
                    key,
                    origin: Origin::File(path.to_owned()),
                    reason: "expected a string or a whole number".to_owned(),
                });
            }
        };
        pairs.push((key, raw));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use clap::Parser;

    use super::*;

    /// Parses flags as the binary would.
    #[derive(clap::Parser)]
    struct Cmd {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn args(flags: &[&str]) -> ServeArgs {
        Cmd::try_parse_from(std::iter::once("serve").chain(flags.iter().copied()))
            .expect("flags parse")
            .args
    }

    fn load(flags: &[&str], env: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::load_with_env(&args(flags), |name| env.get(name).cloned())
    }

    fn file(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::Builder::new().suffix(".toml").tempfile().expect("temp file");
        std::fs::write(file.path(), text).expect("write config");
        file
    }

    fn path_of(file: &tempfile::NamedTempFile) -> &str {
        file.path().to_str().expect("utf-8 temp path")
    }

    #[test]
    fn a_heartbeat_timeout_not_longer_than_the_interval_and_a_tiny_lease_are_refused() {
        let refused = load(&["--heartbeat-interval", "60s", "--heartbeat-timeout", "60s"], &[])
            .expect_err("stale between two beats")
            .to_string();
        assert!(
            refused.contains("heartbeat_timeout (1m) must be longer than heartbeat_interval (1m)"),
            "{refused}"
        );
        let refused = load(&["--connection-lease", "100ms"], &[])
            .expect_err("too short")
            .to_string();
        assert!(
            refused.contains("connection_lease (100ms) must be at least 1s"),
            "{refused}"
        );
        load(
            &[
                "--heartbeat-interval",
                "1s",
                "--heartbeat-timeout",
                "2s",
                "--connection-lease",
                "1s",
            ],
            &[],
        )
        .expect("fine");
    }

    #[test]
    fn defaults_need_no_configuration() {
        let s = load(&[], &[]).expect("defaults load");
        assert_eq!(s.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!(s.database_url, Database::Sqlite("./switchboard.db".into()));
        assert!(s.admin_key.is_none());
        assert_eq!(s.log_format, LogFormat::Human);
        assert_eq!(s.log_level, "info");
        assert_eq!(s.request_timeout, Duration::from_secs(30));
        assert_eq!(s.body_limit, 2 * 1024 * 1024);
        assert_eq!(s.db_max_connections, 16);
        assert_eq!(s.shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn every_setting_can_be_written_in_the_file() {
        let f = file(
            r#"
            listen = "0.0.0.0:9000"
            database_url = "postgres://sb:pw@db/sb"
            admin_key = "0123456789abcdef0123"
            log_format = "json"
            log_level = "debug"
            request_timeout = "5s"
            body_limit = 1048576
            db_max_connections = 4
            shutdown_grace = "250ms"
            "#,
        );
        let s = load(&["--config", path_of(&f)], &[]).expect("file loads");
        assert_eq!(s.listen, "0.0.0.0:9000".parse().expect("addr"));
        assert_eq!(s.database_url, Database::Postgres("postgres://sb:pw@db/sb".into()));
        assert_eq!(s.admin_key.as_ref().map(Secret::expose), Some("0123456789abcdef0123"));
        assert_eq!(s.log_format, LogFormat::Json);
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.request_timeout, Duration::from_secs(5));
        assert_eq!(s.body_limit, 1 << 20);
        assert_eq!(s.db_max_connections, 4);
        assert_eq!(s.shutdown_grace, Duration::from_millis(250));
    }

    #[test]
    fn environment_overrides_the_file_and_flags_override_both() {
        let f = file("listen = \"127.0.0.1:1000\"\nrequest_timeout = \"1s\"\nbody_limit = \"1KiB\"\n");
        let env = [
            ("SWITCHBOARD_LISTEN", "127.0.0.1:2000"),
            ("SWITCHBOARD_REQUEST_TIMEOUT", "2s"),
        ];
        let s = load(&["--config", path_of(&f), "--listen", "127.0.0.1:3000"], &env).expect("loads");
        assert_eq!(s.listen.port(), 3000, "flag beats environment");
        assert_eq!(s.request_timeout, Duration::from_secs(2), "environment beats file");
        assert_eq!(s.body_limit, 1024, "file beats default");
    }

    #[test]
    fn the_config_file_can_be_named_by_the_environment() {
        let f = file("db_max_connections = 3\n");
        let s = load(&[], &[(CONFIG_ENV, path_of(&f))]).expect("loads");
        assert_eq!(s.db_max_connections, 3);
    }

    #[test]
    fn log_json_flag_selects_json_logs() {
        let s = load(&["--log-json"], &[("SWITCHBOARD_LOG_FORMAT", "human")]).expect("loads");
        assert_eq!(s.log_format, LogFormat::Json);
    }

    #[test]
    fn empty_environment_variables_count_as_unset() {
        let s = load(&[], &[("SWITCHBOARD_DATABASE_URL", ""), ("SWITCHBOARD_ADMIN_KEY", "")]).expect("loads");
        assert_eq!(s.database_url, Database::default());
        assert!(s.admin_key.is_none());
    }

    #[test]
    fn an_unknown_key_in_the_file_is_named_with_the_file() {
        let f = file("listen = \"127.0.0.1:1\"\nlisten_addr = \"x\"\n");
        let msg = load(&["--config", path_of(&f)], &[])
            .expect_err("unknown key")
            .to_string();
        assert!(msg.contains("unknown setting \"listen_addr\""), "{msg}");
        assert!(msg.contains(path_of(&f)), "{msg}");
        assert!(msg.contains("listen, database_url"), "lists the known keys: {msg}");
    }

    #[test]
    fn a_malformed_value_names_key_value_and_source() {
        let f = file("request_timeout = \"soon\"\n");
        let msg = load(&["--config", path_of(&f)], &[])
            .expect_err("bad file value")
            .to_string();
        assert!(
            msg.starts_with("invalid request_timeout \"soon\" (in config file"),
            "{msg}"
        );

        let msg = load(&[], &[("SWITCHBOARD_BODY_LIMIT", "huge")])
            .expect_err("bad env value")
            .to_string();
        assert!(
            msg.contains("invalid body_limit \"huge\" (from environment variable SWITCHBOARD_BODY_LIMIT)"),
            "{msg}"
        );

        let msg = load(&["--shutdown-grace", "30"], &[])
            .expect_err("bad flag value")
            .to_string();
        assert!(
            msg.contains("invalid shutdown_grace \"30\" (from flag --shutdown-grace): the unit is missing"),
            "{msg}"
        );
    }

    #[test]
    fn a_value_of_the_wrong_toml_type_is_refused() {
        let f = file("listen = [\"a\"]\n");
        let msg = load(&["--config", path_of(&f)], &[]).expect_err("array").to_string();
        assert!(msg.contains("invalid listen") && msg.contains("of type array"), "{msg}");
    }

    #[test]
    fn a_malformed_database_url_is_an_error_naming_its_source() {
        let msg = load(&["--database-url", "postgres://db:x/sb"], &[])
            .expect_err("bad url")
            .to_string();
        assert!(
            msg.contains("invalid database_url \"postgres://db:x/sb\" (from flag --database-url)"),
            "{msg}"
        );
    }

    #[test]
    fn an_unsupported_database_scheme_is_an_error() {
        let msg = load(&[], &[("SWITCHBOARD_DATABASE_URL", "mysql://db/sb")])
            .expect_err("scheme")
            .to_string();
        assert!(
            msg.contains("SWITCHBOARD_DATABASE_URL") && msg.contains("unsupported scheme \"mysql\""),
            "{msg}"
        );
    }

    #[test]
    fn errors_never_echo_secrets() {
        let msg = load(&[], &[("SWITCHBOARD_ADMIN_KEY", "tiny-secret")])
            .expect_err("short key")
            .to_string();
        assert!(!msg.contains("tiny-secret"), "{msg}");
        assert!(msg.contains("SWITCHBOARD_ADMIN_KEY"), "{msg}");

        let msg = load(&["--database-url", "postgres://u:hunter2@db:x/sb"], &[])
            .expect_err("bad url")
            .to_string();
        assert!(!msg.contains("hunter2"), "{msg}");

        let s = load(&[], &[("SWITCHBOARD_ADMIN_KEY", "a-long-enough-admin-key")]).expect("loads");
        assert!(!format!("{s:?}").contains("a-long-enough-admin-key"));
    }

    #[test]
    fn a_missing_or_broken_file_is_an_error_naming_it() {
        let msg = load(&["--config", "/nonexistent/switchboard.toml"], &[])
            .expect_err("missing")
            .to_string();
        assert!(
            msg.starts_with("cannot read config file /nonexistent/switchboard.toml (from flag --config)"),
            "{msg}"
        );

        let f = file("listen = \"127.0.0.1:1\"\nthis is not toml\n");
        let msg = load(&["--config", path_of(&f)], &[]).expect_err("syntax").to_string();
        assert!(msg.contains("is not valid TOML: line 2"), "{msg}");
        assert!(!msg.contains('\n'), "one line: {msg}");
    }

    #[test]
    fn tls_needs_both_the_certificate_and_the_key() {
        let msg = load(&["--tls-cert", "/etc/switchboard/cert.pem"], &[])
            .expect_err("cert without key")
            .to_string();
        assert!(
            msg.starts_with("tls_cert is set but tls_key is not (SWITCHBOARD_TLS_KEY, --tls-key)"),
            "{msg}"
        );
        let msg = load(&[], &[("SWITCHBOARD_TLS_KEY", "/etc/switchboard/key.pem")])
            .expect_err("key without cert")
            .to_string();
        assert!(msg.starts_with("tls_key is set but tls_cert is not"), "{msg}");

        let f = file("tls_cert = \"cert.pem\"\ntls_key = \"key.pem\"\n");
        let s = load(&["--config", path_of(&f)], &[]).expect("both given");
        assert_eq!(s.tls_cert, Some(PathBuf::from("cert.pem")));
        assert_eq!(s.tls_key, Some(PathBuf::from("key.pem")));
        let s = load(&[], &[]).expect("neither given");
        assert!(s.tls_cert.is_none() && s.tls_key.is_none());
    }

    #[test]
    fn read_timeouts_have_defaults_and_refuse_zero() {
        let s = load(&[], &[]).expect("defaults");
        assert_eq!(s.header_read_timeout, Duration::from_secs(10));
        assert_eq!(s.body_read_timeout, Duration::from_secs(30));
        let s = load(&["--header-read-timeout", "300ms", "--body-read-timeout", "2s"], &[]).expect("loads");
        assert_eq!(s.header_read_timeout, Duration::from_millis(300));
        assert_eq!(s.body_read_timeout, Duration::from_secs(2));
        let msg = load(&[], &[("SWITCHBOARD_HEADER_READ_TIMEOUT", "0s")])
            .expect_err("zero")
            .to_string();
        assert!(msg.contains("invalid header_read_timeout"), "{msg}");
    }

    #[test]
    fn the_admin_key_has_no_flag() {
        assert!(Cmd::try_parse_from(["serve", "--admin-key", "0123456789abcdef"]).is_err());
    }

    #[test]
    fn every_key_maps_to_its_environment_variable_and_flag() {
        assert_eq!(env_var("db_max_connections"), "SWITCHBOARD_DB_MAX_CONNECTIONS");
        assert_eq!(flag_name("db_max_connections"), "--db-max-connections");
    }

    #[test]
    fn every_setting_is_documented_in_the_readme() {
        let readme = include_str!("../../../README.md");
        for key in KEYS {
            let row = format!("| `{key}` | `{}` |", env_var(key));
            assert!(
                readme.contains(&row),
                "README.md has no configuration row starting {row}"
            );
        }
    }
}
