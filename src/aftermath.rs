//! What an operation must do after the lock is released: close evicted phones, drop removed conns.

use crate::binding::Binding;
use crate::conn::{CloseReason, Conn};
use smallvec::SmallVec;
use std::any::Any;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::sync::Arc;

/// Values removed from the registry under its lock whose last use runs user code: a `Conn::close`,
/// or the `Drop` of an `Arc<C>` that may be the last one. The critical section moves them in here;
/// [`run`](Aftermath::run) executes them once the lock is released.
pub(crate) struct Aftermath<C: Conn> {
    closes: SmallVec<[(Arc<C>, CloseReason); 4]>,
    drops: SmallVec<[Garbage<C>; 2]>,
}

/// Something removed from the registry whose drop may run user code. Its fields are never read:
/// holding them until [`Aftermath::run`] is the point.
#[allow(dead_code)]
pub(crate) enum Garbage<C> {
    /// A conn the registry held or was offered.
    Conn(Arc<C>),
    /// A binding that ended (it owns the binary's conn).
    Binding(Arc<Binding<C>>),
    /// An outdated phone snapshot (it owns phone conns).
    Snapshot(Arc<[Arc<C>]>),
}

impl<C: Conn> Aftermath<C> {
    pub(crate) fn new() -> Self {
        Aftermath {
            closes: SmallVec::new(),
            drops: SmallVec::new(),
        }
    }

    /// Schedules `conn.close(reason)`; the conn is dropped right after its close.
    pub(crate) fn close(&mut self, conn: Arc<C>, reason: CloseReason) {
        self.closes.push((conn, reason));
    }

    /// Schedules a drop for after the lock.
    pub(crate) fn drop_later(&mut self, garbage: Garbage<C>) {
        self.drops.push(garbage);
    }

    /// Runs every close, then every drop. Call only with the lock released.
    ///
    /// A panicking close or drop does not stop the others; the first panic is resumed at the end,
    /// unless this thread is already unwinding (a guard dropped during a panic), where it is
    /// swallowed so that the process does not abort.
    ///
    /// Takes `&mut self` and drains, so the caller's aftermath is not moved (it is large).
    #[inline]
    pub(crate) fn run(&mut self) {
        if self.closes.is_empty() && self.drops.is_empty() {
            return;
        }
        self.run_all();
    }

    fn run_all(&mut self) {
        let mut first_panic: Option<Box<dyn Any + Send>> = None;
        for (conn, reason) in self.closes.drain(..) {
            let result = catch_unwind(AssertUnwindSafe(move || {
                conn.close(reason);
                drop(conn);
            }));
            if let Err(payload) = result {
                first_panic.get_or_insert(payload);
            }
        }
        for garbage in self.drops.drain(..) {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(move || drop(garbage))) {
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            if !std::thread::panicking() {
                resume_unwind(payload);
            }
        }
    }
}
