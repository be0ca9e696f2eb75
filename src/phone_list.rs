//! `PhoneList`: the phones of one tenure, in stable positions, with O(1) insert and remove.

use crate::aftermath::{Aftermath, Garbage};
use crate::conn::{CloseReason, Conn};
use crate::phones::Phones;
use crate::sync::{AtomicUsize, Ordering};
use smallvec::SmallVec;
use std::sync::Arc;

/// No vacant position.
const NONE: usize = usize::MAX;
/// Phones stored inline in a [`PhoneList`].
const INLINE: usize = 4;

/// The phones registered under one server-id during one tenure.
///
/// A phone keeps its position for as long as it is registered, so its ticket names it by
/// `(server slot, position, epoch)` and no registry-wide phone map is needed. A removed phone
/// leaves a vacant entry that the next registration reuses (a LIFO free list threaded through the
/// vacant entries): insert and remove are O(1). An id gets its list with its first phone; once
/// emptied, the list stays for the next phone while its entries fit inline (so a phone leaving and
/// another joining cost no allocation), and is freed if they had grown beyond.
pub(crate) struct PhoneList<C> {
    /// The first [`INLINE`] entries live in the list's own allocation: a typical id's phones
    /// cost one allocation, and a lookup follows one pointer fewer.
    entries: SmallVec<[PhoneEntry<C>; INLINE]>,
    /// The latest [`Phones`] snapshot, built on demand and dropped on every change.
    snapshot: Option<Arc<[Arc<C>]>>,
    /// Registered phones (occupied entries).
    live: usize,
    /// The most recently vacated position, or [`NONE`].
    vacant: usize,
    /// The registry's tally of phones that left through their tickets: [`remove`](Self::remove)
    /// counts each in it (here rather than in the tenure, so that an id without phones does not
    /// pay for the pointer).
    left: Arc<AtomicUsize>,
}

/// One position: occupied while `conn` is `Some`.
struct PhoneEntry<C> {
    conn: Option<Arc<C>>,
    /// The registration's epoch while occupied; the next vacant position while vacant.
    epoch: u64,
    /// Read from the conn once, before the lock, at registration; empty while vacant.
    conn_id: Box<str>,
}

impl<C: Conn> PhoneList<C> {
    /// An empty list; `left` is the registry's tally of phones that left through their tickets.
    pub(crate) fn new(left: Arc<AtomicUsize>) -> Self {
        PhoneList {
            entries: SmallVec::new(),
            snapshot: None,
            live: 0,
            vacant: NONE,
            left,
        }
    }

    /// Whether the entries outgrew the list's own allocation.
    pub(crate) fn spilled(&self) -> bool {
        self.entries.spilled()
    }

    /// How many phones are registered.
    pub(crate) fn len(&self) -> usize {
        self.live
    }

    /// Registers `conn` with `epoch`; returns its position.
    pub(crate) fn insert(
        &mut self,
        conn: Arc<C>,
        conn_id: Box<str>,
        epoch: u64,
        out: &mut Aftermath<C>,
    ) -> usize {
        self.changed(out);
        self.live += 1;
        let entry = PhoneEntry {
            conn: Some(conn),
            epoch,
            conn_id,
        };
        if self.vacant == NONE {
            self.entries.push(entry);
            return self.entries.len() - 1;
        }
        let pos = self.vacant;
        let next = std::mem::replace(&mut self.entries[pos], entry).epoch;
        self.vacant = usize::try_from(next).unwrap_or(NONE);
        pos
    }

