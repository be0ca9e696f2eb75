//! Typed keys: a server key names a server slot, a phone key one phone position in a server
//! slot's phone list; neither converts into or compares with the other.

slotmap::new_key_type! {
    /// Key of a server-id's slot in the registry's server map (generational).
    pub(crate) struct ServerKey;
}

/// Key of one phone registration: its server slot (a generational key) and its position in
/// that slot's phone list. Positions are reused, so a ticket acts only if the registration's
/// epoch matches too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PhoneKey {
    pub(crate) server: ServerKey,
    pub(crate) pos: usize,
}
