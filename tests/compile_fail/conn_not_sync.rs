use relay_registry::{CloseReason, Conn, Registry, SendError};
use std::cell::Cell;
use std::sync::Arc;

/// Interior mutability without synchronisation: `Send` but not `Sync`.
struct NotSync {
    sent: Cell<usize>,
}

impl Conn for NotSync {
    fn conn_id(&self) -> &str { "not-sync" }
    type Frame = String;
    fn send(&self, _: String) -> Result<(), SendError> {
        self.sent.set(self.sent.get() + 1);
        Ok(())
    }
    fn close(&self, _: CloseReason) {}
}

fn main() {
    let registry = Registry::new();
    let _claim = registry.claim_server("srv", Arc::new(NotSync { sent: Cell::new(0) }));
}
