//! Long claim/register/release cycles on one or two ids, so server and phone slots are reused
//! many times while stale guards from early cycles stay alive and are dropped late; checked
//! against the reference model after every operation. See `tests/model/op.rs` (`ChurnStep`).
#![no_main]

#[path = "../../tests/model/mod.rs"]
mod model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| model::driver::run_churn(data));
