//! `Registry`: the handle through which binaries claim server-ids and phones join them.

use crate::changes::DeadlineChanges;
use crate::claim::ServerClaim;
use crate::config::Config;
use crate::conn::Conn;
use crate::counts::Counts;
use crate::error::RegistryError;
use crate::expiry::Expiries;
use crate::phone_list::{find, fingerprint};
use crate::phones::Phones;
use crate::shared::Shared;
use crate::state::{Claimant, State};
use crate::tenure::Tenure;
use crate::ticket::PhoneTicket;
use std::fmt;
use std::sync::Arc;
use std::time::Instant;

/// The registry of server-ids: at most one binary per id, any number of phones under it.
///
/// A `Registry` is a handle: it holds an `Arc` of the shared state, so [`Clone`] is cheap and every
/// clone sees the same registry. It is `Send + Sync`; every method takes `&self` and is
/// linearizable (each takes effect atomically at one point between its call and its return), with
/// one short internal critical section. See the [crate docs](crate) for the model.
///
/// # Examples
///
/// ```
/// # use relay_registry::{CloseReason, Conn};
/// # struct Ws(&'static str);
/// # impl Conn for Ws {
/// #     fn conn_id(&self) -> &str { self.0 }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// use relay_registry::{Counts, Registry, RegistryError};
/// use std::sync::Arc;
///
/// let registry = Registry::new();
/// let claim = registry.claim_server("srv-1", Arc::new(Ws("bin")))?;
/// assert_eq!(
///     registry.claim_server("srv-1", Arc::new(Ws("other"))).unwrap_err(),
///     RegistryError::ServerIdConflict,
/// );
/// let ticket = registry.register_phone("srv-1", Arc::new(Ws("phone-1")))?;
/// assert_eq!(registry.counts(), Counts { binaries: 1, gracing: 0, phones: 1 });
/// drop(claim); // releases the id and evicts the phone
/// assert!(!ticket.is_registered());
/// # Ok::<(), RegistryError>(())
/// ```
pub struct Registry<C: Conn> {
    pub(crate) shared: Arc<Shared<C>>,
}

impl<C: Conn> Registry<C> {
    /// An empty registry with the default [`Config`]: no phone cap, ids up to 256 bytes, the
    /// system clock.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Counts, Registry};
    ///
    /// let registry = Registry::<Ws>::new();
    /// assert_eq!(registry.counts(), Counts::default());
    /// ```
    pub fn new() -> Self {
        Self::with_config(Config::default())
    }

    /// An empty registry with `config`.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Config, Registry, RegistryError};
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::with_config(Config::default().with_max_phones_per_server(1));
    /// let _claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let _first = registry.register_phone("srv", Arc::new(Ws("p1")))?;
    /// assert_eq!(
    ///     registry.register_phone("srv", Arc::new(Ws("p2"))).unwrap_err(),
    ///     RegistryError::PhonesAtCap,
    /// );
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn with_config(config: Config) -> Self {
        Registry {
            shared: Arc::new(Shared::new(config)),
        }
    }

    /// The configuration this registry was built with.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Config, Registry};
    ///
    /// let registry = Registry::<Ws>::with_config(Config::default().with_max_server_id_len(64));
    /// assert_eq!(registry.config().max_server_id_len(), 64);
    /// ```
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Runs the lookup `f` under the lock, or answers "nothing" (`R::default()`) for an invalid
    /// id without hashing it or taking the lock.
    fn lookup<R: Default>(&self, server_id: &str, f: impl FnOnce(&mut State<C>) -> R) -> R {
        if self.shared.config.valid_id(server_id) {
            self.shared.locked(f)
        } else {
            R::default()
        }
    }

