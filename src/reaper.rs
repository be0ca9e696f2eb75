//! `Reaper`: a thread that runs `expire_due` when each grace deadline arrives.
//!
//! Its constructors, [`Reaper::spawn`] and [`Reaper::spawn_with`], take the [`Registry`] handle
//! and keep only a `Weak` of its [`Shared`] state: the reaper is a guard-level type like the
//! handle itself, and imports point down (reaper → registry, shared).

use crate::aftermath::panic_message;
use crate::conn::Conn;
use crate::expiry::Expiries;
use crate::registry::Registry;
use crate::shared::Shared;
use crate::signal::Signal;
use crate::sync::{Ordering, PlainAtomicBool};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Weak};
use std::thread::{self, JoinHandle, ThreadId};
use std::time::Duration;

/// How long a reaper waits before reading a clock again whose `now` panicked (unless a new
/// earliest window wakes it sooner).
const CLOCK_RETRY: Duration = Duration::from_millis(250);

/// A background thread that applies grace expiries on time, so phones of a binary that did not
/// come back are closed at the deadline without anyone polling.
///
/// The thread sleeps until the registry's [`next_deadline`](crate::Registry::next_deadline), runs
/// [`expire_due`](crate::Registry::expire_due), and sleeps again; arming an earlier window wakes
/// it. It holds only a `Weak` reference to the registry: it stops when the `Reaper` is dropped
/// (the drop joins it) or when the registry and all its guards are gone.
///
/// **Keep it.** The thread runs only as long as the `Reaper` value lives, so
/// `Reaper::spawn(&registry);` on its own line stops the reaper at once and grace windows never
/// expire; the compiler warns about it (`#[must_use]`). Store it next to the registry for as long
/// as the relay serves.
///
/// # Which thread runs what
///
/// Each expired phone's [`Conn::close`], the `Drop` of every conn the expiry removed, the
/// registry's [`Clock::now`](crate::Clock::now) and the `on_expiry` handler of
/// [`spawn_with`](Self::spawn_with) all run **on the reaper's own std thread**, outside any async
/// runtime. So a `close` called there must not need one: no `tokio::spawn`, no
/// `Handle::current()`, no `block_on` of a future that needs the runtime's I/O. Doing what a
/// channel-fed writer task needs — a non-blocking `try_send` of the close frame into the
/// connection's channel, cancelling a token, `Waker::wake` — is fine, and so is calling back into
/// the registry. An async relay that wants its closes to run inside its runtime drives expiry from
/// a task instead of a `Reaper` (see [`Registry::deadline_changes`](crate::Registry::deadline_changes)).
///
/// # Panics of user code
///
/// A panic in any of those does not stop the reaper. The panics of `close` calls (and of the
/// clock) are caught by `expire_due` and handed to the expiry handler in
/// [`Expiries::panics`]: the default handler of [`spawn`](Self::spawn) prints each to stderr,
/// [`spawn_with`](Self::spawn_with) gives them to yours. A panic of the handler itself (or of a
/// conn's `Drop` when a report is dropped) is caught and printed to stderr.
///
/// It waits on real time: with a [`ManualClock`](crate::ManualClock), call `expire_due` yourself.
///
/// # Examples
///
/// ```
/// # use relay_registry::{CloseReason, Conn};
/// # struct Ws;
/// # impl Conn for Ws {
/// #     fn conn_id(&self) -> &str { "ws" }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// use relay_registry::{Reaper, Registry};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let registry = Registry::<Ws>::new();
/// let reaper = Reaper::spawn(&registry); // keep it: dropping it stops the thread
/// let claim = registry.claim_server("srv", Arc::new(Ws)).unwrap();
/// claim.release_after(Duration::from_millis(10));
/// while registry.counts().gracing > 0 {
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// drop(reaper); // stops and joins the thread
/// ```
#[must_use = "a Reaper stops (and grace windows stop expiring) as soon as it is dropped: keep it for as long as the registry serves"]
pub struct Reaper {
    stop: Arc<PlainAtomicBool>,
    signal: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

impl Reaper {
    /// Starts a reaper thread for `registry`. The panics that expiry caught (of `Conn::close`
    /// calls, or of the clock) are printed to stderr; use [`spawn_with`](Self::spawn_with) to
    /// handle them, and the expired ids, yourself.
    ///
    /// Keep the returned `Reaper`: dropping it stops the thread (the compiler warns if the value
    /// is dropped on the spot).
    ///
    /// # Panics
    ///
    /// If the operating system cannot create a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws;
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { "ws" }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Reaper, Registry};
    ///
    /// let registry = Registry::<Ws>::new();
    /// let _reaper = Reaper::spawn(&registry); // lives until the end of the scope
    /// ```
    pub fn spawn<C: Conn>(registry: &Registry<C>) -> Reaper {
        Reaper::start(&registry.shared, report_panics)
    }

