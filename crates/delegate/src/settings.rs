//! The delegate's settings, from flags and `SWITCHBOARD_*` environment variables.
//!
//! Everything is checked here, once, and turned into [`Settings`]: past this module
//! nothing re-validates a name, a task type or a duration. A bad setting is reported by
//! `main` as one `error: ...` line and exit code 2, the convention of command-line tools,
//! so an operator's container log shows exactly what to fix.
//!
//! Flags win over the environment (clap's rule). The token is wrapped in [`Token`] so no
//! `Debug` print of the settings can leak it, and `--help` never shows its value.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::builder::BoolishValueParser;
use clap::{ArgAction, Parser, ValueEnum};
use switchboard_client::Tls;
use switchboard_domain::{Capacity, Ident, ImageFlavour, TaskType};
use switchboard_protocol::delegate::RegisterRequest;

use crate::logfile::Limits;
use crate::tasks::BuiltIn;

/// The delegate token: a secret. `Debug` and `Display` never print it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl Token {
    /// The secret itself, for the one place that needs it: the registration request.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl FromStr for Token {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the token must not be empty".into());
        }
        Ok(Token(s.to_owned()))
    }
}

/// The image flavour as a flag value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Flavour {
    Full,
    Minimal,
}

impl From<Flavour> for ImageFlavour {
    fn from(f: Flavour) -> Self {
        match f {
            Flavour::Full => ImageFlavour::Full,
            Flavour::Minimal => ImageFlavour::Minimal,
        }
    }
}

/// The raw command line, as clap sees it.
#[derive(Debug, Parser)]
#[command(name = "switchboard-delegate", version, about = "The Switchboard reference delegate")]
struct Args {
    /// The manager's URL, e.g. https://switchboard.example.com
    /// The manager's URL [default: http://127.0.0.1:8080, or the one in --jit-config]
    #[arg(long, env = "SWITCHBOARD_MANAGER", value_name = "URL")]
    manager: Option<String>,

    /// A PEM file of CA certificates to trust, besides the public ones: for an https://
    /// manager with a private certificate, and for https capability checks and
    /// http_check tasks.
    #[arg(long, env = "SWITCHBOARD_CA_CERT", value_name = "PATH")]
    ca_cert: Option<PathBuf>,

