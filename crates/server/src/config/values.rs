//! The value types of settings and their parsers: durations (`30s`), byte sizes (`2MiB`),
//! database URLs, the log format, the admin key.
//!
//! Every parser takes the raw text however it arrived (file, environment, flag) and
//! returns a short reason on failure; [`super`] adds the key and where the value came
//! from, so these messages never need to know either.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use switchboard_domain::Secret;

pub use switchboard_domain::duration::{format_duration, parse_duration};

/// Like [`parse_duration`], refusing zero (a zero request timeout would refuse everything).
pub fn parse_positive_duration(raw: &str) -> Result<Duration, String> {
    match parse_duration(raw)? {
        d if d.is_zero() => Err("must be greater than zero".to_owned()),
        d => Ok(d),
    }
}

/// Parses a byte count: `2097152`, `512KiB`, `2MiB`, `1GiB`.
pub fn parse_byte_size(raw: &str) -> Result<usize, String> {
    const FORMS: &str = "a number of bytes, optionally with KiB, MiB or GiB, like 2097152 or 2MiB";
    let s = raw.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (digits, unit) = s.split_at(split);
    if digits.is_empty() {
        return Err(format!("expected {FORMS}"));
    }
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return Err(format!("unknown unit {unit:?}; expected {FORMS}")),
    };
    match digits.parse::<usize>().ok().and_then(|n| n.checked_mul(multiplier)) {
        Some(0) => Err("must be greater than zero".to_owned()),
        Some(n) => Ok(n),
        None => Err("the size is too large".to_owned()),
    }
}

/// A container image name without a tag: registry/path characters only.
pub fn parse_image(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    let ok = !s.is_empty()
        && s.len() <= 255
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "./-_:".contains(c))
        && !s.rsplit('/').next().unwrap_or("").contains(':');
    if !ok {
        return Err("expected an image name without a tag, like ghcr.io/acme/switchboard-delegate".into());
    }
    Ok(s.to_owned())
}

/// The keys file of `secret_key_file`, read and checked now, so a bad file stops the
/// manager at startup naming the setting.
pub fn parse_secret_key_file(raw: &str) -> Result<Option<crate::sealing::SecretKeys>, String> {
    let path = raw.trim();
    if path.is_empty() {
        return Ok(None);
    }
    crate::sealing::SecretKeys::load(std::path::Path::new(path)).map(Some)
}

/// The bound of a task's log: a byte size of at least two of the largest chunks.
pub fn parse_log_bound(raw: &str) -> Result<usize, String> {
    let n = parse_byte_size(raw)?;
    let least = switchboard_domain::tasklog::MIN_MAX_BYTES as usize;
    if n < least {
        return Err(format!(
            "must be at least {least} bytes (512KiB): twice the largest chunk"
        ));
    }
    Ok(n)
}

/// An http:// or https:// base URL, kept without its trailing slash.
pub fn parse_public_url(raw: &str) -> Result<Option<String>, String> {
    let url = raw.trim().trim_end_matches('/');
    let rest = url.strip_prefix("http://").or_else(|| url.strip_prefix("https://"));
    match rest {
        Some(host) if !host.is_empty() && !url.contains(char::is_whitespace) => Ok(Some(url.to_owned())),
        _ => Err(format!("{raw:?} is not an http:// or https:// URL")),
    }
}

/// A file path, as given (relative paths are relative to the working directory). Whether
/// the file exists and holds what it should is checked where it is used, at startup.
pub fn parse_path(raw: &str) -> Result<Option<PathBuf>, String> {
    match raw.trim() {
        "" => Err("expected a file path".to_owned()),
        path => Ok(Some(PathBuf::from(path))),
    }
}

/// A dotted numeric version such as `1.4` or `24.03.82600`.
pub fn parse_min_version(raw: &str) -> Result<Option<String>, String> {
    let raw = raw.trim();
    match switchboard_domain::delegate::Version::parse(raw) {
        Some(_) => Ok(Some(raw.to_owned())),
        None => Err(format!(
            "{raw:?} is not a version like 1.4.0 (numbers separated by dots)"
        )),
    }
}

pub fn parse_listen(raw: &str) -> Result<SocketAddr, String> {
    raw.trim()
        .parse()
        .map_err(|_| "expected IP:PORT, like 127.0.0.1:8080 or [::]:8080 (host names are not resolved)".to_owned())
}

pub fn parse_connections(raw: &str) -> Result<u32, String> {
    match raw.trim().parse::<u32>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number, like 16".to_owned()),
    }
}

