//! The smoke form of the tool, end to end: the real `switchboard-bench` binary starts the
//! real manager (SQLite, and PostgreSQL when `DATABASE_URL` is set; under `CI=true`
//! PostgreSQL is required), runs every scenario briefly, and writes its JSON. Its figures
//! are not asserted, only that what it submitted was completed and that it wrote them.

use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;

/// Longer than any smoke run takes, short of a hang.
const PATIENCE: Duration = Duration::from_secs(900);

/// `DATABASE_URL` when PostgreSQL should be part of the run: required under `CI=true`,
/// else skipped (with a notice) when unset or unreachable.
fn postgres_url() -> Option<String> {
    let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
    let skip = |why: &str| {
        assert!(!in_ci, "CI=true requires the PostgreSQL smoke run, but {why}");
        eprintln!("\n*** switchboard-bench smoke on PostgreSQL SKIPPED: {why}. Set DATABASE_URL to run it. ***\n");
        None
    };
    let Ok(url) = std::env::var("DATABASE_URL") else {
        return skip("DATABASE_URL is not set");
    };
    // host:port of postgres://user@host:port/db, enough to tell whether anything listens.
    let authority = url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .map(|auth| auth.rsplit('@').next().unwrap_or(auth))
        .unwrap_or_default();
    let address = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    let reachable = address
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .is_some_and(|a| TcpStream::connect_timeout(&a, Duration::from_secs(5)).is_ok());
    if reachable {
        Some(url)
    } else {
        skip(&format!("nothing answers at {address}"))
    }
}

fn run(out: &Path, database_url: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_switchboard-bench"));
    command
        .arg("smoke")
        .arg("--out")
        .arg(out)
        .env_remove("DATABASE_URL")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(url) = database_url {
        command.env("DATABASE_URL", url);
    }
    let child = command.spawn().expect("switchboard-bench starts");
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(PATIENCE) {
        Ok(output) => output.expect("switchboard-bench is waited for"),
        Err(_) => {
            let _ = Command::new("kill").args(["-TERM", &pid.to_string()]).status();
            panic!("switchboard-bench smoke did not finish within {PATIENCE:?}");
        }
    }
}

fn json(out: &Path, name: &str) -> Value {
    let path = out.join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{} was not written: {e}", path.display()));
    let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
    for key in ["scenario", "store", "machine", "settings", "reference", "result"] {
        assert!(value.get(key).is_some(), "{name} has no {key:?}: {value}");
    }
    value
}

/// Every step of a load scenario completed what it submitted.
fn assert_all_completed(name: &str, steps: &Value) {
    let steps = steps.as_array().unwrap_or_else(|| panic!("{name}: no steps"));
    assert!(!steps.is_empty(), "{name}: no steps");
    for step in steps {
        let count = |key: &str| step[key].as_u64().unwrap_or_else(|| panic!("{name}: no {key}: {step}"));
        let submitted = count("submitted");
        assert!(submitted > 0, "{name}: nothing submitted: {step}");
        assert_eq!(count("completed"), submitted, "{name}: {step}");
        assert_eq!(count("submit_errors"), 0, "{name}: {step}");
    }
}

#[test]
fn the_smoke_run_completes_every_task_it_submits_and_writes_every_scenarios_json() {
    let out = tempfile::tempdir().unwrap();
    let postgres = postgres_url();
    let output = run(out.path(), postgres.as_deref());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "smoke failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    assert!(stdout.contains("smoke: every scenario ran end to end"), "{stdout}");

    let mut stores = vec!["sqlite"];
    if postgres.is_some() {
        stores.push("postgres");
    }
    for store in stores {
        let f1 = json(out.path(), &format!("f1-{store}.json"));
        assert_eq!(f1["scenario"], "f1");
        assert_eq!(f1["store"], store);
        assert_all_completed("f1", &f1["steps"]);
        assert!(f1["result"]["best_rate"].is_number(), "{f1}");

        let f2 = json(out.path(), &format!("f2-{store}.json"));
        assert_all_completed("f2", &f2["points"]);
        for point in f2["result"].as_array().unwrap() {
            for key in ["notify", "acquire"] {
                for p in ["p50_ms", "p99_ms", "p999_ms"] {
                    assert!(point[key][p].is_number(), "f2 {key}.{p}: {point}");
                }
            }
        }

        let f3 = json(out.path(), &format!("f3-{store}.json"));
        for point in f3["points"].as_array().unwrap() {
            assert_eq!(point["connected"], point["sockets"], "{point}");
            assert!(point["manager_rss_kib"].as_u64().unwrap() > 0, "{point}");
        }

        let f4 = json(out.path(), &format!("f4-{store}.json"));
        for point in f4["points"].as_array().unwrap() {
            assert!(point["heartbeats"].as_f64().unwrap() > 0.0, "{point}");
            assert!(point["store_writes_per_heartbeat"].is_number(), "{point}");
        }

        let q1 = json(out.path(), &format!("q1-{store}.json"));
        for point in q1["points"].as_array().unwrap() {
            assert_eq!(point["counted"], point["waiting"], "{point}");
            assert!(point["summary_p50_ms"].as_f64().unwrap() > 0.0, "{point}");
        }

        for chart in [
            format!("f1-{store}-latency.svg"),
            format!("f2-{store}-latency.svg"),
            format!("f3-{store}-memory.svg"),
        ] {
            assert!(out.path().join(&chart).is_file(), "{chart} was not drawn");
        }
        if store == "postgres" {
            assert!(f1["reference"]["insert_tps"].as_f64().unwrap() > 0.0, "{f1}");
        }
    }
}
