//! A binary's claim in cluster mode, and the release of a directory entry.
//!
//! Before the `101` ([`claim`]), under the id's lock: [`Directory::claim`] — the id free (or its
//! owner's lease over) becomes ours by an atomic create (or a compare-and-set), and the local
//! registry claims it; an entry already ours leaves the decision to the local registry (a
//! conflict, a reclaim, a takeover, exactly as on one instance); an entry of a live instance is
//! that instance's to decide, after the upgrade ([`ask_owner`]): it pings its binary as it would
//! for a claim of its own, answers [`Reply::Alive`] (the claimant is closed 4409) or ends the
//! tenure and deletes its entry ([`Reply::Released`]: the claimant claims again, and creates it).
//! An owner that does not answer is waited for until its lease ends (then the entry counts as
//! free), at most a lease plus one refresh interval plus a request timeout (37 s with the
//! defaults: a dead owner's entry expires within a lease and a refresh of its death); after
//! that the claimant is closed `1011 relay link lost`.
//!
//! When the registry lets an id go (a release, an expired grace window), [`release_if_free`]
//! deletes the entry if the id is still free here and the entry still at our revision. One
//! that cannot be deleted (NATS unreachable) stays; it names an owner that holds nothing, so
//! the next claim anywhere probes us, and we delete it then.
//!
//! [`Directory::claim`]: relay_cluster::directory::Directory::claim

use super::Cluster;
use crate::conn::endpoint::Endpoint;
use crate::hub::Hub;
use relay_cluster::{
    ClusterError, directory::Claim, directory::Revision, instance::Owner, link::RequestError,
    liveness::PeerEvent, wire::Reply, wire::Request,
};
use relay_registry::{RegistryError, ServerClaim};
use std::sync::Arc;
use tokio::time::Instant;

/// What a binary's claim found.
pub(crate) enum Claiming {
    /// Decided by this instance's registry (the directory entry is ours).
    Registry(Result<ServerClaim<Endpoint>, RegistryError>),
    /// A live instance owns the id: its decision is asked after the upgrade.
    Elsewhere {
        /// The owner.
        owner: Owner,
        /// The entry's revision.
        revision: Revision,
    },
}

/// A binary's claim of `server_id` for `conn` at this instance (before its `101`).
///
/// # Errors
///
/// When the directory cannot decide (unreachable, timed out) or this instance does not hold its
/// lease: the upgrade is refused 503.
pub(crate) async fn claim(
    hub: &Hub,
    cluster: &Cluster,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Result<Claiming, ClusterError> {
    let _lock = cluster.locks.lock(server_id).await;
    match cluster.directory.claim(server_id).await? {
        Claim::Claimed(revision) | Claim::Ours(revision) => {
            cluster.own(server_id, revision);
            let claimed = hub.claim(server_id, conn);
            // Fenced meanwhile: the fence ends every tenure it finds under the ids' locks; this
            // one it might not have seen.
            if !cluster.liveness.holds_lease() {
                drop(claimed);
                return Err(ClusterError::NoLease);
            }
            Ok(Claiming::Registry(claimed))
        }
        Claim::HeldBy { owner, revision } => Ok(Claiming::Elsewhere { owner, revision }),
    }
}

/// What the owner of an id decided about a claim made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Its binary answered: the claimant is refused 4409.
    Conflict,
    /// It let the id go (or its lease ended): claim again.
    Free,
    /// It did not answer, and its lease did not end within the bound.
    Unreachable,
}

