//! Why the registry refused a claim or a registration.

/// Why a claim, takeover or phone registration was refused. Nothing changed in the registry, and
/// the conn that was offered was not closed: the caller decides what to tell it — for the refusals
/// that are closes, [`CloseReason::try_from`](crate::CloseReason#impl-TryFrom<RegistryError>-for-CloseReason)
/// gives the close to send after the upgrade.
///
/// Its [`Display`](std::fmt::Display) text is its [`reason`](Self::reason): one spelling each.
///
/// # Examples
///
/// ```
/// use relay_registry::RegistryError;
///
/// assert_eq!(RegistryError::ServerIdConflict.code(), Some(4409));
/// assert_eq!(RegistryError::PhonesAtCap.reason(), "too many phones for server-id");
/// assert_eq!(RegistryError::NoServer.to_string(), RegistryError::NoServer.reason());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RegistryError {
    /// Another binary holds the server-id (or, for a takeover, not the expected incumbent): the
    /// claimant is closed 4409 `server-id already claimed`.
    ServerIdConflict,
    /// No binary, live or gracing, holds the server-id: the phone is closed 4404
    /// `no server with that id`.
    NoServer,
    /// The server-id already has the configured maximum number of phones: the phone is closed
    /// 4429 `too many phones for server-id`.
    PhonesAtCap,
    /// The server-id is empty or longer than the configured maximum.
    ///
    /// This is a bad request, not a close: a relay checks the id before the WebSocket upgrade
    /// ([`Registry::check_server_id`](crate::Registry::check_server_id)) and answers HTTP 400
    /// without upgrading, so it has no close [`code`](Self::code).
    InvalidServerId,
}

impl RegistryError {
    /// The WebSocket close code a relay closes the refused conn with; `None` for
    /// [`InvalidServerId`](Self::InvalidServerId), a bad request answered before any upgrade.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::RegistryError;
    ///
    /// assert_eq!(RegistryError::NoServer.code(), Some(4404));
    /// assert_eq!(RegistryError::InvalidServerId.code(), None);
    /// ```
    pub fn code(&self) -> Option<u16> {
        match self {
            RegistryError::ServerIdConflict => Some(4409),
            RegistryError::NoServer => Some(4404),
            RegistryError::PhonesAtCap => Some(4429),
            RegistryError::InvalidServerId => None,
        }
    }

    /// The close reason text for this error, as the relay protocol spells it (for an invalid id,
    /// the text of the HTTP 400); also its `Display` text.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::RegistryError;
    ///
    /// assert_eq!(RegistryError::ServerIdConflict.reason(), "server-id already claimed");
    /// ```
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::ServerIdConflict => "server-id already claimed",
            RegistryError::NoServer => "no server with that id",
            RegistryError::PhonesAtCap => "too many phones for server-id",
            RegistryError::InvalidServerId => "invalid server-id",
        }
    }
}

impl std::fmt::Display for RegistryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for RegistryError {}
