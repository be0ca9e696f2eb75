//! A binary's claim in cluster mode, decided before its `101`, and the release of a directory
//! entry.
//!
//! [`claim`] runs before the upgrade is answered, so that a binary that sees its `101` holds its
//! id (a phone joining right after it, on any instance, reaches it). Under the id's lock,
//! [`Directory::claim`]: the id free (or its owner's lease over) becomes ours by an atomic
//! create (or a compare-and-set), and the local registry claims it; an entry already ours leaves
//! the decision to the local registry (a conflict, a reclaim, a takeover, exactly as on one
//! instance). An entry of a live instance is that instance's to decide ([`ask_owner`], without
//! the lock): it pings its binary as it would for a claim of its own and answers
//! [`Reply::Alive`] (the claim is refused: `4409` once upgraded, as the protocol's *Lifecycle
//! and close codes* table says) or ends the tenure and deletes its entry ([`Reply::Released`]:
//! the claimant claims again, and creates it).
//!
//! # An owner that does not answer
//!
//! Nobody listens on its subject (it died, or NATS dropped its connection), or the request
//! is never answered (a stalled or partitioned instance). Its ids are not free before its lease
//! ends (the protocol's *Cluster mode*: no two instances ever deliver for one id at once), and
//! are once it has, whether the probe is still in flight or not: the claimant watches the
//! liveness bucket from the moment it asks. It waits for that end only within the decision's
//! bound: the probe timeout plus the request timeout (10 s + 2 s by default), counted from the
//! claim's start — what a claim decided by a live owner may take too. If the lease ends within it, the claim is made and the
//! `101` follows (the entry, still at the revision read, moves here by one compare-and-set); if
//! not, the upgrade is refused **503** with `Retry-After` (when the owner's
//! lease can have ended at the latest, if it stopped refreshing when it went silent; at least
//! 1 s) — the same answer as for any cluster that cannot decide in time (*Endpoints*: "in
//! cluster mode, no cluster link → 503"). A phone joining that id meanwhile finds the same
//! silent owner and gets the same 503 with `Retry-After` ([`away::join`](super::away::join)),
//! never `4404`: the id may well be held again a moment later.
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
    ClusterError, directory::Claim, directory::Move, directory::Revision, instance::Owner,
    link::RequestError, liveness::PeerEvent, wire::Reply, wire::Request,
};
use relay_registry::{RegistryError, ServerClaim};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;

/// What a binary's claim found.
pub(crate) enum Claiming {
    /// Decided by this instance's registry (the directory entry is ours).
    Registry(Result<ServerClaim<Endpoint>, RegistryError>),
    /// A live instance owns the id and its binary answered: refused (4409 once upgraded).
    KeptElsewhere,
}

/// The cluster could not decide in time: the upgrade is refused 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Undecided {
    /// `Retry-After`, when the answer depends on another instance's lease running out.
    pub retry_after: Option<Duration>,
}

impl From<ClusterError> for Undecided {
    fn from(error: ClusterError) -> Self {
        tracing::info!(%error, "binary claim: the cluster cannot decide");
        Undecided { retry_after: None }
    }
}

/// How many times a claim asks an owner elsewhere before it counts as refused (each answer
/// "released" lets the claimant claim again, and someone else may win that race).
const ASKS: usize = 3;

/// A binary's claim of `server_id` for `conn` at this instance, decided before its `101` (see
/// the module docs); it takes at most the probe timeout plus the request timeout, and one
/// directory round trip more.
///
/// # Errors
///
/// [`Undecided`] when the directory cannot decide (unreachable, timed out), this instance does
/// not hold its lease, or the owner elsewhere neither answered nor lost its lease in time: the
/// upgrade is refused 503.
pub(crate) async fn claim(
    hub: &Hub,
    cluster: &Cluster,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Result<Claiming, Undecided> {
    let deadline = Instant::now() + hub.config.probe_timeout + cluster.config.request_timeout;
    for _ in 0..ASKS {
        let (owner, revision) = match claim_here(hub, cluster, server_id, conn).await? {
            Ok(claiming) => return Ok(claiming),
            Err(held_by) => held_by,
        };
        match ask_owner(cluster, server_id, &owner, revision, deadline).await {
            Decision::Conflict => return Ok(Claiming::KeptElsewhere),
            Decision::Free => continue,
            Decision::LeaseEnded => {
                if let Some(claiming) = move_here(hub, cluster, server_id, conn, revision).await? {
                    return Ok(claiming);
                }
            }
            Decision::Undecided(undecided) => return Err(undecided),
        }
    }
    // Released each time, and each time another claimant won the id: it is held.
    Ok(Claiming::KeptElsewhere)
}

/// One directory claim under the id's lock: the registry's answer, or the live owner
/// elsewhere (and its entry's revision).
async fn claim_here(
    hub: &Hub,
    cluster: &Cluster,
    server_id: &str,
    conn: &Arc<Endpoint>,
) -> Result<Result<Claiming, (Owner, Revision)>, ClusterError> {
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
            Ok(Ok(Claiming::Registry(claimed)))
        }
        Claim::HeldBy { owner, revision } => Ok(Err((owner, revision))),
    }
}

