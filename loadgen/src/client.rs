//! Opening one client connection: a TCP socket bound to one of the loopback source addresses
//! (127.0.0.1 and up, so that more connections fit than one address's ephemeral ports), the
//! WebSocket upgrade with a binary's or a phone's headers, and what became of the attempt.

use super::plan::Target;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Error as WsError};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

/// A client WebSocket.
pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Which endpoint a connection uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// `/v1/server`.
    Binary,
    /// `/v1/client`.
    Phone,
}

/// What became of one attempt.
pub enum Outcome {
    /// Upgraded.
    Open(Box<Ws>),
    /// The target answered with another status than 101 (`"http 503"`).
    Refused(String),
    /// No answer: the error, e.g. `"Connection refused (os error 111)"` or `"timed out"`.
    Failed(String),
}

/// The source address of connection number `index`: 127.0.0.1 up to 127.0.0.`sources`, in turn
/// (`None` when the target is not IPv4 loopback: then the kernel picks).
pub fn source_for(target: &SocketAddr, sources: u8, index: u64) -> Option<SocketAddr> {
    match target.ip() {
        IpAddr::V4(ip) if ip.is_loopback() && sources > 0 => {
            let last = 1 + (index % u64::from(sources)) as u8;
            Some(SocketAddr::from((Ipv4Addr::new(127, 0, 0, last), 0)))
        }
        _ => None,
    }
}

/// Opens connection number `index` to `side`'s endpoint for `server_id`.
pub async fn open(target: &Target, side: Side, server_id: &str, index: u64) -> Outcome {
    let limit = Duration::from_millis(target.connect_timeout_ms);
    match tokio::time::timeout(limit, attempt(target, side, server_id, index)).await {
        Ok(outcome) => outcome,
        Err(_) => Outcome::Failed("timed out".to_owned()),
    }
}

async fn attempt(target: &Target, side: Side, server_id: &str, index: u64) -> Outcome {
    let stream = match connect_tcp(target, index).await {
        Ok(stream) => stream,
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    let path = match side {
        Side::Binary => "/v1/server",
        Side::Phone => "/v1/client",
    };
    let mut request = match format!("{}{path}", target.url).into_client_request() {
        Ok(request) => request,
        Err(error) => return Outcome::Failed(error.to_string()),
    };
    let Ok(id) = HeaderValue::from_str(server_id) else {
        return Outcome::Failed(format!("server-id {server_id:?} is not a header value"));
    };
    let headers = request.headers_mut();
    headers.insert("X-Pyrycode-Server", id);
    headers.insert("User-Agent", HeaderValue::from_static("relay-loadgen"));
    match side {
        Side::Binary => {
            headers.insert("X-Pyrycode-Version", HeaderValue::from_static("loadgen"));
        }
        Side::Phone => {
            headers.insert(
                "X-Pyrycode-Token",
                HeaderValue::from_static("loadgen-token"),
            );
        }
    }
    let connector = match tls(target) {
        Ok(connector) => connector,
        Err(error) => return Outcome::Failed(error),
    };
    let connecting = tokio_tungstenite::client_async_tls_with_config(
        request,
        stream,
        Some(lean()),
        Some(connector),
    );
    match connecting.await {
        Ok((ws, _response)) => Outcome::Open(Box::new(ws)),
        Err(WsError::Http(response)) => {
            Outcome::Refused(format!("http {}", response.status().as_u16()))
        }
        Err(error) => Outcome::Failed(error.to_string()),
    }
}

/// The rustls connector for `wss://` targets (made once per process: all targets share
/// `--ca-file`); tokio-tungstenite uses it only when the URL is `wss://`.
fn tls(target: &Target) -> Result<Connector, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| crate::tls::client_config(target.ca_file.as_deref()));
    config.clone().map(Connector::Rustls)
}

async fn connect_tcp(target: &Target, index: u64) -> std::io::Result<TcpStream> {
    let socket = match target.addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    if let Some(source) = source_for(&target.addr, target.sources, index) {
        socket.bind(source)?;
    }
    let stream = socket.connect(target.addr).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// Small buffers: the load generator holds up to ~19,000 connections per process. Frames fed
/// without a flush gather up to 16 KiB (a binary's probes to its phones go out in one write;
/// every send path flushes), and the buffer grows only on connections that do that.
fn lean() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(4 * 1024 * 1024)
}

/// The close code a peer sent (1005 if its close frame had none), 1006 for an abrupt end.
pub fn close_code(message: Option<&tungstenite::Message>) -> u16 {
    match message {
        Some(tungstenite::Message::Close(Some(frame))) => u16::from(frame.code),
        Some(tungstenite::Message::Close(None)) => 1005,
        _ => 1006,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_rotate_over_loopback_addresses() {
        let target = SocketAddr::from(([127, 0, 0, 1], 8080));
        let ip = |i| source_for(&target, 3, i).map(|a| a.ip().to_string());
        assert_eq!(ip(0).as_deref(), Some("127.0.0.1"));
        assert_eq!(ip(1).as_deref(), Some("127.0.0.2"));
        assert_eq!(ip(2).as_deref(), Some("127.0.0.3"));
        assert_eq!(ip(3).as_deref(), Some("127.0.0.1"));
        assert_eq!(source_for(&target, 3, 5).map(|a| a.port()), Some(0));
    }

    #[test]
    fn ipv6_targets_get_no_source_binding() {
        let target: SocketAddr = "[::1]:8080".parse().unwrap();
        assert_eq!(source_for(&target, 8, 0), None);
    }
}
