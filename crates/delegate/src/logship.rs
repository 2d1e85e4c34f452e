//! Ships a running task's output to the manager's task log.
//!
//! The task writes text to an [`Output`]; the shipper gathers it for up to
//! [`GATHER`] or [`BATCH_BYTES`], whichever comes first, and appends it as one chunk
//! (`POST /delegate/v1/tasks/{id}/logs`), so a chatty task costs a few requests a second,
//! not one per line. Each chunk carries its byte offset in the attempt's output, so a
//! chunk retried after a lost answer is kept once. A transient failure is retried with
//! backoff for a while; a refusal that retrying cannot change (the attempt is over, or
//! not this instance's) stops the shipping, and what the task prints after that is
//! dropped. Logs never hold up the task: its result is reported once the shipper has
//! sent what it had ([`Shipper::finish`]), or given up.

use std::time::Duration;

use switchboard_client::delegate::{Backoff, TaskClient};
use switchboard_domain::tasklog::CHUNK_MAX_BYTES;
use switchboard_domain::{Attempt, TaskId};
use switchboard_protocol::delegate::LogAppendBody;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use crate::tasks::Output;

/// How long output is gathered before it is sent.
pub const GATHER: Duration = Duration::from_millis(200);

/// How much output is sent in one chunk at most (well under the manager's limit).
pub const BATCH_BYTES: usize = 64 * 1024;

/// How many writes may wait for the shipper before the task's writes wait too.
const QUEUE: usize = 64;

/// How long one chunk is retried while the manager cannot take it.
const PATIENCE: Duration = Duration::from_secs(30);

const BACKOFF: Backoff = Backoff {
    initial: Duration::from_millis(100),
    max: Duration::from_secs(5),
};

/// The shipper of one attempt's output.
#[derive(Debug)]
pub struct Shipper {
    output: Output,
    done: JoinHandle<Shipped>,
}

/// What the shipper did, for its log line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Shipped {
    pub chunks: u64,
    pub bytes: u64,
    /// Bytes the task wrote after the manager refused a chunk or could not be reached.
    pub dropped: u64,
}

impl Shipper {
    /// Starts shipping `task`'s output for `attempt` through `tasks`, with each of
    /// `secrets` (the task's secret values) masked as `***`.
    pub fn start(tasks: TaskClient, task: TaskId, attempt: Attempt, secrets: Vec<String>) -> Shipper {
        let (tx, rx) = mpsc::channel(QUEUE);
        Shipper {
            output: Output::to(tx),
            done: tokio::spawn(ship(tasks, task, attempt, secrets, rx)),
        }
    }

    /// Where the task writes.
    pub fn output(&self) -> Output {
        self.output.clone()
    }

    /// Sends what is left once the task has ended (and every clone of its output is
    /// gone), and says what was shipped.
    pub async fn finish(self) -> Shipped {
        drop(self.output);
        self.done.await.unwrap_or_default()
    }
}

async fn ship(
    tasks: TaskClient,
    task: TaskId,
    attempt: Attempt,
    secrets: Vec<String>,
    mut rx: mpsc::Receiver<String>,
) -> Shipped {
    let mut shipped = Shipped::default();
    let mut offset = 0u64;
    let mut refused = false;
    loop {
        let Some(first) = rx.recv().await else { break };
        let (batch, closed) = gather(first, &mut rx).await;
        // Masked before it is cut into chunks, so offsets count what is sent.
        let batch = switchboard_domain::vault::mask(&batch, &secrets).unwrap_or(batch);
        if refused {
            shipped.dropped += batch.len() as u64;
        } else {
            for piece in pieces(&batch, CHUNK_MAX_BYTES) {
                if refused {
                    shipped.dropped += piece.len() as u64;
                    continue;
                }
                let chunk = LogAppendBody {
                    attempt,
                    offset,
                    text: piece.to_owned(),
                };
                if send(&tasks, task, &chunk).await {
                    shipped.chunks += 1;
                    shipped.bytes += piece.len() as u64;
                } else {
                    refused = true;
                    shipped.dropped += piece.len() as u64;
                }
                // The offset moves on either way: it is where the text sits in the output.
                offset += piece.len() as u64;
            }
        }
        if closed {
            break;
        }
    }
    if shipped.dropped > 0 {
        tracing::warn!(task.id = %task, task.attempt = %attempt, bytes = shipped.dropped, "part of the task's output did not reach the manager");
    }
    shipped
}

/// `first`, and whatever more arrives within [`GATHER`] up to [`BATCH_BYTES`]; says
/// whether the output was closed meanwhile.
async fn gather(first: String, rx: &mut mpsc::Receiver<String>) -> (String, bool) {
    let mut batch = first;
    let until = tokio::time::Instant::now() + GATHER;
    while batch.len() < BATCH_BYTES {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Ok(Some(more)) => batch.push_str(&more),
            Ok(None) => return (batch, true),
            Err(_) => break,
        }
    }
    (batch, false)
}

/// Appends one chunk, retrying transient failures; whether it was taken.
async fn send(tasks: &TaskClient, task: TaskId, chunk: &LogAppendBody) -> bool {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut tries = 0u32;
    loop {
        match tasks.append_log(task, chunk).await {
            Ok(_) => return true,
            Err(e) if e.is_transient() => {
                let delay = BACKOFF.delay(tries);
                tries = tries.saturating_add(1);
                if tokio::time::Instant::now() + delay > deadline {
                    tracing::warn!(task.id = %task, error = %e, "cannot append to the task's log; giving up");
                    return false;
                }
                tokio::time::sleep(delay).await;
            }
            Err(e) => {
                tracing::info!(task.id = %task, error = %e, "the manager refused the task's output; no more is sent");
                return false;
            }
        }
    }
}

/// `text` in pieces of at most `max` bytes, each cut at a character boundary.
fn pieces(text: &str, max: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max);
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end == 0 {
            // `max` is smaller than the first character: that character alone.
            end = rest.chars().next().map_or(rest.len(), char::len_utf8);
        }
        let (piece, after) = rest.split_at(end);
        rest = after;
        Some(piece)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_are_bounded_and_cut_between_characters() {
        let text = "aé".repeat(3); // 9 bytes: a(1) é(2)
        let got: Vec<&str> = pieces(&text, 2).collect();
        assert!(got.iter().all(|p| p.len() <= 2), "{got:?}");
        assert_eq!(got.concat(), text);
        assert_eq!(pieces("", 4).count(), 0);
    }

    #[tokio::test]
    async fn gathering_stops_at_the_batch_size_and_when_the_output_closes() {
        let (tx, mut rx) = mpsc::channel(QUEUE);
        let big = "x".repeat(BATCH_BYTES);
        tx.send(big.clone()).await.unwrap();
        tx.send("after".into()).await.unwrap();
        let (batch, closed) = gather("first ".into(), &mut rx).await;
        assert_eq!(batch.len(), "first ".len() + BATCH_BYTES);
        assert!(!closed);
        drop(tx);
        let (batch, closed) = gather(String::new(), &mut rx).await;
        assert_eq!((batch.as_str(), closed), ("after", true));
    }
}
