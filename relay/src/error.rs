//! Why the relay could not start: [`StartError`], each with the one line a user reads.

use std::io;
use std::net::SocketAddr;

/// Why [`start`](crate::start) failed. Its `Display` is one line, fit for a user: the `relay`
/// binary prints it as `relay: error: …` and exits 2 for a
/// [configuration error](StartError::is_config), 1 otherwise.
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use relay_server::{RelayConfig, StartError};
///
/// // Two relays cannot listen on one address.
/// let first = relay_server::start(RelayConfig { listen: ([127, 0, 0, 1], 0).into(), ..RelayConfig::default() })
///     .await
///     .expect("a free port");
/// let taken = first.local_addr();
/// let second = relay_server::start(RelayConfig { listen: taken, ..RelayConfig::default() }).await;
/// let Err(error) = second else { panic!("the address is taken") };
/// assert!(matches!(error, StartError::Listen { .. }));
/// assert!(!error.is_config());
/// assert!(error.to_string().starts_with(&format!("cannot listen on {taken}: ")));
/// first.shutdown().await;
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration cannot work (a bad file, a value out of range): nothing was started.
    #[error("{0}")]
    Config(String),
    /// The public address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
    /// The metrics address could not be bound.
    #[error("cannot serve metrics on {addr}: {source}")]
    MetricsListen {
        /// The address asked for.
        addr: SocketAddr,
        /// The operating system's reason.
        source: io::Error,
    },
}

impl StartError {
    /// True if the configuration itself is at fault (the `relay` binary exits 2), false for a
    /// failure of the moment (an address in use: exit 1). NATS being unreachable is neither: the
    /// relay starts and joins the cluster once it can.
    pub fn is_config(&self) -> bool {
        matches!(self, StartError::Config(_))
    }
}

impl From<StartError> for io::Error {
    /// The same one line, for callers that work in `io::Result` (the socket's error kind kept).
    fn from(error: StartError) -> io::Error {
        let kind = match &error {
            StartError::Listen { source, .. } | StartError::MetricsListen { source, .. } => {
                source.kind()
            }
            StartError::Config(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, error.to_string())
    }
}
