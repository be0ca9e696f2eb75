//! Compact owned copies of server-ids and conn-ids: short ones inline, no allocation.
//!
//! A held id and every phone entry keep a copy of a string (the registry never borrows from a
//! `Conn`). Relay ids are short, and a phone's conn-id embeds its server-id
//! (`client-<server-id>-<8 hex>`), so both usually fit in 24 bytes without touching the heap.

/// Bytes an [`IdCopy`] keeps inline.
const ID_INLINE: usize = 22;
/// Bytes a [`ConnIdCopy`] keeps inline (besides the elided server-id).
const CONN_ID_INLINE: usize = 21;
/// `ConnIdCopy::Inline::at` when no server-id was elided.
const NOT_ELIDED: u8 = u8::MAX;

/// An owned copy of a server-id: inline up to 22 bytes, boxed beyond. 24 bytes.
pub(crate) enum IdCopy {
    Inline { len: u8, bytes: [u8; ID_INLINE] },
    Heap(Box<str>),
}

impl IdCopy {
    pub(crate) fn new(id: &str) -> Self {
        if id.len() <= ID_INLINE {
            let mut bytes = [0; ID_INLINE];
            bytes[..id.len()].copy_from_slice(id.as_bytes());
            IdCopy::Inline {
                len: id.len() as u8,
                bytes,
            }
        } else {
            IdCopy::Heap(id.into())
        }
    }

    pub(crate) fn as_bytes(&self) -> &[u8] {
        match self {
            IdCopy::Inline { len, bytes } => &bytes[..usize::from(*len)],
            IdCopy::Heap(id) => id.as_bytes(),
        }
    }

    pub(crate) fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `&str`, so always valid UTF-8.
            IdCopy::Inline { .. } => {
                std::str::from_utf8(self.as_bytes()).expect("copied from a str")
            }
            IdCopy::Heap(id) => id,
        }
    }
}

/// An owned copy of a phone's conn-id, compared against conn-ids that binaries address.
///
/// When the conn-id contains its server-id (as the relay's `client-<server-id>-<8 hex>` does),
/// only the bytes around it are kept, with the position of the elided server-id; [`matches`]
/// compares that part against the server-id it was registered under. What does not fit in 21
/// bytes is boxed whole. 24 bytes.
///
/// [`matches`]: ConnIdCopy::matches
pub(crate) enum ConnIdCopy {
    Inline {
        /// The kept bytes (the conn-id without the elided server-id).
        len: u8,
        /// Where the server-id was cut out, or [`NOT_ELIDED`].
        at: u8,
        bytes: [u8; CONN_ID_INLINE],
    },
    Heap(Box<str>),
}

impl ConnIdCopy {
    /// A copy of `conn_id`, for a phone of `server_id`.
    pub(crate) fn new(conn_id: &str, server_id: &str) -> Self {
        if conn_id.len() <= CONN_ID_INLINE {
            return Self::inline(&[conn_id], NOT_ELIDED);
        }
        // Elide the server-id only if the rest then fits, so it can start at most 21 bytes in:
        // a few byte comparisons, no substring-search setup.
        if let Some(rest_len) = conn_id.len().checked_sub(server_id.len()) {
            if rest_len <= CONN_ID_INLINE {
                let first = server_id.as_bytes().first().copied();
                let found = (0..=rest_len)
                    .filter(|&at| conn_id.as_bytes().get(at).copied() == first)
                    .find_map(|at| {
                        let tail = conn_id.get(at..)?.strip_prefix(server_id)?;
                        Some((conn_id.get(..at)?, tail, at))
                    });
                if let Some((head, tail, at)) = found {
                    return Self::inline(&[head, tail], at as u8);
                }
            }
        }
        ConnIdCopy::Heap(conn_id.into())
    }

    fn inline(parts: &[&str], at: u8) -> Self {
        let mut bytes = [0; CONN_ID_INLINE];
        let mut len = 0;
        for part in parts {
            bytes[len..len + part.len()].copy_from_slice(part.as_bytes());
            len += part.len();
        }
        ConnIdCopy::Inline {
            len: len as u8,
            at,
            bytes,
        }
    }

    /// An empty copy (for a vacated entry).
    pub(crate) fn empty() -> Self {
        ConnIdCopy::Inline {
            len: 0,
            at: NOT_ELIDED,
            bytes: [0; CONN_ID_INLINE],
        }
    }

