//! Random operation sequences on a real `Registry` (with a `ManualClock`) against the reference
//! model in the `relay-registry-model` crate, compared after every operation. See `model/src/driver.rs`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_registry_model::driver::run(data));
