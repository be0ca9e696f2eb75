//! `DeadlineChanges`: drive grace expiry from an async task instead of a [`Reaper`] thread.
//!
//! [`Reaper`]: crate::Reaper

use crate::signal::Signal;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

/// A subscription to "the earliest grace deadline moved earlier", for running
/// [`expire_due`](crate::Registry::expire_due) from a task of your async runtime rather than on
/// the [`Reaper`](crate::Reaper)'s thread (so that the phones' [`Conn::close`](crate::Conn::close)
/// calls run inside the runtime, where they may spawn tasks).
///
/// Made by [`Registry::deadline_changes`](crate::Registry::deadline_changes). It needs no
/// runtime: [`changed`](Self::changed) is a plain [`Future`] woken through its
/// [`Waker`](std::task::Waker) by whichever thread armed the earlier window (from
/// [`release_after`](crate::ServerClaim::release_after), after the registry's lock is
/// released). It resolves only when a window becomes the earliest one — a window armed at or
/// after the earliest deadline, or a cancelled window, does not wake it — and spuriously when a
/// [`Reaper`](crate::Reaper) of the same registry stops or the registry is dropped.
/// The subscription remembers what it has seen, so a window armed while the task was busy (between
/// its [`next_deadline`](crate::Registry::next_deadline) and its next `changed().await`) makes that
/// `changed()` resolve at once: no wake-up is lost.
///
/// # Examples
///
/// The expiry task of an async relay runs `expire_due`, then sleeps until the next deadline or
/// until `changed()` resolves, whichever comes first (`tokio::select!` over `sleep_until` and
/// `changed()`): the whole task, with tokio, is in the crate docs'
/// [Using it with tokio (and axum)](crate#using-it-with-tokio-and-axum). The closes of expired
/// phones then run on that task, inside the runtime.
///
/// Without a runtime, the future can still be polled by hand:
///
/// ```
/// # use relay_registry::{CloseReason, Conn};
/// # struct Ws;
/// # impl Conn for Ws {
/// #     fn conn_id(&self) -> &str { "ws" }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// use relay_registry::Registry;
/// use std::future::Future;
/// use std::sync::Arc;
/// use std::task::{Context, Poll, Waker};
/// use std::time::Duration;
///
/// let registry = Registry::new();
/// let mut changes = registry.deadline_changes();
/// let mut cx = Context::from_waker(Waker::noop());
/// assert!(!changes.has_changed());
/// assert!(std::pin::pin!(changes.changed()).poll(&mut cx).is_pending());
///
/// let claim = registry.claim_server("srv", Arc::new(Ws)).unwrap();
/// claim.release_after(Duration::from_secs(30)); // the first window: the earliest deadline moved
/// assert!(changes.has_changed());
/// assert_eq!(std::pin::pin!(changes.changed()).poll(&mut cx), Poll::Ready(()));
/// assert!(!changes.has_changed());
/// ```
pub struct DeadlineChanges {
    signal: Arc<Signal>,
    id: u64,
    seen: u64,
}

impl DeadlineChanges {
    pub(crate) fn new(signal: Arc<Signal>) -> Self {
        let id = signal.subscribe();
        let seen = signal.generation();
        DeadlineChanges { signal, id, seen }
    }

    /// Whether the earliest deadline may have moved earlier since this subscription was made or
    /// its last [`changed`](Self::changed) resolved. Takes no registry lock.
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
    /// let registry = relay_registry::Registry::<Ws>::new();
    /// assert!(!registry.deadline_changes().has_changed());
    /// ```
    pub fn has_changed(&self) -> bool {
        self.signal.generation() != self.seen
    }

    /// Resolves once the earliest grace deadline moved earlier (a window was armed before every
    /// other) since the last time it resolved, or at once if that already happened. Spurious
    /// resolutions are possible (e.g. when a [`Reaper`](crate::Reaper) stops); re-read
    /// [`next_deadline`](crate::Registry::next_deadline) after each.
    ///
    /// Cancel-safe: dropping the future loses nothing.
    ///
    /// # Examples
    ///
    /// See [`DeadlineChanges`].
    pub fn changed(&mut self) -> Changed<'_> {
        Changed { changes: self }
    }
}

impl Drop for DeadlineChanges {
    fn drop(&mut self) {
        self.signal.unsubscribe(self.id);
    }
}

impl fmt::Debug for DeadlineChanges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadlineChanges")
            .field("has_changed", &self.has_changed())
            .finish_non_exhaustive()
    }
}

/// The future of [`DeadlineChanges::changed`].
#[must_use = "futures do nothing unless polled"]
pub struct Changed<'a> {
    changes: &'a mut DeadlineChanges,
}

impl Future for Changed<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let changes = &mut *self.get_mut().changes;
        match changes
            .signal
            .poll_moved(changes.id, changes.seen, cx.waker())
        {
            Some(generation) => {
                changes.seen = generation;
                Poll::Ready(())
            }
            None => Poll::Pending,
        }
    }
}

impl fmt::Debug for Changed<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changed").finish_non_exhaustive()
    }
}
