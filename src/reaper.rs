//! `Reaper`: a thread that runs `expire_due` when each grace deadline arrives.

use crate::conn::Conn;
use crate::registry::Registry;
use crate::shared::Shared;
use parking_lot::{Condvar, Mutex};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

/// Wakes reapers: bumped when a window becomes the earliest, when a reaper is stopped, and when the
/// registry is dropped.
#[derive(Default)]
pub(crate) struct Signal {
    generation: Mutex<u64>,
    cond: Condvar,
}

impl Signal {
    pub(crate) fn notify(&self) {
        *self.generation.lock() += 1;
        self.cond.notify_all();
    }

    fn generation(&self) -> u64 {
        *self.generation.lock()
    }

    /// Sleeps until notified after `seen`, or for `timeout` (`None` = until notified).
    fn wait(&self, seen: u64, timeout: Option<Duration>) {
        let mut generation = self.generation.lock();
        if *generation != seen {
            return;
        }
        match timeout {
            Some(timeout) => {
                self.cond.wait_for(&mut generation, timeout);
            }
            None => self.cond.wait(&mut generation),
        }
    }
}

/// A background thread that applies grace expiries on time, so phones of a binary that did not
/// come back are closed at the deadline without anyone polling.
///
/// The thread sleeps until the registry's [`next_deadline`](Registry::next_deadline), runs
/// [`expire_due`](Registry::expire_due) (the phones' [`Conn::close`] calls run on this thread), and
/// sleeps again; arming an earlier window wakes it. It holds only a `Weak` reference to the
/// registry: it stops when the `Reaper` is dropped (the drop joins it) or when the registry and all
/// its guards are gone. A panic in a `Conn::close` does not stop it.
///
/// It waits on real time: with a [`ManualClock`](crate::ManualClock), call `expire_due` yourself.
///
/// # Examples
///
/// ```
/// # use relay_registry::{CloseReason, Conn, SendError};
/// # struct Ws;
/// # impl Conn for Ws {
/// #     fn conn_id(&self) -> &str { "ws" }
/// #     fn send(&self, _: &[u8]) -> Result<(), SendError> { Ok(()) }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// use relay_registry::{Reaper, Registry};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let registry = Registry::<Ws>::new();
/// let reaper = Reaper::spawn(&registry);
/// let claim = registry.claim_server("srv", Arc::new(Ws)).unwrap();
/// claim.release_after(Duration::from_millis(10));
/// while registry.counts().gracing > 0 {
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// drop(reaper); // stops and joins the thread
/// ```
pub struct Reaper {
    stop: Arc<AtomicBool>,
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts a reaper thread for `registry`.
    ///
    /// # Panics
    ///
    /// If the operating system cannot create a thread.
    pub fn spawn<C: Conn>(registry: &Registry<C>) -> Reaper {
        let shared = Arc::downgrade(registry.shared());
        let signal = registry.shared().signal.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("relay-registry-reaper".into())
            .spawn({
                let (signal, stop) = (signal.clone(), stop.clone());
                move || reap(&shared, &signal, &stop)
            })
            .expect("failed to spawn the reaper thread");
        Reaper {
            stop,
            signal,
            thread: Some(thread),
        }
    }

    fn thread_id(&self) -> Option<ThreadId> {
        self.thread.as_ref().map(|t| t.thread().id())
    }
}

fn reap<C: Conn>(shared: &Weak<Shared<C>>, signal: &Signal, stop: &AtomicBool) {
    loop {
        // Read the generation first: a window armed after this point bumps it, so the wait below
        // returns at once instead of missing the wake-up.
        let seen = signal.generation();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(registry) = shared.upgrade().map(|shared| Registry::from_shared(shared)) else {
            return;
        };
        // A panicking `Conn::close` must not kill the reaper; the registry is consistent after one.
        let _ = catch_unwind(AssertUnwindSafe(|| registry.expire_due()));
        let next = registry.next_deadline();
        let now = registry.shared().config.clock.now();
        drop(registry);
        let timeout = next.map(|deadline| deadline.saturating_duration_since(now));
        if timeout == Some(Duration::ZERO) {
            continue;
        }
        signal.wait(seen, timeout);
    }
}

impl Drop for Reaper {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.signal.notify();
        // A reaper dropped from its own thread (by a `Conn::close` it ran) cannot join itself.
        if self.thread_id() != Some(thread::current().id()) {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

impl std::fmt::Debug for Reaper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reaper")
            .field("thread", &self.thread_id())
            .finish_non_exhaustive()
    }
}
