//! [`Liveness`]: one entry per instance in a KV bucket with a per-key TTL (the lease), refreshed
//! well inside it; a watch that tells every instance at once when another one's entry expires
//! or is deleted; and the self-fencing rule that makes sure no two instances ever serve one id.
//!
//! # The lease
//!
//! Each instance keeps the key `<instance-id>` in the bucket [`LIVENESS_BUCKET`], whose value
//! is its [`Owner`] (instance and [`Incarnation`]). Every write carries a per-message TTL of
//! one lease `L` (`Nats-TTL`, whole seconds; `--cluster-lease`, default 30 s), and the bucket
//! has *limit markers* on, so when the TTL runs out the server removes the entry and writes a
//! marker that every watcher sees at once as a `Purge` (measured on nats-server 2.15: a 2 s
//! TTL was seen expiring after 2001 ms). A graceful [`shutdown`](Liveness::shutdown) purges the
//! entry itself, so the others learn it just as fast, without waiting for the TTL.
//!
//! The entry is refreshed every `R = min(L/4, 5 s)` by a write that is a compare-and-set on
//! the entry's own last revision, each attempt bounded by `min(R, 1 s)`; a failed attempt is
//! retried `min(R/2, 500 ms)` after it started ([`LeaseTiming`]). If the write is refused, the
//! instance reads its entry back: a write that timed out may have been stored after all (its
//! acknowledgement lost), which moved the revision on — if the entry still holds this
//! instance's value, the refresh goes on from its revision; if it does not, the entry was
//! expired or replaced behind this instance's back, others may already treat it as dead, and
//! the instance fences itself at once (below).
//!
//! # Fencing: told before anyone may take over
//!
//! Other instances consider this one's ids free only once its entry is gone: they read the
//! liveness entry (or see its `Purge`) before they move an id by compare-and-set. The server
//! removes the entry no earlier than `L` after it *stored* the last refresh; the server stored
//! it after this instance *sent* it. So, measuring on this instance's own monotonic clock from
//! the moment it sent the last refresh that was acknowledged (`t_sent`), nobody can take its
//! ids before `t_sent + L`. (A write whose acknowledgement was lost only ever stores later,
//! so it can only postpone the expiry: `t_sent` stays the last *acknowledged* send.)
//!
//! This instance declares its lease lost at `t_sent + L - M`, with a margin
//! `M = min(L/5, 2 s)`: [`holds_lease`](Liveness::holds_lease) turns false at that instant (it
//! compares the clock with the deadline itself, so it is right even if the refresher task has
//! not run), and [`state`](Liveness::state) turns [`LeaseState::Fenced`] — the relay then
//! closes every connection it holds with 1012 and stops delivering. `M` covers what separates
//! the two clocks' measurements: the rate difference of two monotonic clocks (well under
//! 0.1 %, i.e. under 30 ms of a 30 s lease), the time the relay needs to act on the fence
//! (closing is a non-blocking enqueue per connection), and scheduling delay of the timer. No
//! wall clocks are compared anywhere, so clock offsets between machines do not matter.
//!
//! # Sized for a JetStream election
//!
//! With `--cluster-replicas 3`, losing the NATS node that leads the liveness bucket's stream
//! stops every write to it until JetStream has elected a new leader (meanwhile the client is
//! told "no responders" at once, or its request times out). Measured on nats-server 2.15.1
//! (three nodes, two cores under load, 80 elections): a write gap of 4.05 s at least, 5.6 s
//! median, 7.9 s at the 90th percentile, 14.8 s at most (one election that took two rounds).
//! The default `L = 30 s` gives `R = 5 s`, `M = 2 s`: the fence is 28 s after the last
//! acknowledged send. The leader may die just before a refresh was due (up to `R` after that
//! send); once it is elected, the next attempt starts within 500 ms and is answered in
//! milliseconds; so a write gap of up to `L - M - R - 500 ms - 1 s`, 21.5 s, never fences
//! anyone — 1.45 times the longest election measured, almost four times the median. Losing
//! the JetStream meta leader or a node leading nothing causes no write gap at all.
//!
//! A refresh is due every `R` and a failed one is retried twice a second, so a single slow or
//! refused attempt never fences an instance. Once fenced, the instance keeps trying and, as
//! soon as NATS answers, announces itself again under a **new incarnation**: directory entries
//! name their owner with its incarnation, so everything it owned before the fence stays free
//! even though the instance id is alive again.
//!
//! # What the others learn, and when
//!
//! An instance that dies last refreshed at most `R` before; its entry expires `L` after that
//! refresh, and every other instance's watcher sees the `Purge` then: within `L + R` of the
//! death (35 s by default), each one is told [`PeerEvent::Lost`] and closes the links it had
//! with the dead instance. The watch is a JetStream ordered consumer, which async-nats makes
//! again by itself when it is lost (its node died, heartbeats stopped), resuming after the last
//! entry it delivered; while the JetStream meta leader is elected that takes 5–7 s (measured),
//! which only delays such news.

