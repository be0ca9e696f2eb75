//! The requests between instances as the link sees them: one that arrived here
//! ([`Incoming`]), and why one sent got no reply ([`RequestError`]).

use crate::wire::{self, Reply, Request};
use async_nats::Subject;

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the request timeout.
    #[error("cluster request timed out")]
    TimedOut,
    /// Nobody listens on the instance's subject: it is gone.
    #[error("no instance answers on that subject")]
    NoResponders,
    /// This instance does not hold its lease; it must not ask anything.
    #[error("this instance does not hold its cluster lease")]
    NotLeased,
    /// NATS failed the request, or the reply was not one.
    #[error("cluster request failed: {0}")]
    Failed(String),
}

/// A request that arrived for this instance, to be answered with [`respond`](Self::respond).
pub struct Incoming {
    /// What is asked.
    pub request: Request,
    pub(super) reply_to: Option<Subject>,
    pub(super) client: async_nats::Client,
}

impl Incoming {
    /// Sends `reply` to the asker (if it still waits; a reply after its timeout is dropped by
    /// NATS). Not answering at all lets the asker time out.
    pub async fn respond(self, reply: Reply) {
        if let Some(to) = self.reply_to {
            let _ = self.client.publish(to, wire::encode_reply(&reply)).await;
        }
    }
}
