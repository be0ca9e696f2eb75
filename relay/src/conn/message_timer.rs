//! `Tracked`: the byte stream under a WebSocket, watched for slow-loris messages.
//!
//! The protocol's rule: a message that takes more than 30 s to arrive *once its first data frame
//! began* is closed 1008, and control frames (ping, pong) between its fragments do not restart
//! that clock. So the clock must know where data frames begin and where a message ends, which
//! bytes alone do not say. [`FrameScanner`] follows the frame boundaries of the incoming bytes
//! (headers are decoded, payloads skipped by length: no copy, constant memory) and records when
//! the first byte of a message's first data frame arrived; the final fragment's last byte clears
//! it. The WebSocket layer (tungstenite) still does all the real parsing and validation; this
//! only reads lengths and opcodes to time the message.

use crate::conn::write_through::write_through;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, ReadBuf};
use tokio::time::Instant;

/// Follows WebSocket frame boundaries in a byte stream (see the module docs).
#[derive(Debug, Default)]
pub(crate) struct FrameScanner {
    header: [u8; 14],
    /// Header bytes seen of the frame being read (0 between frames).
    have: u8,
    /// Header length of the frame being read, once its second byte is known.
    need: u8,
    /// Payload bytes still to skip.
    payload_left: u64,
    /// The frame being read is a data frame (text, binary, continuation).
    data: bool,
    /// The frame being read is the final fragment of its message.
    fin: bool,
    /// When the first byte of the message in progress arrived.
    started: Option<Instant>,
}

impl FrameScanner {
    /// When the message in progress began, if one is.
    pub(crate) fn message_started(&self) -> Option<Instant> {
        self.started
    }

    /// Restarts the clock of the message in progress, if any, at `now`: the time the relay itself
    /// spent not reading (backpressure) is not the peer's.
    pub(crate) fn restart(&mut self, now: Instant) {
        if self.started.is_some() {
            self.started = Some(now);
        }
    }

    /// Follows `bytes`, which arrived at `now`.
    pub(crate) fn scan(&mut self, mut bytes: &[u8], now: Instant) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let take = self.payload_left.min(bytes.len() as u64);
                self.payload_left -= take;
                bytes = &bytes[take as usize..];
                if self.payload_left == 0 {
                    self.frame_done();
                }
                continue;
            }
            let byte = bytes[0];
            bytes = &bytes[1..];
            self.header[usize::from(self.have)] = byte;
            self.have += 1;
            match self.have {
                1 => {
                    let opcode = byte & 0x0f;
                    self.data = opcode < 0x8;
                    self.fin = byte & 0x80 != 0;
                    if self.data && self.started.is_none() {
                        self.started = Some(now);
                    }
                    continue;
                }
                2 => {
                    let extended = match byte & 0x7f {
                        126 => 2,
                        127 => 8,
                        _ => 0,
                    };
                    let mask = if byte & 0x80 != 0 { 4 } else { 0 };
                    self.need = 2 + extended + mask;
                }
                _ => {}
            }
            if self.have == self.need {
                self.payload_left = self.payload_len();
                self.have = 0;
                if self.payload_left == 0 {
                    self.frame_done();
                }
            }
        }
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut len = [0u8; 8];
                len.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(len)
            }
            n => u64::from(n),
        }
    }

    fn frame_done(&mut self) {
        if self.data && self.fin {
            self.started = None;
        }
    }
}

/// A stream that feeds every byte it reads to a [`FrameScanner`].
#[derive(Debug)]
pub(crate) struct Tracked<S> {
    inner: S,
    scanner: FrameScanner,
}

impl<S> Tracked<S> {
    /// Wraps `inner`, at a frame boundary.
    pub(crate) fn new(inner: S) -> Self {
        Tracked {
            inner,
            scanner: FrameScanner::default(),
        }
    }

    /// When the message being received began, if one is in progress.
    pub(crate) fn message_started(&self) -> Option<Instant> {
        self.scanner.message_started()
    }

    /// See [`FrameScanner::restart`].
    pub(crate) fn restart_clock(&mut self, now: Instant) {
        self.scanner.restart(now);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.scanner.scan(&buf.filled()[before..], Instant::now());
        }
        polled
    }
}

write_through!(Tracked);

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A masked frame header + payload as a client sends it.
    fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![first];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    const TEXT: u8 = 0x01;
    const CONT: u8 = 0x00;
    const PING: u8 = 0x09;
    const PONG: u8 = 0x0a;
    const FIN: u8 = 0x80;

    #[test]
    fn a_complete_message_starts_and_ends_the_clock() {
        let t0 = Instant::now();
        let mut scanner = FrameScanner::default();
        let bytes = frame(FIN | TEXT, &[b'x'; 300]);
        scanner.scan(&bytes[..5], t0);
        assert_eq!(scanner.message_started(), Some(t0));
        scanner.scan(&bytes[5..], t0 + Duration::from_secs(1));
        assert_eq!(scanner.message_started(), None);
    }

    #[test]
    fn control_frames_between_fragments_neither_start_nor_reset_the_clock() {
        let t0 = Instant::now();
        let later = |s| t0 + Duration::from_secs(s);
        let mut scanner = FrameScanner::default();
        scanner.scan(&frame(FIN | PING, b"hi"), t0);
        assert_eq!(scanner.message_started(), None, "a ping is not a message");
        scanner.scan(&frame(TEXT, b"a"), later(1));
        assert_eq!(scanner.message_started(), Some(later(1)));
        scanner.scan(&frame(FIN | PONG, b""), later(2));
        scanner.scan(&frame(FIN | PING, &[0; 125]), later(3));
        scanner.scan(&frame(CONT, b"b"), later(4));
        assert_eq!(scanner.message_started(), Some(later(1)), "not restarted");
        scanner.scan(&frame(FIN | CONT, b"c"), later(5));
        assert_eq!(scanner.message_started(), None);
    }

    #[test]
    fn a_restart_moves_only_a_running_clock() {
        let t0 = Instant::now();
        let t1 = t0 + Duration::from_secs(40);
        let mut scanner = FrameScanner::default();
        scanner.restart(t1);
        assert_eq!(scanner.message_started(), None);
        scanner.scan(&frame(TEXT, b"a"), t0);
        scanner.restart(t1);
        assert_eq!(scanner.message_started(), Some(t1));
    }

    #[test]
    fn byte_by_byte_input_and_every_length_encoding_are_followed() {
        let t0 = Instant::now();
        let mut scanner = FrameScanner::default();
        for len in [0usize, 1, 125, 126, 65_535, 65_536] {
            let bytes = frame(FIN | TEXT, &vec![b'y'; len]);
            let (head, tail) = bytes.split_at(bytes.len().min(20));
            for byte in head {
                scanner.scan(std::slice::from_ref(byte), t0);
            }
            scanner.scan(tail, t0);
            assert_eq!(scanner.message_started(), None, "len {len}");
        }
        scanner.scan(&frame(TEXT, b"open")[..3], t0);
        assert_eq!(scanner.message_started(), Some(t0));
    }
}
