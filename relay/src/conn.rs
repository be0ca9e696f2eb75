//! `WsConn`: the registry's `Conn` for one WebSocket, a small adapter around its outbox.
//!
//! Everything sent to a connection goes through its outbox, which its writer task drains. Pushing
//! never blocks: a phone whose outbox is over its byte bound is closed `1011 phone backlog full`;
//! a binary's full outbox refuses the frame, and the sending phone waits for
//! [`wait_for_space`](WsConn::wait_for_space) (backpressure onto that phone's socket, never onto
//! the binary's read loop). `close(reason)` queues a WebSocket close frame with `reason.code()`
//! and `reason.reason()`.

use super::config::FRAME_OVERHEAD;
use super::ids::Side;
use parking_lot::Mutex;
use relay_registry::{CloseReason, Conn, SendError};
use std::collections::VecDeque;
use tokio::sync::{Notify, watch};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// Who ended a connection; decides whether a phone's binary is told it left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// The peer sent a close frame or dropped.
    Peer,
    /// The relay enforced a rule (bad frame, heartbeat, backlog, slow-loris, refusal).
    Relay,
    /// The binary asked for it with a close directive.
    Binary,
    /// The registry evicted the phone (release, reclaim, takeover, expiry).
    Registry,
    /// The relay is shutting down.
    Shutdown,
}

/// How a connection ended (or is ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ending {
    /// The close code: the one sent, the one received, or 1001 for an abrupt drop.
    pub code: u16,
    /// The close reason text sent (empty when none was sent).
    pub reason: &'static str,
    /// Who ended it.
    pub origin: Origin,
    /// Whether a close frame must still be written by the writer.
    pub send_frame: bool,
}

/// What the writer should do next.
pub enum Work {
    /// Write these messages (control first), then ask again.
    Frames(Vec<Outgoing>),
    /// Write a close frame, then stop.
    Close(u16, &'static str),
    /// Stop: nothing more is to be written.
    Stop,
}

/// One queued outgoing message.
pub enum Outgoing {
    /// A text frame.
    Text(Utf8Bytes),
    /// A ping (heartbeat or probe).
    Ping,
}

#[derive(Default)]
struct Outbox {
    queue: VecDeque<Utf8Bytes>,
    /// Bytes queued, each frame counted as its length + [`FRAME_OVERHEAD`].
    bytes: usize,
    ping: bool,
    ending: Option<Ending>,
    /// The writer has taken the close (or stop); nothing more will be written.
    finished: bool,
}

/// A WebSocket connection as the registry and the relay's tasks see it.
pub struct WsConn {
    id: String,
    side: Side,
    limit: usize,
    outbox: Mutex<Outbox>,
    /// Wakes the writer task.
    writer: Notify,
    /// Wakes the connection's own task when the connection starts closing.
    closing: Notify,
    /// Wakes phones waiting for space in this (binary's) outbox.
    space: Notify,
    /// Pongs received so far; a probe waits for this to move.
    pongs: watch::Sender<u64>,
}

impl WsConn {
    /// A connection with conn-id `id` whose outbox holds at most `limit` bytes.
    pub fn new(id: String, side: Side, limit: usize) -> Self {
        WsConn {
            id,
            side,
            limit,
            outbox: Mutex::new(Outbox::default()),
            writer: Notify::new(),
            closing: Notify::new(),
            space: Notify::new(),
            pongs: watch::Sender::new(0),
        }
    }

    /// Queues a text frame. A phone over its bound is closed `1011 phone backlog full`; a binary
    /// over its bound keeps its queue and refuses the frame with [`SendError::Full`].
    pub fn push_text(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        let cost = frame.len() + FRAME_OVERHEAD;
        let mut outbox = self.outbox.lock();
        if outbox.ending.is_some() {
            return Err(SendError::Closed);
        }
        if outbox.bytes + cost <= self.limit || outbox.queue.is_empty() {
            outbox.bytes += cost;
            outbox.queue.push_back(frame);
            drop(outbox);
            self.writer.notify_one();
            return Ok(());
        }
        drop(outbox);
        if self.side == Side::Phone {
            tracing::warn!(conn_id = %self.id, "phone backlog full");
            self.close_as(CloseReason::BacklogFull, Origin::Relay);
        }
        Err(SendError::Full)
    }

    /// Waits until this outbox has room for a frame of `len` bytes (or is closing). Register
    /// before checking, so a drain between the check and the wait is not missed.
    pub async fn wait_for_space(&self, len: usize) {
        loop {
            let notified = self.space.notified();
            {
                let outbox = self.outbox.lock();
                let fits =
                    outbox.bytes + len + FRAME_OVERHEAD <= self.limit || outbox.queue.is_empty();
                if fits || outbox.ending.is_some() {
                    return;
                }
            }
            notified.await;
        }
    }

