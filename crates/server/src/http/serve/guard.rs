//! The request-head guard: every request head on a connection is checked here, with the
//! parser hyper itself uses (httparse), before hyper reads it.
//!
//! Why: on a head it cannot parse (a garbage request line, a request line over its limit,
//! too many or too large headers), hyper's HTTP/1 server writes a bare 400, 414 or 431 of
//! its own, with no body, no content type and no request id, before any service runs and
//! with no hook to change it. The API promises problem+json with an `x-request-id` for
//! every answer, so such a head must never reach hyper.
//!
//! How: [`Guarded`] sits between the (maybe TLS) stream and hyper. It hands hyper a head
//! only once the whole head has arrived and passed the documented limits
//! ([`MAX_REQUEST_LINE`], [`MAX_HEADERS`], [`MAX_HEAD`]) and hyper's own rules (method,
//! target, header names, message framing). A head that fails is replaced by a one-line
//! stand-in request (`GET / HTTP/1.1`, `Connection: close`), and the [`Refusal`] is left in
//! [`Refusals`] under that request's position on the connection: the service sees the
//! stand-in, answers the refusal as problem+json instead of routing it, and hyper closes
//! the connection after that answer. Answering through hyper keeps the order of answers on
//! a keep-alive (or pipelined) connection: the refusal goes out after the answers to the
//! requests before it.
//!
//! To find where each head starts, the guard follows each request's body framing
//! (`Content-Length`, or the chunked coding's chunk sizes), passing body bytes through
//! unexamined. After a request that asks for an upgrade (the delegate sockets) or a
//! `CONNECT`, and after framing it cannot follow (hyper then refuses the body itself), it
//! steps aside for the rest of the connection.
//!
//! Cost on the normal path: each head is parsed twice (here and by hyper), and copied
//! once more; body bytes of a `Content-Length` body are read straight into hyper's buffer.
//! Measured on keep-alive `GET /healthz` and 1 MiB POSTs, the difference is within noise.
//! A head trickled in small pieces is parsed again only when one of its lines ends, so a
//! slow client cannot make the guard parse a 64 KiB head once per byte (and hyper, which
//! reparses its buffer on every read, now gets each head whole).

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::{Context, Poll, ready};

use axum::http::{HeaderName, Method, Uri};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::http::error::Problem;

/// The longest request line (method, target and version), in bytes: longer is 414.
pub const MAX_REQUEST_LINE: usize = 8 * 1024;

/// The most header fields in a request: more is 431. Also hyper's own limit, set from
/// this, so the two cannot disagree.
pub const MAX_HEADERS: usize = 100;

/// The largest request head (request line and header fields), in bytes: larger is 431.
/// Well under hyper's own read buffer limit (about 400 KiB), which is never reached.
pub const MAX_HEAD: usize = 64 * 1024;

/// The longest line of the chunked coding (a chunk size with its extensions, a trailer)
/// the guard follows; past it the guard steps aside and hyper judges the body.
const MAX_CHUNK_LINE: usize = 4096;

/// What hyper reads in place of a refused head: a request it parses, which asks it to
/// close the connection after answering.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nconnection: close\r\n\r\n";

/// A request head the guard refused, and why, for the service to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub problem: Problem,
    pub detail: String,
}

impl Refusal {
    fn new(problem: Problem, detail: impl Into<String>) -> Self {
        Self {
            problem,
            detail: detail.into(),
        }
    }
}

/// Shared by a connection's [`Guarded`] stream and its service: the refusal, if any, and
/// which of the connection's requests stands for it.
#[derive(Debug, Default)]
pub struct Refusals {
    /// Set once a refusal is stored; the service's only cost on the normal path.
    armed: AtomicBool,
    /// The refusal, with the position (from 0, in the order hyper hands requests to the
    /// service) of the stand-in request that carries it.
    slot: Mutex<Option<(u64, Refusal)>>,
    /// Requests the service has seen.
    served: AtomicU64,
}

