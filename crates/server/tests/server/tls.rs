//! HTTPS and WSS served by the manager itself, with a CA and a certificate for 127.0.0.1
//! made in the test: a client-library delegate registers and runs a task over them; plain
//! HTTP, and clients that do not trust the CA, are refused; the CLI works with
//! `--ca-cert`; the binary says `https://` and refuses unusable certificate settings.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_client::{Client, ClientError, Tls};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, Registered, TaskResult};
use switchboard_protocol::socket::ServerMessage;
use tempfile::TempDir;

use super::support::{ADMIN_KEY, Binary, PATIENCE, TestApp, run_to_exit, spawn_app_with};

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1`, as PEM files.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
    _dir: TempDir,
}

impl Pki {
    pub fn generate() -> Pki {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
        let dir = tempfile::tempdir().unwrap();
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca.distinguished_name.push(DnType::CommonName, "Switchboard test CA");
        let ca = ca.self_signed(&ca_key).unwrap();

        let key = KeyPair::generate().unwrap();
        let mut leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "switchboard test manager");
        let leaf = leaf.signed_by(&key, &ca, &ca_key).unwrap();

        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("ca.pem"), ca.pem()).unwrap();
        std::fs::write(path("cert.pem"), leaf.pem()).unwrap();
        std::fs::write(path("key.pem"), key.serialize_pem()).unwrap();
        Pki {
            ca: path("ca.pem"),
            cert: path("cert.pem"),
            key: path("key.pem"),
            _dir: dir,
        }
    }

    /// Trusts the public roots and this CA.
    pub fn tls(&self) -> Tls {
        Tls::with_ca_file(&self.ca).unwrap()
    }
}

/// The manager over TLS, its client trusting the CA.
pub(super) async fn spawn_tls_app(pki: &Pki) -> TestApp {
    let mut app = spawn_app_with(|s| {
        s.tls_cert = Some(pki.cert.clone());
        s.tls_key = Some(pki.key.clone());
    })
    .await;
    assert_eq!(app.scheme, "https");
    app.client = pki.tls().http_client().build().unwrap();
    app
}

async fn token(app: &TestApp) -> String {
    let created: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "edge", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    created["token"].as_str().unwrap().to_owned()
}

async fn registered(app: &TestApp) -> Registered {
    let request: RegisterRequest = serde_json::from_value(
        json!({"name": "edge", "hostname": "tls-box", "version": "1.0.0", "task_types": ["echo"]}),
    )
    .unwrap();
    register(&app.client, &app.url(""), &token(app).await, &request)
        .await
        .expect("registration over HTTPS")
}

fn quick() -> Backoff {
    Backoff {
        initial: Duration::from_millis(50),
        max: Duration::from_millis(500),
    }
}

async fn next_event(session: &mut Session) -> Event {
    tokio::time::timeout(PATIENCE, session.events.recv())
        .await
        .expect("an event in time")
        .expect("the session is alive")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_registers_and_runs_a_task_over_https_and_wss() {
    let pki = Pki::generate();
    let app = spawn_tls_app(&pki).await;
    let me = registered(&app).await;
    assert_eq!(
        me.stream_url,
        format!("wss://{}/delegate/v1/stream", app.address),
        "a registration over TLS gets a socket over TLS"
    );
    let mut session = Session::start_with_tls(me.clone(), quick(), pki.tls());
    assert_eq!(next_event(&mut session).await, Event::Connected);

    let submitted: Value = app
        .post(
            "/api/v1/tasks",
            Some(ADMIN_KEY),
            &json!({"account": "acme", "type": "echo", "payload": {"say": "over tls"}}),
        )
        .await
        .json()
        .await
        .unwrap();
    let (task_id, attempt) = loop {
        if let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = next_event(&mut session).await {
            break (task_id, attempt);
        }
    };
    assert_eq!(task_id.to_string(), submitted["id"].as_str().unwrap());

    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &me.session_token);
    let acquired = tasks.acquire(task_id, attempt).await.expect("acquired over HTTPS");
    let report = TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        result: Some(acquired.payload),
        error: None,
        error_code: None,
        retryable: None,
    };
    tasks.result(task_id, &report).await.expect("reported over HTTPS");

    let task: Value = app
        .get(&format!("/api/v1/tasks/{task_id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["result"], json!({"say": "over tls"}), "{task}");
    session.stop();
    app.stop().await.unwrap();
}

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_answer() {
    let pki = Pki::generate();
    let app = spawn_tls_app(&pki).await;
    let plain = reqwest::Client::new()
        .get(format!("http://{}/healthz", app.address))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
    // The port still serves HTTPS afterwards.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn clients_that_do_not_trust_the_ca_are_refused_with_a_certificate_error() {
    let pki = Pki::generate();
    let app = spawn_tls_app(&pki).await;

    let untrusting = Client::new(app.url(""), Some(ADMIN_KEY.to_owned())).unwrap();
    match untrusting.status().await {
        Err(ClientError::Transport(e)) => {
            assert!(switchboard_client::tls::is_certificate_error(&e), "{e:?}")
        }
        other => panic!("expected a certificate error, got {other:?}"),
    }
    let trusting = Client::with_tls(app.url(""), Some(ADMIN_KEY.to_owned()), &pki.tls()).unwrap();
    assert!(trusting.status().await.is_ok());

    // The socket too: registered with a trusting client, connected without the CA.
    let me = registered(&app).await;
    let mut session = Session::start(me, quick());
    match next_event(&mut session).await {
        Event::Disconnected { reason } => assert!(reason.contains("certificate"), "{reason}"),
        other => panic!("expected the socket to fail its handshake, got {other:?}"),
    }
    session.stop();
}

/// Runs `switchboard --url <url> args...` with only `env`; answers (code, stdout, stderr).
async fn cli(url: &str, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchboard"));
    command
        .arg("--url")
        .arg(url)
        .args(args)
        .env_clear()
        .envs(env.iter().copied());
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    let text = |b: Vec<u8>| String::from_utf8(b).unwrap();
    (output.status.code(), text(output.stdout), text(output.stderr))
}

#[tokio::test]
async fn the_cli_trusts_the_ca_given_with_ca_cert() {
    let pki = Pki::generate();
    let app = spawn_tls_app(&pki).await;
    let url = app.url("");
    let ca = pki.ca.to_str().unwrap();
    let key = [("SWITCHBOARD_KEY", ADMIN_KEY)];

    let (code, stdout, stderr) = cli(&url, &["--ca-cert", ca, "--output", "json", "tokens", "list"], &key).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        serde_json::from_str::<Value>(&stdout).unwrap()["items"].is_array(),
        "{stdout}"
    );

    let env = [("SWITCHBOARD_KEY", ADMIN_KEY), ("SWITCHBOARD_CA_CERT", ca)];
    let (code, _, stderr) = cli(&url, &["tokens", "list"], &env).await;
    assert_eq!(code, Some(0), "the CA from the environment: {stderr}");

    let (code, _, stderr) = cli(&url, &["tokens", "list"], &key).await;
    assert_eq!(code, Some(3), "{stderr}");
    assert!(stderr.contains("--ca-cert"), "the refusal suggests --ca-cert: {stderr}");

    let (code, _, stderr) = cli(&url, &["--ca-cert", "/nonexistent/ca.pem", "tokens", "list"], &key).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.starts_with("error: ") && stderr.contains("/nonexistent/ca.pem"),
        "{stderr}"
    );
}

#[test]
fn the_binary_serves_https_and_says_so() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--listen",
        "127.0.0.1:0",
        "--tls-cert",
        pki.cert.to_str().unwrap(),
        "--tls-key",
        pki.key.to_str().unwrap(),
    ];
    let server = Binary::start(dir.path(), &args);
    assert!(
        server.banner.starts_with("switchboard listening on https://127.0.0.1:"),
        "{}",
        server.banner
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let healthy = runtime.block_on(async {
        let client = pki.tls().http_client().build().unwrap();
        client
            .get(format!("https://{}/healthz", server.address))
            .send()
            .await
            .unwrap()
            .status()
    });
    assert_eq!(healthy, 200);
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn unusable_certificate_settings_stop_the_binary_with_exit_code_2() {
    let pki = Pki::generate();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (pki.cert.to_str().unwrap(), pki.key.to_str().unwrap());
    let cases: [(&[&str], &str); 3] = [
        (&["--tls-cert", cert], "tls_cert is set but tls_key is not"),
        (
            &["--tls-cert", "/nonexistent/cert.pem", "--tls-key", key],
            "cannot read tls_cert /nonexistent/cert.pem",
        ),
        // The files swapped: the key file holds no certificate.
        (&["--tls-cert", key, "--tls-key", cert], "holds no PEM certificate"),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        args.extend(["--listen", "127.0.0.1:0"]);
        let (status, stderr) = run_to_exit(dir.path(), &args, &[]);
        assert_eq!(status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(
            stderr.starts_with("error: ") && stderr.contains(expected),
            "{args:?}: {stderr}"
        );
    }
}
