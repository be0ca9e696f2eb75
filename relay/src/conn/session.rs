//! `Session`: one WebSocket's life in **one task** — reading, writing its outbox, the heartbeat,
//! the slow-loris clock, the control-frame bound and the close handshake — shared by binaries and
//! phones. Its owner (the binary's or phone's task, see [`binary`](crate::roles::binary) and
//! [`phone`](crate::roles::phone)) asks it for the next frame and hands frames on.
//!
//! There is no reader/writer split and no writer task: [`Session::poll`] drives the socket's
//! read side, its write side and one timer together each time the task wakes, so an idle
//! connection costs one parked task, one timer entry and its small state (the WebSocket is boxed
//! so that the futures a `Session` moves through each hold a pointer, not its ~370 bytes; see
//! relay/README.md, "Memory per connection"). The outbox is drained
//! a batch at a time, flushed once per batch. Every per-connection buffer is bounded: the outbox by
//! bytes, tungstenite's write buffer by `max_write_buffer_size`, and the pongs it queues by the
//! control-frame bound (a peer over a bound is closed `1008 policy violation`).

use crate::conn::endpoint::Endpoint;
use crate::conn::local::LocalConn;
use crate::conn::message_timer::Tracked;
use crate::conn::outbox::{Ending, Origin, Work};
use crate::conn::read_ahead::ReadAhead;
use crate::hub::Hub;
use crate::metrics::Closed;
use futures_util::{Sink, Stream};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use relay_protocol::CloseReason;
use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use tokio::time::{Instant, Sleep, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, WebSocketConfig};
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

/// A relay-side WebSocket: tungstenite over the upgraded HTTP connection, watched for slow-loris,
/// its small reads served from one socket read ([`ReadAhead`]).
pub(crate) type Ws = WebSocketStream<Tracked<ReadAhead<TokioIo<Upgraded>>>>;

/// The WebSocket settings for a relay connection: frames and messages bounded by `max_frame`, a
/// small read buffer, frames of one batch gathered up to [`WRITE_BATCH`] bytes and written
/// together at the batch's flush (one write per batch, not per frame), and a bounded write
/// buffer for what the socket could not take yet.
pub(crate) fn ws_config(max_frame: usize) -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(max_frame))
        .max_frame_size(Some(max_frame))
        // The read step: an idle connection keeps only this much of its own (tungstenite
        // reserves a frame's whole payload when its header arrives, so a small step costs a
        // frame nothing). 4096 here measured 18.3 KiB per idle phone against 13.5 KiB with 256
        // (relay-loadgen --idle 10000, 2026-12-02).
        .read_buffer_size(256)
        .write_buffer_size(WRITE_BATCH)
        // One frame of the largest size (a phone's frame wrapped for its binary) plus the pongs
        // the control-frame bound lets through.
        .max_write_buffer_size(max_frame + 64 * 1024)
}

/// Bytes of queued frames gathered before tungstenite writes them out without waiting for the
/// batch's flush. Only a connection that was sent a batch grows its buffer this far.
pub(crate) const WRITE_BATCH: usize = 16 * 1024;

/// What the connection's owner is told next.
#[derive(Debug)]
pub(crate) enum Event {
    /// A data frame's text (binary frames are accepted if they are UTF-8).
    Frame(Utf8Bytes),
    /// The frame the owner waits to forward now fits the binary's outbox (or it is closing).
    Space,
    /// The connection is closing or closed; no more frames. Reported once.
    Ended(Ending),
}

/// What the owner waits for.
#[derive(Clone, Copy)]
pub(crate) enum Want<'a> {
    /// The next data frame from the peer.
    Frame,
    /// Room for `len` bytes in this binary's outbox; the peer is not read meanwhile
    /// (backpressure onto this connection's socket).
    Space(&'a LocalConn, usize),
    /// Until `ready` is ready (room elsewhere: a cluster link's credit); the peer is not read
    /// meanwhile, as for [`Want::Space`].
    Ready(&'a (dyn Fn(&mut Context<'_>) -> Poll<()> + Sync)),
}

