//! The registry's population, as one consistent reading.

/// How many binaries and phones a registry holds, read in one critical section (so the three
/// numbers belong to one moment) in O(1).
///
/// # Examples
///
/// ```
/// use relay_registry::Counts;
///
/// let c = Counts::default();
/// assert_eq!((c.binaries, c.gracing, c.phones), (0, 0, 0));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Counts {
    /// Binaries holding a server-id and still connected (not in a grace window).
    pub binaries: usize,
    /// Binaries whose server-id is in a grace window (released with
    /// [`release_after`](crate::ServerClaim::release_after), not yet reclaimed or expired).
    pub gracing: usize,
    /// Registered phones, under live and gracing binaries alike.
    pub phones: usize,
}
