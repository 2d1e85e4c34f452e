//! What several crates' integration tests need and would otherwise each write: a fresh
//! PostgreSQL schema per test (skipped with a notice without `DATABASE_URL`, a failure
//! under `CI=true`), a TCP relay in front of PostgreSQL that can be cut and restored (a
//! database restart as clients see it, without touching the shared server), and a
//! round-robin TCP load balancer in front of manager replicas.

use std::io::Write as _;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use sqlx::Connection as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// A schema made for one test in the `DATABASE_URL` database.
#[derive(Debug, Clone)]
pub struct PgSchema {
    /// `DATABASE_URL` with the schema as its connections' `search_path`.
    pub url: String,
    pub name: String,
}

/// A fresh schema named `<prefix>_<unix seconds>_<pid>_<n>`, after dropping this prefix's
/// schemas over an hour old (left by killed runs). `None` when PostgreSQL is not there to
/// use, with one notice naming `what` was skipped; under `CI=true` that is a failure.
pub async fn postgres_schema(prefix: &str, what: &str) -> Option<PgSchema> {
    static NOTICE: Once = Once::new();
    static MADE: AtomicU64 = AtomicU64::new(0);
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let skip = |why: String| {
        assert!(!in_ci, "CI=true requires {what}, but {why}");
        // Straight to the terminal: `eprintln!` would be captured by the test harness
        // and never shown for a test that passes.
        NOTICE.call_once(|| {
            let _ = writeln!(
                std::io::stderr(),
                "\n*** {what} SKIPPED: {why}; set DATABASE_URL=postgres://postgres@127.0.0.1:5432/test to run it. ***\n"
            );
        });
        None
    };
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return skip("DATABASE_URL is not set".into());
    };
    let mut admin = match sqlx::PgConnection::connect(&url).await {
        Ok(c) => c,
        Err(e) => return skip(format!("PostgreSQL at DATABASE_URL is unreachable ({e})")),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let pattern = format!("{prefix}\\_%");
    let stale: Vec<String> = sqlx::query_scalar("SELECT nspname::text FROM pg_namespace WHERE nspname LIKE $1")
        .bind(&pattern)
        .fetch_all(&mut admin)
        .await
        .expect("list schemas");
    for name in stale {
        let created = name[prefix.len()..]
            .split('_')
            .nth(1)
            .and_then(|s| s.parse::<u64>().ok());
        if created.is_some_and(|c| now.saturating_sub(c) > 3600) {
            let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                .execute(&mut admin)
                .await;
        }
    }
    let n = MADE.fetch_add(1, Ordering::Relaxed);
    let name = format!("{prefix}_{now}_{}_{n}", std::process::id());
    sqlx::query(&format!("CREATE SCHEMA {name}"))
        .execute(&mut admin)
        .await
        .expect("create schema");
    let _ = admin.close().await;
    let separator = if url.contains('?') { '&' } else { '?' };
    Some(PgSchema {
        url: format!("{url}{separator}options=-c%20search_path%3D{name}"),
        name,
    })
}

/// Drops a schema made by [`postgres_schema`] (`admin_url`: a URL without the schema).
pub async fn drop_schema(admin_url: &str, name: &str) {
    if let Ok(mut admin) = sqlx::PgConnection::connect(admin_url).await {
        let _ = sqlx::query(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
            .execute(&mut admin)
            .await;
        let _ = admin.close().await;
    }
}

/// Forwards connections to `upstream` while open; when cut, drops every connection it
/// carries and closes new ones at once (what a database restart looks like to a client).
#[derive(Debug)]
pub struct Relay {
    pub address: String,
    open: watch::Sender<bool>,
}

impl Relay {
    pub async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (open, watching) = watch::channel(true);
        let upstream = Arc::new(upstream);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watching.clone();
                if !*cut.borrow() {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Relay { address, open }
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// Spreads connections over its upstreams in turn, skipping any that refuses the
/// connection (a replica that is down), as a TCP load balancer with connect-failure retry
/// does: the one URL delegates and pipeline engines know of a replicated manager.
#[derive(Debug)]
pub struct Balancer {
    pub address: String,
    upstreams: Arc<Mutex<Vec<String>>>,
    /// Bumped to drop every connection carried so far.
    generation: watch::Sender<u64>,
}

impl Balancer {
    /// A balancer with no upstreams yet (see [`Balancer::set_upstreams`]).
    pub async fn start() -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let (generation, watching) = watch::channel(0u64);
        let upstreams = Arc::new(Mutex::new(Vec::<String>::new()));
        let shared = upstreams.clone();
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let candidates = shared.lock().expect("not poisoned").clone();
                let first = next.fetch_add(1, Ordering::Relaxed);
                let mut reset = watching.clone();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    for i in 0..candidates.len() {
                        let upstream = &candidates[(first + i) % candidates.len()];
                        let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                            continue;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = reset.changed() => {}
                        }
                        return;
                    }
                    // Every upstream refused: the client sees its connection closed.
                });
            }
        });
        Balancer {
            address,
            upstreams,
            generation,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Where new connections go from now on (`host:port` each).
    pub fn set_upstreams<A: ToString>(&self, upstreams: impl IntoIterator<Item = A>) {
        *self.upstreams.lock().expect("not poisoned") = upstreams.into_iter().map(|a| a.to_string()).collect();
    }

    /// Drops every connection carried now (each delegate's socket among them); new ones
    /// are taken as usual.
    pub fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}
