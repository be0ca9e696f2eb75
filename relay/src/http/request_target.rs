//! The request-target check hyper cannot make: a request target never carries a fragment
//! (RFC 9112 §3.2, RFC 9110 §7.1), so `GET /v1/server#x` is answered 400.
//!
//! hyper hands the routes a parsed [`Uri`](hyper::Uri), and the `http` crate drops a fragment
//! while parsing: `/v1/server#x` arrives as `/v1/server`. So the check reads the request lines
//! themselves, as they pass from the socket to hyper: [`TargetCheck`] wraps a connection's stream
//! and scans the bytes it reads for request heads, noting the first head whose target contains a
//! `#`; the service asks [`Targets::refuse_next`] once per request, in order (HTTP/1.1 answers
//! requests in the order they came), and refuses that request and every later one.
//!
//! The scan is a byte-at-a-time state machine over the heads only. It stops for good after a
//! head that says a body or another protocol follows (`Content-Length` other than 0,
//! `Transfer-Encoding`, `Upgrade`): past it the bytes are no longer request heads, and the
//! relay's endpoints take no body (its refusals close the connection) — after an upgrade the
//! WebSocket's bytes pass through at the cost of one branch per read.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// No head with a fragment has been seen.
const NONE: u64 = u64::MAX;
/// Header-line bytes kept to recognise the few header names the scan acts on.
const LINE_KEPT: usize = 32;

/// What the scan and the service share for one connection.
#[derive(Debug)]
pub(crate) struct Targets {
    /// The ordinal (from 0) of the first request head whose target had a fragment.
    first_fragment: AtomicU64,
    /// Requests the service has seen.
    served: AtomicU64,
}

impl Targets {
    /// Shared state for one new connection.
    pub(crate) fn new() -> Arc<Targets> {
        Arc::new(Targets {
            first_fragment: AtomicU64::new(NONE),
            served: AtomicU64::new(0),
        })
    }

    /// Called once per request, in order: true if this request (or one before it on the same
    /// connection) had a fragment in its target.
    pub(crate) fn refuse_next(&self) -> bool {
        let ordinal = self.served.fetch_add(1, Ordering::Relaxed);
        // hyper reads a head before it calls the service for it: the scan has seen it already.
        ordinal >= self.first_fragment.load(Ordering::Acquire)
    }
}

/// Where the scan is within the request heads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Scan {
    /// Before or in the method (empty lines before a request line are skipped).
    Method,
    /// In the request target.
    Target,
    /// In the rest of the request line.
    Line,
    /// In the header lines.
    Headers,
    /// Past the heads for good (a body, an upgrade, or a fragment already seen).
    Done,
}

/// A connection's stream whose reads are scanned for request targets with a fragment (see the
/// module docs); writes pass straight through.
#[derive(Debug)]
pub(crate) struct TargetCheck<I> {
    inner: I,
    targets: Arc<Targets>,
    scan: Scan,
    /// The ordinal of the head being scanned.
    head: u64,
    /// The start of the current header line (lower-cased), up to [`LINE_KEPT`] bytes.
    line: [u8; LINE_KEPT],
    line_len: usize,
    /// The current header line is longer than what is kept.
    line_long: bool,
    /// The current head says that something other than a request head follows it.
    last_head: bool,
}

impl<I> TargetCheck<I> {
    /// Wraps `inner`; the service asks `targets` about each request.
    pub(crate) fn new(inner: I, targets: Arc<Targets>) -> Self {
        TargetCheck {
            inner,
            targets,
            scan: Scan::Method,
            head: 0,
            line: [0; LINE_KEPT],
            line_len: 0,
            line_long: false,
            last_head: false,
        }
    }