impl Refusals {
    /// Called by the service for every request hyper hands it, in order: the refusal this
    /// request stands for, or `None` for a real request.
    pub fn next(&self) -> Option<Refusal> {
        let position = self.served.fetch_add(1, Ordering::Relaxed);
        if !self.armed.load(Ordering::Acquire) {
            return None;
        }
        let mut slot = self.slot.lock().unwrap_or_else(PoisonError::into_inner);
        match slot.take() {
            Some((at, refusal)) if at == position => Some(refusal),
            other => {
                *slot = other;
                None
            }
        }
    }

    fn store(&self, position: u64, refusal: Refusal) {
        *self.slot.lock().unwrap_or_else(PoisonError::into_inner) = Some((position, refusal));
        self.armed.store(true, Ordering::Release);
    }
}

/// Where the guard is in the client's byte stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// At (or inside) a request head.
    Head,
    /// Inside a `Content-Length` body, with this many bytes to go.
    Body(u64),
    /// Inside a chunked body.
    Chunked(Chunk),
    /// Stepped aside: everything goes to hyper unexamined.
    Through,
    /// A head was refused and the stand-in handed over: nothing more is read.
    Refused,
}

/// Where the guard is in a chunked body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chunk {
    /// At a chunk-size line.
    Size,
    /// Inside a chunk's data, with this many bytes to go.
    Data(u64),
    /// At the line end after a chunk's data.
    DataEnd,
    /// After the last chunk: trailer fields until an empty line.
    Trailers,
}

/// What a head's check found.
#[derive(Debug, PartialEq, Eq)]
enum Check {
    /// More bytes are needed.
    Partial,
    /// A good head of `len` bytes, followed by a body framed so.
    Complete {
        len: usize,
        then: State,
    },
    Refused(Refusal),
}

/// A stream whose request heads are checked before hyper reads them (see the module docs).
#[derive(Debug)]
pub struct Guarded<S> {
    inner: S,
    state: State,
    /// Read from the client and not yet checked.
    pending: Vec<u8>,
    /// Checked, for hyper to read, from `ready_at` on.
    ready: Vec<u8>,
    ready_at: usize,
    /// Heads handed to hyper so far (the stand-in included).
    heads: u64,
    /// How much of the head being received has been looked at, and its line ends there.
    scanned: usize,
    lines: usize,
    /// The client closed its side.
    eof: bool,
    refusals: std::sync::Arc<Refusals>,
}

impl<S> Guarded<S> {
    pub fn new(inner: S, refusals: std::sync::Arc<Refusals>) -> Self {
        Self {
            inner,
            state: State::Head,
            pending: Vec::new(),
            ready: Vec::new(),
            ready_at: 0,
            heads: 0,
            scanned: 0,
            lines: 0,
            eof: false,
            refusals,
        }
    }

    /// Moves the first `n` pending bytes to hyper's side.
    fn pass(&mut self, n: usize) {
        self.ready.extend(self.pending.drain(..n));
    }

