//! The TLS families, kept as atomics here and encoded at each scrape by [`TlsCollector`]
//! (registered by the metrics module's `Metrics::add_tls`), every series from 0:
//!
//! - `relay_tls_certificate_expiry_timestamp_seconds{name}`: when the current certificate
//!   expires (Unix seconds), one series per DNS name it carries;
//! - `relay_tls_handshake_failures_total{reason}`: handshakes that did not complete;
//! - `relay_tls_certificate_loads_total{outcome}`: certificates put in place (`loaded`) or
//!   refused, the old one kept (`refused`);
//! - `relay_acme_orders_total{outcome}`: ACME orders `issued` or `failed` (0 with files).

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Why a TLS handshake did not complete (`reason` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandshakeFailure {
    /// Not finished within the head deadline.
    Timeout,
    /// Over the client IP's rate limit (closed before any TLS).
    RateLimited,
    /// Over the connection cap (closed before any TLS).
    OverCapacity,
    /// No certificate in place yet (ACME before its first issuance).
    NoCertificate,
    /// The client offered nothing the relay speaks: a TLS version below 1.2, no common cipher
    /// suite or ALPN protocol.
    Incompatible,
    /// The connection ended or failed during the handshake.
    Closed,
    /// Anything else (a malformed message, a client's alert).
    Other,
}

impl HandshakeFailure {
    /// Every reason, in label order.
    pub(crate) const ALL: [HandshakeFailure; 7] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::RateLimited,
        HandshakeFailure::OverCapacity,
        HandshakeFailure::NoCertificate,
        HandshakeFailure::Incompatible,
        HandshakeFailure::Closed,
        HandshakeFailure::Other,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::RateLimited => "rate_limited",
            HandshakeFailure::OverCapacity => "over_capacity",
            HandshakeFailure::NoCertificate => "no_certificate",
            HandshakeFailure::Incompatible => "incompatible",
            HandshakeFailure::Closed => "closed",
            HandshakeFailure::Other => "other",
        }
    }

    /// The reason of a failed `accept`; `ready`: whether a certificate was in place.
    pub(crate) fn of(error: &std::io::Error, ready: bool) -> HandshakeFailure {
        use rustls::Error as E;
        match error.get_ref().and_then(|inner| inner.downcast_ref::<E>()) {
            Some(E::PeerIncompatible(_) | E::NoApplicationProtocol) => {
                HandshakeFailure::Incompatible
            }
            Some(_) if !ready => HandshakeFailure::NoCertificate,
            Some(_) => HandshakeFailure::Other,
            None => HandshakeFailure::Closed,
        }
    }
}

/// `outcome` of a certificate load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LoadOutcome {
    /// In place.
    Loaded,
    /// Refused; the old certificate stays.
    Refused,
}

/// `outcome` of an ACME order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderOutcome {
    /// A certificate was issued and put in place.
    Issued,
    /// The order failed (it is retried with backoff).
    Failed,
}

/// The TLS counters and the expiry gauge. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct TlsMetrics {
    handshake_failures: [AtomicU64; HandshakeFailure::ALL.len()],
    loaded: AtomicU64,
    refused: AtomicU64,
    issued: AtomicU64,
    failed: AtomicU64,
    expiry: Mutex<Vec<(String, i64)>>,
}

impl TlsMetrics {
    /// Counts one handshake that did not complete.
    pub(crate) fn handshake_failed(&self, failure: HandshakeFailure) {
        let index = HandshakeFailure::ALL
            .iter()
            .position(|f| *f == failure)
            .unwrap_or(HandshakeFailure::ALL.len() - 1);
        self.handshake_failures[index].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one certificate load.
    pub(crate) fn load(&self, outcome: LoadOutcome) {
        match outcome {
            LoadOutcome::Loaded => &self.loaded,
            LoadOutcome::Refused => &self.refused,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one ACME order.
    pub(crate) fn order(&self, outcome: OrderOutcome) {
        match outcome {
            OrderOutcome::Issued => &self.issued,
            OrderOutcome::Failed => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
    }

    /// `(outcome label, count)` of ACME orders.
    pub(crate) fn orders(&self) -> [(&'static str, u64); 2] {
        [
            ("issued", self.issued.load(Ordering::Relaxed)),
            ("failed", self.failed.load(Ordering::Relaxed)),
        ]
    }

    /// The current certificate's names and expiry (Unix seconds), replacing the previous one's.
    pub(crate) fn set_expiry(&self, names: &[String], not_after: i64) {
        *self.expiry.lock() = names.iter().map(|name| (name.clone(), not_after)).collect();
    }

    /// `(reason label, count)` of every handshake failure reason.
    pub(crate) fn handshake_failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        HandshakeFailure::ALL
            .iter()
            .zip(&self.handshake_failures)
            .map(|(failure, count)| (failure.as_str(), count.load(Ordering::Relaxed)))
    }

    /// `(outcome label, count)` of certificate loads.
    pub(crate) fn loads(&self) -> [(&'static str, u64); 2] {
        [
            ("loaded", self.loaded.load(Ordering::Relaxed)),
            ("refused", self.refused.load(Ordering::Relaxed)),
        ]
    }

    /// `(name, expiry)` of the current certificate.
    pub(crate) fn expiry(&self) -> Vec<(String, i64)> {
        self.expiry.lock().clone()
    }
}

/// The TLS families, encoded from [`TlsMetrics`] at each scrape (registered by the metrics
/// module's `Metrics::add_tls`).
#[derive(Debug)]
pub(crate) struct TlsCollector(pub Arc<TlsMetrics>);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

impl Collector for TlsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut expiry = encoder.encode_descriptor(
                "relay_tls_certificate_expiry_timestamp_seconds",
                "When the certificate served now expires (Unix time), by DNS name.",
                None,
                MetricType::Gauge,
            )?;
            for (name, at) in self.0.expiry() {
                ConstGauge::new(at).encode(expiry.encode_family(&NameLabels { name })?)?;
            }
        }
        {
            let mut failures = encoder.encode_descriptor(
                "relay_tls_handshake_failures",
                "TLS handshakes that did not complete, by reason.",
                None,
                MetricType::Counter,
            )?;
            for (reason, count) in self.0.handshake_failures() {
                ConstCounter::new(count)
                    .encode(failures.encode_family(&ReasonLabels { reason })?)?;
            }
        }
        {
            let mut loads = encoder.encode_descriptor(
                "relay_tls_certificate_loads",
                "Certificates put in place (loaded) or refused with the old one kept (refused).",
                None,
                MetricType::Counter,
            )?;
            for (outcome, count) in self.0.loads() {
                ConstCounter::new(count)
                    .encode(loads.encode_family(&OutcomeLabels { outcome })?)?;
            }
        }
        let mut orders = encoder.encode_descriptor(
            "relay_acme_orders",
            "ACME certificate orders, by outcome (issued, failed).",
            None,
            MetricType::Counter,
        )?;
        for (outcome, count) in self.0.orders() {
            ConstCounter::new(count).encode(orders.encode_family(&OutcomeLabels { outcome })?)?;
        }
        Ok(())
    }
}
