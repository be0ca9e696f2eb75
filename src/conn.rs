//! What a connection is to the registry (`Conn`), and the closes the registry makes
//! (`CloseReason`).

use crate::error::RegistryError;

/// A connection the registry holds: a binary's or a phone's socket, or a mock.
///
/// The registry stores connections as `Arc<C>` and hands them back through its lookups and guards
/// ([`PhoneTicket::binary`](crate::PhoneTicket::binary), [`ServerClaim::phone`](crate::ServerClaim::phone),
/// [`Registry::phones_for`](crate::Registry::phones_for), ...). The trait asks only for what the
/// registry itself calls, never while holding its lock:
///
/// - [`conn_id`](Conn::conn_id): once per [`register_phone`](crate::Registry::register_phone), on
///   the calling thread, before the lock, for the fingerprint the registry keeps; and once on each
///   phone a lookup by conn-id ([`phone_for`](crate::Registry::phone_for),
///   [`ServerClaim::phone`](crate::ServerClaim::phone)) found by that fingerprint, on the caller's
///   thread, after every lock is released, to confirm it. Never for binaries.
/// - [`close`](Conn::close): once for each phone it evicts — on the thread whose call (or guard
///   drop) ended the binary's tenure, after the registry's state is final and before that call
///   returns; for a grace expiry, on the thread that ran [`expire_due`](crate::Registry::expire_due)
///   (a [`Reaper`](crate::Reaper)'s own std thread, outside any async runtime, if a reaper drives
///   it). Never on a binary, never on a refused conn.
///
/// The registry never sends. Sending a frame is the routing contract between the parts of a relay,
/// and belongs to the connection type itself: a phone's task forwards a frame with
/// `ticket.binary()?.send(frame)`, a binary's task with `claim.phone(conn_id)?.send(frame)`, where
/// `send` is the connection type's own method, taking its own frame type (an owned `Utf8Bytes`
/// in a tungstenite relay, so a frame moves from one socket's reader to another's writer without
/// a copy) and returning its own errors. The registry only finds the conn. Besides those calls
/// the registry drops its `Arc`s of conns it removed — also after releasing its lock — so a
/// conn's `Drop` runs on the same threads as `close`.
///
/// Since the lock is never held, an implementation may call back into the registry from either
/// method or its `Drop`, and drop a guard from inside `close`. Neither may block: they run on
/// whichever thread caused them, often while other connections wait.
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, Conn, Registry};
/// use std::sync::{Arc, Mutex};
///
/// struct Mock { id: String, sent: Mutex<Vec<String>>, closed: Mutex<Option<CloseReason>> }
///
/// impl Conn for Mock {
///     fn conn_id(&self) -> &str { &self.id }
///     fn close(&self, reason: CloseReason) {
///         // Idempotent: the first reason wins.
///         self.closed.lock().unwrap().get_or_insert(reason);
///     }
/// }
///
/// // Sending is the connection type's own business, not the registry's.
/// impl Mock {
///     fn send(&self, frame: &str) -> bool {
///         let open = self.closed.lock().unwrap().is_none();
///         if open {
///             self.sent.lock().unwrap().push(frame.to_owned());
///         }
///         open
///     }
/// }
///
/// let mock = |id: &str| Arc::new(Mock { id: id.into(), sent: Mutex::default(), closed: Mutex::new(None) });
/// let registry = Registry::new();
/// let claim = registry.claim_server("srv", mock("bin"))?;
/// let ticket = registry.register_phone("srv", mock("phone"))?;
/// // Routing goes through the handles the registry returns:
/// assert!(ticket.binary().expect("registered").send("to the binary"));
/// assert!(claim.phone("phone").expect("registered").send("to the phone"));
/// drop(claim); // evicts the phone: the registry closes it
/// assert_eq!(*ticket.conn().closed.lock().unwrap(), Some(CloseReason::Released));
/// assert!(!ticket.conn().send("late"));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Conn: Send + Sync + 'static {
    /// The connection's id (for a phone, the `conn_id` a binary addresses it by).
    ///
    /// Must be stable for the life of the connection and must not block. The registry reads a
    /// phone's id in [`register_phone`](crate::Registry::register_phone) before taking its lock,
    /// and keeps a fingerprint of it (not a copy); a lookup by conn-id reads it again on the phone
    /// it found, with no lock held, to confirm the fingerprint's match. It never reads a binary's.
    ///
    /// # Examples
    ///
    /// See [`Conn`], which implements both methods for a mock.
    fn conn_id(&self) -> &str;

    /// Closes the connection with `reason`'s code and text. Idempotent and never blocks.
    ///
    /// The registry calls it only on phones it evicts (release, reclaim, takeover, an ended
    /// tenure, grace expiry), never on a binary and never on a conn whose registration it
    /// refused, and only with the lock released. A grace expiry may call it on a
    /// [`Reaper`](crate::Reaper)'s thread, where there is no async runtime: enqueue the close (a
    /// channel `try_send`, a cancellation token), do not spawn a task there.
    ///
    /// # Examples
    ///
    /// See [`Conn`], which implements both methods for a mock.
    fn close(&self, reason: CloseReason);
}