use super::bucket::open_bucket;
use super::connection::Nats;
use super::deadline::FenceDeadline;
use super::error::{ClusterError, bounded};
use super::instance::{Incarnation, InstanceId, Owner};
use async_nats::header::{NATS_EXPECTED_LAST_SUBJECT_SEQUENCE, NATS_MESSAGE_TTL};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::kv::{self, Operation};
use async_nats::{HeaderMap, HeaderValue};
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// The bucket holding one liveness entry per instance.
pub const LIVENESS_BUCKET: &str = "relay_liveness";

/// The default lease (`--cluster-lease`): long enough that a JetStream leader election never
/// fences an instance (see the module docs, "Sized for a JetStream election").
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Whether this instance holds its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseState {
    /// Held, as this owner: the instance may serve and own ids.
    Held(Owner),
    /// Lost: the instance must have closed everything it holds (1012) and must not serve until
    /// it holds a lease again (under a new incarnation).
    Fenced,
}

/// What the liveness watch tells about *other* instances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerEvent {
    /// An instance announced itself (a new instance, or a new incarnation of one).
    Alive(Owner),
    /// An instance's lease ended (expired, purged at shutdown, or replaced by a new
    /// incarnation): everything it owned is free, every link with it is lost.
    Lost(Owner),
}

/// The lease's timing, derived from its length `L`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseTiming {
    /// `L`: the TTL of each liveness write.
    pub lease: Duration,
    /// `R = min(L/4, 5 s)`: how often the entry is refreshed.
    pub refresh: Duration,
    /// `M = min(L/5, 2 s)`: how long before the earliest possible expiry this instance fences
    /// itself.
    pub margin: Duration,
    /// `min(R, 1 s)`: the time limit of each refresh attempt (one JetStream publish).
    pub attempt: Duration,
    /// `min(R/2, 500 ms)`: how soon after a failed attempt started the next one starts.
    pub retry: Duration,
}

impl LeaseTiming {
    /// The timing of a lease of `lease`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] unless `lease` is a whole number of seconds, at least 1
    /// (the server's TTL granularity).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_cluster::liveness::LeaseTiming;
    /// use std::time::Duration;
    ///
    /// let timing = LeaseTiming::new(Duration::from_secs(30))?;
    /// assert_eq!(timing.refresh, Duration::from_secs(5));
    /// assert_eq!(timing.margin, Duration::from_secs(2));
    /// assert_eq!(timing.attempt, Duration::from_secs(1));
    /// assert_eq!(timing.retry, Duration::from_millis(500));
    /// let short = LeaseTiming::new(Duration::from_secs(2))?;
    /// assert_eq!(short.refresh, Duration::from_millis(500));
    /// assert_eq!(short.margin, Duration::from_millis(400));
    /// assert!(LeaseTiming::new(Duration::from_millis(1500)).is_err());
    /// # Ok::<(), relay_cluster::ClusterError>(())
    /// ```
    pub fn new(lease: Duration) -> Result<Self, ClusterError> {
        if lease < Duration::from_secs(1) || lease.subsec_nanos() != 0 {
            return Err(ClusterError::Config(format!(
                "the cluster lease must be a whole number of seconds, at least 1s; got {lease:?}"
            )));
        }
        let refresh = (lease / 4).min(Duration::from_secs(5));
        Ok(LeaseTiming {
            lease,
            refresh,
            margin: (lease / 5).min(Duration::from_secs(2)),
            attempt: refresh.min(Duration::from_secs(1)),
            retry: (refresh / 2).min(Duration::from_millis(500)),
        })
    }
}

