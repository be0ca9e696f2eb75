//! What the registry needs from a connection: an id, a non-blocking send and a non-blocking close.

/// A connection the registry can route to: a binary's or a phone's socket, or a mock.
///
/// The registry stores connections as `Arc<C>` and calls these methods **only after releasing its
/// lock**, so an implementation may call back into the [`Registry`](crate::Registry) from any of them.
/// None of them may block: they run on whichever thread caused them (a connection task, the
/// [`Reaper`](crate::Reaper)), often while other connections wait.
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, Conn, SendError};
/// use std::sync::Mutex;
///
/// struct Mock { id: String, closed: Mutex<Option<CloseReason>> }
///
/// impl Conn for Mock {
///     fn conn_id(&self) -> &str { &self.id }
///     fn send(&self, _frame: &[u8]) -> Result<(), SendError> {
///         if self.closed.lock().unwrap().is_some() { Err(SendError::Closed) } else { Ok(()) }
///     }
///     fn close(&self, reason: CloseReason) {
///         // Idempotent: the first reason wins.
///         self.closed.lock().unwrap().get_or_insert(reason);
///     }
/// }
/// ```
pub trait Conn: Send + Sync + 'static {
    /// The connection's id (for a phone, the `conn_id` a binary addresses it by).
    ///
    /// Must be stable for the life of the connection and must not block. The registry reads a
    /// phone's id once, in [`register_phone`](crate::Registry::register_phone) before taking its lock,
    /// and keeps a copy.
    fn conn_id(&self) -> &str;

    /// Enqueues one frame for this connection. Never blocks.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the connection is closed, [`SendError::Full`] when its outbox is
    /// over its bound, [`SendError::TooLarge`] when the frame exceeds the connection's frame limit.
    fn send(&self, frame: &[u8]) -> Result<(), SendError>;

    /// Closes the connection with `reason`'s code and text. Idempotent and never blocks.
    ///
    /// The registry calls it only on phones it evicts (release, reclaim, takeover, grace expiry),
    /// never on a binary and never on a conn whose registration it refused.
    fn close(&self, reason: CloseReason);
}

/// Why [`Conn::send`] could not enqueue a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The connection is closed or closing; nothing more will be delivered.
    #[error("connection closed")]
    Closed,
    /// The connection's outbox is over its bound; the frame was not enqueued.
    #[error("connection outbox full")]
    Full,
    /// The frame is larger than the connection accepts.
    #[error("frame too large")]
    TooLarge,
}

/// Why a connection is being closed: a WebSocket close code and its reason text.
///
/// The registry itself only uses [`Reclaimed`](Self::Reclaimed), [`Released`](Self::Released) and
/// [`GraceExpired`](Self::GraceExpired); the others are for the relay around it, so that every close
/// in a relay goes through the same [`Conn::close`] and no close code is ever optional.
///
/// # Examples
///
/// ```
/// use relay_registry::CloseReason;
///
/// assert_eq!(CloseReason::Reclaimed.code(), 4404);
/// assert_eq!(CloseReason::GraceExpired.reason(), "binary did not reconnect");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// A new binary claimed (or took over) the server-id this phone joined: 4404.
    Reclaimed,
    /// The binary this phone joined released the server-id: 4404.
    Released,
    /// The binary's grace window ended without a reclaim: 1011.
    GraceExpired,
    /// The peer stopped answering pings: 1011.
    HeartbeatTimeout,
    /// The phone's outbox overflowed: 1011.
    BacklogFull,
    /// The relay is shutting down: 1001.
    ShuttingDown,
    /// Any other close, e.g. one a binary requested for its phone.
    Custom {
        /// The WebSocket close code.
        code: u16,
        /// The close reason text (at most 123 bytes on the wire).
        reason: &'static str,
    },
}

impl CloseReason {
    /// The WebSocket close code.
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Reclaimed | CloseReason::Released => 4404,
            CloseReason::GraceExpired
            | CloseReason::HeartbeatTimeout
            | CloseReason::BacklogFull => 1011,
            CloseReason::ShuttingDown => 1001,
            CloseReason::Custom { code, .. } => *code,
        }
    }

    /// The close reason text sent with the code.
    pub fn reason(&self) -> &'static str {
        match self {
            CloseReason::Reclaimed => "binary reclaimed server-id",
            CloseReason::Released => "binary released server-id",
            CloseReason::GraceExpired => "binary did not reconnect",
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::BacklogFull => "phone backlog full",
            CloseReason::ShuttingDown => "shutting down",
            CloseReason::Custom { reason, .. } => reason,
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}
