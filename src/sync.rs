//! The only module that knows which synchronisation primitives are in use.
//!
//! Everything else in the crate takes its lock and atomics from here, so a model checker can swap
//! them in one place: under `RUSTFLAGS="--cfg loom"` (tests/loom.rs) the registry's lock and the
//! bindings' `live` flag are loom's, so loom explores every interleaving of them. The expiry
//! signal and `ManualClock` always use parking_lot's [`PlainMutex`] and [`Condvar`]: they are
//! not part of the loom models.

pub(crate) use parking_lot::{Condvar, Mutex as PlainMutex};

#[cfg(not(loom))]
pub(crate) use parking_lot::Mutex;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicBool, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, Ordering};

/// loom's mutex with parking_lot's shape: `lock()` returns the guard (no poisoning).
#[cfg(loom)]
pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

#[cfg(loom)]
impl<T> Mutex<T> {
    pub(crate) fn new(value: T) -> Self {
        Mutex(loom::sync::Mutex::new(value))
    }

    pub(crate) fn lock(&self) -> loom::sync::MutexGuard<'_, T> {
        // A panic under the lock never happens (no user code runs there), so no poisoning.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
