//! `Registry` against `GoShape` (a port of the Go registry it replaces), side by side in one run.
//!
//! Every group measures both on identical inputs; each benchmark id is `<group>/<impl>/<case>`
//! with `<impl>` one of `registry` (through the guards where the relay uses them),
//! `registry_by_id` (the id-keyed `Registry` method, where that differs) and `go_shape`.
//! `cargo run --release -p relay-registry-benches --bin bench_report` turns the last run into a markdown table.

use criterion::{BenchmarkId, Criterion, SamplingMode, criterion_group, criterion_main};
use relay_registry::{PhoneTicket, Registry, ServerClaim};
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bench_support::bench_conn::{BenchConn, binary_conn, phone_conn, server_id, shuffle};
use bench_support::go_shape::GoShape;

type Conn = BenchConn;

const PHONES_PER_ID: usize = 4;

/// Ids with their binary and phones, plus the phones' conn-ids as a relay parses them from frames.
struct Population {
    ids: Vec<String>,
    binaries: Vec<Arc<Conn>>,
    phones: Vec<Arc<Conn>>,
    conn_ids: Vec<String>,
    per_id: usize,
}

impl Population {
    fn new(first: usize, count: usize, per_id: usize) -> Self {
        let ids: Vec<String> = (first..first + count).map(server_id).collect();
        let binaries = ids
            .iter()
            .enumerate()
            .map(|(n, id)| binary_conn(id, n))
            .collect();
        let phones: Vec<Arc<Conn>> = ids
            .iter()
            .flat_map(|id| (0..per_id).map(move |p| phone_conn(id, p)))
            .collect();
        let conn_ids = phones.iter().map(|p| p.id().to_owned()).collect();
        Population {
            ids,
            binaries,
            phones,
            conn_ids,
            per_id,
        }
    }

    fn phone(&self, id: usize, p: usize) -> &Arc<Conn> {
        &self.phones[id * self.per_id + p]
    }

    fn conn_id(&self, id: usize, p: usize) -> &str {
        &self.conn_ids[id * self.per_id + p]
    }

    /// Claims every id and registers every phone in `registry`; returns the guards.
    fn hold(&self, registry: &Registry<Conn>) -> (Vec<ServerClaim<Conn>>, Vec<PhoneTicket<Conn>>) {
        let claims: Vec<_> = self
            .ids
            .iter()
            .zip(&self.binaries)
            .map(|(id, b)| registry.claim_server(id, b.clone()).unwrap())
            .collect();
        let tickets = (0..self.ids.len())
            .flat_map(|i| (0..self.per_id).map(move |p| (i, p)))
            .map(|(i, p)| {
                registry
                    .register_phone(&self.ids[i], self.phone(i, p).clone())
                    .unwrap()
            })
            .collect();
        (claims, tickets)
    }

    /// The same population in the Go shape.
    fn fill(&self, go: &GoShape<Conn>) {
        for (id, b) in self.ids.iter().zip(&self.binaries) {
            go.register_server(id, b.clone()).unwrap();
        }
        for i in 0..self.ids.len() {
            for p in 0..self.per_id {
                go.register_phone(&self.ids[i], self.phone(i, p).clone())
                    .unwrap();
            }
        }
    }

    /// Every (id, phone) pair in a fixed random order.
    fn random_order(&self, seed: u64) -> Vec<(u32, u32)> {
        let mut order: Vec<(u32, u32)> = (0..self.ids.len() as u32)
            .flat_map(|i| (0..self.per_id as u32).map(move |p| (i, p)))
            .collect();
        shuffle(&mut order, seed);
        order
    }
}

/// One binary's claim, four phones registered, four tickets dropped, the claim dropped.
fn registry_lifecycle(registry: &Registry<Conn>, pop: &Population, i: usize) {
    let id = &pop.ids[i];
    let claim = registry.claim_server(id, pop.binaries[i].clone()).unwrap();
    let tickets: [PhoneTicket<Conn>; PHONES_PER_ID] = std::array::from_fn(|p| {
        registry
            .register_phone(id, pop.phone(i, p).clone())
            .unwrap()
    });
    drop(tickets);
    drop(claim);
}

fn go_lifecycle(go: &GoShape<Conn>, pop: &Population, i: usize) {
    let id = &pop.ids[i];
    go.register_server(id, pop.binaries[i].clone()).unwrap();
    for p in 0..PHONES_PER_ID {
        go.register_phone(id, pop.phone(i, p).clone()).unwrap();
    }
    for p in 0..PHONES_PER_ID {
        go.unregister_phone(id, pop.phone(i, p).id());
    }
    go.unregister_server(id);
}

