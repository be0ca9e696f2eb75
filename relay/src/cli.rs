//! The `relay` command line: one clap struct, every flag also read from an environment variable
//! (`RELAY_LISTEN`, `RELAY_GRACE`, …), every default the protocol's, durations in humantime
//! (`30s`, `500ms`, `2m`, `1h 30m`). `relay --help` shows each flag with its default and variable.

use crate::config::{ClientIpSource, ClusterConfig, RelayConfig};
use crate::logging::LogFormat;
use clap::Parser;
use relay_cluster::instance::InstanceId;
use std::net::SocketAddr;
use std::time::Duration;

/// A WebSocket relay between binaries (desktop daemons, on /v1/server) and their phones (on
/// /v1/client): one binary per server-id, first claim wins, up to --max-phones phones each.
/// Single instance, in memory; with --cluster, one of several instances that act as one
/// through NATS.
#[derive(Debug, Clone, Parser)]
#[command(name = "relay", version, about, long_about = None)]
pub struct Args {
    /// Address to listen on (WebSockets, /healthz, /readyz).
    #[arg(long, env = "RELAY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Address for Prometheus metrics at /metrics (never served on --listen); `off` disables.
    #[arg(long, env = "RELAY_METRICS_LISTEN", default_value = "127.0.0.1:9090", value_parser = parse_metrics_listen)]
    pub metrics_listen: MetricsListen,
    /// How long a disconnected binary's server-id and phones wait for it to reconnect.
    #[arg(long, env = "RELAY_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub grace: Duration,
    /// Maximum phones per server-id (0 = unlimited).
    #[arg(long, env = "RELAY_MAX_PHONES", default_value_t = 16)]
    pub max_phones: usize,
    /// Live WebSocket connections (binaries and phones) over which upgrades get HTTP 503
    /// (0 = unlimited).
    #[arg(long, env = "RELAY_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,
    /// Upgrade requests one client IP may make in a burst before HTTP 429 (0 disables the limit).
    #[arg(long, env = "RELAY_RATE_BURST", default_value_t = 20)]
    pub rate_burst: u32,
    /// How long the rate limit takes to give one token back.
    #[arg(long, env = "RELAY_RATE_REFILL", default_value = "6s", value_parser = parse_positive_duration)]
    pub rate_refill: Duration,
    /// Where the client IP (rate limit, logs) comes from: the TCP peer, the right-most
    /// X-Forwarded-For entry (set by your load balancer), or a PROXY protocol v1/v2 header the
    /// load balancer sends first (connections without one are dropped).
    #[arg(long, env = "RELAY_CLIENT_IP", value_enum, default_value_t = ClientIpSource::Peer)]
    pub client_ip: ClientIpSource,
    /// Log lines on stderr: text, or one JSON object per line. RUST_LOG sets the level (info).
    #[arg(long, env = "RELAY_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Ping interval; a peer that sends no pong within one interval of a ping is closed 1011.
    #[arg(long, env = "RELAY_HEARTBEAT", default_value = "30s", value_parser = parse_positive_duration)]
    pub heartbeat: Duration,
    /// How long the holder of a server-id has to answer a ping when another binary claims it.
    #[arg(long, env = "RELAY_PROBE_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    pub probe_timeout: Duration,
    /// Largest incoming frame in bytes; larger ones close the connection with 1009.
    #[arg(long, env = "RELAY_MAX_FRAME", default_value_t = 256 * 1024)]
    pub max_frame: usize,
    /// Cluster mode: the NATS server (JetStream on) through which several instances act as one,
    /// e.g. nats://127.0.0.1:4222. Absent: a single instance, in memory, no NATS.
    #[arg(long, env = "RELAY_CLUSTER", value_name = "URL")]
    pub cluster: Option<String>,
    /// Cluster mode: this instance's name, unique in the cluster (letters, digits, '-', '_';
    /// default: the host name plus a random suffix).
    #[arg(long, env = "RELAY_INSTANCE_ID", value_name = "NAME", value_parser = parse_instance_id, requires = "cluster")]
    pub instance_id: Option<InstanceId>,
    /// Cluster mode: the liveness lease, whole seconds. An instance that dies is noticed within
    /// the lease plus a quarter; one cut off from NATS closes everything 1012 before then.
    #[arg(long, env = "RELAY_CLUSTER_LEASE", default_value = "10s", value_parser = parse_lease)]
    pub cluster_lease: Duration,
}

fn parse_instance_id(text: &str) -> Result<InstanceId, String> {
    InstanceId::new(text).map_err(|error| error.to_string())
}

/// A lease: a whole number of seconds, at least one (the server's TTL granularity).
fn parse_lease(text: &str) -> Result<Duration, String> {
    let lease = parse_duration(text)?;
    relay_cluster::liveness::LeaseTiming::new(lease)
        .map_err(|error| format!("`{text}`: {error}"))?;
    Ok(lease)
}

/// `--metrics-listen`: an address, or `off`.
///
/// # Examples
///
/// ```
/// use clap::Parser;
/// use relay_server::cli::{Args, MetricsListen};
///
/// let off = Args::try_parse_from(["relay", "--metrics-listen", "off"])?;
/// assert_eq!(off.metrics_listen, MetricsListen(None));
/// # Ok::<(), clap::Error>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

