//! Server-ids: empty or too long is `InvalidServerId` for every method that takes one; lookups
//! just return nothing.

mod common;

use common::{check, mock, registry};
use relay_registry::{Config, Counts, Registry, RegistryError};
use std::sync::Arc;

#[test]
fn empty_server_id_is_invalid_everywhere() {
    let (reg, _) = registry();
    assert_eq!(
        reg.claim_server("", mock("b")).unwrap_err(),
        RegistryError::InvalidServerId
    );
    assert_eq!(
        reg.takeover_server("", None, mock("b")).unwrap_err(),
        RegistryError::InvalidServerId
    );
    assert_eq!(
        reg.register_phone("", mock("p")).unwrap_err(),
        RegistryError::InvalidServerId
    );
    assert!(reg.binary_for("").is_none());
    assert!(reg.phone_for("", "p").is_none());
    assert!(reg.phones_for("").is_empty());
    assert_eq!(RegistryError::InvalidServerId.code(), None);
    assert_eq!(reg.counts(), Counts::default());
    check(&reg);
}

#[test]
fn default_limit_is_256_bytes() {
    let (reg, _) = registry();
    let longest = "x".repeat(256);
    let too_long = "x".repeat(257);
    let _claim = reg.claim_server(&longest, mock("b")).unwrap();
    let _ticket = reg.register_phone(&longest, mock("p")).unwrap();
    assert_eq!(
        reg.claim_server(&too_long, mock("b")).unwrap_err(),
        RegistryError::InvalidServerId
    );
    assert_eq!(
        reg.register_phone(&too_long, mock("p")).unwrap_err(),
        RegistryError::InvalidServerId
    );
    assert!(reg.binary_for(&too_long).is_none());
    check(&reg);
}

#[test]
fn limit_counts_bytes_not_chars() {
    let reg: Registry<common::Mock> =
        Registry::with_config(Config::default().with_max_server_id_len(4));
    assert!(reg.claim_server("ab🦀", mock("b")).is_err(), "6 bytes");
    assert!(reg.claim_server("abcd", mock("b")).is_ok());
    assert_eq!(
        reg.takeover_server("abcde", None, mock("b")).unwrap_err(),
        RegistryError::InvalidServerId
    );
    check(&reg);
}

#[test]
fn zero_limit_is_raised_to_one() {
    let config = Config::default().with_max_server_id_len(0);
    assert_eq!(config.max_server_id_len(), 1);
    let reg = Registry::with_config(config);
    assert!(reg.claim_server("a", mock("b")).is_ok());
    assert_eq!(
        reg.claim_server("ab", mock("b")).unwrap_err(),
        RegistryError::InvalidServerId
    );
}

#[test]
fn refused_invalid_conns_are_not_kept_or_closed() {
    let (reg, _) = registry();
    let conn = mock("b");
    let _ = reg.claim_server("", conn.clone());
    let _ = reg.register_phone(&"y".repeat(10_000), conn.clone());
    assert_eq!(Arc::strong_count(&conn), 1);
    assert!(!conn.is_closed());
}

#[test]
fn huge_hostile_ids_are_rejected_without_being_stored() {
    let (reg, _) = registry();
    let huge = "z".repeat(1 << 20);
    assert!(reg.claim_server(&huge, mock("b")).is_err());
    assert!(reg.phone_for(&huge, "p").is_none());
    assert!(reg.phones_for(&huge).is_empty());
    assert_eq!(reg.counts(), Counts::default());
    check(&reg);
}

#[test]
fn error_codes_and_reasons_match_the_protocol() {
    let table = [
        (
            RegistryError::ServerIdConflict,
            Some(4409),
            "server-id already claimed",
        ),
        (
            RegistryError::NoServer,
            Some(4404),
            "no server with that id",
        ),
        (
            RegistryError::PhonesAtCap,
            Some(4429),
            "too many phones for server-id",
        ),
        (RegistryError::InvalidServerId, None, "invalid server-id"),
    ];
    for (err, code, reason) in table {
        assert_eq!(err.code(), code);
        assert_eq!(err.reason(), reason);
        assert_eq!(err.to_string(), reason);
    }
}
