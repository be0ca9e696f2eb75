//! Where the registry reads the time: the system clock, or a manual one for tests.

use crate::sync::PlainMutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of [`Instant`]s for grace deadlines.
///
/// The registry calls [`now`](Clock::now) only outside its lock (it is user code), once per
/// [`release_after`](crate::ServerClaim::release_after) and
/// [`expire_due`](crate::Registry::expire_due) — on the calling thread, or on a
/// [`Reaper`](crate::Reaper)'s thread once per round. A panicking `now` leaves nothing held by
/// no one (see the crate docs, "Locking and re-entrancy").
///
/// # Examples
///
/// ```
/// use relay_registry::{Clock, Config};
/// use std::sync::Arc;
/// use std::time::Instant;
///
/// /// The system clock, as seen from a relay that counts how often it is read.
/// #[derive(Default)]
/// struct Counted(std::sync::atomic::AtomicUsize);
///
/// impl Clock for Counted {
///     fn now(&self) -> Instant {
///         self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
///         Instant::now()
///     }
/// }
///
/// let config = Config::default().with_clock(Arc::new(Counted::default()));
/// assert!(config.clock().now() <= Instant::now());
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current instant. Must be monotonic (never go backwards) and must not block.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::{Clock, SystemClock};
    ///
    /// let (a, b) = (SystemClock.now(), SystemClock.now());
    /// assert!(b >= a);
    /// ```
    fn now(&self) -> Instant;
}

/// The real monotonic clock, [`Instant::now`]. The default.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }
}

/// A clock that moves only when told to, so grace windows can be tested without sleeping.
///
/// Clones share one time: keep one clone in the test and hand another to
/// [`Config::with_clock`](crate::Config::with_clock).
///
/// # Examples
///
/// ```
/// use relay_registry::{Clock, ManualClock};
/// use std::time::Duration;
///
/// let clock = ManualClock::new();
/// let other = clock.clone();
/// let start = clock.now();
/// other.advance(Duration::from_secs(30));
/// assert_eq!(clock.now() - start, Duration::from_secs(30));
/// ```
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<PlainMutex<Instant>>,
}

impl ManualClock {
    /// A manual clock starting at the current real instant. It stays there until
    /// [`advance`](Self::advance)d.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::{Clock, ManualClock};
    ///
    /// let clock = ManualClock::new();
    /// let start = clock.now();
    /// std::thread::sleep(std::time::Duration::from_millis(2));
    /// assert_eq!(clock.now(), start);
    /// ```
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(PlainMutex::new(Instant::now())),
        }
    }

    /// Moves the time of this clock and every clone forward by `by`, saturating at the largest
    /// representable instant instead of panicking.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::{Clock, ManualClock};
    /// use std::time::Duration;
    ///
    /// let clock = ManualClock::new();
    /// let start = clock.now();
    /// clock.advance(Duration::from_secs(30));
    /// assert_eq!(clock.now(), start + Duration::from_secs(30));
    /// clock.advance(Duration::MAX); // saturates
    /// assert!(clock.now() > start);
    /// ```
    pub fn advance(&self, by: Duration) {
        let mut now = self.now.lock();
        *now = saturating_add(*now, by);
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        *self.now.lock()
    }
}

/// `at + by`, or the latest instant that can be represented past `at` if that overflows.
pub(crate) fn saturating_add(at: Instant, by: Duration) -> Instant {
    if let Some(t) = at.checked_add(by) {
        return t;
    }
    // Binary search down from `by` for the largest addable step, then add what still fits.
    let (mut t, mut step) = (at, by);
    while !step.is_zero() {
        match t.checked_add(step) {
            Some(next) => t = next,
            None => step /= 2,
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saturating_add_never_panics_on_duration_max() {
        let now = Instant::now();
        let far = saturating_add(now, Duration::MAX);
        assert!(far > now + Duration::from_secs(100 * 365 * 24 * 3600));
        assert_eq!(saturating_add(far, Duration::from_secs(1)), far);
    }

    #[test]
    fn manual_clock_clones_share_time() {
        let a = ManualClock::new();
        let b = a.clone();
        let t0 = a.now();
        b.advance(Duration::from_millis(5));
        assert_eq!(a.now(), t0 + Duration::from_millis(5));
        a.advance(Duration::MAX);
        assert!(b.now() > t0);
    }
}
