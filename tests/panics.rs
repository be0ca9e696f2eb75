//! User code that panics never leaves a server-id held by nobody: the operation × callback matrix.
//!
//! For each operation and each piece of user code it runs — a phone's [`Conn::close`], a
//! [`Conn::conn_id`], the [`Clock::now`] of the registry's clock, the `Drop` of a conn the
//! registry lets go of — a mock panics exactly there. Each test then checks the rule the crate docs
//! ("Locking and re-entrancy") give for that operation (the panic propagates or is reported, and
//! what the call did), `check_invariants()`, the exact `counts()`, and that a fresh claim and a
//! fresh registration on the same id succeed once the test's own guards are gone.
//!
//! | operation | `close` | `conn_id` | `Clock::now` | `Drop` |
//! | --- | --- | --- | --- | --- |
//! | claim (free or held id) | — | — | — | refused conn |
//! | reclaim (claim of a gracing id) | evicted phone | — | — | replaced binary |
//! | takeover | evicted phone | — | — | refused conn |
//! | register | — | the phone's | — | refused conn |
//! | ticket drop / `unregister` | — | — | — | the phone |
//! | claim drop | evicted phone | — | — | the binary |
//! | `release` | evicted phone | — | — | the binary |
//! | `release_after` | evicted phone (while unwinding) | — | ✓ | — |
//! | `expire_due` | evicted phone | — | ✓ | the binary, when the report is dropped |
//! | `Reaper` | evicted phone | — | ✓ | the binary, when the report is dropped |
//!
//! `release_after` also runs runtime code: the `Waker::wake` of each `DeadlineChanges` subscriber
//! when the window is the earliest (last test).
//!
//! A dash: the operation runs no such user code (a fresh claim calls no conn at all, and a ticket
//! owns its phone and a claim its binary, so the registry never drops the last reference to
//! those while their guard lives; a phone's ticket also keeps its binary alive).

mod common;

use common::tally;
use relay_registry::{Clock, CloseReason, Config, Conn, Counts, ManualClock, Reaper, Registry};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

/// Where a [`Trapped`] conn panics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trap {
    Close,
    ConnId,
    Drop,
}

/// A conn that panics in the callback named by its trap, counting each panic in its world.
struct Trapped {
    id: String,
    trap: Option<Trap>,
    fired: Arc<AtomicUsize>,
    closes: Mutex<Vec<CloseReason>>,
}

impl Trapped {
    fn closes(&self) -> Vec<CloseReason> {
        self.closes.lock().unwrap().clone()
    }

    fn fire(&self, trap: Trap) {
        if self.trap == Some(trap) {
            self.fired.fetch_add(1, Ordering::SeqCst);
            panic!("{:?} of {} panicked", trap, self.id);
        }
    }
}

impl Conn for Trapped {
    fn conn_id(&self) -> &str {
        self.fire(Trap::ConnId);
        &self.id
    }

    fn close(&self, reason: CloseReason) {
        self.closes.lock().unwrap().push(reason);
        self.fire(Trap::Close);
    }
}

impl Drop for Trapped {
    fn drop(&mut self) {
        // A second panic while unwinding would abort the test binary.
        if !std::thread::panicking() {
            self.fire(Trap::Drop);
        }
    }
}

/// A clock that panics on the next `armed` calls of `now`, optionally only on the thread with a
/// given name.
struct TrapClock {
    inner: Arc<dyn Clock>,
    armed: AtomicUsize,
    only_on: Option<&'static str>,
    fired: Arc<AtomicUsize>,
}

impl Clock for TrapClock {
    fn now(&self) -> Instant {
        let here = std::thread::current().name() == self.only_on || self.only_on.is_none();
        let armed = |n: usize| n.checked_sub(1);
        if here
            && self
                .armed
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, armed)
                .is_ok()
        {
            self.fired.fetch_add(1, Ordering::SeqCst);
            panic!("the clock panicked");
        }
        self.inner.now()
    }
}

