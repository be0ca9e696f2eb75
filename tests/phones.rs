//! Phones: they need a binary, obey the cap, unregister in O(1) without closing, and are found by
//! the conn-id they registered with.

mod common;

use common::{check, ids, mock, registry, registry_with_cap, tally};
use relay_registry::{Conn, Counts, RegistryError};
use std::sync::Arc;

#[test]
fn phone_needs_a_binary() {
    let (reg, _) = registry();
    let phone = mock("p");
    let err = reg.register_phone("srv", phone.clone()).unwrap_err();
    check(&reg);
    assert_eq!(err, RegistryError::NoServer);
    assert_eq!(err.code(), Some(4404));
    assert!(!phone.is_closed());
    assert_eq!(Arc::strong_count(&phone), 1, "a refused conn is not kept");
}

#[test]
fn registered_phone_is_found_by_its_conn_id() {
    let (reg, _) = registry();
    let bin = mock("bin");
    let claim = reg.claim_server("srv", bin.clone()).unwrap();
    let phone = mock("client-1");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    check(&reg);
    assert_eq!(ticket.server_id(), "srv");
    assert!(Arc::ptr_eq(ticket.conn(), &phone));
    assert!(ticket.is_registered());
    assert!(Arc::ptr_eq(&ticket.binary().unwrap(), &bin));
    assert!(Arc::ptr_eq(
        &reg.phone_for("srv", "client-1").unwrap(),
        &phone
    ));
    assert!(Arc::ptr_eq(&claim.phone("client-1").unwrap(), &phone));
    assert!(reg.phone_for("srv", "client-2").is_none());
    assert!(reg.phone_for("other", "client-1").is_none());
    assert_eq!(ids(&claim.phones()), ["client-1"]);
}

#[test]
fn conn_id_is_read_at_registration_and_once_per_lookup_that_finds_the_phone() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let phone = mock("p");
    let sibling = mock("q");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    let _sibling = reg.register_phone("srv", sibling.clone()).unwrap();
    assert_eq!(phone.conn_id_calls(), 1, "read at registration");
    for _ in 0..3 {
        assert!(reg.phone_for("srv", "p").is_some());
        assert!(claim.phone("p").is_some());
    }
    assert_eq!(
        phone.conn_id_calls(),
        7,
        "once per lookup, to confirm its fingerprint"
    );
    assert!(reg.phone_for("srv", "r").is_none());
    assert!(claim.phone("r").is_none());
    let _ = reg.phones_for("srv");
    let _ = claim.phones();
    let _ = reg.snapshot();
    assert_eq!(phone.conn_id_calls(), 7, "nothing else reads it");
    assert_eq!(
        sibling.conn_id_calls(),
        1,
        "a phone whose fingerprint differs is not read"
    );
}

#[test]
fn unregister_removes_the_right_phone_and_leaves_siblings() {
    let (reg, _) = registry();
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    let phones: Vec<_> = (0..5).map(|i| mock(&format!("p{i}"))).collect();
    let mut tickets: Vec<_> = phones
        .iter()
        .map(|p| Some(reg.register_phone("srv", p.clone()).unwrap()))
        .collect();
    assert!(tickets[1].take().unwrap().unregister());
    check(&reg);
    assert_eq!(ids(&reg.phones_for("srv")), ["p0", "p2", "p3", "p4"]);
    drop(tickets[4].take());
    check(&reg);
    drop(tickets[0].take());
    check(&reg);
    assert_eq!(ids(&reg.phones_for("srv")), ["p2", "p3"]);
    assert!(reg.phone_for("srv", "p1").is_none());
    assert!(reg.phone_for("srv", "p3").is_some());
    assert!(
        phones.iter().all(|p| !p.is_closed()),
        "unregistering never closes"
    );
    assert_eq!(reg.counts().phones, 2);
    assert!(tickets[2].as_ref().unwrap().is_registered());
}

#[test]
fn unregistering_the_last_phone_leaves_no_empty_entry() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let ticket = reg.register_phone("srv", mock("p")).unwrap();
    drop(ticket);
    check(&reg);
    assert!(reg.phones_for("srv").is_empty());
    assert_eq!(reg.snapshot().len(), 1);
    assert!(claim.release());
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
    assert!(reg.snapshot().is_empty());
}

