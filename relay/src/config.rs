//! The relay's settings: every number of the protocol, with its default.
//!
//! [`RelayConfig`] is what [`start`](crate::start) takes; the command line
//! ([`Args`](crate::cli::Args)) builds one. `RelayConfig::default()` is the protocol's defaults on
//! `127.0.0.1:8080`, with metrics off (the command line's default turns them on at
//! `127.0.0.1:9090`).

mod push;
mod tls;

pub(crate) use push::DEFAULT_ENDPOINT;
pub use push::PushConfig;
use relay_cluster::{instance::InstanceId, liveness::DEFAULT_LEASE};
use std::net::SocketAddr;
use std::time::Duration;
pub use tls::{AcmeConfig, Certificates, FIRST_RETRY, LAST_RETRY, LETS_ENCRYPT, TlsConfig};

pub(crate) use relay_cluster::link::FRAME_OVERHEAD;

/// Where the client IP used for rate limiting and logs comes from.
///
/// # Examples
///
/// ```
/// use clap::ValueEnum;
/// use relay_server::ClientIpSource;
///
/// let source = ClientIpSource::from_str("x-forwarded-for", false);
/// assert_eq!(source, Ok(ClientIpSource::XForwardedFor));
/// assert_eq!(ClientIpSource::default(), ClientIpSource::Peer);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ClientIpSource {
    /// The TCP peer address.
    #[default]
    Peer,
    /// The right-most `X-Forwarded-For` entry (set by our own load balancer); the TCP peer when
    /// the header is absent or unparsable.
    #[value(name = "x-forwarded-for")]
    XForwardedFor,
    /// A PROXY protocol v1 or v2 header that the load balancer sends first on every connection;
    /// a connection without a valid one is dropped.
    ProxyProtocol,
}

/// Whether the relay puts a phone's `X-Pyrycode-Token` on the first envelope it forwards from that
/// phone (protocol: "Frames"), so the binary can authenticate the phone before acting on its
/// first frame.
///
/// # Examples
///
/// ```
/// use clap::ValueEnum;
/// use relay_server::ForwardToken;
///
/// assert_eq!(ForwardToken::default(), ForwardToken::FirstFrame);
/// assert_eq!(ForwardToken::from_str("never", false), Ok(ForwardToken::Never));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ForwardToken {
    /// `{"conn_id":…,"token":…,"frame":…}` on the first envelope of each phone that sent a
    /// token; never on later ones.
    #[default]
    FirstFrame,
    /// Never: the token is checked for presence (on `/v1/client`) and then dropped.
    Never,
}

