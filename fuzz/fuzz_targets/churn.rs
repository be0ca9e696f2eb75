//! Long claim/register/release cycles on one or two ids, so server and phone slots are reused
//! many times while stale guards from early cycles stay alive and are dropped late; checked
//! against the reference model after every operation. See `model/src/op.rs` (`ChurnStep`).
#![no_main]

use std::sync::Once;

/// Installed once, after libFuzzer's own hook: the mock conns' deliberate panics are expected.
static SPARE_TRAPS: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    SPARE_TRAPS.call_once(relay_registry_model::conn::spare_traps_from_the_panic_hook);
    relay_registry_model::driver::run_churn(data)
});
