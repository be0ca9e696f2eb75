use relay_registry::{CloseReason, Conn, Registry};
use std::sync::Arc;

struct Ws;
impl Conn for Ws {
    fn conn_id(&self) -> &str { "ws" }
    fn close(&self, _: CloseReason) {}
}

fn main() {
    let registry = Registry::new();
    let _claim = registry.claim_server("srv", Arc::new(Ws)).unwrap();
    let ticket = registry.register_phone("srv", Arc::new(Ws)).unwrap();
    let _copy = ticket.clone();
}