fn lifecycle(c: &mut Criterion) {
    const IDS: usize = 10_000;
    let pop = Population::new(0, IDS, PHONES_PER_ID);
    let mut group = c.benchmark_group("lifecycle");
    let registry = Registry::new();
    let mut i = 0;
    group.bench_function(BenchmarkId::new("registry", "4_phones"), |b| {
        b.iter(|| {
            i = (i + 1) % IDS;
            registry_lifecycle(&registry, &pop, i);
        })
    });
    let go = GoShape::new();
    group.bench_function(BenchmarkId::new("go_shape", "4_phones"), |b| {
        b.iter(|| {
            i = (i + 1) % IDS;
            go_lifecycle(&go, &pop, i);
        })
    });
    group.finish();
}

fn route(c: &mut Criterion) {
    const IDS: usize = 100_000;
    let pop = Population::new(0, IDS, PHONES_PER_ID);
    let registry = Registry::new();
    let (claims, tickets) = pop.hold(&registry);
    let go = GoShape::new();
    pop.fill(&go);
    let order = pop.random_order(0x5eed);
    let mut group = c.benchmark_group("route");
    let mut k = 0;
    let mut next = move || {
        k = (k + 1) % order.len();
        let (i, p) = order[k];
        (i as usize, p as usize)
    };
    group.bench_function(BenchmarkId::new("registry", "phone_to_binary"), |b| {
        b.iter(|| {
            let (i, p) = next();
            black_box(tickets[i * PHONES_PER_ID + p].binary())
        })
    });
    group.bench_function(BenchmarkId::new("go_shape", "phone_to_binary"), |b| {
        b.iter(|| {
            let (i, _) = next();
            black_box(go.binary_for(&pop.ids[i]))
        })
    });
    group.bench_function(BenchmarkId::new("registry", "binary_to_phone"), |b| {
        b.iter(|| {
            let (i, p) = next();
            black_box(claims[i].phone(pop.conn_id(i, p)))
        })
    });
    group.bench_function(BenchmarkId::new("go_shape", "binary_to_phone"), |b| {
        b.iter(|| {
            let (i, p) = next();
            black_box(go.phone_for(&pop.ids[i], pop.conn_id(i, p)))
        })
    });
    group.finish();
    drop(tickets);
    drop(claims);
}

fn phones_snapshot(c: &mut Criterion) {
    let mut group = c.benchmark_group("phones_snapshot");
    for phones in [4, 16] {
        let pop = Population::new(0, 1, phones);
        let registry = Registry::new();
        let (claims, tickets) = pop.hold(&registry);
        let go = GoShape::new();
        pop.fill(&go);
        let id = &pop.ids[0];
        group.bench_function(BenchmarkId::new("registry", phones), |b| {
            b.iter(|| black_box(claims[0].phones()))
        });
        group.bench_function(BenchmarkId::new("registry_by_id", phones), |b| {
            b.iter(|| black_box(registry.phones_for(black_box(id))))
        });
        group.bench_function(BenchmarkId::new("go_shape", phones), |b| {
            b.iter(|| black_box(go.phones_for(black_box(id))))
        });
        drop(tickets);
        drop(claims);
    }
    group.finish();
}

fn counts(c: &mut Criterion) {
    let mut group = c.benchmark_group("counts");
    for ids in [1_000, 100_000, 1_000_000] {
        // One phone per id; built once per size, outside the measured closures.
        let pop = Population::new(0, ids, 1);
        let registry = Registry::new();
        let guards = pop.hold(&registry);
        let go = GoShape::new();
        pop.fill(&go);
        group.bench_function(BenchmarkId::new("registry", ids), |b| {
            b.iter(|| black_box(registry.counts()))
        });
        // Summing a million lists takes milliseconds: fewer samples keep the run short.
        if ids >= 100_000 {
            group.sample_size(10);
        }
        group.bench_function(BenchmarkId::new("go_shape", ids), |b| {
            b.iter(|| black_box(go.counts()))
        });
        group.sample_size(40);
        drop(guards);
    }
    group.finish();
}

