//! The two limits a wake passes before it is sent: its server-id's token bucket (governor's
//! keyed GCRA, as the upgrade gates use; pruned of full buckets every refill period), then a
//! place among the sends in flight across the relay (a semaphore, taken with `try_acquire`). A
//! wake over either is refused, never queued.
//!
//! In cluster mode a binary is always connected to its id's owning instance, so an id's bucket
//! is that instance's and no limit needs the cluster.

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Why a wake was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refused {
    /// Its server-id's bucket is empty.
    RateLimited,
    /// The relay has its maximum of sends in flight.
    Busy,
}

/// The per-id buckets and the in-flight cap.
#[derive(Debug)]
pub(super) struct Limits {
    buckets: DefaultKeyedRateLimiter<String>,
    in_flight: Arc<Semaphore>,
    refill: Duration,
}

impl Limits {
    /// Buckets of `burst` wakes per server-id, one back every `refill`; at most `max_in_flight`
    /// sends at once.
    pub(super) fn new(burst: NonZeroU32, refill: Duration, max_in_flight: usize) -> Limits {
        let refill = refill.max(Duration::from_nanos(1));
        let quota = Quota::with_period(refill)
            .expect("a non-zero period")
            .allow_burst(burst);
        Limits {
            buckets: RateLimiter::keyed(quota),
            in_flight: Arc::new(Semaphore::new(max_in_flight.min(Semaphore::MAX_PERMITS))),
            refill,
        }
    }

    /// Admits one wake for `server_id`: a place in flight, held until the permit is dropped.
    ///
    /// # Errors
    ///
    /// The id's bucket is empty (checked first), or no place is free.
    pub(super) fn admit(&self, server_id: &str) -> Result<OwnedSemaphorePermit, Refused> {
        self.buckets
            .check_key(&server_id.to_owned())
            .map_err(|_| Refused::RateLimited)?;
        self.in_flight
            .clone()
            .try_acquire_owned()
            .map_err(|_| Refused::Busy)
    }

    /// Forgets the buckets that are full again (they behave as new ones).
    pub(super) fn prune(&self) {
        self.buckets.retain_recent();
        self.buckets.shrink_to_fit();
    }

    /// How often [`prune`](Self::prune) is worth calling.
    pub(super) fn prune_every(&self) -> Duration {
        self.refill
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_id_has_its_own_burst_and_the_cap_is_shared() {
        let limits = Limits::new(NonZeroU32::new(2).unwrap(), Duration::from_secs(3600), 3);
        let a1 = limits.admit("a").unwrap();
        let _a2 = limits.admit("a").unwrap();
        assert_eq!(limits.admit("a").err(), Some(Refused::RateLimited));
        let _b1 = limits.admit("b").unwrap();
        assert_eq!(limits.admit("b").err(), Some(Refused::Busy));
        drop(a1);
        assert!(limits.admit("c").is_ok(), "a finished send frees its place");
        limits.prune();
        assert_eq!(limits.admit("a").err(), Some(Refused::RateLimited));
    }
}
