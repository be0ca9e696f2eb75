//! Random operation sequences on a real `Registry` (with a `ManualClock`) against the reference
//! model in `tests/model`, compared after every operation. See `tests/model/driver.rs`.
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::driver::run(data));
