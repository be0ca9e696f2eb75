//! The server side of a TLS connection over rustls's *unbuffered* API
//! ([`UnbufferedServerConnection`]): what every `wss://` connection of the relay reads and
//! writes through, with buffers that exist only while bytes are in flight.
//!
//! # Why not tokio-rustls
//!
//! tokio-rustls drives rustls's buffered `ServerConnection`, whose record reader keeps a 4 KiB
//! buffer for as long as the connection lives (rustls 0.23's `DeframerVecBuffer` shrinks back to
//! one 4 KiB read, never below): for an idle phone that buffer was about 40% of its memory (the
//! idle-phone rows of `relay/benches/report.sh`). The unbuffered API leaves the buffers to the
//! caller, so this stream frees them whenever they are empty:
//!
//! - **incoming**: TLS bytes read from the socket but not yet processed. Allocated when the
//!   socket is read (4 KiB, doubled while a record does not fit, at most [`MAX_INCOMING`]),
//!   freed when a read finds the socket empty and nothing is left in it.
//! - **plaintext**: decrypted bytes the reader has not taken yet (a reader with a small buffer
//!   takes a record in several reads); freed when taken.
//! - **outgoing**: encrypted bytes not yet written to the socket; freed once all are written
//!   (under a lasting backlog, the written part is dropped once it reaches [`MAX_UNSENT`]).
//!
//! An idle connection therefore holds rustls's connection state and nothing else; each burst
//! costs an allocation or two, which is small beside the record's encryption.
//!
//! # The model
//!
//! Every step asks rustls what to do next (`process_tls_records`)
//! and does it: encodes handshake messages into *outgoing* (they are written before anything
//! queued after them, so rustls is told at once that they were transmitted), decrypts records
//! into *plaintext*, or reports that it needs bytes from the peer or that application data may
//! be written. [`accept`] steps until the handshake is done and its last flight (session tickets
//! included) is written; the stream's [`AsyncRead`] and [`AsyncWrite`] then step as reads and
//! writes need. The semantics follow tokio-rustls's, which this replaces:
//!
//! - a read after the peer's `close_notify` returns end of file; a socket that ends without one
//!   is an [`UnexpectedEof`](io::ErrorKind::UnexpectedEof) error;
//! - a TLS error is an [`InvalidData`](io::ErrorKind::InvalidData) error whose inner error is
//!   the [`rustls::Error`] (the handshake-failure metric reads it), after the alert that
//!   describes it is written where the socket takes it;
//! - a write is taken (encrypted into *outgoing*) as soon as less than [`MAX_UNSENT`] bytes wait
//!   to be written, and written as far as the socket takes it at once; `flush` writes the rest;
//! - `shutdown` sends `close_notify`, then shuts the socket's write side.
//!
//! Early data (0-RTT) is never enabled by the relay's configuration; a connection that produced
//! it anyway is refused.

use crate::conn::held::hand_out;
use bytes::BytesMut;
use rustls::ServerConfig;
use rustls::server::UnbufferedServerConnection;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, UnbufferedStatus};
use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first allocation of the incoming buffer; it doubles while a record does not fit.
const READ_CHUNK: usize = 4096;
/// The incoming buffer's limit: a handshake message rustls accepts (64 KiB, which it joins in
/// place from several records) plus a full record (16 KiB and its overhead).
pub const MAX_INCOMING: usize = 0x1_0000 + 16 * 1024 + 2048;
/// A write waits (returns `Pending`) while this many encrypted bytes are not yet written.
pub const MAX_UNSENT: usize = 64 * 1024;
/// Most plaintext encrypted by one `poll_write` (four full records).
const MAX_WRITE: usize = 64 * 1024;
/// Room for each record's header, tag and content type beyond its plaintext.
const RECORD_OVERHEAD: usize = 64;
/// Largest plaintext of one record.
const MAX_RECORD: usize = 16 * 1024;

