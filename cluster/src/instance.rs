//! Who an instance is: its [`InstanceId`] (a name, stable for the process) and its
//! [`Incarnation`] (a random number per liveness registration), together an [`Owner`].

use std::fmt;

/// The longest instance id accepted, in bytes.
pub const MAX_INSTANCE_ID: usize = 64;

/// The name of one relay instance in a cluster (`--instance-id`).
///
/// One to [`MAX_INSTANCE_ID`] ASCII letters, digits, `-` or `_`: exactly the characters that are
/// legal, unescaped, in a NATS subject token, a KV key and a KV value, so an instance id is used
/// verbatim in the subjects addressed to it (`relay.<instance>.link`) and as its liveness key.
///
/// Must be unique among running instances: a second process announcing the same id takes the
/// liveness entry over, the first one's next refresh fails and it fences itself (then announces
/// again, and so on). [`InstanceId::generate`] adds a random suffix for that reason.
///
/// # Examples
///
/// ```
/// use relay_cluster::instance::InstanceId;
///
/// let id = InstanceId::new("relay-1")?;
/// assert_eq!(id.as_str(), "relay-1");
/// assert!(InstanceId::new("a.b").is_err()); // a dot would split a subject token
/// assert!(InstanceId::new("").is_err());
/// // The default: a host name made legal, plus a random suffix.
/// let generated = InstanceId::generate("web 01.example.org");
/// assert!(generated.as_str().starts_with("web-01-example-org-"));
/// # Ok::<(), relay_cluster::instance::InvalidInstanceId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct InstanceId(String);

/// Why [`InstanceId::new`] refused a name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("an instance id is 1 to 64 ASCII letters, digits, '-' or '_'; got {0:?}")]
pub struct InvalidInstanceId(pub String);

impl InstanceId {
    /// `name` as an instance id.
    ///
    /// # Errors
    ///
    /// [`InvalidInstanceId`] unless `name` is 1 to [`MAX_INSTANCE_ID`] bytes of `[A-Za-z0-9_-]`.
    pub fn new(name: impl Into<String>) -> Result<Self, InvalidInstanceId> {
        let name = name.into();
        let legal = !name.is_empty()
            && name.len() <= MAX_INSTANCE_ID
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if legal {
            Ok(InstanceId(name))
        } else {
            Err(InvalidInstanceId(name))
        }
    }

    /// A fresh id: `host` with every illegal character replaced by `-` (cut to 46 bytes), then
    /// `-` and 8 random hex digits, so two processes on one host never share a name.
    pub fn generate(host: &str) -> Self {
        let mut name: String = host
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '-'
                }
            })
            .take(MAX_INSTANCE_ID - 18)
            .collect();
        if name.is_empty() {
            name.push_str("relay");
        }
        name.push_str(&format!("-{:08x}", random_u64() as u32));
        InstanceId(name)
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One liveness registration of an instance: a random number drawn each time the instance
/// (re)announces itself (at start, and after it fenced itself off).
///
/// A directory entry names its owner *with* the incarnation, so the entries an instance made
/// before it lost its lease stay dead even once the same instance id is alive again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Incarnation(pub u64);

impl Incarnation {
    /// A fresh random incarnation.
    pub fn random() -> Self {
        Incarnation(random_u64())
    }
}

/// The owner of a directory entry: an instance in one incarnation.
///
/// Stored as the text `<instance>.<incarnation as 16 hex digits>` (the dot cannot occur in an
/// instance id, so the split is unambiguous).
///
/// # Examples
///
/// ```
/// use relay_cluster::{instance::Incarnation, instance::InstanceId, instance::Owner};
///
/// let owner = Owner { instance: InstanceId::new("relay-1")?, incarnation: Incarnation(0xab) };
/// assert_eq!(owner.encode(), "relay-1.00000000000000ab");
/// assert_eq!(Owner::decode(owner.encode().as_bytes()), Some(owner));
/// assert_eq!(Owner::decode(b"relay-1"), None);
/// # Ok::<(), relay_cluster::instance::InvalidInstanceId>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Owner {
    /// The instance.
    pub instance: InstanceId,
    /// Its incarnation when it wrote the entry.
    pub incarnation: Incarnation,
}

impl Owner {
    /// The stored form.
    pub fn encode(&self) -> String {
        format!("{}.{:016x}", self.instance, self.incarnation.0)
    }

    /// Parses the stored form; `None` for anything [`encode`](Self::encode) does not produce.
    pub fn decode(bytes: &[u8]) -> Option<Owner> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (instance, incarnation) = text.split_once('.')?;
        if incarnation.len() != 16 {
            return None;
        }
        Some(Owner {
            instance: InstanceId::new(instance).ok()?,
            incarnation: Incarnation(u64::from_str_radix(incarnation, 16).ok()?),
        })
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

/// 64 random bits from the OS, or from std's per-process hash keys should it fail.
pub(crate) fn random_u64() -> u64 {
    getrandom::u64().unwrap_or_else(|_| {
        use std::hash::{BuildHasher, RandomState};
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_accept_exactly_subject_token_characters() {
        assert!(InstanceId::new("A-z_09").is_ok());
        assert!(InstanceId::new("x".repeat(MAX_INSTANCE_ID)).is_ok());
        for bad in ["", "a b", "a.b", "a*", "a>", "é", "a/b"] {
            assert!(InstanceId::new(bad).is_err(), "{bad:?}");
        }
        assert!(InstanceId::new("x".repeat(MAX_INSTANCE_ID + 1)).is_err());
    }

    #[test]
    fn generated_ids_are_legal_and_distinct() {
        let a = InstanceId::generate("héllo.wörld with a very long host name that goes on and on");
        let b = InstanceId::generate("héllo.wörld with a very long host name that goes on and on");
        assert!(InstanceId::new(a.as_str()).is_ok(), "{a}");
        assert_ne!(a, b);
        assert!(InstanceId::new(InstanceId::generate("").as_str()).is_ok());
    }

    #[test]
    fn owner_decode_rejects_malformed_values() {
        for bad in [
            &b"r.0"[..],
            b"r.000000000000000g",
            b".0000000000000000",
            b"\xff.0000000000000000",
        ] {
            assert_eq!(Owner::decode(bad), None);
        }
    }
}
