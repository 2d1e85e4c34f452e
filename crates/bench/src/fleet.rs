//! The simulated delegates: real registrations over HTTP and real WebSockets through the
//! client library, spread over several `127.0.0.x` source addresses so that a large fleet
//! does not run out of ephemeral ports on one.
//!
//! Delegate `i` sits at scope level `i % 3` (the account, an org of it, a project of that
//! org) with tag `t<(i / 3) % 16>`, in the group named after both, so the fleet covers
//! every scope and tag about evenly. Each one acquires whatever it is offered and reports
//! it succeeded at once; the time it takes is the manager's.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::ProgressBar;
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_client::{Client, Tls};
use switchboard_domain::{Attempt, Ident, ImageFlavour, TaskId, TaskType};
use switchboard_protocol::delegate::{LogAppendBody, Outcome, RegisterRequest, TaskResult};
use switchboard_protocol::socket::ServerMessage;
use switchboard_protocol::tokens::CreateToken;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::BenchError;
use crate::load::{Recorder, Stamp};

/// Distinct tags across the fleet.
pub const TAGS: usize = 16;
/// Scope levels: account, org, project.
pub const LEVELS: usize = 3;
const LEVEL_NAMES: [&str; LEVELS] = ["account", "org", "project"];

/// Where each delegate sits, and so what tasks can go to it.
#[derive(Debug, Clone)]
pub struct Layout {
    pub account: Ident,
    org: Ident,
    project: Ident,
    pub task_type: TaskType,
    /// How many delegates the tasks are spread over.
    pub delegates: usize,
    tags: Vec<String>,
    /// With the queue policy on (issue 18): how many concurrency keys the tasks spread
    /// over (each task carries one, and a retry policy).
    pub policies: Option<u64>,
}

/// The scope and tag of one delegate.
#[derive(Debug, Clone, Copy)]
pub struct Slot<'a> {
    pub level: usize,
    pub org: Option<&'a Ident>,
    pub project: Option<&'a Ident>,
    pub tag: &'a str,
}

impl Layout {
    pub fn new(delegates: usize) -> Result<Layout, BenchError> {
        let ident = |s: &str| Ident::parse(s).map_err(|e| BenchError::Setup(format!("{s}: {e}")));
        Ok(Layout {
            account: ident("bench")?,
            org: ident("o1")?,
            project: ident("p1")?,
            task_type: TaskType(ident("bench")?),
            delegates,
            tags: (0..TAGS).map(|t| format!("t{t:02}")).collect(),
            policies: None,
        })
    }

    /// The scope of the org level, for its policy.
    pub fn org_scope(&self) -> (&Ident, &Ident) {
        (&self.account, &self.org)
    }

    pub fn slot(&self, i: usize) -> Slot<'_> {
        let level = i % LEVELS;
        Slot {
            level,
            org: (level >= 1).then_some(&self.org),
            project: (level >= 2).then_some(&self.project),
            tag: &self.tags[(i / LEVELS) % TAGS],
        }
    }
}

/// Counters every delegate updates.
#[derive(Debug, Default)]
struct Shared {
    /// Sockets open (a hello received and no disconnect since).
    connected: AtomicUsize,
    disconnects: AtomicU64,
    /// Offers that could not be acquired (another attempt took over, or an error).
    acquire_errors: AtomicU64,
    /// Lines of output each task appends to its log, in one chunk, before its result
    /// (0: none).
    log_lines: AtomicUsize,
}

/// Which delegates of a fleet spread over several processes this one runs: those whose
/// number `i` has `i % of == index`. The whole fleet is `Part { index: 0, of: 1 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub index: usize,
    pub of: usize,
}

impl Part {
    pub const WHOLE: Part = Part { index: 0, of: 1 };

    /// The delegates of this part among the first `size` of the fleet.
    pub fn numbers(self, from: usize, to: usize) -> impl Iterator<Item = usize> {
        let of = self.of.max(1);
        let first = from + (self.index + of - from % of) % of;
        (first..to).step_by(of)
    }

