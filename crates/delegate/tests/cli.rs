//! The `switchboard-delegate` binary as an operator runs it: settings from flags and the
//! environment, exit codes, the `registered as` line, SIGTERM, and `delegate.log`.
//!
//! The manager here is a few lines of blocking HTTP that answer registration; the socket
//! and the event handling are covered by the library's own tests.

// Helpers outside `#[test]` functions are test code too; clippy.toml's test allowance
// does not reach them.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard-delegate");
const TOKEN: &str = "sbd_very_secret_token";

/// Answers every HTTP request with `status_line` and `body`, on a thread.
fn manager(status_line: &'static str, content_type: &'static str, body: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut data = Vec::new();
            let mut buf = [0u8; 4096];
            // Read the whole request (head, then the body by its length) before answering.
            let head_end = loop {
                if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
                    break i + 4;
                }
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            };
            let head = String::from_utf8_lossy(&data[..head_end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            while data.len() < head_end + length {
                match stream.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                }
            }
            let _ = write!(
                stream,
                "HTTP/1.1 {status_line}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

fn delegate(manager: &str, log_dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("SWITCHBOARD_MANAGER", manager)
        .env("SWITCHBOARD_TOKEN", TOKEN)
        .env("SWITCHBOARD_NAME", "edge")
        .args(["--log-dir", log_dir.to_str().unwrap()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn bad_settings_print_one_error_line_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["--task-types", "echo,shell"][..],
        &["--capacity", "0"][..],
        &["--manager", "not a url"][..],
        &["--project", "web"][..],
    ] {
        let out = delegate("http://127.0.0.1:9", dir.path()).args(args).output().unwrap();
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{args:?}: {stderr}");
        assert!(stderr.starts_with("error: "), "{args:?}: {stderr}");
        assert!(!stderr.contains(TOKEN));
    }
}

#[test]
fn settings_come_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let out = delegate("http://127.0.0.1:9", dir.path())
        .env("SWITCHBOARD_TASK_TYPES", "echo,deploy")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("deploy"), "{stderr}");

    let out = delegate("http://127.0.0.1:9", dir.path())
        .env("SWITCHBOARD_TASK_TYPES", "echo,shell")
        .env("SWITCHBOARD_ENABLE_SHELL", "no")
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--enable-shell"), "{stderr}");
}

#[test]
fn a_refused_registration_exits_1_with_the_managers_detail() {
    let dir = tempfile::tempdir().unwrap();
    let problem = serde_json::json!({
        "type": "https://switchboard.dev/problems/unauthorized",
        "title": "Unauthorized",
        "status": 401,
        "detail": "unknown delegate token; create one with POST /api/v1/delegate-tokens",
    });
    let addr = manager("401 Unauthorized", "application/problem+json", problem.to_string());
    let out = delegate(&format!("http://{addr}"), dir.path()).output().unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("unknown delegate token; create one"), "{stderr}");
    let log = std::fs::read_to_string(dir.path().join("delegate.log")).unwrap();
    assert!(log.contains("unknown delegate token"), "{log}");
    assert!(
        !stderr.contains(TOKEN) && !log.contains(TOKEN),
        "the token must never be logged"
    );
}

#[test]
fn a_registered_delegate_prints_its_line_and_stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // The socket URL points nowhere: the session keeps reconnecting, which is fine here.
    let dead = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let instance = "0190f5a4-7c1e-7b2a-9d3e-5f6a7b8c9d0e";
    let registered = serde_json::json!({
        "instance_id": instance,
        "group_id": "0190f5a4-7c1e-7b2a-9d3e-5f6a7b8c9d0f",
        "account": "acme",
        "org": "eng",
        "project": "web",
        "session_token": "session",
        "heartbeat_interval_ms": 60000,
        "stream_url": format!("ws://{dead}/delegate/v1/stream"),
    });
    let addr = manager("200 OK", "application/json", registered.to_string());
    let mut child = delegate(&format!("http://{addr}"), dir.path())
        .args(["--org", "eng", "--project", "web"])
        // Nobody reads stderr here; a full pipe must not block the delegate.
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // Wait for the line on a thread, so a delegate that never prints fails the test
    // instead of hanging it.
    let stdout = child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = line_tx.send(line);
    });
    let line = line_rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
    assert_eq!(
        line.trim_end(),
        format!("switchboard-delegate registered as {instance} in acme/eng/web (group edge)")
    );

    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let pid = child.id().to_string();
    let (exit_tx, exit_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = exit_tx.send(child.wait().map(|s| s.code()));
    });
    let code = exit_rx.recv_timeout(Duration::from_secs(30));
    if code.is_err() {
        let _ = Command::new("kill").args(["-KILL", &pid]).status();
    }
    assert_eq!(
        code.unwrap().unwrap(),
        Some(0),
        "SIGTERM stops the delegate with code 0"
    );
    let log = std::fs::read_to_string(dir.path().join("delegate.log")).unwrap();
    assert!(log.contains("registered"), "{log}");
    assert!(!log.contains(TOKEN), "the token must never be logged");
}

/// The real binary against the real manager.
#[path = "cli/with_manager.rs"]
mod with_manager;

/// The same over HTTPS and WSS, with `--ca-cert`.
#[path = "cli/tls.rs"]
mod tls;

/// Replicas, a load balancer and reference delegates under injected faults (PostgreSQL).
#[path = "cli/faults.rs"]
mod faults;
