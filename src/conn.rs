//! What a connection is to the registry: `Conn`, and the vocabulary of its `send` and `close`.

use crate::error::RegistryError;

/// A connection the registry can route to: a binary's or a phone's socket, or a mock.
///
/// The registry stores connections as `Arc<C>` and hands them back through its lookups and guards
/// ([`PhoneTicket::binary`](crate::PhoneTicket::binary), [`ServerClaim::phone`](crate::ServerClaim::phone),
/// [`Registry::phones_for`](crate::Registry::phones_for), ...). Of this trait it calls exactly two
/// methods itself, never while holding its lock:
///
/// - [`conn_id`](Conn::conn_id): once per [`register_phone`](crate::Registry::register_phone), on
///   the calling thread, before the lock; the copy it keeps is what
///   [`phone_for`](crate::Registry::phone_for) compares. Never for binaries.
/// - [`close`](Conn::close): once for each phone it evicts — on the thread whose call (or guard
///   drop) ended the binary's tenure, after the registry's state is final and before that call
///   returns; for a grace expiry, on the thread that ran [`expire_due`](crate::Registry::expire_due)
///   (a [`Reaper`](crate::Reaper)'s own std thread, outside any async runtime, if a reaper drives
///   it). Never on a binary, never on a refused conn.
///
/// It never calls [`send`](Conn::send): `send` is the routing contract between the parts of a
/// relay. A phone's task forwards a frame with `ticket.binary()?.send(frame)`, a binary's task with
/// `claim.phone(conn_id)?.send(frame)`; the registry only finds the conn. Besides those calls the
/// registry drops its `Arc`s of conns it removed — also after releasing its lock — so a conn's
/// `Drop` runs on the same threads as `close`.
///
/// Since the lock is never held, an implementation may call back into the registry from any of
/// these, and drop a guard from inside `close`. None of them may block: they run on whichever
/// thread caused them, often while other connections wait.
///
/// # Why `send` takes an owned `Frame`
///
/// An async relay reads each frame from one socket as an owned, reference-counted buffer (in
/// tungstenite, a `Utf8Bytes` already checked to be UTF-8) and hands it to another socket's writer
/// task. A `send(&[u8])` would force a copy into a new buffer per frame, and — since a text frame
/// must be UTF-8 — a second validation of bytes that were validated on arrival. With
/// `type Frame` the connection names its own owned frame type and `send` moves it through the
/// writer's channel as is: no copy, no second check. The registry stays independent of any
/// WebSocket crate (it never creates or inspects a frame), and a mock uses `String`.
///
/// Measured with `cargo bench -p relay-server --bench conn_send` (1 KiB frames, 2026-12-02): the
/// old `&[u8]` path took 267 ns per send, the owned `Utf8Bytes` 77 ns (3.5× faster). A re-run the
/// same day at 06:41 UTC (load average 3.5, batches of 64 sends): 86 ns against 30 ns per send
/// (2.9× faster).
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, Conn, Registry, SendError};
/// use std::sync::{Arc, Mutex};
///
/// struct Mock { id: String, closed: Mutex<Option<CloseReason>> }
///
/// impl Conn for Mock {
///     type Frame = String;
///     fn conn_id(&self) -> &str { &self.id }
///     fn send(&self, _frame: String) -> Result<(), SendError> {
///         if self.closed.lock().unwrap().is_some() { Err(SendError::Closed) } else { Ok(()) }
///     }
///     fn close(&self, reason: CloseReason) {
///         // Idempotent: the first reason wins.
///         self.closed.lock().unwrap().get_or_insert(reason);
///     }
/// }
///
/// let mock = |id: &str| Arc::new(Mock { id: id.into(), closed: Mutex::new(None) });
/// let registry = Registry::new();
/// let claim = registry.claim_server("srv", mock("bin"))?;
/// let ticket = registry.register_phone("srv", mock("phone"))?;
/// // Routing goes through the handles the registry returns:
/// ticket.binary().expect("registered").send("to the binary".into())?;
/// claim.phone("phone").expect("registered").send("to the phone".into())?;
/// drop(claim); // evicts the phone: the registry closes it
/// assert_eq!(*ticket.conn().closed.lock().unwrap(), Some(CloseReason::Released));
/// assert_eq!(ticket.conn().send("late".into()), Err(SendError::Closed));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Conn: Send + Sync + 'static {
    /// What [`send`](Conn::send) takes: the connection's own owned frame type, so a relay hands a
    /// frame on without copying it (tungstenite's `Utf8Bytes`, a `bytes::Bytes`, a `String` in a
    /// mock). The registry never creates or inspects one.
    type Frame;

    /// The connection's id (for a phone, the `conn_id` a binary addresses it by).
    ///
    /// Must be stable for the life of the connection and must not block. The registry reads a
    /// phone's id once, in [`register_phone`](crate::Registry::register_phone) before taking its
    /// lock, and keeps a copy; it never reads a binary's.
    ///
    /// # Examples
    ///
    /// See [`Conn`], which implements all three methods for a mock.
    fn conn_id(&self) -> &str;

    /// Enqueues one frame for this connection. Never blocks. Called by the relay's own code,
    /// never by the registry.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the connection is closed, [`SendError::Full`] when its outbox is
    /// over its bound (a relay closes such a phone with [`CloseReason::BacklogFull`]),
    /// [`SendError::TooLarge`] when the frame exceeds the connection's frame limit.
    ///
    /// # Examples
    ///
    /// See [`Conn`], which implements all three methods for a mock.
    fn send(&self, frame: Self::Frame) -> Result<(), SendError>;

    /// Closes the connection with `reason`'s code and text. Idempotent and never blocks.
    ///
    /// The registry calls it only on phones it evicts (release, reclaim, takeover, grace expiry),
    /// never on a binary and never on a conn whose registration it refused, and only with the
    /// lock released. A grace expiry may call it on a [`Reaper`](crate::Reaper)'s thread, where
    /// there is no async runtime: enqueue the close (a channel `try_send`, a cancellation token),
    /// do not spawn a task there.
    ///
    /// # Examples
    ///
    /// See [`Conn`], which implements all three methods for a mock.
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
/// Every close in a relay goes through [`Conn::close`] with one of these, so no close code is ever
/// optional and each one is spelled once. The registry itself only uses
/// [`Reclaimed`](Self::Reclaimed), [`Released`](Self::Released) and
/// [`GraceExpired`](Self::GraceExpired); the others name the relay protocol's other closes, a
/// refusal ([`Refused`](Self::Refused), from a [`RegistryError`]), and any application code
/// ([`custom`](Self::custom), validated).
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, RegistryError};
///
/// assert_eq!(CloseReason::Reclaimed.code(), 4404);
/// assert_eq!(CloseReason::GraceExpired.reason(), "binary did not reconnect");
/// // A refused claim is closed with the error's own code and text.
/// let refused = CloseReason::from(RegistryError::ServerIdConflict);
/// assert_eq!((refused.code(), refused.reason()), (4409, "server-id already claimed"));
/// // Application codes are checked: only 1000 and 3000–4999 may be sent this way.
/// assert_eq!(CloseReason::custom(4000, "closed by server")?.code(), 4000);
/// assert!(CloseReason::custom(1006, "abnormal").is_err());
/// # Ok::<(), relay_registry::InvalidCloseReason>(())
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
    /// A claim or registration was refused: the error's [`code`](RegistryError::code) and
    /// [`reason`](RegistryError::reason) (4409, 4404, 4429). Relays answer
    /// [`InvalidServerId`](RegistryError::InvalidServerId) with HTTP 400 before any upgrade
    /// instead; should one be closed with it anyway, it carries 4400.
    Refused(RegistryError),
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
    /// An application close, e.g. one a binary requested for its phone: made by
    /// [`CloseReason::custom`], so its code is always 1000 or in 3000–4999.
    Custom(CustomClose),
}

