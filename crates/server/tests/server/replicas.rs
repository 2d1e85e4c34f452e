//! Several replicas on one PostgreSQL: two managers in this process share one schema, a
//! client-library delegate connects to replica B, and everything is asked of replica A.
//! The sweeps and timers that would eventually repair a lost signal are pushed far out
//! (`assign_interval`, `acknowledge_timeout`), so these cases pass only through the
//! signals between replicas.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_domain::{Attempt, TaskId};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, Registered, TaskResult};
use switchboard_protocol::socket::ServerMessage;
use switchboard_server::Settings;

use super::support::{ADMIN_KEY, PATIENCE, TestApp, problem, spawn_replicas};

/// Long enough that neither a sweep nor a timer delivers anything during a case.
fn without_repairs(settings: &mut Settings) {
    settings.assign_interval = Duration::from_secs(600);
    settings.acknowledge_timeout = Duration::from_secs(600);
}

/// A delegate token of account `acme`, created on `app`: (id, secret).
async fn token(app: &TestApp) -> (String, String) {
    let body = json!({"name": format!("t{}", TaskId::new().to_string().replace('-', "")), "account": "acme"});
    let created: Value = app
        .post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    (
        created["id"].as_str().unwrap().to_owned(),
        created["token"].as_str().unwrap().to_owned(),
    )
}

/// A client-library delegate registered with and connected to `app`.
async fn connect(app: &TestApp, token: &str) -> (Registered, Session, TaskClient) {
    let request: RegisterRequest = serde_json::from_value(json!({
        "name": "workers", "hostname": "on-b", "version": "1.0.0", "task_types": ["echo"], "capacity": 5
    }))
    .unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    assert_eq!(next(&mut session).await, Event::Connected);
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &registered.session_token);
    (registered, session, tasks)
}

async fn next(session: &mut Session) -> Event {
    tokio::time::timeout(PATIENCE, session.events.recv())
        .await
        .expect("an event in time")
        .expect("the session goes on")
}

/// The next offer the delegate gets.
async fn offer(session: &mut Session) -> (TaskId, Attempt) {
    loop {
        if let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = next(session).await {
            return (task_id, attempt);
        }
    }
}

/// Submits an echo task to `app` until one is placed by `app` itself at submission on the
/// delegate of `registered` (a sweep woken by the delegate's connection may claim the first
/// one, on B, and deliver it without a signal: that one is run to the end and another
/// submitted). Returns the task, its attempt, and when it was submitted.
async fn submit(
    app: &TestApp,
    registered: &Registered,
    session: &mut Session,
    tasks: &TaskClient,
) -> (TaskId, Attempt, Instant) {
    let body = json!({"account": "acme", "type": "echo", "payload": {"n": 1}});
    for _ in 0..5 {
        let started = Instant::now();
        let task: Value = app
            .post("/api/v1/tasks", Some(ADMIN_KEY), &body)
            .await
            .json()
            .await
            .unwrap();
        let id: TaskId = task["id"].as_str().unwrap().parse().unwrap();
        let (offered, attempt) = offer(session).await;
        assert_eq!(offered, id);
        if task["instance_id"] == registered.instance_id.to_string() {
            return (id, attempt, started);
        }
        tasks.acquire(id, attempt).await.unwrap();
        tasks.result(id, &succeeded(attempt)).await.unwrap();
    }
    panic!("replica A never placed a task itself at submission");
}

pub(super) fn succeeded(attempt: Attempt) -> TaskResult {
    TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        result: None,
        error: None,
        error_code: None,
        retryable: None,
    }
}

#[tokio::test]
async fn a_task_submitted_to_replica_a_reaches_a_delegate_on_replica_b_at_once() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (_, secret) = token(&a).await;
    let (registered, mut session, tasks) = connect(&b, &secret).await;

    let (id, attempt, started) = submit(&a, &registered, &mut session, &tasks).await;
    let latency = started.elapsed();
    eprintln!("cross-replica delivery: submit on A -> task_available on B's delegate in {latency:?}");
    assert_eq!(attempt, Attempt(1));

    let acquired = tasks.acquire(id, attempt).await.unwrap();
    let report = TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        result: Some(acquired.payload),
        error: None,
        error_code: None,
        retryable: None,
    };
    tasks.result(id, &report).await.unwrap();
    let done: Value = a
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (done["state"].clone(), done["result"].clone()),
        (json!("succeeded"), json!({"n": 1}))
    );
}

