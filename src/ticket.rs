//! `PhoneTicket`: a phone's registration under a server-id, unregistered when dropped.

use crate::aftermath::Aftermath;
use crate::conn::Conn;
use crate::keys::PhoneKey;
use crate::state::Seat;
use crate::tenure::Tenure;
use std::fmt;
use std::sync::Arc;

/// A phone's registration, returned by [`register_phone`](crate::Registry::register_phone).
///
/// Dropping it (or [`unregister`](Self::unregister)) removes exactly this phone in O(1), without
/// closing it and without touching its siblings. It holds no lock — its binary's tenure (which is
/// what lets [`binary`](Self::binary) answer without a lookup, and what it unregisters from, under
/// the tenure's own lock, never the registry's), its position in the tenure's phone table and an
/// epoch, and the phone's conn — so it is `Send + Sync + 'static` and may live in the phone's
/// connection task across `.await`. Keeping the tenure means a binary's conn is freed only once
/// its phones' tickets are dropped too. It holds no handle of the registry: a ticket that
/// outlives the registry (the registry's last handle and every claim dropped while its id was in
/// a grace window) goes stale then.
///
/// When its binary releases the id, is reclaimed or taken over, or its grace window expires, the
/// phone is evicted (and closed by the registry) and the ticket goes *stale*: dropping it then
/// changes nothing, whatever phone now occupies its old slot.
///
/// It is neither `Clone` nor `Copy`.
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
/// let _claim = registry.claim_server("srv", Arc::new(Ws)).unwrap();
/// let ticket = registry.register_phone("srv", Arc::new(Ws)).unwrap();
/// let copy = ticket.clone(); // error: no method `clone`
/// ```
#[must_use = "dropping a PhoneTicket unregisters the phone at once"]
#[clippy::has_significant_drop]
pub struct PhoneTicket<C: Conn> {
    pub(crate) key: PhoneKey,
    pub(crate) epoch: u64,
    pub(crate) tenure: Arc<Tenure<C>>,
    conn: Arc<C>,
    /// False once unregistered by [`unregister`](Self::unregister), so `Drop` does nothing more.
    armed: bool,
}

impl<C: Conn> PhoneTicket<C> {
    pub(crate) fn new(seat: Seat<PhoneKey, C>, conn: Arc<C>) -> Self {
        PhoneTicket {
            key: seat.key,
            epoch: seat.epoch,
            tenure: seat.tenure,
            conn,
            armed: true,
        }
    }

    /// The server-id this phone joined.
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
    /// assert_eq!(ticket.server_id(), "srv");
    /// # drop(claim);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn server_id(&self) -> &str {
        &self.tenure.server_id
    }

    /// The phone's conn (also after the ticket went stale).
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
    /// let phone = Arc::new(Ws("phone"));
    /// let ticket = registry.register_phone("srv", phone.clone())?;
    /// assert!(Arc::ptr_eq(ticket.conn(), &phone));
    /// # drop(claim);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn conn(&self) -> &Arc<C> {
        &self.conn
    }

    /// Whether the phone is still registered: false once it was evicted (release, reclaim,
    /// takeover or expiry of its binary's tenure).
    ///
    /// Lock-free (one atomic load, acquire) and ordered with every registry operation: after the
    /// call that evicted the phone returns, this is false on every thread.
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
    /// assert!(ticket.is_registered());
    /// drop(claim); // the binary releases the id: its phones are evicted
    /// assert!(!ticket.is_registered());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn is_registered(&self) -> bool {
        self.tenure.is_current()
    }

    /// The binary this phone joined, while the phone is registered; `None` once it was evicted.
    ///
    /// This is the phone→binary route of every frame, so it takes neither the registry's lock nor
    /// a hash of the server-id: the binary of a registered phone cannot change (every reclaim and
    /// takeover evicts the phones), so the ticket keeps it and one atomic load says whether it is
    /// still valid. During a grace window this is still the old binary, as for
    /// [`binary_for`](crate::Registry::binary_for).
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
    /// # impl Ws { fn send(&self, _frame: &str) {} }
    /// use std::sync::Arc;
    ///
    /// let registry = relay_registry::Registry::new();
    /// let claim = registry.claim_server("srv", Arc::new(Ws("bin")))?;
    /// let ticket = registry.register_phone("srv", Arc::new(Ws("phone")))?;
    /// // A phone's task routes each frame it reads to its binary (with the conn type's own send):
    /// if let Some(binary) = ticket.binary() {
    ///     binary.send(r#"{"conn_id":"phone","frame":{}}"#);
    /// }
    /// drop(claim);
    /// assert!(ticket.binary().is_none());
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn binary(&self) -> Option<Arc<C>> {
        self.tenure.is_current().then(|| self.tenure.binary.clone())
    }

    /// Unregisters the phone now, exactly as dropping the ticket does; does not close it.
    /// Returns true if it removed the registration, false if the ticket was stale.
    ///
    /// # Panics
    ///
    /// Only by resuming a panic of a conn's `Drop` that it ran, after the phone is unregistered
    /// (printed to stderr instead while this thread is already panicking). The phone's own conn
    /// is dropped with the ticket, after the registry is done.
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
    /// let sibling = registry.register_phone("srv", Arc::new(Ws("sibling")))?;
    /// assert!(ticket.unregister());
    /// assert!(sibling.is_registered());
    /// assert_eq!(registry.phones_for("srv").len(), 1);
    /// # drop(claim);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn unregister(mut self) -> bool {
        self.unregister_now()
    }

    fn unregister_now(&mut self) -> bool {
        if !self.tenure.disarm(&mut self.armed) {
            return false;
        }
        // Under the tenure's lock alone: the ticket reaches its phone table through its tenure,
        // so it needs no handle of the registry and never takes the registry's lock.
        let mut out = Aftermath::new();
        let unregistered = self
            .tenure
            .unregister(self.key.pos, self.epoch, &self.conn, &mut out);
        out.run().resume();
        unregistered
    }
}

impl<C: Conn> Drop for PhoneTicket<C> {
    /// Unregisters the phone, as [`unregister`](Self::unregister).
    fn drop(&mut self) {
        self.unregister_now();
    }
}

impl<C: Conn> fmt::Debug for PhoneTicket<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PhoneTicket")
            .field("server_id", &self.server_id())
            .field("epoch", &self.epoch)
            .field("registered", &self.is_registered())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_conn::TestConn;
    use crate::{Counts, Registry};

    #[test]
    fn forged_ticket_with_current_slot_version_but_old_epoch_is_inert() {
        let registry = Registry::new();
        let _claim = registry.claim_server("srv", TestConn::new("b")).unwrap();
        let first = registry.register_phone("srv", TestConn::new("p1")).unwrap();
        let (key, old_epoch) = (first.key, first.epoch);
        assert!(first.unregister());
        let second = registry.register_phone("srv", TestConn::new("p2")).unwrap();
        // The phone's position is reused, in the same tenure's table: the old ticket's key names
        // the new phone exactly.
        assert_eq!(second.key, key, "the position was reused");
        // Forge the old ticket: the live phone's tenure and key with the old epoch.
        let forged = PhoneTicket {
            key: second.key,
            epoch: old_epoch,
            tenure: second.tenure.clone(),
            conn: TestConn::new("forger"),
            armed: true,
        };
        assert!(!forged.unregister());
        assert_eq!(
            registry.counts(),
            Counts {
                binaries: 1,
                gracing: 0,
                phones: 1
            }
        );
        assert!(registry.phone_for("srv", "p2").is_some());
        registry.check_invariants().unwrap();
    }
}
