//! A fixed amount of one benchmark's work, for instruction-level profiles: callgrind counts are
//! repeatable where wall-clock times on a shared machine are not.
//!
//! ```text
//! cargo bench --bench probe --no-run
//! valgrind --tool=callgrind --toggle-collect='probe::measured*' \
//!     target/release/deps/probe-<hash> lifecycle registry 10000
//! ```
//! Scenarios: `lifecycle`, `phone_to_binary`, `binary_to_phone`, `snapshot4`; impls:
//! `registry`, `go_shape`. Only `measured_*` runs the scenario's
//! operations, so toggling collection on it leaves the setup out; divide by the count.

use relay_registry::{PhoneTicket, Registry};
use std::hint::black_box;
use std::sync::Arc;

use bench_support::bench_conn::{BenchConn, binary_conn, phone_conn, server_id};
use bench_support::go_shape::GoShape;

const IDS: usize = 1_000;
const PHONES: usize = 4;

struct Inputs {
    ids: Vec<String>,
    binaries: Vec<Arc<BenchConn>>,
    phones: Vec<Vec<Arc<BenchConn>>>,
}

fn inputs(phones: usize) -> Inputs {
    let ids: Vec<String> = (0..IDS).map(server_id).collect();
    Inputs {
        binaries: ids
            .iter()
            .enumerate()
            .map(|(n, id)| binary_conn(id, n))
            .collect(),
        phones: ids
            .iter()
            .map(|id| (0..phones).map(|p| phone_conn(id, p)).collect())
            .collect(),
        ids,
    }
}

#[inline(never)]
fn measured_registry(scenario: &str, n: usize, registry: &Registry<BenchConn>, inp: &Inputs) {
    match scenario {
        "lifecycle" => {
            for k in 0..n {
                let i = k % IDS;
                let id = &inp.ids[i];
                let claim = registry.claim_server(id, inp.binaries[i].clone()).unwrap();
                let tickets: [PhoneTicket<BenchConn>; PHONES] = std::array::from_fn(|p| {
                    registry
                        .register_phone(id, inp.phones[i][p].clone())
                        .unwrap()
                });
                drop(tickets);
                drop(claim);
            }
        }
        _ => panic!("unknown scenario {scenario}"),
    }
}

#[inline(never)]
fn measured_go(scenario: &str, n: usize, go: &GoShape<BenchConn>, inp: &Inputs) {
    match scenario {
        "lifecycle" => {
            for k in 0..n {
                let i = k % IDS;
                let id = &inp.ids[i];
                go.register_server(id, inp.binaries[i].clone()).unwrap();
                for p in 0..PHONES {
                    go.register_phone(id, inp.phones[i][p].clone()).unwrap();
                }
                for p in 0..PHONES {
                    go.unregister_phone(id, inp.phones[i][p].id());
                }
                go.unregister_server(id);
            }
        }
        _ => panic!("unknown scenario {scenario}"),
    }
}

/// Lookups and snapshots over held ids: the guards for `Registry`, the ids for `GoShape`.
#[inline(never)]
fn measured_lookups(scenario: &str, n: usize, inp: &Inputs, go_shape: bool) {
    let registry = Registry::new();
    let go = GoShape::new();
    let claims: Vec<_> = (0..IDS)
        .map(|i| {
            registry
                .claim_server(&inp.ids[i], inp.binaries[i].clone())
                .unwrap()
        })
        .collect();
    let tickets: Vec<Vec<_>> = (0..IDS)
        .map(|i| {
            inp.phones[i]
                .iter()
                .map(|p| registry.register_phone(&inp.ids[i], p.clone()).unwrap())
                .collect()
        })
        .collect();
    for i in 0..IDS {
        go.register_server(&inp.ids[i], inp.binaries[i].clone())
            .unwrap();
        for p in &inp.phones[i] {
            go.register_phone(&inp.ids[i], p.clone()).unwrap();
        }
    }
    let conn_ids: Vec<Vec<String>> = inp
        .phones
        .iter()
        .map(|ps| ps.iter().map(|p| p.id().to_owned()).collect())
        .collect();
    let per = inp.phones[0].len();
    measured_lookup_loop(
        scenario, n, go_shape, &go, &claims, &tickets, &conn_ids, inp, per,
    );
}

#[inline(never)]
#[allow(clippy::too_many_arguments)]
fn measured_lookup_loop(
    scenario: &str,
    n: usize,
    go_shape: bool,
    go: &GoShape<BenchConn>,
    claims: &[relay_registry::ServerClaim<BenchConn>],
    tickets: &[Vec<PhoneTicket<BenchConn>>],
    conn_ids: &[Vec<String>],
    inp: &Inputs,
    per: usize,
) {
    for k in 0..n {
        let (i, p) = ((k * 7919) % IDS, k % per);
        match (scenario, go_shape) {
            ("phone_to_binary", false) => drop(black_box(tickets[i][p].binary())),
            ("phone_to_binary", true) => drop(black_box(go.binary_for(&inp.ids[i]))),
            ("binary_to_phone", false) => drop(black_box(claims[i].phone(&conn_ids[i][p]))),
            ("binary_to_phone", true) => {
                drop(black_box(go.phone_for(&inp.ids[i], &conn_ids[i][p])))
            }
            ("snapshot4", false) => drop(black_box(claims[i].phones())),
            ("snapshot4", true) => drop(black_box(go.phones_for(&inp.ids[i]))),
            _ => panic!("unknown scenario {scenario}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if args.len() < 3 {
        eprintln!("usage: probe <scenario> <registry|go_shape> <count>");
        return;
    }
    let (scenario, imp) = (args[0].as_str(), args[1].as_str());
    let n: usize = args[2].parse().expect("count");
    let inp = inputs(PHONES);
    match (scenario, imp) {
        ("lifecycle", "registry") => measured_registry(scenario, n, &Registry::new(), &inp),
        ("lifecycle", "go_shape") => measured_go(scenario, n, &GoShape::new(), &inp),
        (_, "registry") => measured_lookups(scenario, n, &inp, false),
        (_, "go_shape") => measured_lookups(scenario, n, &inp, true),
        _ => eprintln!("unknown impl {imp}"),
    }
}