#[tokio::test]
async fn a_long_poll_on_replica_a_returns_when_the_delegate_reports_to_replica_b() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (_, secret) = token(&a).await;
    let (registered, mut session, tasks) = connect(&b, &secret).await;
    let (id, attempt, _) = submit(&a, &registered, &mut session, &tasks).await;
    tasks.acquire(id, attempt).await.unwrap();

    let before = a.state.dispatcher().listeners();
    let poll = {
        let (client, url) = (
            a.client.clone(),
            a.url(&format!("/api/v1/tasks/{id}/wait?state=running&timeout_ms=60000")),
        );
        tokio::spawn(async move { client.get(url).bearer_auth(ADMIN_KEY).send().await.unwrap() })
    };
    // The long poll is waiting on A once it listens for changes.
    let waiting = Instant::now();
    while a.state.dispatcher().listeners() == before {
        assert!(waiting.elapsed() < PATIENCE, "the long poll never started waiting");
        tokio::task::yield_now().await;
    }
    let reported = Instant::now();
    tasks.result(id, &succeeded(attempt)).await.unwrap();
    let answer = tokio::time::timeout(PATIENCE, poll).await.unwrap().unwrap();
    let task: Value = answer.json().await.unwrap();
    eprintln!(
        "cross-replica long poll: result on B -> answer on A in {:?}",
        reported.elapsed()
    );
    assert_eq!(task["state"], "succeeded", "{task}");
}

#[tokio::test]
async fn revoking_a_token_on_replica_a_closes_its_socket_on_replica_b() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (token_id, secret) = token(&a).await;
    let (_, mut session, _) = connect(&b, &secret).await;
    let revoked = a
        .post(
            &format!("/api/v1/delegate-tokens/{token_id}/revoke"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await;
    assert!(revoked.status().is_success());
    assert!(matches!(
        next(&mut session).await,
        Event::Message(ServerMessage::Revoked { .. })
    ));
    assert!(matches!(next(&mut session).await, Event::Ended { .. }));
    assert_eq!(b.state.hub().len(), 0);
}

/// A delegate request to `app` with the session of `registered`: a result for `task`.
async fn report(app: &TestApp, registered: &Registered, task: TaskId, attempt: Attempt) -> reqwest::Response {
    app.client
        .post(app.url(&format!("/delegate/v1/tasks/{task}/result")))
        .bearer_auth(registered.session_token.expose())
        .json(&succeeded(attempt))
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_token_revoked_on_replica_a_is_refused_at_once_by_replica_b_that_trusted_its_session() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (token_id, secret) = token(&a).await;
    let (registered, mut session, tasks) = connect(&b, &secret).await;
    let (id, attempt, _) = submit(&a, &registered, &mut session, &tasks).await;
    // B checks the session once, then takes it from memory.
    tasks.acquire(id, attempt).await.unwrap();
    assert_eq!(b.state.sessions().len(), 1, "B holds the session");

    let revoked = a
        .post(
            &format!("/api/v1/delegate-tokens/{token_id}/revoke"),
            Some(ADMIN_KEY),
            &json!({}),
        )
        .await;
    assert!(revoked.status().is_success());
    // B forgets the token's sessions before it closes their sockets: once the delegate
    // sees its socket closed, B has forgotten, and its very next request is refused.
    assert!(matches!(
        next(&mut session).await,
        Event::Message(ServerMessage::Revoked { .. })
    ));
    problem(report(&b, &registered, id, attempt).await, 401, "token-revoked").await;
    let task: Value = a
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    // Running still, or failed as its delegate's socket closed: not succeeded.
    assert_ne!(task["state"], "succeeded", "the report was not taken: {task}");
}

#[tokio::test]
async fn a_delegate_deleted_on_replica_a_has_its_sessions_refused_at_once_by_replica_b() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (_, secret) = token(&a).await;
    let (registered, mut session, _) = connect(&b, &secret).await;
    // B trusts the session (the task does not exist: refused after the session's check).
    let unknown = TaskId::new();
    problem(report(&b, &registered, unknown, Attempt(1)).await, 404, "not-found").await;
    assert_eq!(b.state.sessions().len(), 1, "B holds the session");

    let deleted = a
        .client
        .delete(a.url(&format!("/api/v1/delegates/{}", registered.group_id)))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), reqwest::StatusCode::NO_CONTENT);
    // B forgets the group's sessions before it tells their sockets to drain.
    assert!(matches!(
        next(&mut session).await,
        Event::Message(ServerMessage::Drain { .. })
    ));
    problem(report(&b, &registered, unknown, Attempt(1)).await, 401, "unauthorized").await;
}