/// Asks `owner` to decide a claim of `server_id` (whose entry we read at `revision`): it pings
/// its binary within the probe timeout, so the request may take that long plus the request
/// timeout. An owner that does not answer (no responder, time-out) is waited for until its
/// lease ends, at most a lease plus a refresh interval plus a request timeout more.
pub(crate) async fn ask_owner(
    hub: &Hub,
    cluster: &Cluster,
    server_id: &str,
    owner: &Owner,
    revision: Revision,
) -> Decision {
    let request = Request::Probe {
        server_id: server_id.to_owned(),
        revision: revision.0,
    };
    let timeout = hub.config.probe_timeout + cluster.config.request_timeout;
    match cluster
        .link
        .request_within(&owner.instance, &request, timeout)
        .await
    {
        Ok(Reply::Alive) => Decision::Conflict,
        Ok(Reply::Released) => Decision::Free,
        Ok(reply) => {
            tracing::warn!(?reply, "unexpected answer to a probe");
            Decision::Unreachable
        }
        Err(RequestError::NoResponders | RequestError::TimedOut) => {
            tracing::info!(owner = %owner, "owner does not answer: waiting for its lease to end");
            if lease_ends(cluster, owner).await {
                Decision::Free
            } else {
                Decision::Unreachable
            }
        }
        Err(error) => {
            tracing::warn!(%error, "probe failed");
            Decision::Unreachable
        }
    }
}

/// Waits until `owner`'s lease has ended (true), for at most a lease plus a refresh interval
/// plus a request timeout (false): an owner that died refreshed at most a refresh interval
/// before, so its entry expires within that. A liveness read that fails (NATS electing the
/// bucket's leader) is not an answer: the wait goes on, still bounded.
async fn lease_ends(cluster: &Cluster, owner: &Owner) -> bool {
    let timing = cluster.liveness.timing();
    let deadline = Instant::now() + timing.lease + timing.refresh + cluster.config.request_timeout;
    let mut peers = cluster.liveness.peers();
    loop {
        if cluster.liveness.is_alive(owner).await == Ok(false) {
            return true;
        }
        let wait = tokio::time::sleep(
            timing
                .refresh
                .min(deadline.saturating_duration_since(Instant::now())),
        );
        tokio::select! {
            event = peers.recv() => {
                if matches!(event, Ok(PeerEvent::Lost(ref lost)) if lost == owner) {
                    return true;
                }
            }
            _ = wait => {}
        }
        if Instant::now() >= deadline {
            return cluster.liveness.is_alive(owner).await == Ok(false);
        }
    }
}

/// Deletes our directory entry for `server_id` if the registry holds nothing for it any more.
pub(crate) async fn release_if_free(hub: &Hub, server_id: &str) {
    let Some(cluster) = hub.cluster.joined() else {
        return;
    };
    let _lock = cluster.locks.lock(server_id).await;
    if hub.registry.binary_for(server_id).is_some() {
        return;
    }
    let Some(revision) = cluster.owned_revision(server_id) else {
        return;
    };
    match cluster.directory.release(server_id, revision).await {
        Ok(_) => cluster.disown(server_id, Some(revision)),
        Err(error) => {
            tracing::info!(server = %hub.logs.server(server_id), %error, "directory entry not released: it stays until the next claim")
        }
    }
}

/// Runs [`release_if_free`] for `server_id` in a task of its own (in cluster mode).
pub(crate) fn spawn_release_check(hub: &Arc<Hub>, server_id: &str) {
    if hub.cluster.joined().is_none() {
        return;
    }
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let (hub, server_id) = (hub.clone(), server_id.to_owned());
    runtime.spawn(async move { release_if_free(&hub, &server_id).await });
}

/// Checks, when dropped, whether the binary's id is free here and its entry can go (a binary
/// task holds one from its claim on, so even a panic's unwind runs the check).
pub(crate) struct ReleaseCheck {
    hub: Arc<Hub>,
    server_id: String,
}

impl ReleaseCheck {
    /// The check for `server_id`, if in cluster mode.
    pub(crate) fn new(hub: &Arc<Hub>, server_id: &str) -> Option<ReleaseCheck> {
        hub.cluster.joined().map(|_| ReleaseCheck {
            hub: hub.clone(),
            server_id: server_id.to_owned(),
        })
    }
}

impl Drop for ReleaseCheck {
    fn drop(&mut self) {
        spawn_release_check(&self.hub, &self.server_id);
    }
}
