//! `Tracked`: the TCP stream under a WebSocket, noting when the first byte of a message arrives so
//! the connection's task can close a slow-loris (a message dribbled in over too long) with 1008.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// When the first byte of the message being received arrived: milliseconds since `base`, plus
/// one; 0 when no message is in progress.
struct Clock {
    base: Instant,
    first_byte: AtomicU64,
}

/// The connection task's view of the arrival clock.
#[derive(Clone)]
pub struct Arrivals(Arc<Clock>);

impl Arrivals {
    /// A message was completed: the next byte starts a new one.
    pub fn message_done(&self) {
        self.0.first_byte.store(0, Ordering::Relaxed);
    }

    /// How long the message in progress has been arriving, if one is.
    pub fn pending_for(&self) -> Option<Duration> {
        match self.0.first_byte.load(Ordering::Relaxed) {
            0 => None,
            at => Some(
                self.0
                    .base
                    .elapsed()
                    .saturating_sub(Duration::from_millis(at - 1)),
            ),
        }
    }
}

/// A `TcpStream` that records the arrival of the first byte of each message.
pub struct Tracked {
    inner: TcpStream,
    clock: Arc<Clock>,
}

impl Tracked {
    /// Wraps `inner`; the returned [`Arrivals`] reads its clock.
    pub fn new(inner: TcpStream) -> (Tracked, Arrivals) {
        let clock = Arc::new(Clock {
            base: Instant::now(),
            first_byte: AtomicU64::new(0),
        });
        let arrivals = Arrivals(clock.clone());
        (Tracked { inner, clock }, arrivals)
    }
}

impl AsyncRead for Tracked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            let now = self.clock.base.elapsed().as_millis() as u64 + 1;
            let _ = self.clock.first_byte.compare_exchange(
                0,
                now,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
        polled
    }
}

impl AsyncWrite for Tracked {
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