    /// Examines pending bytes as far as they go; `true` when something changed.
    fn advance(&mut self) -> bool {
        match self.state {
            State::Head => self.head(),
            State::Body(left) => {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.pending.len());
                if n == 0 {
                    return false;
                }
                self.pass(n);
                let left = left - n as u64;
                self.state = if left == 0 { State::Head } else { State::Body(left) };
                true
            }
            State::Chunked(chunk) => self.chunked(chunk),
            State::Through if self.pending.is_empty() => false,
            State::Through => {
                self.pass(self.pending.len());
                true
            }
            State::Refused => false,
        }
    }

    /// Checks the head being received, once there is something new to judge.
    ///
    /// The head is parsed again only when a line of it has ended (or a limit is passed),
    /// never for each byte of a trickled line: at most about [`MAX_HEADERS`] parses of at
    /// most [`MAX_HEAD`] bytes per head, whatever the client's pace.
    fn head(&mut self) -> bool {
        // Empty lines before a request line are to be ignored (RFC 9112 §2.2): dropped
        // here, so they count against nothing.
        let blank = self.pending.iter().take_while(|b| matches!(b, b'\r' | b'\n')).count();
        if blank > 0 && self.scanned == 0 {
            self.pending.drain(..blank);
        }
        if self.pending.is_empty() {
            return false;
        }
        let fresh = self.pending[self.scanned.min(self.pending.len())..]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        self.lines += fresh;
        self.scanned = self.pending.len();
        let over = (self.lines == 0 && self.pending.len() > MAX_REQUEST_LINE + 1) || self.pending.len() > MAX_HEAD;
        if fresh == 0 && !over {
            return false;
        }
        let outcome = check(&self.pending);
        if outcome != Check::Partial {
            (self.scanned, self.lines) = (0, 0);
        }
        match outcome {
            Check::Partial => false,
            Check::Complete { len, then } => {
                self.pass(len);
                self.heads += 1;
                self.state = then;
                true
            }
            Check::Refused(refusal) => {
                self.refusals.store(self.heads, refusal);
                self.heads += 1;
                self.pending.clear();
                // After whatever checked bytes hyper has yet to read, so answers stay in
                // order.
                self.ready.extend_from_slice(STAND_IN);
                self.state = State::Refused;
                true
            }
        }
    }

    /// Follows a chunked body through the pending bytes.
    fn chunked(&mut self, mut chunk: Chunk) -> bool {
        let mut changed = false;
        loop {
            if let Chunk::Data(left) = chunk {
                let n = usize::try_from(left).unwrap_or(usize::MAX).min(self.pending.len());
                if n == 0 {
                    break;
                }
                self.pass(n);
                changed = true;
                let left = left - n as u64;
                chunk = if left == 0 { Chunk::DataEnd } else { Chunk::Data(left) };
                continue;
            }
            let Some(end) = self.pending.iter().position(|b| *b == b'\n') else {
                if self.pending.len() > MAX_CHUNK_LINE {
                    self.state = State::Through;
                    return true;
                }
                break;
            };
            let line = &self.pending[..end];
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            let next = match chunk {
                Chunk::Size => chunk_size(line).map(|size| if size == 0 { Chunk::Trailers } else { Chunk::Data(size) }),
                Chunk::DataEnd => line.is_empty().then_some(Chunk::Size),
                Chunk::Trailers if line.is_empty() => {
                    self.pass(end + 1);
                    self.state = State::Head;
                    return true;
                }
                Chunk::Trailers => Some(Chunk::Trailers),
                Chunk::Data(_) => unreachable!("handled above"),
            };
            self.pass(end + 1);
            changed = true;
            match next {
                Some(next) => chunk = next,
                // Not framing the guard can follow: hyper reads the rest and refuses it.
                None => {
                    self.state = State::Through;
                    return true;
                }
            }
        }
        self.state = State::Chunked(chunk);
        changed
    }
}

/// The size of a chunk-size line (`1a;ext=v`), or `None` if it is not one.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let digits = line.split(|b| *b == b';').next()?;
    let digits = std::str::from_utf8(digits).ok()?.trim_matches([' ', '\t']);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Checks the head at the start of `buf` (see the module docs for the rules).
fn check(buf: &[u8]) -> Check {
    // RFC 9112 §2.2: empty lines before the request line are skipped (httparse does).
    let start = buf.iter().position(|b| *b != b'\r' && *b != b'\n').unwrap_or(buf.len());
    let rest = &buf[start..];
    let line = match rest.iter().position(|b| *b == b'\n') {
        Some(end) => rest[..end].strip_suffix(b"\r").unwrap_or(&rest[..end]).len(),
        None => rest.len().saturating_sub(1),
    };
    if line > MAX_REQUEST_LINE {
        return Check::Refused(Refusal::new(
            Problem::UriTooLong,
            format!(
                "the request line is longer than {MAX_REQUEST_LINE} bytes; send a shorter URI (fewer or shorter \
                 query parameters)"
            ),
        ));
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut request = httparse::Request::new(&mut headers);
    let len = match request.parse(buf) {
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Partial) => return Check::Partial,
        Ok(httparse::Status::Complete(len)) if len > MAX_HEAD => return too_large(),
        Ok(httparse::Status::Complete(len)) => len,
        Err(httparse::Error::TooManyHeaders) => {
            return Check::Refused(Refusal::new(
                Problem::HeadersTooLarge,
                format!("the request has more than {MAX_HEADERS} header fields; send fewer"),
            ));
        }
        Err(error) => return bad(format!("the request head is not valid HTTP/1.1 ({error})")),
    };
    match framing(&request) {
        Ok(then) => Check::Complete { len, then },
        Err(refusal) => Check::Refused(refusal),
    }
}

