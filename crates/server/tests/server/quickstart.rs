//! The README's quickstart, run exactly as written: the commands of its `sh` block, in
//! bash, from the workspace root. Only the environment differs from a newcomer's: a free
//! port instead of 8080 and a temporary directory for the database and the delegate's log,
//! so that the test never touches a manager the developer is running.

use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// The first build of the binaries can take minutes on a cold machine; what follows, seconds.
const BUDGET: Duration = Duration::from_secs(20 * 60);

fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The lines of the first `sh` block under the `## Quickstart` heading.
fn quickstart_commands(readme: &str) -> Vec<String> {
    let section = readme
        .split("\n## Quickstart\n")
        .nth(1)
        .expect("the README has a Quickstart section");
    let block = section
        .split("```sh\n")
        .nth(1)
        .and_then(|rest| rest.split("\n```").next())
        .expect("the Quickstart section has an sh block");
    block
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn the_readme_quickstart_runs_a_task_on_a_delegate_in_five_commands() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let commands = quickstart_commands(&readme);
    assert!(
        (1..=5).contains(&commands.len()),
        "the quickstart is at most five commands: {commands:#?}"
    );

    let data = tempfile::tempdir().unwrap();
    let port = {
        let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        probe.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    let mut bash = Command::new("bash");
    bash.arg("-c")
        .arg(commands.join("\n"))
        .current_dir(&root)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Nothing of the developer's own configuration leaks in.
    for (name, _) in std::env::vars() {
        if name.starts_with("SWITCHBOARD_") {
            bash.env_remove(name);
        }
    }
    bash.env("SWITCHBOARD_LISTEN", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_URL", &url)
        .env("SWITCHBOARD_MANAGER", &url)
        .env(
            "SWITCHBOARD_DATABASE_URL",
            format!("sqlite:{}", data.path().join("switchboard.db").display()),
        )
        .env("SWITCHBOARD_LOG_DIR", data.path());
    // Its own process group, so the manager and the delegate it leaves running in the
    // background can be stopped together.
    std::os::unix::process::CommandExt::process_group(&mut bash, 0);
    let mut child = bash.spawn().expect("bash runs");
    let group = child.id();
    // `kill -- -1` would signal every process this user may signal: never let a bad id
    // through to the group kill below.
    assert!(group > 1, "unexpected process id {group}");
    // Read to the end in threads: the pipes close only once the background processes are
    // gone too.
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let stdout = drain(Box::new(child.stdout.take().unwrap()));
    let stderr = drain(Box::new(child.stderr.take().unwrap()));
    let status = {
        let (done_tx, done_rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = done_tx.send(child.wait());
        });
        done_rx.recv_timeout(BUDGET)
    };
    // Stop the manager and the delegate, whatever happened.
    let killed = Command::new("kill")
        .args(["-s", "KILL", "--", &format!("-{group}")])
        .status()
        .expect("kill runs");
    assert!(
        killed.success(),
        "cannot stop the quickstart's processes (group {group})"
    );
    let printed = stdout.join().unwrap();
    let errors = stderr.join().unwrap();
    let status = status
        .unwrap_or_else(|_| panic!("the quickstart did not finish within {BUDGET:?}:\n{printed}\n{errors}"))
        .unwrap();
    assert!(
        status.success(),
        "the quickstart failed ({status}):\nstdout:\n{printed}\nstderr:\n{errors}"
    );
    let last = printed.lines().last().unwrap_or_default();
    assert!(
        last.ends_with("succeeded"),
        "the last line is the task's end state: {last:?}\n{printed}"
    );
}

#[test]
fn the_quickstart_block_is_found() {
    let commands =
        quickstart_commands("# x\n\n## Quickstart\n\ntext\n\n```sh\na\n\nb\n```\n\n## Next\n```sh\nc\n```\n");
    assert_eq!(commands, ["a", "b"]);
}