fn unregister_among(c: &mut Criterion) {
    let mut group = c.benchmark_group("unregister_among");
    for siblings in [1, 16, 256, 1024] {
        let pop = Population::new(0, 1, siblings);
        let id = &pop.ids[0];
        let registry = Registry::new();
        let claim = registry.claim_server(id, pop.binaries[0].clone()).unwrap();
        let mut tickets: Vec<Option<PhoneTicket<Conn>>> = (0..siblings)
            .map(|p| {
                Some(
                    registry
                        .register_phone(id, pop.phone(0, p).clone())
                        .unwrap(),
                )
            })
            .collect();
        let mut k = 0;
        group.bench_function(BenchmarkId::new("registry", siblings), |b| {
            b.iter(|| {
                k = (k + 1) % siblings;
                drop(tickets[k].take());
                tickets[k] = Some(
                    registry
                        .register_phone(id, pop.phone(0, k).clone())
                        .unwrap(),
                );
            })
        });
        let go = GoShape::new();
        pop.fill(&go);
        group.bench_function(BenchmarkId::new("go_shape", siblings), |b| {
            b.iter(|| {
                k = (k + 1) % siblings;
                go.unregister_phone(id, pop.conn_id(0, k));
                go.register_phone(id, pop.phone(0, k).clone()).unwrap();
            })
        });
        drop(tickets);
        drop(claim);
    }
    group.finish();
}

/// Per thread: 5,000 routed ids × 4 phones and 1,000 ids for lifecycles, disjoint across threads.
const MIXED_ROUTED: usize = 5_000;
const MIXED_CYCLED: usize = 1_000;

/// Runs `ops` operations split over two threads; 9 in 10 are route lookups (alternating
/// phone→binary and binary→phone), 1 in 10 a lifecycle. Returns the wall time.
fn two_threads(ops: u64, work: impl Fn(usize, u64) + Sync) -> Duration {
    let start = Instant::now();
    std::thread::scope(|s| {
        let work = &work;
        for t in 0..2 {
            s.spawn(move || work(t, ops / 2));
        }
    });
    start.elapsed()
}

fn mixed_2_threads(c: &mut Criterion) {
    let routed: Vec<Population> = (0..2)
        .map(|t| Population::new(t * MIXED_ROUTED, MIXED_ROUTED, PHONES_PER_ID))
        .collect();
    let cycled: Vec<Population> = (0..2)
        .map(|t| Population::new(1_000_000 + t * MIXED_CYCLED, MIXED_CYCLED, PHONES_PER_ID))
        .collect();
    let orders: Vec<Vec<(u32, u32)>> = routed.iter().map(|p| p.random_order(7)).collect();
    let mut group = c.benchmark_group("mixed_2_threads");
    group.sampling_mode(SamplingMode::Flat).sample_size(20);

    let registry = Registry::new();
    let held: Vec<_> = routed.iter().map(|p| p.hold(&registry)).collect();
    group.bench_function(BenchmarkId::new("registry", "90_route_10_lifecycle"), |b| {
        b.iter_custom(|ops| {
            two_threads(ops, |t, n| {
                let (claims, tickets) = &held[t];
                let (pop, order) = (&routed[t], &orders[t]);
                for j in 0..n as usize {
                    if j % 10 == 9 {
                        registry_lifecycle(&registry, &cycled[t], (j / 10) % MIXED_CYCLED);
                    } else {
                        let (i, p) = order[j % order.len()];
                        let (i, p) = (i as usize, p as usize);
                        if j % 2 == 0 {
                            black_box(tickets[i * PHONES_PER_ID + p].binary());
                        } else {
                            black_box(claims[i].phone(pop.conn_id(i, p)));
                        }
                    }
                }
            })
        })
    });
    drop(held);

    let go = GoShape::new();
    for pop in &routed {
        pop.fill(&go);
    }
    group.bench_function(BenchmarkId::new("go_shape", "90_route_10_lifecycle"), |b| {
        b.iter_custom(|ops| {
            two_threads(ops, |t, n| {
                let (pop, order) = (&routed[t], &orders[t]);
                for j in 0..n as usize {
                    if j % 10 == 9 {
                        go_lifecycle(&go, &cycled[t], (j / 10) % MIXED_CYCLED);
                    } else {
                        let (i, p) = order[j % order.len()];
                        let (i, p) = (i as usize, p as usize);
                        if j % 2 == 0 {
                            black_box(go.binary_for(&pop.ids[i]));
                        } else {
                            black_box(go.phone_for(&pop.ids[i], pop.conn_id(i, p)));
                        }
                    }
                }
            })
        })
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40)
}

criterion_group! {
    name = benches;
    config = config();
    targets = lifecycle, route, phones_snapshot, counts, unregister_among, mixed_2_threads
}
criterion_main!(benches);
