//! `LocalConn`: a WebSocket connection of this relay as the registry and the other connections
//! see it — an id, an [`Outbox`] behind a short lock, and the pong counter a probe waits on.
//!
//! Pushing never blocks: a phone whose outbox is over its byte bound is closed
//! `1011 phone backlog full`; a binary's full outbox refuses the frame, and the sending phone
//! waits for [`poll_space`](LocalConn::poll_space) (backpressure onto that phone's socket, never
//! onto the binary's read loop). The connection's own task (see [`session`](crate::conn::session))
//! drains the outbox; nothing here touches the socket.

use crate::conn::outbox::{Ending, Origin, Outbox, Refused, Wakeups, Work};
use crate::protocol::conn_ids::Side;
use parking_lot::Mutex;
use relay_protocol::{CloseReason, SendError};
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A local WebSocket connection (see the module docs).
#[derive(Debug)]
pub(crate) struct LocalConn {
    id: String,
    side: Side,
    limit: usize,
    outbox: Mutex<Outbox>,
    /// Pongs received so far; a probe waits for this to move.
    pongs: AtomicU64,
    pong: Notify,
    /// Cluster mode: the lease epoch it was admitted under; it delivers nothing in a later one
    /// (`Hub::may_deliver`). 0 on a single instance.
    epoch: u64,
}

impl LocalConn {
    /// A connection with conn-id `id` whose outbox holds at most `limit` bytes, admitted under
    /// the lease epoch `epoch` (cluster mode; 0 on a single instance).
    pub(crate) fn new(id: String, side: Side, limit: usize, epoch: u64) -> Self {
        LocalConn {
            id,
            side,
            limit,
            outbox: Mutex::new(Outbox::default()),
            pongs: AtomicU64::new(0),
            pong: Notify::new(),
            epoch,
        }
    }

    /// The lease epoch it was admitted under (cluster mode).
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The relay-assigned conn-id.
    pub(crate) fn id(&self) -> &str {
        &self.id
    }

    /// Binary or phone.
    pub(crate) fn side(&self) -> Side {
        self.side
    }

    /// Queues a text frame. A phone over its bound is closed `1011 phone backlog full`; a binary
    /// over its bound keeps its queue and refuses the frame with [`SendError::Full`].
    pub(crate) fn send_text(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        let pushed = self.outbox.lock().push(frame, self.limit);
        match pushed {
            Ok(wakeups) => {
                wakeups.wake();
                Ok(())
            }
            Err(Refused::Closed) => Err(SendError::Closed),
            Err(Refused::Full) => {
                if self.side == Side::Phone {
                    self.close_as(CloseReason::BacklogFull, Origin::Relay);
                }
                Err(SendError::Full)
            }
        }
    }

    /// Whether a frame of `len` bytes would fit in this (binary's) outbox now, or the connection
    /// is closing; otherwise the calling task is woken once there may be room.
    pub(crate) fn poll_space(&self, len: usize, cx: &mut Context<'_>) -> Poll<()> {
        if self.outbox.lock().poll_space(len, self.limit, cx.waker()) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Queues a ping ahead of the data; false if the connection is closing.
    pub(crate) fn push_ping(&self) -> bool {
        let wakeups = self.outbox.lock().ping();
        wakeups.map(Wakeups::wake).is_some()
    }

    /// Starts closing with `reason`, attributed to `origin`. The first close wins. Queued frames
    /// are still written before the close frame, except on a backlog overflow and on a fence
    /// (`1012 cluster connection lost`: they were queued under a lease that has ended, and must
    /// not reach anyone after it): then they are dropped.
    pub(crate) fn close_as(&self, reason: CloseReason, origin: Origin) {
        let ending = Ending {
            code: reason.code(),
            reason: reason.reason(),
            origin,
            send_frame: true,
        };
        let discard = matches!(
            reason,
            CloseReason::BacklogFull | CloseReason::ClusterConnectionLost
        );
        self.end(ending, discard);
    }

    /// Records that the peer ended the connection (its close frame, or an abrupt drop): nothing
    /// more is written and no close frame is sent (tungstenite answers a close frame itself).
    pub(crate) fn peer_ended(&self, code: u16) {
        let ending = Ending {
            code,
            reason: "",
            origin: Origin::Peer,
            send_frame: false,
        };
        self.end(ending, true);
    }

    fn end(&self, ending: Ending, discard: bool) {
        let wakeups = self.outbox.lock().end(ending, discard);
        if let Some(wakeups) = wakeups {
            wakeups.wake();
            // A probe of a closing connection gives up at once.
            self.pong.notify_waiters();
        }
    }

    /// How the connection ended, once it started closing.
    pub(crate) fn ending(&self) -> Option<Ending> {
        self.outbox.lock().ending()
    }

    /// The next work for the connection's own task (registers its waker when there is none).
    pub(crate) fn poll_work(&self, cx: &mut Context<'_>) -> Poll<Work> {
        let (work, wakeups) = self.outbox.lock().take_work(cx.waker());
        wakeups.wake();
        match work {
            Some(work) => Poll::Ready(work),
            None => Poll::Pending,
        }
    }

    /// Wakes the connection's own task on the next frame, ping or ending, while it is busy
    /// writing and not asking for work.
    pub(crate) fn watch(&self, cx: &mut Context<'_>) {
        self.outbox.lock().watch(cx.waker());
    }

    /// Records a pong from the peer (wakes probes).
    pub(crate) fn pong_received(&self) {
        self.pongs.fetch_add(1, Ordering::AcqRel);
        self.pong.notify_waiters();
    }

    /// Pings the peer and waits up to `timeout` for any pong; false if none came (or the
    /// connection is closing).
    pub(crate) async fn probe(&self, timeout: Duration) -> bool {
        let answered = async {
            let seen = self.pongs.load(Ordering::Acquire);
            let mut pinged = false;
            loop {
                let notified = self.pong.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.pongs.load(Ordering::Acquire) != seen {
                    return true;
                }
                if !pinged {
                    if !self.push_ping() {
                        return false;
                    }
                    pinged = true;
                } else if self.ending().is_some() {
                    return false;
                }
                notified.await;
            }
        };
        tokio::time::timeout(timeout, answered)
            .await
            .unwrap_or(false)
    }
}