    /// The delegate token to register with.
    #[arg(
        long,
        env = "SWITCHBOARD_TOKEN",
        hide_env_values = true,
        required_unless_present = "jit_config"
    )]
    token: Option<Token>,

    /// The delegate (group) to create or join.
    #[arg(long, env = "SWITCHBOARD_NAME", required_unless_present = "jit_config")]
    name: Option<Ident>,

    /// A single-use registration, as `POST /api/v1/delegates/{id}/jit` answers it
    /// (`jit_config`): the manager's URL, a token that registers once, and the delegate's
    /// name. The delegate takes one task and exits 0 once it ended.
    #[arg(
        long,
        env = "SWITCHBOARD_JIT_CONFIG",
        hide_env_values = true,
        conflicts_with_all = ["token", "name", "max_tasks"]
    )]
    jit_config: Option<JitConfig>,

    /// Take this many tasks, then exit 0 once they ended (an ephemeral delegate); the
    /// manager removes the instance then.
    #[arg(long, env = "SWITCHBOARD_MAX_TASKS", value_parser = clap::value_parser!(u32).range(1..=1000))]
    max_tasks: Option<u32>,

    /// On SIGTERM or ctrl-c, how long to let running tasks finish before cancelling them
    /// (the delegate tells the manager it is draining at once, so it is offered nothing
    /// more). A second signal cancels at once. 0 cancels at once.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    drain_timeout: Duration,

    /// This instance's own tags, comma-separated.
    #[arg(long, env = "SWITCHBOARD_TAGS", value_delimiter = ',')]
    tags: Vec<String>,

    /// How many tasks to run in parallel.
    #[arg(long, env = "SWITCHBOARD_CAPACITY", default_value = "10", value_parser = parse_capacity)]
    capacity: Capacity,

    /// The task types to offer, comma-separated: echo, http_check, sleep, shell.
    #[arg(
        long,
        env = "SWITCHBOARD_TASK_TYPES",
        value_delimiter = ',',
        default_value = "echo,http_check,sleep"
    )]
    task_types: Vec<BuiltIn>,

    /// Allow `shell` tasks, which run arbitrary commands on this machine.
    // Boolish so the environment can say `1`, `yes` or `on` as well as `true`.
    #[arg(
        long,
        env = "SWITCHBOARD_ENABLE_SHELL",
        action = ArgAction::SetTrue,
        value_parser = BoolishValueParser::new()
    )]
    enable_shell: bool,

    /// Register in this organization (narrower than the token's scope).
    #[arg(long, env = "SWITCHBOARD_ORG")]
    org: Option<Ident>,

    /// Register in this project of --org.
    #[arg(long, env = "SWITCHBOARD_PROJECT")]
    project: Option<Ident>,

    /// The hostname to report; defaults to this machine's.
    #[arg(long, env = "SWITCHBOARD_HOSTNAME")]
    hostname: Option<String>,

    /// The image flavour to report.
    #[arg(long, env = "SWITCHBOARD_FLAVOUR", value_enum, default_value = "minimal")]
    flavour: Flavour,

    /// Where to write delegate.log and its rotated files.
    #[arg(long, env = "SWITCHBOARD_LOG_DIR", default_value = ".")]
    log_dir: PathBuf,

    /// How long a capability check may take, e.g. 5s or 500ms.
    #[arg(long, env = "SWITCHBOARD_CHECK_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
    check_timeout: Duration,

    /// Append one JSON line per task attempt started and finished to this file (task,
    /// attempt, time, outcome, what the manager said to the report): this delegate's own
    /// record of what it ran. Off by default.
    #[arg(long, env = "SWITCHBOARD_RUN_LOG", value_name = "PATH")]
    run_log: Option<PathBuf>,

    /// Serve `GET /healthz` on this address (`0.0.0.0:8081`, say) for a liveness probe:
    /// 200 while the process runs, with whether its socket to the manager is up. Off by
    /// default.
    #[arg(long, env = "SWITCHBOARD_HEALTH_LISTEN", value_name = "ADDR")]
    health_listen: Option<std::net::SocketAddr>,

    // The rotation limits are the original's; they are settable only so tests can use
    // small ones, hence hidden from --help.
    #[arg(long, hide = true, default_value_t = Limits::default().max_file_bytes)]
    log_max_file_bytes: u64,

    #[arg(long, hide = true, default_value_t = Limits::default().max_total_bytes)]
    log_max_total_bytes: u64,

    #[arg(long, hide = true, default_value_t = Limits::default().keep_days)]
    log_keep_days: u32,
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The manager's base URL, without a trailing slash.
    pub manager: String,
    /// Whom HTTPS and WSS trust (the public roots, and `--ca-cert`'s CAs), for the
    /// manager and for checks alike.
    pub tls: Tls,
    pub token: Token,
    pub name: Ident,
    pub tags: Vec<String>,
    /// Set for a single-use (ephemeral) delegate: how many tasks it takes, then exits.
    pub max_tasks: Option<u32>,
    /// How long running tasks may finish after the first stop signal.
    pub drain_timeout: Duration,
    pub capacity: Capacity,
    /// The task types offered, without duplicates, in the order given.
    pub task_types: Vec<BuiltIn>,
    pub org: Option<Ident>,
    pub project: Option<Ident>,
    pub hostname: String,
    pub flavour: ImageFlavour,
    pub log_dir: PathBuf,
    pub log_limits: Limits,
    pub check_timeout: Duration,
    /// Where to record every attempt run (`--run-log`), if anywhere.
    pub run_log: Option<PathBuf>,
    /// Where to serve `/healthz` (`--health-listen`), if anywhere.
    pub health_listen: Option<std::net::SocketAddr>,
}

/// Why the settings could not be read.
#[derive(Debug)]
pub enum SettingsError {
    /// Clap's own outcome: `--help`, `--version`, or a flag it could not parse.
    Clap(clap::Error),
    /// The flags parsed but do not make sense together.
    Invalid(String),
}