    /// Starts a reaper thread for `registry` that hands each non-empty [`Expiries`] to
    /// `on_expiry`, on the reaper's thread: to log and count expired server-ids (ids without
    /// phones included), and to surface the panics that [`expire_due`](Registry::expire_due)
    /// caught in [`Expiries::panics`].
    ///
    /// `on_expiry` runs outside any async runtime (see [`Reaper`]: which thread runs what). A
    /// panic in it is caught and printed to stderr, and the reaper keeps running.
    ///
    /// # Panics
    ///
    /// If the operating system cannot create a thread.
    ///
    /// # Examples
    ///
    /// ```
    /// # use relay_registry::{CloseReason, Conn};
    /// # struct Ws;
    /// # impl Conn for Ws {
    /// #     fn conn_id(&self) -> &str { "ws" }
    /// #     fn close(&self, _: CloseReason) {}
    /// # }
    /// use relay_registry::{Reaper, Registry};
    /// use std::sync::{Arc, mpsc};
    /// use std::time::Duration;
    ///
    /// let registry = Registry::<Ws>::new();
    /// let (expired_tx, expired_rx) = mpsc::channel();
    /// let reaper = Reaper::spawn_with(&registry, move |expiries| {
    ///     for message in expiries.panics() {
    ///         eprintln!("a close panicked during expiry: {message}");
    ///     }
    ///     for expired in &expiries {
    ///         expired_tx.send(expired.server_id().to_owned()).ok();
    ///     }
    /// });
    /// registry.claim_server("srv", Arc::new(Ws))?.release_after(Duration::from_millis(5));
    /// assert_eq!(expired_rx.recv_timeout(Duration::from_secs(10)).unwrap(), "srv");
    /// drop(reaper);
    /// # Ok::<(), relay_registry::RegistryError>(())
    /// ```
    pub fn spawn_with<C: Conn>(
        registry: &Registry<C>,
        on_expiry: impl FnMut(Expiries<C>) + Send + 'static,
    ) -> Reaper {
        Reaper::start(&registry.shared, on_expiry)
    }

    /// Starts the reaper thread of `shared`, handing each non-empty report to `on_expiry`.
    ///
    /// # Panics
    ///
    /// If the operating system cannot create a thread.
    pub(crate) fn start<C: Conn>(
        shared: &Arc<Shared<C>>,
        on_expiry: impl FnMut(Expiries<C>) + Send + 'static,
    ) -> Reaper {
        let weak = Arc::downgrade(shared);
        let signal = shared.signal.clone();
        let stop = Arc::new(PlainAtomicBool::new(false));
        let thread = thread::Builder::new()
            .name("relay-registry-reaper".into())
            .spawn({
                let (signal, stop) = (signal.clone(), stop.clone());
                move || reap(&weak, &signal, &stop, on_expiry)
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
pub(crate) fn report_panics<C: Conn>(expiries: Expiries<C>) {
    for message in expiries.panics() {
        eprintln!("relay-registry reaper: user code panicked during grace expiry: {message}");
    }
}

fn reap<C: Conn>(
    shared: &Weak<Shared<C>>,
    signal: &Signal,
    stop: &PlainAtomicBool,
    mut on_expiry: impl FnMut(Expiries<C>),
) {
    loop {
        // Read the generation first: a window armed after this point bumps it, so the wait below
        // returns at once instead of missing the wake-up.
        let seen = signal.generation();
        if stop.load(Ordering::Acquire) {
            return;
        }
        let Some(registry) = shared.upgrade() else {
            return;
        };
        // Never panics: the clock's and the closes' panics are in the report.
        let (expiries, now) = registry.expire_due();
        let next = registry.next_deadline();
        // The last strong reference may be this one: the registry's own drop (and its conns')
        // then runs here. User code either way, so caught like the handler.
        catch_and_print("dropping the registry", || drop(registry));
        if !expiries.is_empty() || !expiries.panics().is_empty() {
            catch_and_print("the expiry handler", || on_expiry(expiries));
        } else {
            catch_and_print("dropping an expiry report", || drop(expiries));
        }
        let timeout = match (next, now) {
            (None, _) => None,
            (Some(deadline), Some(now)) => Some(deadline.saturating_duration_since(now)),
            (Some(_), None) => Some(CLOCK_RETRY),
        };
        if timeout == Some(Duration::ZERO) {
            continue;
        }
        signal.wait(seen, timeout);
    }
}

/// Runs user code `f` on the reaper thread; a panic is printed to stderr instead of ending the
/// thread.
fn catch_and_print(what: &str, f: impl FnOnce()) {
    if let Err(payload) = catch_unwind(AssertUnwindSafe(f)) {
        eprintln!(
            "relay-registry reaper: {what} panicked (the reaper keeps running): {}",
            panic_message(&*payload)
        );
    }
}

impl Drop for Reaper {
    /// Stops the thread and joins it (it finishes the expiry it may be running first).
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.signal.notify();
        // A reaper dropped from its own thread (by user code it ran) cannot join itself.
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