/// A running WebSocket connection. See the module docs.
pub(crate) struct Session {
    hub: Arc<Hub>,
    conn: Arc<Endpoint>,
    /// Boxed: a `Session` is moved through several futures (the connection's run, its
    /// refusal, its close handshake) whose states each keep a slot for it for the connection's
    /// whole life; boxed, each slot is a pointer instead of tungstenite's ~370 bytes.
    ws: Box<Ws>,
    /// Frames taken from the outbox, not yet handed to the socket.
    batch: VecDeque<Utf8Bytes>,
    ping_due: bool,
    close_due: Option<(u16, &'static str)>,
    unflushed: bool,
    /// Nothing more will be written.
    writer_done: bool,
    /// The reader saw the end of the stream or an error: do not read again.
    rx_done: bool,
    ending_reported: bool,
    awaiting_pong: bool,
    /// Control frames received since the last heartbeat.
    control_frames: u32,
    next_heartbeat: Instant,
    timer: Pin<Box<Sleep>>,
}

impl Session {
    /// Starts driving `ws` for the local connection `conn`.
    pub(crate) fn new(hub: Arc<Hub>, conn: Arc<Endpoint>, ws: Ws) -> Session {
        let next_heartbeat = Instant::now() + hub.config.heartbeat;
        Session {
            hub,
            conn,
            ws: Box::new(ws),
            batch: VecDeque::new(),
            ping_due: false,
            close_due: None,
            unflushed: false,
            writer_done: false,
            rx_done: false,
            ending_reported: false,
            awaiting_pong: false,
            control_frames: 0,
            next_heartbeat,
            timer: Box::pin(sleep_until(next_heartbeat)),
        }
    }

    /// The connection as the registry holds it.
    pub(crate) fn conn(&self) -> &Arc<Endpoint> {
        &self.conn
    }

    fn local(&self) -> &LocalConn {
        local(&self.conn)
    }

    /// The next data frame, or the end of the connection.
    pub(crate) async fn next(&mut self) -> Event {
        poll_fn(|cx| self.poll(cx, Want::Frame)).await
    }

    /// Waits until a frame of `len` bytes fits `binary`'s outbox, while still writing this
    /// connection's own frames; `Event::Ended` if this connection ends first.
    pub(crate) async fn wait_for_space(&mut self, binary: &LocalConn, len: usize) -> Event {
        poll_fn(|cx| self.poll(cx, Want::Space(binary, len))).await
    }

