//! `State`: the registry's data, and every operation on it. Runs only under the registry's lock.
//!
//! Nothing here locks, calls into a `Conn`, reads a clock or drops an `Arc<C>`: whatever would run
//! user code goes into the [`Aftermath`] for after the lock is released.

use crate::aftermath::{Aftermath, Garbage};
use crate::conn::{CloseReason, Conn};
use crate::counts::Counts;
use crate::deadlines::{Deadlines, Window};
use crate::error::RegistryError;
use crate::expiry::Expired;
use crate::keys::{PhoneKey, ServerKey};
use crate::phone_list::{Candidate, PhoneList};
use crate::phones::Phones;
use crate::sync::AtomicUsize;
use crate::tenure::Tenure;
use slotmap::SlotMap;
use std::borrow::Borrow;
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Instant;

/// The whole registry: the id index, the server slots (each with its tenure, which holds its phone
/// list), the grace deadlines, the counters.
pub(crate) struct State<C: Conn> {
    /// server-id → its current tenure (live or gracing), which knows its slot: a set of tenures
    /// keyed by their ids (a map with no values, for its entry API), one pointer per id. std's
    /// `RandomState` (SipHash, seeded per process): ids are attacker-chosen, so the index must
    /// not be a fast unkeyed hash. The tenure holds the id: the index owns no copy of its own.
    index: HashMap<IdKey<C>, ()>,
    /// Each held id's current tenure (live or gracing), with its phones; the tenure holds the
    /// epoch a claim must match to act (see [`Tenure::seat`]).
    servers: SlotMap<ServerKey, Arc<Tenure<C>>>,
    deadlines: Deadlines,
    /// The last epoch handed out; epochs are registry-wide and never reused.
    epoch: u64,
    /// How many server slots are in a grace window (the rest are live).
    gracing: usize,
    /// How many phones were registered minus how many were evicted, over every slot: the phones
    /// registered now plus those that left through their tickets since (which unregister under
    /// their tenure's lock alone, counted in `Shared::left`). [`State::counts`] subtracts those.
    registered: usize,
}

/// The id index's key: a tenure, hashed and compared by its server-id's bytes.
struct IdKey<C>(Arc<Tenure<C>>);

impl<C> Borrow<[u8]> for IdKey<C> {
    fn borrow(&self) -> &[u8] {
        self.0.server_id.as_bytes()
    }
}

impl<C> Hash for IdKey<C> {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.server_id.as_bytes().hash(state);
    }
}

impl<C> PartialEq for IdKey<C> {
    fn eq(&self, other: &Self) -> bool {
        self.0.server_id.as_bytes() == other.0.server_id.as_bytes()
    }
}

impl<C> Eq for IdKey<C> {}

/// Who may claim a held id.
pub(crate) enum Claimant<'a, C> {
    /// `claim_server`: only a gracing id may be claimed (a reclaim).
    First,
    /// `takeover_server`: only an id held by exactly this conn (or an empty id, for `None`).
    Incumbent(Option<&'a Arc<C>>),
    /// Test-only, deliberately broken (`--cfg relay_registry_broken_claim`): install without
    /// checking, because the caller checked under an earlier lock acquisition.
    #[cfg(relay_registry_broken_claim)]
    Unchecked,
}

/// What a guard needs to know about the slot it was given.
pub(crate) struct Seat<K, C> {
    pub(crate) key: K,
    pub(crate) epoch: u64,
    pub(crate) tenure: Arc<Tenure<C>>,
    /// For a claim: whether it ended a previous tenure (a reclaim or takeover).
    pub(crate) replaced: bool,
}

impl<C: Conn> State<C> {
    pub(crate) fn new() -> Self {
        State {
            index: HashMap::new(),
            servers: SlotMap::with_key(),
            deadlines: Deadlines::default(),
            epoch: 0,
            gracing: 0,
            registered: 0,
        }
    }

