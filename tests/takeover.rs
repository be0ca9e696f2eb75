//! Takeover is identity-scoped: it replaces exactly the incumbent it names, or nothing.

mod common;

use common::{check, mock, registry, tally};
use relay_registry::{CloseReason, RegistryError};
use std::sync::Arc;
use std::time::Duration;

#[test]
fn takeover_of_an_empty_id_without_incumbent_claims_it() {
    let (reg, _) = registry();
    let bin = mock("bin");
    let claim = reg.takeover_server("srv", None, bin.clone()).unwrap();
    check(&reg);
    assert!(claim.is_current());
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &bin));
}

#[test]
fn takeover_of_the_current_incumbent_replaces_it_and_evicts_phones() {
    let (reg, _) = registry();
    let old_bin = mock("old");
    let old = reg.claim_server("srv", old_bin.clone()).unwrap();
    let phone = mock("p");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    let incumbent = reg.binary_for("srv").unwrap();
    let new_bin = mock("new");
    let new = reg
        .takeover_server("srv", Some(&incumbent), new_bin.clone())
        .unwrap();
    check(&reg);
    assert!(!old.is_current());
    assert!(new.is_current());
    assert!(new.replaced() && !old.replaced());
    assert_eq!(phone.closes(), vec![CloseReason::Reclaimed]);
    assert!(!ticket.is_registered());
    assert!(
        !old_bin.is_closed(),
        "the registry does not close the incumbent"
    );
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &new_bin));
    assert_eq!(reg.counts(), tally(1, 0, 0));
}

#[test]
fn takeover_of_a_gracing_incumbent_cancels_its_window() {
    let (reg, clock) = registry();
    let old_bin = mock("old");
    reg.claim_server("srv", old_bin.clone())
        .unwrap()
        .release_after(Duration::from_secs(30));
    let phone = mock("p");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    let new = reg
        .takeover_server("srv", Some(&old_bin), mock("new"))
        .unwrap();
    check(&reg);
    assert_eq!(phone.closes(), vec![CloseReason::Reclaimed]);
    assert_eq!(reg.counts(), tally(1, 0, 0));
    clock.advance(Duration::from_secs(60));
    assert_eq!(
        reg.expire_due().len(),
        0,
        "the old window cannot tear down the new claimant"
    );
    assert!(new.is_current());
    check(&reg);
}

#[test]
fn takeover_conflicts_with_a_stale_incumbent() {
    let (reg, _) = registry();
    let first = mock("first");
    let claim = reg.claim_server("srv", first.clone()).unwrap();
    let second = mock("second");
    let _second_claim = reg
        .takeover_server("srv", Some(&first), second.clone())
        .unwrap();
    drop(claim);
    let phone = mock("p");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    // A third binary still names `first`, which no longer holds the id.
    let third = mock("third");
    let err = reg
        .takeover_server("srv", Some(&first), third.clone())
        .unwrap_err();
    check(&reg);
    assert_eq!(err, RegistryError::ServerIdConflict);
    assert!(Arc::ptr_eq(&reg.binary_for("srv").unwrap(), &second));
    assert!(!phone.is_closed(), "nothing changed");
    assert_eq!(Arc::strong_count(&third), 1);
}

#[test]
fn takeover_of_a_released_id_naming_an_incumbent_conflicts() {
    let (reg, _) = registry();
    let first = mock("first");
    assert!(reg.claim_server("srv", first.clone()).unwrap().release());
    let err = reg
        .takeover_server("srv", Some(&first), mock("new"))
        .unwrap_err();
    assert_eq!(err, RegistryError::ServerIdConflict);
    assert!(reg.binary_for("srv").is_none());
    check(&reg);
}

#[test]
fn takeover_without_incumbent_of_a_held_id_conflicts() {
    let (reg, _) = registry();
    let _claim = reg.claim_server("srv", mock("bin")).unwrap();
    assert_eq!(
        reg.takeover_server("srv", None, mock("new")).unwrap_err(),
        RegistryError::ServerIdConflict
    );
    check(&reg);
}

#[test]
fn takeover_compares_identity_not_conn_id() {
    let (reg, _) = registry();
    let _claim = reg.claim_server("srv", mock("same-id")).unwrap();
    let lookalike = mock("same-id");
    assert_eq!(
        reg.takeover_server("srv", Some(&lookalike), mock("new"))
            .unwrap_err(),
        RegistryError::ServerIdConflict
    );
    check(&reg);
}

// ---- end_tenure: a named holder's tenure ends with no successor ---------------------------------

#[test]
fn end_tenure_of_the_holder_evicts_its_phones_and_frees_the_id() {
    let (reg, _) = registry();
    let bin = mock("bin");
    let claim = reg.claim_server("srv", bin.clone()).unwrap();
    let phone = mock("p");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    let _other = reg.claim_server("other", mock("other")).unwrap();
    assert!(reg.end_tenure("srv", &bin));
    check(&reg);
    assert_eq!(
        phone.closes(),
        vec![CloseReason::Reclaimed],
        "as on a takeover"
    );
    assert!(!ticket.is_registered());
    assert!(!claim.is_current());
    assert!(!bin.is_closed(), "the registry does not close the holder");
    assert!(reg.binary_for("srv").is_none());
    assert_eq!(reg.counts(), tally(1, 0, 0));
    // The stale claim's drop does not touch whoever claims the id next.
    let next = reg.claim_server("srv", mock("next")).unwrap();
    drop(claim);
    assert!(next.is_current());
    assert!(!reg.end_tenure("srv", &bin), "no longer the holder");
    check(&reg);
}

#[test]
fn end_tenure_compares_identity_and_changes_nothing_for_anyone_else() {
    let (reg, _) = registry();
    let bin = mock("bin");
    let claim = reg.claim_server("srv", bin.clone()).unwrap();
    let phone = mock("p");
    let ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(
        !reg.end_tenure("srv", &mock("bin")),
        "same conn-id, another conn"
    );
    assert!(!reg.end_tenure("free", &bin));
    assert!(!reg.end_tenure("", &bin), "an invalid id");
    check(&reg);
    assert!(claim.is_current() && ticket.is_registered());
    assert!(phone.closes().is_empty());
    assert_eq!(reg.counts(), tally(1, 0, 1));
}

#[test]
fn end_tenure_of_a_gracing_holder_cancels_its_window() {
    let (reg, clock) = registry();
    let bin = mock("bin");
    reg.claim_server("srv", bin.clone())
        .unwrap()
        .release_after(Duration::from_secs(30));
    let phone = mock("p");
    let _ticket = reg.register_phone("srv", phone.clone()).unwrap();
    assert!(reg.end_tenure("srv", &bin));
    check(&reg);
    assert_eq!(phone.closes(), vec![CloseReason::Reclaimed]);
    assert_eq!(reg.counts(), tally(0, 0, 0));
    assert_eq!(reg.next_deadline(), None);
    let next = reg.claim_server("srv", mock("next")).unwrap();
    clock.advance(Duration::from_secs(60));
    assert_eq!(reg.expire_due().len(), 0, "the old window is gone");
    assert!(next.is_current());
}