/// A request rate per second; 0 turns the limit off.
pub fn parse_rate(raw: &str) -> Result<u32, String> {
    raw.trim()
        .parse::<u32>()
        .map_err(|_| "expected a whole number of requests a second, like 100 (0 for no limit)".to_owned())
}

pub fn parse_max_sockets(raw: &str) -> Result<usize, String> {
    match raw.trim().parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(_) => Err("expected a whole number, like 100000".to_owned()),
    }
}

/// Validated here, at load time, so a typo in a filter is a startup error naming its
/// source rather than a panic or a silently ignored directive later.
pub fn parse_log_level(raw: &str) -> Result<String, String> {
    let s = raw.trim();
    tracing_subscriber::EnvFilter::try_new(s)
        .map(|_| s.to_owned())
        .map_err(|e| format!("not a log filter ({e}); expected something like info or info,switchboard_server=debug"))
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// One readable line per event, for a terminal.
    #[default]
    Human,
    /// One JSON object per line, for a log collector.
    Json,
}

pub fn parse_log_format(raw: &str) -> Result<LogFormat, String> {
    match raw.trim().to_ascii_lowercase().as_str() {
        "human" => Ok(LogFormat::Human),
        "json" => Ok(LogFormat::Json),
        _ => Err("expected human or json".to_owned()),
    }
}

/// The shortest admin key accepted. The key guards every operator route, so a short one
/// is refused at startup rather than discovered by someone else.
pub const ADMIN_KEY_MIN_LEN: usize = 16;

/// The admin key travels in an `Authorization` header, so it must be visible ASCII; it is
/// trimmed because keys read from files often carry a trailing newline.
pub fn parse_admin_key(raw: &str) -> Result<Option<Secret>, String> {
    let s = raw.trim();
    if s.len() < ADMIN_KEY_MIN_LEN {
        return Err(format!(
            "must be at least {ADMIN_KEY_MIN_LEN} characters; generate one with `openssl rand -hex 32`"
        ));
    }
    if !s.chars().all(|c| c.is_ascii_graphic()) {
        return Err("must be printable ASCII without spaces (it is sent in an HTTP header)".to_owned());
    }
    Ok(Some(Secret::presented(s)))
}

/// Where the manager keeps its state.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// An SQLite file, created if absent: evaluation and single-node installs.
    Sqlite(PathBuf),
    /// A PostgreSQL URL: production, shared by any number of replicas. It may carry a
    /// password, so it is only ever shown through [`redact_url`].
    Postgres(String),
}

impl Default for Database {
    fn default() -> Self {
        Database::Sqlite(PathBuf::from("./switchboard.db"))
    }
}

impl Database {
    /// `sqlite` or `postgres`, as in logs and `/api/v1/status`.
    pub fn kind(&self) -> &'static str {
        match self {
            Database::Sqlite(_) => "sqlite",
            Database::Postgres(_) => "postgres",
        }
    }
}

/// `sqlite ./switchboard.db` or `postgres postgres://user:***@host/db`: safe to log.
impl fmt::Display for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            Database::Postgres(url) => write!(f, "postgres {}", redact_url(url)),
        }
    }
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Database({self})")
    }
}

const DATABASE_FORMS: &str =
    "postgres://USER[:PASSWORD]@HOST[:PORT]/DB, postgresql://..., sqlite://PATH or sqlite:PATH";

/// Accepts `postgres://` and `postgresql://` URLs (checked for shape here, fully by the
/// driver when connecting) and `sqlite://PATH` / `sqlite:PATH` (`sqlite:///abs/path` for
/// an absolute path, as sqlx writes it).
pub fn parse_database_url(raw: &str) -> Result<Database, String> {
    let s = raw.trim();
    if s.chars().any(char::is_whitespace) {
        return Err(format!("a database URL has no spaces; expected {DATABASE_FORMS}"));
    }
    if let Some(rest) = s
        .strip_prefix("postgres://")
        .or_else(|| s.strip_prefix("postgresql://"))
    {
        check_postgres_authority(rest)?;
        return Ok(Database::Postgres(s.to_owned()));
    }
    if let Some(path) = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")) {
        return match path {
            "" => Err("the sqlite URL has no file path; write sqlite://PATH or sqlite:PATH".to_owned()),
            ":memory:" => {
                Err("an in-memory SQLite database would lose everything at exit; give a file path".to_owned())
            }
            p if p.contains('?') => Err("query parameters are not supported in sqlite URLs".to_owned()),
            p => Ok(Database::Sqlite(PathBuf::from(p))),
        };
    }
    match s.split_once(':') {
        Some((scheme, _))
            if !scheme.is_empty() && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            Err(format!("unsupported scheme {scheme:?}; expected {DATABASE_FORMS}"))
        }
        _ => Err(format!("not a database URL; expected {DATABASE_FORMS}")),
    }
}

