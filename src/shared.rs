//! `Shared`: what a registry handle, its guards and its reapers point at. The only place that
//! takes the registry's lock.

use crate::aftermath::{Aftermath, Caught};
use crate::config::Config;
use crate::conn::Conn;
use crate::expiry::Expiries;
use crate::signal::Signal;
use crate::state::State;
use crate::sync::{AtomicUsize, Lock, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The registry's shared state: the locked [`State`], the configuration, and the signal that wakes
/// whoever drives expiry. Registry handles and guards own an `Arc` of it; reapers hold a `Weak`.
pub(crate) struct Shared<C: Conn> {
    state: Lock<State<C>>,
    pub(crate) config: Config,
    pub(crate) signal: Arc<Signal>,
    /// How many phones left through their tickets: a ticket unregisters under its tenure's lock
    /// alone (it holds no handle of the registry), and counts itself here; every tenure holds a
    /// clone. [`State::counts`] subtracts it, read under the registry's lock.
    pub(crate) left: Arc<AtomicUsize>,
}

impl<C: Conn> Shared<C> {
    pub(crate) fn new(config: Config) -> Self {
        Shared {
            state: Lock::new(State::new()),
            config,
            signal: Arc::new(Signal::default()),
            left: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// [`Shared::left`], to be read under the registry's lock (see [`State::counts`]).
    pub(crate) fn left(&self) -> usize {
        self.left.load(Ordering::Acquire)
    }

    /// Runs a read or a bookkeeping-only change under the lock.
    ///
    /// `f` must not run user code; it cannot drop an `Arc<C>` it removes (it has no aftermath).
    pub(crate) fn locked<R>(&self, f: impl FnOnce(&mut State<C>) -> R) -> R {
        f(&mut self.state.lock())
    }

    /// Runs a change under the lock, then — with the lock released, before returning — the closes
    /// and drops it scheduled, every one of them even if some panic. The caught panics come back
    /// with the result: the caller resumes them once its guard exists (so that unwinding drops the
    /// guard and nothing is left held by no one), or reports them.
    pub(crate) fn mutate<R>(
        &self,
        f: impl FnOnce(&mut State<C>, &mut Aftermath<C>) -> R,
    ) -> (R, Caught) {
        let mut after = Aftermath::new();
        let result = {
            let mut state = self.state.lock();
            f(&mut state, &mut after)
        };
        (result, after.run())
    }

    /// Expires every window due at the clock's `now`; returns the report and the `now` it used
    /// (`None` if the clock panicked: then nothing expired and the panic is in the report).
    /// Never panics because of user code.
    pub(crate) fn expire_due(&self) -> (Expiries<C>, Option<Instant>) {
        let mut caught = Caught::default();
        let Some(now) = caught.catch(|| self.config.clock.now()) else {
            return (Expiries::new(Vec::new(), caught.into_messages()), None);
        };
        let (expired, closes) = self.mutate(|state, out| state.expire_due(now, out));
        (Expiries::new(expired, closes.into_messages()), Some(now))
    }

    /// The deadline of the earliest open window.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.locked(|state| state.next_deadline())
    }
}

impl<C: Conn> Drop for Shared<C> {
    fn drop(&mut self) {
        // Reapers sleeping on this registry's next deadline wake up, find it gone, and stop.
        self.signal.notify();
    }
}
