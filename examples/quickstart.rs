//! A short walk through the registry: claim, phones, grace, reclaim, expiry — printing the counts
//! at each step. Run with `cargo run --example quickstart`.

use relay_registry::{CloseReason, Config, Conn, ManualClock, Registry};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

/// A stand-in for a WebSocket connection: prints what the registry does to it.
struct Socket {
    id: String,
    closed: Mutex<Option<CloseReason>>,
}

impl Socket {
    fn new(id: &str) -> Arc<Socket> {
        Arc::new(Socket {
            id: id.to_owned(),
            closed: Mutex::new(None),
        })
    }
}

impl Socket {
    /// Sending is the connection type's own method: the registry never sends.
    fn send(&self, frame: &str) {
        println!("    {} <- {}", self.id, frame);
    }
}

impl Conn for Socket {
    fn conn_id(&self) -> &str {
        &self.id
    }

    fn close(&self, reason: CloseReason) {
        println!(
            "    {} closed: {} {}",
            self.id,
            reason.code(),
            reason.reason()
        );
        *self.closed.lock().unwrap() = Some(reason);
    }
}

fn main() -> Result<(), relay_registry::RegistryError> {
    let clock = ManualClock::new();
    let registry = Registry::with_config(
        Config::default()
            .with_max_phones_per_server(16)
            .with_clock(Arc::new(clock.clone())),
    );
    let show = |step: &str| println!("{step:<48} {:?}", registry.counts());

    println!("1. a binary claims server-id \"desk-1\"");
    let claim = registry.claim_server("desk-1", Socket::new("server-desk-1-a"))?;
    show("   claimed");
    match registry.claim_server("desk-1", Socket::new("server-desk-1-b")) {
        Err(e) => match CloseReason::try_from(e) {
            Ok(close) => println!("   a second binary is refused: {close}"),
            Err(e) => println!("   a second binary is refused: {e}"),
        },
        Ok(_) => unreachable!("first claim wins"),
    }

    println!("2. two phones join and exchange a frame with the binary");
    let phone_a = registry.register_phone("desk-1", Socket::new("client-desk-1-a"))?;
    let phone_b = registry.register_phone("desk-1", Socket::new("client-desk-1-b"))?;
    show("   phones joined");
    // phone -> binary: through the ticket (no lock, no hashing)
    if let Some(binary) = phone_a.binary() {
        binary.send(r#"{"conn_id":"client-desk-1-a","frame":{"hello":1}}"#);
    }
    // binary -> phone: through the claim, among its own phones only
    if let Some(phone) = claim.phone("client-desk-1-b") {
        phone.send(r#"{"hi":"b"}"#);
    }
    drop(phone_b);
    show("   phone b left (unregistered, not closed)");

    println!("3. the binary's socket drops: a 30 s grace window opens");
    claim.release_after(Duration::from_secs(30));
    show("   gracing");
    clock.advance(Duration::from_secs(10));

    println!("4. it reconnects within the window: a reclaim evicts its phones");
    let claim = registry.claim_server("desk-1", Socket::new("server-desk-1-c"))?;
    show("   reclaimed");
    println!(
        "   old ticket still registered? {}",
        phone_a.is_registered()
    );
    drop(phone_a);

    println!("5. a phone rejoins, then the binary drops for good");
    let _phone = registry.register_phone("desk-1", Socket::new("client-desk-1-d"))?;
    claim.release_after(Duration::from_secs(30));
    clock.advance(Duration::from_secs(30));
    for expired in &registry.expire_due() {
        println!(
            "   expire_due: the window of {:?} expired ({} phone(s) closed)",
            expired.server_id(),
            expired.phones()
        );
    }
    show("   after expiry");
    Ok(())
}