/// Checks the `[user[:password]@]host[:port]` part: an empty host is allowed (the driver
/// defaults it), a port must be a number.
fn check_postgres_authority(rest: &str) -> Result<(), String> {
    let authority = rest.split(['/', '?']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = if let Some(v6) = host_port.strip_prefix('[') {
        let (_, after) = v6.split_once(']').ok_or("the IPv6 host is missing its closing ]")?;
        after.strip_prefix(':')
    } else {
        host_port.split_once(':').map(|(_, p)| p)
    };
    match port {
        Some(p) if p.parse::<u16>().is_err() => Err(format!("the port {p:?} is not a number from 0 to 65535")),
        _ => Ok(()),
    }
}

/// Replaces the password of a URL with `***`, so connection strings can be logged and
/// echoed in error messages.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _password)) => format!("{scheme}://{user}:***@{host}{tail}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positive_durations_refuse_zero() {
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn byte_sizes_accept_bytes_and_binary_units() {
        assert_eq!(parse_byte_size("2097152"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_byte_size("2MiB"), Ok(2 * 1024 * 1024));
        assert_eq!(parse_byte_size("512 KiB"), Ok(512 * 1024));
        assert!(parse_byte_size("0").is_err());
        assert!(parse_byte_size("2MB").is_err());
        assert!(parse_byte_size("lots").is_err());
    }

    #[test]
    fn database_urls_pick_the_backend_from_the_scheme() {
        assert_eq!(
            parse_database_url("sqlite://data/sb.db"),
            Ok(Database::Sqlite("data/sb.db".into()))
        );
        assert_eq!(parse_database_url("sqlite:sb.db"), Ok(Database::Sqlite("sb.db".into())));
        assert_eq!(
            parse_database_url("sqlite:///var/lib/sb.db"),
            Ok(Database::Sqlite("/var/lib/sb.db".into()))
        );
        for url in [
            "postgres://u:p@db:5432/sb",
            "postgresql://db/sb",
            "postgres:///sb",
            "postgres://[::1]:5432/sb",
        ] {
            assert_eq!(parse_database_url(url), Ok(Database::Postgres(url.into())), "{url}");
        }
    }

    #[test]
    fn malformed_database_urls_say_what_is_wrong() {
        assert!(
            parse_database_url("mysql://db/sb")
                .expect_err("scheme")
                .contains("unsupported scheme \"mysql\"")
        );
        assert!(
            parse_database_url("just words")
                .expect_err("spaces")
                .contains("no spaces")
        );
        assert!(
            parse_database_url("switchboard.db")
                .expect_err("no scheme")
                .contains("not a database URL")
        );
        assert!(
            parse_database_url("postgres://db:port/sb")
                .expect_err("port")
                .contains("\"port\"")
        );
        assert!(
            parse_database_url("sqlite://")
                .expect_err("no path")
                .contains("no file path")
        );
        assert!(parse_database_url("sqlite::memory:").is_err());
    }

    #[test]
    fn passwords_never_appear_in_displayed_urls() {
        let db = parse_database_url("postgres://sb:hunter2@db:5432/sb?sslmode=disable").expect("valid");
        assert_eq!(db.to_string(), "postgres postgres://sb:***@db:5432/sb?sslmode=disable");
        assert!(!format!("{db:?}").contains("hunter2"));
        assert_eq!(redact_url("postgres://sb@db/sb"), "postgres://sb@db/sb");
    }

    #[test]
    fn admin_keys_must_be_long_and_printable() {
        assert!(parse_admin_key("short").is_err());
        assert!(parse_admin_key("sixteen chars ok").is_err());
        let key = parse_admin_key("0123456789abcdef\n").expect("valid").expect("some");
        assert_eq!(key.expose(), "0123456789abcdef");
    }

    #[test]
    fn log_settings_are_checked() {
        assert_eq!(parse_log_format("JSON"), Ok(LogFormat::Json));
        assert!(parse_log_format("xml").is_err());
        assert!(parse_log_level("info,switchboard_server=debug").is_ok());
        assert!(parse_log_level("info,=[").is_err());
    }
}
