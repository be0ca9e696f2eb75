//! Bytes a stream wrapper has read and not yet handed out, in a buffer that exists only while
//! it holds bytes. Shared by the read-ahead under tungstenite
//! ([`ReadAhead`](super::read_ahead::ReadAhead)), the TLS stream's decrypted bytes
//! ([`TlsStream`](crate::http::tls::stream::TlsStream)) and the bytes read past a PROXY header
//! ([`Prefixed`](crate::http::proxy::Prefixed)).

use bytes::{Buf, BytesMut};
use tokio::io::ReadBuf;

/// Moves as much of `held` as fits into `buf`, from its front; frees `held`'s allocation once
/// it is drained.
pub(crate) fn hand_out(held: &mut BytesMut, buf: &mut ReadBuf<'_>) {
    let taken = held.len().min(buf.remaining());
    buf.put_slice(&held[..taken]);
    held.advance(taken);
    if held.is_empty() {
        *held = BytesMut::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_fits_is_handed_out_and_a_drained_buffer_is_freed() {
        let mut held = BytesMut::from(&b"abcdef"[..]);
        let mut out = [0; 4];
        let mut buf = ReadBuf::new(&mut out);
        hand_out(&mut held, &mut buf);
        assert_eq!(buf.filled(), b"abcd");
        assert_eq!(&held[..], b"ef");
        let mut out = [0; 4];
        let mut buf = ReadBuf::new(&mut out);
        hand_out(&mut held, &mut buf);
        assert_eq!(buf.filled(), b"ef");
        assert_eq!(held.capacity(), 0);
    }
}
