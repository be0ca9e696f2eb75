use relay_registry::{CloseReason, Conn, Registry};
use std::cell::Cell;
use std::sync::Arc;

/// Interior mutability without synchronisation: `Send` but not `Sync`.
struct NotSync {
    closes: Cell<usize>,
}

impl Conn for NotSync {
    fn conn_id(&self) -> &str { "not-sync" }
    fn close(&self, _: CloseReason) { self.closes.set(self.closes.get() + 1); }
}

fn main() {
    let registry = Registry::new();
    let _claim = registry.claim_server("srv", Arc::new(NotSync { closes: Cell::new(0) }));
}
