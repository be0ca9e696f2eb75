//! Every metric the relay exports, in one place: names, help texts and label sets. Call sites
//! only increment. Served as Prometheus text at `/metrics` on the metrics listener (never the
//! public one) by `http::scrape`; no label ever carries a server-id, conn-id, token or IP.
//!
//! prometheus-client adds `_total` to counter names when it encodes them, so the names below are
//! registered without it. Every series of every family is created at start, so a scrape shows
//! each one from 0. The hot-path counters (frames forwarded) are handles made once: an increment
//! is one atomic add, no label lookup.

pub(crate) mod tls;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::registry::Registry;
use relay_cluster::metrics::ClusterMetrics;
use relay_registry::Counts;
use std::sync::Arc;
use tls::{TlsCollector, TlsMetrics};

/// `endpoint` label: which WebSocket endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum EndpointLabel {
    /// `/v1/server`, binaries.
    Server,
    /// `/v1/client`, phones.
    Client,
}

impl EndpointLabel {
    const ALL: [EndpointLabel; 2] = [EndpointLabel::Server, EndpointLabel::Client];

    fn as_str(self) -> &'static str {
        match self {
            EndpointLabel::Server => "server",
            EndpointLabel::Client => "client",
        }
    }
}

/// `outcome` label of `relay_ws_upgrades_total`: how an upgrade request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Outcome {
    /// Upgraded, and the claim or registration stands.
    Ok,
    /// HTTP 400: a missing or empty header, an invalid id, not a WebSocket upgrade.
    BadRequest,
    /// A binary refused 4409: a live holder answered the probe.
    Conflict,
    /// A phone refused 4404: no binary holds the id.
    NoServer,
    /// A phone refused 4429: the id has its maximum of phones.
    PhoneCap,
    /// HTTP 429: the client IP is over its rate limit.
    RateLimited,
    /// HTTP 503: the relay holds `--max-connections` connections.
    OverCapacity,
    /// HTTP 503: the relay is shutting down (or a binary was refused by shutdown mid-probe).
    ShuttingDown,
    /// Cluster mode: HTTP 503, this instance is not part of the cluster now or it could not
    /// decide in time (with `Retry-After` when an owner elsewhere is silent and its lease has
    /// not ended); after the upgrade (a claim retried after a local conflict): a binary closed
    /// 1012 for the same reason.
    ClusterUnavailable,
}

impl Outcome {
    const ALL: [Outcome; 8] = [
        Outcome::Ok,
        Outcome::BadRequest,
        Outcome::Conflict,
        Outcome::NoServer,
        Outcome::PhoneCap,
        Outcome::RateLimited,
        Outcome::OverCapacity,
        Outcome::ShuttingDown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::BadRequest => "bad_request",
            Outcome::Conflict => "conflict",
            Outcome::NoServer => "no_server",
            Outcome::PhoneCap => "phone_cap",
            Outcome::RateLimited => "rate_limited",
            Outcome::OverCapacity => "over_capacity",
            Outcome::ShuttingDown => "shutting_down",
            Outcome::ClusterUnavailable => "cluster_unavailable",
        }
    }
}

/// `direction` label of the forwarding counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Direction {
    /// A phone's frame, wrapped, to its binary.
    PhoneToBinary,
    /// A binary's frame to one of its phones.
    BinaryToPhone,
}

impl Direction {
    fn as_str(self) -> &'static str {
        match self {
            Direction::PhoneToBinary => "phone_to_binary",
            Direction::BinaryToPhone => "binary_to_phone",
        }
    }
}

/// `reason` label of `relay_frames_dropped_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum DropReason {
    /// A binary's frame that is not a well-formed envelope.
    BadEnvelope,
    /// An envelope for a conn-id that is not one of the binary's phones.
    UnknownConn,
    /// A frame for a phone whose outbox overflowed (the phone is closed 1011).
    BacklogFull,
    /// A phone-left notice for a binary whose outbox was full. Kept so the family's series stay
    /// the same; a notice now waits for room (counted only if a cluster link's sink went away
    /// while the binary's outbox was full).
    BinaryFull,
}

