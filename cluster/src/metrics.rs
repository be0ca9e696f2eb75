//! [`ClusterMetrics`]: the cluster's counters, as plain atomics for the relay's metrics module
//! to export (`relay_cluster_requests_total{kind, outcome}`, `relay_cluster_remote_phones`,
//! `relay_cluster_link_losses_total`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// What a cluster request was for: the `kind` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestKind {
    /// Directory: claim an id (create, or compare-and-set over a dead owner).
    Claim,
    /// Directory: move an id to this instance by compare-and-set (takeover, reclaim).
    Move,
    /// Directory: delete an id's entry if it is still ours.
    Release,
    /// Directory: read who owns an id.
    Lookup,
    /// Link: register a phone with the instance that owns its id.
    Register,
    /// Link: ask the owner to decide a claim of an id it holds (its binary alive: conflict;
    /// otherwise it lets go).
    Probe,
}

/// How a cluster request ended: the `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// It was answered (whatever the answer).
    Answered,
    /// It ran out of time.
    TimedOut,
    /// Nobody listens on the subject (the instance is gone).
    NoResponders,
    /// NATS failed it.
    Failed,
}

impl RequestKind {
    /// Every kind, in label order.
    pub const ALL: [RequestKind; 6] = [
        RequestKind::Claim,
        RequestKind::Move,
        RequestKind::Release,
        RequestKind::Lookup,
        RequestKind::Register,
        RequestKind::Probe,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RequestKind::Claim => "claim",
            RequestKind::Move => "move",
            RequestKind::Release => "release",
            RequestKind::Lookup => "lookup",
            RequestKind::Register => "register",
            RequestKind::Probe => "probe",
        }
    }
}

impl RequestOutcome {
    /// Every outcome, in label order.
    pub const ALL: [RequestOutcome; 4] = [
        RequestOutcome::Answered,
        RequestOutcome::TimedOut,
        RequestOutcome::NoResponders,
        RequestOutcome::Failed,
    ];

    /// The label value.
    pub fn label(self) -> &'static str {
        match self {
            RequestOutcome::Answered => "answered",
            RequestOutcome::TimedOut => "timeout",
            RequestOutcome::NoResponders => "no_responders",
            RequestOutcome::Failed => "failed",
        }
    }
}

const KINDS: usize = RequestKind::ALL.len();
const OUTCOMES: usize = RequestOutcome::ALL.len();

/// The cluster's counters. Shared by `Arc`; every method is one relaxed atomic operation, so
/// call sites never wait, and a reader sees each counter's own latest value.
///
/// # Examples
///
/// ```
/// use relay_cluster::{metrics::ClusterMetrics, metrics::RequestKind, metrics::RequestOutcome};
///
/// let metrics = ClusterMetrics::default();
/// metrics.request(RequestKind::Claim, RequestOutcome::Answered);
/// metrics.link_lost();
/// assert_eq!(metrics.requests(RequestKind::Claim, RequestOutcome::Answered), 1);
/// assert_eq!(metrics.link_losses(), 1);
/// let families: Vec<_> = metrics.request_counts().collect();
/// assert_eq!(families.len(), 6 * 4);
/// ```
#[derive(Debug, Default)]
pub struct ClusterMetrics {
    requests: [[AtomicU64; OUTCOMES]; KINDS],
    remote_phones: AtomicI64,
    link_losses: AtomicU64,
}

impl ClusterMetrics {
    /// Counts one request of `kind` that ended with `outcome`.
    pub fn request(&self, kind: RequestKind, outcome: RequestOutcome) {
        self.requests[kind as usize][outcome as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Requests of `kind` that ended with `outcome` so far.
    pub fn requests(&self, kind: RequestKind, outcome: RequestOutcome) -> u64 {
        self.requests[kind as usize][outcome as usize].load(Ordering::Relaxed)
    }

    /// Every `(kind, outcome, count)`, zeros included (so each series exists from the start).
    pub fn request_counts(&self) -> impl Iterator<Item = (RequestKind, RequestOutcome, u64)> + '_ {
        RequestKind::ALL.into_iter().flat_map(move |kind| {
            RequestOutcome::ALL
                .into_iter()
                .map(move |outcome| (kind, outcome, self.requests(kind, outcome)))
        })
    }

    /// Phones connected to other instances and registered in this instance's registry now.
    pub fn remote_phones(&self) -> i64 {
        self.remote_phones.load(Ordering::Relaxed)
    }

    pub(crate) fn remote_phone_added(&self) {
        self.remote_phones.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn remote_phone_removed(&self) {
        self.remote_phones.fetch_sub(1, Ordering::Relaxed);
    }

    /// Links (one per remote phone) closed because messages were or may have been lost: a
    /// sequence gap, a slow consumer, a lost NATS connection, or a lost peer instance.
    pub fn link_losses(&self) -> u64 {
        self.link_losses.load(Ordering::Relaxed)
    }

    /// Counts one lost link.
    pub fn link_lost(&self) {
        self.link_losses.fetch_add(1, Ordering::Relaxed);
    }
}