/// The server side of one TLS connection over `IO` (see the module docs), made by [`accept`].
///
/// It reads and writes application data through tokio's [`AsyncRead`] and [`AsyncWrite`], as
/// tokio-rustls's `TlsStream` does.
pub struct TlsStream<IO> {
    io: IO,
    conn: UnbufferedServerConnection,
    /// TLS bytes read and not yet processed: `incoming[incoming_start..incoming_len]` (rustls
    /// processes one record per step: the processed ones are skipped, and moved out only when
    /// the next read needs the room); the rest is room for the next read.
    incoming: Vec<u8>,
    incoming_start: usize,
    incoming_len: usize,
    /// Decrypted bytes not yet read.
    plaintext: BytesMut,
    /// Encrypted bytes not yet written: `outgoing[outgoing_pos..]`.
    outgoing: Vec<u8>,
    outgoing_pos: usize,
    /// The peer sent `close_notify`: no more application data will come.
    peer_closed: bool,
    /// The socket reached end of file.
    eof: bool,
    /// `close_notify` is queued: nothing more may be written.
    close_queued: bool,
    /// The TLS error that ended the connection: every later read or write fails with it.
    failed: Option<rustls::Error>,
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("handshaking", &self.conn.is_handshaking())
            .field("incoming", &(self.incoming_len - self.incoming_start))
            .field("plaintext", &self.plaintext.len())
            .field("outgoing", &(self.outgoing.len() - self.outgoing_pos))
            .field("peer_closed", &self.peer_closed)
            .finish_non_exhaustive()
    }
}

/// What one step of rustls asked for or did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Something was done (records decrypted, TLS data queued): step again.
    Again,
    /// rustls needs bytes from the peer (handshake, or only part of a record is here).
    NeedRead,
    /// Nothing to process; application data may be written (the handshake may still be
    /// finishing: see `is_handshaking`).
    Traffic,
    /// The write asked for was encrypted into *outgoing*: this many plaintext bytes.
    Wrote(usize),
    /// Both sides sent `close_notify`.
    Closed,
}

/// A write to make when rustls allows application data.
#[derive(Debug, Clone, Copy)]
enum Op<'a> {
    Encrypt(&'a [u8]),
    CloseNotify,
}