/// A registry on a trap clock, and the count of panics its conns and clock fired.
struct World {
    registry: Registry<Trapped>,
    manual: ManualClock,
    clock: Arc<TrapClock>,
    fired: Arc<AtomicUsize>,
}

impl World {
    /// A registry on a manual clock (the clock panics on any thread once armed).
    fn new() -> World {
        let manual = ManualClock::new();
        Self::on(Arc::new(manual.clone()), manual, None)
    }

    /// A registry on the system clock whose trap fires only on the reaper's thread.
    fn for_reaper() -> World {
        Self::on(
            Arc::new(relay_registry::SystemClock),
            ManualClock::new(),
            Some("relay-registry-reaper"),
        )
    }

    fn on(inner: Arc<dyn Clock>, manual: ManualClock, only_on: Option<&'static str>) -> World {
        let fired = Arc::new(AtomicUsize::new(0));
        let clock = Arc::new(TrapClock {
            inner,
            armed: AtomicUsize::new(0),
            only_on,
            fired: fired.clone(),
        });
        let registry = Registry::with_config(Config::default().with_clock(clock.clone()));
        World {
            registry,
            manual,
            clock,
            fired,
        }
    }

    fn conn(&self, id: &str, trap: Option<Trap>) -> Arc<Trapped> {
        Arc::new(Trapped {
            id: id.to_owned(),
            trap,
            fired: self.fired.clone(),
            closes: Mutex::new(Vec::new()),
        })
    }

    fn plain(&self, id: &str) -> Arc<Trapped> {
        self.conn(id, None)
    }

    /// Makes the next `n` readings of the clock panic.
    fn arm_clock(&self, n: usize) {
        self.clock.armed.store(n, Ordering::SeqCst);
    }

    fn fired(&self) -> usize {
        self.fired.load(Ordering::SeqCst)
    }

    /// Right after the call: consistent, with exactly `expected` in it.
    #[track_caller]
    fn holds(&self, expected: Counts) {
        self.registry.check_invariants().expect("consistent");
        assert_eq!(self.registry.counts(), expected);
    }

    /// Once the test dropped its own guards: every window expires, nothing is left, and a fresh
    /// claim and registration on `srv` succeed.
    #[track_caller]
    fn usable(&self) {
        self.manual.advance(Duration::from_secs(24 * 3600));
        let expired = self.registry.expire_due();
        assert!(expired.panics().is_empty(), "{:?}", expired.panics());
        drop(expired);
        self.holds(Counts::default());
        let claim = self
            .registry
            .claim_server("srv", self.plain("fresh-bin"))
            .expect("a fresh claim succeeds");
        let ticket = self
            .registry
            .register_phone("srv", self.plain("fresh-phone"))
            .expect("a fresh registration succeeds");
        self.holds(tally(1, 0, 1));
        drop((ticket, claim));
        self.holds(Counts::default());
    }
}

/// Runs `f`; the message of its panic, or `Ok` of its value.
fn outcome<R>(f: impl FnOnce() -> R) -> Result<R, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_default()
    })
}

const GRACE: Duration = Duration::from_secs(30);

// ---- claim ------------------------------------------------------------------------------------

#[test]
fn refused_claim_whose_conn_drop_panics_propagates_and_changes_nothing() {
    let w = World::new();
    let held = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let phone = w.registry.register_phone("srv", w.plain("p")).unwrap();
    let err = outcome(|| {
        w.registry
            .claim_server("srv", w.conn("rival", Some(Trap::Drop)))
    });
    assert_eq!(err.unwrap_err(), "Drop of rival panicked");
    assert_eq!(w.fired(), 1);
    w.holds(tally(1, 0, 1));
    assert!(held.is_current() && phone.is_registered());
    drop((phone, held));
    w.usable();
}

// ---- reclaim ----------------------------------------------------------------------------------

