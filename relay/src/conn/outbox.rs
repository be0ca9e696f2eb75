//! `Outbox`: what a local WebSocket connection still has to write — queued text frames (bounded
//! in bytes), a pending ping, and how the connection ends — and the wakers of whoever waits on it.
//!
//! It is plain state behind the [`LocalConn`](crate::conn::local::LocalConn)'s mutex; the connection's
//! single task drains it ([`Outbox::take_work`]). It allocates only while it holds frames: an
//! empty queue has no buffer, and a drained batch leaves with its buffer.

use crate::config::FRAME_OVERHEAD;
use std::collections::VecDeque;
use std::task::Waker;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Who ended a connection; decides whether a phone's binary is told it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The peer sent a close frame or dropped.
    Peer,
    /// The relay enforced a rule on this connection (bad frame, heartbeat, backlog, slow-loris,
    /// a bound, a refusal).
    Relay,
    /// Someone asked for it through `Endpoint::close`: the registry evicting a phone (through
    /// [`Conn::close`](relay_registry::Conn::close)), the binary's close directive, or shutdown.
    Requested,
}

/// How a connection ended (or is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ending {
    /// The close code: the one sent, the one received, or 1001 for an abrupt drop.
    pub code: u16,
    /// The close reason text sent (empty when none was sent).
    pub reason: &'static str,
    /// Who ended it.
    pub origin: Origin,
    /// Whether a close frame must still be written.
    pub send_frame: bool,
}

/// What the connection's task should write next.
#[derive(Debug)]
pub(crate) enum Work {
    /// A ping first (if `ping`), then these frames, in order.
    Frames {
        /// Whether a ping goes first.
        ping: bool,
        /// The text frames, oldest first.
        frames: VecDeque<Utf8Bytes>,
    },
    /// Write a close frame with this code and reason; nothing more is written after it.
    Close(u16, &'static str),
    /// Nothing more will ever be written (the peer ended the connection).
    Stop,
}

/// Why [`Outbox::push`] refused a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refused {
    /// The connection is closing.
    Closed,
    /// The frame does not fit within the byte bound.
    Full,
}

/// The queued state of one connection. See the module docs.
#[derive(Debug, Default)]
pub(crate) struct Outbox {
    queue: VecDeque<Utf8Bytes>,
    /// Bytes queued, each frame counted as its length + [`FRAME_OVERHEAD`].
    bytes: usize,
    ping: bool,
    ending: Option<Ending>,
    /// The task has taken the close (or stop); nothing more will be written.
    finished: bool,
    /// The connection's own task, to wake when there is work.
    task: Option<Waker>,
    /// Tasks (phones) waiting for room in this outbox; allocated only while one waits.
    space: Vec<Waker>,
}

/// Wakers to wake once the outbox's lock is released (never wake under a lock).
#[derive(Debug, Default)]
#[must_use = "wake the wakers once the lock is released"]
pub(crate) struct Wakeups {
    task: Option<Waker>,
    space: Vec<Waker>,
}

impl Wakeups {
    /// Wakes everything collected.
    pub(crate) fn wake(self) {
        if let Some(task) = self.task {
            task.wake();
        }
        for waker in self.space {
            waker.wake();
        }
    }
}

impl Outbox {
    /// Whether a frame of `len` bytes fits within `limit` (an empty outbox takes any frame).
    fn fits(&self, len: usize, limit: usize) -> bool {
        self.queue.is_empty() || self.bytes + len + FRAME_OVERHEAD <= limit
    }

    /// Queues `frame` if it fits within `limit` bytes.
    pub(crate) fn push(&mut self, frame: Utf8Bytes, limit: usize) -> Result<Wakeups, Refused> {
        if self.ending.is_some() {
            return Err(Refused::Closed);
        }
        if !self.fits(frame.len(), limit) {
            return Err(Refused::Full);
        }
        self.bytes += frame.len() + FRAME_OVERHEAD;
        self.queue.push_back(frame);
        Ok(self.wake_task())
    }

    /// Asks for a ping ahead of the data; false if the connection is closing.
    pub(crate) fn ping(&mut self) -> Option<Wakeups> {
        if self.ending.is_some() {
            return None;
        }
        self.ping = true;
        Some(self.wake_task())
    }

    /// Records `ending` if the connection has none yet (the first one wins); `discard` drops the
    /// frames still queued. Returns `None` if it already had one.
    pub(crate) fn end(&mut self, ending: Ending, discard: bool) -> Option<Wakeups> {
        if self.ending.is_some() {
            return None;
        }
        if discard {
            self.queue = VecDeque::new();
            self.bytes = 0;
        }
        self.ending = Some(ending);
        let mut wakeups = self.wake_task();
        wakeups.space = std::mem::take(&mut self.space);
        Some(wakeups)
    }

    /// How the connection ended, once it started closing.
    pub(crate) fn ending(&self) -> Option<Ending> {
        self.ending
    }

