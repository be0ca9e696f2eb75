//! The phones this instance serves for owners elsewhere (see [`away`](super::away)), held so
//! that shutdown (1001) and a fence (1012) reach them; plain state of the [`Cluster`](super::Cluster).

use crate::conn::endpoint::Endpoint;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// The away phones of this instance.
#[derive(Default)]
pub(crate) struct AwaySet {
    phones: Mutex<HashMap<u64, Arc<Endpoint>>>,
    next: AtomicU64,
}

impl AwaySet {
    /// How many there are.
    pub(crate) fn len(&self) -> usize {
        self.phones.lock().len()
    }

    /// Every one of them, now.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Endpoint>> {
        self.phones.lock().values().cloned().collect()
    }

    pub(super) fn insert(&self, phone: Arc<Endpoint>) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        self.phones.lock().insert(key, phone);
        key
    }

    pub(super) fn remove(&self, key: u64) {
        let removed = self.phones.lock().remove(&key);
        drop(removed);
    }
}
