//! Where the registry reads the time: the system clock, or a manual one for tests.

use crate::sync::PlainMutex;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A source of [`Instant`]s for grace deadlines.
///
/// The registry calls [`now`](Clock::now) only outside its lock (it is user code), once per
/// [`release_after`](crate::ServerClaim::release_after) and [`expire_due`](crate::Registry::expire_due).
pub trait Clock: Send + Sync + 'static {
    /// The current instant. Must be monotonic (never go backwards).
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
/// [`Config::clock`](crate::Config::clock).
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
    /// A manual clock starting at the current real instant.
    pub fn new() -> Self {
        ManualClock {
            now: Arc::new(PlainMutex::new(Instant::now())),
        }
    }

    /// Moves the time of this clock and every clone forward by `by`, saturating at the largest
    /// representable instant instead of panicking.
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