#[test]
fn reclaim_whose_evicted_phone_close_panics_propagates_and_frees_the_id() {
    let w = World::new();
    let old = w.registry.claim_server("srv", w.plain("old")).unwrap();
    let (bad, good) = (w.conn("bad", Some(Trap::Close)), w.plain("good"));
    let tickets = [
        w.registry.register_phone("srv", bad.clone()).unwrap(),
        w.registry.register_phone("srv", good.clone()).unwrap(),
    ];
    assert!(old.release_after(GRACE));
    let result = outcome(|| w.registry.claim_server("srv", w.plain("new")));
    assert_eq!(result.unwrap_err(), "Close of bad panicked");
    assert_eq!(w.fired(), 1);
    // The reclaim happened (both phones evicted and closed), then unwinding dropped the new claim.
    assert_eq!(bad.closes(), [CloseReason::Reclaimed]);
    assert_eq!(good.closes(), [CloseReason::Reclaimed]);
    assert!(tickets.iter().all(|t| !t.is_registered()));
    w.holds(Counts::default());
    assert!(w.registry.binary_for("srv").is_none());
    drop(tickets);
    w.usable();
}

#[test]
fn reclaim_whose_replaced_binary_drop_panics_propagates_and_frees_the_id() {
    let w = World::new();
    // Once its claim opened the window (and with no phone ticket sharing its tenure), the
    // registry holds the only reference to the old binary.
    let old = w
        .registry
        .claim_server("srv", w.conn("old", Some(Trap::Drop)))
        .unwrap();
    assert!(old.release_after(GRACE));
    let result = outcome(|| w.registry.claim_server("srv", w.plain("new")));
    assert_eq!(result.unwrap_err(), "Drop of old panicked");
    assert_eq!(w.fired(), 1);
    // The reclaim happened (the window is cancelled), then unwinding dropped the new claim.
    w.holds(Counts::default());
    assert_eq!(w.registry.next_deadline(), None);
    w.usable();
}

// ---- takeover ---------------------------------------------------------------------------------

#[test]
fn takeover_whose_evicted_phone_close_panics_propagates_and_frees_the_id() {
    let w = World::new();
    let incumbent = w.plain("old");
    let old = w.registry.claim_server("srv", incumbent.clone()).unwrap();
    let bad = w.conn("bad", Some(Trap::Close));
    let ticket = w.registry.register_phone("srv", bad.clone()).unwrap();
    let result = outcome(|| {
        w.registry
            .takeover_server("srv", Some(&incumbent), w.plain("new"))
    });
    assert_eq!(result.unwrap_err(), "Close of bad panicked");
    assert_eq!(w.fired(), 1);
    assert_eq!(bad.closes(), [CloseReason::Reclaimed]);
    // The takeover happened (the old claim is stale), then unwinding dropped the new claim.
    assert!(!old.is_current() && !ticket.is_registered());
    w.holds(Counts::default());
    assert!(!old.release(), "the stale claim releases nothing");
    drop(ticket);
    w.usable();
}

#[test]
fn refused_takeover_whose_conn_drop_panics_propagates_and_changes_nothing() {
    let w = World::new();
    let held = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let stranger = w.plain("stranger");
    let result = outcome(|| {
        w.registry
            .takeover_server("srv", Some(&stranger), w.conn("new", Some(Trap::Drop)))
    });
    assert_eq!(result.unwrap_err(), "Drop of new panicked");
    assert_eq!(w.fired(), 1);
    assert!(held.is_current());
    w.holds(tally(1, 0, 0));
    drop(held);
    w.usable();
}

// ---- register ---------------------------------------------------------------------------------

#[test]
fn register_whose_conn_id_panics_propagates_and_registers_nothing() {
    let w = World::new();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let phone = w.conn("p", Some(Trap::ConnId));
    let result = outcome(|| w.registry.register_phone("srv", phone.clone()));
    assert_eq!(result.unwrap_err(), "ConnId of p panicked");
    assert_eq!(w.fired(), 1);
    w.holds(tally(1, 0, 0));
    assert!(w.registry.phones_for("srv").is_empty());
    assert!(phone.closes().is_empty());
    drop(claim);
    w.usable();
}