    /// Installs `tenure` on its server-id: a fresh claim, a reclaim of a gracing id, or a takeover.
    pub(crate) fn claim(
        &mut self,
        tenure: Arc<Tenure<C>>,
        claimant: Claimant<'_, C>,
        out: &mut Aftermath<C>,
    ) -> Result<Seat<ServerKey, C>, RegistryError> {
        // One hash of the id for a fresh claim: look up and insert through the same entry.
        let key = match self.index.entry(IdKey(tenure.clone())) {
            Entry::Occupied(entry) => entry.key().0.slot(),
            Entry::Vacant(entry) => {
                if let Claimant::Incumbent(Some(_)) = claimant {
                    drop(entry);
                    out.drop_later(Garbage::Tenure(tenure));
                    return Err(RegistryError::ServerIdConflict);
                }
                let epoch = next_epoch(&mut self.epoch);
                let key = self.servers.insert_with_key(|key| {
                    tenure.seat(key, epoch);
                    tenure.clone()
                });
                entry.insert(());
                return Ok(Seat {
                    key,
                    epoch,
                    tenure,
                    replaced: false,
                });
            }
        };
        let held = &self.servers[key];
        let allowed = match claimant {
            Claimant::First => held.is_gracing(),
            Claimant::Incumbent(Some(incumbent)) => Arc::ptr_eq(incumbent, &held.binary),
            Claimant::Incumbent(None) => false,
            #[cfg(relay_registry_broken_claim)]
            Claimant::Unchecked => true,
        };
        if !allowed {
            out.drop_later(Garbage::Tenure(tenure));
            return Err(RegistryError::ServerIdConflict);
        }
        // A reclaim or takeover: the slot stays, its tenure and epoch change, and the index is
        // re-keyed to the new tenure (so that it does not keep the old binary alive).
        self.end_tenure(key, CloseReason::Reclaimed, out);
        let epoch = next_epoch(&mut self.epoch);
        tenure.seat(key, epoch);
        let old = std::mem::replace(&mut self.servers[key], tenure.clone());
        out.drop_later(Garbage::Tenure(old));
        if let Some((old, ())) = self.index.remove_entry(tenure.server_id.as_bytes()) {
            out.drop_later(Garbage::Tenure(old.0));
        }
        self.index.insert(IdKey(tenure.clone()), ());
        Ok(Seat {
            key,
            epoch,
            tenure,
            replaced: true,
        })
    }

    /// Test-only, deliberately broken (`--cfg relay_registry_broken_claim`): the check of a first
    /// claim (the id is free or gracing), for a caller that installs under a second lock.
    #[cfg(relay_registry_broken_claim)]
    pub(crate) fn broken_claim_check(&self, server_id: &str) -> bool {
        held(&self.index, server_id).is_none_or(|tenure| tenure.is_gracing())
    }

    /// Whether the claim `(key, epoch)` is current and not released into a grace window.
    fn holds(&self, key: ServerKey, epoch: u64) -> bool {
        self.current(key, epoch)
            .is_some_and(|tenure| !tenure.is_gracing())
    }

    /// The tenure in slot `key` if it is `(key, epoch)`'s, live or gracing; `None` once it ended.
    fn current(&self, key: ServerKey, epoch: u64) -> Option<&Arc<Tenure<C>>> {
        self.servers
            .get(key)
            .filter(|tenure| tenure.epoch() == epoch)
    }

    /// Ends the tenure in slot `key`: it goes stale, its window (if any) is cancelled, and every
    /// phone is removed and scheduled to be closed with `reason`. The slot itself stays. Returns
    /// the number of phones evicted, counted in the critical section that took them out (a
    /// ticket unregisters under the tenure's lock alone, so a count read before could include a
    /// phone that left meanwhile).
    fn end_tenure(&mut self, key: ServerKey, reason: CloseReason, out: &mut Aftermath<C>) -> usize {
        let tenure = &self.servers[key];
        if tenure.is_gracing() {
            self.gracing -= 1;
        }
        let Some(phones) = tenure.end() else {
            return 0;
        };
        let evicted = phones.len();
        self.registered -= evicted;
        phones.evict(reason, out);
        evicted
    }

