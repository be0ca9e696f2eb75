//! No user code runs under the registry's lock, and a panicking `Conn::close` neither poisons the
//! registry nor skips the other closes.
//!
//! The re-entrant conns below call back into the registry from `conn_id`, `close` and `Drop`. If
//! the registry called any of them while holding its (non-reentrant) lock, the re-entrant call
//! would panic at once in a debug build (the lock keeps a per-thread "held" flag), failing the
//! test, instead of deadlocking.

mod common;

use common::check;
use relay_registry::{CloseReason, Config, Conn, Counts, ManualClock, Registry};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// A conn that re-enters the registry from every callback.
struct Reentrant {
    id: String,
    registry: OnceLock<Registry<Reentrant>>,
    seen: Mutex<Vec<String>>,
    panic_on_close: bool,
}

impl Reentrant {
    fn new(id: &str, registry: &Registry<Reentrant>) -> Arc<Self> {
        Self::build(id, registry, false)
    }

    fn build(id: &str, registry: &Registry<Reentrant>, panic_on_close: bool) -> Arc<Self> {
        let conn = Arc::new(Reentrant {
            id: id.to_owned(),
            registry: OnceLock::new(),
            seen: Mutex::new(Vec::new()),
            panic_on_close,
        });
        let _ = conn.registry.set(registry.clone());
        conn
    }

    fn poke(&self, what: &str) {
        let registry = self.registry.get().expect("set at construction");
        let counts = registry.counts();
        let _ = registry.binary_for("srv");
        let _ = registry.phones_for("srv");
        let _ = registry.snapshot();
        let _ = registry.next_deadline();
        self.seen
            .lock()
            .unwrap()
            .push(format!("{what}: {counts:?}"));
    }

