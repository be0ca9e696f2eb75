//! The HTTPS client both Google calls go through: hyper-util's legacy client (a connection pool)
//! over hyper-rustls, with ring as rustls's provider. It speaks only `https://` (the connector
//! refuses anything else, and the configuration refuses `http://` URLs before that), follows no
//! redirect (hyper never does), bounds each call in time, and reads at most [`MAX_REPLY`] bytes
//! of a reply.
//!
//! Trusted roots: the system's store, read by rustls-native-certs (already in the tree through
//! async-nats, and the store an operator already manages and updates, where webpki-roots would
//! freeze Mozilla's list into the binary until the next build), plus the certificates of
//! `--fcm-ca-file` (tests, private gateways).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, StatusCode, Uri};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls_pki_types::CertificateDer;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Most bytes of a reply body read (the rest is never read).
pub(super) const MAX_REPLY: usize = 4 * 1024;

/// An `https://` URL with a host, parsed; `Err` says what is wrong (never the URL itself).
pub(super) fn https_uri(text: &str) -> Result<Uri, &'static str> {
    let uri: Uri = text.parse().map_err(|_| "not a URL")?;
    match uri.scheme_str() {
        Some("https") => {}
        Some("http") => return Err("plain http:// is not accepted"),
        _ => return Err("the scheme must be https"),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err("no host");
    }
    Ok(uri)
}

/// Why a call got no reply.
#[derive(Debug)]
pub(super) enum CallError {
    /// No reply within the call's time bound.
    Timeout,
    /// Connecting, TLS, or the exchange failed (the message is hyper's, with its causes).
    Failed(String),
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallError::Timeout => f.write_str("timed out"),
            CallError::Failed(why) => f.write_str(why),
        }
    }
}

/// A reply: its status and the first [`MAX_REPLY`] bytes of its body.
#[derive(Debug)]
pub(super) struct Reply {
    /// The HTTP status.
    pub status: StatusCode,
    /// At most [`MAX_REPLY`] bytes of the body.
    pub body: Vec<u8>,
}

/// The client. Cloning it shares the connection pool.
#[derive(Clone, Debug)]
pub(super) struct Https {
    client: Client<HttpsConnector<HttpConnector>, Full<Bytes>>,
    timeout: Duration,
}

impl Https {
    /// A client trusting the system's roots plus `extra`, each call bounded by `timeout`.
    /// Returns it with the number of roots it trusts.
    pub(super) fn new(extra: &[CertificateDer<'static>], timeout: Duration) -> (Https, usize) {
        let mut roots = rustls::RootCertStore::empty();
        let native = rustls_native_certs::load_native_certs();
        for error in &native.errors {
            tracing::warn!(%error, "push: a system root certificate could not be read");
        }
        let (_, ignored) = roots.add_parsable_certificates(native.certs);
        if ignored > 0 {
            tracing::warn!(ignored, "push: system root certificates rustls cannot use");
        }
        roots.add_parsable_certificates(extra.iter().cloned());
        let count = roots.len();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_only()
            .enable_http1()
            .build();
        // Idle connections to Google are kept a minute (the timer makes that bound hold), then
        // closed: wakes come in bursts, and an idle pool must not hold sockets forever.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        (Https { client, timeout }, count)
    }

    /// Sends `request` and reads its reply, all within the time bound.
    ///
    /// # Errors
    ///
    /// No reply in time, or the connection, TLS or exchange failed.
    pub(super) async fn call(&self, request: Request<Full<Bytes>>) -> Result<Reply, CallError> {
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|error| CallError::Failed(chain(&error)))?;
            let status = response.status();
            let mut body = response.into_body();
            let mut read = Vec::new();
            while read.len() < MAX_REPLY {
                match body.frame().await {
                    Some(Ok(frame)) => {
                        if let Ok(data) = frame.into_data() {
                            let room = MAX_REPLY - read.len();
                            read.extend_from_slice(&data[..data.len().min(room)]);
                        }
                    }
                    Some(Err(error)) => return Err(CallError::Failed(chain(&error))),
                    None => break,
                }
            }
            Ok(Reply { status, body: read })
        };
        tokio::time::timeout(self.timeout, exchange)
            .await
            .unwrap_or(Err(CallError::Timeout))
    }
}

/// An error and its causes, `: `-separated (hyper's own message is only the outermost layer).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_urls_with_a_host_are_accepted() {
        assert!(https_uri("https://oauth2.googleapis.com/token").is_ok());
        assert!(https_uri("https://127.0.0.1:8443").is_ok());
        assert_eq!(
            https_uri("http://fcm.googleapis.com").err(),
            Some("plain http:// is not accepted")
        );
        for bad in [
            "fcm.googleapis.com",
            "ftp://x/",
            "https:///x",
            "not a url",
            "",
        ] {
            assert!(https_uri(bad).is_err(), "{bad}");
        }
    }
}
