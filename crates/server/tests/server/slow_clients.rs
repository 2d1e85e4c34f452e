//! Slow clients are cut off: a request head trickled a byte at a time past
//! `header_read_timeout`, a TLS handshake never begun, and a body trickled past
//! `body_read_timeout` (answered 408 first).
//!
//! The writers are paced by a timer, but no assertion waits on one: each test reads until
//! the server closes the connection, and checks that this happened before the client had
//! sent everything (without the limits, the reads would hang until the test's patience ran
//! out).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::OwnedReadHalf;

use super::support::{ADMIN_KEY, PATIENCE, spawn_app_with};
use super::tls::Pki;

/// A short limit, and a pace three times slower than it for each byte.
const LIMIT: Duration = Duration::from_millis(300);
const PACE: Duration = Duration::from_millis(100);

/// What a trickling client saw.
struct Trickled {
    /// Everything the server sent before it closed the connection.
    received: String,
    /// How many of the trickled bytes had been written when it did.
    sent: usize,
}

/// Connects to `address`, writes `prefix` at once, then `slowly` one byte per [`PACE`]
/// (keeping the connection open after the last), and reads until the server closes it.
async fn trickle(address: SocketAddr, prefix: &[u8], slowly: &[u8]) -> Trickled {
    let stream = TcpStream::connect(address).await.unwrap();
    let (mut reader, mut writer) = stream.into_split();
    writer.write_all(prefix).await.unwrap();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&sent);
    let bytes = slowly.to_vec();
    let pacer = tokio::spawn(async move {
        let mut ticks = tokio::time::interval(PACE);
        for byte in bytes {
            ticks.tick().await;
            if writer.write_all(&[byte]).await.is_err() {
                return;
            }
            counter.fetch_add(1, Ordering::SeqCst);
        }
        // Never half-close: the server must cut us off on its own.
        std::future::pending::<()>().await;
    });
    let received = tokio::time::timeout(PATIENCE, read_until_closed(&mut reader))
        .await
        .expect("the server closes the connection");
    let sent = sent.load(Ordering::SeqCst);
    pacer.abort();
    Trickled {
        received: String::from_utf8_lossy(&received).into_owned(),
        sent,
    }
}

async fn read_until_closed(reader: &mut OwnedReadHalf) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        match reader.read(&mut buffer).await {
            Ok(0) => return received,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            // A reset is a close too (the server dropped the connection with our bytes unread).
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return received,
            Err(e) => panic!("reading failed: {e}"),
        }
    }
}

#[tokio::test]
async fn a_request_head_sent_a_byte_at_a_time_is_cut_off_at_the_header_read_timeout() {
    let app = spawn_app_with(|s| s.header_read_timeout = LIMIT).await;
    let head = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nUser-Agent: one-byte-at-a-time\r\n\r\n",
        app.address
    );
    let seen = trickle(app.address, b"", head.as_bytes()).await;
    assert!(
        seen.sent < head.len(),
        "closed before the head was complete ({} of {} bytes sent)",
        seen.sent,
        head.len()
    );
    assert!(!seen.received.contains("200 OK"), "{}", seen.received);
    // Others are still served.
    assert_eq!(app.get("/healthz", None).await.status(), 200);
}

#[tokio::test]
async fn a_tls_handshake_that_never_comes_is_cut_off_at_the_header_read_timeout() {
    let pki = Pki::generate();
    let app = spawn_app_with(|s| {
        s.tls_cert = Some(pki.cert.clone());
        s.tls_key = Some(pki.key.clone());
        s.header_read_timeout = LIMIT;
    })
    .await;
    let seen = trickle(app.address, b"", b"").await;
    assert!(seen.received.is_empty(), "{}", seen.received);
}

#[tokio::test]
async fn a_body_sent_a_byte_at_a_time_is_answered_408_and_the_connection_closed() {
    let app = spawn_app_with(|s| s.body_read_timeout = LIMIT).await;
    let body = format!(
        "{{\"account\": \"acme\", \"type\": \"echo\", \"payload\": {{}}}}{}",
        " ".repeat(150)
    );
    let head = format!(
        "POST /api/v1/tasks HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {ADMIN_KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.address,
        body.len()
    );
    let seen = trickle(app.address, head.as_bytes(), body.as_bytes()).await;
    assert!(
        seen.sent < body.len(),
        "closed before the body was complete ({} of {} bytes sent)",
        seen.sent,
        body.len()
    );
    let response = seen.received.to_ascii_lowercase();
    assert!(response.starts_with("http/1.1 408"), "{}", seen.received);
    assert!(response.contains("connection: close"), "{}", seen.received);
    assert!(
        response.contains("content-type: application/problem+json"),
        "{}",
        seen.received
    );
    assert!(
        seen.received.contains("https://switchboard.dev/problems/timeout"),
        "{}",
        seen.received
    );
    assert!(
        seen.received.contains("300ms"),
        "the detail names the limit: {}",
        seen.received
    );
}
