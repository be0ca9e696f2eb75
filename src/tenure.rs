//! `Tenure`: one binary's hold on one server-id, shared by its claim, its phones' tickets and the
//! id index, and the table of its phones.

use crate::aftermath::Aftermath;
use crate::conn::Conn;
use crate::keys::ServerKey;
use crate::phone_list::{Candidate, PhoneList};
use crate::phones::Phones;
use crate::sync::{AtomicU64, InnerLock, Ordering};
use slotmap::{Key, KeyData};
use std::sync::Arc;

/// The tenure is current and its binary connected.
const LIVE: u64 = 0;
/// The tenure is current, in a grace window.
const GRACING: u64 = 1;
/// The tenure ended (release, reclaim, takeover, an ended tenure or expiry).
const ENDED: u64 = 2;
/// The phase's bits of [`Tenure::seat`]'s word; the epoch is the rest.
const PHASE: u64 = 0b11;

/// One claim's tenure: from the claim (or reclaim, or takeover) that installed a binary to the
/// release, reclaim, takeover or expiry that ended it. It goes live → (gracing →) ended, once.
///
/// Every phone registered under the id during the tenure belongs to it (in its [`phones`]
/// table), and every way a tenure ends evicts all of them, so "this phone is registered" is
/// exactly "its tenure has not ended" (a phone can otherwise leave only through its own ticket).
/// That lets [`PhoneTicket::binary`] and [`ServerClaim::is_current`] answer from one atomic load,
/// without the registry's lock.
///
/// The phase is written only under the registry's lock (release), in the critical section that
/// changes it, so a lock-free reader (acquire) is ordered with every locked operation. It shares
/// one word with the tenure's epoch, and the tenure records the key of its server slot: both are
/// set once, by [`seat`](Tenure::seat), under the registry's lock before the tenure is published,
/// so that the slot and the id index hold only a pointer to the tenure each.
///
/// [`phones`]: Tenure::phones
/// [`PhoneTicket::binary`]: crate::PhoneTicket::binary
/// [`ServerClaim::is_current`]: crate::ServerClaim::is_current
pub(crate) struct Tenure<C> {
    /// The server-id: the id index hashes it from here, the guards read it from here.
    pub(crate) server_id: Box<str>,
    pub(crate) binary: Arc<C>,
    /// The phones registered during this tenure: `None` until the first registers (or after a
    /// list that had grown past its inline entries emptied), and from the tenure's end on.
    /// Changed only under the registry's lock (then this one); read under this lock alone by the
    /// binary→phone route ([`ServerClaim::phone`](crate::ServerClaim::phone)), so binaries
    /// routing to their phones never contend on the registry's lock, nor on each other's.
    pub(crate) phones: InnerLock<Option<Box<PhoneList<C>>>>,
    /// `epoch << 2 | phase`: the epoch is 0 until the tenure is seated.
    seat: AtomicU64,
    /// The server slot's key ([`KeyData::as_ffi`]); written and read under the registry's lock
    /// only (an atomic because the tenure is shared, not for ordering).
    slot: AtomicU64,
}

// The per-id footprint depends on this staying nine words (with the `Arc`'s two counts).
#[cfg(not(loom))]
static_assertions::assert_eq_size!(Tenure<()>, [u64; 7]);

impl<C: Conn> Tenure<C> {
    pub(crate) fn new(server_id: &str, binary: Arc<C>) -> Self {
        Tenure {
            server_id: server_id.into(),
            binary,
            phones: InnerLock::new(None),
            seat: AtomicU64::new(LIVE),
            slot: AtomicU64::new(KeyData::default().as_ffi()),
        }
    }

    /// Seats the tenure in the server slot `key` with `epoch` (registry-wide, never reused, at
    /// most 2^62). Call only under the registry's lock, before the tenure is published: the
    /// epoch is set once and then only read.
    pub(crate) fn seat(&self, key: ServerKey, epoch: u64) {
        debug_assert!(
            epoch <= u64::MAX >> 2,
            "epoch {epoch} overflows the seat word"
        );
        self.seat.store(epoch << 2, Ordering::Relaxed); // and the phase LIVE (0)
        self.slot.store(key.data().as_ffi(), Ordering::Relaxed);
    }

    /// The epoch it was seated with (0 before). Call only under the registry's lock.
    pub(crate) fn epoch(&self) -> u64 {
        self.seat.load(Ordering::Relaxed) >> 2
    }

    /// The key of its server slot. Call only under the registry's lock, once seated.
    pub(crate) fn slot(&self) -> ServerKey {
        KeyData::from_ffi(self.slot.load(Ordering::Relaxed)).into()
    }

