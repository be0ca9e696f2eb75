//! Helpers of the TLS tests (`tls`, `acme`): a test CA (rcgen, ECDSA P-256) issuing `localhost`
//! certificates, certificate files, TLS and `wss://` clients, and the child-process helpers.
#![allow(dead_code)]

use crate::support::*;
use relay_server::{Relay, RelayConfig, TlsConfig};
use rustls::pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::Connector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

/// A test CA that issues leaf certificates for `localhost`.
pub struct Ca {
    pub issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
    pub pem: String,
}

/// A leaf certificate (PEM), its key (PEM) and the certificate's DER.
pub struct Leaf {
    pub cert: String,
    pub key: String,
    pub der: Vec<u8>,
}

impl Ca {
    pub fn new() -> Ca {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "relay test CA");
        let cert = params.self_signed(&key).unwrap();
        Ca {
            issuer: rcgen::Issuer::new(params, key),
            pem: cert.pem(),
        }
    }

    pub fn leaf(&self) -> Leaf {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let params = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        Leaf {
            cert: cert.pem(),
            key: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// A client configuration trusting this CA only, with ALPN `http/1.1`.
    pub fn client(&self) -> Arc<rustls::ClientConfig> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, &self.pem).unwrap();
        relay_server::client_tls(Some(&path)).unwrap()
    }
}

/// Certificate files in a temporary directory.
pub struct Files {
    pub dir: tempfile::TempDir,
}

impl Files {
    pub fn new(leaf: &Leaf) -> Files {
        let files = Files {
            dir: tempfile::tempdir().unwrap(),
        };
        files.write(&leaf.cert, &leaf.key);
        files
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.path().join("cert.pem")
    }

    pub fn key(&self) -> PathBuf {
        self.dir.path().join("key.pem")
    }

    /// Replaces both files the way certificate tooling does: write aside, rename over.
    pub fn write(&self, cert: &str, key: &str) {
        for (path, text) in [(self.cert(), cert), (self.key(), key)] {
            let aside = path.with_extension("new");
            std::fs::write(&aside, text).unwrap();
            std::fs::rename(&aside, &path).unwrap();
        }
    }
}

pub fn tls_config(files: &Files) -> RelayConfig {
    RelayConfig {
        tls: Some(TlsConfig::files(files.cert(), files.key())),
        ..config()
    }
}

/// A TLS connection to `addr` as `localhost`, with `config`.
pub async fn tls_connect(
    addr: SocketAddr,
    config: Arc<rustls::ClientConfig>,
) -> std::io::Result<TlsStream<TcpStream>> {
    let tcp = TcpStream::connect(addr).await?;
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(PATIENCE, TlsConnector::from(config).connect(name, tcp))
        .await
        .expect("the handshake ends")
}

/// The leaf certificate a new connection is served.
pub async fn served(addr: SocketAddr, ca: &Ca) -> Vec<u8> {
    let stream = tls_connect(addr, ca.client()).await.expect("handshake");
    let (_, connection) = stream.get_ref();
    let chain: &[CertificateDer<'_>] = connection.peer_certificates().expect("a certificate");
    chain[0].to_vec()
}

/// Waits (bounded) until new connections are served `der`.
pub async fn await_served(addr: SocketAddr, ca: &Ca, der: &[u8]) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while served(addr, ca).await != der {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the new certificate was never served"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A WebSocket over `wss://localhost:PORT` with `headers`.
pub async fn wss(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
    tls: Arc<rustls::ClientConfig>,
) -> Ws {
    wss_to(addr, "localhost", path, headers, tls).await
}

/// A WebSocket over `wss://HOST:PORT` (connected to `addr`) with `headers`.
pub async fn wss_to(
    addr: SocketAddr,
    host: &str,
    path: &str,
    headers: &[(&'static str, String)],
    tls: Arc<rustls::ClientConfig>,
) -> Ws {
    let url = format!("wss://{host}:{}{path}", addr.port());
    let mut request = url.into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    let tcp = TcpStream::connect(addr).await.unwrap();
    let connecting = tokio_tungstenite::client_async_tls_with_config(
        request,
        tcp,
        None,
        Some(Connector::Rustls(tls)),
    );
    let (ws, _) = tokio::time::timeout(PATIENCE, connecting)
        .await
        .expect("upgrade answered")
        .expect("upgraded");
    ws
}

/// A binary and one phone of `id` over `wss://`, joined (the phone's conn_id returned).
pub async fn pair_over_wss(relay: &Relay, ca: &Ca, id: &str) -> (Peer, Peer, String) {
    let addr = relay.local_addr();
    let mut binary = Peer::new(wss(addr, "/v1/server", &binary_headers(id), ca.client()).await);
    let mut phone = Peer::new(wss(addr, "/v1/client", &phone_headers(id), ca.client()).await);
    phone.send(r#"{"hello":1}"#).await;
    let envelope = binary.json().await;
    assert_eq!(envelope["frame"]["hello"], 1, "{envelope}");
    let conn_id = envelope["conn_id"].as_str().unwrap().to_owned();
    (binary, phone, conn_id)
}

/// One exchange each way on a joined pair.
pub async fn exchange(binary: &mut Peer, phone: &mut Peer, conn_id: &str, n: u32) {
    phone.send(format!(r#"{{"up":{n}}}"#)).await;
    assert_eq!(binary.json().await["frame"]["up"], n);
    binary
        .send(format!(
            r#"{{"conn_id":"{conn_id}","frame":{{"down":{n}}}}}"#
        ))
        .await;
    assert_eq!(phone.json().await["down"], n);
}

/// A request over TLS; the whole response.
pub async fn https(addr: SocketAddr, ca: &Ca, request: &str) -> String {
    let mut stream = tls_connect(addr, ca.client()).await.expect("handshake");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer)).await;
    String::from_utf8_lossy(&answer).into_owned()
}

pub fn signal(child: &std::process::Child, name: &str) {
    let status = Command::new("sh")
        .args(["-c", &format!("kill -{name} {}", child.id())])
        .status()
        .expect("sh -c kill");
    assert!(status.success());
}

pub fn wait_exit(child: &mut std::process::Child) -> std::process::ExitStatus {
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("the relay did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The lines a child writes to `pipe`, read on a thread.
pub fn lines_of(pipe: impl std::io::Read + Send + 'static) -> std::sync::mpsc::Receiver<String> {
    use std::io::BufRead;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The first line from `lines` containing `needle` (bounded by [`PATIENCE`]).
pub fn line_with(lines: &std::sync::mpsc::Receiver<String>, needle: &str) -> String {
    let deadline = std::time::Instant::now() + PATIENCE;
    let mut seen = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no line with {needle:?} in {seen:#?}"),
        }
    }
}
