//! A link's settings and what a frame costs in its queue and window.

use std::time::Duration;

/// What a queued frame costs beyond its bytes (protocol: "length + 64"): the relay's outboxes
/// and the links' queues and windows count frames alike.
pub const FRAME_OVERHEAD: usize = 64;

/// The link's settings.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Bytes a link may have queued for publishing (each frame costs its length + 64) before
    /// [`Outbound::try_frame`](super::Outbound::try_frame) refuses (default 4 MiB, a phone's outbox).
    pub outbox_bytes: usize,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// Bytes of up frames (each costing its length + 64) a phone's instance may have sent that
    /// the owner has not yet handed on to the binary (default 1 MiB); past it the phone waits.
    /// Every instance of a cluster must use the same window.
    pub window: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            outbox_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            window: 1024 * 1024,
        }
    }
}
