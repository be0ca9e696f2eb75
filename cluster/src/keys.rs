//! Server-ids as KV keys: a collision-free encoding of any id into the key alphabet.
//!
//! A server-id is attacker-chosen UTF-8 of up to 256 bytes; a JetStream KV key may only use
//! `[-/_=.A-Za-z0-9]`, must not start or end with `.`, and `.` separates hierarchy levels. The key
//! of an id is `id-` followed by the id's bytes in unpadded base64url (RFC 4648 §5, alphabet
//! `[A-Za-z0-9_-]`): a bijection between byte strings and canonical encodings, so two different
//! ids can never share a key, and nothing in an id can reach the key syntax. 256 bytes become
//! 342 characters. base64 is the `base64` crate's, not ours.
//!
//! Server-ids never appear in NATS subjects at all: subjects name only the instance that must
//! act (an [`InstanceId`](super::instance::InstanceId), validated to be one subject token), and the id
//! travels in the message body (see [`wire`](super::wire)).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// What every directory key starts with.
const PREFIX: &str = "id-";

/// The directory key of `server_id`. Total and injective: every string has exactly one key and
/// no two strings share one.
///
/// # Examples
///
/// ```
/// use relay_cluster::keys::{key_of, server_id_of};
///
/// assert_eq!(key_of("srv-1"), "id-c3J2LTE");
/// assert_ne!(key_of("a.b"), key_of("a/b"));
/// assert_eq!(server_id_of(&key_of("x peer=6.6.6.6 >")).as_deref(), Some("x peer=6.6.6.6 >"));
/// ```
pub fn key_of(server_id: &str) -> String {
    let mut key = String::with_capacity(PREFIX.len() + server_id.len().div_ceil(3) * 4);
    key.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(server_id.as_bytes(), &mut key);
    key
}

/// The server-id a directory key names; `None` for a key [`key_of`] never produces.
pub fn server_id_of(key: &str) -> Option<String> {
    let bytes = URL_SAFE_NO_PAD.decode(key.strip_prefix(PREFIX)?).ok()?;
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_decode_back_and_reject_foreign_keys() {
        for id in ["", "a", "ab", "abc", "é", "\u{0}\u{85}", "a.b.c", "*", ">"] {
            assert_eq!(server_id_of(&key_of(id)).as_deref(), Some(id));
        }
        // Non-canonical trailing bits, padding and foreign prefixes are not keys of any id.
        for foreign in ["id-YR", "id-YQ==", "x-YQ", "YQ", "id-+/"] {
            assert_eq!(server_id_of(foreign), None, "{foreign}");
        }
    }
}
