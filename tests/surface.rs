//! The public vocabulary a relay builds on: server-id checks before the upgrade, the close codes and
//! texts of the protocol, refusals as closes, validated application closes, the configuration, and
//! what each public type shows when debug-printed.

mod common;

use common::{Mock, mock, registry};
use relay_registry::{
    CloseReason, Config, Counts, InvalidCloseReason, ManualClock, Reaper, Registry, RegistryError,
};
use std::sync::Arc;
use std::time::Duration;

// ---- check_server_id --------------------------------------------------------------------------

#[test]
fn check_server_id_accepts_exactly_the_ids_a_claim_accepts() {
    let reg: Registry<Mock> = Registry::with_config(Config::default().with_max_server_id_len(8));
    for len in 0..=10 {
        let id = "x".repeat(len);
        let checked = reg.check_server_id(&id);
        assert_eq!(checked.is_ok(), (1..=8).contains(&len), "{len} bytes");
        let claimed = reg.claim_server(&id, mock("b")).map(drop);
        assert_eq!(checked, claimed, "check and claim agree on {len} bytes");
        assert_eq!(checked, reg.config().check_server_id(&id));
    }
    // Bytes, not chars: "é" is two.
    assert_eq!(
        reg.check_server_id("ééééé"),
        Err(RegistryError::InvalidServerId)
    );
    assert_eq!(reg.check_server_id("éééé"), Ok(()));
}

#[test]
fn check_server_id_takes_no_lock_and_changes_nothing() {
    let (reg, _) = registry();
    let claim = reg.claim_server("srv", mock("b")).unwrap();
    assert_eq!(
        reg.check_server_id("srv"),
        Ok(()),
        "a held id is still a valid id"
    );
    assert_eq!(reg.check_server_id(""), Err(RegistryError::InvalidServerId));
    assert_eq!(
        reg.counts(),
        Counts {
            binaries: 1,
            gracing: 0,
            phones: 0
        }
    );
    drop(claim);
}

#[test]
fn default_id_limit_is_256_bytes() {
    let config = Config::default();
    assert_eq!(config.max_server_id_len(), 256);
    assert_eq!(config.check_server_id(&"x".repeat(256)), Ok(()));
    assert_eq!(
        config.check_server_id(&"x".repeat(257)),
        Err(RegistryError::InvalidServerId)
    );
}

// ---- RegistryError ----------------------------------------------------------------------------

#[test]
fn registry_errors_carry_the_protocols_codes_and_texts() {
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
    for (error, code, reason) in table {
        assert_eq!((error.code(), error.reason()), (code, reason), "{error:?}");
        assert_eq!(error.to_string(), reason, "Display is the reason");
        let _: &dyn std::error::Error = &error;
    }
}

#[test]
fn a_refusal_converts_into_the_close_that_carries_its_code() {
    for error in [
        RegistryError::ServerIdConflict,
        RegistryError::NoServer,
        RegistryError::PhonesAtCap,
    ] {
        let close = CloseReason::try_from(error).unwrap();
        let CloseReason::Refused(refusal) = close else {
            panic!("{close:?} is no refusal")
        };
        assert_eq!(refusal.error(), error);
        assert_eq!(
            (Some(close.code()), close.reason()),
            (error.code(), error.reason())
        );
        assert_eq!(
            close.to_string(),
            format!("{} {}", close.code(), error.reason())
        );
    }
    // An invalid server-id is a bad request (HTTP 400 before the upgrade), not a close.
    assert_eq!(
        CloseReason::try_from(RegistryError::InvalidServerId),
        Err(RegistryError::InvalidServerId)
    );
    // What a relay does with a refused claim, after the upgrade.
    let (reg, _) = registry();
    let _held = reg.claim_server("srv", mock("first")).unwrap();
    let refused = mock("second");
    let close =
        CloseReason::try_from(reg.claim_server("srv", refused.clone()).unwrap_err()).unwrap();
    assert_eq!(
        (close.code(), close.reason()),
        (4409, "server-id already claimed")
    );
}

// ---- CloseReason ------------------------------------------------------------------------------

#[test]
fn every_close_reason_has_the_protocols_code_and_text() {
    let table = [
        (CloseReason::Reclaimed, 4404, "binary reclaimed server-id"),
        (CloseReason::Released, 4404, "binary released server-id"),
        (CloseReason::GraceExpired, 1011, "binary did not reconnect"),
    ];
    for (close, code, reason) in table {
        assert_eq!((close.code(), close.reason()), (code, reason), "{close:?}");
        assert_eq!(close.to_string(), format!("{code} {reason}"));
    }
}

