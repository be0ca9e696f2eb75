//! Stale guards are inert: a claim that was taken over (and whose id was then reclaimed or
//! reused), and a ticket whose phone was evicted, change nothing — whatever now occupies the id or
//! the slot.

mod common;

use common::{Mock, check, ids, mock, registry, tally};
use relay_registry::{Conn, PhoneTicket, Registry, ServerClaim};
use std::sync::Arc;
use std::time::Duration;

/// `srv` claimed by "old", then taken over by "new", which gets one phone: the stale claim, the
/// successor's claim, and the phone with its ticket.
type TakenOver = (
    ServerClaim<Mock>,
    ServerClaim<Mock>,
    (Arc<Mock>, PhoneTicket<Mock>),
);

fn taken_over(reg: &Registry<Mock>) -> TakenOver {
    let old_bin = mock("old");
    let stale = reg.claim_server("srv", old_bin.clone()).unwrap();
    let successor = reg
        .takeover_server("srv", Some(&old_bin), mock("new"))
        .unwrap();
    let phone = mock("p");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(!stale.is_current());
    (stale, successor, (phone, ticket))
}

fn assert_successor_intact(reg: &Registry<Mock>, successor: &ServerClaim<Mock>, phone: &Mock) {
    check(reg);
    assert!(successor.is_current());
    assert_eq!(
        reg.binary_for("srv").unwrap().conn_id(),
        successor.conn().conn_id()
    );
    assert_eq!(reg.counts(), tally(1, 0, 1));
    assert!(!phone.is_closed());
    assert_eq!(reg.next_deadline(), None);
}

#[test]
fn stale_claim_dropped_after_takeover_cannot_release_the_successor() {
    let (reg, _) = registry();
    let (stale, successor, (phone, _ticket)) = taken_over(&reg);
    drop(stale);
    assert_successor_intact(&reg, &successor, &phone);
}

#[test]
fn stale_claim_release_after_takeover_returns_false_and_changes_nothing() {
    let (reg, _) = registry();
    let (stale, successor, (phone, _ticket)) = taken_over(&reg);
    assert!(!stale.release());
    assert_successor_intact(&reg, &successor, &phone);
}

#[test]
fn stale_claim_release_after_after_takeover_opens_no_window() {
    let (reg, clock) = registry();
    let (stale, successor, (phone, _ticket)) = taken_over(&reg);
    assert!(!stale.release_after(Duration::ZERO));
    assert_successor_intact(&reg, &successor, &phone);
    clock.advance(Duration::from_secs(1));
    assert_eq!(reg.expire_due().len(), 0);
    assert_successor_intact(&reg, &successor, &phone);
}

#[test]
fn stale_claim_cannot_touch_a_reclaimer_of_the_same_slot() {
    for how in ["drop", "release", "release_after"] {
        let (reg, clock) = registry();
        let (stale, successor, _) = taken_over(&reg);
        assert!(successor.release_after(Duration::from_secs(30)));
        let reclaimer = reg.claim_server("srv", mock("reclaimer")).unwrap();
        let phone = mock("p2");
        let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
        match how {
            "drop" => drop(stale),
            "release" => assert!(!stale.release()),
            _ => assert!(!stale.release_after(Duration::ZERO)),
        }
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            reg.expire_due().len(),
            0,
            "{how}: the old window is cancelled"
        );
        check(&reg);
        assert!(reclaimer.is_current(), "{how}");
        assert_eq!(reg.binary_for("srv").unwrap().conn_id(), "reclaimer");
        assert!(!phone.is_closed(), "{how}");
        assert_eq!(reg.counts(), tally(1, 0, 1));
    }
}

#[test]
fn stale_claim_cannot_touch_another_id_that_reuses_its_slot() {
    let (reg, _) = registry();
    let (stale, successor, _) = taken_over(&reg);
    assert!(successor.release());
    // The freed slot is the first to be reused (slotmap's free list is LIFO).
    let other = reg.claim_server("other", mock("other")).unwrap();
    let phone = mock("op");
    let _t = reg.register_phone("other", phone.clone()).unwrap();
    assert!(!stale.release());
    check(&reg);
    assert!(other.is_current());
    assert!(!phone.is_closed());
    assert_eq!(reg.counts(), tally(1, 0, 1));
}

