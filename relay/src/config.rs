//! The relay's settings: every number of the protocol, with its default.

use std::net::SocketAddr;
use std::time::Duration;

/// What a queued frame costs in an outbox beyond its bytes (protocol: "length + 64").
pub const FRAME_OVERHEAD: usize = 64;

/// Every tunable of the relay. `RelayConfig::default()` is the protocol's defaults.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// How long a disconnected binary's id and phones are kept for it to come back.
    pub grace: Duration,
    /// Phones per server-id (0 = unlimited).
    pub max_phones: usize,
    /// Ping interval; a peer that has not answered a ping by the time the next is due is closed
    /// `1011 heartbeat timeout`.
    pub heartbeat: Duration,
    /// How long the holder of a server-id has to answer the ping sent on a conflicting claim.
    pub probe_timeout: Duration,
    /// Largest incoming frame (and message), in bytes; larger closes with 1009.
    pub max_frame: usize,
    /// How long a client may take to send its request head.
    pub header_timeout: Duration,
    /// How long one incoming message may take once its first byte arrived (slow-loris).
    pub slow_message: Duration,
    /// Byte bound of each phone's outbox (each frame costs its length + [`FRAME_OVERHEAD`]).
    pub phone_outbox: usize,
    /// Byte bound of each binary's outbox; a full one pauses the phones sending to it.
    pub binary_outbox: usize,
    /// How long shutdown waits for connections to close before dropping them.
    pub drain: Duration,
    /// How long a closing connection waits for the peer's close frame.
    pub close_timeout: Duration,
    /// Fault injection for tests: a frame whose text is exactly this makes its connection task
    /// panic. Never set by the command line.
    pub panic_on_frame: Option<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            grace: Duration::from_secs(30),
            max_phones: 16,
            heartbeat: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
            max_frame: 256 * 1024,
            header_timeout: Duration::from_secs(5),
            slow_message: Duration::from_secs(30),
            phone_outbox: 4 * 1024 * 1024,
            binary_outbox: 16 * 1024 * 1024,
            drain: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            panic_on_frame: None,
        }
    }
}
