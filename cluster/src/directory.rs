//! [`Directory`]: the JetStream KV bucket that maps each held server-id to the instance owning it.
//!
//! One entry per id, under [`keys::key_of`](super::keys::key_of)`(id)`, whose value is the owning
//! [`Owner`] (instance and incarnation). The entry is written when an id changes hands, never to
//! keep it alive: whether its owner still holds the id is the owner's
//! [liveness](super::liveness::Liveness), one entry per instance. So:
//!
//! - a **fresh claim** is an atomic create: of two instances creating one key at once, exactly
//!   one succeeds (JetStream orders the writes and refuses the second, whose expected last
//!   revision no longer matches);
//! - an entry whose owner's lease has ended (or whose incarnation is an old one) **counts as
//!   free** and is taken by a compare-and-set on its revision;
//! - a **takeover or reclaim** of an id a live owner holds is decided by that owner (a probe or
//!   handover request over the [`Link`](super::link::Link)); once it has let go, the claimant
//!   [moves](Directory::move_to_me) the entry by compare-and-set on the revision it read, which a
//!   stale revision cannot pass;
//! - a **release** deletes the entry only if it is still at our revision.
//!
//! Every call is bounded by the directory's timeout, and [`ClusterError::TimedOut`] is an
//! answer (the relay refuses the upgrade with 503) — never a hang. Within it, a call that NATS
//! failed is tried again (after 100 ms, doubling up to 500 ms): while JetStream elects a
//! bucket's stream leader (4–15 s measured when the node leading it dies) a request is told
//! "no responders" at once or times out, and while the client moves to another node it is not
//! sent at all; neither is a verdict. Each retry is safe even when the failed attempt was
//! stored after all (its acknowledgement lost): a create finds the entry, which names us
//! ([`Claim::Ours`]); a move or a release finds the revision moved on ([`Move::Stale`],
//! [`Release::NotOurs`]), and the caller reads the entry again. An election longer than the
//! timeout is answered [`ClusterError::TimedOut`] (503: the client tries again later).
//!
//! Entries left by an instance that crashed stay until their id is claimed again (they count as
//! free, so they cost storage, not correctness). A released entry leaves a purge marker that the
//! server removes after a minute.

use super::bucket::{MARKER_TTL, open_bucket};
use super::connection::Nats;
use super::error::{ClusterError, bounded};
use super::instance::Owner;
use super::keys::key_of;
use super::liveness::Liveness;
use super::metrics::{ClusterMetrics, RequestKind, RequestOutcome};
use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::Duration;

/// The bucket holding one entry per held server-id.
pub const DIRECTORY_BUCKET: &str = "relay_directory";

/// A directory entry's revision: what a compare-and-set must name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Revision(pub u64);

/// What [`Directory::claim`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The id is now ours, at this revision: it was free, or its owner's lease had ended.
    Claimed(Revision),
    /// The entry already names us (this incarnation): the id's fate is our local registry's.
    Ours(Revision),
    /// A live instance owns it: ask it (probe, handover) before moving the entry.
    HeldBy {
        /// The owner.
        owner: Owner,
        /// The entry's revision, for [`Directory::move_to_me`].
        revision: Revision,
    },
}

/// What [`Directory::move_to_me`] decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Move {
    /// The entry now names us, at this revision.
    Moved(Revision),
    /// The entry changed since the revision we named (or is gone): nothing was written; read
    /// it again with [`Directory::claim`].
    Stale,
}

/// What [`Directory::release`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// Our entry was deleted: the id is free.
    Released,
    /// The entry is not ours any more (it moved, or is already gone): nothing was deleted.
    NotOurs,
}

/// Who owns an id, as [`Directory::lookup`] reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// No live owner: no binary holds the id anywhere (a phone gets 4404).
    Free,
    /// This instance owns it: use the local registry.
    Ours(Revision),
    /// A live instance owns it: register phones with it.
    Owner {
        /// The owner.
        owner: Owner,
        /// The entry's revision.
        revision: Revision,
    },
}

/// The id → owner directory. Cheap to clone (shares the bucket and the liveness).
///
/// # Concurrency
///
/// Any number of instances (and tasks) may call any method at once: each decision is one
/// JetStream compare-and-set, so for every id at most one claim or move succeeds per revision.
#[derive(Clone)]
pub struct Directory {
    store: kv::Store,
    liveness: Arc<Liveness>,
    timeout: Duration,
    metrics: Arc<ClusterMetrics>,
}

