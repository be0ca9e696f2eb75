//! `CloseReason`: every close the relay sends — the registry's own closes, and the relay's.
//!
//! The registry knows only the closes its operations stand for
//! ([`relay_registry::CloseReason`]: reclaimed, released, grace expired, refused, and a validated
//! application close). Everything else that ends a connection is the relay's decision — a bad
//! frame, a slow peer, a missed heartbeat, a full backlog, a lost cluster link, shutdown — and is
//! listed here, with the code and text `PROTOCOL.md`'s close table gives it. The relay's
//! connection types close with this type (the relay's `Endpoint::close`);
//! the registry's closes reach them through [`From`].

use relay_registry::{InvalidCloseReason, RegistryError};
use std::fmt;

/// Why the relay closes a connection: a WebSocket close code and its reason text.
///
/// # Examples
///
/// ```
/// use relay_protocol::CloseReason;
///
/// assert_eq!(CloseReason::HeartbeatTimeout.code(), 1011);
/// assert_eq!(CloseReason::from(relay_registry::CloseReason::Reclaimed).code(), 4404);
/// let refused = CloseReason::from(relay_registry::RegistryError::PhonesAtCap);
/// assert_eq!(refused.to_string(), "4429 too many phones for server-id");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CloseReason {
    /// A close the registry makes: reclaimed, released, grace expired, a refusal, or an
    /// application close (a binary's close directive).
    Registry(relay_registry::CloseReason),
    /// A claim or registration refused for an invalid server-id: 4400. One instance answers it
    /// with HTTP 400 before any upgrade; the code crosses between instances in cluster mode.
    InvalidServerId,
    /// The peer stopped answering pings: 1011.
    HeartbeatTimeout,
    /// The phone's outbox overflowed: 1011.
    BacklogFull,
    /// The relay is shutting down: 1001.
    ShuttingDown,
    /// A frame was not valid JSON (or not valid UTF-8): 1007.
    InvalidJson,
    /// A frame's JSON was nested deeper than the relay allows: 1007.
    JsonTooDeep,
    /// The peer exceeded a per-connection bound (control frames, unsent data): 1008.
    PolicyViolation,
    /// One message took too long to arrive once it began (a slow-loris): 1008.
    MessageTooSlow,
    /// A frame or message was larger than the relay accepts: 1009.
    MessageTooBig,
    /// The peer broke the WebSocket protocol: 1002.
    ProtocolError,
    /// Cluster mode: the instance on the other side of this connection's route was lost, or
    /// frames between instances were: 1011.
    LinkLost,
    /// Cluster mode: this instance could not reach the cluster for a whole lease: 1012.
    ClusterConnectionLost,
}

impl CloseReason {
    /// An application close with `code` and `reason` (see
    /// [`relay_registry::CloseReason::custom`]).
    ///
    /// # Errors
    ///
    /// Unless `code` is 1000 or in 3000–4999 and `reason` at most 123 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_protocol::CloseReason;
    ///
    /// assert_eq!(CloseReason::custom(4000, "closed by server")?.code(), 4000);
    /// assert!(CloseReason::custom(1011, "no").is_err());
    /// # Ok::<(), relay_registry::InvalidCloseReason>(())
    /// ```
    pub const fn custom(code: u16, reason: &'static str) -> Result<Self, InvalidCloseReason> {
        match relay_registry::CloseReason::custom(code, reason) {
            Ok(close) => Ok(CloseReason::Registry(close)),
            Err(invalid) => Err(invalid),
        }
    }

    /// Every close with a fixed code and text (all but application closes), each once.
    pub fn known() -> impl Iterator<Item = CloseReason> {
        let registry = [
            relay_registry::CloseReason::Reclaimed,
            relay_registry::CloseReason::Released,
            relay_registry::CloseReason::GraceExpired,
        ];
        let refusals = [
            RegistryError::ServerIdConflict,
            RegistryError::NoServer,
            RegistryError::PhonesAtCap,
            RegistryError::InvalidServerId,
        ];
        let own = [
            CloseReason::HeartbeatTimeout,
            CloseReason::BacklogFull,
            CloseReason::ShuttingDown,
            CloseReason::InvalidJson,
            CloseReason::JsonTooDeep,
            CloseReason::PolicyViolation,
            CloseReason::MessageTooSlow,
            CloseReason::MessageTooBig,
            CloseReason::ProtocolError,
            CloseReason::LinkLost,
            CloseReason::ClusterConnectionLost,
        ];
        registry
            .into_iter()
            .map(CloseReason::Registry)
            .chain(refusals.into_iter().map(CloseReason::from))
            .chain(own)
    }