/// Every tunable of the relay. `RelayConfig::default()` is the protocol's defaults.
///
/// # Examples
///
/// ```
/// use relay_server::RelayConfig;
/// use std::time::Duration;
///
/// let config = RelayConfig {
///     listen: ([127, 0, 0, 1], 0).into(), // any free port
///     grace: Duration::from_secs(5),
///     ..RelayConfig::default()
/// };
/// assert_eq!(config.max_phones, 16);
/// assert_eq!(config.rate_burst, 20);
/// ```
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Where to listen; port 0 picks a free port.
    pub listen: SocketAddr,
    /// Where `/metrics` is served (its own listener, never the public one); `None` disables it.
    pub metrics_listen: Option<SocketAddr>,
    /// How long a disconnected binary's id and phones are kept for it to come back.
    pub grace: Duration,
    /// Phones per server-id (0 = unlimited).
    pub max_phones: usize,
    /// Live WebSocket connections, binaries and phones together, over which upgrades are refused
    /// with HTTP 503 (0 = unlimited).
    pub max_connections: usize,
    /// Upgrade requests one client IP may make in a burst (0 disables the rate limit).
    pub rate_burst: u32,
    /// How long the rate limit takes to give one token back.
    pub rate_refill: Duration,
    /// Where the client IP comes from.
    pub client_ip: ClientIpSource,
    /// Ping interval; a peer that has not answered a ping by the time the next is due is closed
    /// `1011 heartbeat timeout`.
    pub heartbeat: Duration,
    /// How long the holder of a server-id has to answer the ping sent on a conflicting claim.
    pub probe_timeout: Duration,
    /// How long a phone over its id's cap waits for one of the id's phones to leave before it is
    /// refused 4429 (a phone whose client just reset its connection is still registered until
    /// the relay reads the reset).
    pub cap_wait: Duration,
    /// Largest incoming frame (and message), in bytes; larger closes with 1009.
    pub max_frame: usize,
    /// How long a client may take to send its request head (and, with `proxy-protocol`, its
    /// PROXY header).
    pub header_timeout: Duration,
    /// How long one incoming message may take once its first data frame began (slow-loris).
    pub slow_message: Duration,
    /// Deepest nesting of arrays and objects a phone's JSON frame may have; deeper closes it
    /// `1007 JSON nested too deep`.
    pub max_json_depth: usize,
    /// Control frames (pings and pongs) a peer may send per heartbeat interval; one more closes
    /// it `1008 policy violation`.
    pub max_control_frames: u32,
    /// Byte bound of each phone's outbox (each frame costs its length + [`FRAME_OVERHEAD`]).
    pub phone_outbox: usize,
    /// Byte bound of each binary's outbox; a full one pauses the phones sending to it.
    pub binary_outbox: usize,
    /// How long shutdown waits for connections to close before dropping them.
    pub drain: Duration,
    /// How long a closing connection waits for the peer's close frame.
    pub close_timeout: Duration,
    /// Whether a phone's token goes to its binary on the phone's first envelope.
    pub forward_token: ForwardToken,
    /// Cluster mode: several instances act as one through NATS (see [`ClusterConfig`]);
    /// `None` is a single instance, in memory, with no NATS.
    pub cluster: Option<ClusterConfig>,
    /// Push wakes through FCM (see [`PushConfig`]); `None`: push is off and every wake is
    /// counted `disabled`.
    pub push: Option<PushConfig>,
    /// TLS on the public listener (see [`TlsConfig`]); `None` is plain TCP (behind a
    /// TLS-terminating load balancer, or for tests).
    pub tls: Option<TlsConfig>,
    /// Fault injection for tests: a frame whose text is exactly this makes its connection task
    /// panic. It is consulted only on the paths that refuse a frame (a phone frame that is not
    /// JSON, a binary frame that is not an envelope), never for a frame that is forwarded. Never
    /// set by the command line.
    pub panic_on_frame: Option<String>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            metrics_listen: None,
            grace: Duration::from_secs(30),
            max_phones: 16,
            max_connections: 10_000,
            rate_burst: 20,
            rate_refill: Duration::from_secs(6),
            client_ip: ClientIpSource::Peer,
            heartbeat: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(10),
            cap_wait: Duration::from_millis(100),
            max_frame: 256 * 1024,
            header_timeout: Duration::from_secs(5),
            slow_message: Duration::from_secs(30),
            max_json_depth: 128,
            max_control_frames: 128,
            phone_outbox: 4 * 1024 * 1024,
            binary_outbox: 16 * 1024 * 1024,
            drain: Duration::from_secs(10),
            close_timeout: Duration::from_secs(2),
            forward_token: ForwardToken::FirstFrame,
            cluster: None,
            push: None,
            tls: None,
            panic_on_frame: None,
        }
    }
}

/// How an instance joins a cluster (`--cluster`, `--instance-id`, `--cluster-lease`,
/// `--cluster-replicas`).
///
/// # Examples
///
/// ```
/// use relay_server::{ClusterConfig, InstanceId};
///
/// let cluster = ClusterConfig::new("nats://127.0.0.1:4222", InstanceId::new("relay-1")?);
/// assert_eq!(cluster.lease.as_secs(), 30);
/// assert_eq!(cluster.replicas, 1);
/// // A three-node NATS cluster, its buckets on every node:
/// let replicated = ClusterConfig {
///     replicas: 3,
///     ..ClusterConfig::new("nats://n1:4222,nats://n2:4222,nats://n3:4222", InstanceId::new("relay-1")?)
/// };
/// # Ok::<(), relay_server::InvalidInstanceId>(())
/// ```
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// The NATS server (JetStream on), e.g. `nats://127.0.0.1:4222`, or a comma-separated list
    /// of a NATS cluster's nodes (`nats://n1:4222,nats://n2:4222,nats://n3:4222`): the first
    /// connection tries each, and the client reconnects across them.
    pub url: String,
    /// This instance's name, unique among running instances.
    pub instance: InstanceId,
    /// The liveness lease: a whole number of seconds, at least 1 (default 30 s, sized so that a
    /// JetStream leader election never fences an instance: see
    /// [`relay_cluster::liveness`]). An instance that dies is noticed by the others within one
    /// lease plus one refresh interval (`min(lease/4, 5 s)`); one that cannot renew it closes
    /// everything it holds before anyone may take its ids.
    pub lease: Duration,
    /// How long one directory operation or request to another instance may take before it
    /// counts as unanswered (an upgrade then gets 503).
    pub request_timeout: Duration,
    /// How many replicas the JetStream buckets this instance uses (directory, liveness) have,
    /// at least 1 (default), at most 5 (JetStream's limit); 3 on a three-node NATS cluster
    /// keeps them writable when any one node is lost. An existing bucket is updated to it.
    pub replicas: usize,
}

impl ClusterConfig {
    /// Joining the cluster at `url` as `instance`, with the default lease (30 s) and a 2 s
    /// request timeout.
    pub fn new(url: impl Into<String>, instance: InstanceId) -> Self {
        ClusterConfig {
            url: url.into(),
            instance,
            lease: DEFAULT_LEASE,
            request_timeout: Duration::from_secs(2),
            replicas: 1,
        }
    }
}
