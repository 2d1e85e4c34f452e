//! Arbitrary input never hurts the manager: random bytes and mangled variants of valid
//! bodies sent to every parser of a request body, and random frames sent on delegate
//! sockets. Every answer is a 4xx (or a 2xx when the mangling happened to stay valid),
//! never a 5xx or a dropped connection, and what a refused request leaves behind is
//! exactly what was there before.

use futures::{SinkExt, StreamExt};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::support::{ADMIN_KEY, TestApp, spawn_app};

/// A small deterministic generator (xorshift), so a failure replays exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// A body derived from `valid`: random bytes, or `valid` with a byte changed, a slice cut
/// out, garbage inserted, deep nesting, or a field's value replaced by another type.
fn mangle(rng: &mut Rng, valid: &[u8]) -> Vec<u8> {
    let mut body = valid.to_vec();
    match rng.below(7) {
        0 => (0..rng.below(300)).map(|_| rng.next() as u8).collect(),
        1 if !body.is_empty() => {
            let i = rng.below(body.len());
            body[i] = rng.next() as u8;
            body
        }
        2 if !body.is_empty() => {
            let i = rng.below(body.len());
            body.truncate(i);
            body
        }
        3 => {
            let i = rng.below(body.len() + 1);
            let alphabet: &[u8] = b"{}[],:\"\\0123456789eE+-.nulltruefalse";
            let junk: Vec<u8> = (0..rng.below(20))
                .map(|_| alphabet[rng.below(alphabet.len())])
                .collect();
            body.splice(i..i, junk);
            body
        }
        4 => format!("{}{}", "[".repeat(rng.below(5000)), "]".repeat(rng.below(5000))).into_bytes(),
        5 => {
            let mut v: Value = serde_json::from_slice(valid).unwrap_or(json!({}));
            if let Some(map) = v.as_object_mut() {
                let keys: Vec<String> = map.keys().cloned().collect();
                if !keys.is_empty() {
                    let key = &keys[rng.below(keys.len())];
                    let replacement = [
                        json!(null),
                        json!(-1),
                        json!(1e308),
                        json!("x"),
                        json!([]),
                        json!({}),
                        json!(true),
                    ];
                    map.insert(key.clone(), replacement[rng.below(replacement.len())].clone());
                }
            }
            serde_json::to_vec(&v).unwrap()
        }
        _ => body,
    }
}

async fn counts(app: &TestApp) -> Vec<usize> {
    let mut n = Vec::new();
    for list in [
        "/api/v1/delegate-tokens",
        "/api/v1/connectors",
        "/api/v1/tasks?limit=500",
        "/api/v1/api-keys",
        "/api/v1/delegates",
    ] {
        let answer: Value = app.get(list, Some(ADMIN_KEY)).await.json().await.unwrap();
        n.push(answer["items"].as_array().unwrap().len());
    }
    n
}

#[tokio::test]
async fn arbitrary_request_bodies_get_4xx_never_5xx_and_leave_state_unchanged() {
    let app = spawn_app().await;
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = token["token"].as_str().unwrap().to_owned();
    let routes: Vec<(&str, String, &str, Value)> = vec![
        (
            "POST",
            "/api/v1/delegate-tokens".into(),
            ADMIN_KEY,
            json!({"name": "n", "account": "acme"}),
        ),
        (
            "POST",
            "/api/v1/connectors".into(),
            ADMIN_KEY,
            json!({"name": "c", "account": "acme", "selectors": ["a"]}),
        ),
        (
            "POST",
            "/api/v1/tasks".into(),
            ADMIN_KEY,
            json!({"account": "acme", "type": "echo", "wait_for_delegate": true, "capabilities": [{"kind": "http", "url": "http://x/"}]}),
        ),
        (
            "POST",
            "/api/v1/tasks/explain".into(),
            ADMIN_KEY,
            json!({"account": "acme", "type": "echo"}),
        ),
        (
            "POST",
            "/api/v1/api-keys".into(),
            ADMIN_KEY,
            json!({"name": "k", "account": "acme", "permissions": []}),
        ),
        (
            "POST",
            "/delegate/v1/register".into(),
            secret.as_str(),
            json!({"name": "d", "hostname": "h", "version": "1"}),
        ),
    ];
    let mut rng = Rng(0x5EED_F00D);
    for (method, path, key, valid) in &routes {
        let valid = serde_json::to_vec(valid).unwrap();
        for round in 0..100 {
            let body = mangle(&mut rng, &valid);
            let before = counts(&app).await;
            let request = app
                .client
                .request(method.parse().unwrap(), app.url(path))
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body.clone());
            let response = request
                .send()
                .await
                .unwrap_or_else(|e| panic!("{path} round {round}: connection failed: {e}"));
            let status = response.status();
            assert!(
                !status.is_server_error(),
                "{path} round {round}: {status} for {:?}",
                String::from_utf8_lossy(&body)
            );
            if status.is_client_error() {
                let problem: Value = response.json().await.unwrap_or(Value::Null);
                assert!(problem["type"].is_string(), "{path}: a 4xx without a problem body");
                assert_eq!(
                    counts(&app).await,
                    before,
                    "{path} round {round}: a refused request changed state"
                );
            }
        }
    }
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn arbitrary_socket_frames_close_only_their_own_socket() {
    let app = spawn_app().await;
    let token: Value = app
        .post(
            "/api/v1/delegate-tokens",
            Some(ADMIN_KEY),
            &json!({"name": "t", "account": "acme"}),
        )
        .await
        .json()
        .await
        .unwrap();
    let secret = token["token"].as_str().unwrap();
    let request: switchboard_protocol::delegate::RegisterRequest =
        serde_json::from_value(json!({"name": "d", "hostname": "h", "version": "1"})).unwrap();
    let mut rng = Rng(0xC0FF_EE11);
    let valid = br#"{"type":"heartbeat","running":[]}"#;
    for round in 0..60 {
        let r = switchboard_client::delegate::register(&app.client, &app.url(""), secret, &request)
            .await
            .unwrap();
        let mut req = r.stream_url.as_str().into_client_request().unwrap();
        req.headers_mut()
            .insert("authorization", format!("Bearer {}", r.session_token).parse().unwrap());
        let (mut socket, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let _hello = socket.next().await;
        let frame = match String::from_utf8(mangle(&mut rng, valid)) {
            Ok(text) => Message::text(text),
            Err(e) => Message::binary(e.into_bytes()),
        };
        socket.send(frame).await.unwrap();
        socket.send(Message::Ping(Default::default())).await.unwrap();
        // Either the manager closes with a protocol code, or it stays up and answers the ping.
        loop {
            match tokio::time::timeout(std::time::Duration::from_secs(10), socket.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    let code = u16::from(f.code);
                    assert!([1003, 1007, 1009].contains(&code), "round {round}: closed with {code}");
                    break;
                }
                Ok(Some(Ok(Message::Pong(_)))) => break,
                Ok(Some(Ok(_))) => continue,
                other => panic!("round {round}: {other:?}"),
            }
        }
    }
    assert_eq!(app.get("/healthz", None).await.status(), StatusCode::OK);
}