/// Performs the server side of a TLS handshake on `io` with `config` and returns the stream
/// once the handshake is complete and everything it sends is written.
///
/// No deadline: the caller bounds it (the relay with its head deadline).
///
/// # Errors
///
/// rustls refusing `config` or the peer's handshake ([`io::ErrorKind::InvalidData`], the
/// [`rustls::Error`] inside; the alert is sent first where possible), the socket ending before
/// the handshake is done ([`io::ErrorKind::UnexpectedEof`]) or failing.
///
/// # Examples
///
/// ```no_run
/// # async fn example(config: std::sync::Arc<rustls::ServerConfig>) -> std::io::Result<()> {
/// use tokio::io::{AsyncReadExt, AsyncWriteExt};
///
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:8443").await?;
/// let (socket, _) = listener.accept().await?;
/// let mut tls = relay_server::tls_stream::accept(config, socket).await?;
/// let mut request = [0; 1024];
/// let n = tls.read(&mut request).await?;
/// tls.write_all(&request[..n]).await?;
/// tls.shutdown().await?;
/// # Ok(())
/// # }
/// ```
pub async fn accept<IO>(config: Arc<ServerConfig>, io: IO) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid_data)?;
    let mut stream = TlsStream {
        io,
        conn,
        incoming: Vec::new(),
        incoming_start: 0,
        incoming_len: 0,
        plaintext: BytesMut::new(),
        outgoing: Vec::new(),
        outgoing_pos: 0,
        peer_closed: false,
        eof: false,
        close_queued: false,
        failed: None,
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

impl<IO> TlsStream<IO> {
    /// The ALPN protocol agreed in the handshake, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }

    /// The socket under the TLS.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// The bytes the stream's own buffers hold allocated (incoming, plaintext and outgoing
    /// together): 0 whenever nothing is in flight.
    pub fn buffer_capacity(&self) -> usize {
        self.incoming.capacity() + self.plaintext.capacity() + self.outgoing.capacity()
    }

    /// One step of rustls (see [`Step`]), doing `op` if application data may be written.
    fn step(&mut self, op: Option<Op<'_>>) -> Result<Step, rustls::Error> {
        let TlsStream {
            conn,
            incoming,
            incoming_start,
            incoming_len,
            plaintext,
            outgoing,
            peer_closed,
            close_queued,
            ..
        } = self;
        let UnbufferedStatus { mut discard, state } =
            conn.process_tls_records(&mut incoming[*incoming_start..*incoming_len]);
        let step = match state {
            Err(error) => Err(error),
            Ok(ConnectionState::ReadTraffic(mut traffic)) => {
                while let Some(record) = traffic.next_record() {
                    let record = record?;
                    discard += record.discard;
                    plaintext.extend_from_slice(record.payload);
                }
                Ok(Step::Again)
            }
            Ok(ConnectionState::EncodeTlsData(mut data)) => write_into(
                outgoing,
                0,
                |out| data.encode(out),
                |error| match error {
                    EncodeError::InsufficientSize(needed) => Some(needed.required_size),
                    _ => None,
                },
            )
            .map(|()| Step::Again),
            Ok(ConnectionState::TransmitTlsData(data)) => {
                // What was encoded is in `outgoing`, ahead of anything queued later: it counts
                // as transmitted (see the module docs).
                data.done();
                Ok(Step::Again)
            }
            Ok(ConnectionState::BlockedHandshake) => Ok(Step::NeedRead),
            Ok(ConnectionState::WriteTraffic(mut traffic)) => match op {
                None => Ok(Step::Traffic),
                Some(Op::Encrypt(data)) => {
                    let data = &data[..data.len().min(MAX_WRITE)];
                    let records = data.len().div_ceil(MAX_RECORD).max(1);
                    let room = data.len() + records * RECORD_OVERHEAD;
                    write_into(
                        outgoing,
                        room,
                        |out| traffic.encrypt(data, out),
                        room_needed,
                    )
                    .map(|()| Step::Wrote(data.len()))
                }
                Some(Op::CloseNotify) => {
                    *close_queued = true;
                    let close = |out: &mut [u8]| traffic.queue_close_notify(out);
                    write_into(outgoing, RECORD_OVERHEAD, close, room_needed)
                        .map(|()| Step::Wrote(0))
                }
            },
            Ok(ConnectionState::PeerClosed) => {
                *peer_closed = true;
                Ok(Step::Again)
            }
            Ok(ConnectionState::Closed) => {
                *peer_closed = true;
                Ok(Step::Closed)
            }
            Ok(_) => Err(rustls::Error::General(
                "unexpected TLS state (early data is not enabled)".to_owned(),
            )),
        };
        *incoming_start += discard;
        if *incoming_start == *incoming_len {
            (*incoming_start, *incoming_len) = (0, 0);
        }
        step
    }

    /// One step, a TLS error turned into the stream's error after its alert is queued and
    /// written where the socket takes it at once (and every step after it into the same
    /// error).
    fn step_or_fail(&mut self, cx: &mut Context<'_>, op: Option<Op<'_>>) -> io::Result<Step>
    where
        IO: AsyncWrite + Unpin,
    {
        if let Some(error) = &self.failed {
            return Err(invalid_data(error.clone()));
        }
        match self.step(op) {
            Ok(step) => Ok(step),
            Err(error) => {
                // The connection is over: what is left unread is dropped, so that the steps
                // below only hand out the alert rustls queued (EncodeTlsData, then
                // TransmitTlsData) and never process the bad bytes again.
                self.incoming = Vec::new();
                (self.incoming_start, self.incoming_len) = (0, 0);
                for _ in 0..4 {
                    if self.step(None) != Ok(Step::Again) {
                        break;
                    }
                }
                let _ = self.poll_write_outgoing(cx);
                self.failed = Some(error.clone());
                Err(invalid_data(error))
            }
        }
    }

    /// Writes *outgoing* to the socket until it is empty (then frees it).
    fn poll_write_outgoing(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: AsyncWrite + Unpin,
    {
        while self.outgoing_pos < self.outgoing.len() {
            let poll = Pin::new(&mut self.io).poll_write(cx, &self.outgoing[self.outgoing_pos..]);
            let Poll::Ready(written) = poll else {
                // Under a lasting backlog the buffer never empties: drop what was written once
                // it is as large as what may wait, so the buffer stays bounded.
                if self.outgoing_pos >= MAX_UNSENT {
                    self.outgoing.drain(..self.outgoing_pos);
                    self.outgoing_pos = 0;
                }
                return Poll::Pending;
            };
            let written = written?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.outgoing_pos += written;
        }
        if self.outgoing.capacity() > 0 {
            self.outgoing = Vec::new();
            self.outgoing_pos = 0;
        }
        Poll::Ready(Ok(()))
    }

    /// [`Self::poll_write_outgoing`] as far as the socket takes it now: `Ok` also when some is
    /// left for later.
    fn write_outgoing_now(&mut self, cx: &mut Context<'_>) -> io::Result<()>
    where
        IO: AsyncWrite + Unpin,
    {
        match self.poll_write_outgoing(cx) {
            Poll::Ready(result) => result,
            Poll::Pending => Ok(()),
        }
    }

    /// Reads from the socket into *incoming*: `Ready(Ok(()))` when bytes arrived or the socket
    /// ended (`eof`), `Pending` (with *incoming* freed if it is empty) when none are there.
    fn poll_fill_incoming(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: AsyncRead + Unpin,
    {
        if self.incoming_start > 0 {
            self.incoming
                .copy_within(self.incoming_start..self.incoming_len, 0);
            self.incoming_len -= self.incoming_start;
            self.incoming_start = 0;
        }
        if self.incoming_len == self.incoming.len() {
            if self.incoming.len() >= MAX_INCOMING {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "TLS message larger than the incoming buffer's limit",
                )));
            }
            let grown = (self.incoming.len() * 2).clamp(READ_CHUNK, MAX_INCOMING);
            self.incoming.resize(grown, 0);
        }
        let mut buf = ReadBuf::new(&mut self.incoming[self.incoming_len..]);
        match Pin::new(&mut self.io).poll_read(cx, &mut buf) {
            Poll::Ready(Ok(())) => {
                let read = buf.filled().len();
                if read == 0 {
                    self.eof = true;
                }
                self.incoming_len += read;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(error)) => Poll::Ready(Err(error)),
            Poll::Pending => {
                if self.incoming_len == 0 {
                    self.incoming = Vec::new();
                }
                Poll::Pending
            }
        }
    }

    /// Steps until the handshake is done and written (see [`accept`]).
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        loop {
            match self.step_or_fail(cx, None)? {
                Step::Again => {}
                Step::Traffic if !self.conn.is_handshaking() => {
                    ready!(self.poll_write_outgoing(cx))?;
                    if self.incoming_len == 0 {
                        self.incoming = Vec::new();
                    }
                    return Poll::Ready(Ok(()));
                }
                Step::NeedRead | Step::Traffic => {
                    // Our flight goes out before we wait for the peer's answer to it.
                    ready!(self.poll_write_outgoing(cx))?;
                    if self.eof {
                        return Poll::Ready(Err(unexpected_eof()));
                    }
                    ready!(self.poll_fill_incoming(cx))?;
                }
                Step::Wrote(_) | Step::Closed => return Poll::Ready(Err(unexpected_eof())),
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.plaintext.is_empty() {
                hand_out(&mut this.plaintext, buf);
                return Poll::Ready(Ok(()));
            }
            match this.step_or_fail(cx, None)? {
                Step::Again => {
                    // A key update's answer, say: written if the socket takes it now, else
                    // with the next write or flush.
                    this.write_outgoing_now(cx)?;
                }
                Step::Closed => return Poll::Ready(Ok(())),
                Step::NeedRead | Step::Traffic | Step::Wrote(_) => {
                    if this.peer_closed {
                        return Poll::Ready(Ok(()));
                    }
                    if this.eof {
                        return Poll::Ready(Err(unexpected_eof()));
                    }
                    ready!(this.poll_fill_incoming(cx))?;
                }
            }
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.close_queued {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "write after the TLS connection was shut down",
            )));
        }
        while this.outgoing.len() - this.outgoing_pos >= MAX_UNSENT {
            ready!(this.poll_write_outgoing(cx))?;
        }
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        loop {
            match this.step_or_fail(cx, Some(Op::Encrypt(data)))? {
                Step::Wrote(taken) => {
                    this.write_outgoing_now(cx)?;
                    return Poll::Ready(Ok(taken));
                }
                Step::Again => {}
                Step::NeedRead | Step::Traffic => {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::NotConnected,
                        "TLS handshake not complete",
                    )));
                }
                Step::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            }
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_outgoing(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while !this.close_queued {
            match this.step_or_fail(cx, Some(Op::CloseNotify))? {
                Step::Again => {}
                // Nothing more can be sent (both sides closed, or no handshake).
                _ => this.close_queued = true,
            }
        }
        ready!(this.poll_write_outgoing(cx))?;
        match ready!(Pin::new(&mut this.io).poll_shutdown(cx)) {
            // A socket the peer already closed is shut down enough.
            Err(error) if error.kind() == io::ErrorKind::NotConnected => Poll::Ready(Ok(())),
            result => Poll::Ready(result),
        }
    }
}

