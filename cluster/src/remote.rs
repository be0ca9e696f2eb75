//! [`RemotePhone`]: the registry's connection for a phone connected to *another* instance (the
//! relay's `Endpoint::Remote`).
//!
//! The owner of a server-id registers every phone of that id in its own registry, wherever the
//! phone's socket is — this is why the registry is generic over its connection type. A local
//! phone is the relay's WebSocket conn; a remote one is this: its `send` and `close` publish
//! down the phone's [link](super::link::Link) to the phone's instance, which delivers the frame to
//! (or closes) the socket.

use super::link::Outbound;
use super::metrics::ClusterMetrics;
use bytes::Bytes;
use relay_protocol::{CloseReason, SendError};
use std::sync::Arc;

/// A phone on another instance, as the owner's registry holds it.
///
/// # Non-blocking, bounded
///
/// [`send`](Self::send) enqueues into the link's publisher without waiting. The link's queue is
/// bounded by bytes like a local phone's outbox (4 MiB by default, each frame costing its length
/// plus 64); when it is over the bound the phone is treated exactly as a local phone whose outbox
/// overflowed: it is closed `1011 phone backlog full` (the close goes down the link, after the
/// frames already queued) and `send` returns [`SendError::Full`]. Once the link is ended or lost,
/// `send` returns [`SendError::Closed`].
///
/// It counts itself in [`ClusterMetrics::remote_phones`] from creation to drop.
pub struct RemotePhone {
    conn_id: String,
    outbound: Outbound,
    metrics: Arc<ClusterMetrics>,
}

impl RemotePhone {
    /// The remote phone `conn_id`, reached through `outbound` (from
    /// [`Link::accept`](super::Link::accept)).
    pub fn new(conn_id: String, outbound: Outbound, metrics: Arc<ClusterMetrics>) -> Self {
        metrics.remote_phone_added();
        RemotePhone {
            conn_id,
            outbound,
            metrics,
        }
    }

    /// Whether its link is still open.
    pub fn is_open(&self) -> bool {
        self.outbound.is_open()
    }

    /// The down direction of its link (the owner grants the phone's instance credit on it,
    /// see [`Outbound::grant`]).
    pub fn outbound(&self) -> &Outbound {
        &self.outbound
    }
}

impl std::fmt::Debug for RemotePhone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemotePhone")
            .field("conn_id", &self.conn_id)
            .field("peer", &self.outbound.peer().encode())
            .field("open", &self.is_open())
            .finish()
    }
}

impl RemotePhone {
    /// The phone's conn-id.
    pub fn conn_id(&self) -> &str {
        &self.conn_id
    }

    /// Enqueues a frame (a text frame's bytes: the relay's `Utf8Bytes` converts without a copy)
    /// down the link, without a copy of its own; never blocks.
    ///
    /// # Errors
    ///
    /// See [`RemotePhone`]: [`SendError::Full`] over the link's bound, [`SendError::Closed`] once
    /// the link is ended or lost.
    pub fn send(&self, frame: Bytes) -> Result<(), SendError> {
        let sent = self.outbound.try_frame(&frame);
        if sent == Err(SendError::Full) {
            tracing::warn!(conn_id = %self.conn_id, "remote phone backlog full");
            self.close(CloseReason::BacklogFull);
        }
        sent
    }

    /// Sends the close down the link, after the frames already queued.
    pub fn close(&self, reason: CloseReason) {
        self.outbound.end(reason.code(), reason.reason());
    }
}

impl Drop for RemotePhone {
    fn drop(&mut self) {
        self.metrics.remote_phone_removed();
    }
}
