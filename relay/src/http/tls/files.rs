//! Certificates from files, and what a certificate is made of.
//!
//! [`Pair::from_pem`] turns a PEM chain and a PEM key into a rustls [`CertifiedKey`], refusing a
//! key that does not match the leaf's public key (rustls compares the SubjectPublicKeyInfo), and
//! reads the leaf's DNS names and validity (x509-parser) for the expiry gauge and ACME's renewal.
//!
//! [`Watch`] keeps the files' certificate current: it reloads on `SIGHUP` and whenever the
//! contents of either file differ from what it last saw, read every [`FILE_POLL`]. Polling the
//! contents rather than watching inodes (`notify`/inotify) is deliberate: certificate tooling
//! replaces files by rename (certbot) or swaps a directory symlink (Kubernetes secret volumes),
//! which an inode watch loses and has to re-arm; two small reads a second see every way a file
//! can change, need no dependency, and cost nothing measurable. A changed pair that does not load
//! (say the certificate was written and the key not yet) is refused — logged, counted
//! `relay_tls_certificate_loads_total{outcome="refused"}` — and the old certificate stays; the
//! next change is tried again.

use super::{FILE_POLL, Resolver, TlsError, provider};
use crate::metrics::tls::{LoadOutcome, TlsMetrics};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio_util::task::AbortOnDropHandle;

/// Why a certificate and key do not make a usable pair.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairError {
    /// No PEM `CERTIFICATE` block.
    #[error("no PEM certificate in {0}")]
    NoCertificate(String),
    /// A PEM block that does not parse.
    #[error("bad PEM in {what}: {reason}")]
    Pem {
        /// Which file.
        what: String,
        /// The parser's message.
        reason: String,
    },
    /// No private key, or one rustls cannot use.
    #[error("no usable private key in {what}: {reason}")]
    Key {
        /// Which file.
        what: String,
        /// Why.
        reason: String,
    },
    /// The key is not the certificate's.
    #[error("the private key in {key} does not match the certificate in {cert}")]
    Mismatch {
        /// The certificate file.
        cert: String,
        /// The key file.
        key: String,
    },
    /// The leaf certificate does not parse as X.509.
    #[error("the certificate in {what} does not parse: {reason}")]
    X509 {
        /// Which file.
        what: String,
        /// The parser's message.
        reason: String,
    },
}

/// A certificate ready to serve, with what the metrics and renewal need to know of it.
#[derive(Debug, Clone)]
pub(super) struct Pair {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The leaf's DNS names (its subject alternative names, else its common name).
    pub names: Vec<String>,
    /// The leaf's validity, Unix seconds.
    pub not_before: i64,
    /// The leaf's expiry, Unix seconds.
    pub not_after: i64,
}

impl Pair {
    /// A pair from a PEM chain (leaf first) and a PEM private key; `cert_name` and `key_name`
    /// name them in errors.
    ///
    /// # Errors
    ///
    /// No certificate, bad PEM, no usable key, a key that is not the leaf's, a leaf that is not
    /// X.509.
    pub(super) fn from_pem(
        cert_pem: &[u8],
        key_pem: &[u8],
        cert_name: &str,
        key_name: &str,
    ) -> Result<Pair, PairError> {
        let chain = CertificateDer::pem_slice_iter(cert_pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| PairError::Pem {
                what: cert_name.to_owned(),
                reason: error.to_string(),
            })?;
        let Some(leaf) = chain.first() else {
            return Err(PairError::NoCertificate(cert_name.to_owned()));
        };
        let (not_before, not_after, names) = describe(leaf).map_err(|reason| PairError::X509 {
            what: cert_name.to_owned(),
            reason,
        })?;
        let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|error| PairError::Key {
            what: key_name.to_owned(),
            reason: error.to_string(),
        })?;
        let signing = provider()
            .key_provider
            .load_private_key(key)
            .map_err(|error| PairError::Key {
                what: key_name.to_owned(),
                reason: error.to_string(),
            })?;
        let certified = CertifiedKey::new(chain, signing);
        // An unknown public key (a provider that cannot tell) is a mismatch too: never serve a
        // pair we could not check.
        if certified.keys_match().is_err() {
            return Err(PairError::Mismatch {
                cert: cert_name.to_owned(),
                key: key_name.to_owned(),
            });
        }
        Ok(Pair {
            key: Arc::new(certified),
            names,
            not_before,
            not_after,
        })
    }

    /// Puts this pair in place: the resolver serves it from the next handshake on, the expiry
    /// gauge shows it.
    pub(super) fn install(&self, resolver: &Resolver, metrics: &TlsMetrics) {
        resolver.set(self.key.clone());
        metrics.set_expiry(&self.names, self.not_after);
        metrics.load(LoadOutcome::Loaded);
    }
}