fn parse_metrics_listen(text: &str) -> Result<MetricsListen, String> {
    if text.eq_ignore_ascii_case("off") {
        return Ok(MetricsListen(None));
    }
    text.parse()
        .map(|addr| MetricsListen(Some(addr)))
        .map_err(|_| format!("`{text}` is neither an address like 127.0.0.1:9090 nor `off`"))
}

/// A humantime duration: `30s`, `500ms`, `2m`, `1h 30m`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|error| format!("`{text}`: {error}"))
}

/// A humantime duration that is not zero.
fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err(format!("`{text}`: must be longer than zero")),
        duration => Ok(duration),
    }
}

impl Args {
    /// The relay configuration these flags describe (everything else at the protocol's
    /// defaults).
    ///
    /// # Examples
    ///
    /// ```
    /// use clap::Parser;
    /// use relay_server::cli::Args;
    ///
    /// let args = Args::try_parse_from(["relay", "--grace", "1m 30s", "--metrics-listen", "off"])?;
    /// let config = args.config();
    /// assert_eq!(config.grace.as_secs(), 90);
    /// assert_eq!(config.metrics_listen, None);
    /// assert_eq!(config.rate_burst, 20);
    /// # Ok::<(), clap::Error>(())
    /// ```
    pub fn config(&self) -> RelayConfig {
        RelayConfig {
            listen: self.listen,
            metrics_listen: self.metrics_listen.0,
            grace: self.grace,
            max_phones: self.max_phones,
            max_connections: self.max_connections,
            rate_burst: self.rate_burst,
            rate_refill: self.rate_refill,
            client_ip: self.client_ip,
            heartbeat: self.heartbeat,
            probe_timeout: self.probe_timeout,
            max_frame: self.max_frame,
            cluster: self.cluster.as_ref().map(|url| ClusterConfig {
                lease: self.cluster_lease,
                ..ClusterConfig::new(url.clone(), self.instance())
            }),
            ..RelayConfig::default()
        }
    }

    /// The instance id: `--instance-id`, or the host name plus a random suffix.
    fn instance(&self) -> InstanceId {
        self.instance_id
            .clone()
            .unwrap_or_else(|| InstanceId::generate(&gethostname::gethostname().to_string_lossy()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn defaults_are_the_protocols() {
        let config = Args::try_parse_from(["relay"]).unwrap().config();
        let protocol = RelayConfig::default();
        assert_eq!(config.listen, protocol.listen);
        assert_eq!(
            config.metrics_listen,
            Some("127.0.0.1:9090".parse().unwrap())
        );
        assert_eq!(config.grace, protocol.grace);
        assert_eq!(config.max_phones, 16);
        assert_eq!(config.max_connections, 10_000);
        assert_eq!(config.rate_burst, 20);
        assert_eq!(config.rate_refill, Duration::from_secs(6));
        assert_eq!(config.client_ip, ClientIpSource::Peer);
        assert_eq!(config.heartbeat, protocol.heartbeat);
        assert_eq!(config.probe_timeout, protocol.probe_timeout);
        assert_eq!(config.max_frame, protocol.max_frame);
        assert!(
            config.cluster.is_none(),
            "a single instance unless --cluster"
        );
    }

    #[test]
    fn cluster_flags_make_a_cluster_config_with_a_host_based_default_id() {
        let args = Args::try_parse_from([
            "relay",
            "--cluster",
            "nats://127.0.0.1:4222",
            "--cluster-lease",
            "4s",
        ])
        .unwrap();
        let cluster = args.config().cluster.expect("cluster mode");
        assert_eq!(cluster.url, "nats://127.0.0.1:4222");
        assert_eq!(cluster.lease, Duration::from_secs(4));
        let host = InstanceId::generate(&gethostname::gethostname().to_string_lossy());
        let prefix = &host.as_str()[..host.as_str().len() - 8];
        assert!(
            cluster.instance.as_str().starts_with(prefix),
            "{}",
            cluster.instance
        );
        let named =
            Args::try_parse_from(["relay", "--cluster", "nats://x:1", "--instance-id", "web-1"])
                .unwrap();
        assert_eq!(named.config().cluster.unwrap().instance.as_str(), "web-1");
        for bad in [
            &["relay", "--cluster", "nats://x:1", "--instance-id", "a.b"][..],
            &[
                "relay",
                "--cluster",
                "nats://x:1",
                "--cluster-lease",
                "1500ms",
            ],
            &["relay", "--instance-id", "web-1"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn every_flag_has_an_environment_variable() {
        for arg in Args::command().get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let want = format!("RELAY_{}", id.to_ascii_uppercase());
            assert_eq!(
                arg.get_env().and_then(|e| e.to_str()),
                Some(want.as_str()),
                "--{id}"
            );
        }
    }

    #[test]
    fn durations_are_humantime_and_overflow_is_an_error_not_a_panic() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        for bad in ["30", "s", "3 fortnights", "307445734561825861m", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0s").is_err());
    }

    #[test]
    fn the_command_names_itself_relay() {
        let command = Args::command();
        assert_eq!(command.get_name(), "relay");
        assert!(command.render_version().starts_with("relay "));
    }
}