    /// How many of the first `size` delegates are this part's.
    pub fn share(self, size: usize) -> usize {
        self.numbers(0, size).count()
    }
}

/// A fleet of simulated delegates registered with one manager, or spread over replicas:
/// delegate `i` registers with (and so opens its socket to) `bases[i % bases.len()]`,
/// and connects from source address `i % sources`.
#[derive(Debug)]
pub struct Fleet {
    bases: Vec<String>,
    part: Part,
    token: switchboard_domain::Secret,
    layout: Layout,
    capacity: u32,
    /// One HTTP client per source address, bound to it.
    sources: Vec<(IpAddr, reqwest::Client)>,
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    /// Cancelled to close every socket.
    stop: CancellationToken,
    /// The delegates' tasks, waited for at the stop.
    delegates: TaskTracker,
    /// The fleet's size so far (delegates of every part, this one's started).
    size: usize,
}

/// Registrations in flight at once while a fleet grows.
const REGISTERING: usize = 64;

impl Fleet {
    /// Creates the fleet's delegate token (at the account, so delegates can narrow to the
    /// org and the project) and the HTTP clients of `sources` source addresses
    /// (127.0.0.1 to 127.0.0.N).
    pub async fn new(
        operator: &Client,
        base: &str,
        layout: Layout,
        capacity: u32,
        sources: usize,
        recorder: Arc<Recorder>,
    ) -> Result<Fleet, BenchError> {
        let token = fleet_token(operator, &layout).await?;
        Fleet::joined(
            token,
            vec![base.to_owned()],
            Part::WHOLE,
            layout,
            capacity,
            sources,
            recorder,
        )
    }

    /// One part of a fleet whose delegate token is `token`, spread over `bases`.
    pub fn joined(
        token: switchboard_domain::Secret,
        bases: Vec<String>,
        part: Part,
        layout: Layout,
        capacity: u32,
        sources: usize,
        recorder: Arc<Recorder>,
    ) -> Result<Fleet, BenchError> {
        if bases.is_empty() {
            return Err(BenchError::Setup("a fleet needs at least one manager".into()));
        }
        let sources = (1..=sources.clamp(1, 250))
            .map(|n| {
                let ip = IpAddr::V4(Ipv4Addr::new(127, 0, 0, u8::try_from(n).unwrap_or(1)));
                let http = Tls::default()
                    .http_client()
                    .local_address(ip)
                    .timeout(Duration::from_secs(60))
                    .build()
                    .map_err(|e| BenchError::Setup(format!("cannot build an HTTP client: {e}")))?;
                Ok((ip, http))
            })
            .collect::<Result<Vec<_>, BenchError>>()?;
        Ok(Fleet {
            bases,
            part,
            token,
            layout,
            capacity,
            sources,
            recorder,
            shared: Arc::default(),
            stop: CancellationToken::new(),
            delegates: TaskTracker::new(),
            size: 0,
        })
    }

    pub fn connected(&self) -> usize {
        self.shared.connected.load(Ordering::Relaxed)
    }

    pub fn disconnects(&self) -> u64 {
        self.shared.disconnects.load(Ordering::Relaxed)
    }

    /// The fleet's counters, to read while it grows.
    pub fn gauge(&self) -> Gauge {
        Gauge(Arc::clone(&self.shared))
    }

    /// From now on, each task appends `lines` lines to its log before its result.
    pub fn log_each_task(&self, lines: usize) {
        self.shared.log_lines.store(lines, Ordering::Relaxed);
    }

    pub fn acquire_errors(&self) -> u64 {
        self.shared.acquire_errors.load(Ordering::Relaxed)
    }

