//! The public listener: accepts TCP connections, reads the PROXY header first when configured,
//! and serves each connection's HTTP/1.1 with hyper — its own head deadline
//! (`header_read_timeout`) and head size limit (`max_buf_size`) — through [`routes::handle`],
//! its reads scanned for request targets with a fragment on the way ([`TargetCheck`]).
//!
//! With TLS on (`RelayConfig::tls`), each connection's TLS handshake comes between the PROXY
//! header and HTTP, through the gates and within the head deadline (see the `tls` module).
//!
//! It keeps accepting while the relay drains (so `/readyz` answers 503 and late upgrades are
//! refused 503, each on a connection that is closed after one response), and stops when the
//! relay stops: the listener is dropped and every HTTP connection is shut down gracefully (an
//! idle one at once).
//!
//! **Out of file descriptors.** When `accept` fails with `EMFILE`/`ENFILE` the pending connection
//! stays in the kernel's backlog, and the listener stays readable: a naive loop would spin on it,
//! and its client would hang. The loop keeps one *reserve* descriptor open (`/dev/null`); on
//! such an error it closes the reserve, accepts the pending connection and closes it at once
//! (its client sees the connection closed promptly), and reopens the reserve. Each refusal is
//! counted (`relay_requests_refused_total{reason="no_descriptors"}`) and logged at most once per
//! [`REFUSAL_LOG_EVERY`] with the count since the last line. If the reserve cannot be reopened
//! (another thread took the descriptor) the loop backs off [`BACKOFF`] before trying again.
//! Service resumes by itself as connections close.

use crate::config::ClientIpSource;
use crate::http::client_ip::Origin;
use crate::http::proxy;
use crate::http::request_target::{TargetCheck, Targets};
use crate::http::routes;
use crate::http::tls::Prepaid;
use crate::hub::Hub;
use crate::metrics::RefusedReason;
use futures_util::FutureExt;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

/// Largest request head (request line and headers) accepted; larger is answered 431.
pub(crate) const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
pub(crate) const MAX_HEADERS: usize = 48;