fn too_large() -> Check {
    Check::Refused(Refusal::new(
        Problem::HeadersTooLarge,
        format!(
            "the request head (request line and header fields) is larger than {MAX_HEAD} bytes; send smaller headers"
        ),
    ))
}

fn bad(detail: String) -> Check {
    Check::Refused(Refusal::new(
        Problem::BadRequest,
        format!("{detail}; a request starts with a line such as `GET /healthz HTTP/1.1`, then header fields"),
    ))
}

/// What follows a parsed head, by hyper's own rules (RFC 9112 §6.3): anything hyper would
/// refuse is refused here, so that hyper never answers on its own.
fn framing(request: &httparse::Request<'_, '_>) -> Result<State, Refusal> {
    let refuse = |detail: &str| Refusal::new(Problem::BadRequest, detail.to_owned());
    let method = Method::from_bytes(request.method.unwrap_or_default().as_bytes())
        .map_err(|_| refuse("the request method is not a valid token"))?;
    Uri::try_from(request.path.unwrap_or_default())
        .map_err(|_| refuse("the request target is not a valid URI; send a path such as /api/v1/tasks"))?;
    let http_11 = request.version == Some(1);
    let (mut chunked, mut transfer_encoding, mut length, mut upgrade) = (false, false, None, false);
    for header in request.headers.iter() {
        let name = HeaderName::from_bytes(header.name.as_bytes())
            .map_err(|_| refuse("a header field name is not a valid token"))?;
        if name == axum::http::header::TRANSFER_ENCODING {
            if !http_11 {
                return Err(refuse("HTTP/1.0 requests cannot use Transfer-Encoding"));
            }
            transfer_encoding = true;
            // Chunked must be the last coding; the last field decides, as in hyper.
            chunked = std::str::from_utf8(header.value)
                .ok()
                .and_then(|v| v.rsplit(',').next())
                .is_some_and(|coding| coding.trim().eq_ignore_ascii_case("chunked"));
        } else if name == axum::http::header::CONTENT_LENGTH {
            let value = std::str::from_utf8(header.value).unwrap_or_default();
            let parsed = (!value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()))
                .then(|| value.parse::<u64>().ok())
                .flatten()
                .ok_or_else(|| refuse("Content-Length must be a number of bytes"))?;
            if length.is_some_and(|seen| seen != parsed) {
                return Err(refuse("the request has Content-Length fields that disagree"));
            }
            length = Some(parsed);
        } else if name == axum::http::header::UPGRADE {
            upgrade = http_11;
        }
    }
    if transfer_encoding && !chunked {
        return Err(refuse("Transfer-Encoding must end with chunked"));
    }
    Ok(if upgrade || method == Method::CONNECT {
        // The connection may stop being HTTP after this request: step aside.
        State::Through
    } else if transfer_encoding {
        State::Chunked(Chunk::Size)
    } else {
        match length {
            Some(0) | None => State::Head,
            Some(n) => State::Body(n),
        }
    })
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.ready_at < this.ready.len() {
                let n = buf.remaining().min(this.ready.len() - this.ready_at);
                buf.put_slice(&this.ready[this.ready_at..this.ready_at + n]);
                this.ready_at += n;
                if this.ready_at == this.ready.len() {
                    this.ready.clear();
                    this.ready_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.pending.is_empty() {
                match this.state {
                    // Hyper answers the stand-in and closes; the client is not read again
                    // (an end of input now would make hyper drop the answer).
                    State::Refused => return Poll::Pending,
                    State::Through => return Pin::new(&mut this.inner).poll_read(cx, buf),
                    // Body bytes need no examining: straight into hyper's buffer.
                    State::Body(left) => {
                        let n = usize::try_from(left).unwrap_or(usize::MAX).min(buf.remaining());
                        let mut body = ReadBuf::new(buf.initialize_unfilled_to(n));
                        ready!(Pin::new(&mut this.inner).poll_read(cx, &mut body))?;
                        let got = body.filled().len();
                        buf.advance(got);
                        if got > 0 {
                            let left = left - got as u64;
                            this.state = if left == 0 { State::Head } else { State::Body(left) };
                        }
                        return Poll::Ready(Ok(()));
                    }
                    _ if this.eof => return Poll::Ready(Ok(())),
                    _ => {}
                }
            }
            if this.advance() {
                continue;
            }
            if this.eof {
                // The client stopped mid-head or mid-frame: hyper gets what there is, then
                // the end, and handles that as it always has (no answer to half a head).
                this.state = State::Through;
                let rest = this.pending.len();
                this.pass(rest);
                continue;
            }
            let mut chunk = [0u8; 8192];
            let mut read = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
            if read.filled().is_empty() {
                this.eof = true;
            } else {
                this.pending.extend_from_slice(read.filled());
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.state == State::Refused {
            // The rest of a refused head may still be unread. Closing a socket with unread
            // input makes the kernel reset the connection, and a reset can destroy the
            // answer before the client reads it: discard what has arrived (a bounded
            // amount, never waiting for more) first.
            let mut scratch = [0u8; 8192];
            for _ in 0..(MAX_HEAD / scratch.len()) {
                let mut read = ReadBuf::new(&mut scratch);
                match Pin::new(&mut this.inner).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) if !read.filled().is_empty() => {}
                    _ => break,
                }
            }
        }
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    fn refused(head: &[u8]) -> Problem {
        match check(head) {
            Check::Refused(refusal) => refusal.problem,
            other => panic!("{other:?} for {:?}", String::from_utf8_lossy(head)),
        }
    }

    #[test]
    fn good_heads_pass_with_their_framing() {
        assert_eq!(
            check(b"GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"),
            Check::Complete {
                len: 34,
                then: State::Head
            }
        );
        let post = b"POST /x HTTP/1.1\r\ncontent-length: 5\r\n\r\nhello";
        assert_eq!(
            check(post),
            Check::Complete {
                len: 39,
                then: State::Body(5)
            }
        );
        let chunked = b"POST /x HTTP/1.1\r\nTransfer-Encoding: gzip, chunked\r\nContent-Length: 3\r\n\r\n";
        assert!(matches!(
            check(chunked),
            Check::Complete {
                then: State::Chunked(Chunk::Size),
                ..
            }
        ));
        let upgrade = b"GET /delegate/v1/stream HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n";
        assert!(matches!(
            check(upgrade),
            Check::Complete {
                then: State::Through,
                ..
            }
        ));
        assert_eq!(check(b"GET /healthz HTTP/1.1\r\nHost: a\r\n"), Check::Partial);
    }

    #[test]
    fn bad_heads_are_refused_with_the_status_of_their_fault() {
        assert_eq!(refused(b"HELLO\r\n\r\n"), Problem::BadRequest);
        assert_eq!(refused(b"GET / HTTP/2.0\r\n\r\n"), Problem::BadRequest);
        assert_eq!(refused(b"GET / HTTP/1.1\r\nbad header\r\n\r\n"), Problem::BadRequest);
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\ncontent-length: -1\r\n\r\n"),
            Problem::BadRequest
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n"),
            Problem::BadRequest
        );
        assert_eq!(
            refused(b"POST / HTTP/1.1\r\ntransfer-encoding: gzip\r\n\r\n"),
            Problem::BadRequest
        );
        assert_eq!(
            refused(b"POST / HTTP/1.0\r\ntransfer-encoding: chunked\r\n\r\n"),
            Problem::BadRequest
        );

        let long = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_REQUEST_LINE));
        assert_eq!(refused(long.as_bytes()), Problem::UriTooLong);
        // Refused before its end arrives: the guard never buffers more than the limit.
        assert_eq!(refused(&long.as_bytes()[..MAX_REQUEST_LINE + 10]), Problem::UriTooLong);
        let many: String = (0..=MAX_HEADERS).map(|i| format!("x-{i}: v\r\n")).collect();
        assert_eq!(
            refused(format!("GET / HTTP/1.1\r\n{many}\r\n").as_bytes()),
            Problem::HeadersTooLarge
        );
        let big = format!("GET / HTTP/1.1\r\nx-big: {}\r\n", "v".repeat(MAX_HEAD));
        assert_eq!(refused(big.as_bytes()), Problem::HeadersTooLarge);
    }

    /// Writes `input` into a guarded stream (then ends it) and reads `len` bytes, what
    /// hyper would read; answers them and what the next read does at once (`None`: pending).
    async fn through_guard(input: &[u8], len: usize) -> (Vec<u8>, Option<usize>, Arc<Refusals>) {
        use futures::FutureExt;
        let (mut client, server) = tokio::io::duplex(1 << 20);
        let refusals = Arc::new(Refusals::default());
        let mut guarded = Guarded::new(server, Arc::clone(&refusals));
        client.write_all(input).await.unwrap();
        drop(client);
        let mut seen = vec![0; len];
        guarded.read_exact(&mut seen).await.unwrap();
        let next = guarded.read(&mut [0; 1]).now_or_never().map(Result::unwrap);
        (seen, next, refusals)
    }

    #[tokio::test]
    async fn a_head_trickled_a_byte_at_a_time_passes_whole_and_blank_lines_before_it_are_dropped() {
        let head = b"GET /healthz HTTP/1.1\r\nHost: a\r\nx-long: 0123456789\r\n\r\n";
        let (mut client, server) = tokio::io::duplex(64);
        let refusals = Arc::new(Refusals::default());
        let mut guarded = Guarded::new(server, Arc::clone(&refusals));
        let writer = tokio::spawn(async move {
            for byte in b"\r\n\r\n".iter().chain(head) {
                client.write_all(&[*byte]).await.unwrap();
                tokio::task::yield_now().await;
            }
            client
        });
        let mut seen = vec![0; head.len()];
        guarded.read_exact(&mut seen).await.unwrap();
        assert_eq!(seen, head.to_vec());
        drop(writer.await.unwrap());
        assert!(refusals.next().is_none());
    }

    #[tokio::test]
    async fn bodies_pass_unexamined_and_the_next_head_is_checked() {
        let good = b"POST /a HTTP/1.1\r\ncontent-length: 13\r\n\r\nHELLO\r\n\r\nx y z\
                     POST /b HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n5;e=1\r\nHELLO\r\n0\r\nt: 1\r\n\r\n\
                     GET /c HTTP/1.1\r\n\r\n";
        let (seen, next, refusals) = through_guard(good, good.len()).await;
        assert_eq!(seen, good.to_vec());
        assert_eq!(next, Some(0), "the client's end reaches hyper");
        assert!(!refusals.armed.load(Ordering::Acquire));

        let mut bad = good.to_vec();
        bad.extend_from_slice(b"HELLO\r\n\r\nGET /d HTTP/1.1\r\n\r\n");
        let mut expected = good.to_vec();
        expected.extend_from_slice(STAND_IN);
        let (seen, next, refusals) = through_guard(&bad, expected.len()).await;
        assert_eq!(String::from_utf8_lossy(&seen), String::from_utf8_lossy(&expected));
        assert_eq!(next, None, "nothing after the stand-in, not even the end");
        // The fourth request hyper hands over is the stand-in.
        assert_eq!(
            (0..4).map(|_| refusals.next().map(|r| r.problem)).collect::<Vec<_>>(),
            [None, None, None, Some(Problem::BadRequest)]
        );
    }
}
