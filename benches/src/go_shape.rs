//! `GoShape`: a faithful Rust port of the Go registry that `relay-registry` replaces, used only as
//! the baseline of the benchmarks and of `benches/src/bin/footprint.rs` (it is not part of the library).
//!
//! The Go design: one `RWMutex` over `map[string]Conn` (binaries) and `map[string][]Conn`
//! (phones). Every operation hashes the server-id under that lock; a phone is found and
//! unregistered by scanning its id's list and asking each conn for its conn-id (under the lock);
//! unregister swap-removes and deletes the list when it becomes empty; `Counts` sums every list;
//! `PhonesFor` copies the list into a new slice. Grace timers are not ported: no benchmark uses
//! them.

#![allow(dead_code)]

use parking_lot::RwLock;
use relay_registry::{CloseReason, Conn, Counts, RegistryError};
use std::collections::HashMap;
use std::sync::Arc;

/// The Go registry's data: one lock over two maps keyed by the server-id string.
pub struct GoShape<C> {
    inner: RwLock<Maps<C>>,
}

struct Maps<C> {
    binaries: HashMap<String, Arc<C>>,
    phones: HashMap<String, Vec<Arc<C>>>,
}

impl<C: Conn> Default for GoShape<C> {
    fn default() -> Self {
        Self::new()
    }
}

impl<C: Conn> GoShape<C> {
    pub fn new() -> Self {
        GoShape {
            inner: RwLock::new(Maps {
                binaries: HashMap::new(),
                phones: HashMap::new(),
            }),
        }
    }

    /// `RegisterServer`: first claim wins.
    pub fn register_server(&self, server_id: &str, conn: Arc<C>) -> Result<(), RegistryError> {
        let mut maps = self.inner.write();
        if maps.binaries.contains_key(server_id) {
            return Err(RegistryError::ServerIdConflict);
        }
        maps.binaries.insert(server_id.to_owned(), conn);
        Ok(())
    }

    /// `UnregisterServer`: removes the binary and every phone of the id; the phones are closed
    /// (the Go registry closed them under its lock; here after it, which only favours the port).
    pub fn unregister_server(&self, server_id: &str) {
        let (binary, phones) = {
            let mut maps = self.inner.write();
            (
                maps.binaries.remove(server_id),
                maps.phones.remove(server_id),
            )
        };
        for phone in phones.into_iter().flatten() {
            phone.close(CloseReason::Released);
        }
        drop(binary);
    }

    /// `RegisterPhone`: needs a binary; appends to the id's list (creating it if absent).
    pub fn register_phone(&self, server_id: &str, conn: Arc<C>) -> Result<(), RegistryError> {
        let mut maps = self.inner.write();
        if !maps.binaries.contains_key(server_id) {
            return Err(RegistryError::NoServer);
        }
        match maps.phones.get_mut(server_id) {
            Some(list) => list.push(conn),
            None => {
                maps.phones.insert(server_id.to_owned(), vec![conn]);
            }
        }
        Ok(())
    }

    /// `UnregisterPhone`: scans the id's list comparing conn-ids, swap-removes the match, and
    /// deletes the list when it becomes empty.
    pub fn unregister_phone(&self, server_id: &str, conn_id: &str) -> bool {
        let removed = {
            let mut maps = self.inner.write();
            let Some(list) = maps.phones.get_mut(server_id) else {
                return false;
            };
            let Some(pos) = list.iter().position(|p| p.conn_id() == conn_id) else {
                return false;
            };
            let removed = list.swap_remove(pos);
            if list.is_empty() {
                maps.phones.remove(server_id);
            }
            removed
        };
        drop(removed);
        true
    }

    /// `BinaryFor`: hashes the id under the read lock.
    pub fn binary_for(&self, server_id: &str) -> Option<Arc<C>> {
        self.inner.read().binaries.get(server_id).cloned()
    }

    /// `PhoneFor`: hashes the id and scans its phones' conn-ids under the read lock.
    pub fn phone_for(&self, server_id: &str, conn_id: &str) -> Option<Arc<C>> {
        let maps = self.inner.read();
        maps.phones
            .get(server_id)?
            .iter()
            .find(|p| p.conn_id() == conn_id)
            .cloned()
    }

    /// `PhonesFor`: copies the id's list into a new slice.
    pub fn phones_for(&self, server_id: &str) -> Vec<Arc<C>> {
        self.inner
            .read()
            .phones
            .get(server_id)
            .cloned()
            .unwrap_or_default()
    }

    /// `Counts`: the number of binaries, and the phones summed over every list.
    pub fn counts(&self) -> Counts {
        let maps = self.inner.read();
        Counts {
            binaries: maps.binaries.len(),
            gracing: 0,
            phones: maps.phones.values().map(Vec::len).sum(),
        }
    }
}
