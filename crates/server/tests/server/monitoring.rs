//! Monitoring as platform teams run it (issue 17): the alerting and recording rules of
//! `deploy/prometheus` and the Grafana dashboard of `deploy/grafana` name only metrics the
//! manager exports, and a real Prometheus server scraping a real manager fires the alert
//! for a task left waiting.
//!
//! The Prometheus test needs the `prometheus` program (Debian's package, which `.ci/run`
//! installs); without it the test says so and is skipped, except under `CI=true`, where
//! it fails.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::dispatch::submit;
use super::support::{ADMIN_KEY, TestApp, spawn_app};

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy").join(path)
}

/// Every `switchboard_*` and `switchboard:*` name in `text`.
fn names(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(at) = text[i..].find("switchboard") {
        let start = i + at;
        let mut end = start + "switchboard".len();
        let boundary = start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_');
        if boundary && matches!(bytes.get(end), Some(b'_' | b':')) {
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || matches!(bytes[end], b'_' | b':')) {
                end += 1;
            }
            found.insert(text[start..end].trim_end_matches(':').to_owned());
        }
        i = end;
    }
    found
}

/// The metric names of the samples in an exposition.
fn exported(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// A manager with a declared pool (so the pool gauges exist) and its exposition.
async fn manager_with_a_pool() -> (TestApp, String) {
    let app = spawn_app().await;
    app.post(
        "/api/v1/delegates",
        Some(ADMIN_KEY),
        &json!({"name": "k8s-prod", "account": "acme", "tags": ["gpu"]}),
    )
    .await;
    let scraped = app.get("/metrics", None).await.text().await.unwrap();
    (app, scraped)
}

#[tokio::test]
async fn every_expression_of_the_rules_and_the_dashboard_names_a_metric_the_manager_exports() {
    let (app, scraped) = manager_with_a_pool().await;
    let exported = exported(&scraped);
    let rules = std::fs::read_to_string(deploy("prometheus/switchboard.rules.yml")).unwrap();
    let recorded: BTreeSet<String> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- record:"))
        .map(|r| r.trim().to_owned())
        .collect();
    assert!(recorded.len() >= 5, "{recorded:?}");

    let dashboard: Value =
        serde_json::from_str(&std::fs::read_to_string(deploy("grafana/switchboard.json")).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            exprs.push(target["expr"].as_str().unwrap().to_owned());
        }
    }
    assert!(exprs.len() >= 12, "{exprs:?}");

    for (source, text) in [("the rules", rules.clone()), ("the dashboard", exprs.join("\n"))] {
        let used = names(&text);
        assert!(!used.is_empty(), "{source} name no metric");
        for name in used {
            if name.contains(':') {
                assert!(recorded.contains(&name), "{source} use {name}, which no rule records");
            } else {
                assert!(
                    exported.contains(&name),
                    "{source} use {name}, which the manager does not export:\n{scraped}"
                );
            }
        }
    }
    app.stop().await.unwrap();
}

/// A `prometheus` server, killed when dropped.
struct Prometheus {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Prometheus scraping `target` every second with `rules`; `None` (after saying
/// so) when the program is missing and this is not CI.
fn prometheus(target: &str, rules: &str) -> Option<Prometheus> {
    let installed = Command::new("prometheus")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        let hint = "install Debian's prometheus package (apt-get install prometheus)";
        assert!(
            !std::env::var("CI").is_ok_and(|v| v == "true"),
            "CI=true but the prometheus program is missing: {hint}"
        );
        eprintln!("\n*** the Prometheus end-to-end test is SKIPPED: no prometheus program; {hint} ***\n");
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchboard.rules.yml"), rules).unwrap();
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - switchboard.rules.yml\n\
         scrape_configs:\n  - job_name: switchboard\n    static_configs:\n      - targets: ['{target}']\n"
    );
    std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", dir.path().join("prometheus.yml").display()))
        .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    Some(Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scraping_a_manager_fires_the_alert_for_a_task_left_waiting() {
    let (app, _) = manager_with_a_pool().await;
    // The shipped rules, with the waiting alert's 10 minutes (and its 5 minutes of `for`)
    // cut to a second each, so that a test can see it fire: the expression is the one
    // shipped.
    let shipped = std::fs::read_to_string(deploy("prometheus/switchboard.rules.yml")).unwrap();
    let quick = shipped.replace(
        "expr: max(switchboard_queue_oldest_seconds) > 600\n        for: 5m",
        "expr: max(switchboard_queue_oldest_seconds) > 1\n        for: 1s",
    );
    assert_ne!(quick, shipped, "the waiting alert is where the test expects it");
    let Some(server) = prometheus(&app.address.to_string(), &quick) else {
        return;
    };
    // A task nobody can take, which waits because it asked to.
    let (_, task) = submit(
        &app,
        json!({"account": "acme", "type": "echo", "selectors": ["tpu"], "wait_for_delegate": true}),
    )
    .await;
    assert_eq!(task["state"], "queued", "{task}");

    let http = reqwest::Client::new();
    let started = Instant::now();
    let firing = loop {
        let alerts: Option<Value> = match http.get(format!("{}/api/v1/alerts", server.url)).send().await {
            Ok(answer) => answer.json().await.ok(),
            Err(_) => None, // still starting
        };
        let found = alerts.as_ref().and_then(|a| {
            a["data"]["alerts"].as_array()?.iter().find(|alert| {
                alert["labels"]["alertname"] == "SwitchboardTasksWaitingTooLong" && alert["state"] == "firing"
            })
        });
        if let Some(alert) = found {
            break alert.clone();
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "the alert did not fire; Prometheus says {alerts:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    assert_eq!(firing["labels"]["severity"], "warning", "{firing}");
    // And the series it fired on is the manager's own.
    let query = http
        .get(format!("{}/api/v1/query", server.url))
        .query(&[("query", "switchboard_queue_waiting_tasks")])
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(query["data"]["result"][0]["value"][1], "1", "{query}");
    drop(server);
    app.stop().await.unwrap();
}

#[test]
fn names_finds_metrics_and_recorded_series_but_not_words() {
    let found =
        names("rate(switchboard_tasks_submitted_total[5m]) / switchboard:queue_time:p95 and `switchboard queue`");
    assert_eq!(
        found,
        BTreeSet::from([
            "switchboard_tasks_submitted_total".to_owned(),
            "switchboard:queue_time:p95".to_owned()
        ])
    );
}