    /// The WebSocket close code.
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(relay_protocol::CloseReason::ShuttingDown.code(), 1001);
    /// ```
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Registry(close) => close.code(),
            CloseReason::InvalidServerId => 4400,
            CloseReason::HeartbeatTimeout | CloseReason::BacklogFull | CloseReason::LinkLost => {
                1011
            }
            CloseReason::ShuttingDown => 1001,
            CloseReason::InvalidJson | CloseReason::JsonTooDeep => 1007,
            CloseReason::PolicyViolation | CloseReason::MessageTooSlow => 1008,
            CloseReason::MessageTooBig => 1009,
            CloseReason::ProtocolError => 1002,
            CloseReason::ClusterConnectionLost => 1012,
        }
    }

    /// The close reason text sent with the code (at most 123 bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// assert_eq!(relay_protocol::CloseReason::BacklogFull.reason(), "phone backlog full");
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            CloseReason::Registry(close) => close.reason(),
            CloseReason::InvalidServerId => RegistryError::InvalidServerId.reason(),
            CloseReason::HeartbeatTimeout => "heartbeat timeout",
            CloseReason::BacklogFull => "phone backlog full",
            CloseReason::ShuttingDown => "shutting down",
            CloseReason::InvalidJson => "invalid JSON",
            CloseReason::JsonTooDeep => "JSON nested too deep",
            CloseReason::PolicyViolation => "policy violation",
            CloseReason::MessageTooSlow => "message too slow",
            CloseReason::MessageTooBig => "message too big",
            CloseReason::ProtocolError => "protocol error",
            CloseReason::LinkLost => "relay link lost",
            CloseReason::ClusterConnectionLost => "cluster connection lost",
        }
    }
}

impl From<relay_registry::CloseReason> for CloseReason {
    fn from(close: relay_registry::CloseReason) -> Self {
        CloseReason::Registry(close)
    }
}

impl From<RegistryError> for CloseReason {
    /// The close a refused claim or registration is told with after the upgrade (4409, 4404,
    /// 4429; 4400 for an invalid server-id).
    fn from(error: RegistryError) -> Self {
        relay_registry::CloseReason::try_from(error)
            .map_or(CloseReason::InvalidServerId, CloseReason::Registry)
    }
}

impl fmt::Display for CloseReason {
    /// `"<code> <reason>"`, e.g. `1011 heartbeat timeout`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// relay/PROTOCOL.md's close table (and the cluster's refusal codes), byte for byte.
    #[test]
    fn every_close_has_the_protocols_code_and_text() {
        let table: Vec<(u16, &str)> = CloseReason::known()
            .map(|close| (close.code(), close.reason()))
            .collect();
        assert_eq!(
            table,
            [
                (4404, "binary reclaimed server-id"),
                (4404, "binary released server-id"),
                (1011, "binary did not reconnect"),
                (4409, "server-id already claimed"),
                (4404, "no server with that id"),
                (4429, "too many phones for server-id"),
                (4400, "invalid server-id"),
                (1011, "heartbeat timeout"),
                (1011, "phone backlog full"),
                (1001, "shutting down"),
                (1007, "invalid JSON"),
                (1007, "JSON nested too deep"),
                (1008, "policy violation"),
                (1008, "message too slow"),
                (1009, "message too big"),
                (1002, "protocol error"),
                (1011, "relay link lost"),
                (1012, "cluster connection lost"),
            ]
        );
        assert_eq!(
            CloseReason::custom(4000, "closed by server").map(|c| c.to_string()),
            Ok("4000 closed by server".to_owned())
        );
    }
}