#[test]
fn refused_register_whose_conn_drop_panics_propagates_and_changes_nothing() {
    let w = World::new();
    let result = outcome(|| {
        w.registry
            .register_phone("srv", w.conn("p", Some(Trap::Drop)))
    });
    assert_eq!(result.unwrap_err(), "Drop of p panicked");
    assert_eq!(w.fired(), 1);
    w.holds(Counts::default());
    w.usable();
}

// ---- ticket drop ------------------------------------------------------------------------------

#[test]
fn ticket_whose_phone_drop_panics_unregisters_then_propagates() {
    for unregister in [false, true] {
        let w = World::new();
        let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
        let sibling = w.registry.register_phone("srv", w.plain("s")).unwrap();
        let ticket = w
            .registry
            .register_phone("srv", w.conn("p", Some(Trap::Drop)))
            .unwrap();
        let result = outcome(|| {
            if unregister {
                assert!(ticket.unregister());
            } else {
                drop(ticket);
            }
        });
        assert_eq!(result.unwrap_err(), "Drop of p panicked");
        assert_eq!(w.fired(), 1);
        w.holds(tally(1, 0, 1));
        assert!(sibling.is_registered());
        assert!(w.registry.phone_for("srv", "p").is_none());
        drop((sibling, claim));
        w.usable();
    }
}

// ---- claim drop and release -------------------------------------------------------------------

/// Ends a claim with two phones, the first of which panics in `close`, by `end`.
fn panicking_phone_close_on(end: impl FnOnce(relay_registry::ServerClaim<Trapped>)) {
    let w = World::new();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let (bad, good) = (w.conn("bad", Some(Trap::Close)), w.plain("good"));
    let tickets = [
        w.registry.register_phone("srv", bad.clone()).unwrap(),
        w.registry.register_phone("srv", good.clone()).unwrap(),
    ];
    let result = outcome(|| end(claim));
    assert_eq!(result.unwrap_err(), "Close of bad panicked");
    assert_eq!(w.fired(), 1);
    // The release completed (every phone closed), then the first panic propagated.
    assert_eq!(bad.closes(), [CloseReason::Released]);
    assert_eq!(good.closes(), [CloseReason::Released]);
    w.holds(Counts::default());
    drop(tickets);
    w.usable();
}

/// Ends a claim whose binary panics in `Drop` (the claim owns the last reference: no phone ticket
/// shares its tenure), by `end`.
fn panicking_binary_drop_on(end: impl FnOnce(relay_registry::ServerClaim<Trapped>)) {
    let w = World::new();
    let claim = w
        .registry
        .claim_server("srv", w.conn("bin", Some(Trap::Drop)))
        .unwrap();
    let result = outcome(|| end(claim));
    assert_eq!(result.unwrap_err(), "Drop of bin panicked");
    assert_eq!(w.fired(), 1);
    w.holds(Counts::default());
    w.usable();
}

#[test]
fn claim_drop_whose_phone_close_panics_releases_then_propagates() {
    panicking_phone_close_on(drop);
}

#[test]
fn claim_drop_whose_binary_drop_panics_releases_then_propagates() {
    panicking_binary_drop_on(drop);
}

#[test]
fn release_whose_phone_close_panics_releases_then_propagates() {
    panicking_phone_close_on(|claim| {
        claim.release();
    });
}

#[test]
fn release_whose_binary_drop_panics_releases_then_propagates() {
    panicking_binary_drop_on(|claim| {
        claim.release();
    });
}

// ---- release_after ----------------------------------------------------------------------------

#[test]
fn release_after_whose_clock_panics_releases_at_once_then_propagates() {
    let w = World::new();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let phone = w.plain("p");
    let ticket = w.registry.register_phone("srv", phone.clone()).unwrap();
    w.arm_clock(1);
    let result = outcome(|| claim.release_after(GRACE));
    assert_eq!(result.unwrap_err(), "the clock panicked");
    assert_eq!(w.fired(), 1);
    // Unwinding dropped the still-armed claim: released at once, no window left behind.
    assert_eq!(phone.closes(), [CloseReason::Released]);
    assert!(!ticket.is_registered());
    w.holds(Counts::default());
    assert_eq!(w.registry.next_deadline(), None);
    drop(ticket);
    w.usable();
}

