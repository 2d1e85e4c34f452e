//! Helpers: [`spawn_app`] starts the app in-process; [`Binary`] runs the real executable.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use switchboard_domain::Secret;
use switchboard_server::config::Database;
use switchboard_server::{AppState, Settings, open_store, run};
use tempfile::TempDir;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin key [`spawn_app`] configures.
pub const ADMIN_KEY: &str = "test-admin-key-0123456789abcdef";

/// How long anything in these tests may take before it counts as hung.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// The app, served by [`run`] on 127.0.0.1:0, with its own SQLite file.
pub struct TestApp {
    pub address: SocketAddr,
    /// `https` when the settings name a certificate, else `http`.
    pub scheme: &'static str,
    /// Trusts only the public roots: a TLS test replaces it with one trusting its CA.
    pub client: reqwest::Client,
    /// The app's state, to read its counters.
    pub state: AppState,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
    /// The app's SQLite file (its directory lives as long as the app).
    pub database: std::path::PathBuf,
    _dir: TempDir,
}

/// Starts the app with the defaults (and the admin key [`ADMIN_KEY`]).
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Starts the app with settings adjusted by `configure` (the defaults otherwise, with the
/// SQLite file in a fresh temporary directory).
pub async fn spawn_app_with(configure: impl FnOnce(&mut Settings)) -> TestApp {
    let dir = tempfile::tempdir().expect("temporary directory");
    spawn_app_in(dir, "127.0.0.1:0".parse().expect("address"), configure).await
}

/// Starts the app on `address` with its SQLite file in `dir` (a restart passes the
/// directory and address of the app it replaces).
pub async fn spawn_app_in(dir: TempDir, address: SocketAddr, configure: impl FnOnce(&mut Settings)) -> TestApp {
    let mut settings = Settings {
        database_url: Database::Sqlite(dir.path().join("switchboard.db")),
        admin_key: Some(Secret::presented(ADMIN_KEY)),
        ..Settings::default()
    };
    configure(&mut settings);
    let scheme = if settings.tls_cert.is_some() { "https" } else { "http" };
    let store = open_store(&settings).await.expect("the SQLite store opens");
    let listener = tokio::net::TcpListener::bind(address).await.expect("bind the address");
    let address = listener.local_addr().expect("bound address");
    let (shutdown, stop) = oneshot::channel::<()>();
    let state = AppState::new(store, settings);
    let server = tokio::spawn(run(listener, state.clone(), async {
        let _ = stop.await;
    }));
    TestApp {
        address,
        scheme,
        client: reqwest::Client::new(),
        state,
        shutdown: Some(shutdown),
        server,
        database: dir.path().join("switchboard.db"),
        _dir: dir,
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.address)
    }

    pub async fn get(&self, path: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self.client.get(self.url(path));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("request sent")
    }

    pub async fn post(&self, path: &str, key: Option<&str>, body: &serde_json::Value) -> reqwest::Response {
        let mut request = self.client.post(self.url(path)).json(body);
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        request.send().await.expect("request sent")
    }

    /// Completes the shutdown future and waits for `run` to return.
    pub async fn stop(self) -> std::io::Result<()> {
        self.stop_keeping_data().await.0
    }

    /// Stops the app and hands back its directory, for a restart on the same data.
    pub async fn stop_keeping_data(mut self) -> (std::io::Result<()>, TempDir) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        let result = tokio::time::timeout(PATIENCE, &mut self.server)
            .await
            .expect("run returns")
            .expect("run did not panic");
        (result, self._dir)
    }
}