/// The code and text of a [`CloseReason::Custom`]; valid by construction (see
/// [`CloseReason::custom`]).
///
/// # Examples
///
/// ```
/// use relay_registry::CloseReason;
///
/// let CloseReason::Custom(close) = CloseReason::custom(4000, "bye")? else { unreachable!() };
/// assert_eq!((close.code(), close.reason()), (4000, "bye"));
/// # Ok::<(), relay_registry::InvalidCloseReason>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CustomClose {
    code: u16,
    reason: &'static str,
}

impl CustomClose {
    /// The close code: 1000 or in 3000–4999.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::CloseReason;
    ///
    /// let CloseReason::Custom(close) = CloseReason::custom(1000, "")? else { unreachable!() };
    /// assert_eq!(close.code(), 1000);
    /// # Ok::<(), relay_registry::InvalidCloseReason>(())
    /// ```
    pub fn code(&self) -> u16 {
        self.code
    }

    /// The close reason text: at most 123 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::CloseReason;
    ///
    /// let CloseReason::Custom(close) = CloseReason::custom(4000, "bye")? else { unreachable!() };
    /// assert_eq!(close.reason(), "bye");
    /// # Ok::<(), relay_registry::InvalidCloseReason>(())
    /// ```
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

/// Why [`CloseReason::custom`] refused a code or a reason text.
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, InvalidCloseReason};
///
/// assert_eq!(CloseReason::custom(0, "x"), Err(InvalidCloseReason::Code(0)));
/// assert_eq!(
///     CloseReason::custom(4000, "x".repeat(124).leak()),
///     Err(InvalidCloseReason::ReasonTooLong(124)),
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCloseReason {
    /// The code is neither 1000 nor in 3000–4999: a WebSocket peer must not send it as an
    /// application close (0–999 and above 4999 are not close codes at all; 1005, 1006 and 1015
    /// must never appear on the wire; the other 1xxx codes are the protocol's own).
    #[error("close code {0} is not 1000 or in 3000-4999")]
    Code(u16),
    /// The reason text is longer than the 123 bytes a close frame can carry.
    #[error("close reason of {0} bytes is longer than 123 bytes")]
    ReasonTooLong(usize),
}

