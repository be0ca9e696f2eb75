//! The read side under a WebSocket: one read of the socket for many small reads of tungstenite.
//!
//! tungstenite reads in steps of its `read_buffer_size`, which the relay keeps at 256 bytes so
//! that an idle connection holds only that much of its own (`session::ws_config`). Straight on
//! the socket that costs a system call per 256 bytes: a 1 KiB frame took five `recvfrom`s (the
//! relay made 10.8 per frame forwarded, the bare forwarder 1.5, in the profile of 2026-12-07
//! that `relay/README.md` keeps). [`ReadAhead`] reads up to [`READ_AHEAD`] bytes at a time into a
//! buffer of its own and hands them out from there; the buffer exists only while it holds bytes
//! (it is freed when drained and when the socket has nothing), so an idle connection keeps
//! nothing more. A reader that asks for [`READ_AHEAD`] bytes or more is served straight from the
//! socket. Writes pass through.

use crate::conn::held::hand_out;
use crate::conn::write_through::write_through;
use bytes::BytesMut;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};

/// Bytes read from the socket at a time for a reader that asks for less.
pub(crate) const READ_AHEAD: usize = 8 * 1024;

/// A stream whose small reads are served from one larger read (see the module docs).
#[derive(Debug)]
pub(crate) struct ReadAhead<S> {
    inner: S,
    /// Read from `inner`, not yet handed out; no allocation when empty.
    buffered: BytesMut,
}

impl<S> ReadAhead<S> {
    /// Wraps `inner`, with nothing read ahead.
    pub(crate) fn new(inner: S) -> Self {
        ReadAhead {
            inner,
            buffered: BytesMut::new(),
        }
    }

    /// The bytes the read-ahead buffer holds allocated: 0 whenever it is empty.
    #[cfg(test)]
    fn buffer_capacity(&self) -> usize {
        self.buffered.capacity()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ReadAhead<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.buffered.is_empty() {
            if buf.remaining() >= READ_AHEAD {
                return Pin::new(&mut this.inner).poll_read(cx, buf);
            }
            this.buffered.reserve(READ_AHEAD);
            match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buffered) {
                Poll::Ready(Ok(read)) if read > 0 => {}
                // End of file (nothing read), an error, or nothing there yet: hold nothing.
                other => {
                    this.buffered = BytesMut::new();
                    return other.map_ok(|_| ());
                }
            }
        }
        hand_out(&mut this.buffered, buf);
        Poll::Ready(Ok(()))
    }
}

write_through!(ReadAhead);

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// An in-memory stream that counts the reads it serves.
    struct Counting {
        data: Vec<u8>,
        at: usize,
        reads: usize,
    }

    impl AsyncRead for Counting {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            self.reads += 1;
            let taken = (self.data.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.data[at..at + taken]);
            self.at += taken;
            Poll::Ready(Ok(()))
        }
    }

    fn counting(len: usize) -> Counting {
        Counting {
            data: (0..len).map(|i| (i % 251) as u8).collect(),
            at: 0,
            reads: 0,
        }
    }

    #[tokio::test]
    async fn small_reads_are_served_from_one_read_of_the_stream() {
        let mut stream = ReadAhead::new(counting(3000));
        let mut got = Vec::new();
        let mut step = [0; 256];
        while got.len() < 3000 {
            let n = stream.read(&mut step).await.unwrap();
            got.extend_from_slice(&step[..n]);
        }
        assert_eq!(got, counting(3000).data);
        assert_eq!(stream.inner.reads, 1, "3,000 bytes in 12 reads of 256");
        assert_eq!(stream.buffer_capacity(), 0, "drained: nothing held");
        assert_eq!(stream.read(&mut step).await.unwrap(), 0, "end of file");
    }

    #[tokio::test]
    async fn a_large_read_goes_straight_to_the_stream() {
        let mut stream = ReadAhead::new(counting(20_000));
        let mut big = vec![0; READ_AHEAD];
        assert_eq!(stream.read(&mut big).await.unwrap(), READ_AHEAD);
        assert_eq!(stream.buffer_capacity(), 0);
        assert_eq!(stream.inner.reads, 1);
    }

    #[tokio::test]
    async fn nothing_is_held_while_the_socket_has_nothing_and_writes_pass_through() {
        let (mut near, far) = tokio::io::duplex(64 * 1024);
        let mut stream = ReadAhead::new(far);
        let mut step = [0; 256];
        let pending = std::future::poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut step);
            Poll::Ready(Pin::new(&mut stream).poll_read(cx, &mut buf).is_pending())
        })
        .await;
        assert!(pending);
        assert_eq!(stream.buffer_capacity(), 0, "no bytes, no buffer");
        near.write_all(&[7; 1000]).await.unwrap();
        assert_eq!(stream.read(&mut step).await.unwrap(), 256);
        assert!(
            stream.buffer_capacity() >= 744,
            "the rest of the 1,000 is held"
        );
        stream.write_all(b"back").await.unwrap();
        let mut back = [0; 4];
        near.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"back");
    }
}
