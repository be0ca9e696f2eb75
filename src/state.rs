//! `State`: the registry's data, and every operation on it. Runs only under the registry's lock.
//!
//! Nothing here locks, calls into a `Conn`, reads a clock or drops an `Arc<C>`: whatever would run
//! user code goes into the [`Aftermath`] for after the lock is released.

use crate::aftermath::{Aftermath, Garbage};
use crate::binding::Binding;
use crate::conn::{CloseReason, Conn};
use crate::counts::Counts;
use crate::deadlines::{Deadlines, Window};
use crate::error::RegistryError;
use crate::keys::{PhoneKey, ServerKey};
use crate::phones::Phones;
use slotmap::SlotMap;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

/// The whole registry: the id index, the server and phone slots, the grace deadlines, the counters.
pub(crate) struct State<C: Conn> {
    /// server-id → its slot. std's `RandomState` (SipHash, seeded per process): ids are
    /// attacker-chosen, so the index must not be a fast unkeyed hash.
    index: HashMap<Arc<str>, ServerKey>,
    servers: SlotMap<ServerKey, ServerSlot<C>>,
    phones: SlotMap<PhoneKey, PhoneSlot>,
    deadlines: Deadlines,
    /// The last epoch handed out; epochs are registry-wide and never reused.
    epoch: u64,
    /// How many server slots are in a grace window (the rest are live).
    gracing: usize,
}

/// One held server-id.
struct ServerSlot<C> {
    /// The epoch of the current tenure; a guard acts only if its epoch matches.
    epoch: u64,
    binding: Arc<Binding<C>>,
    /// `Some(deadline)` while the id is in a grace window.
    grace: Option<Instant>,
    /// The phones of the current tenure, stored inline so one lookup scans one array.
    phones: Vec<PhoneEntry<C>>,
    /// The latest [`Phones`] snapshot of `phones`, built on demand and dropped on every change.
    snapshot: Option<Arc<[Arc<C>]>>,
}

struct PhoneEntry<C> {
    key: PhoneKey,
    /// Read from the conn once, before the lock, at registration.
    conn_id: Box<str>,
    conn: Arc<C>,
}

/// Where a phone registration lives: its server slot and its position in that slot's list.
struct PhoneSlot {
    server: ServerKey,
    pos: usize,
    epoch: u64,
}

/// Who may claim a held id.
pub(crate) enum Claimant<'a, C> {
    /// `claim_server`: only a gracing id may be claimed (a reclaim).
    First,
    /// `takeover_server`: only an id held by exactly this conn (or an empty id, for `None`).
    Incumbent(Option<&'a Arc<C>>),
}

/// What a guard needs to know about the slot it was given.
pub(crate) struct Seat<K, C> {
    pub(crate) key: K,
    pub(crate) epoch: u64,
    pub(crate) binding: Arc<Binding<C>>,
}

impl<C: Conn> State<C> {
    pub(crate) fn new() -> Self {
        State {
            index: HashMap::new(),
            servers: SlotMap::with_key(),
            phones: SlotMap::with_key(),
            deadlines: Deadlines::default(),
            epoch: 0,
            gracing: 0,
        }
    }

    fn next_epoch(&mut self) -> u64 {
        self.epoch += 1;
        self.epoch
    }

    /// Installs `binding` on its server-id: a fresh claim, a reclaim of a gracing id, or a takeover.
    pub(crate) fn claim(
        &mut self,
        binding: Arc<Binding<C>>,
        claimant: Claimant<'_, C>,
        out: &mut Aftermath<C>,
    ) -> Result<Seat<ServerKey, C>, RegistryError> {
        let held = self.index.get(&*binding.server_id).copied();
        let allowed = match (held, &claimant) {
            (None, Claimant::First | Claimant::Incumbent(None)) => true,
            (None, Claimant::Incumbent(Some(_))) => false,
            (Some(key), Claimant::First) => self.servers[key].grace.is_some(),
            (Some(key), Claimant::Incumbent(Some(incumbent))) => {
                Arc::ptr_eq(incumbent, &self.servers[key].binding.binary)
            }
            (Some(_), Claimant::Incumbent(None)) => false,
        };
        if !allowed {
            out.drop_later(Garbage::Binding(binding));
            return Err(RegistryError::ServerIdConflict);
        }
        let epoch = self.next_epoch();
        let key = match held {
            Some(key) => {
                self.end_tenure(key, CloseReason::Reclaimed, out);
                let slot = &mut self.servers[key];
                slot.epoch = epoch;
                let old = std::mem::replace(&mut slot.binding, binding.clone());
                out.drop_later(Garbage::Binding(old));
                key
            }
            None => {
                let key = self.servers.insert(ServerSlot {
                    epoch,
                    binding: binding.clone(),
                    grace: None,
                    phones: Vec::new(),
                    snapshot: None,
                });
                self.index.insert(binding.server_id.clone(), key);
                key
            }
        };
        Ok(Seat {
            key,
            epoch,
            binding,
        })
    }

