//! Typed keys: a server key names a server slot, a phone key one phone position in a tenure's
//! phone list; neither converts into or compares with the other.

slotmap::new_key_type! {
    /// Key of a server-id's slot in the registry's server map (generational).
    pub(crate) struct ServerKey;
}

/// Key of one phone registration: its position in its tenure's phone list (the ticket holds the
/// tenure itself, so no server key is needed to find the list). Positions are reused, so a ticket
/// acts only if the registration's epoch matches too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PhoneKey {
    pub(crate) pos: usize,
}
