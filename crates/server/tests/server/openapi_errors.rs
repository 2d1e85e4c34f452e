//! The error answers against the OpenAPI document and `docs/errors.md`: a table of bad
//! requests (malformed JSON, an unknown field, a wrong type, an oversized body, an unknown
//! id, a bad identifier, a bad selector, a bad URL in a capability...) sent to the real
//! server. Each answer must be the status and problem type the table expects, a status
//! the operation documents, a `type` the document lists for that status, and a type
//! `docs/errors.md` describes with that status.

use reqwest::{Method, header};
use serde_json::{Value, json};

use super::spec::Spec;
use super::support::{ADMIN_KEY, TestApp, spawn_app, spawn_app_with};

/// The body limit of the app the table runs against.
const BODY_LIMIT: usize = 4096;

/// The rows of the table in `docs/errors.md`: (slug, status).
fn documented_in_errors_md() -> Vec<(String, u16)> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/errors.md");
    let text = std::fs::read_to_string(path).expect("docs/errors.md");
    text.lines()
        .filter_map(|line| {
            let mut cells = line.split('|').map(str::trim).skip(1);
            let slug = cells.next()?.strip_prefix('`')?.strip_suffix('`')?;
            let status = cells.next()?.parse().ok()?;
            Some((slug.to_owned(), status))
        })
        .collect()
}

/// One bad request: what it is, where it goes, and the answer it must get.
struct Case {
    what: &'static str,
    method: Method,
    template: &'static str,
    path: String,
    /// The bearer credential, if any.
    key: Option<String>,
    content_type: &'static str,
    accept: &'static str,
    body: Vec<u8>,
    /// Extra request headers.
    headers: Vec<(&'static str, String)>,
    status: u16,
    slug: &'static str,
}

fn case(what: &'static str, method: Method, template: &'static str, path: impl Into<String>) -> Case {
    Case {
        what,
        method,
        template,
        path: path.into(),
        key: Some(ADMIN_KEY.to_owned()),
        content_type: "application/json",
        accept: "*/*",
        body: Vec::new(),
        headers: Vec::new(),
        status: 0,
        slug: "",
    }
}

impl Case {
    fn json(mut self, body: Value) -> Self {
        self.body = serde_json::to_vec(&body).unwrap();
        self
    }