/// The entry read at `revision` names an owner whose lease has ended: moves it here by
/// compare-and-set (one round trip, where a claim from the start takes four: this is what every
/// binary of a dead instance does when its lease ends) and claims the id in the registry;
/// `None` if the entry changed meanwhile (claim from the start).
async fn move_here(
    hub: &Hub,
    cluster: &Cluster,
    server_id: &str,
    conn: &Arc<Endpoint>,
    revision: Revision,
) -> Result<Option<Claiming>, ClusterError> {
    let _lock = cluster.locks.lock(server_id).await;
    let Move::Moved(revision) = cluster.directory.move_to_me(server_id, revision).await? else {
        return Ok(None);
    };
    cluster.own(server_id, revision);
    let claimed = hub.claim(server_id, conn);
    if !cluster.liveness.holds_lease() {
        drop(claimed);
        return Err(ClusterError::NoLease);
    }
    Ok(Some(Claiming::Registry(claimed)))
}

/// What the owner of an id decided about a claim made here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Its binary answered: the claimant is refused 4409.
    Conflict,
    /// It let the id go (its entry is deleted): claim again.
    Free,
    /// It did not answer, and its lease ended: the entry read is free to move here.
    LeaseEnded,
    /// It did not answer, and its lease did not end before the deadline.
    Undecided(Undecided),
}

/// Asks `owner` to decide a claim of `server_id` (whose entry we read at `revision`): it pings
/// its binary within the probe timeout. An owner that does not answer (no responder, time-out)
/// is waited for until its lease ends, but not past `deadline`.
async fn ask_owner(
    cluster: &Cluster,
    server_id: &str,
    owner: &Owner,
    revision: Revision,
    deadline: Instant,
) -> Decision {
    let request = Request::Probe {
        server_id: server_id.to_owned(),
        revision: revision.0,
    };
    let asked = Instant::now();
    let within = deadline.saturating_duration_since(asked);
    // A request that reached a dying owner is never answered: its lease ending while we wait
    // decides too (whatever it answered before the end, its ids are free after it).
    let mut peers = cluster.liveness.peers();
    let asking = cluster
        .link
        .request_within(&owner.instance, &request, within);
    tokio::pin!(asking);
    let answer = loop {
        tokio::select! {
            answer = &mut asking => break answer,
            event = peers.recv() => match event {
                Ok(PeerEvent::Lost(ref lost)) if lost == owner => return Decision::LeaseEnded,
                Ok(_) | Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => break (&mut asking).await,
            },
        }
    };
    match answer {
        Ok(Reply::Alive) => Decision::Conflict,
        Ok(Reply::Released) => Decision::Free,
        Ok(reply) => {
            tracing::warn!(?reply, "unexpected answer to a probe");
            Decision::Undecided(Undecided { retry_after: None })
        }
        Err(RequestError::NoResponders | RequestError::TimedOut) => {
            tracing::info!(owner = %owner, "owner does not answer: waiting for its lease to end");
            if lease_ends(cluster, owner, deadline).await {
                return Decision::LeaseEnded;
            }
            // At the latest, its lease ends one lease after it went silent (if it stopped
            // refreshing then); the claim was asked at the earliest moment we knew of.
            let ends = asked + cluster.liveness.timing().lease;
            let wait = ends.saturating_duration_since(Instant::now());
            Decision::Undecided(Undecided {
                retry_after: Some(wait.max(Duration::from_secs(1))),
            })
        }
        Err(error) => {
            tracing::warn!(%error, "probe failed");
            Decision::Undecided(Undecided { retry_after: None })
        }
    }
}

/// Waits until `owner`'s lease has ended (true), or until `deadline` (false).
async fn lease_ends(cluster: &Cluster, owner: &Owner, deadline: Instant) -> bool {
    let refresh = cluster.liveness.timing().refresh;
    let mut peers = cluster.liveness.peers();
    loop {
        if cluster.liveness.is_alive(owner).await == Ok(false) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        // The watch tells at once; the periodic read covers a missed (lagged) event.
        let wait = tokio::time::sleep_until(deadline.min(Instant::now() + refresh));
        tokio::pin!(wait);
        loop {
            tokio::select! {
                event = peers.recv() => match event {
                    Ok(PeerEvent::Lost(ref lost)) if lost == owner => return true,
                    Ok(_) => continue,
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => {
                        (&mut wait).await;
                        break;
                    }
                },
                _ = &mut wait => break,
            }
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
