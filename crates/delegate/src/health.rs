//! `--health-listen`: `GET /healthz` for a liveness probe (Kubernetes, a load balancer).
//!
//! 200 `{"status": "ok", "connected": bool}` while the process runs: a delegate whose
//! socket is down is still alive (it is reconnecting, with backoff), so liveness does not
//! depend on the manager; `connected` says whether it is reachable now. Any other path is
//! 404. One request per connection, read with a bound, so a slow or hostile client holds
//! nothing for long.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Whether the socket to the manager is up, as the agent last saw it.
#[derive(Debug, Clone, Default)]
pub struct Health(Arc<AtomicBool>);

impl Health {
    pub fn set_connected(&self, up: bool) {
        self.0.store(up, Ordering::Relaxed);
    }

    fn connected(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Binds `addr` (so a port already taken fails the start, not later) and serves until the
/// runtime stops.
pub async fn serve(addr: SocketAddr, health: Health) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let health = health.clone();
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(5), answer(stream, &health)).await;
            });
        }
    });
    Ok(bound)
}

async fn answer(mut stream: tokio::net::TcpStream, health: &Health) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(256);
    let mut buf = [0u8; 512];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 8192 {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(&head);
    let target = line.split_whitespace().nth(1).unwrap_or("");
    let (status, body) = match (line.starts_with("GET ") || line.starts_with("HEAD "), target) {
        (true, "/healthz") => (
            "200 OK",
            format!("{{\"status\":\"ok\",\"connected\":{}}}", health.connected()),
        ),
        _ => ("404 Not Found", "{\"status\":\"not found\"}".to_owned()),
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("GET {path} HTTP/1.1\r\nhost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn healthz_answers_200_with_the_socket_state_and_other_paths_404() {
        let health = Health::default();
        let addr = serve("127.0.0.1:0".parse().unwrap(), health.clone()).await.unwrap();
        let down = get(addr, "/healthz").await;
        assert!(down.starts_with("HTTP/1.1 200"), "{down}");
        assert!(down.ends_with("{\"status\":\"ok\",\"connected\":false}"), "{down}");
        health.set_connected(true);
        assert!(get(addr, "/healthz").await.contains("\"connected\":true"));
        assert!(get(addr, "/other").await.starts_with("HTTP/1.1 404"));
    }
}
