//! The relay in cluster mode: where the [`cluster`](relay_cluster) building blocks are wired
//! into the relay's pipeline, so that several instances act as one relay.
//!
//! - [`join`]: joining at start, retried with backoff for as long as NATS is unreachable; the
//!   hub's [`ClusterSlot`](join::ClusterSlot) is single-instance, joining (not ready: 503) or
//!   joined.
//! - [`Cluster`] (in the hub's slot once joined): the NATS connection, the lease,
//!   the directory and the link, plus what this instance owns (`owned`: each id it holds, with
//!   the revision of its directory entry) and the phones it serves for owners elsewhere
//!   ([`away`]).
//! - [`claims`]: a binary's claim — the directory and, for an id owned elsewhere, the owner's
//!   decision (or its lease's end), all before the `101` — and the release of an entry once the
//!   registry lets the id go.
//! - [`away`]: a phone whose id another instance owns: registered there over the link, its
//!   frames sent up (credit-limited), what comes down pushed into its outbox.
//! - [`owner`]: the requests other instances send to this one (register a phone, probe a
//!   binary) and the remote phones' frames, handed to the binary.
//! - [`fence`]: the lease lost — every connection closed 1012, every link lost, every tenure
//!   ended — and the graceful stop.
//!
//! # The invariant the locks keep
//!
//! If this instance's registry holds an id (live or gracing), the directory entry for it names
//! this instance (in its current incarnation). Every step that changes either side for one id
//! — a claim here, the release of an entry, ending a tenure for a claimant elsewhere — runs
//! under that id's lock ([`locks`]), so none can interleave with another. A phone lookup reads
//! without it: a phone that reaches a former owner is told 4404 by that owner's registry.
//!
//! # No stale delivery: the lease checked on every delivery path
//!
//! The lease's fence (at `t_sent + L − M`, see [`relay_cluster::liveness`]) is acted on by
//! tasks: the refresher's timer, then [`fence::watch`]. A process stopped by `SIGSTOP`, a
//! runtime starved by a blocking task, or a machine paused past the margin resumes with its
//! timers and its sockets ready at once, and nothing orders the fence before the phone task
//! that reads what its phone sent meanwhile (measured before this check: 1 pause in 43 handed
//! 73 such frames to the old binary, 8 s after another instance had given the id to a new one).
//! So every path that delivers asks [`Hub::may_deliver`](crate::hub::Hub::may_deliver) — is
//! the fence deadline still ahead on the monotonic clock, and has no fence come since the
//! connection (or link) that delivers was made
//! ([`Liveness::within_lease_since`](relay_cluster::liveness::Liveness::within_lease_since))? —
//! just before it delivers, and when not, [`fence::may_deliver`] fences at once, before that
//! delivery or anything else goes on: every connection is closed 1012 with its queued frames
//! dropped, every link lost (the tenures end when the lease's own fence reaches
//! [`fence::watch`]). The second half matters: a resumed process may re-announce itself under
//! a new incarnation (a NATS round trip) before its phone task runs, and a deadline alone
//! would then look held again — so each connection and link carries the lease *epoch* it was
//! made under (the count of fences so far), and one from an earlier epoch never delivers. The
//! paths:
//!
//! - a local phone's frame to the binary here or up a link (`roles::phone`), a binary's
//!   envelope to its phones here or down a link (`roles::binary`), a remote phone's frame or
//!   notice handed to the binary at the owner ([`owner`]), a frame pushed down into an away
//!   phone's outbox ([`away`]);
//! - **the writers**, which is what makes it hold whatever ran first: each WebSocket's task
//!   checks again before it hands each text frame to the socket (`conn::session`), so a frame
//!   queued in an outbox before the deadline and written after it is dropped; the link's
//!   publisher checks before it publishes each frame (a frame queued before the deadline is
//!   not sent, its link is lost);
//! - the answers: a claim or a phone's registration before its `101` (`roles::admission`: 503),
//!   a register or probe request from another instance ([`owner`]: no answer).
//!
//! **The bound.** Other instances may take this one's ids from `t_sent + L` on; the check
//! refuses from `t_sent + L − M` on, on the same clock. So a frame is handed to the kernel
//! after the ids could have moved only if the process stops *between* a check that passed and
//! the write it guards — the few instructions of one `poll` (no `await` in between) — for
//! longer than the time left to the deadline; what is exposed then is what that `poll` hands
//! to the socket: at most tungstenite's write batch (16 KiB) plus the frame being written (and
//! for a link, the NATS client's write buffer). Bytes already in the kernel's socket buffer,
//! or in tungstenite's buffer because the peer's socket was full, were handed over before the
//! deadline: they arrive when the peer reads them, as any bytes in flight would. No software
//! check can close the stop-between-check-and-write case; every other pause — a stop anywhere
//! else, a starved runtime, a timer that fired late, a wall-clock jump (the monotonic clock is
//! the only one read) — delivers nothing after the deadline.
//!
//! **The cost**, measured by `cargo bench -p relay-server --bench lease_check -- --warm-up-time 1
//! --measurement-time 3` (1 KiB frames pushed into an outbox, 64 per iteration, with and
//! without the check in the same run; 2026-12-07 on the shared 2-core build machine, load
//! average 1.7 at the start and 5.3 at the end): the check alone 33.5 ns (two atomic loads,
//! the deadline and the epoch, and one `clock_gettime(CLOCK_MONOTONIC)` through the vDSO; no
//! lock, no allocation, no system call); a push with it 58.9 ns against 22.1 ns without it,
//! i.e. about 37 ns per check. It is made twice per frame (where the frame is handed on, and
//! in the writer): about 75 ns of a frame's path through the relay, whose read, JSON check,
//! wrap and write take microseconds. A single instance pays one branch on the empty cluster
//! slot: 21.5 ns per push against 22.1 ns, within the noise.

