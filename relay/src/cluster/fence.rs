//! Losing the lease, and stopping for good.
//!
//! **Fenced** ([`watch`]): the lease turned [`LeaseState::Fenced`] (NATS unreachable for
//! `L − M` since the last acknowledged refresh, `M = min(L/5, 2 s)`: 28 s with the default
//! lease, or the entry gone), or its incarnation changed
//! (it was lost in between). Others may take this instance's ids once its entry expires, so
//! before then: every connection this instance serves is closed `1012 cluster connection
//! lost` (its binaries and local phones, its away phones), every link is lost (the owners'
//! remote phones are told `1011 relay link lost` by their own instances), and every tenure is
//! ended without a directory write (the entries name the old incarnation, which counts as
//! dead). Upgrades get 503 until the lease is held again, under a new incarnation.
//!
//! **Fenced by a delivery** ([`may_deliver`], the check every delivery path makes; see the
//! [`cluster`](super) module docs, "No stale delivery"): a delivery that finds the deadline
//! passed before the timers acted (a stopped process, a starved runtime) closes everything and
//! loses every link itself, at once, once per deadline; the tenures end when [`watch`] hears
//! of the fence. The frames queued in the outboxes are dropped, not written before the 1012.
//!
//! **Stopped** ([`stop`], at the end of a graceful shutdown, after everyone was closed 1001):
//! every message still queued on the links is flushed, each entry this instance still owns is
//! deleted, and then its liveness entry: every id it held is free at once, not a lease later.

use super::{Cluster, end_tenure};
use crate::hub::Hub;
use relay_cluster::liveness::LeaseState;
use relay_protocol::CloseReason;
use std::sync::Arc;
use std::time::Duration;

/// Watches the lease until the relay stops; fences on every loss.
pub(crate) async fn watch(hub: Arc<Hub>) {
    let Some(cluster) = hub.cluster.joined() else {
        return;
    };
    let mut state = cluster.liveness.state();
    let mut held = match &*state.borrow_and_update() {
        LeaseState::Held(owner) => Some(owner.clone()),
        LeaseState::Fenced => None,
    };
    let stopped = hub.shutdown.stopped.clone();
    loop {
        tokio::select! {
            changed = state.changed() => if changed.is_err() { return },
            _ = stopped.cancelled() => return,
        }
        let now = match &*state.borrow_and_update() {
            LeaseState::Held(owner) => Some(owner.clone()),
            LeaseState::Fenced => None,
        };
        if held.is_some() && held != now {
            fence(&hub).await;
        }
        if now.is_some() && held.is_none() {
            tracing::info!("cluster lease held: serving again");
        }
        if now.is_some() && held != now {
            // A new lease: the next deadline that passes is swept again.
            *cluster.swept.lock() = None;
        }
        held = now;
    }
}

/// Closes everything this instance serves 1012, loses every link, ends every tenure.
pub(crate) async fn fence(hub: &Hub) {
    let Some(cluster) = hub.cluster.joined() else {
        return;
    };
    tracing::warn!("cluster lease lost: closing every connection 1012 cluster connection lost");
    close_everything(hub, cluster);
    let ids: Vec<String> = cluster.owned.lock().keys().cloned().collect();
    for id in ids {
        let _lock = cluster.locks.lock(&id).await;
        if let Some(holder) = hub.registry.binary_for(&id) {
            end_tenure(&hub.registry, &id, &holder);
        }
        cluster.disown(&id, None);
    }
}

/// The per-frame check (see the module docs): true in single-instance mode, or while the lease's
/// fence deadline is ahead and no fence came since `epoch`; otherwise [`fence_now`] has run and
/// nothing may be delivered.
#[inline]
pub(crate) fn may_deliver(hub: &Hub, epoch: u64) -> bool {
    match hub.cluster.joined() {
        None => true,
        Some(cluster) if cluster.liveness.within_lease_since(epoch) => true,
        Some(cluster) => {
            fence_now(hub, cluster);
            false
        }
    }
}

/// The synchronous part of [`fence`], run by the first delivery that finds the deadline passed
/// (once per deadline: later ones find it done), before that delivery or anything else goes on:
/// everything closed 1012 with its queued frames dropped, every link lost. The tenures end when
/// [`watch`] hears of the fence from the lease (the refresher fences at the deadline as soon as
/// it runs).
#[cold]
fn fence_now(hub: &Hub, cluster: &Cluster) {
    let now = (
        cluster.liveness.lease_epoch(),
        cluster.liveness.fence_deadline(),
    );
    {
        let mut swept = cluster.swept.lock();
        if *swept == Some(now) {
            return;
        }
        *swept = Some(now);
    }
    tracing::warn!(
        "cluster lease past its deadline on a delivery path (the process was stopped or starved): closing every connection 1012 cluster connection lost"
    );
    close_everything(hub, cluster);
}

/// Closes every connection this instance serves 1012 (dropping what they had queued) and loses
/// every link. Non-blocking.
fn close_everything(hub: &Hub, cluster: &Cluster) {
    for conn in hub.registry.snapshot() {
        // Remote phones are their own instances' to close (their links are lost below).
        if let Some(local) = conn.as_local() {
            local.close_as(
                CloseReason::ClusterConnectionLost,
                crate::conn::outbox::Origin::Requested,
            );
        }
    }
    for phone in cluster.away.snapshot() {
        phone.close(CloseReason::ClusterConnectionLost);
    }
    cluster.link.lose_all();
}

/// The end of a graceful shutdown (see the module docs); bounded by a few request timeouts.
pub(crate) async fn stop(hub: &Hub) {
    let Some(cluster) = hub.cluster.joined() else {
        return;
    };
    let limit = cluster.config.request_timeout;
    if let Err(error) = cluster.link.flush(limit).await {
        tracing::warn!(%error, "cluster links not flushed");
    }
    let owned: Vec<_> = cluster.owned.lock().drain().collect();
    let released = cluster.directory.release_all(owned).await;
    match cluster.liveness.shutdown().await {
        Ok(()) => tracing::info!(released, "left the cluster: every id is free"),
        Err(error) => {
            tracing::warn!(%error, "liveness entry not deleted: this instance's ids are free once it expires")
        }
    }
    cluster.link.stop();
    // Let the client hand the deletions to the server before the process may exit.
    let _ = cluster.nats.sync(limit.min(Duration::from_secs(1))).await;
}