/// This instance's liveness: its lease, and the watch on everyone else's.
///
/// Dropping it stops refreshing without deleting the entry (it then expires after one lease,
/// as a crash would); [`shutdown`](Self::shutdown) deletes it at once.
pub struct Liveness {
    shared: Arc<Shared>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

struct Shared {
    store: kv::Store,
    nats: Nats,
    me: InstanceId,
    timing: LeaseTiming,
    /// While held: when this instance must consider its lease lost (`t_sent + L - M`).
    deadline: Mutex<Option<Instant>>,
    /// `deadline`, readable without a lock (see [`Liveness::within_lease`]).
    fast_deadline: FenceDeadline,
    state: watch::Sender<LeaseState>,
    /// The revision of our latest acknowledged write.
    revision: Mutex<u64>,
    peers: Mutex<HashMap<InstanceId, Incarnation>>,
    events: broadcast::Sender<PeerEvent>,
    /// Wakes the refresher when the watcher saw our own entry vanish.
    wake: Notify,
}

impl Liveness {
    /// Announces `me` with a fresh incarnation and starts refreshing and watching.
    ///
    /// Returns once the first announcement is acknowledged: the lease is held
    /// ([`LeaseState::Held`]) and the watch on other instances runs.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] for an unusable `lease` (see [`LeaseTiming::new`]); a NATS error
    /// or [`ClusterError::TimedOut`] (after one refresh interval) if the bucket cannot be
    /// opened or the announcement is not acknowledged; [`ClusterError::Config`] if the bucket
    /// exists with settings JetStream cannot change (the message says which; settings it can
    /// change, replicas included, are updated to [`Nats::bucket_replicas`] and this crate's).
    pub async fn start(nats: &Nats, me: InstanceId, lease: Duration) -> Result<Self, ClusterError> {
        let timing = LeaseTiming::new(lease)?;
        let store = bounded(timing.lease, open_bucket(nats, LIVENESS_BUCKET)).await?;
        let (state, _) = watch::channel(LeaseState::Fenced);
        let (events, _) = broadcast::channel(256);
        let shared = Arc::new(Shared {
            store,
            nats: nats.clone(),
            me,
            timing,
            deadline: Mutex::new(None),
            fast_deadline: FenceDeadline::new(),
            state,
            revision: Mutex::new(0),
            peers: Mutex::new(HashMap::new()),
            events,
            wake: Notify::new(),
        });
        shared.announce().await?;
        let watcher = shared.clone().start_watching().await?;
        let refresher = tokio::spawn(shared.clone().refresh_loop());
        Ok(Liveness {
            shared,
            tasks: Mutex::new(vec![refresher, watcher]),
        })
    }

    /// This instance's id.
    pub fn instance(&self) -> &InstanceId {
        &self.shared.me
    }

    /// The lease's timing.
    pub fn timing(&self) -> LeaseTiming {
        self.shared.timing
    }

    /// Whether this instance may serve right now: its lease is held and its fence deadline has
    /// not passed. Checks the clock itself, so it turns false at the deadline even before the
    /// refresher task has run.
    pub fn holds_lease(&self) -> bool {
        self.shared.current_owner().is_some()
    }

