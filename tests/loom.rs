//! Exhaustive interleavings of the registry's few real races, under loom.
//!
//! `src/sync.rs` swaps the registry's lock, the tenures' locks and phase, and the tally of
//! phones that left through their tickets for loom's when built
//! with `--cfg loom`; loom then runs each model under every interleaving of those (bounded by
//! `LOOM_MAX_PREEMPTIONS`, 2 by default here). Each model has at most three threads (the model's
//! main thread and two spawned ones).
//!
//! ```text
//! LOOM_MAX_PREEMPTIONS=2 RUSTFLAGS="--cfg loom" cargo test --release --test loom
//! ```
#![cfg(loom)]

use loom::thread;
use relay_registry::{
    CloseReason, Config, Conn, Counts, ManualClock, PhoneTicket, Registry, RegistryError,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A conn that records its closes in itself (loom threads share one OS thread, so no
/// thread-locals).
struct LoomConn {
    id: &'static str,
    closes: Mutex<Vec<CloseReason>>,
}

fn conn(id: &'static str) -> Arc<LoomConn> {
    Arc::new(LoomConn {
        id,
        closes: Mutex::new(Vec::new()),
    })
}

impl LoomConn {
    fn closes(&self) -> Vec<CloseReason> {
        self.closes.lock().unwrap().clone()
    }
}

impl Conn for LoomConn {
    fn conn_id(&self) -> &str {
        self.id
    }

    fn close(&self, reason: CloseReason) {
        self.closes.lock().unwrap().push(reason);
    }
}

/// `loom::model` with at most 2 preemptions unless `LOOM_MAX_PREEMPTIONS` says otherwise; checks
/// that loom really explored more than one interleaving (i.e. the registry's lock is loom's).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut builder = loom::model::Builder::new();
    if builder.preemption_bound.is_none() {
        builder.preemption_bound = Some(2);
    }
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = runs.clone();
    builder.check(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        f();
    });
    let runs = runs.load(Ordering::Relaxed);
    eprintln!("{runs} interleavings explored");
    assert!(runs > 2, "loom explored only {runs} interleavings");
}

fn registry_with(clock: &ManualClock, cap: usize) -> Registry<LoomConn> {
    Registry::with_config(
        Config::default()
            .with_max_phones_per_server(cap)
            .with_clock(Arc::new(clock.clone())),
    )
}

/// "srv" claimed, one phone registered under it, then the claim released into a grace window
/// that is due at once (the clock never moves): the next `expire_due` takes the id.
fn due_with_one_phone() -> (Registry<LoomConn>, Arc<LoomConn>, PhoneTicket<LoomConn>) {
    let registry = registry_with(&ManualClock::new(), 0);
    let claim = registry.claim_server("srv", conn("bin")).unwrap();
    let phone = conn("phone");
    let ticket = registry.register_phone("srv", phone.clone()).unwrap();
    assert!(claim.release_after(Duration::ZERO));
    (registry, phone, ticket)
}

#[test]
fn two_claims_of_one_id_exactly_one_wins() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let spawn_claim = |name| {
            let registry = registry.clone();
            thread::spawn(move || registry.claim_server("srv", conn(name)))
        };
        let (a, b) = (spawn_claim("a"), spawn_claim("b"));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        let winner = match (&a, &b) {
            (Ok(claim), Err(RegistryError::ServerIdConflict))
            | (Err(RegistryError::ServerIdConflict), Ok(claim)) => claim.conn().clone(),
            other => panic!("exactly one claim must win: {other:?}"),
        };
        assert!(Arc::ptr_eq(&registry.binary_for("srv").unwrap(), &winner));
        assert_eq!(registry.counts().binaries, 1);
        registry.check_invariants().unwrap();
    });
}

#[test]
fn takeover_racing_the_incumbents_drop_never_frees_the_successor() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let old = registry.claim_server("srv", conn("old")).unwrap();
        let incumbent = old.conn().clone();
        let phone = conn("phone");
        let ticket = registry.register_phone("srv", phone.clone()).unwrap();
        let dropper = thread::spawn(move || drop(old));
        let taker = {
            let registry = registry.clone();
            thread::spawn(move || registry.takeover_server("srv", Some(&incumbent), conn("new")))
        };
        dropper.join().unwrap();
        let new = taker.join().unwrap();
        match &new {
            // The takeover came first: the old claim's drop was stale and freed nothing.
            Ok(claim) => {
                assert!(claim.is_current());
                assert!(Arc::ptr_eq(
                    &registry.binary_for("srv").unwrap(),
                    claim.conn()
                ));
                assert_eq!(phone.closes(), [CloseReason::Reclaimed]);
            }
            // The drop came first: the incumbent was gone, so the takeover changed nothing.
            Err(e) => {
                assert_eq!(*e, RegistryError::ServerIdConflict);
                assert_eq!(registry.counts(), Counts::default());
                assert_eq!(phone.closes(), [CloseReason::Released]);
            }
        }
        assert!(!ticket.is_registered());
        registry.check_invariants().unwrap();
    });
}