    /// The next work for the connection's task, or `None` (with `waker` registered) if there is
    /// none yet. Taking frames frees their bytes and wakes the tasks waiting for room.
    pub(crate) fn take_work(&mut self, waker: &Waker) -> (Option<Work>, Wakeups) {
        if self.finished {
            return (Some(Work::Stop), Wakeups::default());
        }
        if self.ping || !self.queue.is_empty() {
            let ping = std::mem::take(&mut self.ping) && self.ending.is_none();
            let frames = std::mem::take(&mut self.queue);
            self.bytes = 0;
            let wakeups = Wakeups {
                task: None,
                space: std::mem::take(&mut self.space),
            };
            return (Some(Work::Frames { ping, frames }), wakeups);
        }
        if let Some(ending) = self.ending {
            self.finished = true;
            let work = if ending.send_frame {
                Work::Close(ending.code, ending.reason)
            } else {
                Work::Stop
            };
            return (Some(work), Wakeups::default());
        }
        register(&mut self.task, waker);
        (None, Wakeups::default())
    }

    /// Registers the connection's task to be woken by the next frame, ping or ending (while it
    /// is not taking work, e.g. because its socket is not writable).
    pub(crate) fn watch(&mut self, waker: &Waker) {
        register(&mut self.task, waker);
    }

    /// Whether a frame of `len` bytes fits now (or the connection is closing); if not, `waker`
    /// is woken once frames are taken or the connection ends.
    pub(crate) fn poll_space(&mut self, len: usize, limit: usize, waker: &Waker) -> bool {
        if self.ending.is_some() || self.fits(len, limit) {
            return true;
        }
        if !self.space.iter().any(|w| w.will_wake(waker)) {
            self.space.push(waker.clone());
        }
        false
    }

    fn wake_task(&mut self) -> Wakeups {
        Wakeups {
            task: self.task.take(),
            space: Vec::new(),
        }
    }
}

/// Stores `waker` in `slot` unless the one there already wakes the same task.
fn register(slot: &mut Option<Waker>, waker: &Waker) {
    match slot {
        Some(old) if old.will_wake(waker) => {}
        _ => *slot = Some(waker.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Waker;

    fn text(n: usize) -> Utf8Bytes {
        Utf8Bytes::from("x".repeat(n))
    }

    #[test]
    fn frames_are_bounded_by_bytes_plus_overhead_but_an_empty_outbox_takes_any_frame() {
        let mut outbox = Outbox::default();
        let limit = 2 * (100 + FRAME_OVERHEAD);
        assert!(outbox.push(text(1000), limit).is_ok(), "empty: any size");
        let waker = Waker::noop();
        let _ = outbox.take_work(waker);
        assert!(outbox.push(text(100), limit).is_ok());
        assert!(outbox.push(text(100), limit).is_ok());
        assert_eq!(outbox.push(text(1), limit).err(), Some(Refused::Full));
    }

    #[test]
    fn a_taken_batch_frees_its_bytes_and_leaves_no_buffer_behind() {
        let mut outbox = Outbox::default();
        outbox.push(text(10), 1 << 20).unwrap().wake();
        let (work, _) = outbox.take_work(Waker::noop());
        match work {
            Some(Work::Frames { ping, frames }) => {
                assert!(!ping);
                assert_eq!(frames.len(), 1);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(outbox.bytes, 0);
        assert_eq!(outbox.queue.capacity(), 0);
    }

    #[test]
    fn the_first_ending_wins_and_the_close_comes_after_the_queued_frames() {
        let mut outbox = Outbox::default();
        outbox.push(text(3), 1 << 20).unwrap().wake();
        let first = Ending {
            code: 4000,
            reason: "bye",
            origin: Origin::Requested,
            send_frame: true,
        };
        assert!(outbox.end(first, false).is_some());
        let later = Ending {
            code: 1001,
            ..first
        };
        assert!(outbox.end(later, false).is_none());
        assert_eq!(outbox.push(text(1), 1 << 20).err(), Some(Refused::Closed));
        assert!(matches!(
            outbox.take_work(Waker::noop()).0,
            Some(Work::Frames { .. })
        ));
        assert!(matches!(
            outbox.take_work(Waker::noop()).0,
            Some(Work::Close(4000, "bye"))
        ));
        assert!(matches!(
            outbox.take_work(Waker::noop()).0,
            Some(Work::Stop)
        ));
    }

    #[test]
    fn a_discarding_end_drops_the_queue() {
        let mut outbox = Outbox::default();
        outbox.push(text(3), 1 << 20).unwrap().wake();
        let ending = Ending {
            code: 1011,
            reason: "phone backlog full",
            origin: Origin::Relay,
            send_frame: true,
        };
        outbox.end(ending, true).unwrap().wake();
        assert!(matches!(
            outbox.take_work(Waker::noop()).0,
            Some(Work::Close(1011, _))
        ));
    }
}
