//! Random operation sequences on a real `Registry` (with a `ManualClock`) against the reference
//! model in the `relay-registry-model` crate, compared after every operation. See `model/src/driver.rs`.
#![no_main]

use std::sync::Once;

/// Installed once, after libFuzzer's own hook: the mock conns' deliberate panics are expected.
static SPARE_TRAPS: Once = Once::new();

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    SPARE_TRAPS.call_once(relay_registry_model::conn::spare_traps_from_the_panic_hook);
    relay_registry_model::driver::run(data)
});
