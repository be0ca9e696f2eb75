//! The public listener: accepts TCP connections, reads the PROXY header first when configured,
//! and serves each connection's HTTP/1.1 with hyper — its own head deadline
//! (`header_read_timeout`) and head size limit (`max_buf_size`) — through [`routes::handle`].
//!
//! It keeps accepting while the relay drains (so `/readyz` answers 503 and late upgrades are
//! refused 503, each on a connection that is closed after one response), and stops when the
//! relay stops: the listener is dropped and every HTTP connection is shut down gracefully (an
//! idle one at once).

use crate::Hub;
use crate::client_ip::Origin;
use crate::config::ClientIpSource;
use crate::metrics::RefusedReason;
use crate::proxy;
use crate::routes;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;

/// Largest request head (request line and headers) accepted; larger is answered 431.
pub const MAX_HEAD: usize = 16 * 1024;
/// Most header lines accepted.
pub const MAX_HEADERS: usize = 48;

/// Accepts until the relay stops, then waits for the HTTP connections it started to end.
pub async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    let connections = TaskTracker::new();
    let stopped = hub.shutdown.stopped.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    connections.spawn(connection(hub.clone(), stream, peer));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            _ = stopped.cancelled() => break,
        }
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// One TCP connection: the PROXY header if configured, then HTTP.
async fn connection(hub: Arc<Hub>, stream: TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    if hub.config.client_ip != ClientIpSource::ProxyProtocol {
        let origin = Origin {
            peer,
            proxied: None,
        };
        return http(hub, stream, origin).await;
    }
    let header = tokio::time::timeout(hub.config.header_timeout, proxy::read_header(stream)).await;
    match header {
        Ok(Ok((stream, proxied))) => http(hub, stream, Origin { peer, proxied }).await,
        Ok(Err(_)) | Err(_) => {
            hub.metrics.refused(RefusedReason::ProxyHeader);
            hub.refusals
                .refused(0, "connection without a valid PROXY header", peer.ip());
        }
    }
}

/// Serves HTTP/1.1 on `io` until the connection ends (or is upgraded and handed over).
async fn http<I>(hub: Arc<Hub>, io: I, origin: Origin)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let stopped = hub.shutdown.stopped.clone();
    let service_hub = hub.clone();
    let service =
        hyper::service::service_fn(move |req| routes::handle(service_hub.clone(), origin, req));
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