#[tokio::test]
async fn cancelling_on_replica_a_tells_the_delegate_on_replica_b() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (_, secret) = token(&a).await;
    let (registered, mut session, tasks) = connect(&b, &secret).await;
    let (id, attempt, _) = submit(&a, &registered, &mut session, &tasks).await;
    tasks.acquire(id, attempt).await.unwrap();

    let cancelled: Value = a
        .post(&format!("/api/v1/tasks/{id}/cancel"), Some(ADMIN_KEY), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(cancelled["state"], "cancelled");
    loop {
        if let Event::Message(ServerMessage::CancelTask { task_id, attempt: told }) = next(&mut session).await {
            assert_eq!((task_id, told), (id, attempt));
            break;
        }
    }
}

#[tokio::test]
async fn a_replica_whose_listening_connection_is_killed_listens_again_and_delivers() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    assert_eq!(kill_listeners(&a).await, 2, "one listening connection per replica");
    let started = Instant::now();
    while b.state.cluster().resyncs() == 0 {
        assert!(started.elapsed() < PATIENCE, "replica B never listened again");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (_, secret) = token(&a).await;
    let (registered, mut session, tasks) = connect(&b, &secret).await;
    let (id, attempt, _) = submit(&a, &registered, &mut session, &tasks).await;
    tasks.acquire(id, attempt).await.unwrap();
}

