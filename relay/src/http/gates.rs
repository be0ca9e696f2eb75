//! The gates every upgrade request passes before anything else, in the protocol's order: the
//! per-client-IP rate limit (HTTP 429 with `Retry-After`), then the live-connection cap (HTTP
//! 503). With TLS on, each TLS handshake passes them too (and holds its place under the cap while
//! it runs); its token pays for the connection's first upgrade. Readiness (shutdown) is checked by the caller first. `/healthz` and `/readyz` are never
//! gated.
//!
//! The rate limit is governor's keyed token bucket (GCRA). Its keyed memory is bounded: IPv6
//! clients are keyed by their /64 (one subscriber's whole prefix is one client), the keys whose
//! buckets are full again are pruned every refill period, and while [`MAX_KEYS`] clients are
//! tracked, every request is counted against one shared overflow bucket until pruning makes room
//! — an attacker rotating source addresses can neither grow the table without limit nor escape
//! the limit (during such an attack, other clients are limited together with it).

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Most client keys the rate limiter tracks individually.
pub(crate) const MAX_KEYS: usize = 100_000;

/// Why a gate refused an upgrade request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// Over the client IP's rate limit; it may try again after this long (HTTP 429).
    RateLimited(Duration),
    /// The relay holds its maximum of connections (HTTP 503).
    OverCapacity,
}

/// A rate-limit key: a client, as the limit sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ClientKey {
    V4(u32),
    /// The /64 prefix.
    V6(u64),
    /// Every new client while [`MAX_KEYS`] are tracked.
    Overflow,
}

