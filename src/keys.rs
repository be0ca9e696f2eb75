//! Typed generational keys: a server key can never index the phone map, and vice versa.

slotmap::new_key_type! {
    /// Key of a server-id's slot in the registry's server map.
    pub(crate) struct ServerKey;
    /// Key of one phone registration in the registry's phone map.
    pub(crate) struct PhoneKey;
}