#[test]
fn custom_closes_accept_exactly_1000_and_3000_to_4999() {
    for code in [1000, 3000, 3999, 4000, 4404, 4999] {
        let close = CloseReason::custom(code, "bye").unwrap();
        assert_eq!((close.code(), close.reason()), (code, "bye"));
        assert_eq!(close.to_string(), format!("{code} bye"));
        let CloseReason::Custom(custom) = close else {
            panic!("{close:?} is not Custom");
        };
        assert_eq!((custom.code(), custom.reason()), (code, "bye"));
    }
    for code in [
        0,
        1,
        999,
        1001,
        1005,
        1006,
        1011,
        1015,
        2999,
        5000,
        u16::MAX,
    ] {
        assert_eq!(
            CloseReason::custom(code, "bye"),
            Err(InvalidCloseReason::Code(code)),
            "{code}"
        );
    }
    let longest: &'static str = "r".repeat(123).leak();
    let too_long: &'static str = "r".repeat(124).leak();
    assert!(CloseReason::custom(4000, longest).is_ok());
    assert_eq!(
        CloseReason::custom(4000, too_long),
        Err(InvalidCloseReason::ReasonTooLong(124))
    );
    // An invalid code is reported before a too-long text.
    assert_eq!(
        CloseReason::custom(5000, too_long),
        Err(InvalidCloseReason::Code(5000))
    );
    assert_eq!(
        InvalidCloseReason::Code(1006).to_string(),
        "close code 1006 is not 1000 or in 3000-4999"
    );
    assert_eq!(
        InvalidCloseReason::ReasonTooLong(124).to_string(),
        "close reason of 124 bytes is longer than 123 bytes"
    );
}

// ---- Config -----------------------------------------------------------------------------------

#[test]
fn config_setters_and_getters_agree() {
    let clock = ManualClock::new();
    let config = Config::default()
        .with_max_phones_per_server(16)
        .with_max_server_id_len(64)
        .with_clock(Arc::new(clock.clone()));
    assert_eq!(config.max_phones_per_server(), 16);
    assert_eq!(config.max_server_id_len(), 64);
    clock.advance(Duration::from_secs(5));
    assert_eq!(config.clock().now(), relay_registry::Clock::now(&clock));
    let reg: Registry<Mock> = Registry::with_config(config);
    assert_eq!(reg.config().max_phones_per_server(), 16);
    assert_eq!(reg.config().max_server_id_len(), 64);
    let defaults = Config::default();
    assert_eq!(
        (
            defaults.max_phones_per_server(),
            defaults.max_server_id_len()
        ),
        (0, 256)
    );
    assert_eq!(
        Config::default()
            .with_max_server_id_len(0)
            .max_server_id_len(),
        1
    );
}

// ---- Debug ------------------------------------------------------------------------------------

#[test]
fn public_types_debug_print_what_identifies_them() {
    let (reg, clock) = registry();
    let claim = reg.claim_server("srv", mock("bin")).unwrap();
    let ticket = reg.register_phone("srv", mock("p")).unwrap();
    let debug = |value: &dyn std::fmt::Debug| format!("{value:?}");
    assert!(
        debug(&reg).contains("binaries: 1, gracing: 0, phones: 1"),
        "{}",
        debug(&reg)
    );
    assert!(
        debug(&reg).contains("max_server_id_len: 256"),
        "{}",
        debug(&reg)
    );
    assert!(debug(&claim).contains("\"srv\"") && debug(&claim).contains("current: true"));
    assert!(debug(&ticket).contains("\"srv\"") && debug(&ticket).contains("registered: true"));
    assert_eq!(debug(&reg.phones_for("srv")), "Phones { len: 1 }");
    let mut changes = reg.deadline_changes();
    assert!(debug(&changes).contains("has_changed: false"));
    assert!(debug(&changes.changed()).starts_with("Changed"));
    claim.release_after(Duration::ZERO);
    assert!(debug(&changes).contains("has_changed: true"));
    clock.advance(Duration::ZERO);
    let expired = reg.expire_due();
    let shown = debug(&expired);
    assert!(
        shown.contains("server_id: \"srv\"") && shown.contains("phones: 1"),
        "{shown}"
    );
    assert!(shown.contains("panics: []"), "{shown}");
    assert!(debug(&ticket).contains("registered: false"));
    let reaper = Reaper::spawn(&reg);
    assert!(
        debug(&reaper).contains("Some(ThreadId("),
        "{}",
        debug(&reaper)
    );
}