    /// Waits until `ready` is ready, while still writing this connection's own frames (and
    /// without reading it); `Event::Ended` if this connection ends first.
    pub(crate) async fn wait_until(
        &mut self,
        ready: &(dyn Fn(&mut Context<'_>) -> Poll<()> + Sync),
    ) -> Event {
        poll_fn(|cx| self.poll(cx, Want::Ready(ready))).await
    }

    /// Drives the connection until `want` is met or it ends.
    fn poll(&mut self, cx: &mut Context<'_>, want: Want<'_>) -> Poll<Event> {
        loop {
            if !self.ending_reported {
                if let Some(ending) = self.local().ending() {
                    self.ending_reported = true;
                    return Poll::Ready(Event::Ended(ending));
                }
            }
            self.poll_write(cx);
            match want {
                Want::Frame if !self.rx_done => {
                    if let Poll::Ready(message) = Pin::new(&mut *self.ws).poll_next(cx) {
                        if let Some(frame) = self.on_message(message) {
                            return Poll::Ready(Event::Frame(frame));
                        }
                        continue;
                    }
                }
                Want::Frame => {}
                Want::Space(binary, len) => {
                    if binary.poll_space(len, cx).is_ready() {
                        // The wait was the relay's, not the peer's: it does not count towards the
                        // slow-loris deadline of a message that was arriving.
                        self.ws.get_mut().restart_clock(Instant::now());
                        return Poll::Ready(Event::Space);
                    }
                }
                Want::Ready(ready) => {
                    if ready(cx).is_ready() {
                        self.ws.get_mut().restart_clock(Instant::now());
                        return Poll::Ready(Event::Space);
                    }
                }
            }
            if self.poll_timer(cx, !matches!(want, Want::Frame)) {
                continue;
            }
            return Poll::Pending;
        }
    }

    /// Hands queued work to the socket until it would block or nothing is left.
    fn poll_write(&mut self, cx: &mut Context<'_>) {
        while !self.writer_done {
            if self.ping_due || !self.batch.is_empty() || self.close_due.is_some() {
                match Pin::new(&mut *self.ws).poll_ready(cx) {
                    Poll::Pending => return local(&self.conn).watch(cx),
                    Poll::Ready(Err(error)) => return self.write_failed(error),
                    Poll::Ready(Ok(())) => {}
                }
                let message = if std::mem::take(&mut self.ping_due) {
                    Message::Ping(Bytes::new())
                } else if let Some(frame) = self.batch.pop_front() {
                    // The writer's lease check (cluster mode; one branch on one instance): a
                    // frame queued before the fence deadline but written after it (the process
                    // was stopped, the runtime starved) is dropped with the rest of its batch,
                    // and the connection closes 1012 (`may_deliver` fenced everything).
                    if !self.hub.may_deliver(self.local().epoch()) {
                        self.batch = VecDeque::new();
                        self.local()
                            .close_as(CloseReason::ClusterConnectionLost, Origin::Requested);
                        continue;
                    }
                    Message::Text(frame)
                } else if let Some((code, reason)) = self.close_due.take() {
                    self.writer_done = true;
                    Message::Close(Some(CloseFrame {
                        code: CloseCode::from(code),
                        reason: Utf8Bytes::from_static(reason),
                    }))
                } else {
                    continue;
                };
                if let Err(error) = Pin::new(&mut *self.ws).start_send(message) {
                    return self.write_failed(error);
                }
                self.unflushed = true;
                continue;
            }
            if self.unflushed {
                match Pin::new(&mut *self.ws).poll_flush(cx) {
                    Poll::Pending => return local(&self.conn).watch(cx),
                    Poll::Ready(Err(error)) => return self.write_failed(error),
                    Poll::Ready(Ok(())) => self.unflushed = false,
                }
            }
            match local(&self.conn).poll_work(cx) {
                Poll::Pending => return,
                Poll::Ready(Work::Frames { ping, frames }) => {
                    self.ping_due = ping;
                    self.batch = frames;
                }
                Poll::Ready(Work::Close(code, reason)) => self.close_due = Some((code, reason)),
                Poll::Ready(Work::Stop) => {
                    // The peer closed: what is left is tungstenite's reply to its close frame.
                    self.writer_done = true;
                    self.unflushed = true;
                }
            }
        }
        if self.unflushed && Pin::new(&mut *self.ws).poll_flush(cx).is_ready() {
            self.unflushed = false;
        }
    }

    fn write_failed(&mut self, error: WsError) {
        self.writer_done = true;
        self.batch = VecDeque::new();
        match error {
            WsError::WriteBufferFull(_) => self
                .local()
                .close_as(CloseReason::PolicyViolation, Origin::Relay),
            _ => self.local().peer_ended(1001),
        }
    }

    /// Handles one read result; returns a data frame to hand out, if it was one.
    fn on_message(&mut self, message: Option<Result<Message, WsError>>) -> Option<Utf8Bytes> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                self.rx_done = true;
                self.on_error(error);
                return None;
            }
            None => {
                self.rx_done = true;
                self.local().peer_ended(1001);
                return None;
            }
        };
        match message {
            Message::Text(text) => Some(text),
            Message::Binary(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Some(text),
                Err(_) => {
                    self.local()
                        .close_as(CloseReason::InvalidJson, Origin::Relay);
                    None
                }
            },
            Message::Ping(_) => {
                self.count_control_frame();
                None
            }
            Message::Pong(_) => {
                self.count_control_frame();
                self.awaiting_pong = false;
                self.local().pong_received();
                None
            }
            Message::Close(frame) => {
                self.local()
                    .peer_ended(frame.map_or(1000, |f| u16::from(f.code)));
                None
            }
            Message::Frame(_) => None,
        }
    }

    /// A peer may send a bounded number of control frames per heartbeat interval: each ping
    /// makes tungstenite queue a pong, and a peer that never reads them would grow the write
    /// buffer up to its bound and keep the relay busy.
    fn count_control_frame(&mut self) {
        self.control_frames += 1;
        if self.control_frames > self.hub.config.max_control_frames {
            tracing::debug!(conn = %self.hub.logs.conn(self.local().id()), "control-frame flood");
            self.local()
                .close_as(CloseReason::PolicyViolation, Origin::Relay);
        }
    }