pub(crate) mod away;
mod away_set;
pub(crate) mod claims;
pub(crate) mod fence;
pub(crate) mod join;
mod locks;
pub(crate) mod owner;

use crate::config::ClusterConfig;
use crate::conn::endpoint::Endpoint;
use away_set::AwaySet;
use parking_lot::Mutex;
use relay_cluster::{
    ClusterError, connection::ConnectSettings, connection::Nats, directory::Directory,
    directory::Revision, link::Incoming, link::Link, link::LinkSettings, liveness::Liveness,
    metrics::ClusterMetrics,
};
use relay_registry::{Counts, Registry};
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::mpsc;

/// This instance's part in a cluster. See the module docs.
pub(crate) struct Cluster {
    /// The NATS connection.
    pub nats: Nats,
    /// The lease.
    pub liveness: Arc<Liveness>,
    /// Id → owner.
    pub directory: Directory,
    /// Links and requests to other instances.
    pub link: Link,
    /// The cluster's counters (exported by `metrics`).
    pub metrics: Arc<ClusterMetrics>,
    /// The settings it was started with.
    pub config: ClusterConfig,
    /// Every id this instance holds, with its entry's revision.
    owned: Mutex<HashMap<String, Revision>>,
    locks: locks::Locks,
    /// Phones connected here whose ids other instances own.
    away: AwaySet,
    /// The requests addressed to this instance, until the relay's task takes them.
    incoming: Mutex<Option<mpsc::Receiver<Incoming>>>,
    /// The lease epoch and fence deadline a delivery already fenced for
    /// ([`fence::may_deliver`]); `None` after a new lease.
    swept: Mutex<Option<(u64, Option<tokio::time::Instant>)>>,
}

impl Cluster {
    /// Connects to NATS, takes the lease, opens the directory and starts the link, counting in
    /// `metrics`.
    ///
    /// # Errors
    ///
    /// Any step that fails or times out (a lease that is not whole seconds included).
    pub(crate) async fn start(
        config: ClusterConfig,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Cluster, ClusterError> {
        let timeout = config.request_timeout;
        let nats = Nats::connect(
            &config.url,
            &config.instance,
            timeout,
            ConnectSettings {
                bucket_replicas: config.replicas,
                ..ConnectSettings::default()
            },
        )
        .await?;
        let liveness =
            Arc::new(Liveness::start(&nats, config.instance.clone(), config.lease).await?);
        let directory = Directory::open(&nats, liveness.clone(), timeout, metrics.clone()).await?;
        let settings = LinkSettings {
            request_timeout: timeout,
            ..LinkSettings::default()
        };
        let (link, incoming) =
            Link::start(&nats, liveness.clone(), settings, metrics.clone()).await?;
        Ok(Cluster {
            nats,
            liveness,
            directory,
            link,
            metrics,
            config,
            owned: Mutex::new(HashMap::new()),
            locks: locks::Locks::new(),
            away: AwaySet::default(),
            incoming: Mutex::new(Some(incoming)),
            swept: Mutex::new(None),
        })
    }

    /// Whether this instance is part of the cluster right now: connected to NATS and holding
    /// its lease. While not, `/readyz` is 503 and every upgrade is refused 503.
    pub(crate) fn is_ready(&self) -> bool {
        self.nats.is_connected() && self.liveness.holds_lease()
    }

    /// The requests addressed to this instance (once: the task that serves them takes them).
    pub(crate) fn take_incoming(&self) -> Option<mpsc::Receiver<Incoming>> {
        self.incoming.lock().take()
    }

    /// This instance's own connections, from the registry's counts: its binaries (a binary is
    /// always local), its phones registered here, and its phones registered with owners
    /// elsewhere — not the phones of other instances registered here.
    pub(crate) fn own_counts(&self, registry: Counts) -> Counts {
        let remote = usize::try_from(self.metrics.remote_phones()).unwrap_or(0);
        Counts {
            phones: registry.phones.saturating_sub(remote) + self.away.len(),
            ..registry
        }
    }

    /// The phones connected here whose ids other instances own, now.
    pub(crate) fn away_phones(&self) -> Vec<Arc<Endpoint>> {
        self.away.snapshot()
    }

    /// Remembers that this instance holds `server_id` under the entry at `revision`.
    fn own(&self, server_id: &str, revision: Revision) {
        self.owned.lock().insert(server_id.to_owned(), revision);
    }

    /// The revision of our entry for `server_id`, if we hold it.
    fn owned_revision(&self, server_id: &str) -> Option<Revision> {
        self.owned.lock().get(server_id).copied()
    }

    /// Forgets `server_id` (if still at `revision`, when given).
    fn disown(&self, server_id: &str, revision: Option<Revision>) {
        let mut owned = self.owned.lock();
        if revision.is_none() || owned.get(server_id).copied() == revision {
            owned.remove(server_id);
        }
    }
}

/// Ends the tenure of `holder` over `server_id` in `registry`, without a successor: its phones
/// are evicted `4404 binary reclaimed server-id` and the id is free
/// ([`Registry::end_tenure`]). False if `holder` no longer holds the id.
pub(crate) fn end_tenure(
    registry: &Registry<Endpoint>,
    server_id: &str,
    holder: &Arc<Endpoint>,
) -> bool {
    registry.end_tenure(server_id, holder)
}
