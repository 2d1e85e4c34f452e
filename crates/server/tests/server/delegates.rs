//! Delegates connect: registration, the socket, heartbeats, liveness, revocation, and the
//! operator's view, with real client-library delegates over real WebSockets.

use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use switchboard_client::delegate::{Backoff, Event, Session, register};
use switchboard_protocol::delegate::{RegisterRequest, Registered};
use switchboard_protocol::fleet::{DelegateList, InstanceView};
use switchboard_protocol::socket::{ServerMessage, close};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::support::{ADMIN_KEY, PATIENCE, TestApp, problem, spawn_app, spawn_app_in, spawn_app_with};

/// Creates a delegate token in `scope` (`account[/org[/project]]`) and returns its secret.
async fn token(app: &TestApp, name: &str, scope: &str) -> String {
    let mut parts = scope.split('/');
    let body = json!({"name": name, "account": parts.next(), "org": parts.next(), "project": parts.next()});
    let response = app.post("/api/v1/delegate-tokens", Some(ADMIN_KEY), &body).await;
    assert_eq!(response.status(), StatusCode::CREATED);
    response.json::<Value>().await.unwrap()["token"]
        .as_str()
        .unwrap()
        .to_owned()
}

fn request(name: &str, hostname: &str, tags: &[&str]) -> RegisterRequest {
    serde_json::from_value(json!({
        "name": name, "hostname": hostname, "version": "1.0.0",
        "tags": tags, "task_types": ["echo"], "capacity": 4
    }))
    .unwrap()
}

async fn registered(app: &TestApp, token: &str, request: &RegisterRequest) -> Registered {
    register(&app.client, &app.url(""), token, request)
        .await
        .expect("registration succeeds")
}

/// Registers and opens the socket; returns once the manager said hello.
async fn connected(app: &TestApp, token: &str, request: &RegisterRequest) -> (Registered, Session) {
    let r = registered(app, token, request).await;
    let mut session = Session::start(
        r.clone(),
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_millis(500),
        },
    );
    assert_eq!(next_event(&mut session).await, Event::Connected);
    (r, session)
}

async fn next_event(session: &mut Session) -> Event {
    tokio::time::timeout(PATIENCE, session.events.recv())
        .await
        .expect("an event in time")
        .expect("session alive")
}

