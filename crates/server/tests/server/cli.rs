//! The operator CLI: the real `switchboard` binary against a manager started in-process,
//! round-tripping every resource in both output modes, and its exit codes (1 refused,
//! 2 usage, 3 unreachable). The key travels in the environment and is never printed.

use serde_json::{Value, json};
use switchboard_client::delegate::register;
use switchboard_protocol::delegate::RegisterRequest;

use super::support::{ADMIN_KEY, TestApp, spawn_app};

/// What one run of the binary did.
#[derive(Debug)]
pub(super) struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts exit 0 and parses stdout as JSON.
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "{self:?}");
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// Asserts exit 0 and answers stdout.
    pub(super) fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "{self:?}");
        &self.stdout
    }
}

/// Runs `switchboard --url <url> args...` with `env` as its only environment.
async fn run_with(url: &str, args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .env_clear()
        .envs(env.iter().copied());
    let output = tokio::task::spawn_blocking(move || command.output().expect("the binary runs"))
        .await
        .unwrap();
    let run = Run {
        code: output.status.code(),
        stdout: String::from_utf8(output.stdout).unwrap(),
        stderr: String::from_utf8(output.stderr).unwrap(),
    };
    assert!(
        !run.stdout.contains(ADMIN_KEY) && !run.stderr.contains(ADMIN_KEY),
        "the key is never printed: {run:?}"
    );
    run
}

/// Runs the binary against `app` with the admin key in `SWITCHBOARD_KEY`.
pub(super) async fn cli(app: &TestApp, args: &[&str]) -> Run {
    run_with(&app.url(""), args, &[("SWITCHBOARD_KEY", ADMIN_KEY)]).await
}