impl DropReason {
    const ALL: [DropReason; 4] = [
        DropReason::BadEnvelope,
        DropReason::UnknownConn,
        DropReason::BacklogFull,
        DropReason::BinaryFull,
    ];

    fn as_str(self) -> &'static str {
        match self {
            DropReason::BadEnvelope => "bad_envelope",
            DropReason::UnknownConn => "unknown_conn",
            DropReason::BacklogFull => "backlog_full",
            DropReason::BinaryFull => "binary_full",
        }
    }
}

/// `reason` label of `relay_requests_refused_total`: refusals that happen before a request is
/// routed, so that no `endpoint` can be named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RefusedReason {
    /// The request head did not arrive within the header timeout (the connection is closed).
    HeaderTimeout,
    /// HTTP 431: the request head is larger than the relay accepts.
    HeadTooLarge,
    /// HTTP 400: the request could not be parsed.
    Malformed,
    /// `--client-ip proxy-protocol`: no valid PROXY header came first (the connection is
    /// dropped).
    ProxyHeader,
    /// The process (or system) had no file descriptor left for a new connection: it was
    /// accepted on the reserve descriptor and closed at once (see [`listen`](crate::http::listen)).
    NoDescriptors,
}

impl RefusedReason {
    const ALL: [RefusedReason; 5] = [
        RefusedReason::HeaderTimeout,
        RefusedReason::HeadTooLarge,
        RefusedReason::Malformed,
        RefusedReason::ProxyHeader,
        RefusedReason::NoDescriptors,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RefusedReason::HeaderTimeout => "header_timeout",
            RefusedReason::HeadTooLarge => "head_too_large",
            RefusedReason::Malformed => "malformed",
            RefusedReason::ProxyHeader => "proxy_header",
            RefusedReason::NoDescriptors => "no_descriptors",
        }
    }
}

/// `outcome` label of `relay_push_wakes_total`: what became of a binary's push wake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum WakeOutcome {
    /// FCM accepted the message.
    Sent,
    /// FCM answered 404 or `UNREGISTERED`: the phone's token is stale.
    Unregistered,
    /// FCM refused the message with another 4xx (a 401 twice, 403, 400, 429).
    Rejected,
    /// FCM answered 5xx or a redirect, or gave no answer (time-out, connect or TLS failure).
    SendFailed,
    /// No OAuth access token could be had from the service account's `token_uri`.
    TokenFetchFailed,
    /// The binary's server-id had no wake left in its token bucket.
    RateLimited,
    /// The relay had its maximum of sends in flight.
    Busy,
    /// Push is off (no `--fcm-credentials`).
    Disabled,
}

impl WakeOutcome {
    const ALL: [WakeOutcome; 8] = [
        WakeOutcome::Sent,
        WakeOutcome::Unregistered,
        WakeOutcome::Rejected,
        WakeOutcome::SendFailed,
        WakeOutcome::TokenFetchFailed,
        WakeOutcome::RateLimited,
        WakeOutcome::Busy,
        WakeOutcome::Disabled,
    ];

    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            WakeOutcome::Sent => "sent",
            WakeOutcome::Unregistered => "unregistered",
            WakeOutcome::Rejected => "rejected",
            WakeOutcome::SendFailed => "send_failed",
            WakeOutcome::TokenFetchFailed => "token_fetch_failed",
            WakeOutcome::RateLimited => "rate_limited",
            WakeOutcome::Busy => "busy",
            WakeOutcome::Disabled => "disabled",
        }
    }
}

/// `relay_push_wakes_total`, shared with the push service's send tasks (which outlive the
/// connection that asked for them).
#[derive(Debug, Clone)]
pub(crate) struct WakeCounter(Family<OutcomeLabels, Counter>);

impl WakeCounter {
    /// Counts one wake's outcome.
    pub(crate) fn count(&self, outcome: WakeOutcome) {
        self.0
            .get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            })
            .inc();
    }
}

