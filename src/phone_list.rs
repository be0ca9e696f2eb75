//! `PhoneList`: the phones of one tenure, in stable positions, with O(1) insert and remove; and
//! how a phone is found by its conn-id (a fingerprint under the lock, the id itself after it).

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

/// A conn-id's fingerprint: what a phone's entry keeps instead of a copy of its conn-id.
///
/// A lookup by conn-id compares fingerprints under the lock, then compares the conn-id itself,
/// through [`Conn::conn_id`], on what it found once every lock is released ([`find`]): the
/// registry never calls into a conn under its lock, and keeping a copy of every conn-id instead
/// cost an allocation and a free per registration and 29–40 bytes per phone. Two conn-ids with
/// one fingerprint (or a conn-id chosen to collide: they may come from the internet) cost one more
/// comparison after the lock, never a wrong answer.
///
/// A multiply-rotate fold over 8-byte words (the FxHash step), written here because the library's
/// dependencies have no fast hash (std's is SipHash: several times the cost, and its resistance to
/// chosen collisions buys nothing when a collision is only a comparison more).
pub(crate) fn fingerprint(conn_id: &str) -> u64 {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;
    let step = |hash: u64, word: u64| (hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    let bytes = conn_id.as_bytes();
    let mut words = bytes.chunks_exact(8);
    let mut hash = step(0, bytes.len() as u64);
    for word in &mut words {
        let mut full = [0u8; 8];
        full.copy_from_slice(word);
        hash = step(hash, u64::from_le_bytes(full));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut tail = [0u8; 8];
        tail[..rest.len()].copy_from_slice(rest);
        hash = step(hash, u64::from_le_bytes(tail));
    }
    hash
}

/// A phone found by fingerprint under the lock: its position, and its conn.
pub(crate) type Candidate<C> = (usize, Arc<C>);

/// The first phone whose conn-id is `conn_id`: `look(print, from)` is the first phone at a
/// position from `from` on whose conn-id's fingerprint is `print` (taken under a lock it releases
/// before returning); each one found is confirmed by its conn-id here, with every lock released,
/// and a collision looks again past it. Each look is one moment of the list; a collision (two
/// conn-ids, one fingerprint) makes the answer the next look's.
pub(crate) fn find<C: Conn>(
    conn_id: &str,
    mut look: impl FnMut(u64, usize) -> Option<Candidate<C>>,
) -> Option<Arc<C>> {
    let print = fingerprint(conn_id);
    let mut from = 0;
    while let Some((pos, conn)) = look(print, from) {
        if conn.conn_id() == conn_id {
            return Some(conn);
        }
        // Dropped here, outside every lock: it may be the last `Arc` of a phone that left.
        drop(conn);
        from = pos + 1;
    }
    None
}

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

// The per-phone footprint depends on an entry staying three words.
static_assertions::assert_eq_size!(PhoneEntry<()>, [u64; 3]);

/// One position: occupied while `conn` is `Some`.
struct PhoneEntry<C> {
    conn: Option<Arc<C>>,
    /// The registration's epoch while occupied; the next vacant position while vacant.
    epoch: u64,
    /// The conn-id's [`fingerprint`], taken before the lock at registration (stale while
    /// vacant: a vacant entry has no conn to match).
    print: u64,
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

    /// Registers `conn`, whose conn-id's fingerprint is `print`, with `epoch`; returns its
    /// position.
    pub(crate) fn insert(
        &mut self,
        conn: Arc<C>,
        print: u64,
        epoch: u64,
        out: &mut Aftermath<C>,
    ) -> usize {
        self.changed(out);
        self.live += 1;
        let entry = PhoneEntry {
            conn: Some(conn),
            epoch,
            print,
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
    /// it counts in the registry's tally of phones that left). `held` is the ticket's own `Arc` of
    /// its conn: the entry's `Arc` of that same conn is let go of here, under the lock, since it
    /// cannot be the last one while the ticket holds `held` (no user `Drop` can run); an entry
    /// holding another conn (a ticket forged in a test) has its conn dropped later.
    pub(crate) fn remove(
        &mut self,
        pos: usize,
        epoch: u64,
        held: &Arc<C>,
        out: &mut Aftermath<C>,
    ) -> bool {
        let Some(entry) = self.entries.get_mut(pos) else {
            return false;
        };
        if entry.epoch != epoch || entry.conn.is_none() {
            return false;
        }
        let conn = entry.conn.take();
        entry.epoch = self.vacant as u64;
        self.vacant = pos;
        self.live -= 1;
        self.left.fetch_add(1, Ordering::AcqRel);
        if self.live == 0 {
            // Emptied: start over as a fresh list would (positions from 0, in the documented
            // order), keeping the allocation. The vacant entries hold no conn.
            self.entries.clear();
            self.vacant = NONE;
        }
        match conn {
            // Only a reference count: `held` outlives this call.
            Some(conn) if Arc::ptr_eq(&conn, held) => drop(conn),
            Some(conn) => out.drop_later(Garbage::Conn(conn)),
            None => {}
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

    /// The first phone at a position from `from` on whose conn-id's fingerprint is `print`, for
    /// [`find`].
    pub(crate) fn candidate(&self, print: u64, from: usize) -> Option<Candidate<C>> {
        let entries = self.entries.get(from..)?;
        entries
            .iter()
            .enumerate()
            .find_map(|(at, entry)| match &entry.conn {
                Some(conn) if entry.print == print => Some((from + at, conn.clone())),
                _ => None,
            })
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
                    "a phone of {server_id:?} has a bad epoch ({})",
                    entry.epoch
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_conn::TestConn;
    use std::collections::HashSet;

    fn list_of(ids: &[&str]) -> (PhoneList<TestConn>, Vec<Arc<TestConn>>) {
        let mut list = PhoneList::new(Arc::new(AtomicUsize::new(0)));
        let mut out = Aftermath::new();
        let conns: Vec<_> = ids.iter().map(|id| TestConn::new(id)).collect();
        for (epoch, conn) in (1..).zip(&conns) {
            list.insert(conn.clone(), fingerprint(conn.conn_id()), epoch, &mut out);
        }
        (list, conns)
    }

    #[test]
    fn fingerprints_of_distinct_conn_ids_differ_at_every_length_and_tail() {
        // Every length from 0 to 24 (whole words and every remainder), ids differing in their
        // last byte only, and the relay benchmarks' own conn-ids.
        let mut ids: Vec<String> = (0..=24).map(|n| "x".repeat(n)).collect();
        ids.extend((0..=24).map(|n| format!("{}y", "x".repeat(n))));
        ids.extend((0..1024).map(|j| format!("client-srv-00000000-{j}")));
        let prints: HashSet<u64> = ids.iter().map(|id| fingerprint(id)).collect();
        assert_eq!(prints.len(), ids.len());
        assert_eq!(
            fingerprint("client-1"),
            fingerprint(&String::from("client-1"))
        );
    }

    #[test]
    fn a_candidate_is_the_first_occupied_position_from_the_start_with_the_print() {
        let (mut list, conns) = list_of(&["a", "b", "a", "c"]);
        let a = fingerprint("a");
        let found = |list: &PhoneList<TestConn>, from| list.candidate(a, from).map(|(p, _)| p);
        assert_eq!(found(&list, 0), Some(0));
        assert_eq!(found(&list, 1), Some(2));
        assert_eq!(found(&list, 3), None);
        assert_eq!(found(&list, 99), None, "past the end");
        assert!(list.candidate(fingerprint("d"), 0).is_none());
        // A vacant position keeps its old print but has no conn: it is never a candidate.
        assert!(list.remove(0, 1, &conns[0], &mut Aftermath::new()));
        assert_eq!(found(&list, 0), Some(2));
    }

    #[test]
    fn find_looks_past_a_fingerprint_collision_and_confirms_by_conn_id() {
        // What a collision looks like to `find`: phones whose print matched but whose conn-id is
        // another, first at position 0 and 2; the one asked for at 5.
        let phones =
            [(0, "other"), (2, "another"), (5, "wanted")].map(|(pos, id)| (pos, TestConn::new(id)));
        let mut looks = Vec::new();
        let found = find("wanted", |print, from| {
            assert_eq!(print, fingerprint("wanted"));
            looks.push(from);
            phones
                .iter()
                .find(|(pos, _)| *pos >= from)
                .map(|(pos, c)| (*pos, c.clone()))
        });
        assert_eq!(
            found.map(|c| c.conn_id().to_owned()).as_deref(),
            Some("wanted")
        );
        assert_eq!(looks, [0, 1, 3], "each look starts past the last collision");
        let none = find("missing", |_, from| {
            phones
                .iter()
                .find(|(pos, _)| *pos >= from)
                .map(|(pos, c)| (*pos, c.clone()))
        });
        assert!(
            none.is_none(),
            "every candidate confirmed and refused: not found"
        );
    }

    #[test]
    fn a_tickets_unregister_lets_go_of_the_entrys_arc_at_once_and_a_forged_one_later() {
        let (mut list, conns) = list_of(&["a", "b"]);
        let mut out = Aftermath::new();
        assert!(list.remove(0, 1, &conns[0], &mut out));
        assert_eq!(
            Arc::strong_count(&conns[0]),
            1,
            "the entry's Arc is gone already"
        );
        // Held is not the entry's conn (a forged ticket): the conn is dropped after the lock.
        let stranger = TestConn::new("b");
        assert!(list.remove(1, 2, &stranger, &mut out));
        assert_eq!(Arc::strong_count(&conns[1]), 2, "still in the aftermath");
        drop(out.run());
        assert_eq!(Arc::strong_count(&conns[1]), 1);
    }
}
