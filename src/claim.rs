//! `ServerClaim`: a binary's hold on its server-id, released when dropped.

use crate::clock::saturating_add;
use crate::conn::Conn;
use crate::keys::ServerKey;
use crate::phone_list::find;
use crate::phones::Phones;
use crate::shared::Shared;
use crate::state::Seat;
use crate::tenure::Tenure;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// A binary's hold on a server-id, returned by [`claim_server`](crate::Registry::claim_server) and
/// [`takeover_server`](crate::Registry::takeover_server).
///
/// Dropping it — or [`release`](Self::release), or [`release_after`](Self::release_after) for a
/// grace window — gives the id up. It holds no lock: it owns an `Arc` of the registry and a typed
/// generational key plus an epoch, so it is `Send + Sync + 'static`, may be kept across `.await`
/// in a connection task, and may be dropped on any thread, including during a panic unwind.
///
/// A held claim goes *stale* in exactly two ways: another binary [takes the id
/// over](crate::Registry::takeover_server), or its tenure is [ended by
/// name](crate::Registry::end_tenure) (a reclaim during a grace window cannot make a held claim
/// stale — the claim was consumed by [`release_after`](Self::release_after) to open the
/// window). A stale claim is inert: [`is_current`](Self::is_current) is false, and dropping or
/// releasing it changes nothing, whatever holds the id (or its slot) now.
///
/// It is neither `Clone` nor `Copy`: one claim, one release.
///
/// ```compile_fail
/// # use relay_registry::{CloseReason, Conn, Registry};
/// # use std::sync::Arc;
/// # struct Ws;
/// # impl Conn for Ws {
/// #     fn conn_id(&self) -> &str { "ws" }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// let registry = Registry::new();
/// let claim = registry.claim_server("srv", Arc::new(Ws)).unwrap();
/// claim.release();
/// claim.release(); // error: use of moved value
/// ```
#[must_use = "dropping a ServerClaim releases the server-id at once and closes its phones"]
#[clippy::has_significant_drop]
pub struct ServerClaim<C: Conn> {
    pub(crate) shared: Arc<Shared<C>>,
    pub(crate) key: ServerKey,
    pub(crate) epoch: u64,
    pub(crate) tenure: Arc<Tenure<C>>,
    /// False once released (by a consuming method), so `Drop` does nothing more.
    armed: bool,
    /// Whether installing this claim ended a previous tenure.
    replaced: bool,
}

impl<C: Conn> ServerClaim<C> {
    pub(crate) fn new(shared: Arc<Shared<C>>, seat: Seat<ServerKey, C>) -> Self {
        ServerClaim {
            shared,
            key: seat.key,
            epoch: seat.epoch,
            tenure: seat.tenure,
            armed: true,
            replaced: seat.replaced,
        }
    }

    /// Whether this claim replaced a previous binary — a reclaim during its grace window, or a
    /// takeover — rather than taking a free id. The replaced binary's phones were evicted.
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
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let registry = Registry::new();
    /// let first = registry.claim_server("srv", Arc::new(Ws)).unwrap();
    /// assert!(!first.replaced());
    /// first.release_after(Duration::from_secs(30));
    /// let again = registry.claim_server("srv", Arc::new(Ws)).unwrap();
    /// assert!(again.replaced()); // a reclaim
    /// ```
    pub fn replaced(&self) -> bool {
        self.replaced
    }

    /// The server-id this claim holds (or held, if stale).
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
    /// let registry = relay_registry::Registry::new();
    /// let claim = registry.claim_server("desk-1", std::sync::Arc::new(Ws("bin")))?;
    /// assert_eq!(claim.server_id(), "desk-1");
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn server_id(&self) -> &str {
        &self.tenure.server_id
    }

    /// The binary's conn this claim installed (also after the claim went stale).
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
    /// use std::sync::Arc;
    ///
    /// let registry = relay_registry::Registry::new();
    /// let binary = Arc::new(Ws("bin"));
    /// let claim = registry.claim_server("srv", binary.clone())?;
    /// assert!(Arc::ptr_eq(claim.conn(), &binary));
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn conn(&self) -> &Arc<C> {
        &self.tenure.binary
    }

