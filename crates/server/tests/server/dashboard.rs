//! The dashboard in a real browser (headless Chromium over WebDriver) against a real
//! manager with client-library delegates on real sockets: an operator signs in, sees the
//! fleet, finds out why a task waits, watches it succeed once a matching delegate starts,
//! and revokes a token. Screenshots of the delegate, task (waiting, then succeeded),
//! explain and narrow delegate pages go to
//! `target/tmp/dashboard/` (`SWITCHBOARD_SCREENSHOTS=<dir>` writes them there instead;
//! docs/ui/ holds the committed ones).

use std::path::PathBuf;

use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, TaskClient, register};
use switchboard_protocol::delegate::{Outcome, RegisterRequest, TaskResult};
use switchboard_protocol::socket::ServerMessage;

use super::browser::Browser;
use super::support::{ADMIN_KEY, PATIENCE, TestApp, spawn_app, spawn_app_with};

/// A delegate that runs every task it is offered and reports success; stops when dropped.
struct Delegate(tokio::task::JoinHandle<()>);

impl Drop for Delegate {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn delegate(app: &TestApp, token: &str, group: &str, hostname: &str, tags: &[&str]) -> Delegate {
    let request: RegisterRequest = serde_json::from_value(json!({
        "name": group, "hostname": hostname, "version": "1.4.2", "tags": tags,
        "task_types": ["echo"], "capacity": 4
    }))
    .unwrap();
    let registered = register(&app.client, &app.url(""), token, &request).await.unwrap();
    let mut session = Session::start(registered.clone(), Backoff::default());
    let first = tokio::time::timeout(PATIENCE, session.events.recv()).await.unwrap();
    assert_eq!(first, Some(Event::Connected));
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &registered.session_token);
    Delegate(tokio::spawn(async move {
        while let Some(event) = session.events.recv().await {
            if let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = event {
                let Ok(acquired) = tasks.acquire(task_id, attempt).await else {
                    continue;
                };
                let report = TaskResult {
                    attempt,
                    outcome: Outcome::Succeeded,
                    result: Some(json!({"echoed": acquired.payload})),
                    error: None,
                    error_code: None,
                    retryable: None,
                };
                let _ = tasks.result(task_id, &report).await;
            }
        }
    }))
}

async fn created(app: &TestApp, path: &str, body: Value) -> Value {
    let response = app.post(path, Some(ADMIN_KEY), &body).await;
    assert_eq!(response.status(), 201, "{path}");
    response.json().await.unwrap()
}

fn screenshots() -> PathBuf {
    std::env::var_os("SWITCHBOARD_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard"))
}

