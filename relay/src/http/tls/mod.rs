//! TLS on the public listener: the relay terminates TLS 1.2/1.3 itself (rustls, the *ring*
//! provider, ALPN `http/1.1`), from certificate files it reloads while running, or from
//! certificates it obtains and renews by ACME.
//!
//! # The model
//!
//! - **One current certificate.** [`Resolver`] (rustls's [`ResolvesServerCert`]) holds the
//!   current [`CertifiedKey`] behind a lock; each handshake takes an `Arc` of it. Replacing it
//!   (a reload, a renewal) is one pointer swap: open connections keep the key they were made
//!   with, the next handshake sees the new one. With no certificate yet (ACME before its first
//!   issuance) every handshake fails (`relay_tls_handshake_failures_total{reason="no_certificate"}`)
//!   and `/readyz` answers 503.
//! - **Where certificates come from** ([`Certificates`]): files (`files`: loaded at start — a
//!   bad pair is a start-up error — then reloaded on `SIGHUP` and whenever their contents change;
//!   a pair that does not load or whose key does not match the certificate is refused, logged and
//!   counted, and the old one stays) or ACME (`acme`: issued into a cache directory, served from
//!   it after a restart, renewed before expiry; `challenge` answers http-01 on its own plain
//!   listener and tls-alpn-01 through this resolver, for ALPN `acme-tls/1`).
//! - **Handshakes are bounded** (`accept`): each one first passes the same gates as an upgrade —
//!   the per-IP rate limit and the connection cap — and holds its place under the cap until it
//!   finishes, which must be within the head deadline (`RelayConfig::header_timeout`). A flood
//!   of half-open handshakes therefore holds at most `max_connections` connections (each further
//!   one is closed at once) and each for at most the deadline. The rate-limit token the handshake
//!   took pays for the connection's first upgrade ([`Prepaid`]), so a `wss://` client pays one
//!   token per connection, as a `ws://` client does.
//! - **The Host check** (`host`): with configured names, a request whose host is not one of
//!   them gets 421 with an empty body.
//! - **The stream** ([`stream`]): rustls's unbuffered API under tokio's `AsyncRead` and
//!   `AsyncWrite`, with buffers only while bytes are in flight (an idle `wss://` connection
//!   holds rustls's state and nothing else).
//! - **Metrics** (`metrics`): the certificate's expiry per name, handshake failures by reason,
//!   certificate loads by outcome, ACME orders by outcome.

mod acme;
mod challenge;
mod client;
mod files;
pub(crate) mod host;
pub mod stream;

use crate::config::{Certificates, TlsConfig};
use crate::metrics::tls::TlsMetrics;
pub use client::{ClientTlsError, client_tls};

use crate::http::client_ip::Origin;
use crate::http::gates::Refusal;
use crate::hub::Hub;
use crate::metrics::tls::HandshakeFailure;
use parking_lot::RwLock;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use stream::TlsStream;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::task::AbortOnDropHandle;

/// The ALPN protocol the relay speaks over TLS.
pub(crate) const HTTP_1_1: &[u8] = b"http/1.1";
/// The ALPN protocol of ACME's tls-alpn-01 challenge (RFC 8737).
pub(crate) const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// How often the certificate files are read to see whether they changed.
pub(crate) const FILE_POLL: Duration = Duration::from_secs(1);

/// A TLS configuration the relay cannot start with. Its `Display` is the message for the
/// operator (the `relay` binary prints `relay: error: <message>` and exits 2).
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A certificate or key file could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A certificate/key pair that does not make a usable certificate.
    #[error("{0}")]
    Pair(#[from] files::PairError),
    /// TLS with `--client-ip x-forwarded-for`: no load balancer can add a header inside a TLS
    /// connection it does not terminate.
    #[error(
        "TLS with --client-ip x-forwarded-for: a load balancer in front of the relay's TLS cannot \
         add X-Forwarded-For; use --client-ip proxy-protocol (or peer)"
    )]
    ForwardedFor,
    /// An ACME setting the relay cannot start with.
    #[error("ACME: {0}")]
    Acme(String),
    /// The `--http-listen` address could not be bound.
    #[error("cannot listen on {addr} (--http-listen): {source}")]
    HttpListen {
        /// The address.
        addr: std::net::SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// rustls refused the server configuration (not expected with the *ring* provider).
    #[error("TLS set-up: {0}")]
    Setup(rustls::Error),
}

/// The rustls provider: *ring*, already in the tree through async-nats.
pub(crate) fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The current certificate, swapped whole (see the module docs), and, in ACME mode, the
/// tls-alpn-01 challenge certificates.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    current: RwLock<Option<Arc<CertifiedKey>>>,
    challenges: Arc<challenge::Challenges>,
}

impl Resolver {
    /// Makes `key` the certificate of every handshake from now on.
    pub(crate) fn set(&self, key: Arc<CertifiedKey>) {
        *self.current.write() = Some(key);
    }

    /// Whether a certificate is in place (ACME: not before the first issuance).
    pub(crate) fn ready(&self) -> bool {
        self.current.read().is_some()
    }
}

impl ResolvesServerCert for Resolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let acme = hello
            .alpn()
            .is_some_and(|mut protocols| protocols.any(|p| p == ACME_TLS_1));
        if acme {
            // tls-alpn-01: the challenge's certificate for the name asked, or nothing.
            return self.challenges.tls_alpn(hello.server_name()?);
        }
        self.current.read().clone()
    }
}

/// Marks a connection whose handshake took a rate-limit token: its first upgrade does not take
/// another (see the module docs). Carried in the request's extensions.
#[derive(Debug, Clone)]
pub(crate) struct Prepaid(Arc<AtomicBool>);

