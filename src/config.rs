//! How a registry is set up: the phone cap, the id length limit and the clock.

use crate::clock::{Clock, SystemClock};
use crate::error::RegistryError;
use std::sync::Arc;

/// Settings for [`Registry::with_config`](crate::Registry::with_config), built by chaining.
///
/// `Config::default()` is the default setup: no phone cap, server-ids up to 256 bytes, the
/// [`SystemClock`].
///
/// # Examples
///
/// ```
/// use relay_registry::{Config, ManualClock};
/// use std::sync::Arc;
///
/// let config = Config::default()
///     .with_max_phones_per_server(16)
///     .with_max_server_id_len(64)
///     .with_clock(Arc::new(ManualClock::new()));
/// assert_eq!(config.max_phones_per_server(), 16);
/// assert_eq!(config.max_server_id_len(), 64);
/// ```
#[derive(Clone)]
pub struct Config {
    pub(crate) max_phones_per_server: usize,
    pub(crate) max_server_id_len: usize,
    pub(crate) clock: Arc<dyn Clock>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            max_phones_per_server: 0,
            max_server_id_len: 256,
            clock: Arc::new(SystemClock),
        }
    }
}

impl Config {
    /// At most `n` phones per server-id; `0` means unlimited (the default). A registration past
    /// the cap fails with [`PhonesAtCap`](crate::RegistryError::PhonesAtCap).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::Config;
    ///
    /// assert_eq!(Config::default().with_max_phones_per_server(16).max_phones_per_server(), 16);
    /// ```
    pub fn with_max_phones_per_server(mut self, n: usize) -> Self {
        self.max_phones_per_server = n;
        self
    }

    /// Server-ids longer than `n` bytes are rejected with
    /// [`InvalidServerId`](crate::RegistryError::InvalidServerId). The default is 256; `0` is
    /// raised to 1 (the empty id is always invalid).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::Config;
    ///
    /// assert_eq!(Config::default().with_max_server_id_len(0).max_server_id_len(), 1);
    /// ```
    pub fn with_max_server_id_len(mut self, n: usize) -> Self {
        self.max_server_id_len = n.max(1);
        self
    }

    /// The clock grace deadlines are measured on (default: [`SystemClock`]).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::{Config, ManualClock};
    /// use std::sync::Arc;
    ///
    /// let clock = ManualClock::new();
    /// let config = Config::default().with_clock(Arc::new(clock.clone()));
    /// assert_eq!(config.clock().now(), relay_registry::Clock::now(&clock));
    /// ```
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The phone cap per server-id (`0` = unlimited), as set by
    /// [`with_max_phones_per_server`](Self::with_max_phones_per_server).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::Config;
    ///
    /// assert_eq!(Config::default().max_phones_per_server(), 0);
    /// ```
    pub fn max_phones_per_server(&self) -> usize {
        self.max_phones_per_server
    }

    /// The longest server-id accepted, in bytes, as set by
    /// [`with_max_server_id_len`](Self::with_max_server_id_len).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::Config;
    ///
    /// assert_eq!(Config::default().max_server_id_len(), 256);
    /// ```
    pub fn max_server_id_len(&self) -> usize {
        self.max_server_id_len
    }

    /// The clock grace deadlines are measured on, as set by [`with_clock`](Self::with_clock).
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::Config;
    ///
    /// let _now = Config::default().clock().now();
    /// ```
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Checks `server_id` as every registry operation does: non-empty and at most
    /// [`max_server_id_len`](Self::max_server_id_len) bytes. Looks at the length only.
    ///
    /// # Errors
    ///
    /// [`InvalidServerId`](RegistryError::InvalidServerId) if the id is empty or too long.
    ///
    /// # Examples
    ///
    /// ```
    /// use relay_registry::{Config, RegistryError};
    ///
    /// let config = Config::default().with_max_server_id_len(8);
    /// assert_eq!(config.check_server_id("desk-1"), Ok(()));
    /// assert_eq!(config.check_server_id(""), Err(RegistryError::InvalidServerId));
    /// assert_eq!(config.check_server_id("much-too-long"), Err(RegistryError::InvalidServerId));
    /// ```
    pub fn check_server_id(&self, server_id: &str) -> Result<(), RegistryError> {
        if self.valid_id(server_id) {
            Ok(())
        } else {
            Err(RegistryError::InvalidServerId)
        }
    }

    /// Whether `server_id` is acceptable: non-empty and at most the configured length.
    pub(crate) fn valid_id(&self, server_id: &str) -> bool {
        !server_id.is_empty() && server_id.len() <= self.max_server_id_len
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("max_phones_per_server", &self.max_phones_per_server)
            .field("max_server_id_len", &self.max_server_id_len)
            .finish_non_exhaustive()
    }
}