#[test]
fn expire_due_racing_a_reclaim_closes_each_phone_once() {
    model(|| {
        let (registry, phone, ticket) = due_with_one_phone();
        let reaper = {
            let registry = registry.clone();
            thread::spawn(move || registry.expire_due().len())
        };
        let reclaimer = {
            let registry = registry.clone();
            thread::spawn(move || registry.claim_server("srv", conn("new")))
        };
        let expired = reaper.join().unwrap();
        let new = reclaimer
            .join()
            .unwrap()
            .expect("a gracing or free id is claimable");
        let expected = if expired == 1 {
            CloseReason::GraceExpired
        } else {
            CloseReason::Reclaimed
        };
        assert_eq!(phone.closes(), [expected]);
        assert!(!ticket.is_registered());
        assert!(new.is_current());
        assert_eq!(
            registry.counts(),
            Counts {
                binaries: 1,
                gracing: 0,
                phones: 0
            }
        );
        registry.check_invariants().unwrap();
    });
}

#[test]
fn register_racing_release_leaves_no_orphan_phone() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let claim = registry.claim_server("srv", conn("bin")).unwrap();
        let phone = conn("phone");
        let joiner = {
            let (registry, phone) = (registry.clone(), phone.clone());
            thread::spawn(move || registry.register_phone("srv", phone))
        };
        let releaser = thread::spawn(move || claim.release());
        assert!(releaser.join().unwrap());
        match joiner.join().unwrap() {
            Ok(ticket) => {
                // Joined before the release: evicted by it.
                assert!(!ticket.is_registered());
                assert!(ticket.binary().is_none());
                assert_eq!(phone.closes(), [CloseReason::Released]);
            }
            Err(e) => {
                assert_eq!(e, RegistryError::NoServer);
                assert!(phone.closes().is_empty(), "a refused conn is not closed");
            }
        }
        assert_eq!(registry.counts(), Counts::default());
        registry.check_invariants().unwrap();
    });
}

#[test]
fn ticket_dropped_while_another_thread_snapshots() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let claim = registry.claim_server("srv", conn("bin")).unwrap();
        let phone = conn("phone");
        let ticket = registry.register_phone("srv", phone.clone()).unwrap();
        let dropper = thread::spawn(move || drop(ticket));
        let reader = {
            let registry = registry.clone();
            thread::spawn(move || (registry.snapshot(), registry.phones_for("srv")))
        };
        dropper.join().unwrap();
        let (all, phones) = reader.join().unwrap();
        let has_phone = |list: &[Arc<LoomConn>]| list.iter().any(|c| Arc::ptr_eq(c, &phone));
        assert!(all.iter().any(|c| Arc::ptr_eq(c, claim.conn())));
        assert_eq!(all.len(), 1 + usize::from(has_phone(&all)));
        assert_eq!(phones.len(), usize::from(has_phone(&phones)));
        assert!(phone.closes().is_empty(), "unregistering never closes");
        assert_eq!(registry.counts().phones, 0);
        assert!(registry.phones_for("srv").is_empty());
        registry.check_invariants().unwrap();
    });
}

#[test]
fn cap_check_racing_two_registers_at_cap_minus_one() {
    model(|| {
        let clock = ManualClock::new();
        let registry = registry_with(&clock, 2);
        let _claim = registry.claim_server("srv", conn("bin")).unwrap();
        let _first = registry.register_phone("srv", conn("p0")).unwrap();
        let spawn_register = |name| {
            let registry = registry.clone();
            thread::spawn(move || registry.register_phone("srv", conn(name)))
        };
        let (a, b) = (spawn_register("p1"), spawn_register("p2"));
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        match (&a, &b) {
            (Ok(_), Err(RegistryError::PhonesAtCap)) | (Err(RegistryError::PhonesAtCap), Ok(_)) => {
            }
            other => panic!("exactly one register must fit under the cap: {other:?}"),
        }
        assert_eq!(registry.counts().phones, 2);
        registry.check_invariants().unwrap();
    });
}

