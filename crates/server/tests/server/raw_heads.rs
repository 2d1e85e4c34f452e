//! Request heads hyper could not parse are answered like every other error: a garbage
//! request line (400 `bad-request`), a request line over the limit (414 `uri-too-long`),
//! too many header fields or too large a head (431 `headers-too-large`) each get
//! problem+json with an `x-request-id`, and the connection closes. On a fresh connection,
//! on a keep-alive connection after a good request, with the bad head pipelined behind a
//! good one, and over TLS. Raw sockets, since no HTTP client sends such heads.

use std::collections::HashMap;

use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::support::{PATIENCE, spawn_app};
use super::tls::{Pki, spawn_tls_app};

/// One answer read off the wire.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: HashMap<String, String>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(String::as_str)
    }
}

/// Reads one answer (its head, then a body of its `content-length`).
async fn read_answer<S: AsyncRead + Unpin>(stream: &mut S, buffered: &mut Vec<u8>) -> Answer {
    let end = loop {
        if let Some(end) = buffered.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(
            n > 0,
            "the connection closed before an answer: {:?}",
            String::from_utf8_lossy(buffered)
        );
        buffered.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8(buffered[..end].to_vec()).expect("an ASCII head");
    buffered.drain(..end + 4);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: HashMap<String, String> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length").map_or(0, |v| v.parse().unwrap());
    while buffered.len() < length {
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await.expect("read");
        assert!(n > 0, "the connection closed mid-body");
        buffered.extend_from_slice(&chunk[..n]);
    }
    let body = buffered.drain(..length).collect();
    Answer { status, headers, body }
}

/// The bad heads, with the status and problem type each must get.
fn bad_heads() -> Vec<(&'static str, Vec<u8>, u16, &'static str)> {
    let long_line = format!("GET /api/v1/tasks?q={} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(9000));
    let many: String = (0..101).map(|i| format!("x-field-{i}: v\r\n")).collect();
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nx-big: {}\r\n\r\n",
        "v".repeat(70_000)
    );
    vec![
        ("garbage", b"NOT HTTP AT ALL\r\n\r\n".to_vec(), 400, "bad-request"),
        (
            "binary",
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n".to_vec(),
            400,
            "bad-request",
        ),
        ("long request line", long_line.into_bytes(), 414, "uri-too-long"),
        (
            "101 header fields",
            format!("GET /healthz HTTP/1.1\r\n{many}\r\n").into_bytes(),
            431,
            "headers-too-large",
        ),
        ("a 70 kB header", big.into_bytes(), 431, "headers-too-large"),
    ]
}

const GOOD: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

/// Checks `answer` is the problem `slug` with `status`, with a request id.
fn assert_problem(what: &str, answer: &Answer, status: u16, slug: &str) {
    assert_eq!(answer.status, status, "{what}: {answer:?}");
    assert_eq!(
        answer.header("content-type"),
        Some("application/problem+json"),
        "{what}"
    );
    let id = answer.header("x-request-id").unwrap_or_default();
    assert!(uuid::Uuid::parse_str(id).is_ok(), "{what}: request id {id:?}");
    let body: Value = serde_json::from_slice(&answer.body).expect("a JSON body");
    assert_eq!(
        body["type"],
        format!("https://switchboard.dev/problems/{slug}"),
        "{what}: {body}"
    );
    assert_eq!(body["status"], status, "{what}: {body}");
    assert!(
        !body["detail"].as_str().unwrap_or_default().is_empty(),
        "{what}: {body}"
    );
}

/// Sends `before` (good requests, each answered 200) and then `bad` on one connection,
/// and checks the answers, in order, and that the connection then closes.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    what: &str,
    pipelined: bool,
    bad: &[u8],
    status: u16,
    slug: &str,
) {
    let mut buffered = Vec::new();
    if pipelined {
        // The good request and the bad head in one write: the good one is still answered first.
        stream.write_all(&[GOOD, bad].concat()).await.unwrap();
        let good = read_answer(&mut stream, &mut buffered).await;
        assert_eq!(good.status, 200, "{what}");
    } else {
        stream.write_all(GOOD).await.unwrap();
        assert_eq!(read_answer(&mut stream, &mut buffered).await.status, 200, "{what}");
        stream.write_all(bad).await.unwrap();
    }
    let answer = read_answer(&mut stream, &mut buffered).await;
    assert_problem(what, &answer, status, slug);
    assert_eq!(answer.header("connection"), Some("close"), "{what}");
    let mut rest = Vec::new();
    stream.read_to_end(&mut rest).await.expect("a clean close");
    assert!(buffered.is_empty() && rest.is_empty(), "{what}: more after the answer");
}

#[tokio::test]
async fn a_head_hyper_cannot_parse_is_a_problem_with_a_request_id_on_fresh_and_kept_alive_connections() {
    let app = spawn_app().await;
    tokio::time::timeout(PATIENCE, async {
        for (what, bad, status, slug) in bad_heads() {
            // First on its connection.
            let mut stream = TcpStream::connect(app.address).await.unwrap();
            stream.write_all(&bad).await.unwrap();
            let mut buffered = Vec::new();
            let answer = read_answer(&mut stream, &mut buffered).await;
            assert_problem(what, &answer, status, slug);
            // After a good request on a kept-alive connection, and pipelined behind one.
            for pipelined in [false, true] {
                let stream = TcpStream::connect(app.address).await.unwrap();
                exchange(stream, what, pipelined, &bad, status, slug).await;
            }
        }
    })
    .await
    .expect("every exchange ends");
    app.stop().await.unwrap();
}

#[tokio::test]
async fn good_requests_with_bodies_keep_a_connection_alive_through_the_guard() {
    let app = spawn_app().await;
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let mut buffered = Vec::new();
    // A sized body and a chunked one whose data looks like a bad head: bodies are not heads.
    let sized = b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\nNOT HTTP AT ALL\r\n";
    let chunked = b"POST /api/v1/tasks HTTP/1.1\r\nHost: x\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n11\r\nNOT HTTP AT ALL\r\n\r\n0\r\n\r\n";
    for request in [&sized[..], &chunked[..], GOOD] {
        stream.write_all(request).await.unwrap();
        let answer = read_answer(&mut stream, &mut buffered).await;
        // No key: 401 from the route, not a refusal of the head; and the connection lives on.
        assert!(matches!(answer.status, 200 | 401), "{answer:?}");
        assert_ne!(answer.header("connection"), Some("close"), "{answer:?}");
    }
    app.stop().await.unwrap();
}

#[tokio::test]
async fn a_head_hyper_cannot_parse_is_a_problem_over_tls_too() {
    let pki = Pki::generate();
    let app = spawn_tls_app(&pki).await;
    let connector = tokio_rustls::TlsConnector::from(pki.tls().rustls_config());
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    tokio::time::timeout(PATIENCE, async {
        for (what, bad, status, slug) in bad_heads() {
            let tcp = TcpStream::connect(app.address).await.unwrap();
            let tls = connector.connect(name.clone(), tcp).await.expect("TLS handshake");
            exchange(tls, what, false, &bad, status, slug).await;
        }
    })
    .await
    .expect("every exchange ends");
    app.stop().await.unwrap();
}