    /// Advances the scan over bytes just read.
    fn scan(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            match self.scan {
                Scan::Done => return,
                Scan::Method => match byte {
                    b'\r' | b'\n' => {}
                    b' ' => self.scan = Scan::Target,
                    _ => {}
                },
                Scan::Target => match byte {
                    b'#' => {
                        self.targets
                            .first_fragment
                            .store(self.head, Ordering::Release);
                        self.scan = Scan::Done;
                        return;
                    }
                    b' ' => self.scan = Scan::Line,
                    b'\n' => self.start_headers(),
                    _ => {}
                },
                Scan::Line => {
                    if byte == b'\n' {
                        self.start_headers();
                    }
                }
                Scan::Headers => self.header_byte(byte),
            }
        }
    }

    fn start_headers(&mut self) {
        self.scan = Scan::Headers;
        self.line_len = 0;
        self.line_long = false;
        self.last_head = false;
    }

    fn header_byte(&mut self, byte: u8) {
        match byte {
            b'\r' => {}
            b'\n' if self.line_len == 0 && !self.line_long => {
                // The empty line: the head is over.
                if self.last_head {
                    self.scan = Scan::Done;
                } else {
                    self.head += 1;
                    self.scan = Scan::Method;
                }
            }
            b'\n' => {
                self.last_head |= self.ends_heads();
                self.line_len = 0;
                self.line_long = false;
            }
            _ if self.line_len < LINE_KEPT => {
                self.line[self.line_len] = byte.to_ascii_lowercase();
                self.line_len += 1;
            }
            _ => self.line_long = true,
        }
    }

    /// Whether the header line just read says a body or another protocol follows the head.
    fn ends_heads(&self) -> bool {
        let line = &self.line[..self.line_len];
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return false;
        };
        let (name, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        match name {
            b"upgrade" | b"transfer-encoding" => true,
            b"content-length" => self.line_long || value != b"0",
            _ => false,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TargetCheck<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if this.scan != Scan::Done {
            this.scan(&buf.filled()[before..]);
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TargetCheck<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scans `input` in pieces of `step` bytes; the requests the service would refuse, of `n`.
    fn refused(input: &str, step: usize, n: usize) -> Vec<bool> {
        let targets = Targets::new();
        let mut check = TargetCheck::new((), targets.clone());
        for piece in input.as_bytes().chunks(step) {
            check.scan(piece);
        }
        (0..n).map(|_| targets.refuse_next()).collect()
    }

    #[test]
    fn a_fragment_in_the_target_refuses_that_request() {
        let head = "GET /v1/server#x HTTP/1.1\r\nHost: a\r\n\r\n";
        for step in [1, 3, head.len()] {
            assert_eq!(refused(head, step, 1), [true], "step {step}");
        }
    }

    #[test]
    fn a_target_without_a_fragment_passes_and_a_number_sign_elsewhere_does_not_count() {
        let heads = "GET /v1/server HTTP/1.1\r\nX-Pyrycode-Token: a#b\r\n\r\n\
                     GET /healthz?q=%23 HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(refused(heads, 1, 2), [false, false]);
    }

    #[test]
    fn only_the_request_with_the_fragment_and_later_ones_are_refused() {
        let heads = "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n\
                     GET /readyz#top HTTP/1.1\r\nHost: a\r\n\r\n\
                     GET /healthz HTTP/1.1\r\n\r\n";
        assert_eq!(refused(heads, 5, 3), [false, true, true]);
    }

    #[test]
    fn the_scan_stops_after_an_upgrade_or_a_body() {
        // After an upgrade head the bytes are WebSocket frames, not requests.
        let upgraded =
            "GET /v1/server HTTP/1.1\r\nUpgrade: websocket\r\n\r\nGET /x#y HTTP/1.1\r\n\r\n";
        assert_eq!(refused(upgraded, 1, 2), [false, false]);
        let body = "POST /healthz HTTP/1.1\r\nContent-Length: 12\r\n\r\nGET /x#y HTTP/1.1\r\n\r\n";
        assert_eq!(refused(body, 1, 2), [false, false]);
        // A zero-length body is no body: the next head is scanned.
        let empty = "GET /healthz HTTP/1.1\r\ncontent-length: 0\r\n\r\nGET /x#y HTTP/1.1\r\n\r\n";
        assert_eq!(refused(empty, 1, 2), [false, true]);
    }

    #[test]
    fn empty_lines_before_a_request_line_are_skipped() {
        assert_eq!(refused("\r\n\r\nGET /a#b HTTP/1.1\r\n\r\n", 1, 1), [true]);
    }
}
