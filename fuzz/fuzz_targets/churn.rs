//! Long claim/register/release cycles on one or two ids, so server and phone slots are reused
//! many times while stale guards from early cycles stay alive and are dropped late; checked
//! against the reference model after every operation. See `model/src/op.rs` (`ChurnStep`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| relay_registry_model::driver::run_churn(data));