    /// Sets the phase, keeping the epoch; under the registry's lock, which orders every writer.
    fn set_phase(&self, phase: u64) {
        let epoch = self.seat.load(Ordering::Relaxed) & !PHASE;
        self.seat.store(epoch | phase, Ordering::Release);
    }

    fn phase(&self, order: Ordering) -> u64 {
        self.seat.load(order) & PHASE
    }

    /// Whether the tenure has not ended (it is live or gracing). Lock-free.
    pub(crate) fn is_current(&self) -> bool {
        self.phase(Ordering::Acquire) != ENDED
    }

    /// Whether the tenure is in its grace window. Call only under the registry's lock.
    pub(crate) fn is_gracing(&self) -> bool {
        self.phase(Ordering::Relaxed) == GRACING
    }

    /// Disarms a guard of this tenure (sets `armed` to false): true exactly once, and only while
    /// the tenure is current — when the guard still has something to release. A stale guard's
    /// release is then decided without taking the lock (its registry-side check would fail too).
    pub(crate) fn disarm(&self, armed: &mut bool) -> bool {
        std::mem::replace(armed, false) && self.is_current()
    }

    /// Opens the grace window. Call only under the registry's lock.
    pub(crate) fn start_grace(&self) {
        self.set_phase(GRACING);
    }

    /// Ends the tenure and takes its phones out (for the caller to evict), in one critical
    /// section of the phone table: a route that finds a phone found it before the end. Call only
    /// under the registry's lock.
    pub(crate) fn end(&self) -> Option<Box<PhoneList<C>>> {
        let mut phones = self.phones.lock();
        self.set_phase(ENDED);
        phones.take()
    }

    /// Unregisters the phone at `pos` if it is the registration `epoch` (a ticket's unregister),
    /// under this tenure's lock alone — never the registry's: its conn (and an outdated snapshot)
    /// go into `out`, to be dropped after the lock, and the registry's tally of phones that left
    /// (which the phone list points at) counts it in the same critical section, so [`Counts::phones`](crate::Counts::phones) (registered minus
    /// left, read under the registry's lock) changes at the moment the phone leaves the table.
    /// False (and nothing changes) if the tenure ended or the position holds another
    /// registration.
    pub(crate) fn unregister(
        &self,
        pos: usize,
        epoch: u64,
        held: &Arc<C>,
        out: &mut Aftermath<C>,
    ) -> bool {
        let mut table = self.phones.lock();
        let Some(phones) = table.as_mut() else {
            return false;
        };
        if !phones.remove(pos, epoch, held, out) {
            return false;
        }
        if phones.len() == 0 && phones.spilled() {
            // An emptied list stays while it fits in its own allocation (the next phone reuses
            // it); a grown one is freed. It holds no conn and no snapshot any more: dropping it
            // here runs no user code.
            *table = None;
        }
        true
    }

    /// The first phone at a position from `from` on whose conn-id's fingerprint is `print`, under
    /// this tenure's lock alone, for [`find`](crate::phone_list::find); none once the tenure
    /// ended.
    pub(crate) fn phone_candidate(&self, print: u64, from: usize) -> Option<Candidate<C>> {
        self.phones.lock().as_ref()?.candidate(print, from)
    }

    /// A snapshot of the phones, under this tenure's lock alone; empty once the tenure ended.
    pub(crate) fn snapshot(&self) -> Phones<C> {
        match &mut *self.phones.lock() {
            Some(phones) if phones.len() > 0 => phones.snapshot(),
            _ => Phones::empty(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_conn::TestConn;
    use slotmap::SlotMap;

    #[test]
    fn a_seated_tenure_keeps_its_epoch_and_slot_through_grace_and_end() {
        let mut slots: SlotMap<ServerKey, ()> = SlotMap::with_key();
        let (first, key) = (slots.insert(()), slots.insert(()));
        let tenure = Tenure::new("srv", TestConn::new("bin"));
        assert_eq!(tenure.epoch(), 0, "not seated yet");
        let epoch = u64::MAX >> 2;
        tenure.seat(key, epoch);
        assert_eq!((tenure.epoch(), tenure.slot()), (epoch, key));
        assert_ne!(tenure.slot(), first);
        assert!(tenure.is_current() && !tenure.is_gracing());
        tenure.start_grace();
        assert!(tenure.is_current() && tenure.is_gracing());
        assert_eq!(tenure.epoch(), epoch, "the grace kept the epoch");
        drop(tenure.end());
        assert!(!tenure.is_current() && !tenure.is_gracing());
        assert_eq!(tenure.epoch(), epoch, "the end kept the epoch");
    }
}
