//! Reference delegates as processes, against the real manager served in-process on port 0
//! with a fresh SQLite store: they register in their scopes, are listed connected, are
//! marked disconnected the moment they are killed, and run the tasks submitted for them.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use switchboard_client::Tls;
use switchboard_domain::{InstanceId, TaskId, TaskState};
use switchboard_server::config::Database;
use switchboard_server::{AppState, Settings, open_store, run};
use tempfile::TempDir;

const ADMIN: &str = "delegate-e2e-admin-key-0123456789";
const PATIENCE: Duration = Duration::from_secs(30);

pub(super) struct Manager {
    pub(super) url: String,
    pub(super) state: AppState,
    pub(super) http: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: TempDir,
}

async fn manager() -> Manager {
    manager_with(|_| {}, &Tls::default()).await
}

/// The manager with settings adjusted by `configure` (over HTTPS when they name a
/// certificate); its API is called with a client trusting what `tls` trusts.
pub(super) async fn manager_with(configure: impl FnOnce(&mut Settings), tls: &Tls) -> Manager {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = Settings {
        database_url: Database::Sqlite(dir.path().join("switchboard.db")),
        admin_key: Some(switchboard_domain::Secret::presented(ADMIN)),
        ..Settings::default()
    };
    configure(&mut settings);
    let scheme = if settings.tls_cert.is_some() { "https" } else { "http" };
    let store = open_store(&settings).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("{scheme}://{}", listener.local_addr().unwrap());
    let state = AppState::new(store, settings);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(run(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    Manager {
        url,
        state,
        http: tls.http_client().build().unwrap(),
        _stop: stop,
        _dir: dir,
    }
}

impl Manager {
    /// An admin API call with a JSON body; the answer's body.
    pub(super) async fn post(&self, path: &str, body: &Value) -> Value {
        self.http
            .post(format!("{}{path}", self.url))
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(super) async fn token(&self, name: &str, account: &str) -> String {
        let body = json!({"name": name, "account": account});
        let created: Value = self
            .http
            .post(format!("{}/api/v1/delegate-tokens", self.url))
            .bearer_auth(ADMIN)
            .json(&body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        created["token"].as_str().unwrap().to_owned()
    }

    /// Submits a task through the pipeline API; returns the answer.
    pub(super) async fn submit(&self, body: &Value) -> Value {
        let url = format!("{}/api/v1/tasks", self.url);
        self.http
            .post(url)
            .bearer_auth(ADMIN)
            .json(body)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(super) async fn delegates(&self) -> Value {
        let url = format!("{}/api/v1/delegates", self.url);
        self.http
            .get(url)
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    pub(super) async fn instance(&self, id: InstanceId) -> Value {
        let list = self.delegates().await;
        let all = list["items"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|g| g["instances"].as_array().unwrap().clone());
        all.into_iter()
            .find(|i| i["id"] == id.to_string())
            .expect("instance listed")
    }
}

/// A `switchboard-delegate` process, killed when dropped.
pub(super) struct Delegate {
    child: Child,
    pub(super) id: InstanceId,
    _logs: TempDir,
}

impl Drop for Delegate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the delegate and waits for its "registered as" line. An empty `token` sets
/// none (a JIT delegate brings its own in `--jit-config`).
pub(super) async fn delegate(manager: &Manager, token: &str, args: &[&str]) -> Delegate {
    delegate_with_env(manager, token, args, &[]).await
}

/// Like [`delegate`], with these variables in the delegate's environment too.
pub(super) async fn delegate_with_env(manager: &Manager, token: &str, args: &[&str], env: &[(&str, &str)]) -> Delegate {
    let logs = tempfile::tempdir().unwrap();
    let mut child = Command::new(super::BIN)
        .args(["--manager", &manager.url, "--log-dir"])
        .arg(logs.path())
        .args(args)
        .env_clear()
        .envs((!token.is_empty()).then_some(("SWITCHBOARD_TOKEN", token)))
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut reader = BufReader::new(stdout);
        let mut line = String::new();
        let _ = reader.read_line(&mut line);
        // Keep draining so the delegate never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut reader, &mut std::io::sink()));
        line
    });
    let line = tokio::time::timeout(PATIENCE, line)
        .await
        .expect("registered in time")
        .unwrap();
    let id = line
        .strip_prefix("switchboard-delegate registered as ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    Delegate { child, id, _logs: logs }
}

/// Polls `check` (the manager notices socket changes asynchronously); bounded.
pub(super) async fn eventually<F, Fut>(mut check: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !check().await {
        assert!(start.elapsed() < PATIENCE, "condition not reached within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    start.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_reference_delegates_in_account_org_and_project_scopes_are_listed_connected() {
    let m = manager().await;
    let token = m.token("fleet", "acme").await;
    let a = delegate(
        &m,
        &token,
        &["--name", "acct", "--tags", "linux,GPU", "--hostname", "Host-A"],
    )
    .await;
    let o = delegate(&m, &token, &["--name", "org", "--org", "eng", "--hostname", "host-o"]).await;
    let p = delegate(
        &m,
        &token,
        &[
            "--name",
            "proj",
            "--org",
            "eng",
            "--project",
            "web",
            "--hostname",
            "host-p",
        ],
    )
    .await;
    for d in [&a, &o, &p] {
        eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    }
    let list = m.delegates().await;
    let group = |name: &str| {
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|g| g["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(
        (group("acct")["org"].clone(), group("acct")["project"].clone()),
        (Value::Null, Value::Null)
    );
    assert_eq!(
        (group("org")["org"].clone(), group("org")["project"].clone()),
        (json!("eng"), Value::Null)
    );
    assert_eq!(
        (group("proj")["org"].clone(), group("proj")["project"].clone()),
        (json!("eng"), json!("web"))
    );
    let acct = m.instance(a.id).await;
    assert_eq!(acct["tags"], json!(["gpu", "linux"]));
    for s in ["linux", "gpu", "acct", "host-a", &a.id.to_string()] {
        assert!(
            acct["selectors"].as_array().unwrap().contains(&json!(s)),
            "{s} missing: {acct}"
        );
    }
    assert_eq!(acct["token_name"], "fleet");
    assert_eq!(acct["task_types"], json!(["echo", "http_check", "sleep"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_a_reference_delegate_marks_it_disconnected_at_once() {
    let m = manager().await;
    let token = m.token("t", "acme").await;
    let mut victim = delegate(&m, &token, &["--name", "d", "--hostname", "victim"]).await;
    let bystander = delegate(&m, &token, &["--name", "d", "--hostname", "bystander"]).await;
    for d in [&victim, &bystander] {
        eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    }
    victim.child.kill().unwrap(); // SIGKILL: no goodbye on the socket
    victim.child.wait().unwrap();
    let took = eventually(|| async { m.instance(victim.id).await["state"] == "disconnected" }).await;
    assert!(took < Duration::from_secs(1), "noticed in {took:?}");
    assert_eq!(m.instance(bystander.id).await["state"], "connected");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_delegate_runs_a_task_submitted_for_it_and_reports_the_result() {
    let m = manager().await;
    let token = m.token("t", "acme").await;
    let d = delegate(&m, &token, &["--name", "d", "--hostname", "worker"]).await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;

    // Submitted through the pipeline API: the dispatcher places it on the only delegate.
    let body = json!({"account": "acme", "type": "echo", "payload": {"say": "hello"}});
    let submitted = m.submit(&body).await;
    assert_eq!(submitted["instance_id"], d.id.to_string(), "{submitted}");
    let task = TaskId(submitted["id"].as_str().unwrap().parse().unwrap());
    let store = m.state.store();
    eventually(|| async { store.get_task(task).await.unwrap().state == TaskState::Succeeded }).await;
    let done = store.get_task(task).await.unwrap();
    assert_eq!(done.result, Some(json!({"say": "hello"})), "echo returns its payload");
    assert_eq!(store.get_instance(d.id).await.unwrap().active_tasks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_delegate_streams_a_shell_tasks_output_to_its_log_before_the_result() {
    let m = manager().await;
    let token = m.token("t", "acme").await;
    let d = delegate(
        &m,
        &token,
        &[
            "--name",
            "d",
            "--hostname",
            "worker",
            "--task-types",
            "shell",
            "--enable-shell",
        ],
    )
    .await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    // 2,000 lines, on both streams: batched into few chunks, every line kept in order
    // within its stream.
    let command = "i=0; while [ $i -lt 1000 ]; do echo out $i; echo err $i >&2; i=$((i+1)); done";
    let body = json!({"account": "acme", "type": "shell", "payload": {"command": command}});
    let submitted = m.submit(&body).await;
    let task = TaskId(submitted["id"].as_str().unwrap().parse().unwrap());
    let store = m.state.store();
    eventually(|| async { store.get_task(task).await.unwrap().state.is_terminal() }).await;
    assert_eq!(store.get_task(task).await.unwrap().state, TaskState::Succeeded);

    // The log was whole when the result came: the shipper sends before the report.
    let chunks = store
        .task_log(task, switchboard_domain::tasklog::LogPosition::default(), usize::MAX)
        .await
        .unwrap();
    let text: String = chunks.iter().map(|c| c.text.as_str()).collect();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2000, "{} chunks", chunks.len());
    for stream in ["out", "err"] {
        let numbers: Vec<u32> = lines
            .iter()
            .filter_map(|l| l.strip_prefix(stream).map(|n| n.trim().parse().unwrap()))
            .collect();
        assert_eq!(numbers, (0..1000).collect::<Vec<_>>(), "{stream}");
    }
    assert!(chunks.len() < 100, "batched: {} chunks for 2,000 lines", chunks.len());
    let mut at = 0;
    for c in &chunks {
        assert_eq!(c.at.offset, at, "chunks are contiguous");
        at += c.text.len() as u64;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_delegate_resolves_a_secret_reference_itself_and_masks_its_value() {
    let m = manager().await;
    let token = m.token("t", "acme").await;
    let value = "ref-value-9Tz4Qw";
    let secret = m
        .post(
            "/api/v1/secrets",
            &json!({"name": "db-password", "account": "acme", "reference": "env:SB_TEST_DB_PASSWORD"}),
        )
        .await;
    assert_eq!(secret["kind"], "reference", "{secret}");
    let d = delegate_with_env(
        &m,
        &token,
        &[
            "--name",
            "d",
            "--hostname",
            "worker",
            "--task-types",
            "shell",
            "--enable-shell",
        ],
        &[("SB_TEST_DB_PASSWORD", value)],
    )
    .await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    // The shell sees the secret as DB_PASSWORD; what it prints comes back masked.
    let command = format!("test \"$DB_PASSWORD\" = '{value}' && echo \"using $DB_PASSWORD\"");
    let body = json!({"account": "acme", "type": "shell", "payload": {"command": command}, "secrets": ["db-password"]});
    let submitted = m.submit(&body).await;
    let task = TaskId(submitted["id"].as_str().unwrap().parse().unwrap());
    let store = m.state.store();
    eventually(|| async { store.get_task(task).await.unwrap().state.is_terminal() }).await;
    let done = store.get_task(task).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "{:?}", done.result);
    assert_eq!(done.result.as_ref().unwrap()["stdout"], "using ***\n");
    let log = store
        .task_log(task, switchboard_domain::tasklog::LogPosition::default(), usize::MAX)
        .await
        .unwrap();
    let text: String = log.iter().map(|c| c.text.as_str()).collect();
    assert_eq!(text, "using ***\n");

    // A reference this delegate cannot resolve fails the task, saying so.
    let unresolved = m
        .post(
            "/api/v1/secrets",
            &json!({"name": "vaulted", "account": "acme", "reference": "vault:secret/data/db#password"}),
        )
        .await;
    assert_eq!(unresolved["kind"], "reference");
    let body = json!({"account": "acme", "type": "shell", "payload": {"command": "true"}, "secrets": ["vaulted"]});
    let task = TaskId(m.submit(&body).await["id"].as_str().unwrap().parse().unwrap());
    eventually(|| async { store.get_task(task).await.unwrap().state.is_terminal() }).await;
    let failed = store.get_task(task).await.unwrap();
    let failure = failed.failure.expect("failed");
    assert_eq!(failure.code.as_deref(), Some("secret_unresolved"), "{failure:?}");
    assert!(failure.detail.contains("not vault:"), "{failure:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_generated_compose_file_runs_the_reference_delegate_against_the_manager() {
    let m = manager().await;
    let token: Value = m
        .post(
            "/api/v1/delegate-tokens",
            &json!({"name": "composed", "account": "acme"}),
        )
        .await;
    let id = token["id"].as_str().unwrap();
    let file: Value = m
        .http
        .get(format!(
            "{}/api/v1/delegate-tokens/{id}/install?format=compose&new_token=true&tags=edge",
            m.url
        ))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let compose: Value = serde_json::from_str(file["content"].as_str().unwrap()).unwrap();
    let service = &compose["services"]["composed"];
    // What the container would run: the file's command and environment, with the binary
    // built here for the image's entrypoint. Only the health port is moved to a free one,
    // so the test never depends on 8081 being free on this machine.
    let health = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let args: Vec<String> = service["command"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap().replace("0.0.0.0:8081", &health.to_string()))
        .collect();
    assert!(args.iter().any(|a| a == &health.to_string()), "{args:?}");
    let env: Vec<(String, String)> = service["environment"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        env[0].1,
        file["token"].as_str().unwrap(),
        "the minted token is in the file"
    );
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(super::BIN)
        .args(&args)
        .current_dir(dir.path())
        .env_clear()
        .envs(env)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let line = tokio::time::timeout(PATIENCE, line)
        .await
        .expect("registered in time")
        .unwrap();
    // The liveness probe the Kubernetes file points at answers.
    let probe = m.http.get(format!("http://{health}/healthz")).send().await;
    let _ = child.kill();
    let _ = child.wait();
    let probe = probe.expect("/healthz answers");
    assert_eq!(probe.status(), 200);
    assert!(probe.text().await.unwrap().contains("\"status\":\"ok\""));
    let instance: InstanceId = line
        .strip_prefix("switchboard-delegate registered as ")
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
        .parse()
        .unwrap();
    let stored = m.state.store().get_instance(instance).await.unwrap();
    assert_eq!(stored.capacity.get(), 10);
    assert!(stored.tags.iter().any(|t| t.as_str() == "edge"), "{:?}", stored.tags);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reference_delegate_killed_mid_task_fails_it_as_delegate_lost() {
    let m = manager().await;
    let token = m.token("t", "acme").await;
    let mut d = delegate(&m, &token, &["--name", "d", "--hostname", "doomed"]).await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    let body = json!({"account": "acme", "type": "sleep", "payload": {"ms": 60000}});
    let submitted = m.submit(&body).await;
    let task = TaskId(submitted["id"].as_str().unwrap().parse().unwrap());
    let store = m.state.store();
    eventually(|| async { store.get_task(task).await.unwrap().state == TaskState::Running }).await;
    d.child.kill().unwrap(); // SIGKILL mid-task
    d.child.wait().unwrap();
    eventually(|| async { store.get_task(task).await.unwrap().state == TaskState::Failed }).await;
    let failed = store.get_task(task).await.unwrap();
    assert_eq!(
        failed.failure.map(|f| f.reason),
        Some(switchboard_domain::FailureReason::DelegateLost)
    );
}

/// Waits (within PATIENCE) for the process to exit, and returns its code.
async fn exit_code(child: &mut Child) -> Option<i32> {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        assert!(start.elapsed() < PATIENCE, "the delegate did not exit");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jit_reference_delegate_takes_one_task_and_exits_0() {
    let m = manager().await;
    let pool = m
        .post(
            "/api/v1/delegates",
            &json!({"name": "oneshot", "account": "acme", "task_types": ["echo"]}),
        )
        .await;
    let jit = m
        .post(
            &format!("/api/v1/delegates/{}/jit", pool["id"].as_str().unwrap()),
            &json!({}),
        )
        .await;
    let config = jit["jit_config"].as_str().unwrap();
    // No token and no name of its own: both come with the JIT config.
    let mut d = delegate(&m, "", &["--jit-config", config, "--hostname", "pod-1"]).await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    assert_eq!(m.instance(d.id).await["max_tasks"], 1);

    let first = m
        .submit(&json!({"account": "acme", "type": "echo", "payload": {"n": 1}}))
        .await;
    assert_eq!(first["instance_id"], d.id.to_string(), "{first}");
    let task = TaskId(first["id"].as_str().unwrap().parse().unwrap());
    assert_eq!(
        exit_code(&mut d.child).await,
        Some(0),
        "a single-use delegate exits 0 after its task"
    );
    let store = m.state.store();
    assert_eq!(store.get_task(task).await.unwrap().state, TaskState::Succeeded);
    eventually(|| async { store.get_instance(d.id).await.is_err() }).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_the_running_task_finish_offers_nothing_more_and_exits_0() {
    let m = manager().await;
    let token = m.token("t", "acme").await;
    let mut d = delegate(&m, &token, &["--name", "d", "--hostname", "leaving"]).await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;
    let body = json!({"account": "acme", "type": "sleep", "payload": {"ms": 1500}});
    let submitted = m.submit(&body).await;
    let task = TaskId(submitted["id"].as_str().unwrap().parse().unwrap());
    let store = m.state.store();
    eventually(|| async { store.get_task(task).await.unwrap().state == TaskState::Running }).await;

    let sent = Command::new("kill")
        .args(["-TERM", &d.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    eventually(|| async { m.instance(d.id).await["draining"] == true }).await;
    // Draining: a new task is not offered to it, though it has free slots.
    let waiting = m.submit(&json!({"account": "acme", "type": "echo"})).await;
    assert_eq!(waiting["state"], "queued", "{waiting}");
    assert!(
        waiting["explanation"].as_str().unwrap().contains("draining"),
        "{waiting}"
    );

    assert_eq!(exit_code(&mut d.child).await, Some(0));
    let done = store.get_task(task).await.unwrap();
    assert_eq!(done.state, TaskState::Succeeded, "the running task finished: {done:?}");
}
