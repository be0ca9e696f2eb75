//! Grace windows: the id stays held until the deadline; a claim in the window reclaims; expiry
//! happens only in `expire_due`, driven here by a manual clock.

mod common;

use common::{check, ids, mock, registry, tally};
use relay_registry::{CloseReason, Counts};
use std::sync::Arc;
use std::time::Duration;

const GRACE: Duration = Duration::from_secs(30);

#[test]
fn binary_stays_visible_during_grace() {
    let (reg, _) = registry();
    let bin = mock("bin");
    let claim = reg.claim_server("srv", bin.clone()).unwrap();
    let phone = mock("p");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(claim.release_after(GRACE));
    check(&reg);
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &bin));
    assert_eq!(reg.counts(), tally(0, 1, 1));
    assert!(ticket.is_registered());
    assert!(Arc::ptr_eq(&ticket.binary().unwrap(), &bin));
    assert!(!phone.is_closed());
}

#[test]
fn phone_registers_during_grace() {
    let (reg, _) = registry();
    reg.claim_server("srv", mock("bin"))
        .unwrap()
        .release_after(GRACE);
    let ticket = reg.register_phone("srv", mock("late")).unwrap();
    check(&reg);
    assert!(ticket.is_registered());
    assert_eq!(ticket.binary().unwrap().conn_id_calls(), 0);
    assert_eq!(reg.counts(), tally(0, 1, 1));
}

#[test]
fn claim_during_grace_reclaims_and_evicts_phones() {
    let (reg, _) = registry();
    reg.claim_server("srv", mock("old"))
        .unwrap()
        .release_after(GRACE);
    let phones: Vec<_> = (0..3).map(|i| mock(&format!("p{i}"))).collect();
    let tickets: Vec<_> = phones
        .iter()
        .map(|p| reg.register_phone("srv", p.clone()).unwrap())
        .collect();
    let new_bin = mock("new");
    let claim = reg.claim_server("srv", new_bin.clone()).unwrap();
    check(&reg);
    // Removed under the lock before the call returned, closed after it.
    assert_eq!(reg.counts(), tally(1, 0, 0));
    for phone in &phones {
        assert_eq!(phone.closes(), vec![CloseReason::Reclaimed]);
    }
    assert!(
        tickets
            .iter()
            .all(|t| !t.is_registered() && t.binary().is_none())
    );
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &new_bin));
    assert!(claim.is_current());
    assert!(claim.replaced(), "the claim says it was a reclaim");
    assert_eq!(
        reg.next_deadline(),
        None,
        "the reclaim cancelled the window"
    );
    assert_eq!(CloseReason::Reclaimed.code(), 4404);
    assert_eq!(
        CloseReason::Reclaimed.reason(),
        "binary reclaimed server-id"
    );
    // Phones can rejoin the new binary.
    let rejoined = reg.register_phone("srv", mock("p0")).unwrap();
    assert!(Arc::ptr_eq(&rejoined.binary().unwrap(), &new_bin));
    check(&reg);
}

#[test]
fn expiry_removes_the_binary_and_closes_phones_with_grace_expired() {
    let (reg, clock) = registry();
    reg.claim_server("srv", mock("bin"))
        .unwrap()
        .release_after(GRACE);
    let phone = mock("p");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    clock.advance(GRACE);
    assert_eq!(reg.expire_due().len(), 1);
    check(&reg);
    assert_eq!(phone.closes(), vec![CloseReason::GraceExpired]);
    assert_eq!(phone.close_threads(), vec![std::thread::current().id()]);
    assert_eq!(CloseReason::GraceExpired.code(), 1011);
    assert_eq!(
        CloseReason::GraceExpired.reason(),
        "binary did not reconnect"
    );
    assert!(!ticket.is_registered());
    assert!(reg.binary_for("srv").is_none());
    assert_eq!(reg.counts(), Counts::default());
    assert!(reg.claim_server("srv", mock("next")).is_ok());
}

#[test]
fn window_is_due_exactly_at_its_deadline() {
    let (reg, clock) = registry();
    reg.claim_server("srv", mock("bin"))
        .unwrap()
        .release_after(GRACE);
    clock.advance(GRACE - Duration::from_nanos(1));
    assert_eq!(reg.expire_due().len(), 0);
    assert_eq!(reg.counts().gracing, 1);
    clock.advance(Duration::from_nanos(1));
    assert_eq!(reg.expire_due().len(), 1);
    check(&reg);
}

#[test]
fn due_window_behaves_as_open_until_expire_due_runs() {
    let (reg, clock) = registry();
    let bin = mock("bin");
    reg.claim_server("srv", bin.clone())
        .unwrap()
        .release_after(GRACE);
    clock.advance(GRACE * 2);
    // Past the deadline, but nobody ran expire_due: still held, phones may join, reclaim works.
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &bin));
    let phone = mock("p");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    let _claim = reg.claim_server("srv", mock("new")).unwrap();
    assert_eq!(phone.closes(), vec![CloseReason::Reclaimed]);
    assert_eq!(
        reg.expire_due().len(),
        0,
        "the reclaim cancelled the due window"
    );
    check(&reg);
}

#[test]
fn expire_due_counts_only_due_windows() {
    let (reg, clock) = registry();
    for (id, secs) in [("a", 10), ("b", 20), ("c", 30)] {
        reg.claim_server(id, mock(id))
            .unwrap()
            .release_after(Duration::from_secs(secs));
    }
    assert_eq!(reg.expire_due().len(), 0);
    clock.advance(Duration::from_secs(20));
    assert_eq!(reg.expire_due().len(), 2);
    check(&reg);
    assert_eq!(reg.counts().gracing, 1);
    assert_eq!(ids(&reg.snapshot()), ["c"]);
    assert_eq!(
        reg.expire_due().len(),
        0,
        "already expired windows are not counted twice"
    );
}

#[test]
fn next_deadline_is_the_earliest_open_window_and_ignores_cancelled_ones() {
    let (reg, clock) = registry();
    assert_eq!(reg.next_deadline(), None);
    let start = {
        use relay_registry::Clock;
        clock.now()
    };
    reg.claim_server("a", mock("a"))
        .unwrap()
        .release_after(Duration::from_secs(10));
    reg.claim_server("b", mock("b"))
        .unwrap()
        .release_after(Duration::from_secs(20));
    assert_eq!(reg.next_deadline(), Some(start + Duration::from_secs(10)));
    let _reclaim = reg.claim_server("a", mock("a2")).unwrap();
    assert_eq!(reg.next_deadline(), Some(start + Duration::from_secs(20)));
    check(&reg);
    let _reclaim_b = reg.claim_server("b", mock("b2")).unwrap();
    assert_eq!(reg.next_deadline(), None);
    check(&reg);
}

#[test]
fn release_after_duration_max_saturates_instead_of_panicking() {
    let (reg, clock) = registry();
    assert!(
        reg.claim_server("srv", mock("bin"))
            .unwrap()
            .release_after(Duration::MAX)
    );
    check(&reg);
    assert!(reg.next_deadline().is_some());
    clock.advance(Duration::from_secs(100 * 365 * 24 * 3600));
    assert_eq!(reg.expire_due().len(), 0);
    assert_eq!(reg.counts().gracing, 1);
}

#[test]
fn zero_grace_expires_at_the_next_expire_due() {
    let (reg, _) = registry();
    let phone = mock("p");
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let _t = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(claim.release_after(Duration::ZERO));
    assert_eq!(reg.counts().gracing, 1);
    assert_eq!(reg.expire_due().len(), 1);
    assert_eq!(phone.closes(), vec![CloseReason::GraceExpired]);
    check(&reg);
}
