//! The shared context: what every task of the relay holds (an `Arc<Hub>`) — the registry, the
//! settings, the metrics, the gates, the log helpers, the shutdown tokens, the sessions' tracker
//! and (in cluster mode) the cluster's state — and the one registry step every path shares, a
//! binary's claim in this instance's registry ([`Hub::claim`]) and the conflict policy, probe
//! then take over ([`Hub::contest`]) — and the check every delivery path makes, that this
//! instance may still deliver ([`Hub::may_deliver`], cluster mode's fence deadline).
//!
//! Its field types and that check are the only uses here of the layers above `conn`
//! (`http::gates`, `cluster`): the context is built by [`start`](crate::start) and read
//! everywhere, so `conn`'s writer reaches the check through it without importing `cluster`.

use crate::cluster::join::ClusterSlot;
use crate::config::RelayConfig;
use crate::conn::endpoint::Endpoint;
use crate::http::gates::Gates;
use crate::logging::{LogIds, RefusalLog};
use crate::metrics::Metrics;
use relay_protocol::CloseReason;
use relay_registry::{Conn, Counts, Registry, RegistryError, ServerClaim};
use std::sync::Arc;
use std::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every connection task shares.
pub(crate) struct Hub {
    pub(crate) registry: Registry<Endpoint>,
    pub(crate) config: RelayConfig,
    pub(crate) started: Instant,
    pub(crate) metrics: Metrics,
    pub(crate) gates: Gates,
    pub(crate) logs: LogIds,
    pub(crate) refusals: RefusalLog,
    pub(crate) shutdown: Shutdown,
    /// Every WebSocket session's task (the drain waits for them).
    pub(crate) sessions: TaskTracker,
    /// Cluster mode's state: a single instance, or configured and (once) joined.
    pub(crate) cluster: ClusterSlot,
    /// Push wakes (off without a service-account key).
    pub(crate) push: Arc<crate::push::Push>,
    /// TLS on the public listener (`None`: plain TCP).
    pub(crate) tls: Option<crate::http::tls::Tls>,
}

impl Hub {
    /// This instance's own connections: the registry's counts, less (in cluster mode) the
    /// phones of other instances registered here, plus this instance's phones registered
    /// elsewhere.
    pub(crate) fn own_counts(&self) -> Counts {
        let counts = self.registry.counts();
        match self.cluster.joined() {
            Some(cluster) => cluster.own_counts(counts),
            None => counts,
        }
    }

    /// Whether a frame may be delivered now (to a binary or a phone, here or down a link), or a
    /// claim or registration answered: always on a single instance (one branch); in cluster
    /// mode while the lease's fence deadline is ahead on the monotonic clock. When it has
    /// passed, this call fences at once — everything closed 1012, its queued frames dropped —
    /// before it returns false (the relay's `cluster` module docs: "No stale delivery").
    ///
    /// `epoch` is the lease epoch under which what delivers was made ([`Hub::lease_epoch`] then):
    /// after a fence, a new lease (a new incarnation) does not make it current again.
    #[inline]
    pub(crate) fn may_deliver(&self, epoch: u64) -> bool {
        crate::cluster::fence::may_deliver(self, epoch)
    }

    /// [`Hub::may_deliver`] for a frame that `conn` (a local connection: its epoch) sends or
    /// receives; a remote phone is checked under the current epoch (its frames go down a link,
    /// whose publisher checks the link's own).
    #[inline]
    pub(crate) fn may_deliver_for(&self, conn: &Endpoint) -> bool {
        let epoch = match conn.as_local() {
            Some(local) => local.epoch(),
            None => self.lease_epoch(),
        };
        self.may_deliver(epoch)
    }

    /// The current lease epoch (cluster mode, once joined; 0 otherwise).
    pub(crate) fn lease_epoch(&self) -> u64 {
        self.cluster
            .joined()
            .map_or(0, |cluster| cluster.liveness.lease_epoch())
    }

    /// Claims `server_id` for `conn` in this instance's registry; counts and logs a reclaim.
    pub(crate) fn claim(
        &self,
        server_id: &str,
        conn: &Arc<Endpoint>,
    ) -> Result<ServerClaim<Endpoint>, RegistryError> {
        let claim = self.registry.claim_server(server_id, conn.clone())?;
        let tag = self.logs.conn(conn.conn_id());
        if claim.replaced() {
            self.metrics.reclaimed();
            tracing::info!(conn = %tag, "reclaim");
        } else {
            tracing::info!(conn = %tag, "claim");
        }
        Ok(claim)
    }

    /// The one conflict policy, for a claim on this instance and for a claimant elsewhere alike:
    /// a claim that meets `holder` (the live binary holding the id) probes it (a ping within
    /// the probe timeout). One that answers keeps the id ([`Contest::Alive`]); a silent one is
    /// taken over by `take_over` (the registry's takeover here, the end of its tenure for a
    /// claimant elsewhere; `None` if the holder changed meanwhile), then closed
    /// `1011 heartbeat timeout` and counted. `take_over` runs only after a silent probe.
    pub(crate) async fn contest<T>(
        &self,
        holder: &Endpoint,
        take_over: impl Future<Output = Option<T>>,
    ) -> Contest<T> {
        let answered = match holder.as_local() {
            Some(local) => local.probe(self.config.probe_timeout).await,
            None => false,
        };
        if answered {
            return Contest::Alive;
        }
        let Some(taken) = take_over.await else {
            return Contest::Changed;
        };
        tracing::info!(holder = %self.logs.conn(holder.conn_id()), "takeover");
        self.metrics.took_over();
        holder.close(CloseReason::HeartbeatTimeout);
        Contest::TookOver(taken)
    }
}

/// How a [`Hub::contest`] for a held id ended.
pub(crate) enum Contest<T> {
    /// The holder answered: it keeps the id (the claim is refused `4409`).
    Alive,
    /// The holder was silent and is taken over; `T` is what the takeover returned.
    TookOver(T),
    /// The holder was silent but no longer held the id when taken over: look again.
    Changed,
}

/// The two stages of shutdown, as cancellation tokens cloned into the tasks that watch them.
pub(crate) struct Shutdown {
    /// Shutdown began: `/readyz` 503, upgrades 503, everyone closed 1001.
    pub(crate) draining: CancellationToken,
    /// The drain is over: stop listening, end the HTTP connections and background tasks, cut
    /// close handshakes short.
    pub(crate) stopped: CancellationToken,
}

impl Shutdown {
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}
