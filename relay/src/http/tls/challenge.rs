//! The answers to ACME's challenges while an order is open: http-01 tokens, served by
//! [`serve_http`] on `--http-listen` at `/.well-known/acme-challenge/{token}` (anything else is
//! 404, never a redirect), and tls-alpn-01 certificates, handed out by the TLS listener's
//! resolver to a handshake that offers ALPN `acme-tls/1` for the name being validated
//! (RFC 8737: a self-signed certificate for that name carrying the acmeIdentifier extension with
//! the SHA-256 digest of the key authorization; rcgen makes it).

use super::provider;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use parking_lot::Mutex;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Where http-01 tokens are served.
pub(super) const HTTP_01_PREFIX: &str = "/.well-known/acme-challenge/";
/// How long a challenge request's head may take.
const HEAD_DEADLINE: Duration = Duration::from_secs(5);

/// The open challenges' answers.
#[derive(Debug, Default)]
pub(super) struct Challenges {
    /// http-01: token → key authorization.
    http: Mutex<HashMap<String, String>>,
    /// tls-alpn-01: name (lower case) → the validation certificate.
    tls_alpn: Mutex<HashMap<String, Arc<CertifiedKey>>>,
}

impl Challenges {
    /// Serves `key_authorization` for http-01 `token`.
    pub(super) fn put_http(&self, token: &str, key_authorization: &str) {
        self.http
            .lock()
            .insert(token.to_owned(), key_authorization.to_owned());
    }

    /// Serves a tls-alpn-01 certificate for `name` made from the key authorization's SHA-256
    /// `digest`.
    ///
    /// # Errors
    ///
    /// If rcgen cannot make the certificate (a name that is not a DNS name).
    pub(super) fn put_tls_alpn(&self, name: &str, digest: &[u8]) -> Result<(), String> {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?;
        let mut params =
            rcgen::CertificateParams::new(vec![name.to_owned()]).map_err(|e| e.to_string())?;
        params.custom_extensions = vec![rcgen::CustomExtension::new_acme_identifier(digest)];
        let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signing = provider()
            .key_provider
            .load_private_key(der)
            .map_err(|e| e.to_string())?;
        let certified = CertifiedKey::new(vec![CertificateDer::from(cert.der().to_vec())], signing);
        self.tls_alpn
            .lock()
            .insert(name.to_ascii_lowercase(), Arc::new(certified));
        Ok(())
    }

    /// The tls-alpn-01 certificate for `name`, if one is being validated.
    pub(super) fn tls_alpn(&self, name: &str) -> Option<Arc<CertifiedKey>> {
        self.tls_alpn
            .lock()
            .get(&name.to_ascii_lowercase())
            .cloned()
    }

    /// Forgets every answer (the order is over).
    pub(super) fn clear(&self) {
        self.http.lock().clear();
        self.tls_alpn.lock().clear();
    }

    fn http_answer(&self, path: &str) -> Option<String> {
        let token = path.strip_prefix(HTTP_01_PREFIX)?;
        self.http.lock().get(token).cloned()
    }
}

/// Serves http-01 answers on `listener` until `stopped`.
pub(super) async fn serve_http(
    listener: TcpListener,
    challenges: Arc<Challenges>,
    stopped: CancellationToken,
) {
    let connections = tokio_util::task::TaskTracker::new();
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.cancelled() => break,
        };
        let challenges = challenges.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let reply = answer(&challenges, &req);
                async move { Ok::<_, Infallible>(reply) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEAD_DEADLINE)
                .keep_alive(false)
                .serve_connection(TokioIo::new(stream), service);
            let _ = tokio::time::timeout(HEAD_DEADLINE * 2, conn).await;
        });
    }
    connections.close();
}

fn answer(challenges: &Challenges, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let found = match *req.method() {
        Method::GET | Method::HEAD => challenges.http_answer(req.uri().path()),
        _ => None,
    };
    let (status, body) = match found {
        Some(key_authorization) => (StatusCode::OK, Bytes::from(key_authorization)),
        None => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found")),
    };
    Response::builder()
        .status(status)
        .header(hyper::header::CONTENT_TYPE, "text/plain")
        .body(Full::new(body))
        .expect("a valid response")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_tokens_under_the_challenge_path_are_answered() {
        let challenges = Challenges::default();
        challenges.put_http("tok", "tok.thumb");
        assert_eq!(
            challenges.http_answer("/.well-known/acme-challenge/tok"),
            Some("tok.thumb".to_owned())
        );
        assert_eq!(
            challenges.http_answer("/.well-known/acme-challenge/other"),
            None
        );
        assert_eq!(challenges.http_answer("/tok"), None);
        challenges.clear();
        assert_eq!(
            challenges.http_answer("/.well-known/acme-challenge/tok"),
            None
        );
    }

    #[test]
    fn a_tls_alpn_certificate_is_kept_per_name_case_insensitively() {
        let challenges = Challenges::default();
        challenges
            .put_tls_alpn("Relay.Example", &[0u8; 32])
            .unwrap();
        assert!(challenges.tls_alpn("relay.example").is_some());
        assert!(challenges.tls_alpn("other.example").is_none());
    }
}
