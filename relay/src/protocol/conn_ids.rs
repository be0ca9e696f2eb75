//! Relay-assigned conn-ids: `server-<id>-<8 hex>` and `client-<id>-<8 hex>`.

/// Which side of the relay a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    /// A binary, on `/v1/server` or `/v2/server`.
    Binary,
    /// A phone, on `/v1/client` or `/v2/client`.
    Phone,
}

impl Side {
    /// The conn-id prefix of this side.
    fn prefix(self) -> &'static str {
        match self {
            Side::Binary => "server",
            Side::Phone => "client",
        }
    }
}

/// A fresh conn-id for a connection of `side` to `server_id`, with 32 random bits.
pub(crate) fn conn_id(side: Side, server_id: &str) -> String {
    let bits = getrandom::u32().unwrap_or_else(|_| fallback_bits());
    format!("{}-{server_id}-{bits:08x}", side.prefix())
}

/// Random bits from std's per-process hash keys, should the OS source be unavailable.
fn fallback_bits() -> u32 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed)) as u32
}
