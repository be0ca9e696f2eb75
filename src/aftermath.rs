//! What an operation must do after the lock is released: close evicted phones, drop removed conns.

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
    /// A tenure that ended, or an index key of one (it owns the binary's conn). Type-erased:
    /// this module sits below the tenure, whose phone list schedules its drops through here.
    Tenure(Arc<dyn Send + Sync>),
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
    /// A panicking close or drop does not stop the others: every panic is caught and handed
    /// back, for the operation to resume (after its guard exists) or to report.
    ///
    /// Takes `&mut self` and drains, so the caller's aftermath is not moved (it is large).
    #[inline]
    pub(crate) fn run(&mut self) -> Caught {
        if self.closes.is_empty() && self.drops.is_empty() {
            return Caught::default();
        }
        self.run_all()
    }

    fn run_all(&mut self) -> Caught {
        let mut caught = Caught::default();
        for (conn, reason) in self.closes.drain(..) {
            caught.catch(move || {
                conn.close(reason);
                drop(conn);
            });
        }
        for garbage in self.drops.drain(..) {
            caught.catch(move || drop(garbage));
        }
        caught
    }
}

/// The panics of user code that an operation ran after its critical section (a `Conn::close`,
/// a conn's `Drop`, a `Clock::now`), caught so that the rest still ran.
#[must_use = "caught panics must be resumed or reported"]
#[derive(Default)]
pub(crate) struct Caught(Vec<Box<dyn Any + Send>>);

impl Caught {
    /// Runs `f`, keeping its panic if it panics; returns its value otherwise.
    pub(crate) fn catch<R>(&mut self, f: impl FnOnce() -> R) -> Option<R> {
        match catch_unwind(AssertUnwindSafe(f)) {
            Ok(value) => Some(value),
            Err(payload) => {
                self.0.push(payload);
                None
            }
        }
    }

    /// Resumes the first caught panic — unless this thread is already unwinding (a guard dropped
    /// during a panic), where a second panic would abort the process: then every caught panic is
    /// reported on stderr instead.
    pub(crate) fn resume(self) {
        if self.0.is_empty() {
            return;
        }
        if std::thread::panicking() {
            for message in self.into_messages() {
                eprintln!(
                    "relay-registry: user code (a Conn::close or a conn's Drop) panicked while \
                     this thread was already unwinding; the panic was dropped: {message}"
                );
            }
            return;
        }
        if let Some(first) = self.0.into_iter().next() {
            resume_unwind(first);
        }
    }

    /// The caught panics' messages (for a report instead of a resumed panic).
    pub(crate) fn into_messages(self) -> Vec<String> {
        self.0.into_iter().map(|p| panic_message(&*p)).collect()
    }
}

/// The message of a panic payload: its `&str` or `String`, or a placeholder.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_owned()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "a panic with a non-string payload".to_owned()
    }
}