    /// Queues a ping ahead of the data; false if the connection is closing.
    pub fn push_ping(&self) -> bool {
        {
            let mut outbox = self.outbox.lock();
            if outbox.ending.is_some() {
                return false;
            }
            outbox.ping = true;
        }
        self.writer.notify_one();
        true
    }

    /// Starts closing with `reason`, attributed to `origin`. The first close wins. Queued frames
    /// are still written before the close frame, except on a backlog overflow (they are dropped).
    pub fn close_as(&self, reason: CloseReason, origin: Origin) {
        let ending = Ending {
            code: reason.code(),
            reason: reason.reason(),
            origin,
            send_frame: true,
        };
        self.end(ending, reason == CloseReason::BacklogFull);
    }

    /// Records that the peer ended the connection (its close frame, or an abrupt drop): nothing
    /// more is written and no close frame is sent (tungstenite answers a close frame itself).
    pub fn peer_ended(&self, code: u16) {
        let ending = Ending {
            code,
            reason: "",
            origin: Origin::Peer,
            send_frame: false,
        };
        self.end(ending, true);
    }

    /// Records `ending` (the first one wins); `discard` drops the frames still queued.
    fn end(&self, ending: Ending, discard: bool) {
        {
            let mut outbox = self.outbox.lock();
            if outbox.ending.is_some() {
                return;
            }
            if discard {
                outbox.queue.clear();
                outbox.bytes = 0;
            }
            outbox.ending = Some(ending);
        }
        self.writer.notify_one();
        self.closing.notify_one();
        self.space.notify_waiters();
    }

    /// How the connection ended, once it started closing.
    pub fn ending(&self) -> Option<Ending> {
        self.outbox.lock().ending
    }

    /// Resolves once the connection starts closing (for its own task; single waiter).
    pub async fn closed(&self) {
        loop {
            let notified = self.closing.notified();
            if self.ending().is_some() {
                return;
            }
            notified.await;
        }
    }

    /// The writer's next batch: pending ping and queued frames, then the close, then stop.
    pub async fn next_work(&self) -> Work {
        loop {
            let notified = self.writer.notified();
            let work = {
                let mut outbox = self.outbox.lock();
                if outbox.finished {
                    Some(Work::Stop)
                } else if outbox.ping || !outbox.queue.is_empty() {
                    let mut batch = Vec::with_capacity(outbox.queue.len() + 1);
                    if std::mem::take(&mut outbox.ping) && outbox.ending.is_none() {
                        batch.push(Outgoing::Ping);
                    }
                    batch.extend(outbox.queue.drain(..).map(Outgoing::Text));
                    outbox.bytes = 0;
                    Some(Work::Frames(batch))
                } else if let Some(ending) = outbox.ending {
                    outbox.finished = true;
                    Some(if ending.send_frame {
                        Work::Close(ending.code, ending.reason)
                    } else {
                        Work::Stop
                    })
                } else {
                    None
                }
            };
            if let Some(work) = work {
                if matches!(work, Work::Frames(_)) {
                    self.space.notify_waiters();
                }
                return work;
            }
            notified.await;
        }
    }

    /// Records a pong from the peer (wakes probes).
    pub fn pong_received(&self) {
        self.pongs.send_modify(|n| *n += 1);
    }

    /// Pings the peer and waits up to `timeout` for any pong; false if none came (or the
    /// connection is closing).
    pub async fn probe(&self, timeout: std::time::Duration) -> bool {
        let mut pongs = self.pongs.subscribe();
        let seen = *pongs.borrow_and_update();
        if !self.push_ping() {
            return false;
        }
        matches!(
            tokio::time::timeout(timeout, pongs.wait_for(|n| *n > seen)).await,
            Ok(Ok(_))
        )
    }
}

impl Conn for WsConn {
    fn conn_id(&self) -> &str {
        &self.id
    }

    /// Relay frames are UTF-8 JSON in text frames, already validated: the frame is queued as it
    /// is, without a copy.
    type Frame = Utf8Bytes;

    fn send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        self.push_text(frame)
    }

    /// Called by the registry when it evicts a phone.
    fn close(&self, reason: CloseReason) {
        tracing::info!(conn_id = %self.id, code = reason.code(), reason = reason.reason(), "phone evicted");
        self.close_as(reason, Origin::Registry);
    }
}