/// Runs `operation` again while NATS fails it ([`ClusterError::Nats`]: no responders while a
/// stream leader is elected, a request timed out, the client between nodes), 100 ms after the
/// first failure, the wait doubling up to 500 ms; any other result is returned. The caller
/// bounds the whole (see the module docs on why a retry is safe).
async fn retrying<T, F, Fut>(mut operation: F) -> Result<T, ClusterError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClusterError>>,
{
    let mut wait = Duration::from_millis(100);
    loop {
        match operation().await {
            Err(ClusterError::Nats(error)) => {
                tracing::debug!(%error, "directory operation not answered: trying again");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(500));
            }
            other => return other,
        }
    }
}

/// How often [`Directory::claim`] re-reads an entry that changed under it before answering
/// with what it read last.
const ATTEMPTS: usize = 4;

impl Directory {
    /// Opens (or creates) the directory bucket, with [`Nats::bucket_replicas`] replicas (an
    /// existing bucket with other settings is updated where JetStream allows it). Ownership is decided with `liveness`: its
    /// [`owner`](Liveness::owner) is what claims write, its [`is_alive`](Liveness::is_alive)
    /// decides whether an entry is free. Every call is bounded by `timeout`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] or a NATS error if the bucket cannot be opened;
    /// [`ClusterError::Config`] if it exists with settings JetStream cannot change (the message
    /// says which).
    pub async fn open(
        nats: &Nats,
        liveness: Arc<Liveness>,
        timeout: Duration,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<Self, ClusterError> {
        let store = bounded(timeout, open_bucket(nats, DIRECTORY_BUCKET)).await?;
        Ok(Directory {
            store,
            liveness,
            timeout,
            metrics,
        })
    }

    /// Claims `server_id` for this instance (a binary's claim, before its 101).
    ///
    /// Creates the entry if there is none; returns [`Claim::Ours`] if it already names us,
    /// [`Claim::HeldBy`] if a live instance owns it, and otherwise (its owner's lease ended)
    /// moves it to us by compare-and-set.
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] when no answer came within the timeout,
    /// [`ClusterError::NoLease`] when this instance does not hold its lease (it must not claim
    /// anything then), a NATS error otherwise.
    pub async fn claim(&self, server_id: &str) -> Result<Claim, ClusterError> {
        let result = bounded(self.timeout, retrying(|| self.claim_now(server_id))).await;
        self.count(RequestKind::Claim, &result);
        result
    }

    async fn claim_now(&self, server_id: &str) -> Result<Claim, ClusterError> {
        let me = self.liveness.owner().ok_or(ClusterError::NoLease)?;
        let key = key_of(server_id);
        let value = bytes::Bytes::from(me.encode());
        let mut last = None;
        for _ in 0..ATTEMPTS {
            match self.store.create(&key, value.clone()).await {
                Ok(revision) => return Ok(Claim::Claimed(Revision(revision))),
                Err(error) if error.kind() == CreateErrorKind::AlreadyExists => {}
                Err(error) => return Err(ClusterError::nats(error)),
            }
            let Some((owner, revision)) = self.read(&key).await? else {
                continue; // deleted meanwhile: create again
            };
            if owner.as_ref() == Some(&me) {
                return Ok(Claim::Ours(revision));
            }
            if let Some(owner) = &owner {
                if self.liveness.is_alive(owner).await? {
                    last = Some(Claim::HeldBy {
                        owner: owner.clone(),
                        revision,
                    });
                    break;
                }
            }
            // Free: its owner's lease ended (or the value is not ours to read). Take it.
            match self.store.update(&key, value.clone(), revision.0).await {
                Ok(revision) => return Ok(Claim::Claimed(Revision(revision))),
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => continue,
                Err(error) => return Err(ClusterError::nats(error)),
            }
        }
        // The entry kept changing under us, or a live owner holds it: the latter is the answer;
        // the former means others are claiming it right now, and one of them won.
        match last {
            Some(claim) => Ok(claim),
            None => match self.read(&key).await? {
                Some((Some(owner), revision)) => Ok(Claim::HeldBy { owner, revision }),
                _ => Err(ClusterError::TimedOut),
            },
        }
    }