#[test]
fn release_after_whose_clock_panics_with_a_panicking_phone_close_still_releases() {
    let w = World::new();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let bad = w.conn("bad", Some(Trap::Close));
    let ticket = w.registry.register_phone("srv", bad.clone()).unwrap();
    w.arm_clock(1);
    let result = outcome(|| claim.release_after(GRACE));
    // The clock's panic propagates; the close's panic, raised while unwinding, is reported on
    // stderr instead of aborting the process.
    assert_eq!(result.unwrap_err(), "the clock panicked");
    assert_eq!(w.fired(), 2);
    assert_eq!(bad.closes(), [CloseReason::Released]);
    w.holds(Counts::default());
    drop(ticket);
    w.usable();
}

// ---- expire_due -------------------------------------------------------------------------------

#[test]
fn expire_due_whose_clock_panics_reports_it_and_expires_nothing() {
    let w = World::new();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let phone = w.plain("p");
    let ticket = w.registry.register_phone("srv", phone.clone()).unwrap();
    assert!(claim.release_after(GRACE));
    w.manual.advance(GRACE);
    w.arm_clock(1);
    let expired = outcome(|| w.registry.expire_due()).expect("expire_due never panics");
    assert_eq!(w.fired(), 1);
    assert!(expired.is_empty());
    assert_eq!(expired.panics(), ["the clock panicked"]);
    w.holds(tally(0, 1, 1));
    // The window is still armed: the next call expires it.
    let expired = w.registry.expire_due();
    assert_eq!(expired.len(), 1);
    assert_eq!(phone.closes(), [CloseReason::GraceExpired]);
    w.holds(Counts::default());
    drop((expired, ticket));
    w.usable();
}

#[test]
fn expire_due_whose_phone_close_panics_reports_it_and_expires_everything() {
    let w = World::new();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let (bad, good) = (w.conn("bad", Some(Trap::Close)), w.plain("good"));
    let tickets = [
        w.registry.register_phone("srv", bad.clone()).unwrap(),
        w.registry.register_phone("srv", good.clone()).unwrap(),
    ];
    assert!(claim.release_after(GRACE));
    w.manual.advance(GRACE);
    let expired = outcome(|| w.registry.expire_due()).expect("expire_due never panics");
    assert_eq!(w.fired(), 1);
    assert_eq!(expired.len(), 1);
    assert_eq!(expired.panics(), ["Close of bad panicked"]);
    assert_eq!(bad.closes(), [CloseReason::GraceExpired]);
    assert_eq!(good.closes(), [CloseReason::GraceExpired]);
    w.holds(Counts::default());
    drop((expired, tickets));
    w.usable();
}

#[test]
fn expiry_report_whose_binary_drop_panics_panics_where_it_is_dropped() {
    let w = World::new();
    let claim = w
        .registry
        .claim_server("srv", w.conn("bin", Some(Trap::Drop)))
        .unwrap();
    assert!(claim.release_after(GRACE));
    w.manual.advance(GRACE);
    let expired = outcome(|| w.registry.expire_due()).expect("expire_due never panics");
    assert_eq!(
        w.fired(),
        0,
        "the report owns the binary: expire_due dropped nothing"
    );
    assert_eq!(
        expired.iter().map(|e| e.server_id()).collect::<Vec<_>>(),
        ["srv"]
    );
    assert_eq!(
        outcome(|| drop(expired)).unwrap_err(),
        "Drop of bin panicked"
    );
    assert_eq!(w.fired(), 1);
    w.holds(Counts::default());
    w.usable();
}

// ---- Reaper -----------------------------------------------------------------------------------

/// What a reaper's handler saw: each report's expired ids and caught panics, in order.
type Seen = mpsc::Receiver<(Vec<String>, Vec<String>)>;

