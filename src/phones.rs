//! `Phones`: an owned, immutable snapshot of one server-id's phones.

use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// An owned snapshot of the phones registered under one server-id, in the order of their
/// positions in the id's list: registration order, except that a new phone takes the position
/// vacated most recently (of those still vacant), and an id whose phones have all left starts
/// afresh.
///
/// It dereferences to `[Arc<C>]`. It is a copy: registering or unregistering phones afterwards
/// never changes it, and changing it is impossible (it is immutable). The registry keeps the
/// latest snapshot of each server-id and hands out clones of it, so taking a snapshot of an
/// unchanged set of phones costs one reference-count increment and no allocation.
///
/// # Examples
///
/// ```
/// # use relay_registry::{CloseReason, Conn, Registry};
/// # use std::sync::Arc;
/// # struct Mock(String);
/// # impl Conn for Mock {
/// #     fn conn_id(&self) -> &str { &self.0 }
/// #     fn close(&self, _: CloseReason) {}
/// # }
/// let registry = Registry::new();
/// let _claim = registry.claim_server("srv", Arc::new(Mock("bin".into()))).unwrap();
/// let _a = registry.register_phone("srv", Arc::new(Mock("a".into()))).unwrap();
/// let phones = registry.phones_for("srv");
/// let _b = registry.register_phone("srv", Arc::new(Mock("b".into()))).unwrap();
/// assert_eq!(phones.len(), 1); // the snapshot did not change
/// assert_eq!(registry.phones_for("srv").len(), 2);
/// ```
pub struct Phones<C> {
    list: Option<Arc<[Arc<C>]>>,
}

impl<C> Phones<C> {
    /// A snapshot with no phones (what lookups of an id without phones return).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::Phones;
    ///
    /// let none = Phones::<()>::empty();
    /// assert!(none.is_empty());
    /// assert_eq!(none.len(), 0);
    /// ```
    pub fn empty() -> Self {
        Phones { list: None }
    }

    pub(crate) fn shared(list: Arc<[Arc<C>]>) -> Self {
        Phones { list: Some(list) }
    }
}

impl<C> Deref for Phones<C> {
    type Target = [Arc<C>];

    fn deref(&self) -> &[Arc<C>] {
        self.list.as_deref().unwrap_or(&[])
    }
}

impl<C> Clone for Phones<C> {
    fn clone(&self) -> Self {
        Phones {
            list: self.list.clone(),
        }
    }
}

impl<C> Default for Phones<C> {
    fn default() -> Self {
        Self::empty()
    }
}

impl<'a, C> IntoIterator for &'a Phones<C> {
    type Item = &'a Arc<C>;
    type IntoIter = std::slice::Iter<'a, Arc<C>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl<C> fmt::Debug for Phones<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Phones").field("len", &self.len()).finish()
    }
}
