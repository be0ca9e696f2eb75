//! One link's state as both its ends at this instance see it (numbers, queue, credit window,
//! sink), and the memory of abandoned registrations: plain state, no NATS.

use super::inbound::Inbound;
use crate::instance::{InstanceId, Owner};
use crate::wire::{self, LinkId};
use async_nats::Subject;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::Notify;

/// One link, as both its ends at this instance see it.
pub(super) struct LinkState {
    pub(super) id: LinkId,
    pub(super) peer: Owner,
    /// This instance's lease epoch when the link was made: its frames are not published in a
    /// later one ([`Liveness::within_lease_since`](crate::liveness::Liveness::within_lease_since)).
    pub(super) epoch: u64,
    /// The peer's id for the link, once known.
    pub(super) remote: OnceLock<LinkId>,
    pub(super) subject: Subject,
    /// Taken (dropped) once the link is over at this end: a sink may own what owns this
    /// state (the owner's sink owns the registry ticket of the remote phone whose `Conn` owns
    /// the outbound), so keeping it would be a reference cycle.
    pub(super) sink: Mutex<Option<Arc<dyn Inbound>>>,
    /// A sink was given (an owner's outbound without one was never activated).
    pub(super) activated: AtomicBool,
    /// Next expected number of the receiving direction.
    pub(super) recv_next: AtomicU64,
    pub(super) send: Mutex<SendState>,
    pub(super) queued: AtomicUsize,
    pub(super) space: Notify,
    /// The one task that polls for space
    /// ([`Outbound::poll_space`](super::outbound::Outbound::poll_space)).
    pub(super) space_waker: AtomicWaker,
    /// The credit window of the sending direction (at a phone's instance), if any.
    pub(super) window: Option<u64>,
    /// Cost of the frames sent in this direction so far.
    pub(super) sent_cost: AtomicU64,
    /// Cost of those the peer reported handed on.
    pub(super) acked_cost: AtomicU64,
    /// Receiving direction: cost handed on so far, and the part of it already reported.
    pub(super) granted: Mutex<(u64, u64)>,
    /// Torn down (ended, lost): nothing more is sent or delivered.
    pub(super) over: AtomicBool,
}

impl LinkState {
    /// A new link `id` to `peer`, nothing sent or received yet; `window` is the credit window
    /// of its sending direction, if it has one (at a phone's instance).
    pub(super) fn new(id: LinkId, peer: Owner, window: Option<u64>) -> LinkState {
        let subject = Subject::from(wire::link_subject(peer.instance.as_str()));
        LinkState {
            epoch: 0,
            id,
            peer,
            remote: OnceLock::new(),
            subject,
            sink: Mutex::new(None),
            activated: AtomicBool::new(false),
            recv_next: AtomicU64::new(1),
            send: Mutex::new(SendState {
                next: 1,
                ended: false,
            }),
            queued: AtomicUsize::new(0),
            space: Notify::new(),
            space_waker: AtomicWaker::new(),
            window,
            sent_cost: AtomicU64::new(0),
            acked_cost: AtomicU64::new(0),
            granted: Mutex::new((0, 0)),
            over: AtomicBool::new(false),
        }
    }

    pub(super) fn sink(&self) -> Option<Arc<dyn Inbound>> {
        self.sink.lock().clone()
    }

    pub(super) fn set_sink(&self, sink: Arc<dyn Inbound>) {
        *self.sink.lock() = Some(sink);
        self.activated.store(true, Ordering::Release);
    }

    pub(super) fn take_sink(&self) -> Option<Arc<dyn Inbound>> {
        self.sink.lock().take()
    }

    /// Wakes whoever waits for room to send.
    pub(super) fn wake_senders(&self) {
        self.space.notify_waiters();
        self.space_waker.wake();
    }

    /// Whether a frame costing `cost` may be sent now (queue bound and credit window).
    pub(super) fn fits(&self, cost: usize, bound: usize) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + cost > bound {
            return false;
        }
        match self.window {
            Some(window) => {
                let sent = self.sent_cost.load(Ordering::Acquire);
                let acked = self.acked_cost.load(Ordering::Acquire);
                sent.saturating_sub(acked) < window
            }
            None => true,
        }
    }

    /// Whether `seq` is the next number of `state`'s receiving direction (then moves it on).
    pub(super) fn in_order(&self, seq: u64) -> bool {
        let expected = self.recv_next.load(Ordering::Acquire);
        if seq != expected {
            tracing::warn!(
                link = self.id,
                expected,
                got = seq,
                "cluster link gap: link lost"
            );
            return false;
        }
        self.recv_next.store(expected + 1, Ordering::Release);
        true
    }
}

/// The sending direction: the next number, and whether it ended.
pub(super) struct SendState {
    pub(super) next: u64,
    pub(super) ended: bool,
}

