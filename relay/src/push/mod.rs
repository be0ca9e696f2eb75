//! Push wakes: a binary asks the relay to wake a backgrounded phone through Firebase Cloud
//! Messaging (`{"push_wake":{"platform":"fcm","token":"…"}}`, protocol "Push wakes").
//!
//! # The model
//!
//! A wake comes in on a binary's read loop ([`Push::wake`]) and is decided there, at once, in
//! this order: push off (no service-account key) → counted `disabled`; its server-id's token
//! bucket empty → `rate_limited`; the relay's sends in flight at their cap → `busy`
//! (`limits`). An admitted wake is sent by a task of its own, holding its place in flight: it
//! never delays the binary's frames, outlives the binary's connection, and nobody waits for it;
//! the binary gets no reply. Nothing is queued.
//!
//! The send (`fcm`) takes the cached OAuth access token (`oauth`: a JWT-bearer grant signed
//! with the service account's key, [`credentials`]), posts the message to FCM over HTTPS
//! (`https`: system roots plus `--fcm-ca-file`, never plain HTTP, no redirects, each call
//! bounded in time and in what it reads) and counts the outcome in
//! `relay_push_wakes_total{outcome}`.
//!
//! An FCM registration token is a secret of the phone: it is never logged and never in a
//! metric; a log line names it by its [`fingerprint`] (the first 8 hex digits of its SHA-256).
//!
//! # Configuration
//!
//! [`PushConfig`] (in [`RelayConfig::push`](crate::RelayConfig::push)) holds paths and URLs;
//! [`PushConfig::load`] reads and checks them, once when the command line becomes a
//! configuration (so a bad file stops the relay before it starts) and again in
//! [`start`](crate::start), which refuses a bad one with the same error.

pub(crate) mod credentials;
mod fcm;
mod https;
mod limits;
mod oauth;

use crate::config::PushConfig;
use crate::logging::ServerTag;
use crate::metrics::{WakeCounter, WakeOutcome};
use credentials::{CredentialsError, ServiceAccount};
use hyper::Uri;
use limits::{Limits, Refused};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;

/// Longest FCM registration token accepted (protocol: 4 KiB).
pub(crate) const MAX_TOKEN: usize = 4 * 1024;

impl PushConfig {
    /// Reads and checks the key file, the endpoint and the CA file.
    ///
    /// # Errors
    ///
    /// Which file or field is wrong, and how (never a value from the key file).
    pub fn load(&self) -> Result<Loaded, PushConfigError> {
        let account = ServiceAccount::load(&self.credentials)?;
        let endpoint = https::https_uri(&self.endpoint)
            .and_then(|endpoint| fcm::send_uri(&endpoint, &account.project_id))
            .map_err(|problem| PushConfigError::Endpoint { problem })?;
        let mut extra = Vec::new();
        if let Some(path) = &self.ca_file {
            let bad = |problem: String| PushConfigError::CaFile {
                path: path.clone(),
                problem,
            };
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
                extra.push(cert.map_err(|e| bad(e.to_string()))?);
            }
            if extra.is_empty() {
                return Err(bad("no CERTIFICATE block in it".into()));
            }
        }
        let Some(burst) = NonZeroU32::new(self.burst) else {
            return Err(PushConfigError::Limit(
                "the burst of wakes per server-id is 0",
            ));
        };
        if self.max_in_flight == 0 {
            return Err(PushConfigError::Limit(
                "the sends in flight are capped at 0",
            ));
        }
        Ok(Loaded {
            account,
            endpoint,
            extra,
            burst,
        })
    }
}

/// A [`PushConfig`] whose files were read and checked (what [`start`](crate::start) builds the
/// push service from).
#[derive(Debug, Clone)]
pub struct Loaded {
    account: ServiceAccount,
    /// FCM's `messages:send` URL for the account's project.
    endpoint: Uri,
    extra: Vec<CertificateDer<'static>>,
    burst: NonZeroU32,
}

