//! A seeded, time-bounded randomized run against three `relay` instances on a three-node NATS
//! cluster: instances killed, paused past their lease and partitioned from NATS (black hole or
//! resets), NATS nodes killed, while binaries and phones connected to every instance send
//! numbered frames both ways and reconnect after every close. A checker then judges, from the
//! clients' side only, the invariants of the cluster (see `chaos/checker.rs`): one delivering
//! holder per id at a time, per-link order, every gap announced by a close. Every violation is
//! printed with the seed; the test fails on any.
//!
//! The run (progress lines on stdout, `--nocapture` to see them): start the cluster; the fault
//! phase (`CHAOS_SECONDS`, plus the end of the last fault); a calm phase of one lease and 5 s, so
//! that every id can be served again; then every client stops sending and reads for 3 s more
//! (the drain), and the checker runs on what they recorded.
//!
//! | variable | default | meaning |
//! | --- | --- | --- |
//! | `CHAOS_SEED` | 64 | the seed of the fault plan and of every client's choices |
//! | `CHAOS_SECONDS` | 40 | how long faults keep starting |
//! | `CHAOS_FAULTS` | `kill,pause,cut,reset,nats` | the kinds of fault injected (`chaos/faults.rs`, see `DEFAULT_KINDS`) |
//! | `CHAOS_LEASE` | 10 | the instances' `--cluster-lease`, seconds |
//! | `CHAOS_IDS` | 4 | server-ids, each with one binary and two phones |
//! | `CHAOS_LOGS` | (none) | a directory for the instances' stderr (`relay-<i>.log`) |
//!
//! The seed fixes the faults (kinds, targets, start times, lengths) and the clients' choices of
//! instance; the interleaving with the relay's own timers is not reproducible, so a violation a
//! seed found may need a few runs of it (`relay/benches/chaos.sh`). Skipped loudly without
//! `nats-server` (failed instead with `RELAY_CLUSTER_TESTS=required`).

#[path = "chaos/checker.rs"]
mod checker;
#[path = "chaos/clients.rs"]
mod clients;
#[path = "chaos/faults.rs"]
mod faults;
mod support;

use checker::{ConnRecord, End, Injected, Role, check};
use clients::{Ctx, Phase};
use faults::{KINDS, Rig, plan};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The faults a run injects unless `CHAOS_FAULTS` says otherwise: every kind. `pause` is the
/// one that found the stale delivery of issue 19 item 3 before the lease check on the delivery
/// paths (a paused instance that resumed delivered what its phones sent meanwhile to its old
/// binary, after another instance gave the id to a new one: `CHAOS_FAULTS=pause CHAOS_LEASE=4
/// CHAOS_IDS=8 CHAOS_SECONDS=90 CHAOS_SEED=5`).
const DEFAULT_KINDS: [&str; 5] = ["kill", "pause", "cut", "reset", "nats"];

/// The run's settings, from the environment.
struct Settings {
    seed: u64,
    seconds: u64,
    kinds: Vec<&'static str>,
    lease: Duration,
    ids: usize,
    logs: Option<PathBuf>,
}

/// `name`'s value parsed, or `default` when unset.
fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Err(_) => default,
        Ok(text) => text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={text:?} is not a number")),
    }
}

impl Settings {
    fn from_env() -> Settings {
        let kinds = match std::env::var("CHAOS_FAULTS") {
            Err(_) => DEFAULT_KINDS.to_vec(),
            Ok(list) => list
                .split(',')
                .map(str::trim)
                .filter(|kind| !kind.is_empty())
                .map(|kind| {
                    KINDS
                        .into_iter()
                        .find(|known| *known == kind)
                        .unwrap_or_else(|| panic!("CHAOS_FAULTS: no fault `{kind}` ({KINDS:?})"))
                })
                .collect(),
        };
        let lease = var("CHAOS_LEASE", 10u64);
        assert!(lease >= 1, "CHAOS_LEASE is whole seconds, at least 1");
        Settings {
            seed: var("CHAOS_SEED", 64),
            seconds: var("CHAOS_SECONDS", 40),
            kinds,
            lease: Duration::from_secs(lease),
            ids: var("CHAOS_IDS", 4),
            logs: std::env::var_os("CHAOS_LOGS").map(PathBuf::from),
        }
    }
}