/// Register requests the asker gave up on before they were activated, `(asker, its id)`:
/// the last [`ABANDONED_MEMORY`] of them.
#[derive(Default)]
pub(super) struct Abandoned {
    pub(super) set: HashSet<(InstanceId, LinkId)>,
    pub(super) order: VecDeque<(InstanceId, LinkId)>,
}

/// How many abandoned registrations are remembered (oldest forgotten first).
pub(super) const ABANDONED_MEMORY: usize = 4096;

impl Abandoned {
    /// Remembers `key`, forgetting the oldest once more than [`ABANDONED_MEMORY`] are held.
    pub(super) fn remember(&mut self, key: (InstanceId, LinkId)) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
            if self.order.len() > ABANDONED_MEMORY {
                if let Some(old) = self.order.pop_front() {
                    self.set.remove(&old);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::instance::Incarnation;
    use bytes::Bytes;

    fn peer(name: &str) -> Owner {
        Owner {
            instance: InstanceId::new(name).unwrap(),
            incarnation: Incarnation(7),
        }
    }

    /// A sink that ignores everything (only its presence is checked).
    struct Ignore;

    impl Inbound for Ignore {
        fn frame(&self, _frame: Bytes) {}
        fn ended(&self, _code: u16, _reason: &str) {}
        fn lost(&self) {}
    }

    #[test]
    fn a_new_link_addresses_its_peers_link_subject_and_expects_number_one() {
        let state = LinkState::new(3, peer("relay-b"), None);
        assert_eq!(state.id, 3);
        assert_eq!(state.subject.as_str(), wire::link_subject("relay-b"));
        assert!(state.remote.get().is_none());
        assert!(!state.over.load(Ordering::Acquire));
        let send = state.send.lock();
        assert_eq!((send.next, send.ended), (1, false));
    }

    #[test]
    fn numbers_are_accepted_only_in_order_and_a_gap_does_not_move_the_next_one() {
        let state = LinkState::new(1, peer("relay-b"), None);
        assert!(state.in_order(1));
        assert!(state.in_order(2));
        assert!(!state.in_order(4), "a gap");
        assert!(!state.in_order(2), "a repeat");
        assert!(state.in_order(3), "the next number is still 3");
    }

    #[test]
    fn the_queue_bound_refuses_a_frame_only_once_something_is_queued() {
        let state = LinkState::new(1, peer("relay-b"), None);
        assert!(state.fits(1_000, 100), "an empty queue takes any one frame");
        state.queued.store(60, Ordering::Release);
        assert!(state.fits(40, 100), "60 + 40 is within the bound");
        assert!(!state.fits(41, 100), "60 + 41 is over it");
        state.queued.store(0, Ordering::Release);
        assert!(state.fits(41, 100));
    }

    #[test]
    fn the_credit_window_refuses_once_the_unacknowledged_cost_reaches_it() {
        let state = LinkState::new(1, peer("relay-b"), Some(1_000));
        state.sent_cost.store(999, Ordering::Release);
        assert!(state.fits(10, usize::MAX), "999 unacknowledged < 1,000");
        state.sent_cost.store(1_000, Ordering::Release);
        assert!(!state.fits(10, usize::MAX), "the window is used up");
        state.acked_cost.store(1, Ordering::Release);
        assert!(state.fits(10, usize::MAX), "credit came back");
    }

    #[test]
    fn a_link_without_a_window_is_bounded_by_its_queue_alone() {
        let state = LinkState::new(1, peer("relay-b"), None);
        state.sent_cost.store(u64::MAX, Ordering::Release);
        assert!(state.fits(10, 100));
    }

    #[test]
    fn a_sink_set_marks_the_link_activated_and_taking_it_leaves_none() {
        let state = LinkState::new(1, peer("relay-b"), None);
        assert!(state.sink().is_none());
        state.set_sink(Arc::new(Ignore));
        assert!(state.activated.load(Ordering::Acquire));
        assert!(state.sink().is_some());
        assert!(state.take_sink().is_some());
        assert!(state.sink().is_none());
        assert!(state.take_sink().is_none());
    }

    #[test]
    fn abandoned_registrations_are_remembered_once_and_the_oldest_forgotten_past_the_memory() {
        let mut abandoned = Abandoned::default();
        let key = |n: u64| (InstanceId::new("relay-a").unwrap(), n);
        abandoned.remember(key(0));
        abandoned.remember(key(0));
        assert_eq!(abandoned.order.len(), 1, "a repeat is not stored twice");
        for n in 1..=ABANDONED_MEMORY as u64 {
            abandoned.remember(key(n));
        }
        assert_eq!(abandoned.set.len(), ABANDONED_MEMORY);
        assert_eq!(abandoned.order.len(), ABANDONED_MEMORY);
        assert!(!abandoned.set.contains(&key(0)), "the oldest is forgotten");
        assert!(abandoned.set.contains(&key(1)));
        assert!(abandoned.set.contains(&key(ABANDONED_MEMORY as u64)));
    }
}