    /// Ends the tenure in slot `key` and frees the slot and its id; the number of phones evicted.
    fn remove_server(
        &mut self,
        key: ServerKey,
        reason: CloseReason,
        out: &mut Aftermath<C>,
    ) -> usize {
        let evicted = self.end_tenure(key, reason, out);
        if let Some(tenure) = self.servers.remove(key) {
            if let Some((id, ())) = self.index.remove_entry(tenure.server_id.as_bytes()) {
                out.drop_later(Garbage::Tenure(id.0));
            }
            out.drop_later(Garbage::Tenure(tenure));
        }
        evicted
    }

    /// Releases the claim `(key, epoch)` now; false (and nothing changes) if it is stale.
    pub(crate) fn release(&mut self, key: ServerKey, epoch: u64, out: &mut Aftermath<C>) -> bool {
        if !self.holds(key, epoch) {
            return false;
        }
        self.remove_server(key, CloseReason::Released, out);
        true
    }

    /// Ends the tenure of exactly `holder` (live or gracing) over `server_id` and frees the id,
    /// evicting its phones as a takeover does; false (and nothing changes) if `holder` does not
    /// hold it.
    pub(crate) fn end_holder(
        &mut self,
        server_id: &str,
        holder: &Arc<C>,
        out: &mut Aftermath<C>,
    ) -> bool {
        let Some(held) = held(&self.index, server_id) else {
            return false;
        };
        if !Arc::ptr_eq(holder, &held.binary) {
            return false;
        }
        self.remove_server(held.slot(), CloseReason::Reclaimed, out);
        true
    }

    /// Opens a grace window until `deadline` for the claim `(key, epoch)`. `None` if the claim is
    /// stale; otherwise whether the window is now the earliest one.
    pub(crate) fn release_after(
        &mut self,
        key: ServerKey,
        epoch: u64,
        deadline: Instant,
    ) -> Option<bool> {
        if !self.holds(key, epoch) {
            return None;
        }
        self.servers[key].start_grace();
        self.gracing += 1;
        let earliest = self.deadlines.push(Window {
            deadline,
            key,
            epoch,
        });
        let servers = &self.servers;
        self.deadlines
            .compact_if_sparse(self.gracing, |w| window_open(servers, w));
        Some(earliest)
    }

    /// Expires every window due at `now`, earliest first; returns what expired.
    pub(crate) fn expire_due(&mut self, now: Instant, out: &mut Aftermath<C>) -> Vec<Expired<C>> {
        let mut expired = Vec::new();
        while let Some(window) = self.deadlines.peek() {
            if window.deadline > now {
                break;
            }
            self.deadlines.pop();
            if window_open(&self.servers, &window) {
                let tenure = self.servers[window.key].clone();
                let phones = self.remove_server(window.key, CloseReason::GraceExpired, out);
                expired.push(Expired::new(tenure, phones));
            }
        }
        expired
    }

    /// The earliest open window's deadline, discarding cancelled windows on the way.
    pub(crate) fn next_deadline(&mut self) -> Option<Instant> {
        while let Some(window) = self.deadlines.peek() {
            if window_open(&self.servers, &window) {
                return Some(window.deadline);
            }
            self.deadlines.pop();
        }
        None
    }

    /// Registers a phone under `server_id` if a binary holds it and the cap allows.
    pub(crate) fn register(
        &mut self,
        server_id: &str,
        conn: Arc<C>,
        print: u64,
        cap: usize,
        left: &Arc<AtomicUsize>,
        out: &mut Aftermath<C>,
    ) -> Result<Seat<PhoneKey, C>, RegistryError> {
        let Some(tenure) = held(&self.index, server_id) else {
            out.drop_later(Garbage::Conn(conn));
            return Err(RegistryError::NoServer);
        };
        let mut phones = tenure.phones.lock();
        let count = phones.as_ref().map_or(0, |p| p.len());
        if cap != 0 && count >= cap {
            out.drop_later(Garbage::Conn(conn));
            return Err(RegistryError::PhonesAtCap);
        }
        let epoch = next_epoch(&mut self.epoch);
        self.registered += 1;
        let pos = phones
            .get_or_insert_with(|| Box::new(PhoneList::new(left.clone())))
            .insert(conn, print, epoch, out);
        drop(phones);
        Ok(Seat {
            key: PhoneKey { pos },
            epoch,
            tenure: tenure.clone(),
            replaced: false,
        })
    }

