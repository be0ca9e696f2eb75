//! `Endpoint`: the connection type of the relay's registry — what a claim's binary and a ticket's
//! phones are — with [`Conn`] implemented by delegating to the variant.
//!
//! Everything that routes a frame to, or closes, a registered connection goes through
//! [`Conn::send`] and [`Conn::close`] on this type; only operations that exist for a local
//! WebSocket alone (the conflict probe's ping, the session's own outbox) reach into
//! [`LocalConn`]. Another kind of connection (cluster mode's phone on another instance) is
//! another variant with its own `send` and `close`, and nothing else changes.

use crate::local::LocalConn;
use crate::outbox::Origin;
use relay_registry::{CloseReason, Conn, SendError};
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A connection the registry holds. See the module docs.
#[derive(Debug)]
pub enum Endpoint {
    /// A WebSocket connected to this instance.
    Local(LocalConn),
}

impl Conn for Endpoint {
    /// Relay frames are UTF-8 JSON in text frames, already validated: the frame is queued as it
    /// is, without a copy.
    type Frame = Utf8Bytes;

    fn conn_id(&self) -> &str {
        match self {
            Endpoint::Local(local) => local.id(),
        }
    }

    fn send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        match self {
            Endpoint::Local(local) => local.send_text(frame),
        }
    }

    /// Called by the registry when it evicts a phone, and by the relay for every close it
    /// decides (a binary's close directive, shutdown).
    fn close(&self, reason: CloseReason) {
        match self {
            Endpoint::Local(local) => local.close_as(reason, Origin::Requested),
        }
    }
}
