//! The fault suite's network: a TCP relay in front of PostgreSQL (cut and restored to look
//! like a database restart; the shared PostgreSQL itself is never touched) and a
//! round-robin TCP load balancer in front of the replicas (the one URL delegates and the
//! submitter know), which can also drop every connection it carries at once.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Forwards connections to `upstream` while open; when cut, drops every connection it
/// carries and closes new ones at once.
pub(super) struct Relay {
    pub(super) address: String,
    open: watch::Sender<bool>,
}

impl Relay {
    pub(super) async fn start(upstream: String) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (open, watching) = watch::channel(true);
        let upstream = Arc::new(upstream);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cut = watching.clone();
                if !*cut.borrow() {
                    continue; // dropped: closed at once
                }
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cut.wait_for(|open| !*open) => {}
                    }
                });
            }
        });
        Relay { address, open }
    }

    pub(super) fn cut(&self) {
        self.open.send_replace(false);
    }

    pub(super) fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// Spreads connections over `upstreams` in turn, skipping any that refuses the connection
/// (a replica that is down), as a TCP load balancer with connect-failure retry does.
pub(super) struct Balancer {
    pub(super) address: String,
    /// Bumped to drop every connection carried so far.
    generation: watch::Sender<u64>,
}

impl Balancer {
    pub(super) async fn start(upstreams: Vec<String>) -> Balancer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let (generation, watching) = watch::channel(0u64);
        let upstreams = Arc::new(upstreams);
        let next = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (upstreams, next) = (upstreams.clone(), next.clone());
                let mut reset = watching.clone();
                reset.mark_unchanged();
                tokio::spawn(async move {
                    let first = next.fetch_add(1, Ordering::Relaxed);
                    for i in 0..upstreams.len() {
                        let upstream = &upstreams[(first + i) % upstreams.len()];
                        let Ok(mut server) = TcpStream::connect(upstream.as_str()).await else {
                            continue;
                        };
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = reset.changed() => {}
                        }
                        return;
                    }
                    // Every upstream refused: the client sees its connection closed.
                });
            }
        });
        Balancer { address, generation }
    }

    /// Drops every connection carried now (each delegate's socket among them); new ones
    /// are taken as usual.
    pub(super) fn reset(&self) {
        self.generation.send_modify(|g| *g += 1);
    }
}
