//! One async lock per server-id, striped: 256 tokio mutexes picked by a keyed hash of the id, so
//! the table is fixed in size and needs no clean-up. Two ids may share a stripe; a stripe is
//! held only for a few directory round trips (each bounded by the request timeout), never
//! while waiting for a client.

use std::hash::{BuildHasher, RandomState};
use tokio::sync::{Mutex, MutexGuard};

const STRIPES: usize = 256;

/// The locks. See the module docs.
pub(super) struct Locks {
    stripes: Vec<Mutex<()>>,
    hasher: RandomState,
}

impl Locks {
    /// 256 free stripes, with a fresh hash key.
    pub(super) fn new() -> Self {
        Locks {
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Waits for `server_id`'s lock.
    pub(super) async fn lock(&self, server_id: &str) -> MutexGuard<'_, ()> {
        let stripe = self.hasher.hash_one(server_id) as usize % STRIPES;
        self.stripes[stripe].lock().await
    }
}
