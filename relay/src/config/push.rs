//! Push wakes' settings ([`PushConfig`]); the service that reads and uses them is `push`.

use std::path::PathBuf;
use std::time::Duration;

/// Where FCM's HTTP v1 API is by default.
pub(crate) const DEFAULT_ENDPOINT: &str = "https://fcm.googleapis.com";

/// Push wakes' settings: `--fcm-credentials`, `--fcm-endpoint`, `--fcm-ca-file`, and the
/// protocol's limits.
///
/// # Examples
///
/// ```
/// use relay_server::PushConfig;
///
/// let push = PushConfig::new("/etc/relay/fcm-service-account.json");
/// assert_eq!(push.endpoint, "https://fcm.googleapis.com");
/// assert_eq!(push.burst, 6);
/// assert_eq!(push.max_in_flight, 32);
/// // The file does not exist here: loading says so, and the relay would not start.
/// let error = push.load().unwrap_err();
/// assert!(error.to_string().starts_with("cannot read the FCM service-account file"));
/// ```
#[derive(Debug, Clone)]
pub struct PushConfig {
    /// The Google service-account key file (JSON).
    pub credentials: PathBuf,
    /// FCM's base URL (`https://` only): `{endpoint}/v1/projects/{project_id}/messages:send`.
    pub endpoint: String,
    /// PEM certificates trusted besides the system's roots, for both the token endpoint and FCM.
    pub ca_file: Option<PathBuf>,
    /// Wakes one server-id may send in a burst.
    pub burst: u32,
    /// How long a server-id's bucket takes to give one wake back.
    pub refill: Duration,
    /// Sends in flight across the relay, over which a wake is refused `busy`.
    pub max_in_flight: usize,
    /// Time bound of each HTTPS call (the token grant, the send).
    pub timeout: Duration,
}

impl PushConfig {
    /// Push with the key at `credentials` and every other setting at the protocol's default.
    pub fn new(credentials: impl Into<PathBuf>) -> Self {
        PushConfig {
            credentials: credentials.into(),
            endpoint: DEFAULT_ENDPOINT.to_owned(),
            ca_file: None,
            burst: 6,
            refill: Duration::from_secs(10),
            max_in_flight: 32,
            timeout: Duration::from_secs(10),
        }
    }
}
