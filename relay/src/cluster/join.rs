//! Joining the cluster, at start and for as long as it takes.
//!
//! An instance started with `--cluster` serves at once, whether NATS is reachable or not: it
//! answers `/healthz`, `/readyz` 503 and every upgrade 503 (`cluster unavailable`) until it has
//! joined (protocol: "an instance that cannot reach the cluster, at start or later, keeps
//! running"). [`ClusterSlot`] is the hub's view of that: a single instance ([`Mode::Single`]),
//! configured but not joined yet ([`Mode::Joining`]: never treated as a single instance — every
//! path that needs the cluster refuses or does nothing), or joined ([`Mode::Joined`], for good:
//! losing NATS later is the lease's business, see [`fence`](super::fence)).
//!
//! An [`attempt`] — connect, take the lease, open the directory, start the link
//! ([`Cluster::start`]) — is made by [`start`](crate::start), so an instance that can join has
//! joined when it starts serving. If it failed, [`run`] (a task of the relay) makes more,
//! [`FIRST_RETRY`] after the first, the wait doubling up to [`LAST_RETRY`], each failure logged
//! once with its reason and the wait before the next. Once joined, [`run`] starts what serves
//! the cluster: the requests of other instances ([`owner::serve`](super::owner::serve)) and the
//! lease's watch ([`fence::watch`](super::fence::watch)).
//!
//! A configuration that can never join (a URL that cannot be parsed, a lease that is not whole
//! seconds) is refused before anything starts ([`ClusterSlot::new`]); so is, at start, a bucket
//! whose settings differ in a way JetStream cannot change ([`ClusterError::Config`] from the
//! first attempt).

use super::Cluster;
use crate::config::ClusterConfig;
use crate::hub::Hub;
use relay_cluster::{ClusterError, metrics::ClusterMetrics};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tokio_util::task::AbortOnDropHandle;

/// The wait after the first failed attempt to join.
pub(crate) const FIRST_RETRY: Duration = Duration::from_millis(250);
/// The longest wait between two attempts (the wait doubles from [`FIRST_RETRY`] up to this).
pub(crate) const LAST_RETRY: Duration = Duration::from_secs(5);

/// Where this instance stands with the cluster (see the module docs).
pub(crate) enum Mode<'a> {
    /// No `--cluster`: a single instance.
    Single,
    /// Cluster mode, not joined yet: not ready, every upgrade refused 503.
    Joining,
    /// Cluster mode, joined.
    Joined(&'a Cluster),
}

/// The hub's cluster state: the settings, and the [`Cluster`] once joined.
pub(crate) struct ClusterSlot {
    config: Option<ClusterConfig>,
    joined: OnceLock<Cluster>,
    metrics: Arc<ClusterMetrics>,
}

impl ClusterSlot {
    /// The slot for `config` (`None`: a single instance), nothing joined yet.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] if `config` can never join: a server URL that cannot be parsed,
    /// or an unusable lease.
    pub(crate) fn new(config: Option<ClusterConfig>) -> Result<ClusterSlot, ClusterError> {
        if let Some(config) = &config {
            relay_cluster::liveness::LeaseTiming::new(config.lease)?;
            if !(1..=5).contains(&config.replicas) {
                return Err(ClusterError::Config(format!(
                    "bucket replicas: 1 to 5, got {}",
                    config.replicas
                )));
            }
            relay_cluster::connection::servers(&config.url)?;
        }
        Ok(ClusterSlot {
            config,
            joined: OnceLock::new(),
            metrics: Arc::new(ClusterMetrics::default()),
        })
    }

    /// Single, joining or joined.
    pub(crate) fn mode(&self) -> Mode<'_> {
        match (&self.config, self.joined.get()) {
            (None, _) => Mode::Single,
            (Some(_), None) => Mode::Joining,
            (Some(_), Some(cluster)) => Mode::Joined(cluster),
        }
    }

    /// The cluster, once joined.
    pub(crate) fn joined(&self) -> Option<&Cluster> {
        self.joined.get()
    }

    /// The settings, in cluster mode.
    pub(crate) fn config(&self) -> Option<&ClusterConfig> {
        self.config.as_ref()
    }

    /// The cluster's counters (exported by `metrics` in cluster mode, joined or not).
    pub(crate) fn metrics(&self) -> Arc<ClusterMetrics> {
        self.metrics.clone()
    }

    /// Whether this is cluster mode, not joined yet.
    fn mode_is_joining(&self) -> bool {
        matches!(self.mode(), Mode::Joining)
    }

    /// Whether upgrades may be served as far as the cluster is concerned: always for a single
    /// instance; in cluster mode only once joined, and while connected and holding the lease.
    pub(crate) fn is_ready(&self) -> bool {
        match self.mode() {
            Mode::Single => true,
            Mode::Joining => false,
            Mode::Joined(cluster) => cluster.is_ready(),
        }
    }
}

/// Makes one attempt to join (a no-op once joined); a failure is logged at warn with its reason
/// and `retry`, the wait before the next attempt (at error if retrying cannot help: a bucket
/// whose settings JetStream refuses to change).
///
/// # Errors
///
/// Why the attempt failed: NATS unreachable, a step timed out, or [`ClusterError::Config`].
pub(crate) async fn attempt(hub: &Hub, retry: Duration) -> Result<(), ClusterError> {
    let slot = &hub.cluster;
    let Some(config) = slot.config() else {
        return Ok(());
    };
    if slot.joined().is_some() {
        return Ok(());
    }
    match Cluster::start(config.clone(), slot.metrics()).await {
        Ok(cluster) => {
            // One task makes the attempts: the slot is empty here.
            let _ = slot.joined.set(cluster);
            tracing::info!(instance = %config.instance, "joined the cluster");
            Ok(())
        }
        Err(error) => {
            let retry_ms = retry.as_millis() as u64;
            if matches!(error, ClusterError::Config(_)) {
                tracing::error!(%error, retry_ms, "not ready: cannot join the cluster");
            } else {
                tracing::warn!(%error, retry_ms, "not ready: cannot join the cluster");
            }
            Err(error)
        }
    }
}

/// Joins the cluster if [`start`](crate::start)'s attempt did not (retrying with backoff until
/// it does, or until shutdown begins), then runs the tasks that serve it until the relay drops
/// this task. Returns at once without `--cluster`.
pub(crate) async fn run(hub: Arc<Hub>) {
    let mut wait = FIRST_RETRY;
    while hub.cluster.mode_is_joining() {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = hub.shutdown.draining.cancelled() => return,
        }
        wait = (wait * 2).min(LAST_RETRY);
        tokio::select! {
            _ = attempt(&hub, wait) => {}
            _ = hub.shutdown.draining.cancelled() => return,
        }
    }
    let Some(cluster) = hub.cluster.joined() else {
        return; // a single instance
    };
    let requests = cluster.take_incoming().map(|incoming| {
        AbortOnDropHandle::new(tokio::spawn(super::owner::serve(hub.clone(), incoming)))
    });
    let fence = AbortOnDropHandle::new(tokio::spawn(super::fence::watch(hub.clone())));
    // Held until the relay drops this task, which aborts both.
    if let Some(requests) = requests {
        let _ = requests.await;
    }
    let _ = fence.await;
}