/// The binary→phone route reads its tenure's phone table without the registry's lock: racing an
/// eviction (here `end_tenure`) and a new registration, it finds a phone only while the phone is
/// registered, and never one of another tenure.
#[test]
fn claim_phone_without_the_registry_lock_racing_an_eviction_and_a_registration() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let binary = conn("bin");
        let claim = registry.claim_server("srv", binary.clone()).unwrap();
        let phone = conn("p");
        let ticket = registry.register_phone("srv", phone.clone()).unwrap();
        let router = thread::spawn(move || {
            let found = claim.phone("p");
            let late = claim.phone("q");
            (claim, found, late)
        });
        let ender = {
            let registry = registry.clone();
            thread::spawn(move || {
                let ended = registry.end_tenure("srv", &binary);
                let q = registry
                    .claim_server("srv", conn("next"))
                    .ok()
                    .map(|next| (next, registry.register_phone("srv", conn("q")).unwrap()));
                (ended, q)
            })
        };
        let (claim, found, late) = router.join().unwrap();
        let (ended, next) = ender.join().unwrap();
        assert!(ended);
        // Found only before the end (and then it was the phone itself), never "q" of the next
        // tenure; the stale claim now finds nothing.
        if let Some(found) = found {
            assert!(Arc::ptr_eq(&found, &phone));
        }
        assert!(late.is_none());
        assert!(claim.phone("p").is_none() && !claim.is_current());
        assert!(!ticket.is_registered());
        assert_eq!(phone.closes(), [CloseReason::Reclaimed]);
        assert!(next.is_some());
        registry.check_invariants().unwrap();
    });
}

/// A ticket unregisters under its tenure's lock alone (never the registry's), counting itself in
/// the registry's tally: racing an eviction (`end_tenure`) and a `counts()`, the phone leaves
/// exactly once (closed only if the eviction took it), and the counts read meanwhile never show a
/// phone under an id no one holds.
#[test]
fn ticket_unregister_without_the_registry_lock_racing_an_eviction_and_counts() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let binary = conn("bin");
        let claim = registry.claim_server("srv", binary.clone()).unwrap();
        let phone = conn("phone");
        let ticket = registry.register_phone("srv", phone.clone()).unwrap();
        let dropper = thread::spawn(move || ticket.unregister());
        let reader = {
            let registry = registry.clone();
            thread::spawn(move || registry.counts())
        };
        assert!(registry.end_tenure("srv", &binary));
        let unregistered = dropper.join().unwrap();
        let seen = reader.join().unwrap();
        let evicted = phone.closes();
        assert_eq!(
            evicted.len(),
            usize::from(!unregistered),
            "exactly one of the two removed the phone: {evicted:?}"
        );
        assert!(
            seen.phones <= seen.binaries,
            "a phone counted with no binary: {seen:?}"
        );
        assert_eq!(registry.counts(), Counts::default());
        registry.check_invariants().unwrap();
        drop(claim);
    });
}

/// An expiry reports the phones it closed, counted where it took them out: a ticket leaving under
/// its tenure's lock alone between a count and the eviction made an expiry report a phone it
/// never closed (found by the linearizability histories under ThreadSanitizer).
#[test]
fn expire_due_racing_a_ticket_unregister_reports_the_phones_it_closed() {
    model(|| {
        let (registry, phone, ticket) = due_with_one_phone();
        let dropper = thread::spawn(move || ticket.unregister());
        let expired = registry.expire_due();
        let unregistered = dropper.join().unwrap();
        let closed = phone.closes();
        assert_eq!(expired.len(), 1);
        let reported = expired.iter().next().unwrap().phones();
        assert_eq!(
            reported,
            closed.len(),
            "the expiry reported {reported} phone(s) and closed {closed:?}"
        );
        assert_eq!(closed.len(), usize::from(!unregistered));
        assert_eq!(registry.counts(), Counts::default());
        registry.check_invariants().unwrap();
    });
}

/// `snapshot()` is one moment's even though tickets leave under their tenures' locks alone: a
/// phone that left before another is never listed while the other is missing.
#[test]
fn snapshot_is_one_moment_while_tickets_leave_without_the_registry_lock() {
    model(|| {
        let registry: Registry<LoomConn> = Registry::new();
        let _a = registry.claim_server("a", conn("bin-a")).unwrap();
        let _b = registry.claim_server("b", conn("bin-b")).unwrap();
        let (first, second) = (conn("first"), conn("second"));
        let leaves_first = registry.register_phone("a", first.clone()).unwrap();
        let leaves_second = registry.register_phone("b", second.clone()).unwrap();
        let leaver = thread::spawn(move || {
            drop(leaves_first);
            drop(leaves_second);
        });
        let all = registry.snapshot();
        leaver.join().unwrap();
        let listed = |phone: &Arc<LoomConn>| all.iter().any(|c| Arc::ptr_eq(c, phone));
        assert!(
            !(listed(&first) && !listed(&second)),
            "the phone that left first is listed, the one that left after it is not"
        );
        assert_eq!(registry.counts().phones, 0);
        registry.check_invariants().unwrap();
    });
}
