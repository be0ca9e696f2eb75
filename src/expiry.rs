//! `Expiries`: what one [`expire_due`](crate::Registry::expire_due) call ended.

use crate::conn::Conn;
use crate::tenure::Tenure;
use std::fmt;
use std::sync::Arc;

/// The grace windows one [`expire_due`](crate::Registry::expire_due) call ended, earliest deadline
/// first, so that a relay can log and count each expired server-id — including ids that had no
/// phones — and the panics of the phones' closes, which the call caught instead of propagating.
///
/// It owns the expired binaries' conns: dropping it may drop the last reference to them (their
/// `Drop` then runs where the report is dropped, never under the registry's lock).
///
/// # Examples
///
/// ```
/// # use relay_registry::{CloseReason, Conn};
/// # struct Ws(&'static str);
/// # impl Conn for Ws {
/// #     fn conn_id(&self) -> &str { self.0 }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// use relay_registry::{Config, ManualClock, Registry};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let registry = Registry::with_config(Config::default().with_clock(Arc::new(clock.clone())));
/// let claim = registry.claim_server("srv", Arc::new(Ws("server-srv-1")))?;
/// let _ticket = registry.register_phone("srv", Arc::new(Ws("client-srv-1")))?;
/// claim.release_after(Duration::from_secs(30));
/// registry.claim_server("lonely", Arc::new(Ws("server-lonely-1")))?.release_after(Duration::ZERO);
///
/// clock.advance(Duration::from_secs(30));
/// let expired = registry.expire_due();
/// let ended: Vec<_> = expired.iter().map(|e| (e.server_id(), e.phones())).collect();
/// assert_eq!(ended, [("lonely", 0), ("srv", 1)]);
/// assert_eq!(expired.iter().next().unwrap().binary().0, "server-lonely-1");
/// assert!(expired.panics().is_empty());
/// # Ok::<(), relay_registry::RegistryError>(())
/// ```
pub struct Expiries<C: Conn> {
    expired: Vec<Expired<C>>,
    panics: Vec<String>,
}

impl<C: Conn> Expiries<C> {
    pub(crate) fn new(expired: Vec<Expired<C>>, panics: Vec<String>) -> Self {
        Expiries { expired, panics }
    }

    /// How many grace windows expired.
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
    /// assert_eq!(registry.expire_due().len(), 0);
    /// ```
    pub fn len(&self) -> usize {
        self.expired.len()
    }

    /// Whether no window expired.
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
    /// assert!(registry.expire_due().is_empty());
    /// ```
    pub fn is_empty(&self) -> bool {
        self.expired.is_empty()
    }

    /// The expired windows, earliest deadline first.
    ///
    /// # Examples
    ///
    /// See [`Expiries`].
    pub fn iter(&self) -> std::slice::Iter<'_, Expired<C>> {
        self.expired.iter()
    }

    /// The messages of the panics caught while closing the evicted phones (or dropping removed
    /// conns, or reading the clock). Each was caught so that every other close still ran; the
    /// expiries themselves completed. Empty unless user code panicked.
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
    /// for message in registry.expire_due().panics() {
    ///     eprintln!("a Conn::close panicked during expiry: {message}");
    /// }
    /// ```
    pub fn panics(&self) -> &[String] {
        &self.panics
    }
}

impl<'a, C: Conn> IntoIterator for &'a Expiries<C> {
    type Item = &'a Expired<C>;
    type IntoIter = std::slice::Iter<'a, Expired<C>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<C: Conn> fmt::Debug for Expiries<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expiries")
            .field("expired", &self.expired)
            .field("panics", &self.panics)
            .finish()
    }
}

/// One grace window that ended without a reclaim: its server-id was freed and its phones were
/// closed with [`CloseReason::GraceExpired`](crate::CloseReason::GraceExpired).
///
/// # Examples
///
/// See [`Expiries`].
pub struct Expired<C: Conn> {
    tenure: Arc<Tenure<C>>,
    phones: usize,
}

impl<C: Conn> Expired<C> {
    pub(crate) fn new(tenure: Arc<Tenure<C>>, phones: usize) -> Self {
        Expired { tenure, phones }
    }

    /// The server-id whose window expired (it is free now).
    ///
    /// # Examples
    ///
    /// See [`Expiries`].
    pub fn server_id(&self) -> &str {
        &self.tenure.server_id
    }

    /// The binary that had released the id into the window.
    ///
    /// # Examples
    ///
    /// See [`Expiries`].
    pub fn binary(&self) -> &Arc<C> {
        &self.tenure.binary
    }

    /// How many phones were evicted (and closed `GraceExpired`); 0 for an id without phones.
    ///
    /// # Examples
    ///
    /// See [`Expiries`].
    pub fn phones(&self) -> usize {
        self.phones
    }
}

impl<C: Conn> fmt::Debug for Expired<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Expired")
            .field("server_id", &self.server_id())
            .field("phones", &self.phones)
            .finish_non_exhaustive()
    }
}