    fn seen(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Conn for Reentrant {
    fn conn_id(&self) -> &str {
        self.poke("conn_id");
        &self.id
    }

    fn close(&self, reason: CloseReason) {
        self.poke(&format!("close {}", reason.code()));
        // Even claiming and registering from inside a close works.
        let registry = self.registry.get().unwrap();
        if let Ok(claim) = registry.claim_server("from-close", Reentrant::new("x", registry)) {
            drop(claim);
        }
        if self.panic_on_close {
            panic!("close of {} panicked", self.id);
        }
    }
}

fn manual_registry() -> (Registry<Reentrant>, ManualClock) {
    let clock = ManualClock::new();
    let reg = Registry::with_config(Config::default().with_clock(Arc::new(clock.clone())));
    (reg, clock)
}

#[test]
fn conn_reentering_the_registry_from_conn_id_and_close_does_not_deadlock() {
    let (reg, clock) = manual_registry();
    let claim = reg
        .claim_server("srv", Reentrant::new("bin", &reg))
        .unwrap();
    let phone = Reentrant::new("p", &reg);
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert_eq!(phone.seen().len(), 1, "conn_id was read, outside the lock");
    assert!(phone.seen()[0].starts_with("conn_id: Counts { binaries: 1, gracing: 0, phones: 0 }"));
    // A lookup by conn-id confirms the phone it found by its conn-id with every lock released
    // (the registry's and the tenure's, which `phones_for` in the callback takes).
    assert!(reg.phone_for("srv", "p").is_some());
    assert!(claim.phone("p").is_some());
    assert_eq!(phone.seen().len(), 3);
    assert!(
        phone.seen()[1..]
            .iter()
            .all(|s| s.starts_with("conn_id: Counts { binaries: 1, gracing: 0, phones: 1 }"))
    );

    claim.release_after(Duration::from_secs(1));
    clock.advance(Duration::from_secs(1));
    assert_eq!(reg.expire_due().len(), 1);
    // The registry's state was final before the close ran: the phone saw itself gone.
    assert_eq!(
        phone.seen()[3],
        "close 1011: Counts { binaries: 0, gracing: 0, phones: 0 }"
    );
    drop(ticket);
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
}

#[test]
fn guard_dropped_from_inside_close_does_not_deadlock() {
    struct DropsTicket {
        ticket: Mutex<Option<relay_registry::PhoneTicket<DropsTicket>>>,
    }
    impl Conn for DropsTicket {
        fn conn_id(&self) -> &str {
            "p"
        }
        fn close(&self, _: CloseReason) {
            // The phone's own task reacts to the close by dropping its (now stale) ticket.
            drop(self.ticket.lock().unwrap().take());
        }
    }
    let reg = Registry::new();
    let claim = reg
        .claim_server(
            "srv",
            Arc::new(DropsTicket {
                ticket: Mutex::new(None),
            }),
        )
        .unwrap();
    let phone = Arc::new(DropsTicket {
        ticket: Mutex::new(None),
    });
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    *phone.ticket.lock().unwrap() = Some(ticket);
    assert!(claim.release());
    assert!(phone.ticket.lock().unwrap().is_none());
    check(&reg);
}

#[test]
fn removed_conns_are_dropped_after_the_lock_is_released() {
    /// A conn whose `Drop` re-enters the registry and counts itself. Had a drop run under the
    /// registry's lock, its re-entrant call would panic at once in this debug build (the lock's
    /// "held" flag), so the registry call that dropped it would fail the test instead of hanging.
    struct ReentersOnDrop {
        registry: Registry<ReentersOnDrop>,
        drops: Arc<AtomicUsize>,
    }
    impl Conn for ReentersOnDrop {
        fn conn_id(&self) -> &str {
            "c"
        }
        fn close(&self, _: CloseReason) {}
    }
    impl Drop for ReentersOnDrop {
        fn drop(&mut self) {
            let _ = self.registry.counts();
            let _ = self.registry.snapshot();
            self.drops.fetch_add(1, Ordering::SeqCst);
        }
    }
    let reg = Registry::new();
    let drops = Arc::new(AtomicUsize::new(0));
    let conn = || {
        Arc::new(ReentersOnDrop {
            registry: reg.clone(),
            drops: drops.clone(),
        })
    };
    let dropped = || drops.load(Ordering::SeqCst);
    // The test keeps no reference of its own: the registry (or a guard) holds the last one.
    let claim = reg.claim_server("srv", conn()).unwrap();
    assert!(reg.claim_server("srv", conn()).is_err());
    assert_eq!(dropped(), 1, "the refused binary, dropped by the registry");
    let unregistered = reg.register_phone("srv", conn()).unwrap();
    let _ = reg.phones_for("srv"); // a cached snapshot: it holds the phone too
    drop(unregistered);
    assert_eq!(
        dropped(),
        2,
        "the unregistered phone and the outdated snapshot let go"
    );
    assert!(claim.release_after(Duration::from_secs(1)));
    // A reclaim: the registry holds the last references to the replaced binary.
    let reclaim = reg.claim_server("srv", conn()).unwrap();
    assert_eq!(dropped(), 3, "the replaced binary, dropped by the registry");
    let evicted = reg.register_phone("srv", conn()).unwrap();
    let _ = reg.phones_for("srv");
    drop(reclaim);
    assert_eq!(
        dropped(),
        3,
        "the evicted phone's ticket still holds it and its binary"
    );
    drop(evicted);
    assert_eq!(
        dropped(),
        5,
        "the evicted phone and its binary, with the stale ticket"
    );
    assert!(reg.register_phone("none", conn()).is_err());
    assert_eq!(dropped(), 6, "the refused phone, dropped by the registry");
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
}

#[test]
fn panicking_close_still_runs_the_other_closes_then_resumes_the_first_panic() {
    let (reg, _) = manual_registry();
    let claim = reg
        .claim_server("srv", Reentrant::new("bin", &reg))
        .unwrap();
    let phones: Vec<_> = (0..4)
        .map(|i| Reentrant::build(&format!("p{i}"), &reg, i % 2 == 0))
        .collect();
    let tickets: Vec<_> = phones
        .iter()
        .map(|p| reg.register_phone("srv", p.clone()).unwrap())
        .collect();
    let payload = catch_unwind(AssertUnwindSafe(|| claim.release())).unwrap_err();
    let message = payload.downcast_ref::<String>().unwrap();
    assert_eq!(
        message, "close of p0 panicked",
        "the first panic is resumed"
    );
    for phone in &phones {
        assert_eq!(
            phone.seen().last().unwrap(),
            "close 4404: Counts { binaries: 0, gracing: 0, phones: 0 }"
        );
    }
    // The registry is consistent and usable; no id is left held without a guard.
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
    assert!(tickets.iter().all(|t| !t.is_registered()));
    assert!(
        reg.claim_server("srv", Reentrant::new("bin2", &reg))
            .is_ok()
    );
}

#[test]
fn panicking_close_during_unwind_is_swallowed_instead_of_aborting() {
    let (reg, _) = manual_registry();
    let phone = Reentrant::build("p", &reg, true);
    let reg2 = reg.clone();
    let phone2 = phone.clone();
    let joined = std::thread::spawn(move || {
        let claim = reg2
            .claim_server("srv", Reentrant::new("bin", &reg2))
            .unwrap();
        let _ticket = reg2.register_phone("srv", phone2).unwrap();
        let _claim_dropped_first = claim;
        panic!("the connection task's own panic");
    })
    .join();
    let payload = joined.unwrap_err();
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the connection task's own panic")
    );
    assert_eq!(
        phone.seen().len(),
        2,
        "conn_id, then the close that panicked"
    );
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
}