fn reaper_of(w: &World) -> (Reaper, Seen) {
    let (tx, rx) = mpsc::channel();
    let reaper = Reaper::spawn_with(&w.registry, move |expiries| {
        let ids = expiries.iter().map(|e| e.server_id().to_owned()).collect();
        tx.send((ids, expiries.panics().to_vec())).ok();
    });
    (reaper, rx)
}

fn next(seen: &Seen) -> (Vec<String>, Vec<String>) {
    seen.recv_timeout(Duration::from_secs(20))
        .expect("the reaper reports")
}

/// The reaper still expires windows after the panic: one more, on another id.
fn still_reaps(w: &World, seen: &Seen) {
    w.registry
        .claim_server("later", w.plain("later-bin"))
        .unwrap()
        .release_after(Duration::from_millis(1));
    assert_eq!(next(seen), (vec!["later".to_owned()], vec![]));
}

#[test]
fn reaper_whose_phone_close_panics_reports_it_and_keeps_reaping() {
    let w = World::for_reaper();
    let (reaper, seen) = reaper_of(&w);
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let bad = w.conn("bad", Some(Trap::Close));
    let ticket = w.registry.register_phone("srv", bad.clone()).unwrap();
    assert!(claim.release_after(Duration::from_millis(1)));
    assert_eq!(
        next(&seen),
        (
            vec!["srv".to_owned()],
            vec!["Close of bad panicked".to_owned()]
        )
    );
    assert_eq!(w.fired(), 1);
    assert_eq!(bad.closes(), [CloseReason::GraceExpired]);
    w.holds(Counts::default());
    still_reaps(&w, &seen);
    drop((reaper, ticket));
    w.usable();
}

#[test]
fn reaper_whose_clock_panics_reports_it_and_keeps_reaping() {
    let w = World::for_reaper();
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let phone = w.plain("p");
    let ticket = w.registry.register_phone("srv", phone.clone()).unwrap();
    assert!(claim.release_after(Duration::from_millis(1)));
    // The reaper's first two readings of the clock panic, with a window pending: each round
    // reports the panic and tries again later, and the window expires once the clock works.
    w.arm_clock(2);
    let (reaper, seen) = reaper_of(&w);
    for _ in 0..2 {
        assert_eq!(next(&seen), (vec![], vec!["the clock panicked".to_owned()]));
    }
    assert_eq!(next(&seen), (vec!["srv".to_owned()], vec![]));
    assert_eq!(w.fired(), 2);
    assert_eq!(phone.closes(), [CloseReason::GraceExpired]);
    w.holds(Counts::default());
    still_reaps(&w, &seen);
    drop((reaper, ticket));
    w.usable();
}

#[test]
fn reaper_whose_expired_binary_drop_panics_keeps_reaping() {
    let w = World::for_reaper();
    let (reaper, seen) = reaper_of(&w);
    let claim = w
        .registry
        .claim_server("srv", w.conn("bin", Some(Trap::Drop)))
        .unwrap();
    assert!(claim.release_after(Duration::from_millis(1)));
    // The handler drops the report, and with it the binary: its Drop panics on the reaper thread.
    assert_eq!(next(&seen), (vec!["srv".to_owned()], vec![]));
    still_reaps(&w, &seen);
    assert_eq!(w.fired(), 1);
    w.holds(Counts::default());
    drop(reaper);
    w.usable();
}

// ---- wakers (runtime code) --------------------------------------------------------------------

/// A waker whose `wake` panics, counting its wakes.
struct PanickingWaker(AtomicUsize);

impl std::task::Wake for PanickingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
        panic!("the waker panicked");
    }
}