    /// Whether the claim `(key, epoch)` is current and not released into a grace window.
    fn holds(&self, key: ServerKey, epoch: u64) -> bool {
        self.servers
            .get(key)
            .is_some_and(|s| s.epoch == epoch && s.grace.is_none())
    }

    /// Ends the tenure in slot `key`: its binding goes stale, its window (if any) is cancelled, and
    /// every phone is removed and scheduled to be closed with `reason`. The slot itself stays.
    fn end_tenure(&mut self, key: ServerKey, reason: CloseReason, out: &mut Aftermath<C>) {
        let slot = &mut self.servers[key];
        slot.binding.end();
        if slot.grace.take().is_some() {
            self.gracing -= 1;
        }
        for entry in slot.phones.drain(..) {
            self.phones.remove(entry.key);
            out.close(entry.conn, reason);
        }
        slot.phones = Vec::new();
        if let Some(snapshot) = slot.snapshot.take() {
            out.drop_later(Garbage::Snapshot(snapshot));
        }
    }

    /// Ends the tenure in slot `key` and frees the slot and its id.
    fn remove_server(&mut self, key: ServerKey, reason: CloseReason, out: &mut Aftermath<C>) {
        self.end_tenure(key, reason, out);
        if let Some(slot) = self.servers.remove(key) {
            self.index.remove(&*slot.binding.server_id);
            out.drop_later(Garbage::Binding(slot.binding));
        }
    }