async fn fleet(app: &TestApp) -> DelegateList {
    app.get("/api/v1/delegates", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap()
}

async fn instance(app: &TestApp, id: switchboard_domain::InstanceId) -> InstanceView {
    fleet(app)
        .await
        .items
        .into_iter()
        .flat_map(|g| g.instances)
        .find(|i| i.id == id)
        .expect("instance listed")
}

/// Polls the operator view until `check` holds: the manager notices a closed socket
/// asynchronously, so there is no event to wait on. Bounded by [`PATIENCE`].
async fn eventually(
    app: &TestApp,
    id: switchboard_domain::InstanceId,
    check: impl Fn(&InstanceView) -> bool,
) -> Duration {
    let start = Instant::now();
    loop {
        if check(&instance(app, id).await) {
            return start.elapsed();
        }
        assert!(start.elapsed() < PATIENCE, "condition not reached within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A raw socket with a session credential: for tests that must misbehave on purpose.
async fn raw_socket(
    r: &Registered,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut req = r.stream_url.as_str().into_client_request().unwrap();
    req.headers_mut().insert(
        "authorization",
        format!("Bearer {}", r.session_token.expose()).parse().unwrap(),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(req).await.expect("socket opens");
    let hello = socket.next().await.unwrap().unwrap();
    let hello: ServerMessage = serde_json::from_str(hello.to_text().unwrap()).unwrap();
    assert!(matches!(hello, ServerMessage::Hello { protocol: 1, .. }), "{hello:?}");
    socket
}

/// Reads until the manager's close frame; returns its code and reason.
async fn close_frame<S>(socket: &mut S) -> (u16, String)
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    loop {
        match tokio::time::timeout(PATIENCE, socket.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(Some(frame)))) => return (u16::from(frame.code), frame.reason.to_string()),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn delegates_in_account_org_and_project_scopes_register_and_are_listed_connected() {
    let app = spawn_app().await;
    let mut sessions = Vec::new();
    for (scope, name, host) in [
        ("acme", "acct-d", "Host-A"),
        ("acme/eng", "org-d", "host-b"),
        ("acme/eng/web", "proj-d", "host-c"),
    ] {
        let t = token(&app, &format!("{name}-token"), scope).await;
        sessions.push(connected(&app, &t, &request(name, host, &["Linux", "gpu"])).await);
    }
    let list = fleet(&app).await;
    assert_eq!(list.items.len(), 3);
    for (group, (r, _)) in ["acct-d", "org-d", "proj-d"].iter().zip(&sessions) {
        let g = list
            .items
            .iter()
            .find(|g| g.name.as_str() == *group)
            .expect("group listed");
        let scope = (
            g.account.as_str(),
            g.org.as_ref().map(|o| o.as_str()),
            g.project.as_ref().map(|p| p.as_str()),
        );
        let expected = match *group {
            "acct-d" => ("acme", None, None),
            "org-d" => ("acme", Some("eng"), None),
            _ => ("acme", Some("eng"), Some("web")),
        };
        assert_eq!(scope, expected);
        assert_eq!(
            (r.account.as_str(), r.org.as_ref().map(|o| o.as_str())),
            (expected.0, expected.1)
        );
        let i = &g.instances[0];
        assert_eq!(i.state, switchboard_domain::Liveness::Connected);
        assert_eq!((i.load, i.capacity, i.version.as_str()), (0, 4, "1.0.0"));
        assert_eq!(
            i.token_name.as_ref().map(|n| n.as_str()),
            Some(format!("{group}-token").as_str())
        );
        let selectors: Vec<&str> = i.selectors.iter().map(|s| s.as_str()).collect();
        for s in ["linux", "gpu", *group, &i.hostname.to_lowercase(), &i.id.to_string()] {
            assert!(selectors.contains(&s), "{s} missing from {selectors:?}");
        }
    }
}

#[tokio::test]
async fn a_wider_scope_than_the_token_an_unknown_token_and_bad_bodies_are_refused_precisely() {
    let app = spawn_app().await;
    let t = token(&app, "eng", "acme/eng").await;
    let base = app.url("/delegate/v1/register");
    let post = |key: &str, body: Value| app.client.post(&base).bearer_auth(key).json(&body).send();

    let mut wider = serde_json::to_value(request("d", "h", &[])).unwrap();
    wider["org"] = json!("ops");
    let body = problem(post(&t, wider).await.unwrap(), 403, "forbidden").await;
    assert!(body["detail"].as_str().unwrap().contains("acme/eng"), "{body}");

    let unknown = format!("sbd_{}", "0".repeat(64));
    problem(post(&unknown, json!({})).await.unwrap(), 401, "unauthorized").await;
    let body = problem(post(ADMIN_KEY, json!({})).await.unwrap(), 401, "unauthorized").await;
    assert!(
        body["detail"].as_str().unwrap().contains("not a delegate token"),
        "{body}"
    );

    let missing_name = json!({"hostname": "h", "version": "1"});
    problem(post(&t, missing_name).await.unwrap(), 422, "validation").await;
    let zero = json!({"name": "d", "hostname": "h", "version": "1", "capacity": 0});
    assert_eq!(
        problem(post(&t, zero).await.unwrap(), 422, "validation").await["field"],
        "capacity"
    );
    let bad_tag = json!({"name": "d", "hostname": "h", "version": "1", "tags": ["  "]});
    assert_eq!(
        problem(post(&t, bad_tag).await.unwrap(), 422, "validation").await["field"],
        "tags"
    );
    let not_json = app
        .client
        .post(&base)
        .bearer_auth(&t)
        .header("content-type", "application/json")
        .body("{nope");
    problem(not_json.send().await.unwrap(), 400, "bad-request").await;
    assert!(fleet(&app).await.items.is_empty(), "nothing was registered");
}

#[tokio::test]
async fn delegates_older_than_the_minimum_version_are_refused_naming_both_versions() {
    let app = spawn_app_with(|s| s.min_delegate_version = Some("1.4.0".into())).await;
    let t = token(&app, "t", "acme").await;
    let mut old = request("d", "h", &[]);
    old.version = "1.3.9".into();
    let response = app
        .client
        .post(app.url("/delegate/v1/register"))
        .bearer_auth(&t)
        .json(&old)
        .send()
        .await
        .unwrap();
    let body = problem(response, 403, "delegate-too-old").await;
    let detail = body["detail"].as_str().unwrap();
    assert!(detail.contains("1.3.9") && detail.contains("1.4.0"), "{detail}");
    let mut new = request("d", "h", &[]);
    new.version = "1.10.0".into();
    registered(&app, &t, &new).await;
}

#[tokio::test]
async fn revoking_a_token_closes_its_sockets_within_a_second_and_refuses_it_afterwards() {
    let app = spawn_app().await;
    let doomed = token(&app, "doomed", "acme").await;
    let kept = token(&app, "kept", "acme").await;
    let (_, mut a) = connected(&app, &doomed, &request("d", "a", &[])).await;
    let (_, mut b) = connected(&app, &doomed, &request("d", "b", &[])).await;
    let (survivor, _s) = connected(&app, &kept, &request("d", "c", &[])).await;

    let list: Value = app
        .get("/api/v1/delegate-tokens", Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    let id = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "doomed")
        .unwrap()["id"]
        .clone();
    let started = Instant::now();
    let path = format!("/api/v1/delegate-tokens/{}/revoke", id.as_str().unwrap());
    let revoke = app.post(&path, Some(ADMIN_KEY), &json!({})).await;
    assert_eq!(revoke.status(), StatusCode::OK);
    for session in [&mut a, &mut b] {
        assert!(matches!(
            next_event(session).await,
            Event::Message(ServerMessage::Revoked { .. })
        ));
        match next_event(session).await {
            Event::Ended { reason } => assert!(reason.contains(&close::TOKEN_REVOKED.to_string()), "{reason}"),
            other => panic!("expected the session to end, got {other:?}"),
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "closed in {:?}",
        started.elapsed()
    );
    assert_eq!(
        instance(&app, survivor.instance_id).await.state,
        switchboard_domain::Liveness::Connected
    );

    let again = app
        .client
        .post(app.url("/delegate/v1/register"))
        .bearer_auth(&doomed)
        .json(&request("d", "a", &[]));
    let body = problem(again.send().await.unwrap(), 401, "token-revoked").await;
    assert!(body["detail"].as_str().unwrap().contains("doomed"), "{body}");
}

#[tokio::test]
async fn a_delegate_that_vanishes_is_marked_disconnected_at_once() {
    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let r = registered(&app, &t, &request("d", "h", &[])).await;
    let socket = raw_socket(&r).await;
    assert_eq!(
        instance(&app, r.instance_id).await.state,
        switchboard_domain::Liveness::Connected
    );
    // Like a killed process: the TCP connection goes away without a close frame.
    drop(socket.into_inner());
    let took = eventually(&app, r.instance_id, |i| {
        i.state == switchboard_domain::Liveness::Disconnected
    })
    .await;
    assert!(took < Duration::from_secs(1), "noticed in {took:?}");
}

#[tokio::test]
async fn a_socket_that_stops_answering_is_closed_after_the_silence_limit() {
    let app = spawn_app_with(|s| {
        s.socket_silence_timeout = Duration::from_millis(600);
        s.socket_ping_interval = Duration::from_millis(200);
    })
    .await;
    let t = token(&app, "t", "acme").await;
    let r = registered(&app, &t, &request("d", "h", &[])).await;
    let started = Instant::now();
    let socket = raw_socket(&r).await;
    // From here this side neither reads nor writes WebSocket frames, so it answers no
    // ping: a peer whose network went quiet. The manager's frames are read off the TCP
    // stream only after the manager has given up.
    let took = eventually(&app, r.instance_id, |i| {
        i.state == switchboard_domain::Liveness::Disconnected
    })
    .await;
    let tokio_tungstenite::MaybeTlsStream::Plain(mut tcp) = socket.into_inner() else {
        panic!("a plain TCP socket")
    };
    let (code, reason) = raw_close_frame(&mut tcp).await;
    assert_eq!(code, close::SILENT, "{reason}");
    assert!(
        started.elapsed() >= Duration::from_millis(600),
        "not closed before the limit"
    );
    assert!(took < Duration::from_secs(5), "closed and marked in {took:?}");
}

#[tokio::test]
async fn a_socket_whose_only_traffic_is_heartbeats_is_never_pinged_and_stays_open() {
    let app = spawn_app_with(|s| {
        s.socket_silence_timeout = Duration::from_secs(2);
        s.socket_ping_interval = Duration::from_secs(1);
    })
    .await;
    let t = token(&app, "t", "acme").await;
    let r = registered(&app, &t, &request("d", "h", &[])).await;
    let mut socket = raw_socket(&r).await;
    // Heartbeats five times a ping interval, for longer than the silence limit: each one
    // proves the delegate alive, so no ping is due and nothing closes.
    let beat = Message::Text(r#"{"type":"heartbeat","running":[]}"#.into());
    let until = Instant::now() + Duration::from_millis(3500);
    let mut pinged = 0;
    while Instant::now() < until {
        socket.send(beat.clone()).await.unwrap();
        if let Ok(frame) = tokio::time::timeout(Duration::from_millis(200), socket.next()).await {
            match frame {
                Some(Ok(Message::Ping(_))) => pinged += 1,
                Some(Ok(Message::Close(c))) => panic!("closed while it beat: {c:?}"),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert_eq!(pinged, 0, "a beating delegate is not pinged");
    assert_eq!(
        instance(&app, r.instance_id).await.state,
        switchboard_domain::Liveness::Connected
    );
    // Once it falls silent, the pings come again (and, answered, keep it open).
    let ping = tokio::time::timeout(PATIENCE, socket.next())
        .await
        .expect("a ping in time");
    assert!(matches!(ping, Some(Ok(Message::Ping(_)))), "{ping:?}");
}

#[tokio::test]
async fn a_frame_larger_than_the_sockets_read_buffer_arrives_whole() {
    // The manager reads delegate sockets with a 1 KiB buffer (issue 20: memory per idle
    // socket); a heartbeat listing 100 running tasks is about 8 KiB, read over several
    // reads, and counts like any other.
    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let r = registered(&app, &t, &request("d", "h", &[])).await;
    let mut socket = raw_socket(&r).await;
    let before = instance(&app, r.instance_id).await.last_heartbeat_at;
    let running: Vec<String> = (0..100)
        .map(|_| format!(r#"{{"task_id":"{}","attempt":1}}"#, uuid::Uuid::new_v4()))
        .collect();
    let frame = format!(r#"{{"type":"heartbeat","running":[{}]}}"#, running.join(","));
    assert!(frame.len() > 6 * 1024, "{} bytes", frame.len());
    socket.send(Message::Text(frame.into())).await.unwrap();
    eventually(&app, r.instance_id, |i| i.last_heartbeat_at > before).await;
    assert_eq!(
        instance(&app, r.instance_id).await.state,
        switchboard_domain::Liveness::Connected
    );
}

/// Reads server frames (unmasked, short) from a raw TCP stream until a close frame, and
/// returns its code and reason. Pings before it are skipped.
async fn raw_close_frame(tcp: &mut tokio::net::TcpStream) -> (u16, String) {
    use tokio::io::AsyncReadExt;
    loop {
        let mut head = [0u8; 2];
        tokio::time::timeout(PATIENCE, tcp.read_exact(&mut head))
            .await
            .expect("a frame in time")
            .unwrap();
        let len = usize::from(head[1] & 0x7f);
        assert!(len < 126, "control frames are short");
        let mut payload = vec![0u8; len];
        tcp.read_exact(&mut payload).await.unwrap();
        if head[0] & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8_lossy(&payload[2..]).into_owned());
        }
    }
}

#[test]
fn the_default_silence_limit_is_45_seconds_and_pings_come_more_often() {
    let settings = switchboard_server::Settings::default();
    assert_eq!(settings.socket_silence_timeout, Duration::from_secs(45));
    assert!(settings.socket_ping_interval * 2 < settings.socket_silence_timeout);
}

#[tokio::test]
async fn malformed_oversized_and_binary_messages_close_only_that_socket() {
    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let (bystander, _session) = connected(&app, &t, &request("d", "ok", &[])).await;
    let cases: [(Message, u16); 4] = [
        (Message::text("{not json"), close::INVALID_MESSAGE),
        (Message::text(r#"{"type":"launch_missiles"}"#), close::INVALID_MESSAGE),
        (Message::binary(vec![1u8, 2, 3]), close::UNSUPPORTED),
        (
            Message::text(format!(
                "{{\"type\":\"heartbeat\",\"pad\":\"{}\"}}",
                "x".repeat(300 * 1024)
            )),
            close::TOO_BIG,
        ),
    ];
    for (message, expected) in cases {
        let r = registered(&app, &t, &request("d", "bad", &[])).await;
        let mut socket = raw_socket(&r).await;
        socket.send(message).await.unwrap();
        let (code, reason) = close_frame(&mut socket).await;
        assert_eq!(code, expected, "{reason}");
        assert!(!reason.is_empty());
        eventually(&app, r.instance_id, |i| {
            i.state == switchboard_domain::Liveness::Disconnected
        })
        .await;
    }
    assert_eq!(
        instance(&app, bystander.instance_id).await.state,
        switchboard_domain::Liveness::Connected
    );
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_reconnect_of_the_same_instance_replaces_its_old_socket() {
    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let r = registered(&app, &t, &request("d", "h", &[])).await;
    let mut old = raw_socket(&r).await;
    let _new = raw_socket(&r).await;
    assert_eq!(close_frame(&mut old).await.0, close::REPLACED);
    assert_eq!(
        instance(&app, r.instance_id).await.state,
        switchboard_domain::Liveness::Connected,
        "the new socket stays"
    );
}

#[tokio::test]
async fn delegates_reconnect_by_themselves_after_the_manager_restarts() {
    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let (a, mut sa) = connected(&app, &t, &request("d", "a", &[])).await;
    let (b, mut sb) = connected(&app, &t, &request("e", "b", &[])).await;
    let address = app.address;
    let (result, dir) = app.stop_keeping_data().await;
    result.unwrap();
    for session in [&mut sa, &mut sb] {
        assert!(matches!(next_event(session).await, Event::Disconnected { .. }));
    }

    let app = spawn_app_in(dir, address, |_| {}).await;
    for session in [&mut sa, &mut sb] {
        loop {
            match next_event(session).await {
                Event::Connected => break,
                Event::Disconnected { .. } => continue, // a retry before the manager was back
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    let list = fleet(&app).await;
    assert_eq!(list.items.len(), 2, "no registration was lost");
    for id in [a.instance_id, b.instance_id] {
        assert_eq!(instance(&app, id).await.state, switchboard_domain::Liveness::Connected);
    }
}

#[tokio::test]
async fn a_task_running_when_the_manager_shuts_down_stays_with_its_delegate_and_succeeds_after() {
    use switchboard_client::delegate::TaskClient;
    use switchboard_protocol::delegate::{Outcome, TaskResult};

    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let (r, mut session) = connected(&app, &t, &request("d", "h", &[])).await;
    let body = json!({"account": "acme", "type": "echo", "payload": {"n": 1}, "max_attempts": 3});
    let submitted: Value = app
        .post("/api/v1/tasks", Some(ADMIN_KEY), &body)
        .await
        .json()
        .await
        .unwrap();
    let id = submitted["id"].as_str().unwrap().to_owned();
    let (task_id, attempt) = loop {
        if let Event::Message(ServerMessage::TaskAvailable { task_id, attempt }) = next_event(&mut session).await {
            break (task_id, attempt);
        }
    };
    let tasks = TaskClient::new(app.client.clone(), &app.url(""), &r.session_token);
    tasks.acquire(task_id, attempt).await.unwrap();

    // The manager stops (SIGTERM's path) while the delegate runs the task.
    let address = app.address;
    let (result, dir) = app.stop_keeping_data().await;
    result.unwrap();
    assert!(matches!(next_event(&mut session).await, Event::Disconnected { .. }));

    let app = spawn_app_in(dir, address, |_| {}).await;
    let task: Value = app
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (task["state"].as_str(), task["attempt"].as_u64()),
        (Some("running"), Some(1)),
        "the shutdown did not take the task from its delegate: {task}"
    );
    let report = TaskResult {
        attempt,
        outcome: Outcome::Succeeded,
        result: Some(json!({"n": 1})),
        error: None,
        error_code: None,
        retryable: None,
    };
    tasks.result(task_id, &report).await.unwrap();
    let task: Value = app
        .get(&format!("/api/v1/tasks/{id}"), Some(ADMIN_KEY))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(task["state"], "succeeded", "{task}");
    assert_eq!(task["attempt"], 1, "it ran once: {task}");
}

#[tokio::test]
async fn operators_change_tags_disable_and_delete_delegates_whose_instances_drain() {
    let app = spawn_app().await;
    let t = token(&app, "t", "acme").await;
    let (r, mut session) = connected(&app, &t, &request("d", "h", &["a"])).await;
    let path = format!("/api/v1/delegates/{}", r.group_id);

    let tagged: Value = app
        .client
        .put(app.url(&format!("{path}/tags")))
        .bearer_auth(ADMIN_KEY)
        .json(&json!({"tags": ["Blue", " green "]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tagged["tags"], json!(["blue", "green"]));
    let disabled: Value = app
        .post(&format!("{path}/disable"), Some(ADMIN_KEY), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(disabled["disabled"], true);
    let enabled: Value = app
        .post(&format!("{path}/enable"), Some(ADMIN_KEY), &json!({}))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(enabled["disabled"], false);

    let deleted = app
        .client
        .delete(app.url(&path))
        .bearer_auth(ADMIN_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), StatusCode::NO_CONTENT);
    assert!(matches!(
        next_event(&mut session).await,
        Event::Message(ServerMessage::Drain { .. })
    ));
    assert!(matches!(next_event(&mut session).await, Event::Ended { .. }));
    problem(app.get(&path, Some(ADMIN_KEY)).await, 404, "not-found").await;
    assert!(fleet(&app).await.items.is_empty());
}

#[tokio::test]
async fn heartbeats_of_a_thousand_delegates_are_written_in_one_batch_per_flush() {
    const DELEGATES: usize = 1_000;
    let app = spawn_app_with(|s| {
        s.heartbeat_interval = Duration::from_secs(1);
        s.heartbeat_flush_interval = Duration::from_secs(1);
        // 1,000 registrations with one token in a moment are over its default rate (the
        // rate has tests of its own); this test is about heartbeats.
        s.delegate_rate_limit = 0;
    })
    .await;
    let t = token(&app, "fleet", "acme").await;
    let mut sessions = Vec::with_capacity(DELEGATES);
    for n in 0..DELEGATES {
        let r = registered(&app, &t, &request("fleet", &format!("host-{n}"), &[])).await;
        sessions.push(Session::start(r, Backoff::default()));
    }
    for session in &mut sessions {
        assert_eq!(next_event(session).await, Event::Connected);
    }
    let heartbeats = app.state.heartbeats();
    let (beats_before, writes_before, started) = (heartbeats.received(), heartbeats.store_writes(), Instant::now());
    // Wait for three beats from every delegate (a counter, not a clock, says when).
    while heartbeats.received() < beats_before + 3 * DELEGATES as u64 {
        assert!(started.elapsed() < PATIENCE, "the fleet stopped beating");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let beats = heartbeats.received() - beats_before;
    let writes = heartbeats.store_writes() - writes_before;
    let flushes_possible = started.elapsed().as_secs_f64().ceil() as u64 + 1;
    assert!(
        writes <= flushes_possible,
        "{writes} store writes for {beats} heartbeats in {:?}",
        started.elapsed()
    );
    assert!(writes >= 1, "heartbeats reached the store");
    eprintln!("{beats} heartbeats, {writes} store writes in {:?}", started.elapsed());
}

#[tokio::test]
async fn the_sweep_removes_instances_long_without_heartbeats_and_then_their_empty_group() {
    let app = spawn_app_with(|s| {
        s.instance_retention = Duration::from_millis(300);
        s.group_retention = Duration::from_millis(300);
        s.sweep_interval = Duration::from_millis(50);
    })
    .await;
    let t = token(&app, "t", "acme").await;
    // Registered, never connected: its only heartbeat is the registration.
    let started = Instant::now();
    registered(&app, &t, &request("gone", "h", &[])).await;
    let (kept, _session) = connected(&app, &t, &request("kept", "k", &[])).await;
    loop {
        let names: Vec<String> = fleet(&app).await.items.iter().map(|g| g.name.to_string()).collect();
        if names == ["kept"] {
            break;
        }
        assert!(started.elapsed() < PATIENCE, "still listed: {names:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(300),
        "removed before the retention"
    );
    assert_eq!(
        instance(&app, kept.instance_id).await.state,
        switchboard_domain::Liveness::Connected
    );
}