#[test]
fn two_phones_with_the_same_conn_id_are_both_accepted_and_told_apart() {
    let (reg, _) = registry();
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    let first = mock("dup");
    let second = mock("dup");
    let t1 = reg.register_phone("srv", first.clone()).unwrap();
    let t2 = reg.register_phone("srv", second.clone()).unwrap();
    check(&reg);
    assert_eq!(reg.counts().phones, 2);
    assert!(t1.unregister());
    check(&reg);
    let left = reg.phones_for("srv");
    assert_eq!(left.len(), 1);
    assert!(Arc::ptr_eq(&left[0], &second));
    assert!(Arc::ptr_eq(&reg.phone_for("srv", "dup").unwrap(), &second));
    assert!(t2.is_registered());
}

#[test]
fn phones_for_is_a_snapshot() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let t1 = reg.register_phone("srv", mock("p1")).unwrap();
    let snap = reg.phones_for("srv");
    let t2 = reg.register_phone("srv", mock("p2")).unwrap();
    drop(t1);
    assert_eq!(
        ids(&snap),
        ["p1"],
        "later changes do not reach an earlier snapshot"
    );
    let mut owned: Vec<_> = snap.to_vec();
    owned.clear();
    assert_eq!(
        ids(&reg.phones_for("srv")),
        ["p2"],
        "changing a copy changes nothing"
    );
    let again = claim.phones();
    assert_eq!(ids(&again), ["p2"]);
    drop(t2);
    assert_eq!(ids(&again), ["p2"]);
    assert!(claim.phones().is_empty());
    check(&reg);
}

#[test]
fn snapshot_lists_every_binary_and_phone() {
    let (reg, _) = registry();
    let _a = reg.claim_server("a", mock("ba")).unwrap();
    let b = reg.claim_server("b", mock("bb")).unwrap();
    let _pa = reg.register_phone("a", mock("pa")).unwrap();
    let _pb = reg.register_phone("b", mock("pb")).unwrap();
    b.release_after(std::time::Duration::from_secs(5));
    check(&reg);
    let mut all = reg.snapshot();
    assert_eq!(
        ids(&all),
        ["ba", "bb", "pa", "pb"],
        "gracing binaries are included"
    );
    all.clear();
    assert_eq!(reg.snapshot().len(), 4);
}

#[test]
fn counts_follow_a_full_lifecycle() {
    let (reg, clock) = registry();
    assert_eq!(reg.counts(), Counts::default());
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    assert_eq!(reg.counts(), tally(1, 0, 0));
    let t1 = reg.register_phone("srv", mock("p1")).unwrap();
    let _t2 = reg.register_phone("srv", mock("p2")).unwrap();
    assert_eq!(reg.counts(), tally(1, 0, 2));
    drop(t1);
    assert_eq!(reg.counts(), tally(1, 0, 1));
    claim.release_after(std::time::Duration::from_secs(30));
    assert_eq!(reg.counts(), tally(0, 1, 1));
    let _t3 = reg.register_phone("srv", mock("p3")).unwrap();
    assert_eq!(reg.counts(), tally(0, 1, 2));
    clock.advance(std::time::Duration::from_secs(30));
    assert_eq!(reg.expire_due().len(), 1);
    assert_eq!(reg.counts(), Counts::default());
    check(&reg);
}

#[test]
fn cap_boundary_admits_exactly_the_cap() {
    let (reg, _) = registry_with_cap(3);
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    let tickets: Vec<_> = (0..3)
        .map(|i| reg.register_phone("srv", mock(&format!("p{i}"))).unwrap())
        .collect();
    let refused = mock("p3");
    let err = reg.register_phone("srv", refused.clone()).unwrap_err();
    check(&reg);
    assert_eq!(err, RegistryError::PhonesAtCap);
    assert_eq!(err.code(), Some(4429));
    assert!(!refused.is_closed());
    assert_eq!(reg.counts().phones, 3);
    drop(tickets);
}

#[test]
fn cap_recovers_after_unregister() {
    let (reg, _) = registry_with_cap(2);
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    let t0 = reg.register_phone("srv", mock("p0")).unwrap();
    let _t1 = reg.register_phone("srv", mock("p1")).unwrap();
    assert_eq!(
        reg.register_phone("srv", mock("p2")).unwrap_err(),
        RegistryError::PhonesAtCap
    );
    drop(t0);
    let _t2 = reg.register_phone("srv", mock("p2")).unwrap();
    check(&reg);
    assert_eq!(ids(&reg.phones_for("srv")), ["p1", "p2"]);
}

