//! A headless Chromium driven over the W3C WebDriver protocol (Debian's `chromium` and
//! `chromium-driver`): just the commands the dashboard test needs, over reqwest.
//!
//! Without the two programs the test is skipped with a notice, except under `CI=true`,
//! where `.ci/run` installs them and their absence is a failure.

use std::net::TcpListener;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use super::support::PATIENCE;

/// The key WebDriver names an element reference by.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

pub struct Browser {
    http: reqwest::Client,
    /// `http://127.0.0.1:<port>/session/<id>`.
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

/// Where a program is on `PATH`, if it is.
fn on_path(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

impl Browser {
    /// Starts chromedriver and a headless Chromium window of `width` x `height`; `None`
    /// (after saying so) when they are not installed and this is not CI.
    pub async fn start(width: u32, height: u32) -> Option<Browser> {
        let (Some(driver), Some(chromium)) = (on_path("chromedriver"), on_path("chromium")) else {
            let hint = "install Debian's chromium and chromium-driver (`apt-get install chromium chromium-driver`; .ci/run does)";
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("CI=true but chromium or chromedriver is missing: {hint}");
            }
            eprintln!("SKIPPED the dashboard browser test: chromium or chromedriver is not on PATH; {hint}");
            return None;
        };
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let driver = Command::new(driver)
            .arg(format!("--port={port}"))
            // Its own process group, so that Drop can end Chromium with it.
            .process_group(0)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let http = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + PATIENCE;
        loop {
            let ready = match http.get(format!("{base}/status")).send().await {
                Ok(r) => r.json::<Value>().await.ok().and_then(|v| v["value"]["ready"].as_bool()),
                Err(_) => None,
            };
            if ready == Some(true) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not become ready on port {port}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                    "--no-first-run", "--hide-scrollbars", "--force-device-scale-factor=1",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }
        }}});
        let created: Value = http
            .post(format!("{base}/session"))
            .json(&capabilities)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let id = created["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {created}"));
        Some(Browser {
            session: format!("{base}/session/{id}"),
            http,
            driver,
            _profile: profile,
        })
    }

    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Result<Value, String> {
        let mut request = self.http.request(method, format!("{}{path}", self.session));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let answer: Value = request
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        match answer["value"].get("error") {
            Some(error) => Err(format!("{error}: {}", answer["value"]["message"])),
            None => Ok(answer["value"].clone()),
        }
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.call(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url })).await.unwrap();
    }

    async fn element(&self, css: &str) -> Result<String, String> {
        let found = self
            .post("/element", json!({"using": "css selector", "value": css}))
            .await?;
        Ok(found[ELEMENT].as_str().ok_or("no element reference")?.to_owned())
    }

    /// Waits (bounded) for `css` to match an element, then returns its reference.
    async fn wait_element(&self, css: &str) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            match self.element(css).await {
                Ok(element) => return element,
                Err(e) if Instant::now() > deadline => panic!("no element {css:?} within {PATIENCE:?}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }

    /// Clicks `css` once it is there. A page that redraws between the lookup and the
    /// click makes the reference stale: then it looks again (bounded).
    pub async fn click(&self, css: &str) {
        self.on_element(css, "click", |element| {
            (format!("/element/{element}/click"), json!({}), None)
        })
        .await;
    }

    /// Replaces the text of the input `css` with `text`, as typed keys.
    pub async fn fill(&self, css: &str, text: &str) {
        self.on_element(css, "fill", |element| {
            let clear = (format!("/element/{element}/clear"), json!({}));
            (
                format!("/element/{element}/value"),
                json!({ "text": text }),
                Some(clear),
            )
        })
        .await;
    }

    async fn on_element(
        &self,
        css: &str,
        what: &str,
        command: impl Fn(&str) -> (String, Value, Option<(String, Value)>),
    ) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let element = self.wait_element(css).await;
            let (path, body, first) = command(&element);
            let done = match first {
                Some((before, body)) => self.post(&before, body).await.map(|_| ()),
                None => Ok(()),
            };
            let done = match done {
                Ok(()) => self.post(&path, body).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match done {
                Ok(()) => return,
                Err(e) if Instant::now() > deadline => panic!("could not {what} {css:?} within {PATIENCE:?}: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// The rendered text of `css`, or `None` when nothing matches now.
    pub async fn text(&self, css: &str) -> Option<String> {
        let element = self.element(css).await.ok()?;
        let text = self
            .call(reqwest::Method::GET, &format!("/element/{element}/text"), None)
            .await
            .ok()?;
        text.as_str().map(str::to_owned)
    }

    /// Waits (bounded) until the text of `css` satisfies `ok`, and returns it. The page
    /// is never reloaded here: what changes, the page changed by itself.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + PATIENCE;
        let mut last = None;
        loop {
            // Only what is on the page now counts; `last` is for the failure message.
            let now = self.text(css).await;
            if let Some(text) = now.as_deref().filter(|t| ok(t)) {
                return text.to_owned();
            }
            last = now.or(last);
            assert!(
                Instant::now() < deadline,
                "{css:?} never showed {what} within {PATIENCE:?}; last text: {last:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub async fn script(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
            .unwrap()
    }

    /// Presses `keys` together (WebDriver key codes: `\u{E008}` Shift, `\u{E004}` Tab,
    /// `\u{E007}` Enter) and releases them in reverse order.
    pub async fn press(&self, keys: &[&str]) {
        let mut steps: Vec<Value> = keys.iter().map(|k| json!({"type": "keyDown", "value": k})).collect();
        steps.extend(keys.iter().rev().map(|k| json!({"type": "keyUp", "value": k})));
        let actions = json!({"actions": [{"type": "key", "id": "keyboard", "actions": steps}]});
        self.post("/actions", actions).await.unwrap();
    }

    pub async fn resize(&self, width: u32, height: u32) {
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await
            .unwrap();
    }

    /// Writes a PNG of the viewport to `path`.
    pub async fn screenshot(&self, path: &Path) {
        let shot = self.call(reqwest::Method::GET, "/screenshot", None).await.unwrap();
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot.as_str().unwrap())
            .unwrap();
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
    }
}

impl Browser {
    /// Ends the session (and with it Chromium), then chromedriver.
    pub async fn quit(self) {
        let _ = self.call(reqwest::Method::DELETE, "", None).await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The whole group: chromedriver and any Chromium a failed test left behind.
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill").args(["-s", "KILL", "--", &group]).status();
        let _ = self.driver.wait();
    }
}