/// The longest close reason a close frame can carry: 125 bytes of payload minus the code.
const MAX_REASON: usize = 123;

impl CloseReason {
    /// An application close with `code` and `reason`.
    ///
    /// # Errors
    ///
    /// [`InvalidCloseReason::Code`] unless `code` is 1000 or in 3000–4999 (the codes the relay
    /// protocol lets a binary ask for), [`InvalidCloseReason::ReasonTooLong`] if `reason` is
    /// longer than 123 bytes.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::{CloseReason, InvalidCloseReason};
    ///
    /// let close = CloseReason::custom(4000, "closed by server")?;
    /// assert_eq!(close.to_string(), "4000 closed by server");
    /// for code in [0, 999, 1001, 1005, 1006, 1011, 2999, 5000] {
    ///     assert_eq!(CloseReason::custom(code, "x"), Err(InvalidCloseReason::Code(code)));
    /// }
    /// # Ok::<(), InvalidCloseReason>(())
    /// ```
    pub const fn custom(code: u16, reason: &'static str) -> Result<Self, InvalidCloseReason> {
        if !matches!(code, 1000 | 3000..=4999) {
            return Err(InvalidCloseReason::Code(code));
        }
        if reason.len() > MAX_REASON {
            return Err(InvalidCloseReason::ReasonTooLong(reason.len()));
        }
        Ok(CloseReason::Custom(CustomClose { code, reason }))
    }

    /// The WebSocket close code.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::CloseReason;
    ///
    /// assert_eq!(CloseReason::ShuttingDown.code(), 1001);
    /// ```
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Reclaimed | CloseReason::Released => 4404,
            CloseReason::Refused(error) => error.code(),
            CloseReason::GraceExpired
            | CloseReason::HeartbeatTimeout
            | CloseReason::BacklogFull
            | CloseReason::LinkLost => 1011,
            CloseReason::ShuttingDown => 1001,
            CloseReason::InvalidJson | CloseReason::JsonTooDeep => 1007,
            CloseReason::PolicyViolation | CloseReason::MessageTooSlow => 1008,
            CloseReason::MessageTooBig => 1009,
            CloseReason::ProtocolError => 1002,
            CloseReason::ClusterConnectionLost => 1012,
            CloseReason::Custom(close) => close.code,
        }
    }

    /// The close reason text sent with the code (at most 123 bytes).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::CloseReason;
    ///
    /// assert_eq!(CloseReason::BacklogFull.reason(), "phone backlog full");
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            CloseReason::Reclaimed => "binary reclaimed server-id",
            CloseReason::Released => "binary released server-id",
            CloseReason::GraceExpired => "binary did not reconnect",
            CloseReason::Refused(error) => error.reason(),
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
            CloseReason::Custom(close) => close.reason,
        }
    }
}

impl From<RegistryError> for CloseReason {
    /// The close a refused claim or registration is told with after the upgrade:
    /// [`CloseReason::Refused`].
    fn from(error: RegistryError) -> Self {
        CloseReason::Refused(error)
    }
}

impl std::fmt::Display for CloseReason {
    /// `"<code> <reason>"`, e.g. `4404 binary reclaimed server-id`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.code(), self.reason())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_fits_a_close_frame_and_uses_a_sendable_code() {
        let all = [
            CloseReason::Reclaimed,
            CloseReason::Released,
            CloseReason::GraceExpired,
            CloseReason::Refused(RegistryError::ServerIdConflict),
            CloseReason::Refused(RegistryError::NoServer),
            CloseReason::Refused(RegistryError::PhonesAtCap),
            CloseReason::Refused(RegistryError::InvalidServerId),
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
        for reason in all {
            let code = reason.code();
            assert!(
                matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999),
                "{reason:?}: {code}"
            );
            assert!(!reason.reason().is_empty() && reason.reason().len() <= MAX_REASON);
        }
    }

    #[test]
    fn custom_accepts_exactly_1000_and_3000_to_4999() {
        for code in 0..=u16::MAX {
            let ok = code == 1000 || (3000..=4999).contains(&code);
            assert_eq!(CloseReason::custom(code, "r").is_ok(), ok, "{code}");
        }
        assert!(CloseReason::custom(4000, "r".repeat(MAX_REASON).leak()).is_ok());
    }
}
