//! The two per-frame routes under contention: many binaries finding the phone a frame is
//! addressed to (`ServerClaim::phone`, binary → phone, under its tenure's own lock) against many
//! phones finding their binary (`PhoneTicket::binary`, phone → binary, one atomic load), each
//! from 1, 2 and 4 threads at once; and, as the baseline that takes the registry's one lock, the
//! same binary → phone lookups through `Registry::phone_for` (`binary_to_phone_by_id`, which also
//! hashes the id).
//!
//! Every thread routes for its own binaries (and their phones), as a relay's connection tasks
//! do; none shares an id with another. A measured iteration is one lookup on *every* thread at
//! once, so the time per iteration stays flat as threads are added if the route scales with
//! them, and grows with the thread count if the threads serialise on a shared lock (on a machine
//! with fewer cores than threads it grows anyway: compare the two routes at the same count).
//!
//! `cargo bench -p relay-registry-benches --bench routing`

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use relay_registry::{PhoneTicket, Registry, ServerClaim};
use std::hint::black_box;
use std::sync::Barrier;
use std::time::{Duration, Instant};

use bench_support::bench_conn::{BenchConn, binary_conn, phone_conn, server_id};

/// Binaries per thread, and phones per binary.
const BINARIES: usize = 64;
const PHONES: usize = 4;

/// One thread's share: its binaries' claims, their phones' tickets and conn-ids.
struct Share {
    claims: Vec<ServerClaim<BenchConn>>,
    tickets: Vec<PhoneTicket<BenchConn>>,
    /// (index into `claims`, conn-id) of every phone, in routing order.
    routes: Vec<(usize, String)>,
    /// The server-id of each claim.
    ids: Vec<String>,
}

fn populate(registry: &Registry<BenchConn>, threads: usize) -> Vec<Share> {
    (0..threads)
        .map(|t| {
            let mut share = Share {
                claims: Vec::new(),
                tickets: Vec::new(),
                routes: Vec::new(),
                ids: Vec::new(),
            };
            for b in 0..BINARIES {
                let n = t * BINARIES + b;
                let id = server_id(n);
                share
                    .claims
                    .push(registry.claim_server(&id, binary_conn(&id, n)).unwrap());
                share.ids.push(id.clone());
                for p in 0..PHONES {
                    let phone = phone_conn(&id, p);
                    share.routes.push((b, phone.id().to_owned()));
                    share
                        .tickets
                        .push(registry.register_phone(&id, phone).unwrap());
                }
            }
            share
        })
        .collect()
}

/// Runs `route(share, i)` `iters` times on every share's own thread at once; the wall time.
fn on_every_thread(shares: &[Share], iters: u64, route: impl Fn(&Share, usize) + Sync) -> Duration {
    let start = Barrier::new(shares.len() + 1);
    let (start, route) = (&start, &route);
    std::thread::scope(|scope| {
        let workers: Vec<_> = shares
            .iter()
            .map(|share| {
                scope.spawn(move || {
                    start.wait();
                    let began = Instant::now();
                    for i in 0..iters as usize {
                        route(share, i);
                    }
                    (began, Instant::now())
                })
            })
            .collect();
        start.wait();
        // From the first thread's start to the last one's end.
        let spans: Vec<(Instant, Instant)> =
            workers.into_iter().map(|w| w.join().unwrap()).collect();
        let began = spans.iter().map(|s| s.0).min();
        let ended = spans.iter().map(|s| s.1).max();
        match (began, ended) {
            (Some(began), Some(ended)) => ended - began,
            _ => Duration::ZERO,
        }
    })
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    for threads in [1, 2, 4] {
        let registry = Registry::new();
        let shares = populate(&registry, threads);
        group.bench_function(
            BenchmarkId::new("binary_to_phone", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    on_every_thread(&shares, iters, |share, i| {
                        let (claim, conn_id) = &share.routes[i % share.routes.len()];
                        black_box(share.claims[*claim].phone(conn_id));
                    })
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("binary_to_phone_by_id", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    on_every_thread(&shares, iters, |share, i| {
                        let (claim, conn_id) = &share.routes[i % share.routes.len()];
                        black_box(registry.phone_for(&share.ids[*claim], conn_id));
                    })
                })
            },
        );
        group.bench_function(
            BenchmarkId::new("phone_to_binary", format!("{threads}_threads")),
            |b| {
                b.iter_custom(|iters| {
                    on_every_thread(&shares, iters, |share, i| {
                        black_box(share.tickets[i % share.tickets.len()].binary());
                    })
                })
            },
        );
        drop(shares);
        assert_eq!(registry.counts(), Default::default());
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    targets = routing
}
criterion_main!(benches);
