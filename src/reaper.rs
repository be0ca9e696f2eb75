//! `Reaper`: a thread that runs `expire_due` when each grace deadline arrives.

use crate::conn::Conn;
use crate::expiry::Expiries;
use crate::registry::Registry;
use crate::shared::Shared;
use crate::signal::Signal;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

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
/// #     type Frame = String;
/// #     fn send(&self, _: String) -> Result<(), SendError> { Ok(()) }
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
#[must_use = "a Reaper stops (and grace windows stop expiring) as soon as it is dropped: keep it for as long as the registry serves"]
pub struct Reaper {
    stop: Arc<AtomicBool>,
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts a reaper thread for `registry`. Panics of `Conn::close` calls during expiry are
    /// caught and reported on stderr (use [`spawn_with`](Self::spawn_with) to handle them, and
    /// the expired ids, yourself).
    ///
    /// # Panics
    ///
    /// If the operating system cannot create a thread.
    pub fn spawn<C: Conn>(registry: &Registry<C>) -> Reaper {
        Self::spawn_with(registry, report_panics)
    }

    /// Starts a reaper thread for `registry` that hands each non-empty [`Expiries`] to
    /// `on_expiry`, on the reaper's thread: to log and count expired server-ids, and to surface
    /// the panics of `Conn::close` calls that [`expire_due`](Registry::expire_due) caught.
    ///
    /// A panic in `on_expiry` itself is caught too (and the reaper keeps running).
    ///
    /// # Panics
    ///
    /// If the operating system cannot create a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn, SendError};
    /// # struct Ws;
    /// # impl Conn for Ws {
    /// #     type Frame = String;
    /// #     fn conn_id(&self) -> &str { "ws" }
    /// #     fn send(&self, _: String) -> Result<(), SendError> { Ok(()) }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Reaper, Registry};
    /// use std::sync::{Arc, mpsc};
    /// use std::time::Duration;
    ///
    /// let registry = Registry::<Ws>::new();
    /// let (expired_tx, expired_rx) = mpsc::channel();
    /// let reaper = Reaper::spawn_with(&registry, move |expiries| {
    ///     for expired in &expiries {
    ///         expired_tx.send(expired.server_id().to_owned()).ok();
    ///     }
    /// });
    /// registry.claim_server("srv", Arc::new(Ws))?.release_after(Duration::from_millis(5));
    /// assert_eq!(expired_rx.recv_timeout(Duration::from_secs(10)).unwrap(), "srv");
    /// drop(reaper);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    #[must_use = "a Reaper stops as soon as it is dropped"]
    pub fn spawn_with<C: Conn>(
        registry: &Registry<C>,
        on_expiry: impl FnMut(Expiries<C>) + Send + 'static,
    ) -> Reaper {
        let shared = Arc::downgrade(registry.shared());
        let signal = registry.shared().signal.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("relay-registry-reaper".into())
            .spawn({
                let (signal, stop) = (signal.clone(), stop.clone());
                move || reap(&shared, &signal, &stop, on_expiry)
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

/// The default expiry handler: says on stderr that user code panicked, since nothing else would.
fn report_panics<C: Conn>(expiries: Expiries<C>) {
    for message in expiries.panics() {
        eprintln!("relay-registry reaper: a Conn::close panicked during grace expiry: {message}");
    }
}

fn reap<C: Conn>(
    shared: &Weak<Shared<C>>,
    signal: &Signal,
    stop: &AtomicBool,
    mut on_expiry: impl FnMut(Expiries<C>),
) {
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
        let expiries = registry.expire_due();
        if !expiries.is_empty() || !expiries.panics().is_empty() {
            // The handler is user code: its panic must not kill the reaper either.
            let _ = catch_unwind(AssertUnwindSafe(|| on_expiry(expiries)));
        }
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
