//! The Go registry's own benchmarks (`../shared/baselines/goshape/bench_test.go`), workload for
//! workload, against `Registry`: the same ids, conn-ids, populations, access orders and operation
//! mixes, so that `benches/goshape.sh` can run both back to back and print ours ÷ Go per row.
//!
//! Each benchmark is named after its Go counterpart (`Lifecycle`, `RouteLookups`, `PhonesFor16`,
//! `Counts/<ids>`, `UnregisterAmong/<siblings>`, `Mixed2`); a suffix names a variant of ours:
//! `_by_id` goes through the id-keyed `Registry` methods (as the Go API does: hash the id on
//! every call), the plain name through the guards (`ticket.binary()`, `claim.phone()`,
//! `claim.phones()`), which is how the relay routes.
//!
//! `cargo bench -p relay-registry-benches --bench goshape`

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use relay_registry::{Config, PhoneTicket, Registry, ServerClaim};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::bench_conn::BenchConn;

type Conn = BenchConn;

/// Go's `ids(n)`: `srv-%08d`.
fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("srv-{i:08}")).collect()
}

/// Go's binary conn: `"server-" + id`.
fn binary(id: &str) -> Arc<Conn> {
    BenchConn::new(format!("server-{id}"))
}

/// Go's phone conn: `client-%s-%d`.
fn phone(id: &str, j: usize) -> Arc<Conn> {
    BenchConn::new(format!("client-{id}-{j}"))
}

/// Go's `populated(n, perID)`: every id claimed, `per_id` phones each; the guards are kept.
struct Populated {
    registry: Registry<Conn>,
    sids: Vec<String>,
    ph: Vec<Vec<Arc<Conn>>>,
    claims: Vec<ServerClaim<Conn>>,
    /// `tickets[i][j]` is the registration of `ph[i][j]`.
    tickets: Vec<Vec<Option<PhoneTicket<Conn>>>>,
}

fn populated(n: usize, per_id: usize) -> Populated {
    populated_in(Registry::new(), n, per_id)
}

fn populated_in(registry: Registry<Conn>, n: usize, per_id: usize) -> Populated {
    let sids = ids(n);
    let mut ph = Vec::with_capacity(n);
    let mut claims = Vec::with_capacity(n);
    let mut tickets = Vec::with_capacity(n);
    for id in &sids {
        claims.push(registry.claim_server(id, binary(id)).unwrap());
        let phones: Vec<Arc<Conn>> = (0..per_id).map(|j| phone(id, j)).collect();
        tickets.push(
            phones
                .iter()
                .map(|p| Some(registry.register_phone(id, p.clone()).unwrap()))
                .collect(),
        );
        ph.push(phones);
    }
    Populated {
        registry,
        sids,
        ph,
        claims,
        tickets,
    }
}

/// Go's `RegisterPhoneCapped(id, c, 16)` in the lifecycles.
fn capped() -> Registry<Conn> {
    Registry::with_config(Config::default().with_max_phones_per_server(16))
}

/// One lifecycle = claim, 4 phones, 4 unregisters, release (10 registry ops).
fn lifecycle(c: &mut Criterion) {
    const N_IDS: usize = 10_000;
    let r = capped();
    let sids = ids(N_IDS);
    let bins: Vec<Arc<Conn>> = sids.iter().map(|id| binary(id)).collect();
    let phones: Vec<[Arc<Conn>; 4]> = sids
        .iter()
        .map(|id| std::array::from_fn(|j| phone(id, j)))
        .collect();
    let mut n = 0;
    c.bench_function("Lifecycle", |b| {
        b.iter(|| {
            let i = n % N_IDS;
            n += 1;
            let id = &sids[i];
            let claim = r.claim_server(id, bins[i].clone()).unwrap();
            let tickets: [PhoneTicket<Conn>; 4] =
                std::array::from_fn(|j| r.register_phone(id, phones[i][j].clone()).unwrap());
            drop(tickets);
            drop(claim);
        })
    });
}