    fn on_error(&self, error: WsError) {
        let local = self.local();
        match error {
            WsError::Capacity(_) => local.close_as(CloseReason::MessageTooBig, Origin::Relay),
            WsError::Utf8(_) => local.close_as(CloseReason::InvalidJson, Origin::Relay),
            WsError::WriteBufferFull(_) => {
                local.close_as(CloseReason::PolicyViolation, Origin::Relay)
            }
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                local.peer_ended(1001)
            }
            WsError::Protocol(_) => local.close_as(CloseReason::ProtocolError, Origin::Relay),
            _ => local.peer_ended(1001),
        }
    }

    /// Arms the timer for the earliest of the heartbeat and the slow-loris deadline and handles
    /// it if it is due; true if it fired. While `paused` (reads stopped for backpressure) the
    /// heartbeat only pings: the peer's pong cannot be read until reading resumes.
    fn poll_timer(&mut self, cx: &mut Context<'_>, paused: bool) -> bool {
        let closing = self.ending_reported;
        let loris = self
            .ws
            .get_ref()
            .message_started()
            .map(|started| started + self.hub.config.slow_message);
        // While paused, nothing is read: a message cannot progress, so its clock does not run.
        let loris = loris.filter(|_| !closing && !paused);
        let deadline = match loris {
            Some(loris) => loris.min(self.next_heartbeat),
            None => self.next_heartbeat,
        };
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
        if self.timer.as_mut().poll(cx).is_pending() {
            return false;
        }
        let now = Instant::now();
        if loris.is_some_and(|at| at <= now) {
            tracing::debug!(conn = %self.hub.logs.conn(self.local().id()), "message too slow");
            self.local()
                .close_as(CloseReason::MessageTooSlow, Origin::Relay);
        }
        if self.next_heartbeat <= now {
            self.next_heartbeat = now + self.hub.config.heartbeat;
            self.control_frames = 0;
            if self.awaiting_pong && !paused && !closing {
                tracing::debug!(conn = %self.hub.logs.conn(self.local().id()), "heartbeat timeout");
                self.local()
                    .close_as(CloseReason::HeartbeatTimeout, Origin::Relay);
            } else if !self.awaiting_pong && !closing {
                self.awaiting_pong = self.local().push_ping();
            }
        }
        true
    }

    /// Finishes the close handshake — writes what is queued and the close frame, then waits for
    /// the peer's close frame — for at most the close timeout (or until the relay's hard stop),
    /// counts the close, and returns how the connection ended.
    ///
    /// The returned future is boxed: it runs once per connection, at its end, and boxing keeps
    /// its state (a second `Session` slot, the timeout) out of every connection task's size
    /// for the connection's whole life.
    pub(crate) fn finish(self) -> Pin<Box<dyn Future<Output = Ending> + Send>> {
        Box::pin(self.finish_inner())
    }

    async fn finish_inner(mut self) -> Ending {
        if self.local().ending().is_none() {
            self.local()
                .close_as(CloseReason::ShuttingDown, Origin::Requested);
        }
        let deadline = Instant::now() + self.hub.config.close_timeout;
        let stopped = self.hub.shutdown.stopped.clone();
        let handshake = poll_fn(|cx| self.poll_finish(cx));
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, handshake) => {}
            _ = stopped.cancelled() => {}
        }
        let ending = self.local().ending().expect("ending was set above");
        let side = self.local().side();
        self.hub.metrics.closed(Closed {
            endpoint: side.into(),
            code: ending.code,
        });
        ending
    }

    fn poll_finish(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            self.poll_write(cx);
            if self.rx_done {
                break;
            }
            // Read (and drop) until the peer's close frame and the end of the stream.
            match ready!(Pin::new(&mut *self.ws).poll_next(cx)) {
                Some(Ok(Message::Close(_))) | Some(Ok(_)) => {}
                Some(Err(_)) | None => self.rx_done = true,
            }
        }
        if self.writer_done && !self.unflushed {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// The local connection of a session's endpoint: a session only ever runs a local WebSocket
/// (it is made from one in `http::routes`).
pub(crate) fn local(conn: &Endpoint) -> &LocalConn {
    conn.as_local()
        .expect("a session runs a local WebSocket, never a remote phone")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Session` is moved through several futures that each keep a slot for it for the
    /// connection's whole life (relay/README.md, "Memory per connection"): it must stay small,
    /// its WebSocket boxed. The bound is loose (about 120 bytes today) so a compiler change does
    /// not trip it; an unboxed WebSocket (about 490 bytes) does.
    #[test]
    fn a_session_is_small_enough_to_move_through_futures() {
        assert!(
            std::mem::size_of::<Session>() <= 256,
            "Session is {} bytes",
            std::mem::size_of::<Session>()
        );
    }
}