impl Settings {
    /// The variables that run this again.
    fn reproduce(&self) -> String {
        format!(
            "CHAOS_SEED={} CHAOS_SECONDS={} CHAOS_FAULTS={} CHAOS_LEASE={} CHAOS_IDS={}",
            self.seed,
            self.seconds,
            self.kinds.join(","),
            self.lease.as_secs(),
            self.ids
        )
    }
}

/// Counts of `keys`, as `a:1,b:2`.
fn tally<'a>(keys: impl Iterator<Item = String> + 'a) -> String {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    keys.for_each(|key| *counts.entry(key).or_default() += 1);
    let parts: Vec<String> = counts.iter().map(|(k, n)| format!("{k}:{n}")).collect();
    if parts.is_empty() {
        "none".to_owned()
    } else {
        parts.join(",")
    }
}

/// How each connection ended, by role and code.
fn end_key(record: &ConnRecord) -> Option<String> {
    let role = if record.role == Role::Binary {
        "b"
    } else {
        "p"
    };
    match &record.end {
        Some((_, End::Close(code, _))) => Some(format!("{role}{code}")),
        Some((_, End::Abrupt)) => Some(format!("{role}-abrupt")),
        None => None,
    }
}

/// One line about a connection, for `CHAOS_LOGS`.
fn describe(record: &ConnRecord) -> String {
    let at = |d: Duration| format!("{:.3}", d.as_secs_f64());
    let first = record.received.first().map_or("-".to_owned(), |r| at(r.at));
    let last = record.received.last().map_or("-".to_owned(), |r| at(r.at));
    format!(
        "{} {} instance {} opened {} received {} ({first}..{last}) sent {} abandoned {:?} end {:?}",
        record.label,
        record.id,
        record.instance,
        at(record.opened),
        record.received.len(),
        record.sent.len(),
        record.abandoned.map(at),
        record.end.as_ref().map(|(d, end)| (at(*d), end)),
    )
}