    fn raw(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    fn header(mut self, name: &'static str, value: &str) -> Self {
        self.headers.push((name, value.to_owned()));
        self
    }

    fn key(mut self, key: &str) -> Self {
        self.key = Some(key.to_owned());
        self
    }

    fn anonymous(mut self) -> Self {
        self.key = None;
        self
    }

    fn content_type(mut self, content_type: &'static str) -> Self {
        self.content_type = content_type;
        self
    }

    fn accept(mut self, accept: &'static str) -> Self {
        self.accept = accept;
        self
    }

    fn answers(mut self, status: u16, slug: &'static str) -> Self {
        self.status = status;
        self.slug = slug;
        self
    }
}

/// A delegate token, a registered instance (its session credential and group), and a task.
struct Fixture {
    token: String,
    session: String,
    group: String,
    task: String,
}

async fn fixture(app: &TestApp) -> Fixture {
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "ci", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let registered: Value = app
        .client
        .post(app.url("/delegate/v1/register"))
        .bearer_auth(&token)
        .json(&json!({"name": "builder", "hostname": "h1", "version": "1.0.0"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let task: Value = app
        .post(
            "/api/v1/tasks",
            Some(ADMIN_KEY),
            &json!({"account": "acme", "type": "echo", "wait_for_delegate": true}),
        )
        .await
        .json()
        .await
        .unwrap();
    Fixture {
        token,
        session: registered["session_token"].as_str().unwrap().to_owned(),
        group: registered["group_id"].as_str().unwrap().to_owned(),
        task: task["id"].as_str().unwrap().to_owned(),
    }
}

fn table(f: &Fixture) -> Vec<Case> {
    use Method as M;
    let unknown = uuid::Uuid::new_v4();
    let task = |rest: Value| {
        let mut body = json!({"account": "acme", "type": "echo"});
        body.as_object_mut().unwrap().extend(rest.as_object().unwrap().clone());
        body
    };
    // Over the body limit of the app under test (small, so that the server has read the
    // whole body when it refuses it, and the connection closes cleanly).
    let oversized = format!("{{\"tags\":[\"{}\"]}}", "x".repeat(2 * BODY_LIMIT));
    vec![
        // Malformed JSON.
        case(
            "malformed JSON",
            M::POST,
            "/api/v1/delegate-tokens",
            "/api/v1/delegate-tokens",
        )
        .raw(&b"{\"name\": "[..])
        .answers(400, "bad-request"),
        case(
            "trailing text after the JSON",
            M::POST,
            "/api/v1/tasks",
            "/api/v1/tasks",
        )
        .raw(&br#"{"account":"acme","type":"echo"} {}"#[..])
        .answers(400, "bad-request"),
        case(
            "malformed JSON at registration",
            M::POST,
            "/delegate/v1/register",
            "/delegate/v1/register",
        )
        .key(&f.token)
        .raw(&b"{not json"[..])
        .answers(400, "bad-request"),
        case(
            "malformed JSON in a report",
            M::POST,
            "/delegate/v1/tasks/{id}/progress",
            format!("/delegate/v1/tasks/{}/progress", f.task),
        )
        .key(&f.session)
        .raw(&b"[1,"[..])
        .answers(400, "bad-request"),
        // Unknown fields.
        case("unknown field", M::POST, "/api/v1/connectors", "/api/v1/connectors")
            .json(json!({"name": "c", "account": "acme", "colour": "red"}))
            .answers(422, "validation"),
        case("unknown field in a task", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(json!({"priorty": 1})))
            .answers(422, "validation"),
        case(
            "unknown field in a capability",
            M::POST,
            "/api/v1/tasks/explain",
            "/api/v1/tasks/explain",
        )
        .json(task(
            json!({"capabilities": [{"kind": "tcp", "host": "db", "port": 1, "tls": true}]}),
        ))
        .answers(422, "validation"),
        case(
            "unknown field at registration",
            M::POST,
            "/delegate/v1/register",
            "/delegate/v1/register",
        )
        .key(&f.token)
        .json(json!({"name": "d", "hostname": "h", "version": "1", "replicas": 3}))
        .answers(422, "validation"),
        case(
            "unknown field in a report",
            M::POST,
            "/delegate/v1/tasks/{id}/acquire",
            format!("/delegate/v1/tasks/{}/acquire", f.task),
        )
        .key(&f.session)
        .json(json!({"attempt": 1, "lease": 5}))
        .answers(422, "validation"),
        case(
            "unknown query parameter",
            M::GET,
            "/api/v1/connectors",
            "/api/v1/connectors?acount=acme",
        )
        .answers(422, "validation"),
        case(
            "unknown query parameter",
            M::GET,
            "/api/v1/audit",
            "/api/v1/audit?user=x",
        )
        .answers(422, "validation"),
        // Wrong types.
        case("wrong type", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(json!({"priority": "high"})))
            .answers(422, "validation"),
        case(
            "wrong type",
            M::PUT,
            "/api/v1/delegates/{id}/tags",
            format!("/api/v1/delegates/{}/tags", f.group),
        )
        .json(json!({"tags": "gpu"}))
        .answers(422, "validation"),
        case("wrong type", M::POST, "/api/v1/api-keys", "/api/v1/api-keys")
            .json(json!({"name": "k", "account": "acme", "permissions": ["launch:missiles"]}))
            .answers(422, "validation"),
        case(
            "wrong type in the query",
            M::GET,
            "/api/v1/tasks/{id}/wait",
            format!("/api/v1/tasks/{}/wait?timeout_ms=soon", f.task),
        )
        .answers(422, "validation"),
        case("wrong content type", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .content_type("text/plain")
            .json(task(json!({})))
            .answers(415, "unsupported-media-type"),
        // Oversized bodies.
        case("oversized body", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .raw(oversized.clone())
            .answers(413, "payload-too-large"),
        case(
            "oversized body",
            M::PUT,
            "/api/v1/delegates/{id}/tags",
            format!("/api/v1/delegates/{}/tags", f.group),
        )
        .raw(oversized.clone())
        .answers(413, "payload-too-large"),
        case(
            "oversized report",
            M::POST,
            "/delegate/v1/tasks/{id}/result",
            format!("/delegate/v1/tasks/{}/result", f.task),
        )
        .key(&f.session)
        .raw(oversized)
        .answers(413, "payload-too-large"),
        // Unknown ids.
        case(
            "unknown id",
            M::GET,
            "/api/v1/tasks/{id}",
            format!("/api/v1/tasks/{unknown}"),
        )
        .answers(404, "not-found"),
        case(
            "id that is not a UUID",
            M::GET,
            "/api/v1/connectors/{id}",
            "/api/v1/connectors/k8s",
        )
        .answers(404, "not-found"),
        case(
            "unknown id",
            M::DELETE,
            "/api/v1/delegates/{id}",
            format!("/api/v1/delegates/{unknown}"),
        )
        .answers(404, "not-found"),
        case(
            "unknown id",
            M::POST,
            "/api/v1/tasks/{id}/cancel",
            format!("/api/v1/tasks/{unknown}/cancel"),
        )
        .answers(404, "not-found"),
        case(
            "unknown id",
            M::POST,
            "/api/v1/api-keys/{id}/revoke",
            format!("/api/v1/api-keys/{unknown}/revoke"),
        )
        .answers(404, "not-found"),
        case(
            "unknown id",
            M::POST,
            "/api/v1/delegate-tokens/{id}/revoke",
            format!("/api/v1/delegate-tokens/{unknown}/revoke"),
        )
        .answers(404, "not-found"),
        case(
            "unknown id",
            M::PUT,
            "/api/v1/connectors/{id}",
            format!("/api/v1/connectors/{unknown}"),
        )
        .json(json!({"name": "c", "selectors": []}))
        .answers(404, "not-found"),
        case(
            "unknown task",
            M::POST,
            "/delegate/v1/tasks/{id}/acquire",
            format!("/delegate/v1/tasks/{unknown}/acquire"),
        )
        .key(&f.session)
        .json(json!({"attempt": 1}))
        .answers(404, "not-found"),
        // Bad identifiers.
        case(
            "bad identifier",
            M::POST,
            "/api/v1/delegate-tokens",
            "/api/v1/delegate-tokens",
        )
        .json(json!({"name": "9lives", "account": "acme"}))
        .answers(422, "validation"),
        case("bad identifier", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(json!({"account": "ac me", "type": "echo"}))
            .answers(422, "validation"),
        case(
            "bad identifier",
            M::POST,
            "/delegate/v1/register",
            "/delegate/v1/register",
        )
        .key(&f.token)
        .json(json!({"name": "-d", "hostname": "h", "version": "1"}))
        .answers(422, "validation"),
        case(
            "bad identifier in the query",
            M::GET,
            "/api/v1/connectors",
            "/api/v1/connectors?account=a%21b",
        )
        .answers(422, "validation"),
        case(
            "bad identifier in the query",
            M::GET,
            "/api/v1/tasks",
            "/api/v1/tasks?account=a%21b",
        )
        .answers(422, "validation"),
        case(
            "project without org",
            M::POST,
            "/api/v1/connectors",
            "/api/v1/connectors",
        )
        .json(json!({"name": "c", "account": "acme", "project": "p"}))
        .answers(422, "validation"),
        // Bad selectors.
        case("bad selector", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(json!({"selectors": ["linux", "   "]})))
            .answers(422, "validation"),
        case("bad selector", M::POST, "/api/v1/connectors", "/api/v1/connectors")
            .json(json!({"name": "c", "account": "acme", "selectors": ["a\u{1}b"]}))
            .answers(422, "validation"),
        case(
            "bad selector",
            M::PUT,
            "/api/v1/connectors/{id}",
            format!("/api/v1/connectors/{unknown}"),
        )
        .json(json!({"name": "c", "selectors": [""]}))
        .answers(422, "validation"),
        case(
            "bad selector",
            M::PUT,
            "/api/v1/delegates/{id}/tags",
            format!("/api/v1/delegates/{}/tags", f.group),
        )
        .json(json!({"tags": ["x".repeat(129)]}))
        .answers(422, "validation"),
        case(
            "bad selector at registration",
            M::POST,
            "/delegate/v1/register",
            "/delegate/v1/register",
        )
        .key(&f.token)
        .json(json!({"name": "d", "hostname": "h", "version": "1", "tags": [" "]}))
        .answers(422, "validation"),
        // Bad capabilities.
        case("bad URL in a capability", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(
                json!({"capabilities": [{"kind": "http", "url": "ftp://files.example"}]}),
            ))
            .answers(422, "validation"),
        case(
            "bad URL in a capability",
            M::POST,
            "/api/v1/tasks/explain",
            "/api/v1/tasks/explain",
        )
        .json(task(json!({"capabilities": [{"kind": "http", "url": "https://a b"}]})))
        .answers(422, "validation"),
        case("bad port in a capability", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(
                json!({"capabilities": [{"kind": "tcp", "host": "db", "port": 0}]}),
            ))
            .answers(422, "validation"),
        case("unknown capability kind", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(
                json!({"capabilities": [{"kind": "udp", "host": "db", "port": 53}]}),
            ))
            .answers(422, "validation"),
        // Credentials.
        case("no credentials", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .anonymous()
            .json(task(json!({})))
            .answers(401, "unauthorized"),
        case(
            "a delegate token on the operator API",
            M::GET,
            "/api/v1/tasks",
            "/api/v1/tasks",
        )
        .key(&f.token)
        .answers(401, "unauthorized"),
        case(
            "an API key at registration",
            M::POST,
            "/delegate/v1/register",
            "/delegate/v1/register",
        )
        .key(ADMIN_KEY)
        .json(json!({"name": "d", "hostname": "h", "version": "1"}))
        .answers(401, "unauthorized"),
        case(
            "a stale attempt",
            M::POST,
            "/delegate/v1/tasks/{id}/acquire",
            format!("/delegate/v1/tasks/{}/acquire", f.task),
        )
        .key(&f.session)
        .json(json!({"attempt": 7}))
        .answers(409, "stale-attempt"),
        case(
            "a log chunk of a stale attempt",
            M::POST,
            "/delegate/v1/tasks/{id}/logs",
            format!("/delegate/v1/tasks/{}/logs", f.task),
        )
        .key(&f.session)
        .json(json!({"attempt": 7, "offset": 0, "text": "x\n"}))
        .answers(409, "stale-attempt"),
        case(
            "an empty log chunk",
            M::POST,
            "/delegate/v1/tasks/{id}/logs",
            format!("/delegate/v1/tasks/{}/logs", f.task),
        )
        .key(&f.session)
        .json(json!({"attempt": 1, "offset": 0, "text": ""}))
        .answers(422, "validation"),
        case(
            "a log chunk past its size",
            M::POST,
            "/delegate/v1/tasks/{id}/logs",
            format!("/delegate/v1/tasks/{}/logs", f.task),
        )
        .key(&f.session)
        .json(json!({"attempt": 1, "offset": 0, "text": "x".repeat(300 * 1024)}))
        .answers(413, "payload-too-large"),
        case(
            "a log offset past the end",
            M::POST,
            "/delegate/v1/tasks/{id}/logs",
            format!("/delegate/v1/tasks/{}/logs", f.task),
        )
        .key(&f.session)
        .json(json!({"attempt": 1, "offset": u64::MAX, "text": "x"}))
        .answers(422, "validation"),
        case(
            "a log page of no bytes",
            M::GET,
            "/api/v1/tasks/{id}/logs",
            format!("/api/v1/tasks/{}/logs?limit_bytes=0", f.task),
        )
        .answers(422, "validation"),
        case(
            "a log read from attempt 0",
            M::GET,
            "/api/v1/tasks/{id}/logs",
            format!("/api/v1/tasks/{}/logs?attempt=0", f.task),
        )
        .answers(422, "validation"),
        case(
            "a name already taken",
            M::POST,
            "/api/v1/delegate-tokens",
            "/api/v1/delegate-tokens",
        )
        .json(json!({"name": "ci", "account": "acme"}))
        .answers(409, "conflict"),
        case("an Accept without JSON", M::GET, "/api/v1/tasks", "/api/v1/tasks")
            .accept("text/html")
            .answers(406, "not-acceptable"),
        case(
            "an Accept without JSON, from a delegate",
            M::POST,
            "/delegate/v1/register",
            "/delegate/v1/register",
        )
        .accept("text/plain")
        .json(json!({}))
        .answers(406, "not-acceptable"),
        // What an outside acceptance run found (issue 14): the same answer on every store.
        case("a NUL in a string", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .raw(&br#"{"account":"acme","type":"echo","payload":{"a":"x\u0000"}}"#[..])
            .answers(422, "validation"),
        case("a NUL in a key", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .raw(&br#"{"account":"acme","type":"echo","payload":{"\u0000":1}}"#[..])
            .answers(422, "validation"),
        case(
            "a NUL in a report",
            M::POST,
            "/delegate/v1/tasks/{id}/result",
            format!("/delegate/v1/tasks/{}/result", f.task),
        )
        .key(&f.session)
        .raw(&br#"{"attempt":1,"outcome":"failed","error":"\u0000"}"#[..])
        .answers(422, "validation"),
        case(
            "an attempt past u32",
            M::POST,
            "/delegate/v1/tasks/{id}/acquire",
            format!("/delegate/v1/tasks/{}/acquire", f.task),
        )
        .key(&f.session)
        .raw(&br#"{"attempt":4294967296}"#[..])
        .answers(422, "validation"),
        case("a lone surrogate", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .raw(&br#"{"account":"acme","type":"echo","payload":"\ud800"}"#[..])
            .answers(400, "bad-request"),
        case(
            "an array for an object",
            M::POST,
            "/api/v1/delegate-tokens",
            "/api/v1/delegate-tokens",
        )
        .json(json!(["name", "acme"]))
        .answers(422, "validation"),
        case("an array for a capability", M::POST, "/api/v1/tasks", "/api/v1/tasks")
            .json(task(json!({"capabilities": [["tcp", "db", 5432]]})))
            .answers(422, "validation"),
        case("a permission twice", M::POST, "/api/v1/api-keys", "/api/v1/api-keys")
            .json(json!({"name": "k", "account": "acme", "permissions": ["delegates:edit", "delegates:edit"]}))
            .answers(422, "validation"),
        case(
            "a limit past the page",
            M::GET,
            "/api/v1/tasks",
            "/api/v1/tasks?limit=2147483648",
        )
        .answers(422, "validation"),
        case("a limit of zero", M::GET, "/api/v1/audit", "/api/v1/audit?limit=0").answers(422, "validation"),
        case(
            "a limit past u32",
            M::GET,
            "/api/v1/tasks",
            "/api/v1/tasks?limit=1180591620717411303424",
        )
        .answers(422, "validation"),
        case(
            "an Idempotency-Key with a space",
            M::POST,
            "/api/v1/tasks",
            "/api/v1/tasks",
        )
        .header("idempotency-key", "two words")
        .json(task(json!({})))
        .answers(400, "bad-request"),
    ]
}

#[tokio::test]
async fn bad_requests_are_answered_with_the_problem_types_the_document_and_errors_md_list() {
    let app = spawn_app_with(|settings| settings.body_limit = BODY_LIMIT).await;
    let spec = Spec::fetch(&app).await;
    let errors_md = documented_in_errors_md();
    let f = fixture(&app).await;
    let cases = table(&f);
    for kind in [
        "malformed JSON",
        "unknown field",
        "wrong type",
        "oversized body",
        "unknown id",
        "bad identifier",
        "bad selector",
        "bad URL in a capability",
    ] {
        assert!(cases.iter().any(|c| c.what == kind), "the table has no {kind:?} case");
    }
    for c in cases {
        let name = format!("{} ({} {})", c.what, c.method, c.path);
        let mut request = app
            .client
            .request(c.method.clone(), app.url(&c.path))
            .header(header::CONTENT_TYPE, c.content_type)
            .header(header::ACCEPT, c.accept);
        if let Some(key) = &c.key {
            request = request.bearer_auth(key);
        }
        for (name, value) in &c.headers {
            request = request.header(*name, value);
        }
        let response = request.body(c.body.clone()).send().await.unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()[header::CONTENT_TYPE].to_str().unwrap().to_owned();
        let body: Value = response.json().await.unwrap();
        let kind = body["type"].as_str().unwrap_or_default();
        let uri = format!("https://switchboard.dev/problems/{}", c.slug);
        assert_eq!((status, kind), (c.status, uri.as_str()), "{name}: {body}");
        assert_eq!(content_type, "application/problem+json", "{name}");
        assert_eq!(body["status"], status, "{name}");

        let op = spec.operation(&c.method, c.template);
        let documented = spec.problem_types(op, status);
        assert!(
            documented.iter().any(|t| t == kind),
            "{name}: the document lists {documented:?} for {status}, not {kind}"
        );
        assert!(
            errors_md.iter().any(|(slug, s)| slug == c.slug && *s == status),
            "{name}: docs/errors.md has no `{}` row with status {status}",
            c.slug
        );
    }
}

#[test]
fn errors_md_describes_every_problem_type_of_the_server_with_its_status() {
    let rows = documented_in_errors_md();
    for problem in switchboard_server::Problem::ALL {
        assert!(
            rows.contains(&(problem.slug().to_owned(), problem.status().as_u16())),
            "docs/errors.md lacks `{}` with status {}",
            problem.slug(),
            problem.status()
        );
    }
    assert_eq!(rows.len(), switchboard_server::Problem::ALL.len(), "{rows:?}");
}

#[tokio::test]
async fn every_problem_type_the_document_names_is_described_in_errors_md_with_that_status() {
    let app = spawn_app().await;
    let spec = Spec::fetch(&app).await;
    let rows = documented_in_errors_md();
    for (method, template, op) in spec.operations() {
        for status in op["responses"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|s| s.starts_with(['4', '5']))
        {
            let status: u16 = status.parse().unwrap();
            for uri in spec.problem_types(op, status) {
                let slug = uri.strip_prefix("https://switchboard.dev/problems/").unwrap();
                assert!(
                    rows.iter().any(|(s, st)| s == slug && *st == status),
                    "{method} {template} documents `{slug}` as {status}, unlike docs/errors.md"
                );
            }
        }
    }
}
