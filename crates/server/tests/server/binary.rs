//! The real `switchboard` binary: starts with nothing configured, stops on SIGTERM, and
//! refuses bad settings with one line naming the problem.

use super::support::{ADMIN_KEY, Binary, http, http_get, run_to_exit};

fn last_line(stderr: &str) -> &str {
    stderr.lines().last().unwrap_or_default()
}

#[test]
fn with_nothing_configured_it_serves_from_sqlite_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();

    let server = Binary::start(dir.path(), &["--listen", "127.0.0.1:0"]);
    assert!(
        server.banner.ends_with("(store: sqlite ./switchboard.db)"),
        "{}",
        server.banner
    );
    assert!(
        dir.path().join("switchboard.db").is_file(),
        "the database file is created"
    );
    assert_eq!(http_get(&server.address, "/healthz").0, 200);
    assert_eq!(http_get(&server.address, "/readyz").0, 200);
    let status = server.terminate();
    assert_eq!(status.code(), Some(0), "SIGTERM is a clean exit: {status}");

    // A restart in the same directory finds the same file, and what was stored in it.
    let env = [("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)];
    let server = Binary::start_with_env(dir.path(), &["--listen", "127.0.0.1:0"], &env);
    let token = r#"{"name": "kept", "account": "acme"}"#;
    let (status, body) = http(
        &server.address,
        "POST",
        "/api/v1/delegate-tokens",
        Some(ADMIN_KEY),
        Some(token),
    );
    assert_eq!(status, 201, "{body}");
    assert_eq!(server.terminate().code(), Some(0));

    let server = Binary::start_with_env(dir.path(), &["--listen", "127.0.0.1:0"], &env);
    assert_eq!(http_get(&server.address, "/readyz").0, 200);
    let (status, body) = http(&server.address, "GET", "/api/v1/delegate-tokens", Some(ADMIN_KEY), None);
    assert_eq!(status, 200);
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        listed["items"][0]["name"], "kept",
        "the token survived two restarts: {listed}"
    );
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn a_fresh_store_gets_an_admin_key_printed_once_and_kept_hashed() {
    let dir = tempfile::tempdir().unwrap();
    let listen = ["--listen", "127.0.0.1:0"];

    let server = Binary::start(dir.path(), &listen);
    let generated = server
        .preamble
        .split_whitespace()
        .find(|word| word.starts_with("sba_"))
        .unwrap_or_else(|| panic!("no generated key in {:?}", server.preamble))
        .to_owned();
    let token = r#"{"name": "first", "account": "acme"}"#;
    let (status, body) = http(
        &server.address,
        "POST",
        "/api/v1/delegate-tokens",
        Some(&generated),
        Some(token),
    );
    assert_eq!(status, 201, "the generated key is an admin key: {body}");
    assert_eq!(server.terminate().code(), Some(0));

    // Only its hash is in the database file.
    let file = std::fs::read(dir.path().join("switchboard.db")).unwrap();
    let clear = generated.as_bytes();
    assert!(
        !file.windows(clear.len()).any(|w| w == clear),
        "the key is stored in clear"
    );

    // The next start prints nothing and accepts the same key.
    let server = Binary::start(dir.path(), &listen);
    assert_eq!(server.preamble, "", "the key is printed once");
    let (status, _) = http(
        &server.address,
        "GET",
        "/api/v1/delegate-tokens",
        Some(&generated),
        None,
    );
    assert_eq!(status, 200);
    assert_eq!(server.terminate().code(), Some(0));

    // A configured admin key replaces it.
    let env = [("SWITCHBOARD_ADMIN_KEY", ADMIN_KEY)];
    let server = Binary::start_with_env(dir.path(), &listen, &env);
    assert_eq!(server.preamble, "");
    let (status, _) = http(
        &server.address,
        "GET",
        "/api/v1/delegate-tokens",
        Some(&generated),
        None,
    );
    assert_eq!(status, 401);
    let (status, _) = http(&server.address, "GET", "/api/v1/delegate-tokens", Some(ADMIN_KEY), None);
    assert_eq!(status, 200);
    assert_eq!(server.terminate().code(), Some(0));
}

#[test]
fn a_second_manager_on_the_same_sqlite_file_is_refused_pointing_at_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let listen = ["--listen", "127.0.0.1:0"];
    let first = Binary::start(dir.path(), &listen);
    let (status, stderr) = run_to_exit(dir.path(), &listen, &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.starts_with("error: ") && line.contains("another manager is using") && line.contains("PostgreSQL"),
        "{line}"
    );
    // The first one is unaffected, and once it is gone the file can be served again.
    assert_eq!(http_get(&first.address, "/readyz").0, 200);
    assert_eq!(first.terminate().code(), Some(0));
    let again = Binary::start(dir.path(), &listen);
    assert_eq!(again.terminate().code(), Some(0));
}

#[test]
fn an_unknown_key_in_the_config_file_is_refused_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("switchboard.toml"), "listn = \"127.0.0.1:0\"\n").unwrap();
    let (status, stderr) = run_to_exit(dir.path(), &["--config", "switchboard.toml"], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.starts_with("error: unknown setting \"listn\" in config file switchboard.toml"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_malformed_database_url_is_refused_naming_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let (status, stderr) = run_to_exit(dir.path(), &["--database-url", "postgres://db:notaport/sb"], &[]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        last_line(&stderr).starts_with("error: invalid database_url"),
        "{stderr}"
    );
    assert!(last_line(&stderr).contains("from flag --database-url"), "{stderr}");

    let env = [("SWITCHBOARD_DATABASE_URL", "mysql://db/sb")];
    let (status, stderr) = run_to_exit(dir.path(), &["--listen", "127.0.0.1:0"], &env);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(last_line(&stderr).contains("SWITCHBOARD_DATABASE_URL"), "{stderr}");
    assert!(last_line(&stderr).contains("unsupported scheme \"mysql\""), "{stderr}");
}

#[test]
fn a_port_in_use_is_refused_saying_so() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let (status, stderr) = run_to_exit(dir.path(), &["--listen", &address], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert_eq!(
        last_line(&stderr),
        format!("error: cannot listen on {address}: address in use"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_database_is_refused_naming_it_without_its_password() {
    let dir = tempfile::tempdir().unwrap();
    // Port 1 on the loopback: nothing listens there, so the connection is refused at once.
    let url = "postgres://sb:hunter2@127.0.0.1:1/sb";
    let (status, stderr) = run_to_exit(dir.path(), &["--database-url", url, "--listen", "127.0.0.1:0"], &[]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    let line = last_line(&stderr);
    assert!(
        line.starts_with("error: cannot open the postgres postgres://sb:***@127.0.0.1:1/sb store"),
        "{stderr}"
    );
    assert!(!stderr.contains("hunter2"), "{stderr}");
}

#[test]
fn a_bad_value_in_the_environment_is_refused_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let env = [("SWITCHBOARD_REQUEST_TIMEOUT", "30")];
    let (status, stderr) = run_to_exit(dir.path(), &["--listen", "127.0.0.1:0"], &env);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        last_line(&stderr).starts_with(
            "error: invalid request_timeout \"30\" (from environment variable SWITCHBOARD_REQUEST_TIMEOUT)"
        ),
        "{stderr}"
    );
}