/// Writes with `write` (rustls encoding or encrypting) into the end of `outgoing`, first with
/// `estimate` bytes of room, then with the room `needed` reads from the error that says it was
/// too little.
fn write_into<E: std::fmt::Display>(
    outgoing: &mut Vec<u8>,
    estimate: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, E>,
    needed: impl Fn(&E) -> Option<usize>,
) -> Result<(), rustls::Error> {
    let start = outgoing.len();
    let mut room = estimate;
    for _ in 0..2 {
        outgoing.resize(start + room, 0);
        match write(&mut outgoing[start..]) {
            Ok(written) => {
                outgoing.truncate(start + written);
                return Ok(());
            }
            Err(error) => match needed(&error) {
                Some(required) => room = required,
                None => {
                    outgoing.truncate(start);
                    return Err(rustls::Error::General(error.to_string()));
                }
            },
        }
    }
    outgoing.truncate(start);
    Err(rustls::Error::General(
        "TLS message larger than rustls said it needed".to_owned(),
    ))
}

/// The room an encryption needs, if that is why it failed.
fn room_needed(error: &EncryptError) -> Option<usize> {
    match error {
        EncryptError::InsufficientSize(needed) => Some(needed.required_size),
        _ => None,
    }
}

fn invalid_data(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

fn unexpected_eof() -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        "peer closed the connection without sending TLS close_notify",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
    use tokio_rustls::TlsConnector;

    /// A server configuration (as the relay's: ring, TLS 1.3 and 1.2, ALPN http/1.1) with a
    /// self-signed certificate for localhost, and a client configuration trusting it with `alpn`.
    fn configs(alpn: &[u8]) -> (Arc<ServerConfig>, Arc<rustls::ClientConfig>) {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let mut server = ServerConfig::builder_with_provider(super::super::provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![cert.der().clone()], der)
            .unwrap();
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots
            .add(CertificateDer::from(cert.der().to_vec()))
            .unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(super::super::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = vec![alpn.to_vec()];
        (Arc::new(server), Arc::new(client))
    }

    /// A handshake over an in-memory pipe of `capacity` bytes each way.
    async fn pair(
        capacity: usize,
    ) -> (
        TlsStream<DuplexStream>,
        tokio_rustls::client::TlsStream<DuplexStream>,
    ) {
        let (server_config, client_config) = configs(b"http/1.1");
        let (client_io, server_io) = tokio::io::duplex(capacity);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            accept(server_config, server_io),
            TlsConnector::from(client_config).connect(name, client_io)
        );
        (server.unwrap(), client.unwrap())
    }

    /// Polls one read of `stream` and says whether it is pending (nothing to read yet).
    async fn read_is_pending(stream: &mut TlsStream<DuplexStream>) -> bool {
        let mut byte = [0; 1];
        poll_fn(|cx| {
            let mut buf = ReadBuf::new(&mut byte);
            Poll::Ready(Pin::new(&mut *stream).poll_read(cx, &mut buf).is_pending())
        })
        .await
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[tokio::test]
    async fn data_crosses_both_ways_through_a_narrow_pipe_and_ends_with_close_notify() {
        // 3 KiB of pipe: records arrive in pieces and writes wait for the peer to read.
        let (mut server, client) = pair(3 * 1024).await;
        assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
        let sent = pattern(300 * 1024);
        let (mut client_read, mut client_write) = tokio::io::split(client);
        let writer = {
            let sent = sent.clone();
            tokio::spawn(async move {
                // Writes of every size up to several records.
                let mut at = 0;
                let mut size = 1;
                while at < sent.len() {
                    let end = (at + size).min(sent.len());
                    client_write.write_all(&sent[at..end]).await.unwrap();
                    at = end;
                    size = size * 3 % 70_001 + 1;
                }
                client_write.shutdown().await.unwrap();
            })
        };
        let echo = tokio::spawn(async move {
            let mut buf = vec![0; 1000];
            loop {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    break;
                }
                server.write_all(&buf[..n]).await.unwrap();
            }
            server.shutdown().await.unwrap();
        });
        let mut echoed = Vec::new();
        // A client's read_to_end fails unless the server's close_notify ended the stream.
        client_read.read_to_end(&mut echoed).await.unwrap();
        writer.await.unwrap();
        echo.await.unwrap();
        assert!(echoed == sent, "the echo differs from what was sent");
    }

    #[tokio::test]
    async fn an_idle_stream_holds_no_buffer_and_a_busy_one_frees_them_once_done() {
        let (mut server, mut client) = pair(64 * 1024).await;
        assert_eq!(server.buffer_capacity(), 0, "after the handshake");
        client.write_all(&pattern(5000)).await.unwrap();
        client.flush().await.unwrap();
        let mut first = vec![0; 100];
        server.read_exact(&mut first).await.unwrap();
        assert!(server.buffer_capacity() > 0, "4,900 bytes wait to be read");
        let mut rest = vec![0; 4900];
        server.read_exact(&mut rest).await.unwrap();
        assert!(read_is_pending(&mut server).await);
        assert_eq!(server.buffer_capacity(), 0, "everything was read");
        server.write_all(&pattern(20_000)).await.unwrap();
        server.flush().await.unwrap();
        assert_eq!(server.buffer_capacity(), 0, "everything was written");
        let mut back = vec![0; 20_000];
        client.read_exact(&mut back).await.unwrap();
        assert!(back == pattern(20_000));
    }

    #[tokio::test]
    async fn under_a_lasting_backlog_the_outgoing_buffer_stays_bounded() {
        // The writer is always ahead of a reader behind a 3 KiB pipe: the ciphertext waiting to
        // be written never runs out, so written bytes must be dropped while writing goes on.
        let (mut server, client) = pair(3 * 1024).await;
        let total = 1024 * 1024;
        let reader = tokio::spawn(async move {
            let (mut read, _write) = tokio::io::split(client);
            let mut got = vec![0; total];
            read.read_exact(&mut got).await.unwrap();
            got
        });
        let sent = pattern(total);
        let mut most = 0;
        for chunk in sent.chunks(10_000) {
            server.write_all(chunk).await.unwrap();
            most = most.max(server.buffer_capacity());
        }
        server.flush().await.unwrap();
        assert!(
            most <= 3 * MAX_UNSENT,
            "the buffers grew to {most} bytes writing {total}"
        );
        assert!(reader.await.unwrap() == sent);
    }

    #[tokio::test]
    async fn a_key_update_is_answered_and_data_keeps_flowing() {
        let (mut server, mut client) = pair(64 * 1024).await;
        let mut buf = [0; 5];
        for round in 0..3u8 {
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round; 5]).await.unwrap();
            client.flush().await.unwrap();
            server.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [round; 5]);
            server.write_all(&[round + 10; 5]).await.unwrap();
            server.flush().await.unwrap();
            client.read_exact(&mut buf).await.unwrap();
            assert_eq!(buf, [round + 10; 5]);
        }
    }

    #[tokio::test]
    async fn a_socket_that_ends_without_close_notify_is_an_unexpected_eof() {
        let (mut server, client) = pair(64 * 1024).await;
        let (io, _) = client.into_inner();
        drop(io);
        let error = server.read(&mut [0; 16]).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_refused_handshake_names_the_rustls_error_and_sends_its_alert() {
        let (server_config, client_config) = configs(b"h2");
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) = tokio::join!(
            accept(server_config, server_io),
            TlsConnector::from(client_config).connect(name, client_io)
        );
        let server = server.unwrap_err();
        assert_eq!(server.kind(), io::ErrorKind::InvalidData);
        let inner = server
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert_eq!(inner, Some(&rustls::Error::NoApplicationProtocol));
        let client = client.unwrap_err();
        let inner = client
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>());
        assert_eq!(
            inner,
            Some(&rustls::Error::AlertReceived(
                rustls::AlertDescription::NoApplicationProtocol
            )),
            "{client}"
        );
    }

    #[tokio::test]
    async fn plain_http_instead_of_tls_is_invalid_data() {
        let (server_config, _) = configs(b"http/1.1");
        let (mut client_io, server_io) = tokio::io::duplex(64 * 1024);
        client_io
            .write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let error = accept(server_config, server_io).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        assert!(
            error
                .get_ref()
                .is_some_and(|e| e.downcast_ref::<rustls::Error>().is_some())
        );
    }

    #[tokio::test]
    async fn a_stream_that_failed_keeps_failing() {
        let (mut server, client) = pair(64 * 1024).await;
        let (mut io, _) = client.into_inner();
        // A record whose authentication fails: an application-data header and garbage.
        io.write_all(&[23, 3, 3, 0, 40]).await.unwrap();
        io.write_all(&[0x5a; 40]).await.unwrap();
        for _ in 0..2 {
            let error = server.read(&mut [0; 16]).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
            let error = server.write(b"x").await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::InvalidData);
        }
        // The peer was told why (a fatal alert record, content type 21).
        let mut alert = [0; 5];
        let read = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            io.read_exact(&mut alert),
        );
        read.await.expect("no alert within 10 s").unwrap();
        assert_eq!(
            alert[0], 23,
            "TLS 1.3 wraps the alert in an application-data record"
        );
    }

    #[tokio::test]
    async fn a_handshake_cut_short_is_an_unexpected_eof() {
        let (server_config, _) = configs(b"http/1.1");
        let (client_io, server_io) = tokio::io::duplex(64 * 1024);
        drop(client_io);
        let error = accept(server_config, server_io).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn a_write_after_shutdown_is_refused() {
        let (mut server, _client) = pair(64 * 1024).await;
        server.shutdown().await.unwrap();
        let error = server.write(b"late").await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::BrokenPipe);
    }
}