    /// Checks `server_id` exactly as [`claim_server`](Self::claim_server) and
    /// [`register_phone`](Self::register_phone) will: non-empty and at most
    /// [`max_server_id_len`](Config::max_server_id_len) bytes. Takes no lock.
    ///
    /// A relay calls this on the `X-Pyrycode-Server` header before the WebSocket upgrade, to
    /// answer an invalid id with HTTP 400 instead of upgrading.
    ///
    /// # Errors
    ///
    /// [`InvalidServerId`](RegistryError::InvalidServerId) if the id is empty or too long.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws;
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { "ws" }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Registry, RegistryError};
    ///
    /// let registry = Registry::<Ws>::new();
    /// assert_eq!(registry.check_server_id("desk-1"), Ok(()));
    /// assert_eq!(registry.check_server_id(""), Err(RegistryError::InvalidServerId));
    /// assert_eq!(registry.check_server_id(&"x".repeat(257)), Err(RegistryError::InvalidServerId));
    /// ```
    pub fn check_server_id(&self, server_id: &str) -> Result<(), RegistryError> {
        self.shared.config.check_server_id(server_id)
    }

    /// Claims `server_id` for the binary `conn`: first claim wins.
    ///
    /// If the id is free, it is installed. If the id is in a grace window (its binary released it
    /// with [`release_after`](ServerClaim::release_after)), this is a **reclaim**: the new binary is
    /// installed, the window is cancelled, and every phone of the id is evicted — removed before
    /// this returns and closed with [`CloseReason::Reclaimed`](crate::CloseReason::Reclaimed) on this thread, after the lock.
    ///
    /// # Errors
    ///
    /// [`ServerIdConflict`](RegistryError::ServerIdConflict) if a live binary holds the id,
    /// [`InvalidServerId`](RegistryError::InvalidServerId) if the id is empty or too long. A
    /// refused `conn` is neither closed nor kept.
    ///
    /// # Panics
    ///
    /// Only by resuming a panic of user code it ran — an evicted phone's [`Conn::close`], or the
    /// `Drop` of a conn it let go of (the replaced binary, a refused conn) — after every close
    /// ran. The registry is then as if the new claim had been dropped at once: a refused claim
    /// changed nothing; a reclaim stays done (the old tenure ended, its phones evicted and
    /// closed) and the new claim was released while unwinding, so the id is free.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::Registry;
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::new();
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// // First claim wins; a refusal is closed after the upgrade with the error's code.
    /// let refused = registry.claim_server("srv", Arc::new(Ws("other"))).unwrap_err();
    /// assert_eq!(CloseReason::try_from(refused).map(|close| close.code()), Ok(4409));
    /// // Released into a grace window, the id can be reclaimed.
    /// claim.release_after(std::time::Duration::from_secs(30));
    /// let reclaim = registry.claim_server("srv", Arc::new(Ws("bin-again")))?;
    /// assert!(reclaim.replaced());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn claim_server(
        &self,
        server_id: &str,
        conn: Arc<C>,
    ) -> Result<ServerClaim<C>, RegistryError> {
        self.install(server_id, conn, Claimant::First)
    }

    /// Takes `server_id` over from exactly `incumbent`, e.g. after the incumbent binary failed a
    /// heartbeat probe.
    ///
    /// Succeeds if the id is free and `incumbent` is `None`, or if the id (live or gracing) is held
    /// by exactly `incumbent` (the same `Arc`, compared with [`Arc::ptr_eq`]). On success it acts
    /// like a reclaim: the old claim goes stale (its drop no longer does anything) and every phone
    /// is evicted with [`CloseReason::Reclaimed`](crate::CloseReason::Reclaimed). The registry does not close the incumbent; the
    /// caller does, with the code it chooses.
    ///
    /// # Errors
    ///
    /// [`ServerIdConflict`](RegistryError::ServerIdConflict) if the id is held by anyone else, or
    /// by someone while `incumbent` is `None`, or by no one while `incumbent` is `Some`: the holder
    /// changed since the caller looked, and nothing is changed.
    /// [`InvalidServerId`](RegistryError::InvalidServerId) as for
    /// [`claim_server`](Self::claim_server).
    ///
    /// # Panics
    ///
    /// As [`claim_server`](Self::claim_server): only by resuming a panic of an evicted phone's
    /// [`Conn::close`] or of a let-go conn's `Drop`, after every close ran; the takeover stays
    /// done (the old claim is stale) and the new claim was released while unwinding.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws;
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { "ws" }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::Registry;
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::new();
    /// let old = registry.claim_server("srv", Arc::new(Ws)).unwrap();
    /// let incumbent = registry.binary_for("srv").unwrap();
    /// // ... the incumbent did not answer a ping ...
    /// let new = registry.takeover_server("srv", Some(&incumbent), Arc::new(Ws)).unwrap();
    /// assert!(!old.is_current());
    /// drop(old); // stale: does not release the new binary's id
    /// assert!(new.is_current());
    /// ```
    pub fn takeover_server(
        &self,
        server_id: &str,
        incumbent: Option<&Arc<C>>,
        conn: Arc<C>,
    ) -> Result<ServerClaim<C>, RegistryError> {
        self.install(server_id, conn, Claimant::Incumbent(incumbent))
    }

    /// Ends the tenure of exactly `holder` over `server_id`, with no successor: as a takeover
    /// would, it evicts every phone of the id (closed with
    /// [`CloseReason::Reclaimed`](crate::CloseReason::Reclaimed) on this thread, before it
    /// returns), cancels the grace window if the tenure was in one, and makes the holder's claim
    /// stale; and the id is free at once. `holder` is compared by `Arc` identity
    /// ([`Arc::ptr_eq`]), as [`takeover_server`](Self::takeover_server) compares its incumbent.
    ///
    /// For a relay that learns another way that a binary's tenure is over — e.g. in a cluster,
    /// when the id's ownership moved to another instance — and must not leave its phones behind.
    ///
    /// Returns true if it ended the tenure; false (and nothing changes) if `holder` does not hold
    /// `server_id` (another binary does, no one does, or the id is invalid).
    ///
    /// # Panics
    ///
    /// Only by resuming a panic of user code it ran — a phone's [`Conn::close`], the `Drop` of a
    /// conn it let go of — once the tenure is ended and every close ran (printed to stderr
    /// instead while this thread is already panicking).
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Counts, Registry};
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::new();
    /// let binary = Arc::new(Ws("bin"));
    /// let claim = registry.claim_server("srv", binary.clone())?;
    /// let ticket = registry.register_phone("srv", Arc::new(Ws("phone")))?;
    /// // Only the named holder's tenure is ended:
    /// assert!(!registry.end_tenure("srv", &Arc::new(Ws("bin"))));
    /// assert!(registry.end_tenure("srv", &binary));
    /// assert!(!ticket.is_registered()); // evicted, and closed `Reclaimed`
    /// assert!(!claim.is_current()); // stale: dropping it changes nothing
    /// assert_eq!(registry.counts(), Counts::default());
    /// assert!(!registry.end_tenure("srv", &binary)); // already over
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn end_tenure(&self, server_id: &str, holder: &Arc<C>) -> bool {
        if self.check_server_id(server_id).is_err() {
            return false;
        }
        let (ended, caught) = self
            .shared
            .mutate(|state, out| state.end_holder(server_id, holder, out));
        caught.resume();
        ended
    }

    fn install(
        &self,
        server_id: &str,
        conn: Arc<C>,
        claimant: Claimant<'_, C>,
    ) -> Result<ServerClaim<C>, RegistryError> {
        self.check_server_id(server_id)?;
        #[cfg(relay_registry_broken_claim)]
        let claimant = self.broken_claim_check(server_id, claimant)?;
        // Allocated before the lock, so the critical section only links it in.
        let tenure = Arc::new(Tenure::new(server_id, conn));
        let (seat, caught) = self
            .shared
            .mutate(|state, out| state.claim(tenure, claimant, out));
        let claim = seat.map(|seat| ServerClaim::new(self.shared.clone(), seat));
        // A panic of an evicted phone's `close` (or of a removed conn's `Drop`) propagates only
        // now: unwinding drops the new claim, which releases the id it was just given.
        caught.resume();
        claim
    }

    /// Test-only, deliberately broken (`--cfg relay_registry_broken_claim`): checks a first claim
    /// under one lock acquisition and installs it under another, so that tests/linearizability.rs
    /// can show that it catches the race.
    #[cfg(relay_registry_broken_claim)]
    fn broken_claim_check<'a>(
        &self,
        server_id: &str,
        claimant: Claimant<'a, C>,
    ) -> Result<Claimant<'a, C>, RegistryError> {
        let Claimant::First = claimant else {
            return Ok(claimant);
        };
        if !self
            .shared
            .locked(|state| state.broken_claim_check(server_id))
        {
            return Err(RegistryError::ServerIdConflict);
        }
        std::thread::yield_now();
        Ok(Claimant::Unchecked)
    }

    /// Registers the phone `conn` under `server_id`, which a binary (live or gracing) must hold.
    ///
    /// `conn.conn_id()` is read once, before the lock, and a fingerprint of it kept (8 bytes, no
    /// allocation): [`phone_for`](Self::phone_for) finds the phone by it. Two phones with the
    /// same conn-id are both registered; their tickets tell them apart. The check (holder
    /// present, cap not reached) and the insertion are one atomic step.
    ///
    /// # Errors
    ///
    /// [`NoServer`](RegistryError::NoServer) if no binary holds the id,
    /// [`PhonesAtCap`](RegistryError::PhonesAtCap) if it has
    /// [`max_phones_per_server`](Config::max_phones_per_server) phones already,
    /// [`InvalidServerId`](RegistryError::InvalidServerId) if the id is empty or too long. A refused
    /// `conn` is neither closed nor kept.
    ///
    /// # Panics
    ///
    /// If `conn.conn_id()` panics (nothing was registered), or by resuming a panic of the `Drop`
    /// of a conn it let go of (a refused conn): the registry is then as if the call had not
    /// happened — a ticket made just before is dropped while unwinding, which unregisters it.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Registry, RegistryError};
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::new();
    /// assert_eq!(
    ///     registry.register_phone("srv", Arc::new(Ws("early"))).unwrap_err(),
    ///     RegistryError::NoServer,
    /// );
    /// let _claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let ticket = registry.register_phone("srv", Arc::new(Ws("phone")))?;
    /// assert_eq!(ticket.binary().map(|b| b.0), Some("bin"));
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn register_phone(
        &self,
        server_id: &str,
        conn: Arc<C>,
    ) -> Result<PhoneTicket<C>, RegistryError> {
        self.check_server_id(server_id)?;
        let print = fingerprint(conn.conn_id());
        let cap = self.shared.config.max_phones_per_server;
        let ticket_conn = conn.clone();
        let left = &self.shared.left;
        let (seat, caught) = self
            .shared
            .mutate(|state, out| state.register(server_id, conn, print, cap, left, out));
        let ticket = seat.map(|seat| PhoneTicket::new(seat, ticket_conn));
        // A panicking `Drop` of a removed conn propagates only now: unwinding drops the new
        // ticket, which unregisters the phone.
        caught.resume();
        ticket
    }

    /// The binary holding `server_id`, live or gracing; `None` if no one does (or the id is
    /// invalid).
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::Registry;
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let registry = Registry::new();
    /// assert!(registry.binary_for("srv").is_none());
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// claim.release_after(Duration::from_secs(30));
    /// assert_eq!(registry.binary_for("srv").map(|b| b.0), Some("bin")); // gracing: still held
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn binary_for(&self, server_id: &str) -> Option<Arc<C>> {
        self.lookup(server_id, |state| state.binary_for(server_id))
    }

    /// The phone registered under `server_id` with the conn-id `conn_id` (the first one, if two
    /// share it). Allocates nothing. Under the lock it compares the fingerprints of conn-ids kept
    /// at registration; then, with the lock released, it confirms the phone it found by calling
    /// its [`Conn::conn_id`] once (a fingerprint can collide: it then looks again past that
    /// phone). Phones are searched in the order [`Phones`] describes.
    ///
    /// # Panics
    ///
    /// If the found phone's `conn_id()` panics; no lock is held then, and nothing changed.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::Registry;
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::new();
    /// let _claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let _ticket = registry.register_phone("srv", Arc::new(Ws("client-1")))?;
    /// assert_eq!(registry.phone_for("srv", "client-1").map(|p| p.0), Some("client-1"));
    /// assert!(registry.phone_for("srv", "client-2").is_none());
    /// assert!(registry.phone_for("other", "client-1").is_none());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn phone_for(&self, server_id: &str, conn_id: &str) -> Option<Arc<C>> {
        find(conn_id, |print, from| {
            self.lookup(server_id, |state| {
                state.phone_candidate(server_id, print, from)
            })
        })
    }

    /// An owned snapshot of the phones under `server_id` (empty if none or no binary).
    ///
    /// When the phones have not changed since the last snapshot, this shares that snapshot: no
    /// allocation, one reference-count increment.
    ///
    /// # Examples
    ///
    /// See [`Phones`].
    pub fn phones_for(&self, server_id: &str) -> Phones<C> {
        self.lookup(server_id, |state| state.phones_for(server_id))
    }

    /// An owned list of every connection the registry holds: each binary (gracing ones too) and
    /// every phone, taken in one critical section. Its order is unspecified.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::Registry;
    /// use std::sync::Arc;
    ///
    /// let registry = Registry::new();
    /// let _claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let _ticket = registry.register_phone("srv", Arc::new(Ws("phone")))?;
    /// // E.g. on shutdown: close every connection (after taking the snapshot, with no lock held;
    /// // a relay closes with its own "shutting down" reason, here an application code).
    /// for conn in registry.snapshot() {
    ///     conn.close(CloseReason::custom(1000, "shutting down").unwrap());
    /// }
    /// assert_eq!(registry.snapshot().len(), 2);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn snapshot(&self) -> Vec<Arc<C>> {
        self.shared
            .locked(|state| state.snapshot(|| self.shared.left()))
    }

    /// The number of live binaries, gracing binaries and phones, read together in O(1) (one
    /// critical section, so the three belong to one moment).
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Counts, Registry};
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let registry = Registry::new();
    /// let claim = registry.claim_server("a", Arc::new(Ws("bin-a")))?;
    /// let _live = registry.claim_server("b", Arc::new(Ws("bin-b")))?;
    /// let _ticket = registry.register_phone("a", Arc::new(Ws("phone")))?;
    /// claim.release_after(Duration::from_secs(30));
    /// assert_eq!(registry.counts(), Counts { binaries: 1, gracing: 1, phones: 1 });
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn counts(&self) -> Counts {
        self.shared.locked(|state| state.counts(self.shared.left()))
    }

    /// Expires every grace window whose deadline is at or before the clock's `now()`: removes the
    /// binary and its phones and closes the phones with
    /// [`CloseReason::GraceExpired`](crate::CloseReason::GraceExpired) on this thread, after the
    /// lock. Returns what expired, earliest deadline first: each server-id (with or without
    /// phones), so that the caller can log and count it.
    ///
    /// The [`Reaper`](crate::Reaper) calls this at each deadline on its thread; an async relay
    /// calls it from a task of its runtime (see [`deadline_changes`](Self::deadline_changes));
    /// tests call it after advancing a [`ManualClock`](crate::ManualClock).
    ///
    /// Never panics because of user code: a panicking [`Conn::close`] (or a removed conn's `Drop`,
    /// or the clock's `now`) is caught, every other close still runs, and its message is in
    /// [`Expiries::panics`].
    ///
    /// # Examples
    ///
    /// See [`Expiries`].
    pub fn expire_due(&self) -> Expiries<C> {
        self.shared.expire_due().0
    }

    /// A subscription that resolves whenever the earliest grace deadline moves earlier: what an
    /// async relay needs to run [`expire_due`](Self::expire_due) from a task of its own runtime
    /// instead of a [`Reaper`](crate::Reaper) thread. See [`DeadlineChanges`].
    ///
    /// # Examples
    ///
    /// See [`DeadlineChanges`].
    pub fn deadline_changes(&self) -> DeadlineChanges {
        DeadlineChanges::new(self.shared.signal.clone())
    }

    /// The deadline of the earliest open grace window, if any (cancelled windows are ignored), on
    /// the registry's [`Clock`](crate::Clock).
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Clock, Config, ManualClock, Registry};
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let clock = ManualClock::new();
    /// let registry = Registry::with_config(Config::default().with_clock(Arc::new(clock.clone())));
    /// assert_eq!(registry.next_deadline(), None);
    /// registry.claim_server("srv", Arc::new(Ws("bin")))?.release_after(Duration::from_secs(30));
    /// assert_eq!(registry.next_deadline(), Some(clock.now() + Duration::from_secs(30)));
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn next_deadline(&self) -> Option<Instant> {
        self.shared.next_deadline()
    }

    /// Checks the registry's internal consistency: the id index, the server slots and their
    /// phone lists, the grace deadlines and the counters agree. For tests and fuzzing: only with
    /// the `test-util` cargo feature.
    ///
    /// # Errors
    ///
    /// A description of the first inconsistency found.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws(&'static str);
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { self.0 }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// // With `relay-registry = { version = "...", features = ["test-util"] }` in
    /// // `[dev-dependencies]`:
    /// let registry = relay_registry::Registry::<Ws>::new();
    /// assert_eq!(registry.check_invariants(), Ok(()));
    /// ```
    #[cfg(any(test, feature = "test-util"))]
    pub fn check_invariants(&self) -> Result<(), String> {
        let cap = self.shared.config.max_phones_per_server;
        self.shared
            .locked(|state| state.check_invariants(cap, || self.shared.left()))
    }
}

impl<C: Conn> Clone for Registry<C> {
    /// Another handle to the same registry.
    fn clone(&self) -> Self {
        Registry {
            shared: self.shared.clone(),
        }
    }
}

impl<C: Conn> Default for Registry<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Conn> fmt::Debug for Registry<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("counts", &self.counts())
            .field("config", &self.shared.config)
            .finish()
    }
}
