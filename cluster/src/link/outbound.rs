//! The two halves of a link an end holds: [`Accepting`] (an owner's accepted register request,
//! until activated) and [`Outbound`] (one direction: frames, credit, the end).

use super::inbound::Inbound;
use super::request::RequestError;
use super::settings::FRAME_OVERHEAD;
use super::shared::Shared;
use super::state::LinkState;
use crate::instance::Owner;
use crate::wire::{self, LinkId, LinkMessage};
use relay_protocol::SendError;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

/// An accepted register request, before the registration is made ([`Link::accept`](super::Link::accept)).
pub struct Accepting {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Arc<LinkState>,
}

impl Accepting {
    /// This end's id for the link: what [`Reply::Registered`](crate::wire::Reply::Registered) must carry.
    pub fn id(&self) -> LinkId {
        self.state.id
    }

    /// Starts delivering up messages to `sink` (unless the down direction was already ended:
    /// then there is nothing to deliver).
    ///
    /// # Errors
    ///
    /// [`RequestError::TimedOut`] if the asker already gave up on this registration (its
    /// `Abandoned` arrived first): undo the registration and do not reply.
    pub fn activate(self, sink: Arc<dyn Inbound>) -> Result<(), RequestError> {
        let key = (
            self.state.peer.instance.clone(),
            *self.state.remote.get().expect("set at accept"),
        );
        {
            // Lock order: `abandoned`, then `links` (as in `Shared::abandoned`).
            let mut abandoned = self.shared.abandoned.lock();
            if abandoned.set.remove(&key) {
                self.state.over.store(true, Ordering::Release);
                return Err(RequestError::TimedOut);
            }
            self.state.set_sink(sink);
            if self.state.over.load(Ordering::Acquire) {
                drop(self.state.take_sink());
                // Ended before it began (the registry evicted the phone already; its close is
                // on its way to the asker): nothing will arrive for it.
                return Ok(());
            }
            self.shared
                .links
                .lock()
                .insert(self.state.id, self.state.clone());
        }
        Ok(())
    }
}

/// One direction of a link, from this end: frames, then at most one end. Not `Clone`: its
/// owner is the one sender of the direction.
///
/// Dropping it without [`end`](Self::end) loses the link (the other end is told) — except an
/// owner's outbound from [`Link::accept`](super::Link::accept) that was never activated (a refused registration),
/// which ends silently: the asker learns the refusal from the reply.
pub struct Outbound {
    pub(super) shared: Arc<Shared>,
    pub(super) state: Arc<LinkState>,
}

impl Outbound {
    /// Enqueues `frame` as the next message of this direction. Never blocks.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the link is ended or lost; [`SendError::Full`] when the link
    /// has more than its bound queued (the frame is not sent, and nothing is numbered for it).
    pub fn try_frame(&self, frame: &[u8]) -> Result<(), SendError> {
        let cost = frame.len() + FRAME_OVERHEAD;
        let mut send = self.state.send.lock();
        if send.ended || self.state.over.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if !self.state.fits(cost, self.shared.settings.outbox_bytes) {
            return Err(SendError::Full);
        }
        self.state
            .sent_cost
            .fetch_add(cost as u64, Ordering::AcqRel);
        let remote = *self
            .state
            .remote
            .get()
            .expect("an outbound knows its remote id");
        let message = LinkMessage::Frame {
            link: remote,
            seq: send.next,
        };
        send.next += 1;
        self.state.queued.fetch_add(cost, Ordering::AcqRel);
        let body = wire::encode_link(&message, frame);
        self.shared.enqueue(
            self.state.subject.clone(),
            body,
            Some((self.state.clone(), cost)),
        );
        Ok(())
    }

    /// Ready once a frame of `len` bytes may be sent ([`try_frame`](Self::try_frame) would not
    /// refuse it as full), or once the link is over; otherwise the task is woken when that may
    /// have changed. One task at a time may poll (the phone's own).
    pub fn poll_space(&self, len: usize, cx: &mut Context<'_>) -> Poll<()> {
        self.state.space_waker.register(cx.waker());
        let over = self.state.over.load(Ordering::Acquire) || self.state.send.lock().ended;
        if over
            || self
                .state
                .fits(len + FRAME_OVERHEAD, self.shared.settings.outbox_bytes)
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Tells the other end that `frame`, one it sent on this link, was handed on (the owner
    /// calls it once the binary's outbox took the frame), giving back its window credit.
    /// Reported in batches of a quarter window. Never blocks.
    pub fn grant(&self, frame: &[u8]) {
        let cost = (frame.len() + FRAME_OVERHEAD) as u64;
        let batch = (self.shared.settings.window as u64 / 4).max(1);
        let report = {
            let mut granted = self.state.granted.lock();
            granted.0 += cost;
            (granted.0 - granted.1 >= batch).then(|| {
                granted.1 = granted.0;
                granted.0
            })
        };
        let (Some(consumed), Some(&remote)) = (report, self.state.remote.get()) else {
            return;
        };
        if self.state.over.load(Ordering::Acquire) {
            return;
        }
        let message = LinkMessage::Credit {
            link: remote,
            consumed,
        };
        self.shared.enqueue(
            self.state.subject.clone(),
            wire::encode_link(&message, b""),
            None,
        );
    }

    /// Sends `frame`, waiting while the link's queue is over its bound (backpressure).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the link is ended or lost.
    pub async fn frame(&self, frame: &[u8]) -> Result<(), SendError> {
        loop {
            let space = self.state.space.notified();
            match self.try_frame(frame) {
                Err(SendError::Full) => space.await,
                other => return other,
            }
        }
    }

    /// Ends this direction with `code` and `reason`, after every frame already enqueued. The
    /// link is over at this end. Idempotent.
    pub fn end(&self, code: u16, reason: &str) {
        let mut send = self.state.send.lock();
        if send.ended || self.state.over.swap(true, Ordering::AcqRel) {
            send.ended = true;
            return;
        }
        send.ended = true;
        let message = LinkMessage::End {
            link: *self
                .state
                .remote
                .get()
                .expect("an outbound knows its remote id"),
            seq: send.next,
            code,
            reason,
        };
        send.next += 1;
        self.shared.enqueue(
            self.state.subject.clone(),
            wire::encode_link(&message, b""),
            None,
        );
        drop(send);
        self.shared.links.lock().remove(&self.state.id);
        self.state.wake_senders();
        // Over at this end: nothing will reach the sink any more.
        drop(self.state.take_sink());
    }

    /// Whether the link is still open at this end.
    pub fn is_open(&self) -> bool {
        !self.state.over.load(Ordering::Acquire)
    }

    /// The instance at the other end.
    pub fn peer(&self) -> &Owner {
        &self.state.peer
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let mut send = self.state.send.lock();
        if send.ended {
            return;
        }
        if !self.state.activated.load(Ordering::Acquire) {
            // An owner's outbound whose registration was refused and never activated: the
            // asker learns the refusal from the reply, so the link ends without a word.
            send.ended = true;
            self.state.over.store(true, Ordering::Release);
            return;
        }
        drop(send);
        self.shared.lose(&self.state, true);
    }
}
