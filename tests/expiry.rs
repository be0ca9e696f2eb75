//! What expiry reports, and how an async task learns when to run it: `Expiries` and
//! `DeadlineChanges`, driven by a manual clock and a hand-made waker (no runtime).

mod common;

use common::{Mock, check, mock, registry, tally};
use relay_registry::{CloseReason, Conn, Reaper, Registry};
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

// ---- Expiries ---------------------------------------------------------------------------------

#[test]
fn expiry_reports_every_expired_id_earliest_deadline_first_with_or_without_phones() {
    let (reg, clock) = registry();
    let binaries: Vec<Arc<Mock>> = ["b-late", "b-lonely", "b-early"].map(mock).into();
    for (id, (binary, secs)) in ["late", "lonely", "early"]
        .into_iter()
        .zip(binaries.iter().zip([30, 20, 10]))
    {
        let claim = reg.claim_server(id, binary.clone()).unwrap();
        claim.release_after(Duration::from_secs(secs));
    }
    let phones = [mock("p1"), mock("p2"), mock("p3")];
    let _tickets = [
        reg.register_phone("early", phones[0].clone()).unwrap(),
        reg.register_phone("late", phones[1].clone()).unwrap(),
        reg.register_phone("late", phones[2].clone()).unwrap(),
    ];
    let _kept = reg.claim_server("kept", mock("b-kept")).unwrap();
    clock.advance(Duration::from_secs(30));
    let report = reg.expire_due();
    let seen: Vec<(&str, usize)> = report.iter().map(|e| (e.server_id(), e.phones())).collect();
    assert_eq!(seen, [("early", 1), ("lonely", 0), ("late", 2)]);
    assert_eq!((report.len(), report.is_empty()), (3, false));
    let expired_binaries: Vec<&str> = (&report)
        .into_iter()
        .map(|e| e.binary().conn_id())
        .collect();
    assert_eq!(expired_binaries, ["b-early", "b-lonely", "b-late"]);
    assert!(report.panics().is_empty());
    assert!(
        phones
            .iter()
            .all(|p| p.closes() == [CloseReason::GraceExpired])
    );
    assert_eq!(reg.counts(), tally(1, 0, 0));
    check(&reg);
    // Expired ids are reported once.
    let again = reg.expire_due();
    assert_eq!(again.len(), 0);
    assert!(again.is_empty() && again.iter().next().is_none());
}

#[test]
fn the_report_owns_the_expired_binaries() {
    let (reg, clock) = registry();
    let binary = mock("bin");
    reg.claim_server("srv", binary.clone())
        .unwrap()
        .release_after(Duration::ZERO);
    clock.advance(Duration::ZERO);
    let report = reg.expire_due();
    assert!(Arc::ptr_eq(report.iter().next().unwrap().binary(), &binary));
    assert_eq!(
        Arc::strong_count(&binary),
        2,
        "this test's and the report's"
    );
    drop(report);
    assert_eq!(Arc::strong_count(&binary), 1, "the registry kept nothing");
}

#[test]
fn an_expiry_that_is_not_due_reports_nothing() {
    let (reg, clock) = registry();
    reg.claim_server("srv", mock("bin"))
        .unwrap()
        .release_after(Duration::from_secs(10));
    clock.advance(Duration::from_secs(9));
    let report = reg.expire_due();
    assert!(report.is_empty());
    assert!(report.panics().is_empty());
    assert_eq!(reg.counts(), tally(0, 1, 0));
}

// ---- DeadlineChanges --------------------------------------------------------------------------

/// A waker that counts its wakes.
#[derive(Default)]
struct Counting(AtomicUsize);

impl Wake for Counting {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Counting {
    fn wakes(&self) -> usize {
        self.0.load(Ordering::SeqCst)
    }
}

/// Polls a fresh `changed()` future once.
fn poll_changed(changes: &mut relay_registry::DeadlineChanges, waker: &Waker) -> Poll<()> {
    pin!(changes.changed()).poll(&mut Context::from_waker(waker))
}

#[test]
fn deadline_changes_resolve_only_when_the_earliest_deadline_moves_earlier() {
    let (reg, _) = registry();
    let mut changes = reg.deadline_changes();
    let counting = Arc::new(Counting::default());
    let waker = Waker::from(counting.clone());
    assert!(!changes.has_changed());
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Pending);
    // The first window: the earliest deadline appears (moves earlier than "none").
    let release = |id: &str, secs| {
        reg.claim_server(id, mock(id))
            .unwrap()
            .release_after(Duration::from_secs(secs))
    };
    assert!(release("a", 20));
    assert_eq!(counting.wakes(), 1, "the pending future's waker was woken");
    assert!(changes.has_changed());
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Ready(()));
    assert!(!changes.has_changed(), "resolving consumes the change");
    // A later window and one at the same deadline move nothing.
    assert!(release("b", 30));
    assert!(release("c", 20));
    assert!(!changes.has_changed());
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Pending);
    // An earlier one does.
    assert!(release("d", 10));
    assert_eq!(counting.wakes(), 2);
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Ready(()));
    // Cancelling windows (reclaims) moves the deadline later: no resolution.
    let _reclaim = reg.claim_server("d", mock("d2")).unwrap();
    assert!(!changes.has_changed());
    check(&reg);
}