impl SettingsError {
    /// The one line to print, starting with `error: `; `None` for `--help` and
    /// `--version`, which clap prints itself.
    pub fn one_line(&self) -> Option<String> {
        match self {
            SettingsError::Clap(e) if !e.use_stderr() => None,
            SettingsError::Clap(e) => {
                // Clap's message is a paragraph (the error, sometimes an indented list
                // of the missing flags), then usage and tips; keep the paragraph, as one
                // line.
                let rendered = e.render().to_string();
                let paragraph: Vec<&str> = rendered
                    .lines()
                    .map(str::trim)
                    .skip_while(|l| l.is_empty())
                    .take_while(|l| !l.is_empty())
                    .collect();
                let line = paragraph.join(" ");
                Some(if line.starts_with("error:") {
                    line
                } else {
                    format!("error: {line}")
                })
            }
            SettingsError::Invalid(msg) => Some(format!("error: {msg}")),
        }
    }
}

impl Settings {
    /// Reads the settings from `args` (the first item is the program name) and the
    /// process environment.
    pub fn parse_from<I, T>(args: I) -> Result<Settings, SettingsError>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let args = Args::try_parse_from(args).map_err(SettingsError::Clap)?;
        Settings::try_from(args).map_err(SettingsError::Invalid)
    }

    /// The registration body this delegate sends.
    pub fn register_request(&self) -> RegisterRequest {
        RegisterRequest {
            name: self.name.clone(),
            hostname: self.hostname.clone(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            flavour: self.flavour,
            tags: self.tags.clone(),
            task_types: self.task_types.iter().map(|t| t.task_type()).collect::<Vec<TaskType>>(),
            capacity: Some(self.capacity.get()),
            org: self.org.clone(),
            project: self.project.clone(),
            max_tasks: self.max_tasks,
        }
    }
}

impl TryFrom<Args> for Settings {
    type Error = String;

    fn try_from(args: Args) -> Result<Self, String> {
        let (manager, token, name, max_tasks) = match args.jit_config {
            Some(jit) => (
                args.manager.unwrap_or(jit.url),
                jit.token,
                jit.name,
                // The manager makes a JIT instance single-use whatever it asks.
                Some(1),
            ),
            None => (
                args.manager.unwrap_or_else(|| DEFAULT_MANAGER.to_owned()),
                args.token.ok_or("--token is required (or --jit-config)")?,
                args.name.ok_or("--name is required (or --jit-config)")?,
                args.max_tasks,
            ),
        };
        let manager = parse_manager(&manager)?;
        let tls = Tls::from_ca_file(args.ca_cert.as_deref()).map_err(|e| format!("--ca-cert: {e}"))?;
        if args.project.is_some() && args.org.is_none() {
            return Err("--project needs --org: a project lives in an organization".into());
        }
        let mut task_types: Vec<BuiltIn> = Vec::new();
        for t in args.task_types {
            if !task_types.contains(&t) {
                task_types.push(t);
            }
        }
        if task_types.contains(&BuiltIn::Shell) && !args.enable_shell {
            return Err("the shell task type runs arbitrary commands; add --enable-shell to allow it".into());
        }
        // `--enable-shell` means "offer shell tasks", so it is enough on its own.
        if args.enable_shell && !task_types.contains(&BuiltIn::Shell) {
            task_types.push(BuiltIn::Shell);
        }
        if task_types.is_empty() {
            return Err("--task-types must name at least one task type".into());
        }
        let tags = args
            .tags
            .iter()
            .map(|t| t.trim())
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        let hostname = match args.hostname {
            Some(h) if h.trim().is_empty() => return Err("--hostname must not be empty".into()),
            Some(h) => h.trim().to_owned(),
            None => machine_hostname(
                std::env::var("HOSTNAME").ok(),
                std::fs::read_to_string("/etc/hostname").ok(),
            ),
        };
        if args.check_timeout.is_zero() {
            return Err("--check-timeout must be longer than zero".into());
        }
        let log_limits = Limits {
            max_file_bytes: args.log_max_file_bytes,
            max_total_bytes: args.log_max_total_bytes,
            keep_days: args.log_keep_days,
        };
        if log_limits.max_file_bytes == 0 || log_limits.max_total_bytes == 0 {
            return Err("the log size limits must be larger than zero".into());
        }
        Ok(Settings {
            manager,
            tls,
            token,
            name,
            tags,
            max_tasks,
            drain_timeout: args.drain_timeout,
            capacity: args.capacity,
            task_types,
            org: args.org,
            project: args.project,
            hostname,
            flavour: args.flavour.into(),
            log_dir: args.log_dir,
            log_limits,
            check_timeout: args.check_timeout,
            run_log: args.run_log,
            health_listen: args.health_listen,
        })
    }
}

