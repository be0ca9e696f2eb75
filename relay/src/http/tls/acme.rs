//! Certificates by ACME (instant-acme): obtained for the `--acme-domain` names, kept in the
//! cache directory, renewed before they expire.
//!
//! - **The cache** (`--acme-cache DIR`): created mode 0700; a directory that others may read
//!   (group or world permission bits) is refused at start, since it holds the account key and
//!   the certificate's key. It holds `account.json` (the ACME directory and the account's
//!   credentials), `certificate.pem` and `certificate-key.pem` (each written 0600, by rename).
//!   A cached certificate for exactly the configured names that has not expired is served at
//!   once after a restart: no new order.
//! - **An order**: one authorization per name, answered by http-01 when `--http-listen` is on
//!   (the default in ACME mode, `0.0.0.0:80`), else by tls-alpn-01 on the TLS listener; the key
//!   and CSR by rcgen (ECDSA P-256); the chain is checked like a certificate file (the key must
//!   match) before it is served and cached. Every order is counted
//!   (`relay_acme_orders_total{outcome}`).
//! - **When**: at start without a usable cached certificate (until then the relay is not ready:
//!   `/readyz` 503, no handshake completes, and the log says so); then at the renewal time: the
//!   middle of the ACME server's suggested window where it offers renewal information (ARI,
//!   RFC 9773), else two thirds into the certificate's lifetime. A failed order is retried after
//!   `AcmeConfig::first_retry` ([`FIRST_RETRY`](crate::config::FIRST_RETRY) by default),
//!   doubling up to [`LAST_RETRY`].

use super::challenge::{self, Challenges};
use super::files::{Pair, unix_time};
use super::{Resolver, TlsError};
use crate::config::{AcmeConfig, LAST_RETRY};
use crate::metrics::tls::{OrderOutcome, TlsMetrics};
use instant_acme::{
    Account, AccountCredentials, AuthorizationStatus, CertificateIdentifier, ChallengeType,
    Identifier, NewAccount, NewOrder, OrderStatus, RetryPolicy,
};
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;

/// The longest the issuer sleeps before it looks at the renewal time again.
const LONGEST_SLEEP: Duration = Duration::from_secs(6 * 3600);

const ACCOUNT: &str = "account.json";
const CERT: &str = "certificate.pem";
const KEY: &str = "certificate-key.pem";

/// The ACME side of the TLS listener, between start-up and [`spawn`](Issuer::spawn).
pub(super) struct Issuer {
    config: AcmeConfig,
    resolver: Arc<Resolver>,
    metrics: Arc<TlsMetrics>,
    http: Mutex<Option<TcpListener>>,
    http_addr: Option<SocketAddr>,
    current: Option<Pair>,
}

impl Issuer {
    /// Checks the cache (serving its certificate if usable) and binds `--http-listen`.
    ///
    /// # Errors
    ///
    /// No domain, a cache directory that cannot be made or that others can read, an address
    /// that cannot be bound.
    pub(super) async fn open(
        config: &AcmeConfig,
        resolver: Arc<Resolver>,
        metrics: Arc<TlsMetrics>,
    ) -> Result<Issuer, TlsError> {
        if config.domains.is_empty() {
            return Err(TlsError::Acme("no --acme-domain given".to_owned()));
        }
        prepare_cache(&config.cache)?;
        let current = cached(&config.cache, &config.domains);
        match &current {
            Some(pair) => {
                pair.install(&resolver, &metrics);
                tracing::info!(
                    names = ?pair.names,
                    expires = %humantime::format_rfc3339_seconds(unix_time(pair.not_after)),
                    "TLS certificate served from the ACME cache"
                );
            }
            None => tracing::warn!(
                domains = ?config.domains,
                directory = %config.directory,
                "no TLS certificate yet: not ready (no handshake completes, /readyz 503) until \
                 the ACME order succeeds"
            ),
        }
        let http = match config.http_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| TlsError::HttpListen { addr, source })?,
            ),
            None => None,
        };
        let http_addr = http.as_ref().and_then(|l| l.local_addr().ok());
        Ok(Issuer {
            config: config.clone(),
            resolver,
            metrics,
            http_addr,
            http: Mutex::new(http),
            current,
        })
    }

    /// The address the http-01 listener is bound to, if any.
    pub(super) fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// Starts the http-01 listener (if any) and the issuer; they run until the handles are
    /// dropped or `stopped` is cancelled.
    pub(super) fn spawn(&self, stopped: CancellationToken) -> Vec<AbortOnDropHandle<()>> {
        let challenges = self.resolver.challenges.clone();
        let mut handles = Vec::new();
        let http = self.http.lock().take();
        let use_http = http.is_some();
        if let Some(listener) = http {
            let serving = challenge::serve_http(listener, challenges.clone(), stopped);
            handles.push(AbortOnDropHandle::new(tokio::spawn(serving)));
        }
        let mut run = Run {
            config: self.config.clone(),
            resolver: self.resolver.clone(),
            metrics: self.metrics.clone(),
            challenges,
            use_http,
            account: None,
            current: self.current.clone(),
        };
        handles.push(AbortOnDropHandle::new(tokio::spawn(async move {
            run.run().await
        })));
        handles
    }
}