    /// Registers delegates (this part's) until the fleet has `size`, and starts their
    /// sessions.
    pub async fn grow(&mut self, size: usize, bar: &ProgressBar) -> Result<(), BenchError> {
        let from = self.size;
        bar.set_length(self.part.share(size).saturating_sub(self.part.share(from)) as u64);
        bar.set_position(0);
        let this = &*self;
        let mut registered = futures::stream::iter(this.part.numbers(from, size))
            .map(|i| async move { (i, this.register(i).await) })
            .buffer_unordered(REGISTERING);
        while let Some((i, outcome)) = registered.next().await {
            let registered = outcome?;
            let (ip, http) = &this.sources[i % this.sources.len()];
            let tasks = TaskClient::new(http.clone(), this.base(i), &registered.session_token);
            let session = Session::start_bound(registered, Backoff::default(), Tls::default(), Some(*ip));
            this.delegates.spawn(delegate(
                session,
                tasks,
                Arc::clone(&this.recorder),
                Arc::clone(&this.shared),
                this.stop.clone(),
            ));
            bar.inc(1);
        }
        drop(registered);
        self.size = self.size.max(size);
        Ok(())
    }

    /// The manager delegate `i` talks to.
    fn base(&self, i: usize) -> &str {
        &self.bases[i % self.bases.len()]
    }

    /// Registers delegate `i`, retrying while the manager is busy (429, 5xx, transport).
    async fn register(&self, i: usize) -> Result<switchboard_protocol::delegate::Registered, BenchError> {
        let slot = self.layout.slot(i);
        let name = format!("sim-{}-{}", LEVEL_NAMES[slot.level], slot.tag);
        let request = RegisterRequest {
            name: Ident::parse(&name).map_err(|e| BenchError::Setup(e.to_string()))?,
            hostname: format!("sim-{i}"),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            flavour: ImageFlavour::Minimal,
            tags: vec![slot.tag.to_owned()],
            task_types: vec![self.layout.task_type.clone()],
            capacity: Some(self.capacity),
            org: slot.org.cloned(),
            project: slot.project.cloned(),
            max_tasks: None,
        };
        let (_, http) = &self.sources[i % self.sources.len()];
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        };
        let mut attempt = 0;
        loop {
            match register(http, self.base(i), self.token.expose(), &request).await {
                Ok(registered) => return Ok(registered),
                Err(e) if attempt < 20 && e.is_transient() => {
                    tokio::time::sleep(backoff.delay(attempt)).await;
                    attempt += 1;
                }
                Err(e) => return Err(BenchError::Manager(format!("cannot register delegate {i}: {e}"))),
            }
        }
    }

    /// Waits until `count` sockets are open, or `patience` has passed; returns how many are.
    pub async fn wait_connected(&self, count: usize, patience: Duration, bar: &ProgressBar) -> usize {
        wait_connected(|| self.connected(), count, patience, bar).await
    }

    /// Closes every socket and waits (at most 30 s) for the delegates to end.
    pub async fn stop(self) {
        self.stop.cancel();
        self.delegates.close();
        let _ = tokio::time::timeout(Duration::from_secs(30), self.delegates.wait()).await;
    }
}