    /// Releases the claim `(key, epoch)` now; false (and nothing changes) if it is stale.
    pub(crate) fn release(&mut self, key: ServerKey, epoch: u64, out: &mut Aftermath<C>) -> bool {
        if !self.holds(key, epoch) {
            return false;
        }
        self.remove_server(key, CloseReason::Released, out);
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
        self.servers[key].grace = Some(deadline);
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

    /// Expires every window due at `now`; returns how many.
    pub(crate) fn expire_due(&mut self, now: Instant, out: &mut Aftermath<C>) -> usize {
        let mut expired = 0;
        while let Some(window) = self.deadlines.peek() {
            if window.deadline > now {
                break;
            }
            self.deadlines.pop();
            if window_open(&self.servers, &window) {
                self.remove_server(window.key, CloseReason::GraceExpired, out);
                expired += 1;
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
        conn_id: Box<str>,
        cap: usize,
        out: &mut Aftermath<C>,
    ) -> Result<Seat<PhoneKey, C>, RegistryError> {
        let Some(&server) = self.index.get(server_id) else {
            out.drop_later(Garbage::Conn(conn));
            return Err(RegistryError::NoServer);
        };
        if cap != 0 && self.servers[server].phones.len() >= cap {
            out.drop_later(Garbage::Conn(conn));
            return Err(RegistryError::PhonesAtCap);
        }
        let epoch = self.next_epoch();
        let slot = &mut self.servers[server];
        let pos = slot.phones.len();
        let key = self.phones.insert(PhoneSlot { server, pos, epoch });
        slot.phones.push(PhoneEntry { key, conn_id, conn });
        if let Some(snapshot) = slot.snapshot.take() {
            out.drop_later(Garbage::Snapshot(snapshot));
        }
        Ok(Seat {
            key,
            epoch,
            binding: slot.binding.clone(),
        })
    }

    /// Unregisters the phone `(key, epoch)` in O(1); false (and nothing changes) if it is stale.
    pub(crate) fn unregister(&mut self, key: PhoneKey, epoch: u64, out: &mut Aftermath<C>) -> bool {
        if self.phones.get(key).is_none_or(|p| p.epoch != epoch) {
            return false;
        }
        let Some(PhoneSlot { server, pos, .. }) = self.phones.remove(key) else {
            return false;
        };
        let slot = &mut self.servers[server];
        let entry = slot.phones.swap_remove(pos);
        if let Some(moved) = slot.phones.get(pos) {
            self.phones[moved.key].pos = pos;
        }
        if let Some(snapshot) = slot.snapshot.take() {
            out.drop_later(Garbage::Snapshot(snapshot));
        }
        out.drop_later(Garbage::Conn(entry.conn));
        true
    }

    pub(crate) fn binary_for(&self, server_id: &str) -> Option<Arc<C>> {
        let key = *self.index.get(server_id)?;
        Some(self.servers[key].binding.binary.clone())
    }

    pub(crate) fn phone_for(&self, server_id: &str, conn_id: &str) -> Option<Arc<C>> {
        let key = *self.index.get(server_id)?;
        find_phone(&self.servers[key], conn_id)
    }

    /// `phone_for` through a claim: no id hashing, and `None` once the claim is stale.
    pub(crate) fn phone_of(&self, key: ServerKey, epoch: u64, conn_id: &str) -> Option<Arc<C>> {
        let slot = self.servers.get(key).filter(|s| s.epoch == epoch)?;
        find_phone(slot, conn_id)
    }

    pub(crate) fn phones_for(&mut self, server_id: &str) -> Phones<C> {
        match self.index.get(server_id) {
            Some(&key) => snapshot_of(&mut self.servers[key]),
            None => Phones::empty(),
        }
    }

    /// `phones_for` through a claim: no id hashing, and empty once the claim is stale.
    pub(crate) fn phones_of(&mut self, key: ServerKey, epoch: u64) -> Phones<C> {
        match self.servers.get_mut(key).filter(|s| s.epoch == epoch) {
            Some(slot) => snapshot_of(slot),
            None => Phones::empty(),
        }
    }

    /// Every binary (gracing too) and every phone.
    pub(crate) fn snapshot(&self) -> Vec<Arc<C>> {
        let mut all = Vec::with_capacity(self.servers.len() + self.phones.len());
        for slot in self.servers.values() {
            all.push(slot.binding.binary.clone());
            all.extend(slot.phones.iter().map(|p| p.conn.clone()));
        }
        all
    }

    pub(crate) fn counts(&self) -> Counts {
        Counts {
            binaries: self.servers.len() - self.gracing,
            gracing: self.gracing,
            phones: self.phones.len(),
        }
    }

    /// Checks that the index, both slot maps, the deadlines and the counters agree.
    pub(crate) fn check_invariants(&self, cap: usize) -> Result<(), String> {
        if self.index.len() != self.servers.len() {
            return Err(format!(
                "index has {} ids, server map {} slots",
                self.index.len(),
                self.servers.len()
            ));
        }
        for (id, &key) in &self.index {
            let slot = self
                .servers
                .get(key)
                .ok_or_else(|| format!("index entry {id:?} points at a free slot"))?;
            if *slot.binding.server_id != **id {
                return Err(format!(
                    "index entry {id:?} points at the slot of {:?}",
                    slot.binding.server_id
                ));
            }
        }
        let (mut gracing, mut phones) = (0, 0);
        for (key, slot) in &self.servers {
            let id = &slot.binding.server_id;
            if !slot.binding.is_live() {
                return Err(format!("slot of {id:?} holds an ended binding"));
            }
            if slot.epoch == 0 || slot.epoch > self.epoch {
                return Err(format!(
                    "slot of {id:?} has epoch {} from the future",
                    slot.epoch
                ));
            }
            if let Some(deadline) = slot.grace {
                gracing += 1;
                let armed = Window {
                    deadline,
                    key,
                    epoch: slot.epoch,
                };
                if !self.deadlines.iter().any(|w| *w == armed) {
                    return Err(format!("grace window of {id:?} is not armed"));
                }
            }
            if cap != 0 && slot.phones.len() > cap {
                return Err(format!(
                    "{id:?} has {} phones, cap {cap}",
                    slot.phones.len()
                ));
            }
            for (pos, entry) in slot.phones.iter().enumerate() {
                let phone = self
                    .phones
                    .get(entry.key)
                    .ok_or_else(|| format!("phone {:?} of {id:?} has no slot", entry.conn_id))?;
                if phone.server != key || phone.pos != pos {
                    return Err(format!("phone {:?} of {id:?} is misplaced", entry.conn_id));
                }
                if phone.epoch <= slot.epoch || phone.epoch > self.epoch {
                    return Err(format!(
                        "phone {:?} of {id:?} has a bad epoch",
                        entry.conn_id
                    ));
                }
            }
            phones += slot.phones.len();
            if let Some(snapshot) = &slot.snapshot {
                let same = snapshot.len() == slot.phones.len()
                    && snapshot
                        .iter()
                        .zip(&slot.phones)
                        .all(|(a, b)| Arc::ptr_eq(a, &b.conn));
                if !same {
                    return Err(format!("cached phone snapshot of {id:?} is outdated"));
                }
            }
        }
        if gracing != self.gracing {
            return Err(format!(
                "{gracing} slots grace, counter says {}",
                self.gracing
            ));
        }
        if phones != self.phones.len() {
            return Err(format!(
                "{phones} phones in server slots, {} in the phone map",
                self.phones.len()
            ));
        }
        Ok(())
    }
}

fn window_open<C>(servers: &SlotMap<ServerKey, ServerSlot<C>>, window: &Window) -> bool {
    servers
        .get(window.key)
        .is_some_and(|s| s.epoch == window.epoch && s.grace == Some(window.deadline))
}

fn find_phone<C>(slot: &ServerSlot<C>, conn_id: &str) -> Option<Arc<C>> {
    slot.phones
        .iter()
        .find(|p| &*p.conn_id == conn_id)
        .map(|p| p.conn.clone())
}

fn snapshot_of<C>(slot: &mut ServerSlot<C>) -> Phones<C> {
    if slot.phones.is_empty() {
        return Phones::empty();
    }
    let list = slot
        .snapshot
        .get_or_insert_with(|| slot.phones.iter().map(|p| p.conn.clone()).collect());
    Phones::shared(list.clone())
}
