//! The grace windows' deadlines, earliest first, with lazy removal of cancelled windows.

use crate::keys::ServerKey;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Instant;

/// One armed grace window: it is still open iff the slot at `key` still has `epoch` and is gracing
/// with this `deadline` (a reclaim or takeover changes the epoch, an expiry removes the slot).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Window {
    pub(crate) deadline: Instant,
    pub(crate) key: ServerKey,
    pub(crate) epoch: u64,
}

/// A min-heap of windows. Cancelled windows are not searched for and removed (that would be O(n));
/// they stay until they reach the top, where the registry's state discards them, or until the heap
/// holds more dead entries than live ones, when it is compacted (amortised O(1)). (Storage: it
/// knows nothing of the state that owns it.)
#[derive(Default)]
pub(crate) struct Deadlines {
    heap: BinaryHeap<Reverse<Window>>,
}

impl Deadlines {
    /// Arms `window`; returns whether it is now the earliest entry (a sleeping reaper must wake).
    pub(crate) fn push(&mut self, window: Window) -> bool {
        let earliest = self.peek().is_none_or(|top| window.deadline < top.deadline);
        self.heap.push(Reverse(window));
        earliest
    }

    pub(crate) fn peek(&self) -> Option<Window> {
        self.heap.peek().map(|Reverse(w)| *w)
    }

    pub(crate) fn pop(&mut self) -> Option<Window> {
        self.heap.pop().map(|Reverse(w)| w)
    }

    /// How many windows the heap holds, cancelled ones included.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.heap.len()
    }

    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Window> {
        self.heap.iter().map(|Reverse(w)| w)
    }

    /// Drops every entry for which `open` is false, if dead entries outnumber `open_windows`
    /// (and a small constant), keeping the heap within twice the open windows.
    pub(crate) fn compact_if_sparse(
        &mut self,
        open_windows: usize,
        open: impl Fn(&Window) -> bool,
    ) {
        if self.heap.len() > 2 * open_windows + 32 {
            self.heap.retain(|Reverse(w)| open(w));
        }
    }
}
