//! Claiming a server-id: first claim wins, release frees it, the registry never closes a binary.

mod common;

use common::{check, mock, registry, tally};
use relay_registry::{CloseReason, Conn, Counts, RegistryError};
use std::sync::Arc;

#[test]
fn claim_succeeds_on_empty_slot() {
    let (reg, _) = registry();
    let bin = mock("bin");
    let claim = reg.claim_server("srv", bin.clone()).unwrap();
    check(&reg);
    assert_eq!(claim.server_id(), "srv");
    assert!(Arc::ptr_eq(claim.conn(), &bin));
    assert!(claim.is_current());
    assert!(!claim.replaced(), "a free id replaces no one");
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &bin));
    assert_eq!(reg.counts(), tally(1, 0, 0));
}

#[test]
fn second_claim_conflicts_and_leaves_both_conns_untouched() {
    let (reg, _) = registry();
    let first = mock("first");
    let second = mock("second");
    let _claim = reg.claim_server("srv", first.clone()).unwrap();
    let err = reg.claim_server("srv", second.clone()).unwrap_err();
    check(&reg);
    assert_eq!(err, RegistryError::ServerIdConflict);
    assert_eq!(err.code(), Some(4409));
    assert!(!first.is_closed() && !second.is_closed());
    assert_eq!(Arc::strong_count(&second), 1, "a refused conn is not kept");
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &first));
}

#[test]
fn release_then_reclaim_succeeds() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("a")).unwrap();
    assert!(claim.release());
    check(&reg);
    assert!(reg.binary_for("srv").is_none());
    assert_eq!(reg.counts(), Counts::default());
    let again = reg.claim_server("srv", mock("b")).unwrap();
    check(&reg);
    assert_eq!(reg.binary_for("srv").unwrap().conn_id(), "b");
    drop(again);
    check(&reg);
}

#[test]
fn dropping_the_claim_releases_the_id() {
    let (reg, _) = registry();
    drop(reg.claim_server("srv", mock("a")).unwrap());
    check(&reg);
    assert!(reg.binary_for("srv").is_none());
    assert!(reg.claim_server("srv", mock("b")).is_ok());
}

#[test]
fn ids_are_independent() {
    let (reg, _) = registry();
    let _a = reg.claim_server("a", mock("ba")).unwrap();
    let _b = reg.claim_server("b", mock("bb")).unwrap();
    check(&reg);
    assert_eq!(reg.binary_for("a").unwrap().conn_id(), "ba");
    assert_eq!(reg.binary_for("b").unwrap().conn_id(), "bb");
    assert_eq!(reg.counts().binaries, 2);
}

#[test]
fn the_registry_never_closes_a_binary() {
    let (reg, clock) = registry();
    let (bin, new_bin, taker) = (mock("bin"), mock("new"), mock("taker"));
    let binaries = [&bin, &new_bin, &taker];
    let phone = mock("p");
    let claim = reg.claim_server("srv", bin.clone()).unwrap();
    let _p = reg.register_phone("srv", phone.clone()).unwrap();
    // Released into grace, then reclaimed: the reclaim closes the phone, not the binary.
    claim.release_after(std::time::Duration::from_secs(1));
    let new_claim = reg.claim_server("srv", new_bin.clone()).unwrap();
    assert_eq!(phone.closes(), [CloseReason::Reclaimed]);
    // Taken over: the old claim goes stale and its drop is inert.
    let taker_claim = reg
        .takeover_server("srv", Some(&new_bin), taker.clone())
        .unwrap();
    drop(new_claim);
    // Released into grace by the taker, then expired.
    taker_claim.release_after(std::time::Duration::ZERO);
    clock.advance(std::time::Duration::from_secs(1));
    assert_eq!(reg.expire_due().len(), 1);
    // And a binary released at once.
    assert!(reg.claim_server("srv", bin.clone()).unwrap().release());
    check(&reg);
    for binary in binaries {
        assert!(!binary.is_closed(), "{} was closed", binary.conn_id());
    }
    assert_eq!(reg.counts(), Counts::default());
}

#[test]
fn server_ids_are_opaque_utf8() {
    let (reg, _) = registry();
    for id in ["ünïcødé-🦀", " spaced id ", "a/b?c=d", "\u{0}nul"] {
        let claim = reg.claim_server(id, mock(id)).unwrap();
        assert_eq!(reg.binary_for(id).unwrap().conn_id(), id);
        let _p = reg.register_phone(id, mock("p")).unwrap();
        assert!(claim.release());
        check(&reg);
    }
}

#[test]
fn release_closes_phones_with_released_on_the_calling_thread_before_returning() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let phones: Vec<_> = (0..3).map(|i| mock(&format!("p{i}"))).collect();
    let tickets: Vec<_> = phones
        .iter()
        .map(|p| reg.register_phone("srv", p.clone()).unwrap())
        .collect();
    assert!(claim.release());
    check(&reg);
    for phone in &phones {
        assert_eq!(phone.closes(), vec![CloseReason::Released]);
        assert_eq!(phone.close_threads(), vec![std::thread::current().id()]);
    }
    assert!(tickets.iter().all(|t| !t.is_registered()));
    assert_eq!(reg.counts(), Counts::default());
    assert_eq!(CloseReason::Released.code(), 4404);
    assert_eq!(CloseReason::Released.reason(), "binary released server-id");
}

#[test]
fn claim_dropped_during_a_panic_unwind_releases_and_evicts() {
    let (reg, _) = registry();
    let phone = mock("p");
    let (reg2, phone2) = (reg.clone(), phone.clone());
    let result = std::thread::spawn(move || {
        let claim = reg2.claim_server("srv", mock("bin")).unwrap();
        let ticket = reg2.register_phone("srv", phone2).unwrap();
        // A tuple drops its fields in order: the claim first, then the (now stale) ticket.
        let _guards = (claim, ticket);
        panic!("connection task crashed");
    })
    .join();
    assert!(result.is_err());
    check(&reg);
    assert_eq!(reg.counts(), Counts::default());
    assert_eq!(phone.closes(), vec![CloseReason::Released]);
    assert!(reg.claim_server("srv", mock("next")).is_ok());
}
