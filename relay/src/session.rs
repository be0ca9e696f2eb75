//! `Session`: one WebSocket's reader loop, writer task, heartbeat and slow-loris watch, shared by
//! binaries and phones. Its owner (the binary's or phone's task) asks it for the next frame.

use super::Hub;
use super::conn::{Ending, Origin, Outgoing, Work, WsConn};
use super::stream::{Arrivals, Tracked};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use relay_registry::{CloseReason, Conn};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval, MissedTickBehavior, interval_at, timeout_at};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Bytes, Error as WsError, Message, Utf8Bytes};

/// A relay-side WebSocket.
pub type Ws = WebSocketStream<Tracked>;

/// What the connection's task is told next.
pub enum Event {
    /// A data frame's text (binary frames are accepted if they are UTF-8).
    Frame(Utf8Bytes),
    /// The connection is closing or closed; no more frames.
    Ended(Ending),
}

/// Aborts the writer task if the session is dropped without finishing (e.g. its task panicked),
/// so the socket is released with the task.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// What woke [`Session::next`].
enum Wake {
    Read(Option<Result<Message, WsError>>),
    Closing,
    Shutdown,
    Heartbeat,
    Loris,
}

/// A running WebSocket connection.
pub struct Session {
    conn: Arc<WsConn>,
    rx: SplitStream<Ws>,
    /// The reader saw the end of the stream or an error: do not read again.
    rx_done: bool,
    writer: AbortOnDrop,
    arrivals: Arrivals,
    heartbeat: Interval,
    awaiting_pong: bool,
    loris: Interval,
    slow_message: Duration,
    close_timeout: Duration,
    shutdown: watch::Receiver<bool>,
}

impl Session {
    /// Starts the writer task for `ws` and returns the reader side.
    pub fn start(ws: Ws, arrivals: Arrivals, conn: Arc<WsConn>, hub: &Hub) -> Session {
        let (tx, rx) = ws.split();
        let writer = AbortOnDrop(tokio::spawn(write_loop(conn.clone(), tx)));
        let config = &hub.config;
        let start = Instant::now();
        let mut heartbeat = interval_at(start + config.heartbeat, config.heartbeat);
        heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let check = (config.slow_message / 4).max(Duration::from_millis(10));
        let mut loris = interval_at(start + check, check);
        loris.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Session {
            conn,
            rx,
            rx_done: false,
            writer,
            arrivals,
            heartbeat,
            awaiting_pong: false,
            loris,
            slow_message: config.slow_message,
            close_timeout: config.close_timeout,
            shutdown: hub.shutdown.clone(),
        }
    }

    /// The next data frame, or the end of the connection.
    pub async fn next(&mut self) -> Event {
        loop {
            if let Some(ending) = self.conn.ending() {
                return Event::Ended(ending);
            }
            let wake = tokio::select! {
                biased;
                message = self.rx.next() => Wake::Read(message),
                _ = self.conn.closed() => Wake::Closing,
                _ = super::stopping(&mut self.shutdown) => Wake::Shutdown,
                _ = self.heartbeat.tick() => Wake::Heartbeat,
                _ = self.loris.tick() => Wake::Loris,
            };
            match wake {
                Wake::Read(message) => {
                    if let Some(frame) = self.on_message(message) {
                        return Event::Frame(frame);
                    }
                }
                Wake::Closing => {}
                Wake::Shutdown => self
                    .conn
                    .close_as(CloseReason::ShuttingDown, Origin::Shutdown),
                Wake::Heartbeat if self.awaiting_pong => {
                    tracing::info!(conn_id = %self.conn.conn_id(), "heartbeat timeout");
                    self.conn
                        .close_as(CloseReason::HeartbeatTimeout, Origin::Relay);
                }
                Wake::Heartbeat => self.awaiting_pong = self.conn.push_ping(),
                Wake::Loris => {
                    if self
                        .arrivals
                        .pending_for()
                        .is_some_and(|t| t > self.slow_message)
                    {
                        tracing::info!(conn_id = %self.conn.conn_id(), "message too slow");
                        self.conn
                            .close_as(CloseReason::MessageTooSlow, Origin::Relay);
                    }
                }
            }
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
                self.conn.peer_ended(1001);
                return None;
            }
        };
        // A complete message ends the slow-loris clock (only a pong answers the heartbeat).
        self.arrivals.message_done();
        match message {
            Message::Text(text) => Some(text),
            Message::Binary(bytes) => match Utf8Bytes::try_from(bytes) {
                Ok(text) => Some(text),
                Err(_) => {
                    self.conn.close_as(CloseReason::InvalidJson, Origin::Relay);
                    None
                }
            },
            Message::Pong(_) => {
                self.awaiting_pong = false;
                self.conn.pong_received();
                None
            }
            Message::Close(frame) => {
                self.conn
                    .peer_ended(frame.map_or(1000, |f| u16::from(f.code)));
                None
            }
            Message::Ping(_) | Message::Frame(_) => None,
        }
    }

    fn on_error(&self, error: WsError) {
        match error {
            WsError::Capacity(_) => self
                .conn
                .close_as(CloseReason::MessageTooBig, Origin::Relay),
            WsError::Utf8(_) => self.conn.close_as(CloseReason::InvalidJson, Origin::Relay),
            WsError::Protocol(ProtocolError::ResetWithoutClosingHandshake) => {
                self.conn.peer_ended(1001)
            }
            WsError::Protocol(_) => self
                .conn
                .close_as(CloseReason::ProtocolError, Origin::Relay),
            _ => self.conn.peer_ended(1001),
        }
    }

    /// Finishes the close handshake (waiting at most the close timeout for the peer's close frame
    /// and for the writer), and returns how the connection ended.
    pub async fn finish(mut self) -> Ending {
        if self.conn.ending().is_none() {
            self.conn
                .close_as(CloseReason::ShuttingDown, Origin::Shutdown);
        }
        let deadline = Instant::now() + self.close_timeout;
        if !self.rx_done {
            let drain = async { while let Some(Ok(_)) = self.rx.next().await {} };
            let _ = timeout_at(deadline, drain).await;
        }
        let _ = timeout_at(deadline, &mut self.writer.0).await;
        self.conn.ending().expect("ending was set above")
    }
}

/// The writer task: drains the outbox into the socket, then writes the close frame.
async fn write_loop(conn: Arc<WsConn>, mut tx: SplitSink<Ws, Message>) {
    loop {
        match conn.next_work().await {
            Work::Frames(batch) => {
                for item in batch {
                    let message = match item {
                        Outgoing::Text(text) => Message::Text(text),
                        Outgoing::Ping => Message::Ping(Bytes::new()),
                    };
                    if tx.feed(message).await.is_err() {
                        conn.peer_ended(1001);
                        return;
                    }
                }
                if tx.flush().await.is_err() {
                    conn.peer_ended(1001);
                    return;
                }
            }
            Work::Close(code, reason) => {
                let frame = CloseFrame {
                    code: code.into(),
                    reason: Utf8Bytes::from_static(reason),
                };
                let _ = tx.send(Message::Close(Some(frame))).await;
                return;
            }
            Work::Stop => {
                let _ = tx.flush().await;
                return;
            }
        }
    }
}