/// Per-frame routing lookups: phone→binary + binary→phone, 100,000 ids × 4 phones.
fn route_lookups(c: &mut Criterion) {
    let p = populated(100_000, 4);
    let len = p.sids.len();
    let mut n = 0usize;
    c.bench_function("RouteLookups", |b| {
        b.iter(|| {
            let i = (n * 7919) % len;
            let j = n & 3;
            n += 1;
            let ticket = p.tickets[i][j].as_ref().unwrap();
            assert!(black_box(ticket.binary()).is_some(), "binary");
            assert!(
                black_box(p.claims[i].phone(p.ph[i][j].id())).is_some(),
                "phone"
            );
        })
    });
    c.bench_function("RouteLookups_by_id", |b| {
        b.iter(|| {
            let i = (n * 7919) % len;
            let j = n & 3;
            n += 1;
            assert!(
                black_box(p.registry.binary_for(&p.sids[i])).is_some(),
                "binary"
            );
            let found = p.registry.phone_for(&p.sids[i], p.ph[i][j].id());
            assert!(black_box(found).is_some(), "phone");
        })
    });
}

fn phones_for_16(c: &mut Criterion) {
    let p = populated(10_000, 16);
    let len = p.sids.len();
    let mut n = 0usize;
    c.bench_function("PhonesFor16_by_id", |b| {
        b.iter(|| {
            let i = (n * 7919) % len;
            n += 1;
            assert_eq!(black_box(p.registry.phones_for(&p.sids[i])).len(), 16);
        })
    });
    c.bench_function("PhonesFor16", |b| {
        b.iter(|| {
            let i = (n * 7919) % len;
            n += 1;
            assert_eq!(black_box(p.claims[i].phones()).len(), 16);
        })
    });
}

fn counts(c: &mut Criterion) {
    let mut group = c.benchmark_group("Counts");
    for n in [1_000, 100_000, 1_000_000] {
        let p = populated(n, 1);
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            b.iter(|| assert_eq!(black_box(p.registry.counts()).phones, n))
        });
    }
    group.finish();
}

/// Unregister + re-register one phone among K siblings.
fn unregister_among(c: &mut Criterion) {
    let mut group = c.benchmark_group("UnregisterAmong");
    for k in [1, 16, 256, 1024] {
        let mut p = populated(1, k);
        let mut n = 0usize;
        group.bench_function(BenchmarkId::from_parameter(k), |b| {
            b.iter(|| {
                let j = n % k;
                n += 1;
                drop(p.tickets[0][j].take());
                let again = p.registry.register_phone(&p.sids[0], p.ph[0][j].clone());
                p.tickets[0][j] = Some(again.unwrap());
            })
        });
    }
    group.finish();
}

/// Two threads: 90% route lookups, 10% lifecycles on a private id range (a claim, one phone
/// joining and leaving, the release, with conns allocated per lifecycle as Go's `&conn{...}`).
fn mixed2(c: &mut Criterion) {
    // One registry for both, as Go's: the lifecycles register with the cap of 16.
    let p = populated_in(capped(), 10_000, 4);
    let extra: Vec<String> = ids(20_000).split_off(10_000);
    let mut group = c.benchmark_group("Mixed2");
    group.sampling_mode(SamplingMode::Flat).sample_size(20);
    let run = |ops: u64, by_id: bool| {
        let per = ops as usize / 2;
        let len = p.sids.len();
        let start = Instant::now();
        std::thread::scope(|s| {
            for g in 0..2 {
                let (p, extra) = (&p, &extra);
                s.spawn(move || {
                    for n in 0..per {
                        if n % 10 == 0 {
                            let id = &extra[g * 5000 + (n / 10) % 5000];
                            let claim = p.registry.claim_server(id, binary(id)).unwrap();
                            let ticket = p
                                .registry
                                .register_phone(id, BenchConn::new(format!("client-{id}")))
                                .unwrap();
                            drop(ticket);
                            drop(claim);
                        } else {
                            let i = (n * 7919) % len;
                            let j = n & 3;
                            if by_id {
                                black_box(p.registry.binary_for(&p.sids[i]));
                                black_box(p.registry.phone_for(&p.sids[i], p.ph[i][j].id()));
                            } else {
                                black_box(p.tickets[i][j].as_ref().map(|t| t.binary()));
                                black_box(p.claims[i].phone(p.ph[i][j].id()));
                            }
                        }
                    }
                });
            }
        });
        start.elapsed()
    };
    group.bench_function("guards", |b| b.iter_custom(|ops| run(ops, false)));
    group.bench_function("by_id", |b| b.iter_custom(|ops| run(ops, true)));
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
}

criterion_group! {
    name = benches;
    config = config();
    targets = lifecycle, route_lookups, phones_for_16, counts, unregister_among, mixed2
}
criterion_main!(benches);
