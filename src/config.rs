//! How a registry is set up: the phone cap, the id length limit and the clock.

use crate::clock::{Clock, SystemClock};
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
///     .max_phones_per_server(16)
///     .max_server_id_len(64)
///     .clock(Arc::new(ManualClock::new()));
/// assert_eq!(config.phone_cap(), 16);
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
    pub fn max_phones_per_server(mut self, n: usize) -> Self {
        self.max_phones_per_server = n;
        self
    }

    /// Server-ids longer than `n` bytes are rejected with
    /// [`InvalidServerId`](crate::RegistryError::InvalidServerId). The default is 256; `0` is
    /// raised to 1 (the empty id is always invalid).
    pub fn max_server_id_len(mut self, n: usize) -> Self {
        self.max_server_id_len = n.max(1);
        self
    }

    /// The clock grace deadlines are measured on (default: [`SystemClock`]).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The configured phone cap per server-id (`0` = unlimited).
    pub fn phone_cap(&self) -> usize {
        self.max_phones_per_server
    }

    /// The configured maximum server-id length in bytes.
    pub fn server_id_limit(&self) -> usize {
        self.max_server_id_len
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