/// Checks that `response` is a problem of type `slug` with `status`; returns its body.
pub async fn problem(response: reqwest::Response, status: u16, slug: &str) -> serde_json::Value {
    assert_eq!(response.status().as_u16(), status);
    let content_type = response.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(content_type, "application/problem+json");
    let body: serde_json::Value = response.json().await.expect("JSON body");
    assert_eq!(
        body["type"],
        format!("https://switchboard.dev/problems/{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status, "{body}");
    assert!(body["title"].is_string() && body["detail"].is_string(), "{body}");
    body
}

/// The real `switchboard serve`, running in a directory, with a clean environment.
pub struct Binary {
    child: Child,
    /// The address from the "listening on" line.
    pub address: String,
    /// The whole "listening on" line.
    pub banner: String,
    /// What it printed on stdout before that line (a generated admin key).
    pub preamble: String,
}

fn command(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("serve")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied());
    command
}

impl Binary {
    /// Starts it and waits for its "listening on" line.
    pub fn start(dir: &Path, args: &[&str]) -> Binary {
        Self::start_with_env(dir, args, &[])
    }

    /// Like [`Binary::start`], with environment variables.
    pub fn start_with_env(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Binary {
        let mut child = command(dir, args, env)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the binary starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut preamble = String::new();
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line.starts_with("switchboard listening on ") => {
                        let _ = tx.send((line, preamble));
                        break;
                    }
                    Ok(_) => preamble.push_str(&line),
                }
            }
            // Keep draining, so a later write to stdout never meets a closed pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
        });
        let (banner, preamble) = match rx.recv_timeout(PATIENCE) {
            Ok((line, preamble)) => (line.trim_end().to_owned(), preamble),
            Err(_) => {
                let _ = child.kill();
                panic!("no \"listening on\" line within {PATIENCE:?}");
            }
        };
        let address = banner
            .strip_prefix("switchboard listening on ")
            .and_then(|rest| rest.strip_prefix("http://").or_else(|| rest.strip_prefix("https://")))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {banner:?}"))
            .to_owned();
        Binary {
            child,
            address,
            banner,
            preamble,
        }
    }

    /// Kills it with SIGKILL (a crash: nothing is cleaned up) and waits for it to be gone.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL is sent");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits (boundedly) for the exit status.
    pub fn terminate(self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let killed = Command::new("kill").args(["-TERM", &pid]).status().expect("kill runs");
        assert!(killed.success(), "kill -TERM {pid} failed");
        let (status, _, _) = wait(self.child);
        status
    }
}

/// Runs `switchboard serve` expecting it to stop by itself; returns its status and stderr.
pub fn run_to_exit(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let child = command(dir, args, env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let (status, _stdout, stderr) = wait(child);
    (status, stderr)
}

/// Waits for `child` to exit (reading whatever pipes it still has), killing it if it
/// takes longer than [`PATIENCE`].
fn wait(child: Child) -> (ExitStatus, String, String) {
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => {
            let output = output.expect("wait succeeds");
            let text = |bytes: Vec<u8>| String::from_utf8_lossy(&bytes).into_owned();
            (output.status, text(output.stdout), text(output.stderr))
        }
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            panic!("process {pid} did not exit within {PATIENCE:?}");
        }
    }
}

/// A blocking `GET` over a plain socket: the binary tests need no async runtime.
/// Returns the status code and the body.
pub fn http_get(address: &str, path: &str) -> (u16, String) {
    http(address, "GET", path, None, None)
}

/// A blocking HTTP/1.1 request over a plain socket, with an optional bearer key and JSON
/// body. Returns the status code and the body.
pub fn http(address: &str, method: &str, path: &str, key: Option<&str>, json: Option<&str>) -> (u16, String) {
    let mut stream = TcpStream::connect(address).expect("connect");
    stream.set_read_timeout(Some(PATIENCE)).expect("read timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n");
    if let Some(key) = key {
        head.push_str(&format!("Authorization: Bearer {key}\r\n"));
    }
    let body = json.unwrap_or_default();
    if json.is_some() {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ));
    }
    write!(stream, "{head}\r\n{body}").expect("send request");
    let mut response = String::new();
    stream.read_to_string(&mut response).expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// The store a test runs against. The end-to-end cases of the assignment issue run on
/// both, through [`both_backends!`](crate::both_backends).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Starts the app on `backend`, or `None` when PostgreSQL is not available and skipping
/// is allowed: without `DATABASE_URL` (or with it unreachable) the PostgreSQL cases are
/// skipped with one notice on the terminal, unless `CI=true`, where they fail.
pub async fn spawn_on(backend: Backend, configure: impl FnOnce(&mut Settings)) -> Option<TestApp> {
    match backend {
        Backend::Sqlite => Some(spawn_app_with(configure).await),
        Backend::Postgres => {
            let url = postgres_schema().await?;
            Some(
                spawn_app_with(|settings| {
                    settings.database_url = Database::Postgres(url);
                    settings.db_max_connections = 8;
                    configure(settings);
                })
                .await,
            )
        }
    }
}

/// Two managers, each served by [`run`] on its own port-0 listener, sharing one fresh
/// PostgreSQL schema (replicas), once both listen for each other; `None` when PostgreSQL
/// is not available and skipping is allowed (as [`spawn_on`]).
pub async fn spawn_replicas(configure: impl Fn(&mut Settings)) -> Option<(TestApp, TestApp)> {
    let url = postgres_schema().await?;
    let replica = || {
        spawn_app_with(|settings| {
            settings.database_url = Database::Postgres(url.clone());
            settings.db_max_connections = 8;
            configure(settings);
        })
    };
    let a = replica().await;
    let b = replica().await;
    for app in [&a, &b] {
        tokio::time::timeout(PATIENCE, app.state.cluster().listening())
            .await
            .expect("each replica listens for the other");
    }
    Some((a, b))
}

