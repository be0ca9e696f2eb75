//! The bare forwarder: the physical-limit baseline of the relay's performance table (a benchmark
//! baseline, not a feature; an example so it is never installed with the product).
//!
//! It runs on the relay's own WebSocket stack (tokio + tokio-tungstenite) and does only what the
//! load generator needs to drive it like the relay:
//! - `/v1/server` with `X-Pyrycode-Server: ID` makes the connection the binary of ID (a later
//!   one replaces it); any other path is a phone of the id in its `X-Pyrycode-Server` header.
//! - A phone's text frame goes to its binary as `{"conn_id":"client-ID-N","frame":<frame>}`
//!   (string concatenation: the frame is not parsed).
//! - A binary's text frame is read as `{"conn_id":"…","frame":…}` *in that field order* (what
//!   `relay-loadgen` sends): the conn-id is the text between the first `"conn_id":"` and the
//!   next `"`, the frame is everything after `,"frame":` up to the final `}`; it goes verbatim
//!   to that phone.
//! - Frames are written straight into the peer's WebSocket under its lock (no queue of its own):
//!   the sender waits while the peer's socket is full. Frames a reader finds already arrived
//!   are forwarded together and each peer is flushed once per such batch.
//!
//! What it skips, on purpose: header checks (missing headers, `User-Agent`, tokens, id
//! validation) and every HTTP status but 101; the registry's rules (first claim wins, the
//! 4409/4404/4429 refusals, the phone cap, the grace window, takeover); envelope validation
//! (JSON, `close_code`, nesting depth) and the phone-left notice; outboxes and their bounds;
//! heartbeats, slow-loris and size limits beyond tungstenite's defaults; `/healthz`, metrics,
//! logging and a graceful drain. Frames it cannot route are dropped.
//!
//! With `--tls-cert FILE --tls-key FILE` it speaks `wss://` on the relay's own TLS stack and
//! configuration (`relay/src/http/tls`): rustls on the *ring* provider, TLS 1.3 and 1.2, no client
//! authentication, ALPN `http/1.1`, through the relay's own stream over rustls's unbuffered
//! API (`relay_server::tls_stream`), so that "bare" stays the physical-limit line with TLS on.
//! What it skips there: the relay's certificate reloading, ACME, the Host check
//! and the handshake gates (rate limit, connection cap, deadline).
//!
//! ```text
//! cargo run --release -p relay-server --example bare_forwarder -- --listen 127.0.0.1:9000
//! cargo run --release -p relay-server --example bare_forwarder -- --tls-cert c.pem --tls-key k.pem
//! ```
//! It prints `bare forwarder listening on ws://ADDR` (`wss://` with TLS; the real port when given
//! port 0) and runs until killed.

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{Bytes, Message, Utf8Bytes};

/// Copy frames between binaries and their phones, nothing else (a benchmark baseline).
#[derive(Debug, Parser)]
#[command(name = "bare_forwarder", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// TLS (`wss://`) from this PEM certificate chain (leaf first), with --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

/// A connection's stream once accepted: a `TcpStream`, or a TLS stream over one.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

/// The sending half of a connection, shared with whoever forwards to it.
type Peer<S> = Arc<tokio::sync::Mutex<SplitSink<WebSocketStream<S>, Message>>>;

/// Who is connected: binaries by server-id, phones by conn-id (all of one stream type: one
/// process serves either `ws://` or `wss://`).
struct Hub<S> {
    binaries: Mutex<HashMap<String, Peer<S>>>,
    phones: Mutex<HashMap<String, Peer<S>>>,
    next_phone: AtomicU64,
}

impl<S> Default for Hub<S> {
    fn default() -> Self {
        Hub {
            binaries: Mutex::default(),
            phones: Mutex::default(),
            next_phone: AtomicU64::new(0),
        }
    }
}