/// The manager a delegate talks to when nothing says otherwise.
const DEFAULT_MANAGER: &str = "http://127.0.0.1:8080";

/// What `--jit-config` carries: base64 (URL-safe, padding optional) of
/// `{"url": ..., "token": ..., "name": ...}`.
#[derive(Clone)]
struct JitConfig {
    url: String,
    token: Token,
    name: Ident,
}

impl fmt::Debug for JitConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JitConfig")
            .field("url", &self.url)
            .field("token", &self.token)
            .field("name", &self.name)
            .finish()
    }
}

impl FromStr for JitConfig {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        use base64::Engine as _;
        #[derive(serde::Deserialize)]
        struct Wire {
            url: String,
            token: String,
            name: Ident,
        }
        let bad = |why: &str| format!("not a JIT config ({why}); pass the jit_config the manager answered");
        let raw = s.trim().trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(raw)
            .map_err(|_| bad("not base64"))?;
        let wire: Wire = serde_json::from_slice(&bytes).map_err(|_| bad("not the JSON it should hold"))?;
        Ok(JitConfig {
            url: wire.url,
            token: wire.token.parse().map_err(|e: String| bad(&e))?,
            name: wire.name,
        })
    }
}

fn parse_manager(url: &str) -> Result<String, String> {
    let url = url.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !url.chars().any(char::is_whitespace) => Ok(url.to_owned()),
        _ => Err(format!(
            "--manager must be an http:// or https:// URL, e.g. https://switchboard.example.com; got {url:?}"
        )),
    }
}

fn parse_capacity(s: &str) -> Result<Capacity, String> {
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("capacity must be a whole number, got {s:?}"))?;
    Capacity::new(n)
}

/// Parses a duration as the manager's settings do (`500ms`, `5s`, `2m`, `1h`, `7d`:
/// [`switchboard_domain::duration`]), and also a bare number, as seconds: the delegate has
/// always taken `--check-timeout 7`, and keeps taking it.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(1_000))
            .map(Duration::from_millis)
            .ok_or_else(|| format!("duration {s:?} is too long"));
    }
    switchboard_domain::duration::parse_duration(s)
}

