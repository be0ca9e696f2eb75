//! Why the registry refused a claim or a registration.

/// Why a claim, takeover or phone registration was refused. Nothing changed in the registry, and
/// the conn that was offered was not closed: the caller decides what to tell it.
///
/// # Examples
///
/// ```
/// use relay_registry::RegistryError;
///
/// assert_eq!(RegistryError::ServerIdConflict.code(), 4409);
/// assert_eq!(RegistryError::PhonesAtCap.reason(), "too many phones for server-id");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum RegistryError {
    /// Another binary holds the server-id (or, for a takeover, not the expected incumbent).
    #[error("server-id already claimed")]
    ServerIdConflict,
    /// No binary, live or gracing, holds the server-id.
    #[error("no server with that id")]
    NoServer,
    /// The server-id already has the configured maximum number of phones.
    #[error("too many phones for server-id")]
    PhonesAtCap,
    /// The server-id is empty or longer than the configured maximum.
    #[error("invalid server-id")]
    InvalidServerId,
}

impl RegistryError {
    /// The WebSocket close code (or, for an invalid id, the HTTP-flavoured code) for this error.
    pub fn code(&self) -> u16 {
        match self {
            RegistryError::ServerIdConflict => 4409,
            RegistryError::NoServer => 4404,
            RegistryError::PhonesAtCap => 4429,
            RegistryError::InvalidServerId => 4400,
        }
    }

    /// The close reason text for this error, as the relay protocol spells it.
    pub fn reason(&self) -> &'static str {
        match self {
            RegistryError::ServerIdConflict => "server-id already claimed",
            RegistryError::NoServer => "no server with that id",
            RegistryError::PhonesAtCap => "too many phones for server-id",
            RegistryError::InvalidServerId => "invalid server-id",
        }
    }
}