/// Small buffers, so the baseline costs what the stack costs and no more: a 4 KiB read buffer
/// (tungstenite zero-fills the whole read buffer before each read: its default 128 KiB showed
/// as a fifth of the relay's profile), writes gathered up to 16 KiB until a flush, at most
/// 1 MiB unsent.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(1024 * 1024)
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => match tls_config(cert, key) {
            Ok(config) => Some(config),
            Err(message) => {
                eprintln!("bare_forwarder: {message}");
                return std::process::ExitCode::from(2);
            }
        },
        _ => None,
    };
    let listener = match TcpListener::bind(args.listen).await {
        Ok(listener) => listener,
        Err(error) => {
            eprintln!("bare_forwarder: cannot listen on {}: {error}", args.listen);
            return std::process::ExitCode::from(2);
        }
    };
    let scheme = if tls.is_some() { "wss" } else { "ws" };
    match listener.local_addr() {
        Ok(addr) => println!("bare forwarder listening on {scheme}://{addr}"),
        Err(error) => eprintln!("bare_forwarder: {error}"),
    }
    match tls {
        Some(config) => serve_tls(listener, config).await,
        None => serve(listener).await,
    }
    std::process::ExitCode::SUCCESS
}

/// The relay's server configuration (`relay/src/http/tls`: rustls on *ring*, TLS 1.3 and 1.2,
/// no client authentication, ALPN `http/1.1`) with the certificate in `cert` and `key`.
fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let read = |path: &Path| std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()));
    let (cert_pem, key_pem) = (read(cert)?, read(key)?);
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("{}: {e}", cert.display()))?;
    let key_der =
        PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| format!("{}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up: {e}"))?
        .with_no_client_auth()
        .with_single_cert(chain, key_der)
        .map_err(|e| format!("{} and {}: {e}", cert.display(), key.display()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Accepts connections forever (an accept error, e.g. out of descriptors, pauses it briefly).
async fn serve(listener: TcpListener) {
    let hub = Arc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                tokio::spawn(connection(hub.clone(), stream));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// [`serve`] with a TLS handshake first on each connection, in the connection's own task (a
/// failed handshake drops the connection).
async fn serve_tls(listener: TcpListener, config: Arc<ServerConfig>) {
    let hub = Arc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let _ = stream.set_nodelay(true);
                let (hub, config) = (hub.clone(), config.clone());
                tokio::spawn(async move {
                    if let Ok(stream) = relay_server::tls_stream::accept(config, stream).await {
                        connection(hub, stream).await;
                    }
                });
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// One connection: upgrade, remember the path and id, then forward until it ends.
// The handshake callback's `Result<Response, ErrorResponse>` is tungstenite's signature.
#[allow(clippy::result_large_err)]
async fn connection<S: Stream>(hub: Arc<Hub<S>>, stream: S) {
    let mut seen = (false, String::new());
    let callback = |request: &Request, response: Response| -> Result<Response, ErrorResponse> {
        let id = request
            .headers()
            .get("X-Pyrycode-Server")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        seen = (request.uri().path() == "/v1/server", id.to_owned());
        Ok(response)
    };
    let Ok(ws) =
        tokio_tungstenite::accept_hdr_async_with_config(stream, callback, Some(ws_config())).await
    else {
        return;
    };
    let (is_binary, id) = seen;
    let (tx, rx) = ws.split();
    let me: Peer<S> = Arc::new(tokio::sync::Mutex::new(tx));
    if is_binary {
        let binaries = &hub.binaries;
        binaries
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), me.clone());
        forward_all(&hub, &Side::Binary, rx).await;
        let mut binaries = binaries.lock().expect("not poisoned");
        if binaries.get(&id).is_some_and(|b| Arc::ptr_eq(b, &me)) {
            binaries.remove(&id);
        }
    } else {
        let n = hub.next_phone.fetch_add(1, Ordering::Relaxed);
        let conn_id = format!("client-{id}-{n:08x}");
        let prefix = format!("{{\"conn_id\":\"{conn_id}\",\"frame\":");
        let phones = &hub.phones;
        phones
            .lock()
            .expect("not poisoned")
            .insert(conn_id.clone(), me);
        forward_all(&hub, &Side::Phone { id, prefix }, rx).await;
        phones.lock().expect("not poisoned").remove(&conn_id);
    }
}

/// Which end a connection is, and what routing its frames needs.
enum Side {
    /// A binary: its frames go to the phone named in them.
    Binary,
    /// A phone of server-id `id`: its frames go to that id's binary, after `prefix`.
    Phone { id: String, prefix: String },
}

/// Most frames read back to back before the peers they went to are flushed.
const MAX_BATCH: usize = 64;

/// Forwards every frame `rx` reads until it ends; frames already read when one arrives are
/// forwarded with it, and each peer written to is flushed once per such batch (not per frame).
async fn forward_all<S: Stream>(
    hub: &Hub<S>,
    side: &Side,
    mut rx: SplitStream<WebSocketStream<S>>,
) {
    let mut dirty: Vec<Peer<S>> = Vec::new();
    while let Some(Ok(message)) = rx.next().await {
        forward(hub, side, message, &mut dirty).await;
        for _ in 1..MAX_BATCH {
            match rx.next().now_or_never() {
                Some(Some(Ok(message))) => forward(hub, side, message, &mut dirty).await,
                _ => break,
            }
        }
        for peer in dirty.drain(..) {
            let _ = peer.lock().await.flush().await;
        }
    }
}

/// Routes one frame and queues it in its peer's write buffer (unflushed; see [`forward_all`]).
async fn forward<S: Stream>(hub: &Hub<S>, side: &Side, message: Message, dirty: &mut Vec<Peer<S>>) {
    let Message::Text(text) = message else {
        return;
    };
    let routed = match side {
        Side::Binary => split_envelope(text).and_then(|(conn_id, frame)| {
            let phone = hub
                .phones
                .lock()
                .expect("not poisoned")
                .get(&conn_id)
                .cloned();
            phone.map(|phone| (phone, Message::Text(frame)))
        }),
        Side::Phone { id, prefix } => {
            let binary = hub.binaries.lock().expect("not poisoned").get(id).cloned();
            binary.map(|binary| {
                let mut wrapped = String::with_capacity(prefix.len() + text.len() + 1);
                wrapped.push_str(prefix);
                wrapped.push_str(text.as_str());
                wrapped.push('}');
                (binary, Message::text(wrapped))
            })
        }
    };
    let Some((peer, out)) = routed else {
        return;
    };
    if peer.lock().await.feed(out).await.is_ok() && !dirty.iter().any(|p| Arc::ptr_eq(p, &peer)) {
        dirty.push(peer);
    }
}

/// Splits `{"conn_id":"ID","frame":FRAME}` (fields in this order) into ID and FRAME, without
/// copying the frame; `None` for anything else.
fn split_envelope(text: Utf8Bytes) -> Option<(String, Utf8Bytes)> {
    const ID: &str = "\"conn_id\":\"";
    const FRAME: &str = ",\"frame\":";
    let s = text.as_str();
    let id_start = s.find(ID)? + ID.len();
    let id_end = id_start + s[id_start..].find('"')?;
    let frame_start = id_end + 1 + s[id_end + 1..].strip_prefix(FRAME).map(|_| FRAME.len())?;
    let frame_end = s.rfind('}')?;
    if frame_end <= frame_start {
        return None;
    }
    let conn_id = s[id_start..id_end].to_owned();
    let bytes = Bytes::from(text).slice(frame_start..frame_end);
    Some((conn_id, Utf8Bytes::try_from(bytes).ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpStream;
    use tokio_tungstenite::Connector;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    const PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

    #[test]
    fn an_envelope_splits_into_its_conn_id_and_frame() {
        let text = Utf8Bytes::from(r#"{"conn_id":"client-a-1","frame":{"x":[1,2]}}"#.to_owned());
        let (id, frame) = split_envelope(text).unwrap();
        assert_eq!(id, "client-a-1");
        assert_eq!(frame.as_str(), r#"{"x":[1,2]}"#);
        for bad in [
            r#"{"frame":1}"#,
            r#"{"conn_id":"c","x":1}"#,
            r#"{"conn_id":"c","frame":}"#,
        ] {
            assert!(
                split_envelope(Utf8Bytes::from(bad.to_owned())).is_none(),
                "{bad}"
            );
        }
    }

    /// Connects to `path` as `id` over `ws://`, or over `wss://localhost` trusting `tls`.
    async fn connect(
        addr: SocketAddr,
        tls: Option<&Arc<rustls::ClientConfig>>,
        path: &str,
        id: &str,
    ) -> WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>> {
        let url = match tls {
            Some(_) => format!("wss://localhost:{}{path}", addr.port()),
            None => format!("ws://{addr}{path}"),
        };
        let mut request = url.into_client_request().unwrap();
        let id = HeaderValue::from_str(id).unwrap();
        request.headers_mut().insert("X-Pyrycode-Server", id);
        let connector = tls.map(|config| Connector::Rustls(config.clone()));
        let connecting =
            tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector);
        tokio::time::timeout(PATIENCE, connecting)
            .await
            .unwrap()
            .unwrap()
            .0
    }

    async fn next_text(
        ws: &mut WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>,
    ) -> String {
        loop {
            let message = tokio::time::timeout(PATIENCE, ws.next()).await.unwrap();
            if let Some(Ok(Message::Text(text))) = message {
                return text.as_str().to_owned();
            }
        }
    }

    /// A binary and two phones (one of another id): the phone's frame reaches the binary in the
    /// relay's envelope, the stranger's never does, and the binary's reply reaches the phone.
    async fn frames_cross(addr: SocketAddr, tls: Option<&Arc<rustls::ClientConfig>>) {
        let mut binary = connect(addr, tls, "/v1/server", "demo").await;
        let mut phone = connect(addr, tls, "/v1/client", "demo").await;
        let mut stranger = connect(addr, tls, "/v1/client", "other").await;
        stranger
            .send(Message::text(r#"{"lost":true}"#))
            .await
            .unwrap();
        // The binary is registered just after its 101: the phone repeats its frame until the
        // binary has one (bounded), which also shows that the stranger's never arrives.
        let mut first = None;
        for _ in 0..200 {
            phone.send(Message::text(r#"{"x":1}"#)).await.unwrap();
            let wait = std::time::Duration::from_millis(50);
            if let Ok(text) = tokio::time::timeout(wait, next_text(&mut binary)).await {
                first = Some(text);
                break;
            }
        }
        let wrapped: serde_json::Value =
            serde_json::from_str(&first.expect("the binary got the phone's frame")).unwrap();
        assert_eq!(wrapped["frame"], serde_json::json!({"x": 1}));
        let conn_id = wrapped["conn_id"].as_str().unwrap().to_owned();
        assert!(conn_id.starts_with("client-demo-"), "{conn_id}");

        let reply = format!(r#"{{"conn_id":"{conn_id}","frame":{{"y":2}}}}"#);
        binary.send(Message::text(reply)).await.unwrap();
        assert_eq!(next_text(&mut phone).await, r#"{"y":2}"#);
    }

    #[tokio::test]
    async fn frames_cross_between_a_binary_and_its_phone_in_the_relay_envelope() {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve(listener));
        frames_cross(addr, None).await;
        server.abort();
    }

    #[tokio::test]
    async fn frames_cross_over_wss_with_the_certificate_given() {
        let dir = std::env::temp_dir().join(format!("bare-forwarder-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let config = tls_config(&cert_file, &key_file).unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let listener = TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(serve_tls(listener, config));
        frames_cross(addr, Some(&Arc::new(client))).await;
        server.abort();
    }

    #[test]
    fn a_key_that_is_not_pem_is_refused_naming_its_file() {
        let dir = std::env::temp_dir().join(format!("bare-forwarder-bad-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (cert_file, key_file) = (dir.join("cert.pem"), dir.join("key.pem"));
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, "not a key\n").unwrap();
        let error = tls_config(&cert_file, &key_file).err().unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(error.contains("key.pem"), "{error}");
    }
}
