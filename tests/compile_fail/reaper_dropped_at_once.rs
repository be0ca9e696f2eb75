// `Reaper::spawn(&registry);` on its own line stops the reaper at once (grace windows would never
// expire): the compiler must say so. Relays deny the lint, as here.
#![deny(unused_must_use)]

use relay_registry::{CloseReason, Conn, Reaper, Registry};

struct Ws;

impl Conn for Ws {
    fn conn_id(&self) -> &str {
        "ws"
    }
    fn close(&self, _reason: CloseReason) {}
}

fn main() {
    let registry = Registry::<Ws>::new();
    Reaper::spawn(&registry);
    Reaper::spawn_with(&registry, |_expiries| {});
}