    /// The per-frame check: whether the fence deadline is still ahead on the monotonic clock —
    /// [`holds_lease`](Self::holds_lease) without a lock or an allocation (one atomic load and
    /// one clock read, see [`FenceDeadline`]). The relay makes it on every delivery path and
    /// fences at once when it is false, whether or not the refresher task has run (a stopped
    /// process, a starved runtime: see [`deadline`](crate::deadline)).
    #[inline]
    pub fn within_lease(&self) -> bool {
        self.shared.fast_deadline.is_ahead()
    }

    /// The lease's epoch: how many times this instance fenced so far (see
    /// [`FenceDeadline::epoch`]). A connection or link made under one epoch must not deliver in
    /// a later one — after a fence, a new incarnation's lease does not make its frames current.
    pub fn lease_epoch(&self) -> u64 {
        self.shared.fast_deadline.epoch()
    }

    /// [`within_lease`](Self::within_lease), and no fence since `epoch` (the
    /// [`lease_epoch`](Self::lease_epoch) under which what delivers was made): the check the
    /// relay makes per frame. A process stopped past its deadline may, once resumed, re-announce
    /// itself under a new incarnation before its other tasks run; this stays false for
    /// everything made before that.
    #[inline]
    pub fn within_lease_since(&self, epoch: u64) -> bool {
        self.shared.fast_deadline.is_ahead_since(epoch)
    }

    /// The fence deadline while the lease is held (it may have passed already: see
    /// [`within_lease`](Self::within_lease)); `None` once fenced.
    pub fn fence_deadline(&self) -> Option<Instant> {
        *self.shared.deadline.lock()
    }

    /// The owner to write into directory entries: `Some` exactly when
    /// [`holds_lease`](Self::holds_lease).
    pub fn owner(&self) -> Option<Owner> {
        self.shared.current_owner()
    }

    /// The lease state as a watch: [`LeaseState::Fenced`] is sent at the fence deadline (or as
    /// soon as the entry is seen gone), [`LeaseState::Held`] again once re-announced. A watch
    /// keeps only the latest value, so a receiver may see `Held(old)` turn straight into
    /// `Held(new)`: a change of incarnation means the lease was lost in between, and must be
    /// handled as a fence.
    pub fn state(&self) -> watch::Receiver<LeaseState> {
        self.shared.state.subscribe()
    }

    /// Events about other instances from now on. A receiver that lags (more than 256 unread
    /// events) gets `RecvError::Lagged` and should compare [`live_peers`](Self::live_peers)
    /// with what it knows.
    pub fn peers(&self) -> broadcast::Receiver<PeerEvent> {
        self.shared.events.subscribe()
    }

    /// The other instances this one currently believes alive.
    pub fn live_peers(&self) -> Vec<Owner> {
        let peers = self.shared.peers.lock();
        peers
            .iter()
            .map(|(instance, &incarnation)| Owner {
                instance: instance.clone(),
                incarnation,
            })
            .collect()
    }

    /// Whether `owner` (in that incarnation) holds its lease, read from the bucket itself —
    /// the authoritative check before an id is taken from it. This instance counts as alive
    /// only while [`holds_lease`](Self::holds_lease).
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] after one refresh interval, or a NATS error.
    pub async fn is_alive(&self, owner: &Owner) -> Result<bool, ClusterError> {
        if owner.instance == self.shared.me {
            return Ok(self.owner().as_ref() == Some(owner));
        }
        let store = &self.shared.store;
        let read = async {
            let entry = store
                .entry(owner.instance.as_str())
                .await
                .map_err(ClusterError::nats)?;
            Ok(entry.is_some_and(|entry| {
                entry.operation == Operation::Put
                    && Owner::decode(&entry.value).as_ref() == Some(owner)
            }))
        };
        bounded(self.shared.timing.refresh, read).await
    }

