//! `Binding`: one binary's tenure on one server-id, shared by its claim and its phones' tickets.

use crate::compact_str::IdCopy;
use crate::conn::Conn;
use crate::sync::{AtomicBool, Ordering};
use std::sync::Arc;

/// One claim's tenure: from the claim (or reclaim, or takeover) that installed a binary to the
/// release, reclaim, takeover or expiry that ended it.
///
/// Every phone registered under the id during the tenure belongs to it, and every way a tenure ends
/// evicts all of them, so "this phone is registered" is exactly "its binding is live" (a phone can
/// otherwise leave only through its own ticket). That lets [`PhoneTicket::binary`] and
/// [`ServerClaim::is_current`] answer from one atomic load, without the registry's lock.
///
/// `live` is written only under the registry's lock, in the same critical section that ends the
/// tenure, so a lock-free reader is ordered with every locked operation.
///
/// [`PhoneTicket::binary`]: crate::PhoneTicket::binary
/// [`ServerClaim::is_current`]: crate::ServerClaim::is_current
pub(crate) struct Binding<C> {
    /// The server-id, kept inline when short: the id index and the guards read it from here.
    pub(crate) server_id: IdCopy,
    pub(crate) binary: Arc<C>,
    live: AtomicBool,
}

impl<C: Conn> Binding<C> {
    pub(crate) fn new(server_id: &str, binary: Arc<C>) -> Self {
        Binding {
            server_id: IdCopy::new(server_id),
            binary,
            live: AtomicBool::new(true),
        }
    }

    pub(crate) fn is_live(&self) -> bool {
        self.live.load(Ordering::Acquire)
    }

    /// Disarms a guard of this tenure (sets `armed` to false): true exactly once, and only while
    /// the tenure is live — when the guard still has something to release. A stale guard's
    /// release is then decided without taking the lock (its registry-side check would fail too).
    pub(crate) fn disarm(&self, armed: &mut bool) -> bool {
        std::mem::replace(armed, false) && self.is_live()
    }

    /// Ends the tenure. Call only under the registry's lock.
    pub(crate) fn end(&self) {
        self.live.store(false, Ordering::Release);
    }
}
