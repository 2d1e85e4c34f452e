//! Real local listeners for the probe, check, task and registration tests: no mocks, no
//! sleeps.
//!
//! Each helper binds 127.0.0.1:0 so tests run in parallel without port clashes.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One canned HTTP answer.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Empty: read the request, then hang up without answering (a transport error).
    pub status_line: &'static str,
    pub content_type: &'static str,
    pub body: String,
}

impl Answer {
    pub fn hang_up() -> Answer {
        Answer {
            status_line: "",
            content_type: "",
            body: String::new(),
        }
    }
}

/// A tiny HTTP server that answers every request with `status_line` (e.g. `404 Not
/// Found`) and an empty body. It runs until the test's runtime ends.
pub async fn http_responder(status_line: &'static str) -> SocketAddr {
    scripted_http(vec![Answer {
        status_line,
        content_type: "text/plain",
        body: String::new(),
    }])
    .await
    .0
}

/// A tiny HTTP server that gives `answers` in order, one per request (the last one
/// again once they run out), and records each request's body.
pub async fn scripted_http(answers: Vec<Answer>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&bodies);
    tokio::spawn(async move {
        let mut next = 0;
        while let Ok((mut socket, _)) = listener.accept().await {
            let answer = answers[next.min(answers.len() - 1)].clone();
            next += 1;
            let seen = Arc::clone(&seen);
            tokio::spawn(async move {
                let _ = read_request(&mut socket, answer, seen).await;
            });
        }
    });
    (addr, bodies)
}

/// Reads one request (head and `content-length` body) so the client never sees its
/// request cut off, then answers and closes.
async fn read_request(socket: &mut TcpStream, answer: Answer, seen: Arc<Mutex<Vec<String>>>) -> Option<()> {
    let mut data = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
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
        match socket.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => data.extend_from_slice(&buf[..n]),
        }
    }
    seen.lock()
        .unwrap()
        .push(String::from_utf8_lossy(&data[head_end..head_end + length]).into_owned());
    if answer.status_line.is_empty() {
        return None;
    }
    let response = format!(
        "HTTP/1.1 {}\r\ncontent-type: {}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{}",
        answer.status_line,
        answer.content_type,
        answer.body.len(),
        answer.body
    );
    socket.write_all(response.as_bytes()).await.ok()?;
    socket.shutdown().await.ok()
}

/// An address where nothing listens: bound, then released, so a connect is refused.
pub async fn refused_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap()
}

/// A listener that accepts connections (the kernel completes the handshake) but never
/// answers: keep it alive for the test so requests to it hang until their timeout.
pub async fn silent_listener() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// What a fake manager socket saw from the delegate.
#[derive(Debug, Clone, PartialEq)]
pub enum Seen {
    Message(switchboard_protocol::socket::DelegateMessage),
    /// The delegate closed the socket (or it dropped).
    Closed,
}

/// One delegate connection to a [`fake_stream`].
#[derive(Debug)]
pub struct FakeSocket {
    pub send: tokio::sync::mpsc::Sender<switchboard_protocol::socket::ServerMessage>,
    pub seen: tokio::sync::mpsc::Receiver<Seen>,
}

impl FakeSocket {
    /// The next message from the delegate that is not a heartbeat.
    pub async fn next_non_heartbeat(&mut self) -> Seen {
        loop {
            match self.seen.recv().await {
                Some(Seen::Message(switchboard_protocol::socket::DelegateMessage::Heartbeat { .. })) => continue,
                Some(other) => return other,
                None => return Seen::Closed,
            }
        }
    }
}

/// A fake manager WebSocket endpoint: says hello on every connection and hands each one
/// to the test as a [`FakeSocket`]. Returns its `ws://` URL.
pub async fn fake_stream() -> (String, tokio::sync::mpsc::Receiver<FakeSocket>) {
    use futures::{SinkExt, StreamExt};
    use switchboard_domain::InstanceId;
    use switchboard_protocol::socket::{PROTOCOL_VERSION, ServerMessage};
    use tokio_tungstenite::tungstenite::Message;

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("ws://{}/delegate/v1/stream", listener.local_addr().unwrap());
    let (sockets_tx, sockets) = tokio::sync::mpsc::channel(8);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
                continue;
            };
            let (mut sink, mut frames) = ws.split();
            let (send, mut outgoing) = tokio::sync::mpsc::channel::<ServerMessage>(8);
            let (seen_tx, seen) = tokio::sync::mpsc::channel(64);
            let _ = sockets_tx.send(FakeSocket { send, seen }).await;
            tokio::spawn(async move {
                let hello = ServerMessage::Hello {
                    protocol: PROTOCOL_VERSION,
                    instance_id: InstanceId::new(),
                    heartbeat_interval_ms: 60_000,
                    server_time: chrono::Utc::now(),
                };
                let _ = sink.send(Message::text(serde_json::to_string(&hello).unwrap())).await;
                loop {
                    tokio::select! {
                        Some(message) = outgoing.recv() => {
                            let _ = sink.send(Message::text(serde_json::to_string(&message).unwrap())).await;
                        }
                        frame = frames.next() => match frame {
                            Some(Ok(Message::Text(text))) => {
                                let parsed = serde_json::from_str(&text).unwrap();
                                let _ = seen_tx.send(Seen::Message(parsed)).await;
                            }
                            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                                let _ = seen_tx.send(Seen::Closed).await;
                                return;
                            }
                            Some(Ok(_)) => {}
                        },
                    }
                }
            });
        }
    });
    (url, sockets)
}
