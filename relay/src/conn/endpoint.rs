//! `Endpoint`: the connection type of the relay's registry — what a claim's binary and a ticket's
//! phones are — with [`Conn`] implemented by delegating to the variant.
//!
//! Everything that routes a frame to, or closes, a registered connection goes through
//! [`Endpoint::send`] and [`Endpoint::close`] (the registry itself only calls [`Conn::conn_id`]
//! and [`Conn::close`] with its own closes); only operations that exist for a local
//! WebSocket alone (the conflict probe's ping, the session's own outbox) reach into
//! [`LocalConn`]. Cluster mode's phone on another instance is the second variant,
//! [`RemotePhone`], whose `send` and `close` publish down the phone's link: the registry — and
//! every route and close of the relay — treats both alike. This is why the registry is generic
//! over its connection type.
//!
//! Binaries are always local (a binary's claim lives in the registry of the instance it is
//! connected to); only phones may be remote.

use crate::conn::local::LocalConn;
use crate::conn::outbox::Origin;
use relay_cluster::remote::RemotePhone;
use relay_protocol::{CloseReason, SendError};
use relay_registry::Conn;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// A connection the registry holds. See the module docs.
#[derive(Debug)]
pub(crate) enum Endpoint {
    /// A WebSocket connected to this instance.
    Local(LocalConn),
    /// Cluster mode: a phone connected to another instance, registered here because this
    /// instance owns its server-id.
    Remote(RemotePhone),
}

impl Endpoint {
    /// The local WebSocket, if this is one.
    pub(crate) fn as_local(&self) -> Option<&LocalConn> {
        match self {
            Endpoint::Local(local) => Some(local),
            Endpoint::Remote(_) => None,
        }
    }

    /// The remote phone, if this is one.
    pub(crate) fn as_remote(&self) -> Option<&RemotePhone> {
        match self {
            Endpoint::Local(_) => None,
            Endpoint::Remote(remote) => Some(remote),
        }
    }
}

impl Endpoint {
    /// Enqueues one frame; never blocks. Relay frames are UTF-8 JSON in text frames, already
    /// validated: the frame is queued as it is, without a copy (the owned `Utf8Bytes` send is
    /// measured by `cargo bench -p relay-server --bench conn_send`).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the connection is closed, [`SendError::Full`] when its outbox
    /// is over its bound (a phone is then closed `1011 phone backlog full`).
    pub(crate) fn send(&self, frame: Utf8Bytes) -> Result<(), SendError> {
        match self {
            Endpoint::Local(local) => local.send_text(frame),
            Endpoint::Remote(remote) => remote.send(frame.into()),
        }
    }

    /// Closes with `reason`: every close the relay decides (a binary's close directive,
    /// shutdown, ...), and the registry's (through [`Conn::close`]).
    pub(crate) fn close(&self, reason: CloseReason) {
        match self {
            Endpoint::Local(local) => local.close_as(reason, Origin::Requested),
            Endpoint::Remote(remote) => remote.close(reason),
        }
    }
}

impl Conn for Endpoint {
    fn conn_id(&self) -> &str {
        match self {
            Endpoint::Local(local) => local.id(),
            Endpoint::Remote(remote) => remote.conn_id(),
        }
    }

    /// Called by the registry when it evicts a phone.
    fn close(&self, reason: relay_registry::CloseReason) {
        Endpoint::close(self, reason.into());
    }
}