#[test]
fn cap_is_per_server_id() {
    let (reg, _) = registry_with_cap(1);
    let _a = reg.claim_server("a", mock("ba")).unwrap();
    let _b = reg.claim_server("b", mock("bb")).unwrap();
    let _pa = reg.register_phone("a", mock("pa")).unwrap();
    let _pb = reg.register_phone("b", mock("pb")).unwrap();
    assert_eq!(
        reg.register_phone("a", mock("pa2")).unwrap_err(),
        RegistryError::PhonesAtCap
    );
    check(&reg);
    assert_eq!(reg.counts().phones, 2);
}

#[test]
fn zero_cap_means_unlimited() {
    let (reg, _) = registry_with_cap(0);
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    let tickets: Vec<_> = (0..1000)
        .map(|i| reg.register_phone("srv", mock(&format!("p{i}"))).unwrap())
        .collect();
    check(&reg);
    assert_eq!(reg.counts().phones, 1000);
    drop(tickets);
    assert_eq!(reg.counts().phones, 0);
    check(&reg);
}

#[test]
fn phones_are_listed_by_position_and_a_new_phone_takes_the_most_recently_vacated_one() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let in_order = |phones: &[Arc<common::Mock>]| -> Vec<String> {
        phones.iter().map(|p| p.conn_id().to_owned()).collect()
    };
    let mut tickets: std::collections::HashMap<&str, _> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|id| (id, reg.register_phone("srv", mock(id)).unwrap()))
        .collect();
    assert_eq!(in_order(&reg.phones_for("srv")), ["a", "b", "c", "d"]);
    drop(tickets.remove("b"));
    tickets.insert("e", reg.register_phone("srv", mock("e")).unwrap());
    assert_eq!(in_order(&reg.phones_for("srv")), ["a", "e", "c", "d"]);
    // Two leave: the next phone takes the place of the one that left last, the one after it
    // the other place.
    drop(tickets.remove("a"));
    drop(tickets.remove("c"));
    tickets.insert("f", reg.register_phone("srv", mock("f")).unwrap());
    assert_eq!(in_order(&reg.phones_for("srv")), ["e", "f", "d"]);
    tickets.insert("g", reg.register_phone("srv", mock("g")).unwrap());
    assert_eq!(in_order(&reg.phones_for("srv")), ["g", "e", "f", "d"]);
    assert_eq!(in_order(&claim.phones()), ["g", "e", "f", "d"]);
    // Once the id has no phones, the order starts afresh.
    for id in ["e", "g", "f", "d"] {
        drop(tickets.remove(id));
    }
    let _h = reg.register_phone("srv", mock("h")).unwrap();
    let _i = reg.register_phone("srv", mock("i")).unwrap();
    assert_eq!(in_order(&reg.phones_for("srv")), ["h", "i"]);
    check(&reg);
}

#[test]
fn phone_for_finds_the_first_by_position_of_two_phones_with_one_conn_id() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let spacer = reg.register_phone("srv", mock("spacer")).unwrap();
    let (first, second) = (mock("dup"), mock("dup"));
    let _t1 = reg.register_phone("srv", first.clone()).unwrap();
    drop(spacer);
    // The second "dup" takes the spacer's position, before the first one.
    let _t2 = reg.register_phone("srv", second.clone()).unwrap();
    assert!(Arc::ptr_eq(&reg.phone_for("srv", "dup").unwrap(), &second));
    assert!(Arc::ptr_eq(&claim.phone("dup").unwrap(), &second));
    check(&reg);
}

#[test]
fn a_phones_snapshot_clones_cheaply_and_iterates_by_reference() {
    let (reg, _) = registry();
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    let _a = reg.register_phone("srv", mock("a")).unwrap();
    let _b = reg.register_phone("srv", mock("b")).unwrap();
    let snapshot = reg.phones_for("srv");
    let copy = snapshot.clone();
    assert_eq!(copy.len(), 2);
    assert!(
        copy.iter()
            .zip(snapshot.iter())
            .all(|(x, y)| Arc::ptr_eq(x, y))
    );
    let mut seen = Vec::new();
    for phone in &copy {
        seen.push(phone.conn_id().to_owned());
    }
    assert_eq!(seen, ["a", "b"]);
    let none = relay_registry::Phones::<common::Mock>::default();
    assert!(none.is_empty() && (&none).into_iter().next().is_none());
}
