//! The connection type of the benchmarks and `benches/src/bin/footprint.rs`: a conn-id and nothing else,
//! so that what is measured is the registry, not the connection.

#![allow(dead_code)]

use relay_registry::{CloseReason, Conn};
use std::sync::Arc;

/// A connection with a relay-shaped conn-id and no-op `send`/`close`.
pub struct BenchConn {
    id: String,
}

impl BenchConn {
    pub fn new(id: String) -> Arc<Self> {
        Arc::new(BenchConn { id })
    }

    /// The conn-id, read without going through the `Conn` trait.
    pub fn id(&self) -> &str {
        &self.id
    }
}

impl Conn for BenchConn {
    fn conn_id(&self) -> &str {
        &self.id
    }
    fn close(&self, _reason: CloseReason) {}
}

/// A 16-byte server-id, unique per `n`.
pub fn server_id(n: usize) -> String {
    format!("srv-{n:012x}")
}

/// The relay's conn-id shapes (`server-<id>-<8 hex>`, `client-<id>-<8 hex>`).
pub fn binary_conn(id: &str, n: usize) -> Arc<BenchConn> {
    BenchConn::new(format!("server-{id}-{n:08x}"))
}

/// A phone conn with the relay's `client-<id>-<8 hex>` conn-id.
pub fn phone_conn(id: &str, n: usize) -> Arc<BenchConn> {
    BenchConn::new(format!("client-{id}-{n:08x}"))
}

/// A deterministic shuffle (splitmix64 + Fisher–Yates): identical random order in every run.
pub fn shuffle<T>(items: &mut [T], seed: u64) {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    };
    for i in (1..items.len()).rev() {
        let j = (next() % (i as u64 + 1)) as usize;
        items.swap(i, j);
    }
}