/// Waits until `connected()` reaches `count`, or `patience` has passed; returns it.
pub async fn wait_connected(
    connected: impl Fn() -> usize,
    count: usize,
    patience: Duration,
    bar: &ProgressBar,
) -> usize {
    let deadline = Instant::now() + patience;
    bar.set_length(count as u64);
    loop {
        let now = connected();
        bar.set_position(now.min(count) as u64);
        if now >= count || Instant::now() >= deadline {
            return now;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Creates a fleet's delegate token, at the account so that delegates can narrow to the
/// org and the project.
pub async fn fleet_token(operator: &Client, layout: &Layout) -> Result<switchboard_domain::Secret, BenchError> {
    let name = Ident::parse(&format!("bench-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]))
        .map_err(|e| BenchError::Setup(e.to_string()))?;
    Ok(operator
        .create_token(&CreateToken {
            name,
            account: layout.account.clone(),
            org: None,
            project: None,
        })
        .await
        .map_err(|e| BenchError::Manager(format!("cannot create the fleet's delegate token: {e}")))?
        .token)
}

/// A fleet's counters, readable while it grows.
#[derive(Debug, Clone)]
pub struct Gauge(Arc<Shared>);

impl Gauge {
    pub fn connected(&self) -> usize {
        self.0.connected.load(Ordering::Relaxed)
    }

    pub fn disconnects(&self) -> u64 {
        self.0.disconnects.load(Ordering::Relaxed)
    }
}

/// One simulated delegate: counts its socket's ups and downs, and takes every offer.
async fn delegate(
    mut session: Session,
    tasks: TaskClient,
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    let mut connected = false;
    loop {
        let event = tokio::select! {
            event = session.events.recv() => event,
            () = stop.cancelled() => None,
        };
        match event {
            Some(Event::Connected) => {
                if !connected {
                    connected = true;
                    shared.connected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Some(Event::Disconnected { .. }) => {
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
                if connected {
                    connected = false;
                    shared.connected.fetch_sub(1, Ordering::Relaxed);
                }
            }
            Some(Event::Message(ServerMessage::TaskAvailable { task_id, attempt })) => {
                let notified = Instant::now();
                let (tasks, recorder, shared) = (tasks.clone(), Arc::clone(&recorder), Arc::clone(&shared));
                tokio::spawn(async move { take(&tasks, task_id, attempt, notified, &recorder, &shared).await });
            }
            Some(Event::Message(_)) => {}
            Some(Event::Ended { .. }) | None => break,
        }
    }
    session.stop();
    if connected {
        shared.connected.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Acquires an offered attempt and reports it succeeded.
async fn take(
    tasks: &TaskClient,
    task: TaskId,
    attempt: Attempt,
    notified: Instant,
    recorder: &Recorder,
    shared: &Shared,
) {
    let acquired = match tasks.acquire(task, attempt).await {
        Ok(acquired) => acquired,
        Err(_) => {
            shared.acquire_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let acquired_at = Instant::now();
    let stamp: Option<Stamp> = serde_json::from_value(acquired.payload).ok();
    let lines = shared.log_lines.load(Ordering::Relaxed);
    if lines > 0 {
        let text: String = (0..lines)
            .map(|i| format!("bench step {i:04} of {lines}: compiled module {i}, 0 warnings\n"))
            .collect();
        let chunk = LogAppendBody {
            attempt,
            offset: 0,
            text,
        };
        if tasks.append_log(task, &chunk).await.is_err() {
            if let Some(stamp) = stamp {
                recorder.result_failed(stamp.run);
            }
            return;
        }
    }
    let report = TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        result: None,
        error: None,
        error_code: None,
        retryable: None,
    };
    let reported = tasks.result(task, &report).await;
    let done = Instant::now();
    match (stamp, reported) {
        (Some(stamp), Ok(_)) => recorder.completed(&stamp, notified, acquired_at, done),
        (Some(stamp), Err(_)) => recorder.result_failed(stamp.run),
        (None, _) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_parts_of_a_fleet_hold_every_delegate_once() {
        let parts: Vec<Part> = (0..3).map(|index| Part { index, of: 3 }).collect();
        for (from, to) in [(0, 10), (4, 11), (7, 7), (0, 1)] {
            let mut all: Vec<usize> = parts.iter().flat_map(|p| p.numbers(from, to)).collect();
            all.sort_unstable();
            assert_eq!(all, (from..to).collect::<Vec<_>>(), "{from}..{to}");
        }
        assert_eq!(Part { index: 1, of: 3 }.numbers(2, 9).collect::<Vec<_>>(), [4, 7]);
        assert_eq!(Part { index: 2, of: 3 }.share(10), 3);
        assert_eq!(Part::WHOLE.share(10), 10);
    }
}