/// The issuer's loop and what it keeps between orders.
struct Run {
    config: AcmeConfig,
    resolver: Arc<Resolver>,
    metrics: Arc<TlsMetrics>,
    challenges: Arc<Challenges>,
    use_http: bool,
    account: Option<Account>,
    current: Option<Pair>,
}

impl Run {
    async fn run(&mut self) {
        let mut retry = self.config.first_retry;
        loop {
            if let Some(pair) = self.current.clone() {
                let at = self.renew_at(&pair).await;
                let wait = at.duration_since(SystemTime::now()).unwrap_or_default();
                if !wait.is_zero() {
                    tokio::time::sleep(wait.min(LONGEST_SLEEP)).await;
                    continue;
                }
                tracing::info!(names = ?pair.names, "renewing the TLS certificate");
            }
            match self.order().await {
                Ok(pair) => {
                    self.metrics.order(OrderOutcome::Issued);
                    pair.install(&self.resolver, &self.metrics);
                    tracing::info!(
                        names = ?pair.names,
                        expires = %humantime::format_rfc3339_seconds(unix_time(pair.not_after)),
                        "TLS certificate issued by ACME"
                    );
                    self.current = Some(pair);
                    retry = self.config.first_retry;
                }
                Err(error) => {
                    self.metrics.order(OrderOutcome::Failed);
                    let ready = self.resolver.ready();
                    tracing::warn!(
                        %error,
                        retry_in = %humantime::format_duration(retry),
                        ready,
                        "ACME order failed"
                    );
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(LAST_RETRY);
                }
            }
            self.challenges.clear();
        }
    }

    /// When to renew `pair`: ARI's window where offered, else two thirds of its lifetime.
    async fn renew_at(&mut self, pair: &Pair) -> SystemTime {
        let fallback = two_thirds(pair.not_before, pair.not_after);
        let Some(leaf) = pair.key.cert.first() else {
            return fallback;
        };
        let Ok(id) = CertificateIdentifier::try_from(leaf) else {
            return fallback;
        };
        let Ok(account) = self.account().await else {
            return fallback;
        };
        match account.renewal_info(&id).await {
            Ok((info, _)) => {
                let window = info.suggested_window;
                let (start, end) = (window.start.unix_timestamp(), window.end.unix_timestamp());
                unix_time(start + (end - start) / 2)
            }
            Err(error) => {
                tracing::debug!(%error, "no ACME renewal information: renewing at 2/3 of the lifetime");
                fallback
            }
        }
    }

    /// The account: from the cache if it was made on this directory, else a new one (cached).
    async fn account(&mut self) -> Result<Account, String> {
        if let Some(account) = &self.account {
            return Ok(account.clone());
        }
        let builder = || match &self.config.ca_file {
            Some(path) => Account::builder_with_root(path),
            None => Account::builder(),
        };
        let path = self.config.cache.join(ACCOUNT);
        let stored = std::fs::read(&path)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<StoredAccount>(&bytes).ok())
            .filter(|stored| stored.directory == self.config.directory);
        let account = match stored {
            Some(stored) => builder()
                .map_err(|e| e.to_string())?
                .from_credentials(stored.credentials)
                .await
                .map_err(|e| format!("restoring the cached ACME account: {e}"))?,
            None => {
                let contact: Vec<&str> = self.config.contact.iter().map(String::as_str).collect();
                let (account, credentials) = builder()
                    .map_err(|e| e.to_string())?
                    .create(
                        &NewAccount {
                            contact: &contact,
                            terms_of_service_agreed: true,
                            only_return_existing: false,
                        },
                        self.config.directory.clone(),
                        None,
                    )
                    .await
                    .map_err(|e| format!("creating an ACME account: {e}"))?;
                let stored = StoredAccount {
                    directory: self.config.directory.clone(),
                    credentials,
                };
                let json = serde_json::to_vec_pretty(&stored).map_err(|e| e.to_string())?;
                write_private(&path, &json)?;
                account
            }
        };
        self.account = Some(account.clone());
        Ok(account)
    }

    /// One order, from new order to a checked, cached certificate.
    async fn order(&mut self) -> Result<Pair, String> {
        let account = self.account().await?;
        let identifiers: Vec<Identifier> = self
            .config
            .domains
            .iter()
            .map(|name| Identifier::Dns(name.clone()))
            .collect();
        let mut order = account
            .new_order(&NewOrder::new(&identifiers))
            .await
            .map_err(|e| format!("new order: {e}"))?;
        let kind = match self.use_http {
            true => ChallengeType::Http01,
            false => ChallengeType::TlsAlpn01,
        };
        let mut authorizations = order.authorizations();
        while let Some(authorization) = authorizations.next().await {
            let mut authorization = authorization.map_err(|e| format!("authorization: {e}"))?;
            match authorization.status {
                AuthorizationStatus::Pending => {}
                AuthorizationStatus::Valid => continue,
                status => return Err(format!("authorization is {status:?}")),
            }
            let mut challenge = authorization
                .challenge(kind.clone())
                .ok_or_else(|| format!("the ACME server offers no {kind:?} challenge"))?;
            let key_authorization = challenge.key_authorization();
            if self.use_http {
                self.challenges
                    .put_http(&challenge.token, key_authorization.as_str());
            } else {
                let name = challenge.identifier().to_string();
                self.challenges
                    .put_tls_alpn(&name, key_authorization.digest().as_ref())?;
            }
            challenge
                .set_ready()
                .await
                .map_err(|e| format!("challenge: {e}"))?;
        }
        let status = order
            .poll_ready(&RetryPolicy::default())
            .await
            .map_err(|e| format!("waiting for validation: {e}"))?;
        if status != OrderStatus::Ready {
            return Err(format!("the order is {status:?} after validation"));
        }
        let key_pem = order
            .finalize()
            .await
            .map_err(|e| format!("finalize: {e}"))?;
        let chain_pem = order
            .poll_certificate(&RetryPolicy::default())
            .await
            .map_err(|e| format!("certificate: {e}"))?;
        let pair = Pair::from_pem(
            chain_pem.as_bytes(),
            key_pem.as_bytes(),
            "the issued certificate",
            "its key",
        )
        .map_err(|e| e.to_string())?;
        write_private(&self.config.cache.join(KEY), key_pem.as_bytes())?;
        write_private(&self.config.cache.join(CERT), chain_pem.as_bytes())?;
        Ok(pair)
    }
}

