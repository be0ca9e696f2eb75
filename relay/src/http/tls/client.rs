//! The clients' side of TLS (`relay-client`, `relay-loadgen`, tests): a rustls client
//! configuration that trusts the system's roots plus, optionally, a PEM file of CA certificates
//! (`--ca-file`, e.g. a private CA or Pebble's root), with ALPN `http/1.1`.

use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Why a client TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// The CA file could not be read or holds no PEM certificate.
    #[error("--ca-file {}: {reason}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// rustls refused the configuration (not expected with the *ring* provider).
    #[error("TLS set-up: {0}")]
    Setup(rustls::Error),
}

/// A client configuration trusting the system's roots and the certificates in `ca_file`.
///
/// # Errors
///
/// If `ca_file` cannot be read, holds bad PEM or no certificate, or a certificate in it is not
/// a usable trust anchor.
///
/// # Examples
///
/// ```
/// let config = relay_server::client_tls(None)?;
/// assert_eq!(config.alpn_protocols, [b"http/1.1".to_vec()]);
/// # Ok::<(), relay_server::ClientTlsError>(())
/// ```
pub fn client_tls(ca_file: Option<&Path>) -> Result<Arc<ClientConfig>, ClientTlsError> {
    let mut roots = RootCertStore::empty();
    // The system's roots; ones it cannot read or parse are skipped (a `wss://` URL with a
    // public certificate then fails its handshake and says why).
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let error = |reason: String| ClientTlsError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let pem = std::fs::read(path).map_err(|e| error(e.to_string()))?;
        let certs = CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| error(e.to_string()))?;
        if certs.is_empty() {
            return Err(error("no PEM certificate in it".to_owned()));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| error(e.to_string()))?;
        }
    }
    let mut config = ClientConfig::builder_with_provider(super::provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(ClientTlsError::Setup)?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![super::HTTP_1_1.to_vec()];
    Ok(Arc::new(config))
}