/// The close codes `relay_connections_closed_total` names; any other is `other`.
const CLOSE_CODES: [(u16, &str); 11] = [
    (1000, "1000"),
    (1001, "1001"),
    (1002, "1002"),
    (1007, "1007"),
    (1008, "1008"),
    (1009, "1009"),
    (1011, "1011"),
    (1012, "1012"),
    (4404, "4404"),
    (4409, "4409"),
    (4429, "4429"),
];

fn code_label(code: u16) -> &'static str {
    CLOSE_CODES
        .iter()
        .find(|(c, _)| *c == code)
        .map_or("other", |(_, label)| label)
}

/// One closed connection, for `relay_connections_closed_total`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Closed {
    /// Which endpoint it came in on.
    pub endpoint: EndpointLabel,
    /// The close code it ended with (sent, received, or 1001 for an abrupt drop).
    pub code: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct UpgradeLabels {
    endpoint: &'static str,
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClosedLabels {
    endpoint: &'static str,
    code: &'static str,
}

/// One forwarding direction's counters, made once.
#[derive(Debug, Clone)]
struct Forwarded {
    frames: Counter,
    bytes: Counter,
}

/// The relay's metrics. See the module docs.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    binaries_connected: Gauge,
    binaries_gracing: Gauge,
    phones_connected: Gauge,
    upgrades: Family<UpgradeLabels, Counter>,
    up: Forwarded,
    down: Forwarded,
    dropped: Family<ReasonLabels, Counter>,
    grace_expiries: Counter,
    reclaims: Counter,
    takeovers: Counter,
    closed: Family<ClosedLabels, Counter>,
    refused: Family<ReasonLabels, Counter>,
    wakes: WakeCounter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Every family, registered, with every series at 0.
    pub(crate) fn new() -> Self {
        let mut registry = Registry::default();
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let binaries_connected = gauge(
            &mut registry,
            "relay_binaries_connected",
            "Binaries connected and holding their server-id (gracing ones not counted).",
        );
        let binaries_gracing = gauge(
            &mut registry,
            "relay_binaries_gracing",
            "Server-ids in their grace window: the binary left, its phones are kept.",
        );
        let phones_connected = gauge(
            &mut registry,
            "relay_phones_connected",
            "Phones registered with a server-id.",
        );
        let upgrades = Family::<UpgradeLabels, Counter>::default();
        registry.register(
            "relay_ws_upgrades",
            "WebSocket upgrade requests, by endpoint and outcome.",
            upgrades.clone(),
        );
        for endpoint in EndpointLabel::ALL {
            for outcome in Outcome::ALL {
                drop(upgrades.get_or_create(&UpgradeLabels {
                    endpoint: endpoint.as_str(),
                    outcome: outcome.as_str(),
                }));
            }
        }
        let frames = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "relay_frames_forwarded",
            "Frames forwarded, by direction.",
            frames.clone(),
        );
        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "relay_frame_bytes_forwarded",
            "Bytes of the frames forwarded (as sent, wrapper included), by direction.",
            bytes.clone(),
        );
        let forwarded = |direction: Direction| {
            let labels = DirectionLabels {
                direction: direction.as_str(),
            };
            Forwarded {
                frames: frames.get_or_create(&labels).clone(),
                bytes: bytes.get_or_create(&labels).clone(),
            }
        };
        let up = forwarded(Direction::PhoneToBinary);
        let down = forwarded(Direction::BinaryToPhone);
        let dropped = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "relay_frames_dropped",
            "Frames dropped instead of delivered, by reason.",
            dropped.clone(),
        );
        for reason in DropReason::ALL {
            drop(dropped.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        let counter = |registry: &mut Registry, name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(name, help, counter.clone());
            counter
        };
        let grace_expiries = counter(
            &mut registry,
            "relay_grace_expiries",
            "Grace windows that ended without a reclaim (their phones closed 1011).",
        );
        let reclaims = counter(
            &mut registry,
            "relay_reclaims",
            "Claims of a server-id in its grace window (its phones closed 4404).",
        );
        let takeovers = counter(
            &mut registry,
            "relay_takeovers",
            "Takeovers of a server-id whose holder did not answer the probe.",
        );
        let closed = Family::<ClosedLabels, Counter>::default();
        registry.register(
            "relay_connections_closed",
            "WebSocket connections closed, by endpoint and close code (sent, received, or 1001 \
             for an abrupt drop; codes outside the protocol's are `other`).",
            closed.clone(),
        );
        for endpoint in EndpointLabel::ALL {
            for code in CLOSE_CODES.iter().map(|(_, l)| *l).chain(["other"]) {
                drop(closed.get_or_create(&ClosedLabels {
                    endpoint: endpoint.as_str(),
                    code,
                }));
            }
        }
        let refused = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "relay_requests_refused",
            "Requests refused before they could be routed, by reason.",
            refused.clone(),
        );
        for reason in RefusedReason::ALL {
            drop(refused.get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            }));
        }
        let wakes = Family::<OutcomeLabels, Counter>::default();
        registry.register(
            "relay_push_wakes",
            "Push wakes asked for by binaries, by outcome (see relay/README.md, \"Push wakes\").",
            wakes.clone(),
        );
        for outcome in WakeOutcome::ALL {
            drop(wakes.get_or_create(&OutcomeLabels {
                outcome: outcome.as_str(),
            }));
        }
        Metrics {
            registry,
            binaries_connected,
            binaries_gracing,
            phones_connected,
            upgrades,
            up,
            down,
            dropped,
            grace_expiries,
            reclaims,
            takeovers,
            closed,
            refused,
            wakes: WakeCounter(wakes),
        }
    }

    /// `relay_push_wakes_total`, for the push service.
    pub(crate) fn wakes(&self) -> WakeCounter {
        self.wakes.clone()
    }

    /// Adds cluster mode's families (`relay_cluster_requests_total{kind, outcome}`,
    /// `relay_cluster_remote_phones`, `relay_cluster_link_losses_total`), read from `cluster`
    /// at each scrape, and the upgrades' `cluster_unavailable` outcome.
    pub(crate) fn add_cluster(&mut self, cluster: Arc<ClusterMetrics>) {
        self.registry
            .register_collector(Box::new(ClusterCollector(cluster)));
        for endpoint in EndpointLabel::ALL {
            drop(self.upgrades.get_or_create(&UpgradeLabels {
                endpoint: endpoint.as_str(),
                outcome: Outcome::ClusterUnavailable.as_str(),
            }));
        }
    }

    /// Adds the TLS families (see the `tls::metrics` module), read from `tls` at each scrape.
    pub(crate) fn add_tls(&mut self, tls: Arc<TlsMetrics>) {
        self.registry
            .register_collector(Box::new(TlsCollector(tls)));
    }

    /// Counts an upgrade request's outcome.
    pub(crate) fn upgrade(&self, endpoint: EndpointLabel, outcome: Outcome) {
        self.upgrades
            .get_or_create(&UpgradeLabels {
                endpoint: endpoint.as_str(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Counts one frame of `len` bytes forwarded in `direction`.
    pub(crate) fn forwarded(&self, direction: Direction, len: usize) {
        let counters = match direction {
            Direction::PhoneToBinary => &self.up,
            Direction::BinaryToPhone => &self.down,
        };
        counters.frames.inc();
        counters.bytes.inc_by(len as u64);
    }

    /// Counts one dropped frame.
    pub(crate) fn dropped(&self, reason: DropReason) {
        self.dropped
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// Counts one grace window that expired.
    pub(crate) fn grace_expired(&self) {
        self.grace_expiries.inc();
    }

    /// Counts one reclaim.
    pub(crate) fn reclaimed(&self) {
        self.reclaims.inc();
    }

    /// Counts one takeover.
    pub(crate) fn took_over(&self) {
        self.takeovers.inc();
    }

    /// Counts one closed connection.
    pub(crate) fn closed(&self, closed: Closed) {
        self.closed
            .get_or_create(&ClosedLabels {
                endpoint: closed.endpoint.as_str(),
                code: code_label(closed.code),
            })
            .inc();
    }

    /// Counts one request refused before routing.
    pub(crate) fn refused(&self, reason: RefusedReason) {
        self.refused
            .get_or_create(&ReasonLabels {
                reason: reason.as_str(),
            })
            .inc();
    }

    /// The Prometheus text exposition, with the gauges read from `counts` now.
    pub(crate) fn encode(&self, counts: Counts) -> String {
        self.binaries_connected.set(counts.binaries as i64);
        self.binaries_gracing.set(counts.gracing as i64);
        self.phones_connected.set(counts.phones as i64);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .expect("writing to a String cannot fail");
        text
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClusterRequestLabels {
    kind: &'static str,
    outcome: &'static str,
}

/// Cluster mode's counters, kept as atomics by the cluster module and encoded at each scrape.
#[derive(Debug)]
struct ClusterCollector(Arc<ClusterMetrics>);

impl Collector for ClusterCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        {
            let mut requests = encoder.encode_descriptor(
                "relay_cluster_requests",
                "Requests between instances and to the directory, by kind and outcome (a time-out \
                 or an absent instance is an answer too, counted as such).",
                None,
                MetricType::Counter,
            )?;
            for (kind, outcome, count) in self.0.request_counts() {
                let labels = ClusterRequestLabels {
                    kind: kind.label(),
                    outcome: outcome.label(),
                };
                ConstCounter::new(count).encode(requests.encode_family(&labels)?)?;
            }
        }
        let remote = encoder.encode_descriptor(
            "relay_cluster_remote_phones",
            "Phones connected to other instances and registered with binaries here.",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(self.0.remote_phones()).encode(remote)?;
        let losses = encoder.encode_descriptor(
            "relay_cluster_link_losses",
            "Links between instances (one per remote phone) closed because messages were or may \
             have been lost: a gap, a slow consumer, a lost NATS connection, a lost instance.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(self.0.link_losses()).encode(losses)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_with_its_total_suffix_and_no_identifying_label() {
        let metrics = Metrics::new();
        metrics.upgrade(EndpointLabel::Client, Outcome::PhoneCap);
        metrics.forwarded(Direction::PhoneToBinary, 10);
        metrics.closed(Closed {
            endpoint: EndpointLabel::Server,
            code: 4321,
        });
        let text = metrics.encode(Counts {
            binaries: 2,
            gracing: 1,
            phones: 3,
        });
        for line in [
            "relay_binaries_connected 2",
            "relay_binaries_gracing 1",
            "relay_phones_connected 3",
            "relay_ws_upgrades_total{endpoint=\"client\",outcome=\"phone_cap\"} 1",
            "relay_frames_forwarded_total{direction=\"phone_to_binary\"} 1",
            "relay_frame_bytes_forwarded_total{direction=\"phone_to_binary\"} 10",
            "relay_frames_dropped_total{reason=\"binary_full\"} 0",
            "relay_grace_expiries_total 0",
            "relay_reclaims_total 0",
            "relay_takeovers_total 0",
            "relay_connections_closed_total{endpoint=\"server\",code=\"other\"} 1",
            "relay_requests_refused_total{reason=\"header_timeout\"} 0",
            "relay_requests_refused_total{reason=\"no_descriptors\"} 0",
            "relay_push_wakes_total{outcome=\"sent\"} 0",
            "relay_push_wakes_total{outcome=\"disabled\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} missing in\n{text}");
        }
        let labels: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.split_once('{'))
            .flat_map(|(_, rest)| rest.split(',').filter_map(|p| p.split_once('=')))
            .map(|(name, _)| name)
            .collect();
        for name in labels {
            assert!(
                ["endpoint", "outcome", "direction", "reason", "code"].contains(&name),
                "unexpected label {name}"
            );
        }
    }
}
