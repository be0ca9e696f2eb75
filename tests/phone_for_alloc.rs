//! `phone_for` and `ClaimServer::phone` allocate nothing; an unchanged `phones_for` snapshot is
//! shared, not rebuilt. Checked with a counting global allocator, in its own test binary.

use relay_registry::{CloseReason, Conn, Registry};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::Arc;

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; only counts calls on the current thread.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations_during<R>(f: impl FnOnce() -> R) -> (usize, R) {
    let before = ALLOCATIONS.with(Cell::get);
    let result = f();
    (ALLOCATIONS.with(Cell::get) - before, result)
}

struct Phone(String);

impl Conn for Phone {
    fn conn_id(&self) -> &str {
        &self.0
    }
    fn close(&self, _: CloseReason) {}
}

#[test]
fn phone_for_allocates_nothing() {
    let registry = Registry::new();
    let claim = registry
        .claim_server("srv", Arc::new(Phone("bin".into())))
        .unwrap();
    let _tickets: Vec<_> = (0..16)
        .map(|i| {
            registry
                .register_phone("srv", Arc::new(Phone(format!("client-srv-{i:08x}"))))
                .unwrap()
        })
        .collect();
    let (n, found) = allocations_during(|| registry.phone_for("srv", "client-srv-0000000f"));
    assert!(found.is_some());
    assert_eq!(n, 0, "phone_for allocated");
    let (n, missing) = allocations_during(|| registry.phone_for("srv", "client-srv-nope"));
    assert!(missing.is_none());
    assert_eq!(n, 0, "a miss allocated");
    let (n, found) = allocations_during(|| claim.phone("client-srv-00000003"));
    assert!(found.is_some());
    assert_eq!(n, 0, "ServerClaim::phone allocated");
    let (n, found) = allocations_during(|| registry.binary_for("srv"));
    assert!(found.is_some());
    assert_eq!(n, 0, "binary_for allocated");
}

#[test]
fn unchanged_phones_snapshot_is_shared_without_allocating() {
    let registry = Registry::new();
    let claim = registry
        .claim_server("srv", Arc::new(Phone("bin".into())))
        .unwrap();
    let _tickets: Vec<_> = (0..4)
        .map(|i| {
            registry
                .register_phone("srv", Arc::new(Phone(format!("p{i}"))))
                .unwrap()
        })
        .collect();
    let first = registry.phones_for("srv");
    let (n, again) = allocations_during(|| registry.phones_for("srv"));
    assert_eq!(n, 0, "phones_for of an unchanged set allocated");
    assert_eq!(again.len(), 4);
    let (n, via_claim) = allocations_during(|| claim.phones());
    assert_eq!(n, 0, "ServerClaim::phones of an unchanged set allocated");
    assert_eq!(via_claim.len(), first.len());
    let ticket = _tickets.into_iter().next().unwrap();
    let (n, binary) = allocations_during(|| ticket.binary());
    assert!(binary.is_some());
    assert_eq!(n, 0, "PhoneTicket::binary allocated");
}