#[tokio::test]
async fn a_token_revoked_while_the_signal_was_missed_closes_its_socket_when_the_listener_is_back() {
    let Some((a, b)) = spawn_replicas(without_repairs).await else {
        return;
    };
    let (token_id, secret) = token(&a).await;
    let (registered, mut session, _) = connect(&b, &secret).await;
    // B trusts the session (the task does not exist: refused after the session's check).
    let unknown = TaskId::new();
    problem(report(&b, &registered, unknown, Attempt(1)).await, 404, "not-found").await;
    // Revoked in the store with no signal at all: what B sees when the signal was sent
    // while its listening connection was down.
    a.state
        .store()
        .revoke_token(token_id.parse().unwrap(), chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(b.state.hub().len(), 1, "nothing told B yet");
    assert_eq!(kill_listeners(&b).await, 2);
    // B's listener comes back, rechecks the tokens of its sockets, and closes this one.
    assert!(matches!(
        next(&mut session).await,
        Event::Message(ServerMessage::Revoked { .. })
    ));
    assert!(matches!(next(&mut session).await, Event::Ended { .. }));
    assert!(b.state.cluster().resyncs() >= 1);
    assert_eq!(b.state.hub().len(), 0);
    // The gap made B forget every session: this one is checked again, and refused.
    problem(report(&b, &registered, unknown, Attempt(1)).await, 401, "token-revoked").await;
}

/// Terminates the listening connection of every replica sharing `app`'s schema (what a
/// network cut or a PostgreSQL restart does to it); returns how many there were.
async fn kill_listeners(app: &TestApp) -> usize {
    use sqlx::Connection;
    let switchboard_server::config::Database::Postgres(url) = &app.state.settings().database_url else {
        unreachable!("replicas run on PostgreSQL");
    };
    let schema = url.rsplit("search_path%3D").next().unwrap().to_owned();
    let mut admin = sqlx::PgConnection::connect(&std::env::var("DATABASE_URL").unwrap())
        .await
        .unwrap();
    let killed: Vec<(bool,)> = sqlx::query_as(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query = format('LISTEN \"switchboard:%s\"', $1::text)",
    )
    .bind(&schema)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    killed.len()
}

/// A client-library delegate registered and connected through the balancer at `public`,
/// with one task of its own acquired and running.
struct RunningBehind {
    lb: reqwest::Client,
    public: String,
    registered: Registered,
    session: Session,
    tasks: TaskClient,
    id: String,
    task_id: TaskId,
    attempt: Attempt,
}

impl RunningBehind {
    /// Creates a token, registers, connects, submits a task and acquires it, all through
    /// the balancer.
    async fn start(public: &str) -> RunningBehind {
        let lb = reqwest::Client::new();
        let created = lb_call(lb.post(format!("{public}/api/v1/delegate-tokens")).json(&json!({
            "name": "t", "account": "acme"
        })))
        .await;
        let request: RegisterRequest = serde_json::from_value(json!({
            "name": "workers", "hostname": "behind-lb", "version": "1.0.0", "task_types": ["echo"], "capacity": 5
        }))
        .unwrap();
        let registered = register(&lb, public, created["token"].as_str().unwrap(), &request)
            .await
            .unwrap();
        assert!(
            registered.stream_url.starts_with(&public.replace("http", "ws")),
            "the socket URL is the balancer's: {}",
            registered.stream_url
        );
        let backoff = Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        };
        let mut session = Session::start(registered.clone(), backoff);
        assert_eq!(next(&mut session).await, Event::Connected);
        let tasks = TaskClient::new(lb.clone(), public, &registered.session_token);
        let body = json!({"account": "acme", "type": "echo", "payload": {"n": 1}, "max_attempts": 3});
        let submitted = lb_call(lb.post(format!("{public}/api/v1/tasks")).json(&body)).await;
        let id = submitted["id"].as_str().unwrap().to_owned();
        let (task_id, attempt) = offer(&mut session).await;
        assert_eq!(task_id.to_string(), id);
        tasks.acquire(task_id, attempt).await.unwrap();
        RunningBehind {
            lb,
            public: public.to_owned(),
            registered,
            session,
            tasks,
            id,
            task_id,
            attempt,
        }
    }

    /// Waits out the disconnection of a drain until the session is connected again.
    async fn reconnected(&mut self) {
        loop {
            match next(&mut self.session).await {
                Event::Connected => return,
                Event::Disconnected { .. } => continue, // the drain, and any retry
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    /// Reports the task succeeded and checks that it ended so, as its first attempt: the
    /// drain neither re-queued nor failed it.
    async fn finish(&self) {
        self.tasks.result(self.task_id, &succeeded(self.attempt)).await.unwrap();
        let path = format!("{}/api/v1/tasks/{}", self.public, self.id);
        let task = lb_call(self.lb.get(path)).await;
        assert_eq!(
            (task["state"].as_str(), task["attempt"].as_u64()),
            (Some("succeeded"), Some(1)),
            "{task}"
        );
    }
}

/// Sends `request` with the admin key and answers its JSON.
async fn lb_call(request: reqwest::RequestBuilder) -> Value {
    request
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_drained_with_a_task_running_lets_its_delegate_finish_it_through_another() {
    let balancer = super::support::Balancer::start().await;
    let public = balancer.url();
    let Some((a, b)) = spawn_replicas(|s| s.public_url = Some(public.clone())).await else {
        return;
    };
    balancer.set_upstreams(vec![a.address, b.address]);
    let mut worker = RunningBehind::start(&public).await;

    // Drain the replica that holds the socket (SIGTERM's path); the other stays.
    let instance = worker.registered.instance_id;
    let (drained, stays) = if a.state.hub().is_connected(instance) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(!stays.state.hub().is_connected(instance));
    drained.stop().await.unwrap();
    worker.reconnected().await;
    assert!(
        stays.state.hub().is_connected(instance),
        "the delegate is on the other replica"
    );
    worker.finish().await;
    stays.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_replica_leads_the_timers_and_another_takes_over_when_it_is_gone() {
    let Some((a, b)) = spawn_replicas(|s| {
        // The timers run every 250ms at most; only the lead's matter here.
        s.assign_interval = Duration::from_millis(200);
    })
    .await
    else {
        return;
    };
    let leaders = |a: &TestApp, b: &TestApp| (a.state.metrics().is_leader(), b.state.metrics().is_leader());
    let started = Instant::now();
    while leaders(&a, &b) != (true, false) && leaders(&a, &b) != (false, true) {
        assert!(started.elapsed() < PATIENCE, "no single leader: {:?}", leaders(&a, &b));
        tokio::time::sleep(Duration::from_millis(50)).await; // waiting for the first ticks
    }
    let (leader, other) = if a.state.metrics().is_leader() { (a, b) } else { (b, a) };

    // The leader goes, and with it the connection holding the lock: PostgreSQL frees the
    // lock and the other replica takes the lead by itself.
    leader.stop().await.unwrap();
    let started = Instant::now();
    while !other.state.metrics().is_leader() {
        assert!(started.elapsed() < PATIENCE, "the other replica did not take the lead");
        tokio::time::sleep(Duration::from_millis(50)).await; // waiting for its next try
    }
    eprintln!("the lead passed over in {:?}", started.elapsed());

    // The timers go on: a task that cannot be placed expires at its assign timeout.
    let body = json!({
        "account": "acme", "type": "echo", "wait_for_delegate": true, "assign_timeout_ms": 500
    });
    let submitted: Value = other
        .post("/api/v1/tasks", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    let path = format!(
        "/api/v1/tasks/{}/wait?state=queued&timeout_ms=20000",
        submitted["id"].as_str().unwrap()
    );
    let task: Value = other.get(&path, Some(ADMIN_KEY)).await.json().await.unwrap();
    assert_eq!(task["state"], "expired", "{task}");
}

/// `switchboard_delegate_sockets_open` of the replica at `address`.
async fn sockets_open(client: &reqwest::Client, address: &str) -> f64 {
    let text = client
        .get(format!("http://{address}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("switchboard_delegate_sockets_open "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sockets gauge in:\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_a_replica_process_moves_its_delegate_to_another_where_its_task_finishes() {
    use super::support::{Balancer, Binary, postgres_schema};

    let Some(url) = postgres_schema().await else {
        return;
    };
    let balancer = Balancer::start().await;
    let public = balancer.url();
    let env = [
        ("SWITCHBOARD_DATABASE_URL", url.as_str()),
        ("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY),
        ("SWITCHBOARD_PUBLIC_URL", public.as_str()),
    ];
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let mut replicas: Vec<Binary> = dirs
        .iter()
        .map(|dir| Binary::start_with_env(dir.path(), &["--listen", "127.0.0.1:0"], &env))
        .collect();
    balancer.set_upstreams(replicas.iter().map(|r| r.address.clone()));
    let mut worker = RunningBehind::start(&public).await;

    // SIGTERM the process that holds the socket; it drains and exits 0.
    let mut holder = None;
    for (i, replica) in replicas.iter().enumerate() {
        if sockets_open(&worker.lb, &replica.address).await == 1.0 {
            holder = Some(i);
        }
    }
    let holder = replicas.remove(holder.expect("one replica holds the socket"));
    let other = replicas.pop().unwrap();
    let status = tokio::task::spawn_blocking(move || holder.terminate()).await.unwrap();
    assert_eq!(status.code(), Some(0), "a drained replica exits cleanly: {status}");
    worker.reconnected().await;
    assert_eq!(
        sockets_open(&worker.lb, &other.address).await,
        1.0,
        "the delegate is on the other replica"
    );
    worker.finish().await;
    worker.session.stop();
    let status = tokio::task::spawn_blocking(move || other.terminate()).await.unwrap();
    assert_eq!(status.code(), Some(0));
}
