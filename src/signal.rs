//! `Signal`: how the registry tells whoever drives expiry that the earliest grace deadline moved
//! earlier — reaper threads (a condition variable) and async tasks (wakers) alike.

use crate::sync::{Condvar, PlainMutex};
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::task::Waker;
use std::time::Duration;

/// A generation counter, bumped when a window becomes the earliest, when a reaper is stopped,
/// and when the registry is dropped. Waiters remember the generation they saw and wait for it to
/// move, so a bump between their look at the registry and their wait is never missed.
#[derive(Default)]
pub(crate) struct Signal {
    state: PlainMutex<Waiting>,
    cond: Condvar,
}

#[derive(Default)]
struct Waiting {
    generation: u64,
    /// Async waiters: one waker per subscription id.
    wakers: Vec<(u64, Waker)>,
    next_id: u64,
}

impl Signal {
    /// Bumps the generation and wakes every waiter: threads first, then the wakers, each outside
    /// the signal's own lock (callers hold no registry lock).
    ///
    /// # Panics
    ///
    /// Only by resuming the first panic of a [`Waker::wake`] (runtime code), after every other
    /// waiter was woken.
    pub(crate) fn notify(&self) {
        let wakers = {
            let mut state = self.state.lock();
            state.generation += 1;
            std::mem::take(&mut state.wakers)
        };
        self.cond.notify_all();
        let mut first_panic = None;
        for (_, waker) in wakers {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| waker.wake())) {
                first_panic.get_or_insert(payload);
            }
        }
        if let Some(payload) = first_panic {
            if !std::thread::panicking() {
                resume_unwind(payload);
            }
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.state.lock().generation
    }

    /// Blocks the thread until the generation moved past `seen`, or for `timeout` (`None` =
    /// until it moves).
    pub(crate) fn wait(&self, seen: u64, timeout: Option<Duration>) {
        let mut state = self.state.lock();
        if state.generation != seen {
            return;
        }
        match timeout {
            Some(timeout) => {
                self.cond.wait_for(&mut state, timeout);
            }
            None => self.cond.wait(&mut state),
        }
    }

    /// A new subscription id for [`poll_moved`](Self::poll_moved).
    pub(crate) fn subscribe(&self) -> u64 {
        let mut state = self.state.lock();
        state.next_id += 1;
        state.next_id
    }

    /// The current generation if it moved past `seen`; otherwise registers `waker` for the
    /// subscription `id` (replacing its previous one) and returns `None`. Wakers are cloned and
    /// dropped outside the signal's lock (both are runtime code).
    pub(crate) fn poll_moved(&self, id: u64, seen: u64, waker: &Waker) -> Option<u64> {
        let mut waker = Some(waker.clone());
        let replaced = {
            let mut state = self.state.lock();
            if state.generation != seen {
                return Some(state.generation);
            }
            let new = waker.take().expect("cloned above");
            match state.wakers.iter_mut().find(|(i, _)| *i == id) {
                Some((_, old)) => Some(std::mem::replace(old, new)),
                None => {
                    state.wakers.push((id, new));
                    None
                }
            }
        };
        drop(replaced);
        None
    }

    /// Forgets the waker of subscription `id`.
    pub(crate) fn unsubscribe(&self, id: u64) {
        let waker = {
            let mut state = self.state.lock();
            let at = state.wakers.iter().position(|(i, _)| *i == id);
            at.map(|at| state.wakers.swap_remove(at))
        };
        drop(waker); // outside the lock: a waker's drop is runtime code
    }
}