/// Why push wakes' configuration was refused (the relay does not start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PushConfigError {
    /// The service-account file (`--fcm-credentials`).
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// `--fcm-endpoint` is not an `https://` URL.
    #[error("--fcm-endpoint is not an https:// URL ({problem})")]
    Endpoint {
        /// What is wrong with it.
        problem: &'static str,
    },
    /// `--fcm-ca-file` cannot be read or has no certificate.
    #[error("--fcm-ca-file {}: {problem}", path.display())]
    CaFile {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A limit that would refuse every wake.
    #[error("push wakes: {0}")]
    Limit(&'static str),
}

/// The push service of a running relay. See the module docs.
pub(crate) struct Push {
    counter: WakeCounter,
    /// `None`: push is off.
    on: Option<On>,
}

struct On {
    fcm: Arc<fcm::Fcm>,
    limits: Limits,
}

impl Push {
    /// The service for `config` (`None`: push off), counting into `counter`.
    pub(crate) fn new(config: Option<(&PushConfig, Loaded)>, counter: WakeCounter) -> Push {
        let on = config.map(|(config, loaded)| {
            let (https, roots) = https::Https::new(&loaded.extra, config.timeout);
            if roots == 0 {
                tracing::warn!("push: no trusted root certificate: every FCM call will fail");
            }
            tracing::info!(
                project = %loaded.account.project_id,
                roots,
                "push wakes on (FCM)"
            );
            On {
                fcm: Arc::new(fcm::Fcm::new(https, loaded.account, loaded.endpoint)),
                limits: Limits::new(loaded.burst, config.refill, config.max_in_flight),
            }
        });
        Push { counter, on }
    }

    /// Takes one wake from `server_id`'s binary (`tag` names the id in logs) for the phone with
    /// FCM registration token `token` (already checked: non-empty, at most [`MAX_TOKEN`]).
    /// Returns at once: an admitted wake is sent by a task of its own.
    pub(crate) fn wake(&self, server_id: &str, tag: ServerTag, token: &str) {
        let token_tag = fingerprint(token);
        let Some(on) = &self.on else {
            tracing::debug!(server = %tag, token = %token_tag, "push wake dropped: push is off");
            self.counter.count(WakeOutcome::Disabled);
            return;
        };
        let permit = match on.limits.admit(server_id) {
            Ok(permit) => permit,
            Err(refused) => {
                let outcome = match refused {
                    Refused::RateLimited => WakeOutcome::RateLimited,
                    Refused::Busy => WakeOutcome::Busy,
                };
                // Debug only: a binary over its limit could otherwise fill the log at info (the
                // metric counts every refusal).
                tracing::debug!(server = %tag, token = %token_tag, outcome = outcome.as_str(), "push wake refused");
                self.counter.count(outcome);
                return;
            }
        };
        let fcm = on.fcm.clone();
        let counter = self.counter.clone();
        let token = token.to_owned();
        tokio::spawn(async move {
            let sent = fcm.send(&token).await;
            drop(permit);
            let outcome = sent.outcome.as_str();
            match sent.outcome {
                WakeOutcome::Sent => {
                    tracing::info!(server = %tag, token = %token_tag, "push wake sent")
                }
                WakeOutcome::Unregistered | WakeOutcome::Rejected => {
                    tracing::info!(server = %tag, token = %token_tag, outcome, detail = %sent.detail, "push wake not delivered")
                }
                _ => {
                    tracing::warn!(server = %tag, token = %token_tag, outcome, detail = %sent.detail, "push wake failed")
                }
            }
            // Counted after the log line (as everywhere here): whoever saw the count finds it.
            counter.count(sent.outcome);
        });
    }

    /// Prunes the per-id buckets every refill period, until dropped (a task of the relay).
    pub(crate) async fn prune(self: Arc<Self>) {
        let Some(on) = &self.on else {
            return;
        };
        let mut every = tokio::time::interval(on.limits.prune_every());
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            on.limits.prune();
        }
    }
}

/// How a log line names an FCM token: the first 8 hex digits of its SHA-256 (`"abc"` →
/// `ba7816bf`, checked by the unit test below).
pub(crate) fn fingerprint(token: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, token.as_bytes());
    digest.as_ref()[..4]
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod fingerprint_tests {
    #[test]
    fn the_fingerprint_is_the_first_8_hex_digits_of_the_sha256() {
        // SHA-256("abc") = ba7816bf 8f01cfea ... (FIPS 180-2's example).
        assert_eq!(super::fingerprint("abc"), "ba7816bf");
    }
}