    /// Graceful shutdown: stops refreshing and watching, fences (for good: the lease is never
    /// held again), and deletes this instance's entry if it is still ours, so every other
    /// instance sees it gone at once and its ids are free — not one lease later.
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] after one refresh interval, or a NATS error; the entry then
    /// expires on its own within one lease.
    pub async fn shutdown(&self) -> Result<(), ClusterError> {
        for task in self.tasks.lock().drain(..) {
            task.abort();
        }
        let shared = &self.shared;
        shared.fence();
        let revision = *shared.revision.lock();
        let purge = async {
            shared
                .store
                .purge_expect_revision(shared.me.as_str(), Some(revision))
                .await
                .map_err(ClusterError::nats)
        };
        bounded(shared.timing.refresh, purge).await
    }
}

impl Drop for Liveness {
    fn drop(&mut self) {
        for task in self.tasks.get_mut().drain(..) {
            task.abort();
        }
    }
}

impl Shared {
    fn current_owner(&self) -> Option<Owner> {
        let deadline = *self.deadline.lock();
        if deadline.is_none_or(|deadline| Instant::now() >= deadline) {
            return None;
        }
        match &*self.state.borrow() {
            LeaseState::Held(owner) => Some(owner.clone()),
            LeaseState::Fenced => None,
        }
    }

    /// Copies `deadline` into `fast_deadline`, under its lock: whatever order two writers of
    /// `deadline` run in, the last copy is of the last value.
    fn mirror_deadline(&self) {
        let deadline = self.deadline.lock();
        self.fast_deadline.set(*deadline);
    }

    /// Declares the lease lost (idempotent).
    fn fence(&self) {
        *self.deadline.lock() = None;
        self.mirror_deadline();
        self.state.send_if_modified(|state| {
            let was_held = matches!(state, LeaseState::Held(_));
            *state = LeaseState::Fenced;
            was_held
        });
    }

    /// One write of our entry with the lease as its TTL: a compare-and-set on `expected` if
    /// given. Returns the new revision.
    async fn write(&self, owner: &Owner, expected: Option<u64>) -> Result<u64, WriteError> {
        let mut headers = HeaderMap::new();
        headers.insert(
            NATS_MESSAGE_TTL,
            HeaderValue::from(self.timing.lease.as_secs()),
        );
        if let Some(revision) = expected {
            headers.insert(
                NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                HeaderValue::from(revision),
            );
        }
        // The KV API has no "update with a TTL"; this is the same JetStream publish it makes,
        // on the key's own subject, with the TTL header added.
        let prefix = self.store.put_prefix.as_ref().unwrap_or(&self.store.prefix);
        let subject = format!("{prefix}{}", self.me);
        let publish = async {
            let ack = self
                .nats
                .jetstream()
                .publish_with_headers(subject, headers, owner.encode().into())
                .await
                .map_err(|error| WriteError::from_kind(error.kind(), error))?
                .await
                .map_err(|error| WriteError::from_kind(error.kind(), error))?;
            Ok(ack.sequence)
        };
        tokio::time::timeout(self.timing.attempt, publish)
            .await
            .unwrap_or(Err(WriteError::Failed))
    }

    /// Announces a fresh incarnation (overwriting whatever entry we had) and holds the lease.
    async fn announce(&self) -> Result<(), ClusterError> {
        let owner = Owner {
            instance: self.me.clone(),
            incarnation: Incarnation::random(),
        };
        let sent = Instant::now();
        match self.write(&owner, None).await {
            Ok(revision) => {
                self.held(owner, revision, sent);
                Ok(())
            }
            Err(_) => Err(ClusterError::TimedOut),
        }
    }

    /// Reads our entry back after a refused compare-and-set: is it still `owner`'s?
    async fn read_back(&self, owner: &Owner) -> ReadBack {
        let read = tokio::time::timeout(self.timing.attempt, self.store.entry(self.me.as_str()));
        match read.await {
            Ok(Ok(Some(entry)))
                if entry.operation == Operation::Put
                    && Owner::decode(&entry.value).as_ref() == Some(owner) =>
            {
                ReadBack::Ours(entry.revision)
            }
            Ok(Ok(_)) => ReadBack::NotOurs,
            _ => ReadBack::Unknown,
        }
    }