    pub(crate) fn binary_for(&self, server_id: &str) -> Option<Arc<C>> {
        Some(held(&self.index, server_id)?.binary.clone())
    }

    pub(crate) fn phone_candidate(
        &self,
        server_id: &str,
        print: u64,
        from: usize,
    ) -> Option<Candidate<C>> {
        held(&self.index, server_id)?.phone_candidate(print, from)
    }

    pub(crate) fn phones_for(&self, server_id: &str) -> Phones<C> {
        held(&self.index, server_id).map_or_else(Phones::empty, |tenure| tenure.snapshot())
    }

    /// Every binary (gracing too) and every phone, of one moment; `left` reads `Shared::left`.
    ///
    /// Tickets unregister under their tenure's lock alone, so every tenure's lock is taken first
    /// (one by one, under the registry's lock, as in `check_invariants`) and held while the list
    /// is built: a phone that left before another cannot be listed while the other is not.
    pub(crate) fn snapshot(&self, left: impl FnOnce() -> usize) -> Vec<Arc<C>> {
        let tables: Vec<_> = self
            .servers
            .values()
            .map(|tenure| tenure.phones.lock())
            .collect();
        let mut all = Vec::with_capacity(self.servers.len() + self.counts(left()).phones);
        for (tenure, table) in self.servers.values().zip(&tables) {
            all.push(tenure.binary.clone());
            if let Some(phones) = &**table {
                all.extend(phones.conns().cloned());
            }
        }
        all
    }

    /// The counts; `left` is `Shared::left` (phones unregistered through their tickets), read
    /// under the registry's lock: binaries and gracing ids change only under it, and each phone
    /// that leaves is counted in `left` in the same critical section of its tenure's lock that
    /// removes it, so the three numbers belong to the moment `left` was read.
    pub(crate) fn counts(&self, left: usize) -> Counts {
        Counts {
            binaries: self.servers.len() - self.gracing,
            gracing: self.gracing,
            phones: self.registered - left,
        }
    }

    /// Checks that the index, the server slots and their phone lists, the deadlines and the
    /// counters agree.
    #[cfg(any(test, feature = "test-util"))]
    ///
    /// `left` reads `Shared::left`. Tickets unregister under their tenure's lock alone, so every
    /// tenure's lock is held (taken one by one, in slot order, under the registry's lock: no
    /// thread ever waits for a second tenure lock while holding one) before `left` is read and
    /// until the check is done: the tables and the tally are then one moment's.
    pub(crate) fn check_invariants(
        &self,
        cap: usize,
        left: impl FnOnce() -> usize,
    ) -> Result<(), String> {
        let tables: Vec<_> = self
            .servers
            .values()
            .map(|tenure| tenure.phones.lock())
            .collect();
        let left = left();
        if self.index.len() != self.servers.len() {
            return Err(format!(
                "index has {} ids, server map {} slots",
                self.index.len(),
                self.servers.len()
            ));
        }
        for (id, ()) in &self.index {
            let held = self
                .servers
                .get(id.0.slot())
                .ok_or_else(|| format!("index entry {:?} points at a free slot", id.0.server_id))?;
            if !Arc::ptr_eq(&id.0, held) {
                return Err(format!(
                    "index entry {:?} does not key the current tenure of its slot ({:?})",
                    id.0.server_id, held.server_id
                ));
            }
        }
        let (mut gracing, mut phones) = (0, 0);
        for ((key, tenure), table) in self.servers.iter().zip(&tables) {
            let id = &*tenure.server_id;
            let epoch = tenure.epoch();
            if tenure.slot() != key {
                return Err(format!("slot of {id:?} holds a tenure seated elsewhere"));
            }
            if !tenure.is_current() {
                return Err(format!("slot of {id:?} holds an ended tenure"));
            }
            if epoch == 0 || epoch > self.epoch {
                return Err(format!("slot of {id:?} has epoch {epoch} from the future"));
            }
            if tenure.is_gracing() {
                gracing += 1;
                if !self
                    .deadlines
                    .iter()
                    .any(|w| w.key == key && w.epoch == epoch)
                {
                    return Err(format!("grace window of {id:?} is not armed"));
                }
            }
            if let Some(list) = &**table {
                if cap != 0 && list.len() > cap {
                    return Err(format!("{id:?} has {} phones, cap {cap}", list.len()));
                }
                list.check(id, epoch + 1..=self.epoch)?;
                phones += list.len();
            }
        }
        if gracing != self.gracing {
            return Err(format!(
                "{gracing} slots grace, counter says {}",
                self.gracing
            ));
        }
        let counted = self.counts(left).phones;
        if phones != counted {
            return Err(format!(
                "{phones} phones in server slots, counters say {counted}"
            ));
        }
        Ok(())
    }
}