#[tokio::test]
async fn an_operator_finds_why_a_task_waits_and_watches_it_succeed_without_reloading() {
    let Some(browser) = Browser::start(1280, 800).await else {
        return;
    };
    // A short drain: the test is not about shutdown, and a browser that keeps a
    // connection open must not hold the stop for the default 30 s.
    let app = spawn_app_with(|s| {
        s.shutdown_grace = std::time::Duration::from_secs(2);
        s.history_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let shots = screenshots();

    // An operator's key for account acme, and two tokens: the fleet's and a GPU box's.
    let key = created(
        &app,
        "/api/v1/api-keys",
        json!({"name": "night-shift", "account": "acme",
               "permissions": ["delegates:edit", "delegates:delete", "pipelines:execute"]}),
    )
    .await["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let fleet = created(
        &app,
        "/api/v1/delegate-tokens",
        json!({"name": "fleet", "account": "acme"}),
    )
    .await;
    let gpu = created(
        &app,
        "/api/v1/delegate-tokens",
        json!({"name": "gpu", "account": "acme"}),
    )
    .await;
    // Another account's delegate, which this key may not see.
    let other = created(
        &app,
        "/api/v1/delegate-tokens",
        json!({"name": "globex", "account": "globex"}),
    )
    .await;
    let _hidden = delegate(&app, other["token"].as_str().unwrap(), "globex-pool", "g-1", &["linux"]).await;
    let mut fleet_delegates = Vec::new();
    for n in 1..=3 {
        let token = fleet["token"].as_str().unwrap();
        fleet_delegates.push(delegate(&app, token, "builders", &format!("builder-{n}"), &["linux"]).await);
    }

    // Sign in, counting anything the page's security policy blocks from here on.
    browser.goto(&app.url("/ui/")).await;
    browser
        .script(
            "window.blocked = []; document.addEventListener('securitypolicyviolation', (e) => window.blocked.push(e.violatedDirective)); return null;",
            json!([]),
        )
        .await;
    browser.fill("#api-key", &key).await;
    browser.click("#signin-form button[type=submit]").await;
    let who = browser
        .wait_text("#who-name", "the key's name", |t| !t.is_empty())
        .await;
    assert_eq!(who, "night-shift (acme)");
    // The page follows the manager's event stream rather than polling.
    wait_until(
        &browser,
        "the event stream opened",
        "return document.body.dataset.live === 'push';",
    )
    .await;
    // A mark that only survives if the page is never reloaded from here on.
    browser
        .script("window.stillTheSamePage = 'yes'; return null;", json!([]))
        .await;

    // Three delegates connected.
    let counts = browser
        .wait_text("#delegate-counts", "three connected", |t| t.contains("3 connected"))
        .await;
    assert!(counts.contains("1 delegate, 3 instances"), "only acme's: {counts}");
    let group = browser.text("section[data-group=builders]").await.unwrap();
    for needle in ["builder-1", "builder-2", "builder-3", "1.4.2", "0/4", "linux", "acme"] {
        assert!(
            group.contains(needle),
            "{needle:?} missing from the delegate card: {group}"
        );
    }
    browser.screenshot(&shots.join("delegates.png")).await;

    // Explain a task that needs a GPU: nobody can take it now, and the page says why.
    browser.click("#nav a[data-view=explain]").await;
    browser.fill("#build input[name=selectors]", "gpu").await;
    browser.click("#build button[type=submit]").await;
    browser.click("#explain-run").await;
    let summary = browser
        .wait_text("#explain-summary", "the decision", |t| !t.is_empty())
        .await;
    assert!(summary.starts_with("0/3 delegates eligible"), "{summary}");
    assert!(summary.contains("gpu"), "{summary}");
    let verdicts = browser.text("#explain-answer table.verdicts").await.unwrap();
    assert_eq!(verdicts.matches("lacks selectors gpu").count(), 3, "{verdicts}");
    browser
        .script(
            "document.getElementById('explain-summary').scrollIntoView(); return null;",
            json!([]),
        )
        .await;
    browser.screenshot(&shots.join("explain.png")).await;

    // Submit it: it waits in the queue, and its page shows the reason per instance.
    browser.click("#submit-task").await;
    browser.wait_text("#task-state", "queued", |t| t == "queued").await;
    let hash = browser.script("return location.hash;", json!([])).await;
    let task_id = hash.as_str().unwrap().trim_start_matches("#/tasks/").to_owned();
    let stored: Value = app
        .get(&format!("/api/v1/tasks/{task_id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stored["state"], "queued", "{stored}");
    let headline = browser.text("#task-summary").await.unwrap();
    assert!(headline.starts_with("0/3 delegates eligible"), "{headline}");
    let log = browser
        .wait_text(
            "article.log-entry[data-kind=decision] table.verdicts",
            "the verdicts",
            |t| t.matches("lacks selectors gpu").count() == 3,
        )
        .await;
    assert_eq!(log.matches("selectors").count(), 6, "rule and reason per row: {log}");
    browser
        .script(
            "document.getElementById('h-log').scrollIntoView(); return null;",
            json!([]),
        )
        .await;
    browser.screenshot(&shots.join("task-waiting.png")).await;

    // The queue as a whole says the same, for all waiting tasks at once.
    browser.click("#nav a[data-view=queue]").await;
    let summary = browser
        .wait_text("#queue-summary", "the queue", |t| t.contains("waiting"))
        .await;
    assert!(
        summary.starts_with("1 task waiting: 1 lacks selectors [gpu]"),
        "{summary}"
    );
    let row = browser
        .text("#queue-reasons tr[data-reason=lacks_selectors]")
        .await
        .unwrap();
    assert!(row.contains(&task_id[task_id.len() - 8..]), "a link to the task: {row}");
    // The last hour, drawn: the waiting task in the counts.
    browser
        .wait_text("#history-counts", "the history chart", |t| {
            t.contains("Queued and running")
        })
        .await;
    wait_until(
        &browser,
        "a line of queued tasks",
        "return document.querySelectorAll('#history-counts .line-a').length > 0;",
    )
    .await;
    browser.screenshot(&shots.join("queue.png")).await;
    // Narrowed to a scope with nothing waiting, it says so.
    browser.fill("#queue-filters input[name=account]", "acme").await;
    browser.fill("#queue-filters input[name=org]", "ops").await;
    browser.click("#queue-filters button[type=submit]").await;
    browser
        .wait_text("#queue-summary", "the narrowed queue", |t| t == "no task waiting")
        .await;
    browser
        .script(&format!("location.hash = '#/tasks/{task_id}'; return null;"), json!([]))
        .await;
    browser.wait_text("#task-state", "queued", |t| t == "queued").await;

    // A matching delegate starts: the task is placed, runs and succeeds, and the page
    // follows by itself.
    let gpu_delegate = delegate(&app, gpu["token"].as_str().unwrap(), "gpu-boxes", "gpu-1", &["gpu"]).await;
    browser
        .wait_text("#task-state", "succeeded", |t| t == "succeeded")
        .await;
    browser
        .wait_text("#task-result", "the result", |t| t.contains("echoed"))
        .await;
    let timeline = browser.text("#timeline").await.unwrap();
    for step in ["submitted", "decision", "assigned", "ended: succeeded"] {
        assert!(
            timeline.contains(step),
            "{step:?} missing from the timeline: {timeline}"
        );
    }
    let headline = browser.text("#task-summary").await.unwrap();
    assert!(headline.starts_with("Succeeded on instance "), "{headline}");
    let events = browser.script("return window.switchboardLive.events;", json!([])).await;
    assert!(
        events.as_u64().unwrap() > 0,
        "redrawn on events, not only polls: {events}"
    );
    browser.script("window.scrollTo(0, 0); return null;", json!([])).await;
    browser.screenshot(&shots.join("task.png")).await;

    // The task list shows it; filtered to queued tasks, it does not.
    browser.click("#nav a[data-view=tasks]").await;
    browser
        .wait_text(&format!("tr[data-task=\"{task_id}\"]"), "the task", |t| {
            t.contains("succeeded")
        })
        .await;
    browser
        .script(
            "document.querySelector('#task-filters select[name=state]').value = 'queued'; return null;",
            json!([]),
        )
        .await;
    browser.click("#task-filters button[type=submit]").await;
    browser
        .wait_text("#live-tasks tbody", "no queued task", |t| t.contains("No tasks match"))
        .await;

    // Group tags and disabling, as the delegate page offers them.
    browser.click("#nav a[data-view=delegates]").await;
    let groups = app.state.store().list_groups(None).await.unwrap();
    let builders = groups.iter().find(|g| g.name.as_str() == "builders").unwrap().id;
    browser.fill(&format!("#tags-{builders}"), "linux-pool, eu").await;
    browser.click(&format!("form[data-tags=\"{builders}\"] button")).await;
    browser
        .wait_text("section[data-group=builders] .card-head", "the new tags", |t| {
            t.contains("linux-pool") && t.contains("eu")
        })
        .await;
    browser
        .click(&format!("button[data-act=disable][data-id=\"{builders}\"]"))
        .await;
    browser
        .wait_text("section[data-group=builders] .card-head", "disabled", |t| {
            t.contains("disabled")
        })
        .await;
    browser
        .click(&format!("button[data-act=enable][data-id=\"{builders}\"]"))
        .await;
    browser
        .wait_text("section[data-group=builders] .card-head", "enabled again", |t| {
            !t.contains("disabled") && t.contains("Disable")
        })
        .await;

    // Paused for maintenance with a note, which the card shows; then resumed.
    browser
        .fill(&format!("#pause-note-{builders}"), "rack 4 power work")
        .await;
    browser.fill(&format!("#pause-for-{builders}"), "2h").await;
    browser.click(&format!("#pause-{builders}")).await;
    let head = browser
        .wait_text("section[data-group=builders] .card-head", "paused", |t| {
            t.contains("rack 4 power work")
        })
        .await;
    assert!(head.contains("paused until"), "{head}");
    let stored = app.state.store().get_group(builders).await.unwrap();
    assert_eq!(stored.paused.map(|p| p.note).as_deref(), Some("rack 4 power work"));
    browser.screenshot(&shots.join("delegate-paused.png")).await;
    browser.click(&format!("#resume-{builders}")).await;
    browser
        .wait_text("section[data-group=builders] .card-head", "resumed", |t| {
            !t.contains("rack 4 power work")
        })
        .await;
    assert_eq!(app.state.store().get_group(builders).await.unwrap().paused, None);

    // A new token: its secret is shown once, and registers a delegate.
    browser.click("#nav a[data-view=credentials]").await;
    browser.fill("#new-token input[name=name]", "lab").await;
    browser.click("#new-token button[type=submit]").await;
    let secret = browser
        .wait_text("#secret-value", "the secret", |t| !t.is_empty())
        .await;
    // A hostname is free text: markup in it must show as text.
    let request: RegisterRequest = serde_json::from_value(
        json!({"name": "lab", "hostname": "lab-1<img src=x id=pwn>", "version": "1.4.2", "task_types": ["echo"]}),
    )
    .unwrap();
    let lab = register(&app.client, &app.url(""), &secret, &request).await;
    assert!(lab.is_ok(), "the shown secret registers a delegate: {lab:?}");

    // Revoke the GPU token: its delegate is disconnected, the fleet is untouched.
    let revoke = "tr[data-token=gpu] button[data-act=revoke-token]";
    browser.click(revoke).await;
    browser
        .wait_text(revoke, "the confirmation", |t| t.starts_with("Really"))
        .await;
    browser.click(revoke).await;
    browser
        .wait_text("tr[data-token=gpu]", "revoked", |t| t.contains("revoked"))
        .await;
    browser.click("#nav a[data-view=delegates]").await;
    browser
        .wait_text("section[data-group=gpu-boxes] tbody", "disconnected", |t| {
            t.contains("disconnected")
        })
        .await;
    let counts = browser
        .wait_text("#delegate-counts", "the new counts", |t| t.contains("2 disconnected"))
        .await;
    assert!(counts.contains("3 connected"), "{counts}"); // and lab-1, never connected
    drop(gpu_delegate);
    let lab = browser.text("section[data-group=lab] tbody").await.unwrap();
    assert!(lab.contains("lab-1<img src=x id=pwn>"), "the hostname as text: {lab}");
    let injected = browser
        .script("return document.getElementById('pwn') === null;", json!([]))
        .await;
    assert_eq!(injected, true, "a hostname became markup");

    // Delete the lab delegate (asked twice): it leaves the page.
    browser.click("section[data-group=lab] button[data-act=delete]").await;
    browser
        .wait_text(
            "section[data-group=lab] button[data-act=delete]",
            "the confirmation",
            |t| t.starts_with("Really"),
        )
        .await;
    browser.click("section[data-group=lab] button[data-act=delete]").await;
    browser
        .wait_text("#live-delegates", "the lab delegate gone", |t| !t.contains("lab-1"))
        .await;
    let groups = app.state.store().list_groups(None).await.unwrap();
    assert!(
        !groups.iter().any(|g| g.name.as_str() == "lab"),
        "deleted in the store too"
    );

    let blocked = browser.script("return window.blocked;", json!([])).await;
    assert_eq!(blocked, json!([]), "the security policy blocked parts of the page");
    let same = browser
        .script("return window.stillTheSamePage || 'reloaded';", json!([]))
        .await;
    assert_eq!(same, "yes", "the page was reloaded");

    // Keyboard: the skip link comes before everything else and moves focus to the content.
    browser
        .script("document.querySelector('.brand').focus(); return null;", json!([]))
        .await;
    browser.press(&["\u{E008}", "\u{E004}"]).await;
    let focused = browser
        .script("return document.activeElement.className;", json!([]))
        .await;
    assert_eq!(focused, "skip", "Shift+Tab from the first header link");
    browser.press(&["\u{E007}"]).await;
    let focused = browser.script("return document.activeElement.id;", json!([])).await;
    assert_eq!(focused, "main", "Enter on the skip link");

    // A narrow screen: nothing wider than the window but the tables' own scroll boxes.
    browser.resize(390, 844).await;
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert_eq!(overflow, 0, "the page scrolls sideways at 390 px");
    browser.screenshot(&shots.join("delegates-narrow.png")).await;
    browser.goto(&format!("{}#/tasks/{task_id}", app.url("/ui/"))).await;
    browser
        .wait_text("#task-state", "the task page", |t| t == "succeeded")
        .await;
    let overflow = browser
        .script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
            json!([]),
        )
        .await;
    assert_eq!(overflow, 0, "the task page scrolls sideways at 390 px");

    drop(fleet_delegates);
    browser.quit().await;
    app.stop().await.expect("the manager stops");
}

/// The page and its files, without a browser: what the dashboard test cannot show when
/// Chromium is missing.
#[tokio::test]
async fn the_dashboard_is_served_from_the_binary_with_a_strict_policy_and_no_credentials() {
    let app = spawn_app().await;
    for (path, kind, needle) in [
        ("/ui/", "text/html", "/ui/app.js"),
        ("/ui", "text/html", "/ui/app.css"),
        ("/ui/app.js", "text/javascript", "/api/v1"),
        ("/ui/app.css", "text/css", "@media"),
    ] {
        let response = app.get(path, None).await;
        assert_eq!(response.status(), 200, "{path}");
        let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
        assert!(
            header("content-type").starts_with(kind),
            "{path}: {}",
            header("content-type")
        );
        let policy = header("content-security-policy");
        assert!(
            policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
            "{policy}"
        );
        assert_eq!(header("x-content-type-options"), "nosniff");
        assert!(response.text().await.unwrap().contains(needle), "{path} lacks {needle}");
    }
    let missing = app.get("/ui/secrets.txt", None).await;
    let body = super::support::problem(missing, 404, "not-found").await;
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("app.js, app.css and index.html"),
        "{body}"
    );
}

/// Waits (within the patience of the browser helpers) for `script` to return true.
async fn wait_until(browser: &Browser, what: &str, script: &str) {
    let started = std::time::Instant::now();
    while browser.script(script, json!([])).await != json!(true) {
        assert!(started.elapsed() < PATIENCE, "{what} did not happen");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