    fn held(&self, owner: Owner, revision: u64, sent: Instant) {
        *self.revision.lock() = revision;
        *self.deadline.lock() = Some(sent + self.timing.lease - self.timing.margin);
        self.mirror_deadline();
        self.state.send_if_modified(|state| {
            let changed = *state != LeaseState::Held(owner.clone());
            *state = LeaseState::Held(owner);
            changed
        });
    }

    /// Refreshes every `R`; fences at the deadline; re-announces once fenced.
    async fn refresh_loop(self: Arc<Self>) {
        let mut next = Instant::now() + self.timing.refresh;
        loop {
            let deadline = *self.deadline.lock();
            tokio::select! {
                _ = tokio::time::sleep_until(next) => {}
                _ = sleep_until_some(deadline) => {
                    tracing::warn!(instance = %self.me, "cluster lease lost: could not refresh it in time");
                    self.fence();
                    continue;
                }
                _ = self.wake.notified() => {}
            }
            let owner = self.current_owner();
            let attempt = Instant::now();
            let retry = attempt + self.timing.retry;
            match owner {
                Some(owner) => {
                    let expected = *self.revision.lock();
                    let refresh = self.write(&owner, Some(expected));
                    // A refresh still in flight at the deadline does not postpone the fence.
                    let result = tokio::select! {
                        result = refresh => result,
                        _ = sleep_until_some(deadline) => Err(WriteError::Failed),
                    };
                    match result {
                        Ok(revision) => {
                            self.held(owner, revision, attempt);
                            next = attempt + self.timing.refresh;
                        }
                        Err(WriteError::Replaced) => match self.read_back(&owner).await {
                            // An earlier write whose acknowledgement was lost was stored: go on
                            // from its revision (the deadline stays that of the last
                            // acknowledged send).
                            ReadBack::Ours(revision) => {
                                tracing::info!(instance = %self.me, "a liveness write that timed out was stored: refreshing from it");
                                *self.revision.lock() = revision;
                                next = Instant::now();
                            }
                            ReadBack::NotOurs => {
                                tracing::warn!(instance = %self.me, "cluster lease lost: our liveness entry expired or was replaced");
                                self.fence();
                                next = Instant::now();
                            }
                            ReadBack::Unknown => next = retry,
                        },
                        Err(WriteError::Failed) => next = retry,
                    }
                }
                None => {
                    self.fence();
                    match self.announce().await {
                        Ok(()) => {
                            tracing::info!(instance = %self.me, "cluster lease held again, under a new incarnation");
                            next = attempt + self.timing.refresh;
                        }
                        Err(_) => next = retry,
                    }
                }
            }
        }
    }

    /// Creates the watch (its initial replay fills the peer map) and spawns its task.
    async fn start_watching(self: Arc<Self>) -> Result<JoinHandle<()>, ClusterError> {
        // The replay of the current entries is done when the entry with nothing pending after
        // it arrives; our own entry is there, so one always does. Until then `live_peers` would
        // be incomplete: wait for it.
        let replay = async {
            let mut watch = self
                .store
                .watch_with_history(">")
                .await
                .map_err(ClusterError::nats)?;
            loop {
                match watch.next().await {
                    Some(Ok(entry)) => {
                        let current = entry.seen_current;
                        self.observe(entry);
                        if current {
                            return Ok(watch);
                        }
                    }
                    Some(Err(error)) => return Err(ClusterError::nats(error)),
                    None => return Err(ClusterError::Nats("the liveness watch ended".into())),
                }
            }
        };
        let watch = bounded(self.timing.lease, replay).await?;
        Ok(tokio::spawn(self.watch_loop(watch)))
    }

