//! Heap bytes per server-id and per phone: `Registry` against `GoShape` (the port of the Go
//! registry shared with the benchmarks), at 250,000 ids × 4 phones.
//!
//! A counting global allocator tracks live heap bytes. The connections themselves and the vectors
//! that hold the guards are allocated before measuring, so what is counted is what the registry
//! (and anything its guards own on the heap) adds: first with every id claimed by its binary
//! (16-byte ids), then with 4 phones registered per id (conn-ids in the relay's
//! `client-<id>-<8 hex>` shape, 32 bytes).
//!
//! ```text
//! cargo run --release -p relay-registry-benches --bin footprint
//! ```

use relay_registry::{PhoneTicket, Registry, ServerClaim};
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bench_support::bench_conn::{BenchConn, binary_conn, phone_conn, server_id};
use bench_support::go_shape::GoShape;

/// The system allocator, counting live bytes and allocation calls.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to `System` with the caller's arguments unchanged; the counters
// are plain atomics and do not affect the allocation.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size, Ordering::Relaxed);
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        CALLS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: forwarded as received.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn live() -> usize {
    LIVE.load(Ordering::Relaxed)
}

const IDS: usize = 250_000;
const PHONES_PER_ID: usize = 4;

struct Population {
    ids: Vec<String>,
    binaries: Vec<Arc<BenchConn>>,
    phones: Vec<Arc<BenchConn>>,
}

/// Bytes per id (binaries only) and per phone (the increase when the phones join).
struct Footprint {
    per_id: f64,
    per_phone: f64,
}

fn measure_registry(pop: &Population) -> Footprint {
    let mut claims: Vec<ServerClaim<BenchConn>> = Vec::with_capacity(IDS);
    let mut tickets: Vec<PhoneTicket<BenchConn>> = Vec::with_capacity(IDS * PHONES_PER_ID);
    let base = live();
    let registry = Registry::new();
    for (id, binary) in pop.ids.iter().zip(&pop.binaries) {
        claims.push(registry.claim_server(id, binary.clone()).unwrap());
    }
    let with_ids = live();
    for (n, phone) in pop.phones.iter().enumerate() {
        let id = &pop.ids[n / PHONES_PER_ID];
        tickets.push(registry.register_phone(id, phone.clone()).unwrap());
    }
    let with_phones = live();
    assert_eq!(registry.counts().phones, IDS * PHONES_PER_ID);
    // Snapshots of an unchanged set share the cached list: check that none allocates.
    for claim in claims.iter().take(1_000) {
        drop(claim.phones());
    }
    let calls = CALLS.load(Ordering::Relaxed);
    for claim in claims.iter().take(1_000) {
        assert_eq!(claim.phones().len(), PHONES_PER_ID);
        assert_eq!(registry.phones_for(claim.server_id()).len(), PHONES_PER_ID);
        assert!(claim.phone(pop.phones[0].id()).is_none() || claim.server_id() == pop.ids[0]);
    }
    let snapshot_allocs = CALLS.load(Ordering::Relaxed) - calls;
    println!(
        "Registry: allocations in 1,000 repeated claim.phones() + phones_for() + claim.phone(): \
         {snapshot_allocs}"
    );
    drop(tickets);
    drop(claims);
    Footprint {
        per_id: (with_ids - base) as f64 / IDS as f64,
        per_phone: (with_phones - with_ids) as f64 / (IDS * PHONES_PER_ID) as f64,
    }
}

fn measure_go(pop: &Population) -> Footprint {
    let base = live();
    let go = GoShape::new();
    for (id, binary) in pop.ids.iter().zip(&pop.binaries) {
        go.register_server(id, binary.clone()).unwrap();
    }
    let with_ids = live();
    for (n, phone) in pop.phones.iter().enumerate() {
        go.register_phone(&pop.ids[n / PHONES_PER_ID], phone.clone())
            .unwrap();
    }
    let with_phones = live();
    assert_eq!(go.counts().phones, IDS * PHONES_PER_ID);
    Footprint {
        per_id: (with_ids - base) as f64 / IDS as f64,
        per_phone: (with_phones - with_ids) as f64 / (IDS * PHONES_PER_ID) as f64,
    }
}

fn main() {
    // `--go-strings`: the ids and conn-ids of the Go registry's own `TestFootprint`
    // (`../shared/baselines/goshape`: `srv-%08d`, `server-<id>`, `client-<id>-<j>`), for
    // `benches/goshape.sh`; by default the relay's shapes (16-byte ids, 32-byte conn-ids).
    let go_strings = std::env::args().any(|arg| arg == "--go-strings");
    let (ids, binaries, phones): (Vec<String>, Vec<_>, Vec<_>) = if go_strings {
        let ids: Vec<String> = (0..IDS).map(|n| format!("srv-{n:08}")).collect();
        let binaries = ids
            .iter()
            .map(|id| BenchConn::new(format!("server-{id}")))
            .collect();
        let phones = ids
            .iter()
            .flat_map(|id| {
                (0..PHONES_PER_ID).map(move |j| BenchConn::new(format!("client-{id}-{j}")))
            })
            .collect();
        (ids, binaries, phones)
    } else {
        let ids: Vec<String> = (0..IDS).map(server_id).collect();
        assert!(ids.iter().all(|id| id.len() == 16));
        let binaries = ids
            .iter()
            .enumerate()
            .map(|(n, id)| binary_conn(id, n))
            .collect();
        let phones = ids
            .iter()
            .flat_map(|id| (0..PHONES_PER_ID).map(move |p| phone_conn(id, p)))
            .collect();
        (ids, binaries, phones)
    };
    let pop = Population {
        ids,
        binaries,
        phones,
    };

    let ours = measure_registry(&pop);
    let go = measure_go(&pop);
    let id_len = pop.ids[0].len();
    let conn_id_len = pop.phones[0].id().len();
    println!();
    println!(
        "Heap bytes at {IDS} ids × {PHONES_PER_ID} phones ({id_len}-byte server-ids, \
         {conn_id_len}-byte conn-ids; conns and guard vectors excluded)"
    );
    println!();
    println!("| per | Registry | GoShape | ratio | target | met? |");
    println!("| --- | ---: | ---: | ---: | --- | --- |");
    let row = |what: &str, ours: f64, go: f64, limit: f64, target: &str| {
        let ratio = ours / go;
        let met = if ratio <= limit { "yes" } else { "no" };
        println!("| {what} | {ours:.1} | {go:.1} | {ratio:.2}× | {target} | {met} |");
    };
    row(
        "server-id (binary held)",
        ours.per_id,
        go.per_id,
        1.5,
        "≤ 1.5× GoShape",
    );
    row("phone", ours.per_phone, go.per_phone, 1.0, "≤ GoShape");
    println!();
    println!(
        "Guards live in the caller's tasks (not counted above): ServerClaim {} bytes, \
         PhoneTicket {} bytes inline.",
        std::mem::size_of::<ServerClaim<BenchConn>>(),
        std::mem::size_of::<PhoneTicket<BenchConn>>()
    );
}
