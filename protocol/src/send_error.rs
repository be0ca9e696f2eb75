//! `SendError`: why a connection could not enqueue a frame.

/// Why a connection's `send` (a local WebSocket's outbox, a remote phone's link) could not enqueue
/// a frame.
///
/// # Examples
///
/// ```
/// assert_eq!(relay_protocol::SendError::Full.to_string(), "connection outbox full");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// The connection is closed or closing; nothing more will be delivered.
    #[error("connection closed")]
    Closed,
    /// The connection's outbox is over its bound; the frame was not enqueued.
    #[error("connection outbox full")]
    Full,
}