/// The machine's hostname: `$HOSTNAME` if set, else `/etc/hostname`, else `localhost`.
/// The sources are parameters so the choice can be tested without touching the process.
fn machine_hostname(env: Option<String>, etc_hostname: Option<String>) -> String {
    [env, etc_hostname]
        .into_iter()
        .flatten()
        .map(|h| h.trim().to_owned())
        .find(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(extra: &[&str]) -> Result<Settings, SettingsError> {
        let mut args = vec![
            "switchboard-delegate",
            "--manager",
            "http://127.0.0.1:8080/",
            "--token",
            "s3cret",
            "--name",
            "edge",
        ];
        args.extend_from_slice(extra);
        Settings::parse_from(args)
    }

    fn error_line(extra: &[&str]) -> String {
        parse(extra)
            .expect_err("settings should be refused")
            .one_line()
            .expect("an error line")
    }

    #[test]
    fn defaults_match_the_documented_ones() {
        let s = parse(&[]).expect("valid");
        assert_eq!(s.manager, "http://127.0.0.1:8080");
        assert_eq!(s.capacity.get(), 10);
        assert_eq!(s.task_types, vec![BuiltIn::Echo, BuiltIn::HttpCheck, BuiltIn::Sleep]);
        assert_eq!(s.flavour, ImageFlavour::Minimal);
        assert_eq!(s.log_dir, PathBuf::from("."));
        assert_eq!(s.check_timeout, Duration::from_secs(5));
        assert_eq!(s.run_log, None);
        assert_eq!(s.log_limits, Limits::default());
        assert!(!s.hostname.is_empty());
        assert!(s.tls.ca_file().is_none());
    }

    #[test]
    fn flags_fill_the_registration_body() {
        let s = parse(&[
            "--tags",
            "gpu, eu-west,,",
            "--capacity",
            "3",
            "--org",
            "eng",
            "--project",
            "web",
            "--hostname",
            "box-1",
            "--flavour",
            "full",
        ])
        .expect("valid");
        let r = s.register_request();
        assert_eq!(r.name.as_str(), "edge");
        assert_eq!(r.tags, vec!["gpu", "eu-west"]);
        assert_eq!(r.capacity, Some(3));
        assert_eq!(r.org.as_ref().map(Ident::as_str), Some("eng"));
        assert_eq!(r.project.as_ref().map(Ident::as_str), Some("web"));
        assert_eq!(r.hostname, "box-1");
        assert_eq!(r.flavour, ImageFlavour::Full);
        assert_eq!(r.version, env!("CARGO_PKG_VERSION"));
        let types: Vec<&str> = r.task_types.iter().map(TaskType::as_str).collect();
        assert_eq!(types, vec!["echo", "http_check", "sleep"]);
    }

    #[test]
    fn the_token_never_appears_in_debug_output() {
        let s = parse(&[]).expect("valid");
        let printed = format!("{s:?}");
        assert!(!printed.contains("s3cret"), "{printed}");
        assert!(printed.contains("redacted"));
        assert_eq!(s.token.expose(), "s3cret");
    }

    #[test]
    fn shell_is_refused_unless_enabled() {
        let line = error_line(&["--task-types", "echo,shell"]);
        assert!(line.starts_with("error: ") && line.contains("--enable-shell"), "{line}");
        let s = parse(&["--task-types", "echo,shell", "--enable-shell"]).expect("valid");
        assert_eq!(s.task_types, vec![BuiltIn::Echo, BuiltIn::Shell]);
    }

    #[test]
    fn enable_shell_alone_adds_shell_to_the_default_types() {
        let s = parse(&["--enable-shell"]).expect("valid");
        assert_eq!(
            s.task_types,
            vec![BuiltIn::Echo, BuiltIn::HttpCheck, BuiltIn::Sleep, BuiltIn::Shell]
        );
    }

    #[test]
    fn bad_settings_give_one_error_line() {
        for (extra, needle) in [
            (&["--task-types", "echo,launch"][..], "launch"),
            (&["--capacity", "0"][..], "capacity"),
            (&["--capacity", "many"][..], "capacity"),
            (&["--project", "web"][..], "--org"),
            (&["--flavour", "huge"][..], "huge"),
            (&["--check-timeout", "5 fortnights"][..], "unit"),
            (&["--check-timeout", "0s"][..], "zero"),
            (&["--org", "9lives"][..], "9lives"),
            (&["--hostname", " "][..], "hostname"),
            (&["--ca-cert", "/nonexistent/ca.pem"][..], "/nonexistent/ca.pem"),
        ] {
            let line = error_line(extra);
            assert!(line.starts_with("error: "), "{extra:?}: {line}");
            assert!(!line.contains('\n'), "{extra:?}: {line}");
            assert!(line.contains(needle), "{extra:?}: {line}");
        }
    }

    #[test]
    fn the_manager_must_be_an_http_url() {
        let line = Settings::parse_from(["d", "--manager", "ftp://x", "--token", "t", "--name", "n"])
            .expect_err("refused")
            .one_line()
            .expect("a line");
        assert!(line.contains("--manager"), "{line}");
    }

    #[test]
    fn missing_flags_are_named_on_the_error_line() {
        let line = Settings::parse_from(["d"])
            .expect_err("refused")
            .one_line()
            .expect("a line");
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--token") && line.contains("--name"), "{line}");
    }

    #[test]
    fn the_manager_defaults_to_one_on_this_machine() {
        let settings = Settings::parse_from(["d", "--token", "t", "--name", "n"]).expect("valid");
        assert_eq!(settings.manager, "http://127.0.0.1:8080");
    }

    #[test]
    fn help_is_not_an_error_line() {
        let err = Settings::parse_from(["d", "--help"]).expect_err("help is clap's outcome");
        assert_eq!(err.one_line(), None);
    }

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("1d"), Ok(Duration::from_secs(86_400)));
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 days").is_err());
        assert!(parse_duration("99999999999999999999").is_err());
    }

    #[test]
    fn the_hostname_comes_from_the_environment_then_etc_hostname_then_localhost() {
        assert_eq!(machine_hostname(Some("a".into()), Some("b\n".into())), "a");
        assert_eq!(machine_hostname(None, Some("b\n".into())), "b");
        assert_eq!(machine_hostname(Some(" ".into()), None), "localhost");
    }
}