impl ClientKey {
    fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => ClientKey::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => ClientKey::V4(u32::from(v4)),
                None => ClientKey::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// One live WebSocket connection's place under the cap; dropping it frees the place.
#[derive(Debug)]
#[must_use = "the place is freed when the permit is dropped"]
pub(crate) struct Permit {
    live: Arc<AtomicUsize>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.live.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The rate limit and the connection cap. See the module docs.
#[derive(Debug)]
pub(crate) struct Gates {
    limiter: Option<DefaultKeyedRateLimiter<ClientKey>>,
    refill: Duration,
    max_keys: usize,
    max_connections: usize,
    live: Arc<AtomicUsize>,
}

impl Gates {
    /// Gates with `burst` upgrades per client IP (0 disables the limit), one token back every
    /// `refill`, and at most `max_connections` live connections (0 = unlimited).
    pub(crate) fn new(burst: u32, refill: Duration, max_connections: usize) -> Self {
        let limiter = NonZeroU32::new(burst).map(|burst| {
            let period = refill.max(Duration::from_nanos(1));
            let quota = Quota::with_period(period)
                .expect("a non-zero period")
                .allow_burst(burst);
            RateLimiter::keyed(quota)
        });
        Gates {
            limiter,
            refill,
            max_keys: MAX_KEYS,
            max_connections,
            live: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Passes one upgrade request from `ip` through the rate limit, then the cap.
    ///
    /// # Errors
    ///
    /// The first gate that refused it.
    pub(crate) fn admit(&self, ip: IpAddr) -> Result<Permit, Refusal> {
        self.admit_prepaid(ip, false)
    }

    /// [`admit`](Self::admit), without the rate limit when `prepaid` (the connection's TLS
    /// handshake took this request's token already).
    ///
    /// # Errors
    ///
    /// The first gate that refused it.
    pub(crate) fn admit_prepaid(&self, ip: IpAddr, prepaid: bool) -> Result<Permit, Refusal> {
        if let Some(limiter) = self.limiter.as_ref().filter(|_| !prepaid) {
            let mut key = ClientKey::of(ip);
            if limiter.len() >= self.max_keys {
                key = ClientKey::Overflow;
            }
            if let Err(not_until) = limiter.check_key(&key) {
                let wait = not_until.wait_time_from(DefaultClock::default().now());
                return Err(Refusal::RateLimited(wait));
            }
        }
        self.reserve().ok_or(Refusal::OverCapacity)
    }

    /// A place under the cap, if there is one.
    fn reserve(&self) -> Option<Permit> {
        let max = self.max_connections;
        self.live
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |live| {
                (max == 0 || live < max).then_some(live + 1)
            })
            .ok()?;
        Some(Permit {
            live: self.live.clone(),
        })
    }

    /// Live connections holding a permit.
    pub(crate) fn live(&self) -> usize {
        self.live.load(Ordering::Acquire)
    }

    /// Forgets the clients whose buckets are full again (they would start fresh anyway) and
    /// returns the table's memory; how many clients are still tracked.
    pub(crate) fn prune(&self) -> usize {
        let Some(limiter) = &self.limiter else {
            return 0;
        };
        limiter.retain_recent();
        limiter.shrink_to_fit();
        limiter.len()
    }

    /// How often [`prune`](Self::prune) should run: once per refill period, at least every
    /// second and at most every minute.
    pub(crate) fn prune_every(&self) -> Duration {
        self.refill
            .clamp(Duration::from_secs(1), Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_gets_its_burst_then_429_while_another_client_still_passes() {
        let gates = Gates::new(3, Duration::from_secs(3600), 0);
        let mut permits = Vec::new();
        for _ in 0..3 {
            permits.push(gates.admit(ip("192.0.2.1")).expect("within the burst"));
        }
        match gates.admit(ip("192.0.2.1")) {
            Err(Refusal::RateLimited(wait)) => assert!(wait > Duration::from_secs(3000)),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(gates.admit(ip("192.0.2.2")).is_ok());
    }

    #[test]
    fn ipv6_clients_are_limited_by_their_64_prefix() {
        let gates = Gates::new(1, Duration::from_secs(3600), 0);
        let _first = gates.admit(ip("2001:db8:1:2::1")).unwrap();
        assert!(matches!(
            gates.admit(ip("2001:db8:1:2:ffff::9")),
            Err(Refusal::RateLimited(_))
        ));
        assert!(gates.admit(ip("2001:db8:1:3::1")).is_ok());
    }

    #[test]
    fn past_the_key_bound_new_clients_share_one_bucket_and_the_table_stops_growing() {
        let mut gates = Gates::new(2, Duration::from_secs(3600), 0);
        gates.max_keys = 10;
        for n in 0..10u8 {
            drop(gates.admit(IpAddr::from([10, 0, 0, n])).unwrap());
        }
        // Addresses 10 and up all land in the overflow bucket: two pass, then 429, and the
        // table holds the 10 clients plus that one bucket however many addresses come.
        let mut passed = 0;
        for n in 10..=255u8 {
            passed += usize::from(gates.admit(IpAddr::from([10, 0, 0, n])).is_ok());
        }
        assert_eq!(passed, 2);
        assert_eq!(gates.limiter.as_ref().unwrap().len(), 11);
    }

    #[test]
    fn a_zero_burst_disables_the_limit() {
        let gates = Gates::new(0, Duration::from_secs(6), 0);
        for _ in 0..1000 {
            drop(gates.admit(ip("192.0.2.1")).unwrap());
        }
        assert_eq!(gates.prune(), 0);
    }

    #[test]
    fn the_cap_refuses_past_max_and_a_dropped_permit_frees_its_place() {
        let gates = Gates::new(0, Duration::from_secs(6), 2);
        let a = gates.admit(ip("192.0.2.1")).unwrap();
        let _b = gates.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(
            gates.admit(ip("192.0.2.1")).unwrap_err(),
            Refusal::OverCapacity
        );
        drop(a);
        assert_eq!(gates.live(), 1);
        assert!(gates.admit(ip("192.0.2.1")).is_ok());
    }

    #[test]
    fn pruning_forgets_clients_whose_bucket_refilled() {
        let gates = Gates::new(2, Duration::from_nanos(1), 0);
        for n in 0..50u8 {
            drop(gates.admit(IpAddr::from([10, 0, 0, n])).unwrap());
        }
        std::thread::sleep(Duration::from_millis(1));
        assert_eq!(gates.prune(), 0);
    }
}
