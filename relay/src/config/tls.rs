//! The TLS listener's settings ([`TlsConfig`]): certificate files or ACME ([`AcmeConfig`]), and
//! the names the Host check accepts. The listener itself is `http::tls`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Let's Encrypt's production directory, the default `--acme-directory`.
pub const LETS_ENCRYPT: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// The first wait after a failed order.
pub const FIRST_RETRY: Duration = Duration::from_secs(10);
/// The longest wait between failed orders.
pub const LAST_RETRY: Duration = Duration::from_secs(3600);
/// ACME settings (`--acme-*`, `--http-listen`).
///
/// # Examples
///
/// ```
/// use relay_server::{AcmeConfig, LETS_ENCRYPT};
///
/// let acme = AcmeConfig::new(["relay.example.com"], "/var/lib/relay/acme");
/// assert_eq!(acme.directory, LETS_ENCRYPT);
/// assert_eq!(acme.http_listen, Some(([0, 0, 0, 0], 80).into()));
/// ```
#[derive(Debug, Clone)]
pub struct AcmeConfig {
    /// The names the certificate is for (each must resolve to this relay).
    pub domains: Vec<String>,
    /// The cache directory (see the module docs).
    pub cache: PathBuf,
    /// The ACME server's directory URL.
    pub directory: String,
    /// Contact URLs for the account (`mailto:ops@example.com`).
    pub contact: Vec<String>,
    /// A PEM CA certificate to trust for the ACME server's own HTTPS (a private ACME server);
    /// `None`: the platform's roots.
    pub ca_file: Option<PathBuf>,
    /// Where http-01 challenges are answered; `None`: tls-alpn-01 on the TLS listener instead.
    pub http_listen: Option<SocketAddr>,
    /// The wait after a first failed order (it doubles after each further failure, up to
    /// [`LAST_RETRY`]); [`FIRST_RETRY`] by default.
    pub first_retry: Duration,
}

impl AcmeConfig {
    /// Let's Encrypt for `domains`, cached in `cache`, http-01 on `0.0.0.0:80`.
    pub fn new<S: Into<String>>(
        domains: impl IntoIterator<Item = S>,
        cache: impl Into<PathBuf>,
    ) -> AcmeConfig {
        AcmeConfig {
            domains: domains.into_iter().map(Into::into).collect(),
            cache: cache.into(),
            directory: LETS_ENCRYPT.to_owned(),
            contact: Vec::new(),
            ca_file: None,
            http_listen: Some(SocketAddr::from(([0, 0, 0, 0], 80))),
            first_retry: FIRST_RETRY,
        }
    }
}

/// TLS on the public listener (`RelayConfig::tls`).
///
/// # Examples
///
/// ```
/// use relay_server::{Certificates, TlsConfig};
///
/// let tls = TlsConfig::files("/etc/relay/cert.pem", "/etc/relay/key.pem")
///     .with_domains(["relay.example.com"]);
/// assert!(matches!(tls.certificates, Certificates::Files { .. }));
/// assert_eq!(tls.domains, ["relay.example.com"]);
/// ```
#[derive(Debug, Clone)]
pub struct TlsConfig {
    /// Where the certificates come from.
    pub certificates: Certificates,
    /// The names the Host check accepts (case-insensitive, port ignored); empty: no check. In
    /// certificate-file mode the command line sets them from `--domain`.
    pub domains: Vec<String>,
}

/// Where the TLS listener's certificates come from.
#[derive(Debug, Clone)]
pub enum Certificates {
    /// A PEM certificate chain and its PEM private key (PKCS#8, PKCS#1 or SEC1), reloaded on
    /// `SIGHUP` and when either file's contents change (read every second).
    Files {
        /// The certificate chain, leaf first.
        cert: PathBuf,
        /// The leaf's private key.
        key: PathBuf,
    },
    /// Obtained and renewed by ACME.
    Acme(AcmeConfig),
}

impl TlsConfig {
    /// TLS from certificate files, with no Host check.
    pub fn files(cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsConfig {
        TlsConfig {
            certificates: Certificates::Files {
                cert: cert.into(),
                key: key.into(),
            },
            domains: Vec::new(),
        }
    }

    /// TLS from ACME, the Host check accepting the ACME domains.
    pub fn acme(acme: AcmeConfig) -> TlsConfig {
        TlsConfig {
            domains: acme.domains.clone(),
            certificates: Certificates::Acme(acme),
        }
    }

    /// The same, with the Host check accepting `domains`.
    pub fn with_domains<S: Into<String>>(mut self, domains: impl IntoIterator<Item = S>) -> Self {
        self.domains = domains.into_iter().map(Into::into).collect();
        self
    }
}