/// Why the registry closes a phone (or a relay closes a refused conn): a WebSocket close code and
/// its reason text.
///
/// These are the closes the registry's own operations stand for: the three ways it evicts a
/// phone ([`Reclaimed`](Self::Reclaimed), [`Released`](Self::Released),
/// [`GraceExpired`](Self::GraceExpired)), a refused claim or registration
/// ([`Refused`](Self::Refused), from a [`RegistryError`]), and an application close
/// ([`custom`](Self::custom), validated) for a relay to pass on. A relay's other closes
/// (heartbeats, bad frames, shutdown, ...) are its own: it keeps them in its own type, which can
/// wrap this one.
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, RegistryError};
///
/// assert_eq!(CloseReason::Reclaimed.code(), 4404);
/// assert_eq!(CloseReason::GraceExpired.reason(), "binary did not reconnect");
/// // A refused claim is closed with the error's own code and text.
/// let refused = CloseReason::try_from(RegistryError::ServerIdConflict)?;
/// assert_eq!((refused.code(), refused.reason()), (4409, "server-id already claimed"));
/// // An invalid server-id is no close: it is answered with HTTP 400 before any upgrade.
/// assert!(CloseReason::try_from(RegistryError::InvalidServerId).is_err());
/// // Application codes are checked: only 1000 and 3000–4999 may be sent this way.
/// assert_eq!(CloseReason::custom(4000, "closed by server")?.code(), 4000);
/// assert!(CloseReason::custom(1006, "abnormal").is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CloseReason {
    /// A new binary claimed (or took over) the server-id this phone joined, or the binary's
    /// tenure was ended ([`Registry::end_tenure`](crate::Registry::end_tenure)): 4404.
    Reclaimed,
    /// The binary this phone joined released the server-id: 4404.
    Released,
    /// The binary's grace window ended without a reclaim: 1011.
    GraceExpired,
    /// A claim or registration was refused: the refusal's code and text (4409, 4404, 4429).
    /// Made by [`CloseReason::try_from`] a [`RegistryError`].
    Refused(Refusal),
    /// An application close, e.g. one a binary requested for its phone: made by
    /// [`CloseReason::custom`], so its code is always 1000 or in 3000–4999.
    Custom(CustomClose),
}

/// A refused claim or registration as a close: a [`RegistryError`] that has a close code (every
/// one but [`InvalidServerId`](RegistryError::InvalidServerId)). Made by
/// [`CloseReason::try_from`].
///
/// # Examples
///
/// ```
/// use relay_registry::{CloseReason, RegistryError};
///
/// let CloseReason::Refused(refusal) = CloseReason::try_from(RegistryError::PhonesAtCap)? else {
///     unreachable!()
/// };
/// assert_eq!(refusal.error(), RegistryError::PhonesAtCap);
/// # Ok::<(), RegistryError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Refusal {
    error: RegistryError,
    code: u16,
}

impl Refusal {
    /// The refusal this close tells.
    ///
    /// # Examples
    ///
    /// See [`Refusal`].
    pub fn error(&self) -> RegistryError {
        self.error
    }
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
    /// assert_eq!(CloseReason::GraceExpired.code(), 1011);
    /// ```
    pub fn code(&self) -> u16 {
        match self {
            CloseReason::Reclaimed | CloseReason::Released => 4404,
            CloseReason::GraceExpired => 1011,
            CloseReason::Refused(refusal) => refusal.code,
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
    /// assert_eq!(CloseReason::Released.reason(), "binary released server-id");
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            CloseReason::Reclaimed => "binary reclaimed server-id",
            CloseReason::Released => "binary released server-id",
            CloseReason::GraceExpired => "binary did not reconnect",
            CloseReason::Refused(refusal) => refusal.error.reason(),
            CloseReason::Custom(close) => close.reason,
        }
    }
}

impl TryFrom<RegistryError> for CloseReason {
    /// The error itself, when it is no close (an invalid server-id is a bad request).
    type Error = RegistryError;

    /// The close a refused claim or registration is told with after the upgrade:
    /// [`CloseReason::Refused`].
    ///
    /// # Errors
    ///
    /// The error back for [`RegistryError::InvalidServerId`], which has no close code.
    fn try_from(error: RegistryError) -> Result<Self, RegistryError> {
        match error.code() {
            Some(code) => Ok(CloseReason::Refused(Refusal { error, code })),
            None => Err(error),
        }
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
        let mut all = vec![
            CloseReason::Reclaimed,
            CloseReason::Released,
            CloseReason::GraceExpired,
        ];
        for error in [
            RegistryError::ServerIdConflict,
            RegistryError::NoServer,
            RegistryError::PhonesAtCap,
        ] {
            all.push(CloseReason::try_from(error).unwrap());
        }
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