    /// Removes the phone at `pos` if it is the registration `epoch` (its ticket's unregister, so
    /// it counts in the registry's tally of phones that left); its conn is dropped later.
    pub(crate) fn remove(&mut self, pos: usize, epoch: u64, out: &mut Aftermath<C>) -> bool {
        let Some(entry) = self.entries.get_mut(pos) else {
            return false;
        };
        if entry.epoch != epoch || entry.conn.is_none() {
            return false;
        }
        let conn = entry.conn.take();
        entry.epoch = self.vacant as u64;
        entry.conn_id = Box::default();
        self.vacant = pos;
        self.live -= 1;
        self.left.fetch_add(1, Ordering::AcqRel);
        if self.live == 0 {
            // Emptied: start over as a fresh list would (positions from 0, in the documented
            // order), keeping the allocation. The vacant entries hold no conn.
            self.entries.clear();
            self.vacant = NONE;
        }
        if let Some(conn) = conn {
            out.drop_later(Garbage::Conn(conn));
        }
        self.changed(out);
        true
    }

    /// Moves every phone out to be closed with `reason`, and the snapshot out to be dropped.
    pub(crate) fn evict(self, reason: CloseReason, out: &mut Aftermath<C>) {
        for conn in self.entries.into_iter().filter_map(|e| e.conn) {
            out.close(conn, reason);
        }
        if let Some(snapshot) = self.snapshot {
            out.drop_later(Garbage::Snapshot(snapshot));
        }
    }

    /// The first phone (by position) whose conn-id is `conn_id`.
    pub(crate) fn find(&self, conn_id: &str) -> Option<&Arc<C>> {
        self.entries
            .iter()
            .find(|e| e.conn.is_some() && *e.conn_id == *conn_id)
            .and_then(|e| e.conn.as_ref())
    }

    /// The registered phones, by position.
    pub(crate) fn conns(&self) -> impl Iterator<Item = &Arc<C>> {
        self.entries.iter().filter_map(|e| e.conn.as_ref())
    }

    /// A snapshot, shared with every other snapshot taken since the last change.
    pub(crate) fn snapshot(&mut self) -> Phones<C> {
        let list = match &self.snapshot {
            Some(list) => list.clone(),
            None => {
                let list: Arc<[Arc<C>]> = self.conns().cloned().collect();
                self.snapshot = Some(list.clone());
                list
            }
        };
        Phones::shared(list)
    }

    fn changed(&mut self, out: &mut Aftermath<C>) {
        if let Some(snapshot) = self.snapshot.take() {
            out.drop_later(Garbage::Snapshot(snapshot));
        }
    }

    /// Checks the counters, the free list, epochs (each in `epochs`) and the cached snapshot.
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn check(
        &self,
        server_id: &str,
        epochs: std::ops::RangeInclusive<u64>,
    ) -> Result<(), String> {
        let occupied = self.entries.iter().filter(|e| e.conn.is_some()).count();
        if occupied != self.live || (self.live == 0 && self.spilled()) {
            return Err(format!(
                "{server_id:?} keeps a phone list of {occupied} phones, counted {}",
                self.live
            ));
        }
        let mut free = 0;
        let mut pos = self.vacant;
        while pos != NONE {
            let entry = self
                .entries
                .get(pos)
                .filter(|e| e.conn.is_none())
                .ok_or_else(|| format!("{server_id:?} has a broken free list"))?;
            free += 1;
            if free > self.entries.len() {
                return Err(format!("{server_id:?} has a cyclic free list"));
            }
            pos = usize::try_from(entry.epoch).unwrap_or(NONE);
        }
        if free + self.live != self.entries.len() {
            return Err(format!("{server_id:?} loses vacant phone positions"));
        }
        for entry in self.entries.iter().filter(|e| e.conn.is_some()) {
            if !epochs.contains(&entry.epoch) {
                return Err(format!(
                    "phone {:?} of {server_id:?} has a bad epoch",
                    entry.conn_id
                ));
            }
        }
        if let Some(snapshot) = &self.snapshot {
            let same = snapshot.len() == self.live
                && snapshot
                    .iter()
                    .zip(self.conns())
                    .all(|(a, b)| Arc::ptr_eq(a, b));
            if !same {
                return Err(format!(
                    "cached phone snapshot of {server_id:?} is outdated"
                ));
            }
        }
        Ok(())
    }
}
