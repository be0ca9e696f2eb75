//! The only module that names synchronisation primitives.
//!
//! Everything else in the crate takes its locks and atomics from here, so a model checker can swap
//! them in one place: under `RUSTFLAGS="--cfg loom"` (tests/loom.rs) the registry's lock
//! ([`Lock`]), each tenure's phone table lock ([`InnerLock`]) and the tenures' phase
//! and epoch (one [`AtomicU64`]) and the tally of phones that left through their tickets ([`AtomicUsize`]) are loom's, so loom explores every interleaving of them. The rest — the expiry signal ([`PlainMutex`], [`Condvar`]), a reaper's
//! stop flag ([`PlainAtomicBool`]) and `ManualClock`'s time — is not part of the loom models and
//! always uses parking_lot and std.
//!
//! In debug builds (outside loom) the registry's lock also keeps a per-thread "lock held" flag:
//! taking a registry lock on a thread that already holds one panics at once. Nothing the registry
//! runs under its lock calls back into a registry, so that can only happen if user code (a
//! `Conn` method, a `Clock`, a conn's `Drop`) ran under the lock — a bug that would otherwise
//! deadlock, or silently pass a test.

pub(crate) use parking_lot::{Condvar, Mutex as PlainMutex};
pub(crate) use std::sync::atomic::AtomicBool as PlainAtomicBool;
pub(crate) use std::sync::atomic::Ordering;

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{AtomicU64, AtomicUsize};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU64, AtomicUsize};

#[cfg(not(loom))]
use parking_lot::{Mutex as RawMutex, MutexGuard as RawGuard};

#[cfg(loom)]
use loom_shim::{Mutex as RawMutex, MutexGuard as RawGuard};

/// A lock below the registry's: a tenure's phone table. Taken either under the registry's lock (by
/// registrations and evictions) or alone (by a ticket's unregistration and by the binary→phone
/// route, which never take the registry's lock), never the other way round. Several are held at
/// once only under the registry's lock (`snapshot`, `check_invariants`), and whoever holds one
/// without it waits for no other lock, so no cycle can form. Nothing runs under it but reads and
/// relinks of the table. So it has no "lock held" flag: taking it under the registry's lock is the point.
pub(crate) type InnerLock<T> = RawMutex<T>;

/// The registry's lock: a mutex (parking_lot's, or loom's under `--cfg loom`) that, in debug
/// builds, panics on a re-entrant acquisition by the same thread instead of deadlocking.
pub(crate) struct Lock<T> {
    raw: RawMutex<T>,
}

/// Exclusive access to a [`Lock`]'s value; releases the lock (and clears the thread's "lock
/// held" flag) when dropped, also during unwinding.
pub(crate) struct LockGuard<'a, T> {
    raw: RawGuard<'a, T>,
    _held: held::Token,
}

impl<T> Lock<T> {
    pub(crate) fn new(value: T) -> Self {
        Lock {
            raw: RawMutex::new(value),
        }
    }

    /// Takes the lock.
    ///
    /// # Panics
    ///
    /// In debug builds, if this thread already holds a registry lock.
    pub(crate) fn lock(&self) -> LockGuard<'_, T> {
        // The flag first: a re-entrant call must panic, not block on the lock it holds.
        let held = held::Token::acquire();
        LockGuard {
            raw: self.raw.lock(),
            _held: held,
        }
    }
}

/// loom's mutex with parking_lot's shape: `lock()` returns the guard.
#[cfg(loom)]
mod loom_shim {
    pub(crate) use loom::sync::MutexGuard;

    pub(crate) struct Mutex<T>(loom::sync::Mutex<T>);

    impl<T> Mutex<T> {
        pub(crate) fn new(value: T) -> Self {
            Mutex(loom::sync::Mutex::new(value))
        }

        pub(crate) fn lock(&self) -> MutexGuard<'_, T> {
            // No user code runs under the lock, so it is never poisoned by a panic there.
            self.0
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
        }
    }
}

impl<T> std::ops::Deref for LockGuard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.raw
    }
}

impl<T> std::ops::DerefMut for LockGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.raw
    }
}

/// The per-thread "lock held" flag of debug builds. (loom runs its threads on one OS thread, so
/// a thread-local cannot tell them apart: no flag under loom.)
#[cfg(all(debug_assertions, not(loom)))]
mod held {
    use std::cell::Cell;

    thread_local! {
        static HELD: Cell<bool> = const { Cell::new(false) };
    }

    /// Proof that this thread set the flag; clears it when dropped.
    pub(super) struct Token(());

    impl Token {
        pub(super) fn acquire() -> Token {
            if HELD.replace(true) {
                panic!(
                    "relay-registry: a registry was called while this thread holds a registry's \
                     lock — user code (a Conn method, a Clock, or a conn's Drop) ran under the lock"
                );
            }
            Token(())
        }
    }

    impl Drop for Token {
        fn drop(&mut self) {
            HELD.set(false);
        }
    }
}

/// Release builds (and loom) keep no flag.
#[cfg(not(all(debug_assertions, not(loom))))]
mod no_flag {
    pub(super) struct Token;

    impl Token {
        pub(super) fn acquire() -> Token {
            Token
        }
    }
}

#[cfg(not(all(debug_assertions, not(loom))))]
use no_flag as held;

#[cfg(all(test, debug_assertions))]
mod tests {
    use super::Lock;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    #[test]
    fn a_reentrant_lock_on_the_same_thread_panics_instead_of_deadlocking() {
        let (a, b) = (Lock::new(1), Lock::new(2));
        let outer = a.lock();
        let inner = catch_unwind(AssertUnwindSafe(|| *b.lock()));
        assert!(
            inner.is_err(),
            "taking a second registry lock under the first panics"
        );
        drop(outer);
        // The flag was cleared by the unwinding and by the release: both locks work again.
        assert_eq!(*a.lock(), 1);
        assert_eq!(*b.lock(), 2);
    }

    #[test]
    fn the_flag_is_per_thread() {
        let lock = std::sync::Arc::new(Lock::new(0));
        let held = lock.lock();
        let other = std::sync::Arc::new(Lock::new(7));
        let seen = std::thread::spawn(move || *other.lock()).join().unwrap();
        assert_eq!(
            seen, 7,
            "another thread may lock while this one holds a lock"
        );
        drop(held);
    }
}