/// A waker that counts its wakes.
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn release_after_whose_waker_panics_opens_the_window_wakes_the_others_then_propagates() {
    use std::future::Future;
    use std::task::{Context, Poll, Waker};
    let w = World::new();
    let panicking = Arc::new(PanickingWaker(AtomicUsize::new(0)));
    let counting = Arc::new(CountingWaker(AtomicUsize::new(0)));
    let mut subscriptions = [w.registry.deadline_changes(), w.registry.deadline_changes()];
    for (changes, waker) in subscriptions.iter_mut().zip([
        Waker::from(panicking.clone()),
        Waker::from(counting.clone()),
    ]) {
        let pending = std::pin::pin!(changes.changed()).poll(&mut Context::from_waker(&waker));
        assert_eq!(pending, Poll::Pending);
    }
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let phone = w.plain("p");
    let ticket = w.registry.register_phone("srv", phone.clone()).unwrap();
    let result = outcome(|| claim.release_after(GRACE));
    assert_eq!(result.unwrap_err(), "the waker panicked");
    assert_eq!(panicking.0.load(Ordering::SeqCst), 1);
    assert_eq!(
        counting.0.load(Ordering::SeqCst),
        1,
        "the other waiter was still woken"
    );
    // The window is open (and owned by its deadline): it expires as usual.
    w.holds(tally(0, 1, 1));
    assert!(subscriptions.iter().all(|c| c.has_changed()));
    w.manual.advance(GRACE);
    let expired = w.registry.expire_due();
    assert_eq!(expired.len(), 1);
    assert_eq!(phone.closes(), [CloseReason::GraceExpired]);
    drop((expired, ticket, subscriptions));
    w.usable();
}

// ---- what cannot propagate is printed ---------------------------------------------------------

/// Set in the child process of the test below.
const STDERR_CHILD: &str = "RELAY_REGISTRY_PANICS_STDERR_CHILD";

/// Panics the registry cannot hand back are printed to stderr, never swallowed silently: a close
/// that panicked during a `Reaper`'s expiry (the default handler), a panicking expiry handler,
/// and a close that panicked while a guard was dropped during unwinding. Runs itself in a child
/// process to read its stderr.
#[test]
fn panics_that_cannot_propagate_are_printed_to_stderr() {
    if std::env::var_os(STDERR_CHILD).is_some() {
        return print_uncatchable_panics();
    }
    let name = "panics_that_cannot_propagate_are_printed_to_stderr";
    let child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(STDERR_CHILD, "1")
        .output()
        .expect("the test binary runs");
    let stderr = String::from_utf8_lossy(&child.stderr);
    assert!(child.status.success(), "child failed:\n{stderr}");
    for expected in [
        "relay-registry reaper: user code panicked during grace expiry: Close of reaped panicked",
        "relay-registry reaper: the expiry handler panicked (the reaper keeps running): \
         the handler panicked",
        "relay-registry: user code (a Conn::close or a conn's Drop) panicked while this thread was \
         already unwinding; the panic was dropped: Close of unwound panicked",
    ] {
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
    }
}

fn print_uncatchable_panics() {
    // The default reaper handler.
    let w = World::for_reaper();
    let reaper = Reaper::spawn(&w.registry);
    let claim = w.registry.claim_server("srv", w.plain("bin")).unwrap();
    let ticket = w
        .registry
        .register_phone("srv", w.conn("reaped", Some(Trap::Close)))
        .unwrap();
    assert!(claim.release_after(Duration::ZERO));
    while w.registry.counts() != Counts::default() {
        std::thread::sleep(Duration::from_millis(1));
    }
    drop((reaper, ticket)); // joins: the handler's report is printed
    // A handler that panics.
    let (done_tx, done_rx) = mpsc::channel();
    let reaper = Reaper::spawn_with(&w.registry, move |_| {
        done_tx.send(()).ok();
        panic!("the handler panicked");
    });
    w.registry
        .claim_server("other", w.plain("bin"))
        .unwrap()
        .release_after(Duration::ZERO);
    done_rx.recv_timeout(Duration::from_secs(20)).unwrap();
    drop(reaper);
    // A guard dropped while its thread unwinds, whose phone's close panics.
    let task = outcome(|| {
        let claim = w.registry.claim_server("task", w.plain("bin")).unwrap();
        let ticket = w
            .registry
            .register_phone("task", w.conn("unwound", Some(Trap::Close)))
            .unwrap();
        let _guards = (claim, ticket);
        panic!("the connection task panicked");
    });
    assert_eq!(task.unwrap_err(), "the connection task panicked");
    w.holds(Counts::default());
}