    async fn watch_loop(self: Arc<Self>, mut watch: kv::Watch) {
        loop {
            while let Some(entry) = watch.next().await {
                tracing::trace!(?entry, "liveness watch");
                match entry {
                    Ok(entry) => self.observe(entry),
                    Err(error) => tracing::debug!(%error, "liveness watch error"),
                }
            }
            // The watch ended (async-nats makes a lost consumer again by itself, so this is rare):
            // make a new one and check every peer we believed alive, since their markers may be
            // gone by now.
            loop {
                tokio::time::sleep(self.timing.retry).await;
                if let Ok(Ok(new)) =
                    tokio::time::timeout(self.timing.refresh, self.store.watch_with_history(">"))
                        .await
                {
                    watch = new;
                    break;
                }
            }
            self.recheck_peers().await;
        }
    }

    async fn recheck_peers(&self) {
        let known: Vec<(InstanceId, Incarnation)> = self
            .peers
            .lock()
            .iter()
            .map(|(i, n)| (i.clone(), *n))
            .collect();
        for (instance, incarnation) in known {
            let owner = Owner {
                instance: instance.clone(),
                incarnation,
            };
            let read =
                tokio::time::timeout(self.timing.refresh, self.store.entry(instance.as_str()));
            if let Ok(Ok(entry)) = read.await {
                let alive = entry.is_some_and(|entry| {
                    entry.operation == Operation::Put
                        && Owner::decode(&entry.value).as_ref() == Some(&owner)
                });
                if !alive {
                    self.lost(&instance, incarnation);
                }
            }
        }
    }

    fn observe(&self, entry: kv::Entry) {
        let Ok(instance) = InstanceId::new(entry.key.as_str()) else {
            return;
        };
        if instance == self.me {
            // Our own entry vanished after our latest write: others now see us dead.
            let ours = *self.revision.lock();
            if entry.operation != Operation::Put && entry.revision > ours {
                tracing::warn!(instance = %self.me, "cluster lease lost: our liveness entry expired");
                self.fence();
                self.wake.notify_one();
            }
            return;
        }
        match entry.operation {
            Operation::Put => {
                let Some(owner) = Owner::decode(&entry.value) else {
                    return;
                };
                let previous = self.peers.lock().insert(instance, owner.incarnation);
                if previous != Some(owner.incarnation) {
                    if let Some(old) = previous {
                        let _ = self.events.send(PeerEvent::Lost(Owner {
                            instance: owner.instance.clone(),
                            incarnation: old,
                        }));
                    }
                    let _ = self.events.send(PeerEvent::Alive(owner));
                }
            }
            Operation::Delete | Operation::Purge => {
                let known = self.peers.lock().get(&instance).copied();
                if let Some(incarnation) = known {
                    self.lost(&instance, incarnation);
                }
            }
        }
    }

    /// Forgets `instance` in `incarnation` (if that is still the one we know) and tells it.
    fn lost(&self, instance: &InstanceId, incarnation: Incarnation) {
        let removed = {
            let mut peers = self.peers.lock();
            if peers.get(instance) == Some(&incarnation) {
                peers.remove(instance);
                true
            } else {
                false
            }
        };
        if removed {
            let _ = self.events.send(PeerEvent::Lost(Owner {
                instance: instance.clone(),
                incarnation,
            }));
        }
    }
}

/// What reading our entry back found.
enum ReadBack {
    /// It still holds our value, at this revision.
    Ours(u64),
    /// It is gone or holds something else: the lease is lost.
    NotOurs,
    /// No answer: try again.
    Unknown,
}

/// Why a liveness write failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteError {
    /// The compare-and-set was refused: our entry is not the latest any more.
    Replaced,
    /// No acknowledgement (timeout, disconnected, other failure): try again.
    Failed,
}

impl WriteError {
    fn from_kind(kind: PublishErrorKind, error: impl std::fmt::Display) -> Self {
        if kind == PublishErrorKind::WrongLastSequence {
            WriteError::Replaced
        } else {
            tracing::debug!(%error, "liveness write failed");
            WriteError::Failed
        }
    }
}

/// Sleeps until `deadline`, or for ever when there is none.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