    /// Whether this is a copy of `conn_id`, given the `server_id` it was made for.
    pub(crate) fn matches(&self, server_id: &[u8], conn_id: &str) -> bool {
        let query = conn_id.as_bytes();
        match self {
            ConnIdCopy::Heap(copy) => copy.as_bytes() == query,
            ConnIdCopy::Inline { len, at, bytes } => {
                let kept = &bytes[..usize::from(*len)];
                if *at == NOT_ELIDED {
                    return short_eq(kept, query);
                }
                let (at, cut) = (usize::from(*at), server_id.len());
                // The part after the server-id first: it is what tells an id's phones apart.
                query.len() == kept.len() + cut
                    && short_eq(&query[at + cut..], &kept[at..])
                    && short_eq(&query[..at], &kept[..at])
                    && query[at..at + cut] == *server_id
            }
        }
    }

    /// The conn-id this copies (for diagnostics).
    #[cfg(any(test, feature = "test-util"))]
    pub(crate) fn to_string(&self, server_id: &str) -> String {
        match self {
            ConnIdCopy::Heap(copy) => copy.to_string(),
            ConnIdCopy::Inline { len, at, bytes } => {
                let kept = String::from_utf8_lossy(&bytes[..usize::from(*len)]);
                if *at == NOT_ELIDED {
                    kept.into_owned()
                } else {
                    let at = usize::from(*at);
                    format!("{}{server_id}{}", &kept[..at], &kept[at..])
                }
            }
        }
    }
}

/// Equality of the few bytes of an inline copy, in 8-byte words and without a `memcmp` call.
/// The last word is compared first: sequentially assigned ids differ at the end.
#[inline]
fn short_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    let word = |s: &[u8], i: usize| {
        let mut w = [0; 8];
        w.copy_from_slice(&s[i..i + 8]);
        u64::from_ne_bytes(w)
    };
    if word(a, n - 8) != word(b, n - 8) {
        return false;
    }
    // The rest in 8-byte steps; the last step may overlap the word already compared.
    (0..n - 8).step_by(8).all(|i| word(a, i) == word(b, i))
}

static_assertions::const_assert!(std::mem::size_of::<IdCopy>() == 24);
static_assertions::const_assert!(std::mem::size_of::<ConnIdCopy>() == 24);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_copy_keeps_short_ids_inline_and_long_ids_boxed() {
        for id in [
            "s",
            "srv-0000000000ab",
            &"x".repeat(22),
            &"y".repeat(23),
            "ünïcødé",
        ] {
            let copy = IdCopy::new(id);
            assert_eq!(copy.as_str(), id);
            assert_eq!(copy.as_bytes(), id.as_bytes());
            assert_eq!(matches!(copy, IdCopy::Inline { .. }), id.len() <= 22);
        }
    }

    #[test]
    fn short_eq_finds_a_difference_at_any_position() {
        for n in 0..=CONN_ID_INLINE {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(short_eq(&a, &a.clone()));
            assert!(!short_eq(&a, &a[..n.saturating_sub(1)]) || n == 0);
            for i in 0..n {
                let mut b = a.clone();
                b[i] ^= 0x80;
                assert!(!short_eq(&a, &b), "len {n}, byte {i}");
            }
        }
    }

    #[test]
    fn conn_id_copy_matches_exactly_its_conn_id() {
        let server = "srv-0000000000ab";
        let long = format!("client-{}-{}", "z".repeat(30), "ff");
        let cases = [
            "p1".to_string(),
            format!("client-{server}-0000abcd"),
            server.to_string(),
            format!("{server}{server}"),
            format!("x{server}-suffix-that-is-long"),
            long,
            String::new(),
        ];
        for conn_id in &cases {
            let copy = ConnIdCopy::new(conn_id, server);
            assert_eq!(&copy.to_string(server), conn_id);
            for other in &cases {
                assert_eq!(
                    copy.matches(server.as_bytes(), other),
                    other == conn_id,
                    "{conn_id:?} vs {other:?}"
                );
            }
            for near in [format!("{conn_id}x"), format!("x{conn_id}")] {
                assert!(!copy.matches(server.as_bytes(), &near));
            }
        }
        let relay = format!("client-{server}-0000abcd");
        assert!(matches!(
            ConnIdCopy::new(&relay, server),
            ConnIdCopy::Inline { at: 7, .. }
        ));
        assert!(
            !ConnIdCopy::new(&relay, server)
                .matches(server.as_bytes(), "client-srv-0000000000ac-0000abcd")
        );
    }
}