    /// Moves `server_id`'s entry to this instance if it is still at `expected` (after its live
    /// owner let go of the id: a takeover or a reclaim decided by the owner).
    ///
    /// # Errors
    ///
    /// As [`claim`](Self::claim).
    pub async fn move_to_me(
        &self,
        server_id: &str,
        expected: Revision,
    ) -> Result<Move, ClusterError> {
        let operation = || async {
            let me = self.liveness.owner().ok_or(ClusterError::TimedOut)?;
            let key = key_of(server_id);
            match self
                .store
                .update(&key, me.encode().into(), expected.0)
                .await
            {
                Ok(revision) => Ok(Move::Moved(Revision(revision))),
                Err(error) if error.kind() == UpdateErrorKind::WrongLastRevision => Ok(Move::Stale),
                Err(error) => Err(ClusterError::nats(error)),
            }
        };
        let result = bounded(self.timeout, retrying(operation)).await;
        self.count(RequestKind::Move, &result);
        result
    }

    /// Deletes `server_id`'s entry if it is still at `ours` (the revision our claim or move
    /// returned): a binary's tenure here ended for good (release, grace expired).
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] or a NATS error: the entry then stays, and counts as free once
    /// this instance's lease ends — or is taken by the next claim on any instance, since we
    /// answer "not held" to its probe.
    pub async fn release(&self, server_id: &str, ours: Revision) -> Result<Release, ClusterError> {
        let operation = || async {
            let key = key_of(server_id);
            let purge = self
                .store
                .purge_expect_revision_with_ttl(&key, ours.0, MARKER_TTL)
                .await;
            match purge {
                Ok(()) => Ok(Release::Released),
                Err(error) if error.kind() == kv::PurgeErrorKind::WrongLastRevision => {
                    Ok(Release::NotOurs)
                }
                Err(error) => Err(ClusterError::nats(error)),
            }
        };
        let result = bounded(self.timeout, retrying(operation)).await;
        self.count(RequestKind::Release, &result);
        result
    }

    /// Releases every `(server_id, revision)` in `owned` (graceful shutdown), up to 64 at a
    /// time, all within one directory timeout; returns how many were deleted. What is not
    /// released in time stays, and counts as free once this instance's liveness is deleted.
    pub async fn release_all(&self, owned: impl IntoIterator<Item = (String, Revision)>) -> usize {
        let released = std::sync::atomic::AtomicUsize::new(0);
        let releases =
            futures_util::stream::iter(owned).for_each_concurrent(64, |(id, revision)| {
                let released = &released;
                async move {
                    if self.release(&id, revision).await == Ok(Release::Released) {
                        released.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        let _ = tokio::time::timeout(self.timeout, releases).await;
        released.into_inner()
    }

    /// Who owns `server_id` right now (a phone's registration: which instance to ask).
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] or a NATS error.
    pub async fn lookup(&self, server_id: &str) -> Result<Lookup, ClusterError> {
        let operation = || async {
            let key = key_of(server_id);
            let Some((Some(owner), revision)) = self.read(&key).await? else {
                return Ok(Lookup::Free);
            };
            if self.liveness.owner().as_ref() == Some(&owner) {
                return Ok(Lookup::Ours(revision));
            }
            if self.liveness.is_alive(&owner).await? {
                Ok(Lookup::Owner { owner, revision })
            } else {
                Ok(Lookup::Free)
            }
        };
        let result = bounded(self.timeout, retrying(operation)).await;
        self.count(RequestKind::Lookup, &result);
        result
    }

    /// The live entry under `key`: `None` if there is none (or a delete/purge marker), else its
    /// owner (`None` if the value is not one) and revision.
    async fn read(&self, key: &str) -> Result<Option<(Option<Owner>, Revision)>, ClusterError> {
        let entry = self.store.entry(key).await.map_err(ClusterError::nats)?;
        Ok(entry
            .filter(|entry| entry.operation == Operation::Put)
            .map(|entry| (Owner::decode(&entry.value), Revision(entry.revision))))
    }

    fn count<T>(&self, kind: RequestKind, result: &Result<T, ClusterError>) {
        let outcome = match result {
            Ok(_) => RequestOutcome::Answered,
            Err(ClusterError::TimedOut) => RequestOutcome::TimedOut,
            Err(_) => RequestOutcome::Failed,
        };
        self.metrics.request(kind, outcome);
    }
}
