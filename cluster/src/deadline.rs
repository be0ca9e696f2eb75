//! [`FenceDeadline`]: the lease's fence deadline as one atomic word, for the check the relay
//! makes before every frame it delivers ([`Liveness::within_lease`]).
//!
//! # Why a check per frame, and not only the fence timer
//!
//! [`Liveness`] fences at `t_sent + L − M` by a timer (the refresher task's), and the relay
//! closes everything when it hears of it (another task). Both are tasks: a process stopped by
//! `SIGSTOP`, a runtime starved by a blocking task, or a virtual machine paused for longer than
//! the margin resumes with its timers *and* its sockets ready at once, and nothing orders the
//! fence before the phone task that reads the frames its phone sent during the pause. So the
//! relay asks, on every delivery path, just before a frame leaves for a binary or a phone:
//! *is the deadline still ahead on the monotonic clock?* — and fences at once when it is not.
//! A stopped or starved process cannot deliver a frame without passing that check, whatever its
//! timers did; a wall-clock jump changes nothing (the clock is the monotonic one, the clock
//! the deadline was computed on).
//!
//! # Cost
//!
//! Two atomic loads (`Acquire`, plain loads on x86-64: the deadline and the epoch) and one read
//! of the monotonic clock (`clock_gettime(CLOCK_MONOTONIC)` through the vDSO, no system call),
//! compared as integers: no lock, no allocation. Measured by `cargo bench -p relay-server
//! --bench lease_check` (the figures are in the relay's `cluster` module docs).
//!
//! # Epochs
//!
//! A resumed process may fence and re-announce itself under a new incarnation (one NATS round
//! trip) before its other tasks run; its deadline is then ahead again, but the connections and
//! links made under the old lease are not current: [`FenceDeadline::epoch`] counts the fences,
//! and [`FenceDeadline::is_ahead_since`] is false for anything made in an earlier epoch.
//!
//! [`Liveness`]: crate::liveness::Liveness
//! [`Liveness::within_lease`]: crate::liveness::Liveness::within_lease

use std::sync::atomic::{AtomicU64, Ordering};
use tokio::time::Instant;

/// A deadline on the monotonic clock (tokio's [`Instant`], the clock [`Liveness`] computes its
/// fence deadline on), readable without a lock: the nanoseconds from a base instant taken at
/// creation, `0` meaning "none" (fenced).
///
/// # Examples
///
/// ```
/// use relay_cluster::deadline::FenceDeadline;
/// use std::time::Duration;
/// use tokio::time::Instant;
///
/// let deadline = FenceDeadline::new();
/// assert!(!deadline.is_ahead(), "none yet: fenced");
/// deadline.set(Some(Instant::now() + Duration::from_secs(60)));
/// assert!(deadline.is_ahead());
/// deadline.set(Some(Instant::now()));
/// std::thread::sleep(Duration::from_millis(1));
/// assert!(!deadline.is_ahead(), "reached");
/// deadline.set(None);
/// assert!(!deadline.is_ahead());
///
/// // A new lease is a new epoch: what was made under the old one stays fenced.
/// let old = deadline.epoch();
/// deadline.set(Some(Instant::now() + Duration::from_secs(60)));
/// assert_eq!(deadline.epoch(), old);
/// assert!(deadline.is_ahead_since(old));
/// deadline.set(None);
/// deadline.set(Some(Instant::now() + Duration::from_secs(60)));
/// assert!(deadline.is_ahead() && !deadline.is_ahead_since(old));
/// assert!(deadline.is_ahead_since(deadline.epoch()));
/// ```
///
/// [`Liveness`]: crate::liveness::Liveness
#[derive(Debug)]
pub struct FenceDeadline {
    base: Instant,
    /// Nanoseconds after `base`, at least 1; 0: none.
    nanos: AtomicU64,
    /// How many times a deadline was taken away (set to none): the lease's epoch.
    fences: AtomicU64,
}

impl Default for FenceDeadline {
    fn default() -> Self {
        Self::new()
    }
}

impl FenceDeadline {
    /// No deadline (fenced) yet.
    pub fn new() -> Self {
        FenceDeadline {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
            fences: AtomicU64::new(0),
        }
    }

    /// Sets the deadline (`None`: fenced; taking a deadline away starts a new
    /// [`epoch`](Self::epoch)). Callers serialize their calls (one writer at a time).
    pub fn set(&self, deadline: Option<Instant>) {
        let nanos = deadline.map_or(0, |deadline| {
            let after = deadline.saturating_duration_since(self.base).as_nanos();
            u64::try_from(after).unwrap_or(u64::MAX).max(1)
        });
        if nanos == 0 && self.nanos.load(Ordering::Acquire) != 0 {
            // Before the deadline goes: a reader that sees any later deadline sees this too.
            self.fences.fetch_add(1, Ordering::AcqRel);
        }
        self.nanos.store(nanos, Ordering::Release);
    }

    /// The lease's epoch: how many times a deadline was taken away so far. Whatever was made
    /// under one epoch (a connection, a link) must not deliver in a later one, even once a new
    /// lease is held: see [`is_ahead_since`](Self::is_ahead_since).
    pub fn epoch(&self) -> u64 {
        self.fences.load(Ordering::Acquire)
    }

    /// Whether the deadline is ahead ([`is_ahead`](Self::is_ahead)) *and* still the one of
    /// `epoch`: no fence came in between, even one already followed by a new lease.
    #[inline]
    pub fn is_ahead_since(&self, epoch: u64) -> bool {
        // The deadline first: a new deadline's store comes after its epoch's increment.
        let ahead = self.is_ahead();
        ahead && self.fences.load(Ordering::Acquire) == epoch
    }

    /// Whether there is a deadline and the monotonic clock has not reached it.
    #[inline]
    pub fn is_ahead(&self) -> bool {
        let deadline = self.nanos.load(Ordering::Acquire);
        // A 64-bit count of nanoseconds lasts 584 years: the conversion never saturates.
        let now = u64::try_from(self.base.elapsed().as_nanos()).unwrap_or(u64::MAX);
        deadline != 0 && now < deadline
    }
}