/// How long the accept loop waits after an `accept` error it cannot answer by refusing the
/// pending connection (see the module docs).
pub(crate) const BACKOFF: Duration = Duration::from_millis(50);
/// At most one log line per this long about connections refused for want of descriptors.
pub(crate) const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Accepts until the relay stops, then waits for the HTTP connections it started to end.
pub(crate) async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    let connections = TaskTracker::new();
    let stopped = hub.shutdown.stopped.clone();
    let mut reserve = Reserve::open();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(hub.clone(), stream, peer));
                }
                Err(error) if out_of_descriptors(&error) => {
                    if !reserve.refuse_pending(&listener, &hub) {
                        tokio::time::sleep(BACKOFF).await;
                    }
                }
                Err(error) => {
                    // E.g. ENOBUFS/ENOMEM: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(BACKOFF).await;
                }
            },
            _ = stopped.cancelled() => break,
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// True for the `accept` errors that mean the process (`EMFILE`) or the system (`ENFILE`) has no
/// descriptor left for the pending connection.
fn out_of_descriptors(error: &std::io::Error) -> bool {
    matches!(error.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// The accept loop's reserve descriptor and its refusal log (see the module docs).
struct Reserve {
    file: Option<std::fs::File>,
    /// Refusals not yet logged.
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl Reserve {
    fn open() -> Reserve {
        Reserve {
            file: std::fs::File::open("/dev/null").ok(),
            unlogged: 0,
            last_logged: None,
        }
    }

    /// After an out-of-descriptors `accept`: frees the reserve, accepts the pending connection
    /// and closes it, takes the reserve back. False if no connection could be refused this way
    /// (no reserve, or the freed descriptor was taken meanwhile): the caller backs off.
    fn refuse_pending(&mut self, listener: &TcpListener, hub: &Hub) -> bool {
        let refused = match self.file.take() {
            Some(file) => {
                drop(file);
                // The listener is still readable (the error left the connection pending), so
                // this completes at once; it is never awaited.
                let accepted = listener.accept().now_or_never();
                matches!(accepted, Some(Ok(_)))
            }
            None => false,
        };
        // The refused connection (if any) is closed by now: its descriptor is free again.
        self.file = std::fs::File::open("/dev/null").ok();
        if refused {
            hub.metrics.refused(RefusedReason::NoDescriptors);
            self.unlogged += 1;
        }
        let now = Instant::now();
        if refused
            && self
                .last_logged
                .is_none_or(|at| now.duration_since(at) >= REFUSAL_LOG_EVERY)
        {
            tracing::warn!(
                refused = self.unlogged,
                "out of file descriptors: new connections refused (closed at once)"
            );
            self.unlogged = 0;
            self.last_logged = Some(now);
        }
        refused
    }
}

/// One TCP connection: the PROXY header if configured, then HTTP.
async fn connection(hub: Arc<Hub>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    if hub.config.client_ip != ClientIpSource::ProxyProtocol {
        let origin = Origin {
            peer,
            proxied: None,
        };
        return tls_then_http(hub, stream, origin).await;
    }
    let header = tokio::time::timeout(hub.config.header_timeout, proxy::read_header(stream)).await;
    match header {
        Ok(Ok((stream, proxied))) => tls_then_http(hub, stream, Origin { peer, proxied }).await,
        Ok(Err(_)) | Err(_) => {
            hub.metrics.refused(RefusedReason::ProxyHeader);
            hub.refusals
                .refused(0, "connection without a valid PROXY header", peer.ip());
        }
    }
}

/// HTTP on the connection, after its TLS handshake when TLS is on.
async fn tls_then_http<I>(hub: Arc<Hub>, stream: I, origin: Origin)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if hub.tls.is_none() {
        return http(hub, stream, origin, None).await;
    }
    // Boxed: the handshake's and the TLS stream's states would otherwise size every
    // connection's task, `ws://` ones included.
    Box::pin(tls_http(hub, stream, origin)).await;
}

/// [`tls_then_http`] with TLS on: the handshake, then HTTP.
async fn tls_http<I>(hub: Arc<Hub>, stream: I, origin: Origin)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let Some(tls) = &hub.tls else {
        return;
    };
    let Some((stream, prepaid)) = tls.accept(&hub, stream, origin).await else {
        return;
    };
    http(hub, stream, origin, Some(prepaid)).await
}

/// Serves HTTP/1.1 on `io` until the connection ends (or is upgraded and handed over).
/// `prepaid`: the connection's TLS handshake took a rate-limit token for its first upgrade.
async fn http<I>(hub: Arc<Hub>, io: I, origin: Origin, prepaid: Option<Prepaid>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stopped = hub.shutdown.stopped.clone();
    let service_hub = hub.clone();
    let targets = Targets::new();
    let io = TargetCheck::new(io, targets.clone());
    let service = hyper::service::service_fn(move |mut req: hyper::Request<_>| {
        if let Some(prepaid) = &prepaid {
            req.extensions_mut().insert(prepaid.clone());
        }
        let fragment = targets.refuse_next();
        routes::handle(service_hub.clone(), origin, fragment, req)
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(hub.config.header_timeout)
        .max_buf_size(MAX_HEAD)
        .max_headers(MAX_HEADERS)
        .title_case_headers(true)
        // While draining, one response per connection.
        .keep_alive(!hub.shutdown.is_draining())
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        _ = stopped.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(error) = result {
        let refused = if error.is_timeout() {
            Some((RefusedReason::HeaderTimeout, 408, "request head too slow"))
        } else if error.is_parse_too_large() {
            Some((RefusedReason::HeadTooLarge, 431, "request head too large"))
        } else if error.is_parse() {
            Some((RefusedReason::Malformed, 400, "malformed request"))
        } else {
            None
        };
        if let Some((reason, status, what)) = refused {
            hub.metrics.refused(reason);
            let ip = origin.proxied.unwrap_or(origin.peer.ip());
            hub.refusals.refused(status, what, ip);
        }
    }
}