/// Two thirds into a validity (Unix seconds): the renewal time without ARI.
fn two_thirds(not_before: i64, not_after: i64) -> SystemTime {
    let lifetime = (not_after - not_before).max(0);
    unix_time(not_before + lifetime * 2 / 3)
}

/// What `account.json` holds.
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredAccount {
    directory: String,
    credentials: AccountCredentials,
}

/// Creates the cache directory (0700) or checks that others cannot read it.
fn prepare_cache(dir: &Path) -> Result<(), TlsError> {
    let error = |what: String| TlsError::Acme(format!("--acme-cache {}: {what}", dir.display()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if !dir.exists() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| error(format!("cannot create it: {e}")))?;
        }
        let meta = std::fs::metadata(dir).map_err(|e| error(e.to_string()))?;
        if !meta.is_dir() {
            return Err(error("not a directory".to_owned()));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(error(format!(
                "others can read it (mode {mode:o}); it holds private keys: chmod 700 it"
            )));
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir).map_err(|e| error(format!("cannot create it: {e}")))?;
    Ok(())
}

/// The cached certificate, if it is for exactly `domains`, loads, and has not expired.
fn cached(dir: &Path, domains: &[String]) -> Option<Pair> {
    let cert = std::fs::read(dir.join(CERT)).ok()?;
    let key = std::fs::read(dir.join(KEY)).ok()?;
    let pair = match Pair::from_pem(&cert, &key, CERT, KEY) {
        Ok(pair) => pair,
        Err(error) => {
            tracing::warn!(%error, "the cached certificate is not usable: ordering a new one");
            return None;
        }
    };
    let mut want: Vec<String> = domains.iter().map(|d| super::host::normalize(d)).collect();
    let mut have: Vec<String> = pair
        .names
        .iter()
        .map(|d| super::host::normalize(d))
        .collect();
    want.sort();
    want.dedup();
    have.sort();
    have.dedup();
    let now = SystemTime::now();
    (want == have && unix_time(pair.not_after) > now).then_some(pair)
}

/// Writes `bytes` to `path` readable by the owner only, by rename.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    let aside = path.with_extension("new");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let result = options
        .open(&aside)
        .and_then(|mut file| file.write_all(bytes).and_then(|()| file.sync_all()))
        .and_then(|()| std::fs::rename(&aside, path));
    result.map_err(|e| format!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_ari_a_90_day_certificate_is_renewed_on_day_60() {
        let day = 86_400;
        let issued = 1_800_000_000;
        assert_eq!(
            two_thirds(issued, issued + 90 * day),
            unix_time(issued + 60 * day)
        );
        // A validity that ends before it starts is renewed at once.
        assert_eq!(two_thirds(issued, issued - day), unix_time(issued));
    }

    #[test]
    fn the_cache_directory_is_created_0700_and_refused_once_others_may_read_it() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let cache = dir.path().join("a").join("acme");
        prepare_cache(&cache).unwrap();
        let mode = std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::set_permissions(&cache, std::fs::Permissions::from_mode(0o750)).unwrap();
        let error = prepare_cache(&cache).unwrap_err().to_string();
        assert!(error.contains("others can read it"), "{error}");
    }
}