impl<C: Conn> Drop for State<C> {
    /// The registry is gone (its last handle and every claim dropped, so only ids in a grace window
    /// are left): their tenures end, so that tickets that outlive the registry go stale (they no
    /// longer keep it alive); their phones are dropped, not closed. Runs under no lock: the state
    /// is being dropped with the registry's shared part.
    fn drop(&mut self) {
        for tenure in self.servers.values() {
            drop(tenure.end());
        }
    }
}

/// Hands out the next registry-wide epoch (never reused). A free function over the counter, so
/// it can be called while other fields of the state are borrowed.
fn next_epoch(epoch: &mut u64) -> u64 {
    *epoch += 1;
    *epoch
}

/// The current tenure (live or gracing) of `server_id`, straight from the index (a free
/// function, so it can be called while other fields of the state are borrowed).
#[expect(
    clippy::mutable_key_type,
    reason = "an IdKey hashes and compares only its tenure's server-id, which never changes"
)]
fn held<'a, C>(index: &'a HashMap<IdKey<C>, ()>, server_id: &str) -> Option<&'a Arc<Tenure<C>>> {
    let (held, ()) = index.get_key_value(server_id.as_bytes())?;
    Some(&held.0)
}

/// Whether `window` is still open: its tenure is current and gracing (a tenure opens at most
/// one window, since `release_after` consumes its claim).
fn window_open<C: Conn>(servers: &SlotMap<ServerKey, Arc<Tenure<C>>>, window: &Window) -> bool {
    servers
        .get(window.key)
        .is_some_and(|tenure| tenure.epoch() == window.epoch && tenure.is_gracing())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_conn::TestConn;
    use std::time::Duration;

    fn claim(state: &mut State<TestConn>, id: &str) -> Seat<ServerKey, TestConn> {
        let mut out = Aftermath::new();
        let tenure = Arc::new(Tenure::new(id, TestConn::new(id)));
        let seat = state.claim(tenure, Claimant::First, &mut out);
        assert!(out.run().into_messages().is_empty());
        seat.expect("free or gracing")
    }

    #[test]
    fn repeated_reclaims_do_not_grow_the_deadline_heap_without_bound() {
        let mut state = State::new();
        let later = Instant::now() + Duration::from_secs(3600);
        // Two windows stay open throughout; `srv` opens one and has it cancelled, 10,000 times.
        for id in ["a", "b"] {
            let seat = claim(&mut state, id);
            assert!(state.release_after(seat.key, seat.epoch, later).is_some());
        }
        let mut seat = claim(&mut state, "srv");
        let mut largest = 0;
        for _ in 0..10_000 {
            assert!(state.release_after(seat.key, seat.epoch, later).is_some());
            largest = largest.max(state.deadlines.len());
            seat = claim(&mut state, "srv"); // a reclaim: cancels the window
        }
        // Compacted once dead entries outnumber twice the 3 open windows plus 32: never more, and
        // lazily (cancelled windows are not searched for, so a reclaim stays O(log n)).
        assert_eq!(largest, 2 * 3 + 32);
        state.check_invariants(0, || 0).unwrap();
        assert_eq!(state.counts(0).gracing, 2);
    }
}