/// A fresh schema in the `DATABASE_URL` database, as a URL whose connections use it;
/// `None` (with a notice) without PostgreSQL, a failure under `CI=true`.
pub async fn postgres_schema() -> Option<String> {
    switchboard_testkit::postgres_schema("sbe2e", "the PostgreSQL end-to-end cases")
        .await
        .map(|schema| schema.url)
}

/// Runs an async case `fn(Backend)` once per backend, as `<case>::sqlite` and
/// `<case>::postgres`.
#[macro_export]
macro_rules! both_backends {
    ($($case:ident),* $(,)?) => {
        $(
            mod $case {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$case($crate::server::support::Backend::Sqlite).await;
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$case($crate::server::support::Backend::Postgres).await;
                }
            }
        )*
    };
}

/// A store that outlives a manager process, for tests that kill one and start another on
/// it: a file in `dir` (SQLite) or a fresh schema (PostgreSQL; `None` when PostgreSQL is
/// not there and may be skipped).
pub struct DurableStore {
    backend: Backend,
    /// The manager's `SWITCHBOARD_DATABASE_URL`.
    pub url: String,
    file: std::path::PathBuf,
}

impl DurableStore {
    pub async fn new(backend: Backend, dir: &Path) -> Option<DurableStore> {
        let file = dir.join("switchboard.db");
        let url = match backend {
            Backend::Sqlite => format!("sqlite://{}", file.display()),
            Backend::Postgres => postgres_schema().await?,
        };
        Some(DurableStore { backend, url, file })
    }

    /// A manager in this process on the store (the one that comes after a killed one).
    pub async fn spawn_app(&self) -> TestApp {
        self.spawn_app_with(|_| {}).await
    }

    /// Like [`DurableStore::spawn_app`], with settings adjusted by `configure`.
    pub async fn spawn_app_with(&self, configure: impl FnOnce(&mut Settings)) -> TestApp {
        spawn_app_in(tempfile::tempdir().unwrap(), "127.0.0.1:0".parse().unwrap(), |s| {
            s.database_url = match self.backend {
                Backend::Sqlite => Database::Sqlite(self.file.clone()),
                Backend::Postgres => Database::Postgres(self.url.clone()),
            };
            s.db_max_connections = 4;
            configure(s);
        })
        .await
    }

    /// Whether `needle` appears anywhere in the stored data, as the database keeps it:
    /// the SQLite file and its write-ahead log byte by byte, or every row of every table
    /// of the PostgreSQL schema as text.
    pub async fn holds(&self, needle: &str) -> bool {
        match self.backend {
            Backend::Sqlite => {
                let mut wal = self.file.clone().into_os_string();
                wal.push("-wal");
                [self.file.clone(), std::path::PathBuf::from(wal)].iter().any(|path| {
                    std::fs::read(path)
                        .map(|bytes| bytes.windows(needle.len()).any(|w| w == needle.as_bytes()))
                        .unwrap_or(false)
                })
            }
            Backend::Postgres => {
                let pool = sqlx::PgPool::connect(&self.url).await.unwrap();
                let tables: Vec<String> = sqlx::query_scalar(
                    "SELECT table_name::text FROM information_schema.tables
                     WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
                )
                .fetch_all(&pool)
                .await
                .unwrap();
                assert!(tables.iter().any(|t| t == "tasks"), "{tables:?}");
                let pattern = format!("%{needle}%");
                for table in tables {
                    let n: i64 =
                        sqlx::query_scalar(&format!("SELECT count(*) FROM \"{table}\" x WHERE x::text LIKE $1"))
                            .bind(&pattern)
                            .fetch_one(&pool)
                            .await
                            .unwrap();
                    if n > 0 {
                        pool.close().await;
                        return true;
                    }
                }
                pool.close().await;
                false
            }
        }
    }
}

/// The load balancer in front of replicas (see `switchboard_testkit`).
pub use switchboard_testkit::Balancer;

/// A delegate registered over HTTP with a new token of `name` in account `acme`, offering
/// `echo`.
pub async fn registered_delegate(app: &TestApp, name: &str) -> switchboard_protocol::delegate::Registered {
    let token: serde_json::Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &serde_json::json!({"name": name, "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let request: switchboard_protocol::delegate::RegisterRequest = serde_json::from_value(
        serde_json::json!({"name": name, "hostname": name, "version": "1.0.0", "task_types": ["echo"]}),
    )
    .unwrap();
    switchboard_client::delegate::register(&app.client, &app.url(""), token["token"].as_str().unwrap(), &request)
        .await
        .unwrap()
}
