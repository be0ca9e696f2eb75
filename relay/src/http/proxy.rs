//! `--client-ip proxy-protocol`: the PROXY protocol v1/v2 header a load balancer sends first on
//! every connection, parsed by the `ppp` crate. A connection without a valid header is dropped.
//!
//! The header is read in chunks; whatever arrived after it (the start of the HTTP request) is
//! kept and read first by [`Prefixed`], the stream handed to hyper.

use crate::conn::held::hand_out;
use crate::conn::write_through::write_through;
use bytes::BytesMut;
use ppp::{HeaderResult, PartialResult, v1, v2};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

/// Longest PROXY header accepted: a v2 header's 16 fixed bytes plus addresses and a few TLVs.
/// (v1 headers are at most 107 bytes.)
pub(crate) const MAX_HEADER: usize = 1024;

/// Why a connection's PROXY header was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProxyError {
    /// The connection ended or failed before a whole header arrived.
    Io,
    /// The bytes are not a valid PROXY v1 or v2 header (or it is longer than [`MAX_HEADER`]).
    Invalid,
}

/// Reads the PROXY header from `stream`. Returns the stream with the bytes read past the header
/// in front of it, and the header's source address (`None` for a `LOCAL` or `UNKNOWN` header,
/// e.g. the load balancer's own health check: the TCP peer counts then).
///
/// # Errors
///
/// [`ProxyError`] if no valid header came; the caller drops the connection. The caller bounds
/// the wait with the header timeout.
pub(crate) async fn read_header<S: AsyncRead + Unpin>(
    mut stream: S,
) -> Result<(Prefixed<S>, Option<IpAddr>), ProxyError> {
    let mut buf = Vec::with_capacity(256);
    loop {
        let mut chunk = [0u8; 256];
        let n = stream.read(&mut chunk).await.map_err(|_| ProxyError::Io)?;
        if n == 0 {
            return Err(ProxyError::Io);
        }
        buf.extend_from_slice(&chunk[..n]);
        let parsed = HeaderResult::parse(&buf);
        if parsed.is_incomplete() {
            if buf.len() >= MAX_HEADER {
                return Err(ProxyError::Invalid);
            }
            continue;
        }
        let (len, source) = match parsed {
            HeaderResult::V1(Ok(header)) => (header.header.len(), v1_source(&header.addresses)),
            HeaderResult::V2(Ok(header)) => (header.len(), v2_source(&header)),
            HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
                return Err(ProxyError::Invalid);
            }
        };
        let rest = buf.split_off(len);
        return Ok((Prefixed::new(rest, stream), source));
    }
}

fn v1_source(addresses: &v1::Addresses) -> Option<IpAddr> {
    match addresses {
        v1::Addresses::Tcp4(ip) => Some(IpAddr::V4(ip.source_address)),
        v1::Addresses::Tcp6(ip) => Some(IpAddr::V6(ip.source_address)),
        v1::Addresses::Unknown => None,
    }
}

fn v2_source(header: &v2::Header<'_>) -> Option<IpAddr> {
    if header.command == v2::Command::Local {
        return None;
    }
    match header.addresses {
        v2::Addresses::IPv4(ip) => Some(IpAddr::V4(ip.source_address)),
        v2::Addresses::IPv6(ip) => Some(IpAddr::V6(ip.source_address)),
        v2::Addresses::Unspecified | v2::Addresses::Unix(_) => None,
    }
}

/// A stream with some already-read bytes in front of it.
#[derive(Debug)]
pub(crate) struct Prefixed<S> {
    /// What of the prefix is not read yet.
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `prefix` is read first, then `inner`.
    pub(crate) fn new(prefix: Vec<u8>, inner: S) -> Self {
        Prefixed {
            // No copy: the vector becomes the buffer.
            prefix: BytesMut::from(bytes::Bytes::from(prefix)),
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.prefix.is_empty() {
            hand_out(&mut this.prefix, buf);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

write_through!(Prefixed);

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(bytes: &[u8]) -> Result<(Vec<u8>, Option<IpAddr>), ProxyError> {
        let (mut stream, ip) = read_header(bytes).await?;
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.unwrap();
        Ok((rest, ip))
    }

    #[tokio::test]
    async fn a_v1_header_gives_its_source_and_the_request_after_it_is_kept() {
        let input = b"PROXY TCP4 203.0.113.9 10.0.0.1 5555 8080\r\nGET / HTTP/1.1\r\n";
        let (rest, ip) = parse(input).await.unwrap();
        assert_eq!(ip, Some("203.0.113.9".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
    }

    #[tokio::test]
    async fn a_v2_header_gives_its_source_and_local_gives_none() {
        let addresses: v2::Addresses = (
            "[2001:db8::7]:4000"
                .parse::<std::net::SocketAddr>()
                .unwrap(),
            "[2001:db8::1]:8080"
                .parse::<std::net::SocketAddr>()
                .unwrap(),
        )
            .into();
        let mut input = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            addresses,
        )
        .build()
        .unwrap();
        input.extend_from_slice(b"GET");
        let (rest, ip) = parse(&input).await.unwrap();
        assert_eq!(ip, Some("2001:db8::7".parse().unwrap()));
        assert_eq!(rest, b"GET");

        let local = v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Local,
            v2::Protocol::Unspecified,
            v2::Addresses::Unspecified,
        )
        .build()
        .unwrap();
        assert_eq!(parse(&local).await.unwrap().1, None);
    }

    #[tokio::test]
    async fn a_connection_without_a_valid_header_is_refused() {
        assert_eq!(
            parse(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .unwrap_err(),
            ProxyError::Invalid
        );
        assert_eq!(parse(b"PROXY TCP4 1.2").await.unwrap_err(), ProxyError::Io);
        assert_eq!(parse(&[b'P'; 2000]).await.unwrap_err(), ProxyError::Invalid);
    }
}