#[test]
fn a_change_before_the_await_is_not_lost_and_each_subscription_sees_it() {
    let (reg, _) = registry();
    let mut early = reg.deadline_changes();
    reg.claim_server("a", mock("a"))
        .unwrap()
        .release_after(Duration::from_secs(1));
    // Subscribed after the change: it has not seen one.
    let mut late = reg.deadline_changes();
    assert!(early.has_changed() && !late.has_changed());
    let waker = Waker::noop();
    // The change happened while nobody polled: the next `changed()` resolves at once.
    assert_eq!(poll_changed(&mut early, waker), Poll::Ready(()));
    assert_eq!(poll_changed(&mut late, waker), Poll::Pending);
    reg.claim_server("b", mock("b"))
        .unwrap()
        .release_after(Duration::ZERO);
    assert_eq!(poll_changed(&mut early, waker), Poll::Ready(()));
    assert_eq!(poll_changed(&mut late, waker), Poll::Ready(()));
}

#[test]
fn a_dropped_future_loses_nothing_and_a_dropped_subscription_forgets_its_waker() {
    let (reg, _) = registry();
    let mut changes = reg.deadline_changes();
    let counting = Arc::new(Counting::default());
    let waker = Waker::from(counting.clone());
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Pending);
    assert_eq!(
        Arc::strong_count(&counting),
        3,
        "this test, `waker`, and the subscription"
    );
    // Polling again replaces the stored waker rather than adding one.
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Pending);
    assert_eq!(Arc::strong_count(&counting), 3);
    reg.claim_server("a", mock("a"))
        .unwrap()
        .release_after(Duration::from_secs(1));
    assert_eq!(counting.wakes(), 1);
    assert_eq!(Arc::strong_count(&counting), 2, "a woken waker is not kept");
    // The future that was pending was dropped; the change is still there for the next one.
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Ready(()));
    assert_eq!(poll_changed(&mut changes, &waker), Poll::Pending);
    assert_eq!(Arc::strong_count(&counting), 3);
    drop(changes);
    assert_eq!(
        Arc::strong_count(&counting),
        2,
        "unsubscribed: the waker is dropped"
    );
    reg.claim_server("b", mock("b"))
        .unwrap()
        .release_after(Duration::ZERO);
    assert_eq!(
        counting.wakes(),
        1,
        "no wake after the subscription is gone"
    );
}

#[test]
fn dropping_the_registry_or_a_reaper_resolves_pending_changes() {
    let reg: Registry<Mock> = Registry::new();
    let mut changes = reg.deadline_changes();
    let reaper = Reaper::spawn(&reg);
    drop(reaper);
    assert!(
        changes.has_changed(),
        "a stopped reaper bumps the signal (a spurious change)"
    );
    assert_eq!(poll_changed(&mut changes, Waker::noop()), Poll::Ready(()));
    drop(reg);
    assert!(
        changes.has_changed(),
        "a dropped registry resolves its subscriptions"
    );
}

#[test]
fn an_async_expiry_loop_needs_no_runtime() {
    // The loop of the tokio recipe, polled by hand: expire, then wait for the next deadline or
    // an earlier one.
    let (reg, clock) = registry();
    let mut changes = reg.deadline_changes();
    let phone = mock("p");
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(reg.expire_due().is_empty());
    assert_eq!(reg.next_deadline(), None);
    assert_eq!(poll_changed(&mut changes, Waker::noop()), Poll::Pending);
    claim.release_after(Duration::from_secs(30));
    assert_eq!(poll_changed(&mut changes, Waker::noop()), Poll::Ready(()));
    let deadline = reg.next_deadline().expect("a window is armed");
    clock.advance(Duration::from_secs(30));
    assert!(relay_registry::Clock::now(&clock) >= deadline);
    let report = reg.expire_due();
    assert_eq!(
        report.iter().map(|e| e.server_id()).collect::<Vec<_>>(),
        ["srv"]
    );
    assert_eq!(phone.closes(), [CloseReason::GraceExpired]);
}

#[test]
fn every_pending_subscription_is_woken_and_each_keeps_its_own_waker() {
    let (reg, _) = registry();
    let counters = [Arc::new(Counting::default()), Arc::new(Counting::default())];
    let mut subscriptions = [reg.deadline_changes(), reg.deadline_changes()];
    for (changes, counting) in subscriptions.iter_mut().zip(&counters) {
        let waker = Waker::from(counting.clone());
        assert_eq!(poll_changed(changes, &waker), Poll::Pending);
    }
    reg.claim_server("a", mock("a"))
        .unwrap()
        .release_after(Duration::from_secs(10));
    assert_eq!(counters.each_ref().map(|c| c.wakes()), [1, 1]);
    // Dropping one subscription leaves the other's waker in place.
    let [first, mut second] = subscriptions;
    assert_eq!(
        poll_changed(&mut second, &Waker::from(counters[1].clone())),
        Poll::Ready(())
    );
    assert_eq!(
        poll_changed(&mut second, &Waker::from(counters[1].clone())),
        Poll::Pending
    );
    drop(first);
    reg.claim_server("b", mock("b"))
        .unwrap()
        .release_after(Duration::from_secs(1));
    assert_eq!(counters.each_ref().map(|c| c.wakes()), [1, 2]);
}