impl Prepaid {
    fn new() -> Prepaid {
        Prepaid(Arc::new(AtomicBool::new(true)))
    }

    /// True once per connection: for its first upgrade.
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

/// The relay's TLS, shared by every connection (`Hub::tls`).
pub(crate) struct Tls {
    /// The server configuration every handshake uses.
    config: Arc<ServerConfig>,
    resolver: Arc<Resolver>,
    names: Vec<String>,
    metrics: Arc<TlsMetrics>,
    background: Background,
}

/// What runs beside the listener, started by [`Tls::spawn`].
enum Background {
    Files(files::Watch),
    Acme(acme::Issuer),
}

impl Tls {
    /// Loads the certificate files (or opens the ACME cache and binds `--http-listen`), ready
    /// to accept handshakes.
    ///
    /// # Errors
    ///
    /// A certificate or key that cannot be read or does not make a pair; an ACME cache that
    /// cannot be used; an address that cannot be bound; TLS with `--client-ip x-forwarded-for`.
    pub(crate) async fn new(config: &crate::RelayConfig, tls: &TlsConfig) -> Result<Tls, TlsError> {
        if config.client_ip == crate::ClientIpSource::XForwardedFor {
            return Err(TlsError::ForwardedFor);
        }
        let metrics = Arc::new(TlsMetrics::default());
        let resolver = Arc::new(Resolver::default());
        let mut alpn = vec![HTTP_1_1.to_vec()];
        let background = match &tls.certificates {
            Certificates::Files { cert, key } => {
                let watch = files::Watch::open(cert, key, resolver.clone(), metrics.clone())?;
                Background::Files(watch)
            }
            Certificates::Acme(acme) => {
                alpn.push(ACME_TLS_1.to_vec());
                let issuer = acme::Issuer::open(acme, resolver.clone(), metrics.clone()).await?;
                Background::Acme(issuer)
            }
        };
        let mut server = ServerConfig::builder_with_provider(provider())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .map_err(TlsError::Setup)?
            .with_no_client_auth()
            .with_cert_resolver(resolver.clone());
        server.alpn_protocols = alpn;
        Ok(Tls {
            config: Arc::new(server),
            resolver,
            names: tls
                .domains
                .iter()
                .map(|name| host::normalize(name))
                .collect(),
            metrics,
            background,
        })
    }

    /// The names the Host check accepts (normalized); empty: no check.
    pub(crate) fn names(&self) -> &[String] {
        &self.names
    }

    /// Whether a certificate is in place (ACME: not before the first issuance).
    pub(crate) fn ready(&self) -> bool {
        self.resolver.ready()
    }

    /// The TLS metrics, for the metrics registry.
    pub(crate) fn metrics(&self) -> Arc<TlsMetrics> {
        self.metrics.clone()
    }

    /// The address of the http-01 listener (ACME with `--http-listen`).
    pub(crate) fn http_addr(&self) -> Option<std::net::SocketAddr> {
        match &self.background {
            Background::Acme(issuer) => issuer.http_addr(),
            Background::Files(_) => None,
        }
    }

    /// Starts the certificate watch (files) or the issuer and the http-01 listener (ACME);
    /// they run until the handles are dropped.
    pub(crate) fn spawn(hub: &Arc<Hub>) -> Vec<AbortOnDropHandle<()>> {
        let Some(tls) = &hub.tls else {
            return Vec::new();
        };
        match &tls.background {
            Background::Files(watch) => vec![watch.spawn()],
            Background::Acme(issuer) => issuer.spawn(hub.shutdown.stopped.clone()),
        }
    }

    /// The TLS handshake of one accepted connection from `origin`, through the gates and within
    /// the head deadline. `None` if it was refused, failed or took too long (counted in
    /// `relay_tls_handshake_failures_total`), or was a tls-alpn-01 validation (answered by the
    /// handshake itself).
    pub(crate) async fn accept<I>(
        &self,
        hub: &Hub,
        stream: I,
        origin: Origin,
    ) -> Option<(TlsStream<I>, Prepaid)>
    where
        I: AsyncRead + AsyncWrite + Unpin,
    {
        let ip = origin.proxied.unwrap_or(origin.peer.ip());
        let permit = match hub.gates.admit(ip) {
            Ok(permit) => permit,
            Err(refusal) => {
                let (failure, what) = match refusal {
                    Refusal::RateLimited(_) => (
                        HandshakeFailure::RateLimited,
                        "TLS handshake over the rate limit",
                    ),
                    Refusal::OverCapacity => (
                        HandshakeFailure::OverCapacity,
                        "TLS handshake over the connection cap",
                    ),
                };
                self.metrics.handshake_failed(failure);
                hub.refusals.refused(0, what, ip);
                return None;
            }
        };
        let handshake = stream::accept(self.config.clone(), stream);
        let result = tokio::time::timeout(hub.config.header_timeout, handshake).await;
        drop(permit);
        let stream = match result {
            Ok(Ok(stream)) => stream,
            Ok(Err(error)) => {
                let failure = HandshakeFailure::of(&error, self.ready());
                self.metrics.handshake_failed(failure);
                tracing::debug!(%ip, %error, "TLS handshake failed");
                return None;
            }
            Err(_) => {
                self.metrics.handshake_failed(HandshakeFailure::Timeout);
                hub.refusals.refused(0, "TLS handshake too slow", ip);
                return None;
            }
        };
        if stream.alpn_protocol() == Some(ACME_TLS_1) {
            // RFC 8737 section 3: the validation ends with the handshake.
            return None;
        }
        Some((stream, Prepaid::new()))
    }
}