fn id_of(value: &Value) -> String {
    value["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn tokens_round_trip_in_both_output_modes() {
    let app = spawn_app().await;

    let created = cli(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "ci",
            "--account",
            "acme",
            "--org",
            "web",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(created["name"], "ci");
    assert_eq!(created["org"], "web");
    assert!(created["token"].as_str().is_some_and(|t| !t.is_empty()), "{created}");
    let id = id_of(&created);

    let table = cli(&app, &["tokens", "create", "--name", "other", "--account", "acme"]).await;
    let out = table.ok();
    assert!(out.starts_with("ID "), "{out}");
    assert!(out.contains("other") && out.contains("\ntoken: "), "{out}");

    let listed = cli(&app, &["tokens", "list"]).await;
    let line = listed
        .ok()
        .lines()
        .find(|l| l.starts_with(&id))
        .expect("the token is listed");
    assert!(
        line.contains("ci") && line.contains("acme/web") && line.contains("active"),
        "{line}"
    );
    assert!(
        !listed.stdout.contains(created["token"].as_str().unwrap()),
        "no secrets in lists"
    );

    let listed = cli(&app, &["tokens", "list", "--output", "json"]).await.json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");

    let got = cli(&app, &["--output", "json", "tokens", "get", &id]).await.json();
    assert_eq!(got["name"], "ci");
    assert!(got.get("token").is_none(), "{got}");

    let revoked = cli(&app, &["tokens", "revoke", &id]).await;
    assert!(revoked.ok().contains("revoked"), "{revoked:?}");
    let got = cli(&app, &["tokens", "get", &id, "--output", "json"]).await.json();
    assert_eq!(got["status"], "revoked");

    let unknown = cli(&app, &["tokens", "revoke", "00000000-0000-7000-8000-000000000000"]).await;
    assert_eq!(unknown.code, Some(1), "{unknown:?}");
    assert!(unknown.stderr.starts_with("error: "), "{unknown:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn delegates_round_trip_in_both_output_modes() {
    let app = spawn_app().await;
    assert!(cli(&app, &["delegates", "list"]).await.ok().starts_with("ID "));
    assert_eq!(
        cli(&app, &["delegates", "list", "--output", "json"]).await.json(),
        json!({"items": []})
    );

    let token = cli(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "t",
            "--account",
            "acme",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    let request: RegisterRequest = serde_json::from_value(json!({
        "name": "builder", "hostname": "host-1", "version": "1.0.0",
        "tags": [], "task_types": ["echo"], "capacity": 4
    }))
    .unwrap();
    let registered = register(&app.client, &app.url(""), token["token"].as_str().unwrap(), &request)
        .await
        .expect("registration succeeds");

    let listed = cli(&app, &["delegates", "list", "--output", "json"]).await.json();
    let id = id_of(&listed["items"][0]);
    let table = cli(&app, &["delegates", "list"]).await;
    let line = table.ok().lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains("builder") && line.contains("acme"), "{line}");

    let shown = cli(&app, &["delegates", "show", &id]).await;
    assert!(
        shown.ok().contains("host-1") && shown.stdout.contains("name:"),
        "{shown:?}"
    );
    let shown = cli(&app, &["delegates", "show", &id, "--output", "json"]).await.json();
    assert_eq!(shown["instances"][0]["hostname"], "host-1");

    let tagged = cli(&app, &["delegates", "tag", &id, "GPU", "linux", "--output", "json"])
        .await
        .json();
    assert_eq!(tagged["tags"], json!(["gpu", "linux"]));
    let disabled = cli(&app, &["delegates", "disable", &id, "--output", "json"])
        .await
        .json();
    assert_eq!(disabled["disabled"], true);
    let enabled = cli(&app, &["delegates", "enable", &id]).await;
    assert!(enabled.ok().contains("disabled: no"), "{enabled:?}");

    // Paused with a note, the instance alone and then the whole delegate; resumed.
    let instance = registered.instance_id.to_string();
    let paused = cli(
        &app,
        &[
            "delegates",
            "pause",
            &id,
            "--instance",
            &instance,
            "--note",
            "disk swap",
            "--for",
            "2h",
        ],
    )
    .await;
    let row = paused
        .ok()
        .lines()
        .find(|l| l.starts_with(&instance))
        .expect("the instance row");
    assert!(row.contains("no: paused until") && row.contains("disk swap"), "{row}");
    let resumed = cli(
        &app,
        &["delegates", "resume", &id, "--instance", &instance, "--output", "json"],
    )
    .await
    .json();
    assert_eq!(resumed["instances"][0]["accepting"], true, "{resumed}");
    let paused = cli(&app, &["delegates", "pause", &id, "--note", "window"]).await;
    let line = |run: &str| {
        run.lines()
            .find(|l| l.starts_with("paused:"))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line(paused.ok()).ends_with("paused until resumed: window"),
        "{paused:?}"
    );
    let resumed = cli(&app, &["delegates", "resume", &id]).await;
    assert!(line(resumed.ok()).ends_with(" no"), "{resumed:?}");
    let refused = cli(&app, &["delegates", "pause", &id, "--note", " "]).await;
    assert_eq!(refused.code, Some(1), "{refused:?}");
    assert!(refused.stderr.contains("note"), "{refused:?}");

    // A single-use credential, shown once.
    let jit = cli(&app, &["delegates", "jit", &id, "--expires-in", "15m"]).await;
    assert!(
        jit.ok().lines().any(|l| l.starts_with("token:") && l.contains("sbd_")) && jit.stdout.contains("--jit-config"),
        "{jit:?}"
    );

    // A pool declared ahead of any instance.
    let declared = cli(
        &app,
        &[
            "delegates",
            "declare",
            "--name",
            "k8s-prod",
            "--account",
            "acme",
            "--tag",
            "gpu",
            "--type",
            "echo",
            "--max-instances",
            "3",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(
        declared["declared"],
        json!({"task_types": ["echo"], "max_instances": 3})
    );
    assert_eq!(declared["instances"], json!([]));
    let shown = cli(&app, &["delegates", "show", &id_of(&declared)]).await;
    assert!(
        shown.ok().contains("declared: yes: types echo, at most 3 instances"),
        "{shown:?}"
    );

    let deleted = cli(&app, &["delegates", "delete", &id]).await;
    assert!(deleted.ok().contains("deleted"), "{deleted:?}");
    let gone = cli(&app, &["delegates", "show", &id]).await;
    assert_eq!(gone.code, Some(1), "{gone:?}");
    assert!(gone.stderr.starts_with("error: "), "{gone:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn connectors_round_trip_in_both_output_modes() {
    let app = spawn_app().await;
    let created = cli(
        &app,
        &[
            "connectors",
            "create",
            "--name",
            "github",
            "--account",
            "acme",
            "--selector",
            " GPU ",
            "--selector",
            "linux",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(created["selectors"], json!(["gpu", "linux"]));
    let id = id_of(&created);

    let table = cli(
        &app,
        &["connectors", "create", "--name", "gitlab", "--account", "other"],
    )
    .await;
    assert!(table.ok().contains("gitlab"), "{table:?}");

    let listed = cli(&app, &["connectors", "list"]).await;
    let line = listed.ok().lines().find(|l| l.starts_with(&id)).expect("listed");
    assert!(line.contains("github") && line.contains("gpu,linux"), "{line}");
    let within = cli(&app, &["connectors", "list", "--account", "acme", "--output", "json"])
        .await
        .json();
    assert_eq!(within["items"].as_array().unwrap().len(), 1, "{within}");

    let got = cli(&app, &["connectors", "get", &id, "--output", "json"]).await.json();
    assert_eq!(got["name"], "github");
    let got = cli(&app, &["connectors", "get", &id]).await;
    assert!(got.ok().contains("github"), "{got:?}");

    let updated = cli(
        &app,
        &[
            "connectors",
            "update",
            &id,
            "--name",
            "gh",
            "--selector",
            "arm",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(
        (updated["name"].clone(), updated["selectors"].clone()),
        (json!("gh"), json!(["arm"]))
    );

    let duplicate = cli(&app, &["connectors", "create", "--name", "gh", "--account", "acme"]).await;
    assert_eq!(duplicate.code, Some(1), "a name is unique in its scope: {duplicate:?}");

    let deleted = cli(&app, &["connectors", "delete", &id]).await;
    assert!(deleted.ok().contains("deleted"), "{deleted:?}");
    let deleted = cli(&app, &["connectors", "delete", &id, "--output", "json"]).await;
    assert_eq!(deleted.code, Some(1), "{deleted:?}");
    let gone = cli(&app, &["connectors", "get", &id]).await;
    assert_eq!(gone.code, Some(1), "{gone:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn tasks_round_trip_in_both_output_modes() {
    let app = spawn_app().await;
    let submit = [
        "tasks",
        "submit",
        "--account",
        "acme",
        "--type",
        "echo",
        "--payload",
        r#"{"n": 1}"#,
        "--wait-for-delegate",
    ];
    let submitted = cli(
        &app,
        &[&submit[..], &["--output", "json", "--idempotency-key", "k1"]].concat(),
    )
    .await
    .json();
    assert_eq!(submitted["state"], "queued");
    let id = id_of(&submitted);
    let again = cli(
        &app,
        &[&submit[..], &["--output", "json", "--idempotency-key", "k1"]].concat(),
    )
    .await
    .json();
    assert_eq!(id_of(&again), id, "the idempotency key answers the original task");

    let table = cli(&app, &submit).await;
    assert!(
        table.ok().contains("state:") && table.stdout.contains("queued"),
        "{table:?}"
    );

    let got = cli(&app, &["tasks", "get", &id]).await;
    assert!(got.ok().contains(&id) && got.stdout.contains("queued"), "{got:?}");
    let got = cli(&app, &["tasks", "get", &id, "--output", "json"]).await.json();
    assert_eq!(got["type"], "echo");

    let listed = cli(&app, &["tasks", "list", "--state", "queued"]).await;
    assert!(listed.ok().lines().any(|l| l.starts_with(&id)), "{listed:?}");
    let listed = cli(&app, &["tasks", "list", "--account", "acme", "--output", "json"])
        .await
        .json();
    assert_eq!(listed["items"].as_array().unwrap().len(), 2, "{listed}");

    let explained = cli(
        &app,
        &[
            "tasks",
            "explain",
            "--account",
            "acme",
            "--type",
            "echo",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert!(explained["explanation"].is_string(), "{explained}");
    let explained = cli(&app, &["tasks", "explain", "--account", "acme", "--type", "echo"]).await;
    assert!(explained.ok().starts_with("explanation: "), "{explained:?}");

    let log = cli(&app, &["tasks", "log", &id, "--output", "json"]).await.json();
    assert!(log["items"].is_array(), "{log}");
    assert!(cli(&app, &["tasks", "log", &id]).await.ok().starts_with("AT "));

    // watch prints each state until the end: cancel the task once its first state is out.
    let mut watcher = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(["--url", &app.url(""), "tasks", "watch", &id])
        .env_clear()
        .env("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = watcher.stdout.take().unwrap();
    let (first_tx, first_rx) = tokio::sync::oneshot::channel();
    let reader = tokio::task::spawn_blocking(move || {
        use std::io::{BufRead, Read};
        let mut reader = std::io::BufReader::new(stdout);
        let mut first = String::new();
        reader.read_line(&mut first).unwrap();
        let _ = first_tx.send(first.clone());
        let mut rest = String::new();
        reader.read_to_string(&mut rest).unwrap();
        let status = watcher.wait().unwrap();
        (status.code(), first + &rest)
    });
    let first = first_rx.await.unwrap();
    assert!(first.trim_end().ends_with("queued"), "{first}");
    let cancelled = cli(&app, &["tasks", "cancel", &id, "--output", "json"]).await.json();
    assert_eq!(cancelled["state"], "cancelled");
    let (code, watched) = reader.await.unwrap();
    assert_eq!(code, Some(0), "{watched}");
    let states: Vec<&str> = watched.lines().map(|l| l.split_whitespace().last().unwrap()).collect();
    assert_eq!(states, ["queued", "cancelled"], "{watched}");
    let watched = cli(&app, &["tasks", "watch", &id, "--output", "json"]).await;
    let last: Value = serde_json::from_str(watched.ok().lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "cancelled");

    let again = cli(&app, &["tasks", "cancel", &id]).await;
    assert_eq!(again.code, Some(1), "an ended task cannot be cancelled: {again:?}");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn exit_codes_are_1_refused_2_usage_3_unreachable() {
    let app = spawn_app().await;

    // 1: the manager refused, with its problem on stderr.
    let bad = cli(
        &app,
        &[
            "connectors",
            "create",
            "--name",
            "c",
            "--account",
            "acme",
            "--selector",
            "   ",
        ],
    )
    .await;
    assert_eq!(bad.code, Some(1), "{bad:?}");
    assert!(
        bad.stderr.starts_with("error: ") && bad.stderr.trim_end().contains(": "),
        "{bad:?}"
    );
    assert!(bad.stdout.is_empty(), "{bad:?}");
    let no_key = run_with(&app.url(""), &["tokens", "list"], &[]).await;
    assert_eq!(no_key.code, Some(1), "{no_key:?}");
    let wrong_key = run_with(&app.url(""), &["tokens", "list", "--key", "wrong"], &[]).await;
    assert_eq!(wrong_key.code, Some(1), "{wrong_key:?}");

    // 2: usage errors, before anything is sent (a bad flag, a bad name).
    let flag = cli(&app, &["tokens", "list", "--bogus"]).await;
    assert_eq!(flag.code, Some(2), "{flag:?}");
    let name = cli(&app, &["tokens", "create", "--name", "Not A Name", "--account", "acme"]).await;
    assert_eq!(name.code, Some(2), "{name:?}");
    let output = cli(&app, &["tokens", "list", "--output", "yaml"]).await;
    assert_eq!(output.code, Some(2), "{output:?}");

    // 3: nothing listens there.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let unreachable = run_with(
        &url,
        &["tokens", "list"],
        &[("SWITCHBOARD_KEY", ADMIN_KEY), ("SWITCHBOARD_WAIT_FOR_MANAGER", "0s")],
    )
    .await;
    assert_eq!(unreachable.code, Some(3), "{unreachable:?}");
    assert!(
        unreachable.stderr.starts_with("error: cannot reach the manager at "),
        "{unreachable:?}"
    );
    app.stop().await.unwrap();
}

#[tokio::test]
async fn keys_round_trip_in_both_output_modes() {
    let app = spawn_app().await;
    let created = cli(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "deployer",
            "--account",
            "acme",
            "--org",
            "eng",
            "--permission",
            "pipelines:execute",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(created["name"], "deployer");
    assert_eq!(
        created["permissions"],
        serde_json::json!(["delegates:view", "pipelines:execute"])
    );
    let secret = created["key"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("sbk_"), "{created}");
    let id = id_of(&created);

    // The new key works: it lists itself through the CLI, and never shows a secret.
    let listed = run_with(&app.url(""), &["keys", "list"], &[("SWITCHBOARD_KEY", secret.as_str())]).await;
    let out = listed.ok();
    let line = out.lines().find(|l| l.starts_with(&id)).expect("the key is listed");
    assert!(
        line.contains("deployer") && line.contains("acme/eng") && line.contains("pipelines:execute"),
        "{line}"
    );
    assert!(!out.contains(&secret), "no secrets in lists");

    let revoked = cli(&app, &["--output", "json", "keys", "revoke", &id]).await.json();
    assert!(revoked["revoked_at"].is_string(), "{revoked}");
    let refused = run_with(&app.url(""), &["keys", "list"], &[("SWITCHBOARD_KEY", secret.as_str())]).await;
    assert_eq!(refused.code, Some(1), "a revoked key is refused: {}", refused.stderr);
    let bad = cli(
        &app,
        &[
            "keys",
            "create",
            "--name",
            "x",
            "--account",
            "acme",
            "--permission",
            "root",
        ],
    )
    .await;
    assert_eq!(bad.code, Some(2), "an unknown permission is a usage error");
}

#[tokio::test]
async fn quiet_creates_print_only_the_secret_and_submit_wait_exits_4_unless_succeeded() {
    let app = spawn_app().await;
    let token = cli(
        &app,
        &["tokens", "create", "--name", "q", "--account", "acme", "--quiet"],
    )
    .await;
    let secret = token.ok().trim();
    assert!(
        secret.starts_with("sbd_") && !secret.contains(char::is_whitespace),
        "{token:?}"
    );
    let key = cli(&app, &["keys", "create", "--name", "q", "--account", "acme", "-q"]).await;
    let key_secret = key.ok().trim().to_owned();
    assert!(key_secret.starts_with("sbk_"), "{key:?}");
    // The printed secret is the real one.
    assert_eq!(app.get("/api/v1/status", Some(&key_secret)).await.status(), 200);

    // No delegate could ever take it: it fails at once, and --wait says so with exit 4.
    let failed = cli(
        &app,
        &["tasks", "submit", "--account", "acme", "--type", "echo", "--wait"],
    )
    .await;
    assert_eq!(failed.code, Some(4), "{failed:?}");
    assert!(failed.stdout.trim_end().ends_with("failed"), "{failed:?}");
    let json = cli(
        &app,
        &[
            "tasks",
            "submit",
            "--account",
            "acme",
            "--type",
            "echo",
            "--wait",
            "--output",
            "json",
        ],
    )
    .await;
    assert_eq!(json.code, Some(4), "{json:?}");
    let last: Value = serde_json::from_str(json.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(last["state"], "failed");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn secrets_round_trip_without_their_values_and_a_task_log_prints_as_text() {
    let app = super::support::spawn_app_with(|s| {
        s.secret_key_file = Some(
            switchboard_server::sealing::SecretKeys::parse(
                "0f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0",
            )
            .unwrap(),
        );
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let value_file = dir.path().join("value");
    std::fs::write(&value_file, "cli-secret-5Rk8\n").unwrap();
    let path = value_file.display().to_string();
    let args = [
        "secrets",
        "create",
        "--name",
        "db",
        "--account",
        "acme",
        "--value-file",
        &path,
    ];
    let created = cli(&app, &[&args[..], &["--output", "json"]].concat()).await;
    let created = created.json();
    assert_eq!(
        (created["kind"].clone(), created["version"].clone()),
        (json!("value"), json!(1))
    );
    assert!(!created.to_string().contains("cli-secret"), "{created}");
    let id = id_of(&created);
    let table = cli(&app, &["secrets", "list"]).await;
    assert!(table.ok().contains("db") && table.ok().contains("value"), "{table:?}");
    assert!(!table.ok().contains("cli-secret"), "{table:?}");
    let replaced = cli(
        &app,
        &[
            "secrets",
            "replace",
            &id,
            "--reference",
            "env:DB_PASSWORD",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    assert_eq!(
        (replaced["version"].clone(), replaced["reference"].clone()),
        (json!(2), json!("env:DB_PASSWORD"))
    );
    // Bad references and unreadable files are usage errors (2); both or neither, clap's.
    let bad = cli(&app, &["secrets", "replace", &id, "--reference", "no-scheme"]).await;
    assert_eq!(bad.code, Some(2), "{bad:?}");
    let missing = cli(&app, &["secrets", "replace", &id, "--value-file", "/no/such/file"]).await;
    assert_eq!(missing.code, Some(2), "{missing:?}");
    assert!(missing.stderr.contains("/no/such/file"), "{missing:?}");
    assert_eq!(cli(&app, &["secrets", "replace", &id]).await.code, Some(2));
    assert!(
        cli(&app, &["secrets", "delete", &id])
            .await
            .ok()
            .contains("deleted secret")
    );
    assert_eq!(cli(&app, &["secrets", "get", &id]).await.code, Some(1));

    // A task's log, as the delegate appended it.
    let task = cli(
        &app,
        &[
            "tasks",
            "submit",
            "--account",
            "acme",
            "--type",
            "echo",
            "--wait-for-delegate",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    let task_id = id_of(&task);
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let request: RegisterRequest =
        serde_json::from_value(json!({"name": "d", "hostname": "h", "version": "1.0.0", "task_types": ["echo"]}))
            .unwrap();
    let me = register(&app.client, &app.url(""), token["token"].as_str().unwrap(), &request)
        .await
        .unwrap();
    let claimed = app
        .state
        .store()
        .claim_task(task_id.parse().unwrap(), me.instance_id, chrono::Utc::now())
        .await
        .unwrap();
    assert!(matches!(claimed, switchboard_store::Claim::Claimed(_)));
    let post = |what: &str, body: Value| {
        let url = app.url(&format!("/delegate/v1/tasks/{task_id}/{what}"));
        let session = me.session_token.expose().to_owned();
        let client = app.client.clone();
        async move {
            client
                .post(url)
                .bearer_auth(session)
                .json(&body)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert!(post("acquire", json!({"attempt": 1})).await.is_success());
    assert!(
        post("logs", json!({"attempt": 1, "offset": 0, "text": "step one\n"}))
            .await
            .is_success()
    );
    assert!(
        post("logs", json!({"attempt": 1, "offset": 9, "text": "step two\n"}))
            .await
            .is_success()
    );
    assert!(
        post("result", json!({"attempt": 1, "outcome": "succeeded"}))
            .await
            .is_success()
    );
    assert_eq!(
        cli(&app, &["tasks", "logs", &task_id]).await.ok(),
        "step one\nstep two\n"
    );
    assert_eq!(
        cli(&app, &["tasks", "logs", &task_id, "--follow"]).await.ok(),
        "step one\nstep two\n"
    );
    let lines = cli(&app, &["tasks", "logs", &task_id, "--output", "json"]).await;
    let chunks: Vec<Value> = lines.ok().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(chunks.len(), 2);
    assert_eq!(chunks[1]["offset"], 9);
}

#[tokio::test]
async fn tokens_install_prints_the_file_alone_on_stdout_and_the_steps_on_stderr() {
    let app = spawn_app().await;
    let token = cli(
        &app,
        &[
            "tokens",
            "create",
            "--name",
            "ci",
            "--account",
            "acme",
            "--output",
            "json",
        ],
    )
    .await
    .json();
    let id = id_of(&token);
    let run = cli(
        &app,
        &["tokens", "install", &id, "--format", "kubernetes", "--replicas", "2"],
    )
    .await;
    let file: Value = serde_json::from_str(run.ok()).expect("stdout is the file alone");
    assert_eq!(file["items"][0]["spec"]["replicas"], 2);
    assert!(run.stderr.contains("kubectl create secret generic ci-token"), "{run:?}");
    let minted = cli(&app, &["tokens", "install", &id, "--format", "systemd", "--new-token"]).await;
    assert!(minted.ok().starts_with("[Unit]"), "{minted:?}");
    assert!(minted.stderr.contains("a new token was minted"), "{minted:?}");
    let bad = cli(&app, &["tokens", "install", &id, "--format", "helm"]).await;
    assert_eq!(bad.code, Some(1), "{bad:?}");
}