/// A leaf's validity (Unix seconds) and DNS names.
fn describe(leaf: &CertificateDer<'_>) -> Result<(i64, i64, Vec<String>), String> {
    let (_, cert) = x509_parser::parse_x509_certificate(leaf).map_err(|e| e.to_string())?;
    let validity = cert.validity();
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => Some((*dns).to_owned()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(
            cert.subject()
                .iter_common_name()
                .filter_map(|cn| cn.as_str().ok().map(str::to_owned)),
        );
    }
    Ok((
        validity.not_before.timestamp(),
        validity.not_after.timestamp(),
        names,
    ))
}

/// The certificate files and what was last read from them.
#[derive(Debug)]
pub(super) struct Watch {
    cert: PathBuf,
    key: PathBuf,
    seen: (Vec<u8>, Vec<u8>),
    resolver: Arc<Resolver>,
    metrics: Arc<TlsMetrics>,
}

impl Watch {
    /// Loads the pair and puts it in place.
    ///
    /// # Errors
    ///
    /// A file that cannot be read, a pair that does not load: the relay does not start.
    pub(super) fn open(
        cert: &Path,
        key: &Path,
        resolver: Arc<Resolver>,
        metrics: Arc<TlsMetrics>,
    ) -> Result<Watch, TlsError> {
        let seen = read(cert, key)?;
        let pair = load(cert, key, &seen)?;
        pair.install(&resolver, &metrics);
        tracing::info!(
            cert = %cert.display(),
            names = ?pair.names,
            expires = %humantime::format_rfc3339_seconds(unix_time(pair.not_after)),
            "TLS certificate loaded"
        );
        Ok(Watch {
            cert: cert.to_owned(),
            key: key.to_owned(),
            seen,
            resolver,
            metrics,
        })
    }

    /// Starts reloading on `SIGHUP` and on change (see the module docs).
    pub(super) fn spawn(&self) -> AbortOnDropHandle<()> {
        let mut watch = Watch {
            cert: self.cert.clone(),
            key: self.key.clone(),
            seen: self.seen.clone(),
            resolver: self.resolver.clone(),
            metrics: self.metrics.clone(),
        };
        AbortOnDropHandle::new(tokio::spawn(async move { watch.run().await }))
    }

    async fn run(&mut self) {
        let mut hangup = hangups();
        let mut poll = tokio::time::interval(FILE_POLL);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let forced = tokio::select! {
                _ = poll.tick() => false,
                Some(()) = next_hangup(&mut hangup) => true,
            };
            self.check(forced).await;
        }
    }

    /// Reads the files; loads them if `forced` or if they changed.
    async fn check(&mut self, forced: bool) {
        let (cert, key) = (self.cert.clone(), self.key.clone());
        let read = tokio::task::spawn_blocking(move || read(&cert, &key)).await;
        let contents = match read {
            Ok(Ok(contents)) => contents,
            Ok(Err(error)) => {
                if forced {
                    self.refuse(&error.to_string(), "SIGHUP");
                }
                return;
            }
            Err(_) => return,
        };
        if !forced && contents == self.seen {
            return;
        }
        let why = if forced { "SIGHUP" } else { "files changed" };
        match load(&self.cert, &self.key, &contents) {
            Ok(pair) => {
                pair.install(&self.resolver, &self.metrics);
                tracing::info!(
                    names = ?pair.names,
                    expires = %humantime::format_rfc3339_seconds(unix_time(pair.not_after)),
                    why,
                    "TLS certificate reloaded"
                );
            }
            Err(error) => self.refuse(&error.to_string(), why),
        }
        self.seen = contents;
    }

    fn refuse(&self, error: &str, why: &str) {
        self.metrics.load(LoadOutcome::Refused);
        tracing::warn!(
            error,
            why,
            "TLS certificate not reloaded: the current one stays"
        );
    }
}

/// Both files' contents.
fn read(cert: &Path, key: &Path) -> Result<(Vec<u8>, Vec<u8>), TlsError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| TlsError::Read {
            path: path.to_owned(),
            source,
        })
    };
    Ok((read(cert)?, read(key)?))
}

fn load(cert: &Path, key: &Path, (c, k): &(Vec<u8>, Vec<u8>)) -> Result<Pair, PairError> {
    Pair::from_pem(
        c,
        k,
        &cert.display().to_string(),
        &key.display().to_string(),
    )
}

/// A Unix time as a `SystemTime` (clamped at the epoch).
pub(super) fn unix_time(seconds: i64) -> std::time::SystemTime {
    std::time::UNIX_EPOCH + std::time::Duration::from_secs(seconds.max(0) as u64)
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = ();

/// The `SIGHUP` stream (none if it cannot be installed: the files are still polled).
fn hangups() -> Hangups {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::hangup()) {
            Ok(signal) => Some(signal),
            Err(error) => {
                tracing::warn!(%error, "no SIGHUP reload: the certificate files are still polled");
                None
            }
        }
    }
}

/// The next `SIGHUP`; never resolves without a stream.
async fn next_hangup(hangups: &mut Hangups) -> Option<()> {
    #[cfg(unix)]
    match hangups {
        Some(signal) => signal.recv().await,
        None => std::future::pending().await,
    }
    #[cfg(not(unix))]
    {
        let _ = hangups;
        std::future::pending().await
    }
}