#[test]
fn stale_ticket_cannot_unregister_the_phone_now_in_its_slot() {
    let (reg, _) = registry();
    let first_claim = reg.claim_server("srv", mock("bin")).unwrap();
    let stale = reg.register_phone("srv", mock("p-old")).unwrap();
    assert!(first_claim.release());
    assert!(!stale.is_registered());
    assert!(stale.binary().is_none());
    let _claim = reg.claim_server("srv", mock("bin2")).unwrap();
    let fresh_phone = mock("p-new");
    let fresh = reg.register_phone("srv", fresh_phone.clone()).unwrap();
    assert!(!stale.unregister());
    check(&reg);
    assert!(fresh.is_registered());
    assert_eq!(ids(&reg.phones_for("srv")), ["p-new"]);
    assert!(!fresh_phone.is_closed());
}

#[test]
fn ticket_evicted_by_expiry_or_reclaim_is_stale() {
    let (reg, clock) = registry();
    reg.claim_server("a", mock("a"))
        .unwrap()
        .release_after(Duration::from_secs(1));
    reg.claim_server("b", mock("b"))
        .unwrap()
        .release_after(Duration::from_secs(100));
    let expired = reg.register_phone("a", mock("pa")).unwrap();
    let reclaimed = reg.register_phone("b", mock("pb")).unwrap();
    clock.advance(Duration::from_secs(1));
    assert_eq!(reg.expire_due().len(), 1);
    let _b = reg.claim_server("b", mock("b2")).unwrap();
    let _a = reg.claim_server("a", mock("a2")).unwrap();
    let pa = reg.register_phone("a", mock("pa2")).unwrap();
    let pb = reg.register_phone("b", mock("pb2")).unwrap();
    assert!(!expired.is_registered() && !reclaimed.is_registered());
    drop(expired);
    drop(reclaimed);
    check(&reg);
    assert!(pa.is_registered() && pb.is_registered());
    assert_eq!(reg.counts().phones, 2);
}

#[test]
fn churning_one_slot_many_times_keeps_every_old_guard_inert() {
    let (reg, _) = registry();
    let mut stale_claims = Vec::new();
    let mut stale_tickets = Vec::new();
    let mut current = reg.claim_server("srv", mock("b0")).unwrap();
    for i in 1..500 {
        stale_tickets.push(reg.register_phone("srv", mock(&format!("p{i}"))).unwrap());
        let incumbent = current.conn().clone();
        let next = reg
            .takeover_server("srv", Some(&incumbent), mock(&format!("b{i}")))
            .unwrap();
        stale_claims.push(std::mem::replace(&mut current, next));
    }
    let live_phone = reg.register_phone("srv", mock("live")).unwrap();
    // Drop the old guards in an interleaved order, newest claims first.
    while let Some(claim) = stale_claims.pop() {
        drop(claim);
        stale_tickets.pop();
        if stale_claims.len() % 7 == 0 {
            check(&reg);
        }
    }
    check(&reg);
    assert!(current.is_current() && live_phone.is_registered());
    assert_eq!(reg.counts(), tally(1, 0, 1));
}

#[test]
fn a_ticket_that_outlives_the_registry_goes_stale_and_frees_its_phone() {
    // Tickets hold no handle of the registry: with its last handle and every claim gone (the id
    // in a grace window), the registry is freed, its tenures end and their tickets go stale.
    let reg: Registry<Mock> = Registry::new();
    let binary = mock("bin");
    let phone = mock("p");
    let claim = reg.claim_server("srv", binary.clone()).unwrap();
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(claim.release_after(Duration::from_secs(3600)));
    assert!(ticket.is_registered());
    drop(reg);
    assert!(!ticket.is_registered());
    assert!(ticket.binary().is_none());
    assert_eq!(
        Arc::strong_count(&phone),
        2,
        "the registry let go of the phone: only the test and the ticket hold it"
    );
    assert!(!phone.is_closed(), "freeing the registry closes nothing");
    assert!(!ticket.unregister());
}