/// Prints the run's summary line (for `relay/benches/chaos.sh`), the refused upgrades, and the
/// 1012 closes no partition or pause explains.
fn summarize(
    settings: &Settings,
    records: &[ConnRecord],
    injected: &[Injected],
    refused: &BTreeMap<String, u64>,
    violations: usize,
) {
    let count = |role: Role| records.iter().filter(|r| r.role == role).count();
    let received = |role: Role| {
        let of_role = records.iter().filter(|r| r.role == role);
        of_role.map(|r| r.received.len()).sum::<usize>()
    };
    let abandoned = records.iter().filter(|r| r.abandoned.is_some()).count();
    println!(
        "chaos summary: seed={} seconds={} faults={} connections={}b/{}p abandoned={abandoned} frames={}to-binaries/{}to-phones ends={} refused={} violations={violations}",
        settings.seed,
        settings.seconds,
        tally(injected.iter().map(|f| f.kind.to_owned())),
        count(Role::Binary),
        count(Role::Phone),
        received(Role::Binary),
        received(Role::Phone),
        tally(records.iter().filter_map(end_key)),
        refused.values().sum::<u64>(),
    );
    println!("chaos: refused upgrades: {refused:?}");
    // Availability, not judged here (issue 19 item 2): 1012 closes of an instance that was
    // neither partitioned nor paused in the lease before (a NATS node loss fenced it).
    let fenced_alone: Vec<String> = records
        .iter()
        .filter_map(|r| match &r.end {
            Some((at, End::Close(1012, _))) => Some((r, *at)),
            _ => None,
        })
        .filter(|(r, at)| {
            !injected.iter().any(|f| {
                matches!(f.kind, "cut" | "reset" | "pause")
                    && f.target == r.instance
                    && f.at <= *at
                    && f.healed.is_none_or(|healed| healed + settings.lease >= *at)
            })
        })
        .map(|(r, at)| {
            format!(
                "{} (instance {}) at {:.3}s",
                r.label,
                r.instance,
                at.as_secs_f64()
            )
        })
        .collect();
    println!(
        "chaos: 1012 closes without a partition or pause of their instance: {} {fenced_alone:?}",
        fenced_alone.len(),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_seeded_run_of_kills_pauses_partitions_and_nats_node_losses_keeps_one_holder_per_id_order_and_announced_gaps()
 {
    let settings = Settings::from_env();
    let Some(rig) = Rig::start("chaos", settings.lease, settings.logs.clone()).await else {
        return;
    };
    let rig = Arc::new(rig);
    let seed = settings.seed;
    println!("chaos: {}", settings.reproduce());
    let lanes = plan(seed, settings.seconds, &settings.kinds, settings.lease);
    let clock = Instant::now();
    let (phase, phase_rx) = tokio::sync::watch::channel(Phase::Run);
    let ctx = Arc::new(Ctx::new(clock, rig.addrs.clone(), phase_rx, settings.lease));
    let mut clients = Vec::new();
    for i in 0..settings.ids {
        let id = format!("chaos-{seed}-{i}");
        let base = seed.wrapping_mul(1000).wrapping_add(i as u64 * 10);
        let binary = clients::client(ctx.clone(), Role::Binary, id.clone(), format!("b{i}"), base);
        clients.push(tokio::spawn(binary));
        for j in 0..2 {
            let phone = clients::client(
                ctx.clone(),
                Role::Phone,
                id.clone(),
                format!("p{i}.{j}"),
                base + 1 + j as u64,
            );
            clients.push(tokio::spawn(phone));
        }
    }
    // Faults start once the clients had a moment to connect.
    let injected = Arc::new(Mutex::new(Vec::<Injected>::new()));
    let start = Instant::now() + Duration::from_secs(2);
    let lanes: Vec<_> = lanes
        .into_iter()
        .map(|lane| tokio::spawn(rig.clone().run_lane(lane, clock, start, injected.clone())))
        .collect();
    for lane in lanes {
        lane.await.expect("a fault lane");
    }
    let calm = settings.lease + Duration::from_secs(5);
    let faults_ended = ctx.now();
    println!(
        "chaos: {:>7.3}s faults over; calm for {:.0}s",
        faults_ended.as_secs_f64(),
        calm.as_secs_f64()
    );
    tokio::time::sleep(calm).await;
    let stopped = ctx.now();
    phase.send_replace(Phase::Drain);
    println!(
        "chaos: {:>7.3}s clients stop sending",
        stopped.as_secs_f64()
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    phase.send_replace(Phase::Done);
    for client in clients {
        client.await.expect("a client");
    }
    let records = ctx.records();
    let injected = injected.lock().clone();
    let violations = check(&records, &injected, stopped);

    summarize(
        &settings,
        &records,
        &injected,
        &ctx.refused(),
        violations.len(),
    );
    for violation in &violations {
        println!("chaos violation: {}", violation.line(seed));
    }
    if let Some(dir) = &settings.logs {
        let lines: Vec<String> = injected
            .iter()
            .map(|f| format!("{f:?}"))
            .chain(records.iter().map(describe))
            .collect();
        std::fs::write(dir.join("connections.txt"), lines.join("\n")).expect("write the log");
    }
    // Not vacuous: frames flowed both ways, and every id was served again after the faults.
    for role in [Role::Binary, Role::Phone] {
        let received = records.iter().filter(|r| r.role == role);
        let received: usize = received.map(|r| r.received.len()).sum();
        assert!(received > 0, "no frames were delivered to a {role:?}");
    }
    for i in 0..settings.ids {
        let id = format!("chaos-{seed}-{i}");
        let served = records
            .iter()
            .filter(|r| r.id == id && r.role == Role::Binary)
            .flat_map(|r| &r.received)
            .any(|frame| frame.at > faults_ended + settings.lease && frame.at < stopped);
        assert!(
            served,
            "seed {seed}: id {id} was not served after the faults ended"
        );
    }
    assert!(
        violations.is_empty(),
        "seed {seed}: {} violations (reproduce with {}):\n{}",
        violations.len(),
        settings.reproduce(),
        violations
            .iter()
            .map(|v| v.line(seed))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
