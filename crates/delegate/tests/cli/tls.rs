//! The reference delegate against a manager serving HTTPS and WSS with a certificate from
//! a CA made in the test: with `--ca-cert` it registers, connects, passes an `https://`
//! capability check and runs tasks (one an `http_check` of an `https://` URL); without
//! it, it cannot register and says why.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::json;
use switchboard_client::Tls;
use switchboard_domain::{TaskId, TaskState};
use tempfile::TempDir;

use super::with_manager::{Manager, delegate, eventually, manager_with};

/// A CA, and a certificate it signed for `localhost` and `127.0.0.1`, as PEM files.
struct Pki {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    _dir: TempDir,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let dir = tempfile::tempdir().unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.distinguished_name.push(DnType::CommonName, "Switchboard test CA");
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
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

async fn tls_manager(pki: &Pki) -> Manager {
    let tls = Tls::with_ca_file(&pki.ca).unwrap();
    let m = manager_with(
        |s| {
            s.tls_cert = Some(pki.cert.clone());
            s.tls_key = Some(pki.key.clone());
        },
        &tls,
    )
    .await;
    assert!(m.url.starts_with("https://"), "{}", m.url);
    m
}

/// Waits for the task to end; answers its state and result.
async fn ended(m: &Manager, submitted: &serde_json::Value) -> (TaskState, Option<serde_json::Value>) {
    let id = submitted["id"]
        .as_str()
        .unwrap_or_else(|| panic!("not submitted: {submitted}"));
    let task = TaskId(id.parse().unwrap());
    let store = m.state.store();
    eventually(|| async { store.get_task(task).await.unwrap().state.is_terminal() }).await;
    let done = store.get_task(task).await.unwrap();
    (done.state, done.result)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_ca_cert_a_reference_delegate_runs_tasks_over_https_and_wss_and_checks_https_urls() {
    let pki = pki();
    let m = tls_manager(&pki).await;
    let token = m.token("t", "acme").await;
    let ca = pki.ca.to_str().unwrap();
    let d = delegate(
        &m,
        &token,
        &["--ca-cert", ca, "--name", "d", "--hostname", "tls-worker"],
    )
    .await;
    eventually(|| async { m.instance(d.id).await["state"] == "connected" }).await;

    let echo = m
        .submit(&json!({"account": "acme", "type": "echo", "payload": {"say": "over wss"}}))
        .await;
    assert_eq!(
        ended(&m, &echo).await,
        (TaskState::Succeeded, Some(json!({"say": "over wss"})))
    );

    // The manager itself is the https:// service: the delegate checks it with the CA.
    let healthz = format!("{}/healthz", m.url);
    let checked = m
        .submit(&json!({
            "account": "acme", "type": "echo", "payload": {},
            "capabilities": [{"kind": "http", "url": healthz}],
        }))
        .await;
    // Answered before the delegate is asked; its answer then places the task on it.
    assert_eq!(
        ended(&m, &checked).await.0,
        TaskState::Succeeded,
        "the check passed: {checked}"
    );
    let checked_id = TaskId(checked["id"].as_str().unwrap().parse().unwrap());
    let attempts = m.state.store().task_attempts(checked_id).await.unwrap();
    assert_eq!(attempts.iter().map(|a| a.instance_id).collect::<Vec<_>>(), [d.id]);

    let probe = m
        .submit(&json!({"account": "acme", "type": "http_check", "payload": {"url": healthz}}))
        .await;
    let (state, result) = ended(&m, &probe).await;
    assert_eq!(state, TaskState::Succeeded, "{result:?}");
    assert_eq!(result.unwrap()["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_ca_a_reference_delegate_cannot_register_and_says_why() {
    let pki = pki();
    let m = tls_manager(&pki).await;
    let token = m.token("t", "acme").await;
    let logs = tempfile::tempdir().unwrap();
    let mut child = Command::new(super::BIN)
        .args(["--manager", &m.url, "--name", "d", "--log-dir"])
        .arg(logs.path())
        .env_clear()
        .env("SWITCHBOARD_TOKEN", &token)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let log = logs.path().join("delegate.log");
    eventually(|| async { std::fs::read_to_string(&log).is_ok_and(|l| l.contains("certificate is not trusted")) })
        .await;
    let _ = child.kill();
    let _ = child.wait();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("--ca-cert"), "the warning says what to do: {text}");
    assert!(!text.contains(&token), "the token is never logged");
    assert!(m.delegates().await["items"].as_array().unwrap().is_empty());
}