    /// Whether this claim still holds its id: false once another binary took it over or its
    /// tenure was ended by [`Registry::end_tenure`](crate::Registry::end_tenure) (the only ways a
    /// held claim goes stale).
    ///
    /// Lock-free (one atomic load, acquire), and ordered with every registry operation: after a
    /// takeover returns, this is false on every thread.
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
    /// use std::sync::Arc;
    ///
    /// let registry = relay_registry::Registry::new();
    /// let claim = registry.claim_server("srv", Arc::new(Ws("old")))?;
    /// assert!(claim.is_current());
    /// let incumbent = claim.conn().clone();
    /// let _new = registry.takeover_server("srv", Some(&incumbent), Arc::new(Ws("new")))?;
    /// assert!(!claim.is_current());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn is_current(&self) -> bool {
        self.tenure.is_current()
    }

    /// The phone of this binary with the conn-id `conn_id`, as
    /// [`Registry::phone_for`](crate::Registry::phone_for) but without hashing the server-id and
    /// without the registry's lock: the claim reads its own tenure's phone table under that
    /// table's lock, which only changes to this id's phones also take, so binaries routing at
    /// once do not contend. Allocates nothing; confirms the phone it found by its
    /// [`Conn::conn_id`] after releasing that lock, as `phone_for` does; `None` once the claim is
    /// stale. This is the binary→phone route: a binary's task finds the phone a frame is
    /// addressed to, then calls its connection type's own send.
    ///
    /// During a grace window the claim was consumed by `release_after`, so there is no claim to
    /// ask; `Registry::phone_for` still answers.
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
    /// use std::sync::Arc;
    ///
    /// let registry = relay_registry::Registry::new();
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let _ticket = registry.register_phone("srv", Arc::new(Ws("client-1")))?;
    /// assert_eq!(claim.phone("client-1").map(|p| p.0), Some("client-1"));
    /// assert!(claim.phone("client-2").is_none());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn phone(&self, conn_id: &str) -> Option<Arc<C>> {
        find(conn_id, |print, from| {
            self.tenure.phone_candidate(print, from)
        })
    }

    /// A snapshot of this binary's phones, as
    /// [`Registry::phones_for`](crate::Registry::phones_for) but without hashing the server-id
    /// and without the registry's lock (as [`phone`](Self::phone));
    /// empty once the claim is stale. Phones are in the order [`Phones`] describes.
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
    /// use std::sync::Arc;
    ///
    /// let registry = relay_registry::Registry::new();
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let _a = registry.register_phone("srv", Arc::new(Ws("a")))?;
    /// let _b = registry.register_phone("srv", Arc::new(Ws("b")))?;
    /// let names: Vec<_> = claim.phones().iter().map(|p| p.0).collect();
    /// assert_eq!(names, ["a", "b"]);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn phones(&self) -> Phones<C> {
        self.tenure.snapshot()
    }

    /// Releases the id now, exactly as dropping the claim does: the binary and every phone of the
    /// id are removed at once, and the phones are closed with
    /// [`CloseReason::Released`](crate::CloseReason::Released) on this thread before it returns.
    ///
    /// Returns true if it released something, false if the claim was stale.
    ///
    /// # Panics
    ///
    /// Only by resuming a panic of user code it ran — a phone's [`Conn::close`], the `Drop` of a
    /// conn it let go of — once the release is complete and every close ran. While this thread
    /// is already panicking (a claim dropped during unwinding) such panics are printed to stderr
    /// instead.
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
    /// use std::sync::Arc;
    ///
    /// let registry = relay_registry::Registry::new();
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let ticket = registry.register_phone("srv", Arc::new(Ws("phone")))?;
    /// assert!(claim.release());
    /// assert!(!ticket.is_registered()); // evicted, and closed `Released`
    /// assert!(registry.binary_for("srv").is_none());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn release(mut self) -> bool {
        self.release_now()
    }

    /// Gives the id up after a grace window of `grace`, for a binary whose socket ended and may
    /// come back.
    ///
    /// Until the deadline (`now + grace`, saturating: [`Duration::MAX`] means "as late as the
    /// clock can say"), the id behaves as held: [`binary_for`](crate::Registry::binary_for) still
    /// returns this binary, its phones stay, new phones may join, and it counts as `gracing`. A
    /// claim in the window is a reclaim; when [`expire_due`](crate::Registry::expire_due) runs past
    /// the deadline, the id is freed and its phones are closed with
    /// [`CloseReason::GraceExpired`](crate::CloseReason::GraceExpired).
    ///
    /// If the window is now the earliest one, whoever drives expiry is woken (a
    /// [`Reaper`](crate::Reaper), or a task awaiting
    /// [`DeadlineChanges::changed`](crate::DeadlineChanges::changed)).
    ///
    /// Returns false (and opens nothing) if the claim was stale.
    ///
    /// # Panics
    ///
    /// If the registry's [`Clock::now`](crate::Clock::now) panics: the claim is then released at
    /// once, as if dropped (no window is left that nobody owns), and the panic propagates. A
    /// panicking [`Waker::wake`](std::task::Waker::wake) of a `DeadlineChanges` subscriber
    /// propagates after the window is open and every other waiter was woken.
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
    /// use relay_registry::{Config, Counts, ManualClock, Registry};
    /// use std::{sync::Arc, time::Duration};
    ///
    /// let clock = ManualClock::new();
    /// let registry = Registry::with_config(Config::default().with_clock(Arc::new(clock.clone())));
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// assert!(claim.release_after(Duration::from_secs(30)));
    /// assert_eq!(registry.counts(), Counts { binaries: 0, gracing: 1, phones: 0 });
    /// clock.advance(Duration::from_secs(30));
    /// assert_eq!(registry.expire_due().len(), 1);
    /// assert_eq!(registry.counts(), Counts::default());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn release_after(mut self, grace: Duration) -> bool {
        // The clock first, while the claim is still armed: if `now` panics, unwinding drops the
        // claim, which releases the id at once instead of leaving it held by no one.
        let deadline = saturating_add(self.shared.config.clock.now(), grace);
        if !self.tenure.disarm(&mut self.armed) {
            return false;
        }
        let (key, epoch) = (self.key, self.epoch);
        let armed = self
            .shared
            .locked(|state| state.release_after(key, epoch, deadline));
        match armed {
            Some(earliest) => {
                if earliest {
                    self.shared.signal.notify();
                }
                true
            }
            None => false,
        }
    }

    fn release_now(&mut self) -> bool {
        if !self.tenure.disarm(&mut self.armed) {
            return false;
        }
        let (key, epoch) = (self.key, self.epoch);
        let (released, caught) = self
            .shared
            .mutate(|state, out| state.release(key, epoch, out));
        caught.resume();
        released
    }
}

impl<C: Conn> Drop for ServerClaim<C> {
    /// Releases the id, as [`release`](Self::release).
    fn drop(&mut self) {
        self.release_now();
    }
}

impl<C: Conn> fmt::Debug for ServerClaim<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerClaim")
            .field("server_id", &self.server_id())
            .field("epoch", &self.epoch)
            .field("current", &self.is_current())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::test_conn::TestConn;
    use crate::{Counts, Registry};
    use slotmap::Key;

    /// The slot index of a key, without its version.
    pub(crate) fn slot_index(key: impl Key) -> u64 {
        key.data().as_ffi() & 0xffff_ffff
    }

    #[test]
    fn forged_claim_with_current_slot_version_but_old_epoch_is_inert() {
        let registry = Registry::new();
        let first = registry.claim_server("srv", TestConn::new("b1")).unwrap();
        let (key, old_epoch) = (first.key, first.epoch);
        assert!(first.release());
        // The slotmap's LIFO free list hands the same slot to the next claim: once versions wrap
        // (2^31 reuses), the key alone could match again. Forge exactly that case.
        let second = registry.claim_server("srv", TestConn::new("b2")).unwrap();
        let _phone = registry.register_phone("srv", TestConn::new("p")).unwrap();
        let forged = |epoch| ServerClaim {
            shared: second.shared.clone(),
            key: second.key,
            epoch,
            tenure: Arc::new(Tenure::new("srv", TestConn::new("forger"))),
            armed: true,
            replaced: false,
        };
        assert_eq!(
            slot_index(second.key),
            slot_index(key),
            "the slot was reused"
        );
        assert_ne!(second.key, key, "with a new slotmap version");
        assert!(!forged(old_epoch).release());
        drop(forged(old_epoch));
        assert!(!forged(old_epoch).release_after(Duration::ZERO));
        assert_eq!(
            registry.counts(),
            Counts {
                binaries: 1,
                gracing: 0,
                phones: 1
            }
        );
        assert!(second.is_current());
        // The same forged guard with the live epoch would act: the epoch is what decided.
        assert!(forged(second.epoch).release());
        assert_eq!(registry.counts(), Counts::default());
        registry.check_invariants().unwrap();
    }
}
