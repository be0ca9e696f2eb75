//! The `relay` command line: one clap struct, every flag also read from an environment variable
//! (`RELAY_LISTEN`, `RELAY_GRACE`, …), every default the protocol's, durations in humantime
//! (`30s`, `500ms`, `2m`, `1h 30m`). `relay --help` shows each flag with its default and variable.

use crate::config::PushConfig;
use crate::config::{AcmeConfig, LETS_ENCRYPT, TlsConfig};
use crate::config::{ClientIpSource, ClusterConfig, ForwardToken, RelayConfig};
use crate::logging::LogFormat;
use crate::push::PushConfigError;
use clap::Parser;
use relay_cluster::instance::InstanceId;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// A WebSocket relay between binaries (desktop daemons, on /v1/server or /v2/server) and their
/// phones (on /v1/client or /v2/client): one binary per server-id, first claim wins, up to --max-phones phones each.
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
    /// Whether the first envelope forwarded from each phone carries its X-Pyrycode-Token
    /// (`"token"`), for the binary to authenticate the phone; the token is never logged.
    #[arg(long, env = "RELAY_FORWARD_TOKEN", value_enum, default_value_t = ForwardToken::FirstFrame)]
    pub forward_token: ForwardToken,
    /// Cluster mode: the NATS server (JetStream on) through which several instances act as one,
    /// e.g. nats://127.0.0.1:4222, or a NATS cluster's nodes, comma-separated
    /// (nats://n1:4222,nats://n2:4222,nats://n3:4222). Absent: a single instance, no NATS.
    #[arg(long, env = "RELAY_CLUSTER", value_name = "URL[,URL...]")]
    pub cluster: Option<String>,
    /// Cluster mode: the replicas of the JetStream buckets the relay uses (1 to 5); 3 on a
    /// three-node NATS cluster survives the loss of any node. Existing buckets are updated.
    #[arg(long, env = "RELAY_CLUSTER_REPLICAS", value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub cluster_replicas: u8,
    /// Cluster mode: this instance's name, unique in the cluster (letters, digits, '-', '_';
    /// default: the host name plus a random suffix).
    #[arg(long, env = "RELAY_INSTANCE_ID", value_name = "NAME", value_parser = parse_instance_id, requires = "cluster")]
    pub instance_id: Option<InstanceId>,
    /// Cluster mode: the liveness lease, whole seconds (default 30 s: a JetStream leader
    /// election, up to 15 s measured, never fences an instance). An instance that dies is
    /// noticed within the lease plus its refresh interval (min(lease/4, 5 s)); one cut off from
    /// NATS closes everything 1012 before then.
    #[arg(long, env = "RELAY_CLUSTER_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub cluster_lease: Duration,
    /// Push wakes: the Google service-account key (JSON) with which the relay sends FCM
    /// messages for binaries' `push_wake`s. Absent: push is off (wakes counted `disabled`).
    /// A malformed file stops the relay at start.
    #[arg(long, env = "RELAY_FCM_CREDENTIALS", value_name = "FILE")]
    pub fcm_credentials: Option<PathBuf>,
    /// Push wakes: FCM's base URL (https:// only).
    #[arg(long, env = "RELAY_FCM_ENDPOINT", value_name = "URL", default_value = crate::config::DEFAULT_ENDPOINT)]
    pub fcm_endpoint: String,
    /// Push wakes: PEM certificates trusted besides the system's roots, for FCM and the token
    /// endpoint (a private gateway, tests).
    #[arg(long, env = "RELAY_FCM_CA_FILE", value_name = "PEM")]
    pub fcm_ca_file: Option<PathBuf>,
    /// TLS on --listen from this PEM certificate chain (leaf first), with --tls-key. Reloaded on
    /// SIGHUP and when the files change; a pair that does not load is refused, the old one kept.
    #[arg(
        long,
        env = "RELAY_TLS_CERT",
        value_name = "FILE",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,
    /// The PEM private key (PKCS#8, PKCS#1 or SEC1) of --tls-cert.
    #[arg(
        long,
        env = "RELAY_TLS_KEY",
        value_name = "FILE",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,
    /// With --tls-cert: a name requests must be addressed to (Host header, case-insensitive,
    /// port ignored); others get 421. Repeatable (or comma-separated in RELAY_DOMAIN). None: no
    /// check.
    #[arg(
        long,
        env = "RELAY_DOMAIN",
        value_name = "NAME",
        value_delimiter = ',',
        requires = "tls_cert"
    )]
    pub domain: Vec<String>,
    /// TLS on --listen with certificates from ACME (Let's Encrypt by default) for this name
    /// (repeatable, or comma-separated in RELAY_ACME_DOMAIN); requests for other names get 421.
    /// Needs --acme-cache.
    #[arg(
        long,
        env = "RELAY_ACME_DOMAIN",
        value_name = "NAME",
        value_delimiter = ',',
        conflicts_with = "tls_cert",
        requires = "acme_cache"
    )]
    pub acme_domain: Vec<String>,
    /// ACME: the directory keeping the account and certificate (created 0700; refused if others
    /// can read it). A restart serves the cached certificate without a new order.
    #[arg(
        long,
        env = "RELAY_ACME_CACHE",
        value_name = "DIR",
        requires = "acme_domain"
    )]
    pub acme_cache: Option<PathBuf>,
    /// ACME: the server's directory URL.
    #[arg(long, env = "RELAY_ACME_DIRECTORY", value_name = "URL", default_value = LETS_ENCRYPT)]
    pub acme_directory: String,
    /// ACME: a contact URL for the account, e.g. mailto:ops@example.com (repeatable).
    #[arg(
        long,
        env = "RELAY_ACME_CONTACT",
        value_name = "URL",
        value_delimiter = ',',
        requires = "acme_domain"
    )]
    pub acme_contact: Vec<String>,
    /// ACME: trust this PEM CA certificate for the ACME server's HTTPS (a private ACME server);
    /// default: the platform's roots.
    #[arg(
        long,
        env = "RELAY_ACME_CA_FILE",
        value_name = "PEM",
        requires = "acme_domain"
    )]
    pub acme_ca_file: Option<PathBuf>,
    /// ACME: where http-01 challenges are answered (only /.well-known/acme-challenge/…, 404
    /// otherwise, no redirect); `off`: tls-alpn-01 on --listen instead. Default with
    /// --acme-domain: 0.0.0.0:80.
    #[arg(long, env = "RELAY_HTTP_LISTEN", value_name = "ADDR", value_parser = parse_http_listen, requires = "acme_domain")]
    pub http_listen: Option<MetricsListen>,
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

/// `--http-listen`: an address, or `off`.
fn parse_http_listen(text: &str) -> Result<MetricsListen, String> {
    parse_metrics_listen(text)
        .map_err(|_| format!("`{text}` is neither an address like 0.0.0.0:80 nor `off`"))
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
    /// defaults). The push configuration's files are read and checked here, so that a bad one
    /// stops the relay before it starts.
    ///
    /// # Errors
    ///
    /// `--fcm-credentials`, `--fcm-endpoint` or `--fcm-ca-file` is refused (the error names the
    /// file and field, never a value from the key file).
    ///
    /// # Examples
    ///
    /// ```
    /// use clap::Parser;
    /// use relay_server::cli::Args;
    ///
    /// let args = Args::try_parse_from(["relay", "--grace", "1m 30s", "--metrics-listen", "off"])?;
    /// let config = args.config()?;
    /// assert_eq!(config.grace.as_secs(), 90);
    /// assert_eq!(config.metrics_listen, None);
    /// assert_eq!(config.rate_burst, 20);
    /// assert!(config.push.is_none(), "no --fcm-credentials: push is off");
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn config(&self) -> Result<RelayConfig, PushConfigError> {
        let push = match &self.fcm_credentials {
            Some(credentials) => {
                let push = PushConfig {
                    endpoint: self.fcm_endpoint.clone(),
                    ca_file: self.fcm_ca_file.clone(),
                    ..PushConfig::new(credentials)
                };
                push.load()?;
                Some(push)
            }
            None => None,
        };
        Ok(RelayConfig {
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
            forward_token: self.forward_token,
            cluster: self.cluster.as_ref().map(|url| ClusterConfig {
                lease: self.cluster_lease,
                replicas: usize::from(self.cluster_replicas),
                ..ClusterConfig::new(url.clone(), self.instance())
            }),
            push,
            tls: self.tls(),
            ..RelayConfig::default()
        })
    }

    /// TLS from `--tls-cert`/`--tls-key` (clap makes sure both or neither are given), or from
    /// ACME with `--acme-domain`.
    fn tls(&self) -> Option<TlsConfig> {
        if let Some(cache) = &self.acme_cache {
            let mut acme = AcmeConfig::new(self.acme_domain.iter().cloned(), cache);
            acme.directory = self.acme_directory.clone();
            acme.contact = self.acme_contact.clone();
            acme.ca_file = self.acme_ca_file.clone();
            if let Some(MetricsListen(addr)) = self.http_listen {
                acme.http_listen = addr;
            }
            return Some(TlsConfig::acme(acme));
        }
        let (cert, key) = (self.tls_cert.as_ref()?, self.tls_key.as_ref()?);
        Some(TlsConfig::files(cert, key).with_domains(self.domain.iter().cloned()))
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
        let config = Args::try_parse_from(["relay"]).unwrap().config().unwrap();
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
        assert_eq!(config.forward_token, ForwardToken::FirstFrame);
        assert!(
            config.cluster.is_none(),
            "a single instance unless --cluster"
        );
        assert!(
            config.push.is_none(),
            "push is off unless --fcm-credentials"
        );
    }

    #[test]
    fn a_push_configuration_is_checked_when_the_flags_become_a_config() {
        let missing = Args::try_parse_from(["relay", "--fcm-credentials", "/nonexistent/sa.json"])
            .unwrap()
            .config()
            .unwrap_err();
        assert!(
            missing.to_string().contains("/nonexistent/sa.json"),
            "{missing}"
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
        let cluster = args.config().unwrap().cluster.expect("cluster mode");
        assert_eq!(cluster.url, "nats://127.0.0.1:4222");
        assert_eq!(cluster.lease, Duration::from_secs(4));
        assert_eq!(cluster.replicas, 1, "one replica unless --cluster-replicas");
        let replicated = Args::try_parse_from([
            "relay",
            "--cluster",
            "nats://a:4222,nats://b:4222,nats://c:4222",
            "--cluster-replicas",
            "3",
        ])
        .unwrap()
        .config()
        .unwrap()
        .cluster
        .expect("cluster mode");
        assert_eq!(replicated.replicas, 3);
        assert_eq!(replicated.url, "nats://a:4222,nats://b:4222,nats://c:4222");
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
        assert_eq!(
            named.config().unwrap().cluster.unwrap().instance.as_str(),
            "web-1"
        );
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
            &[
                "relay",
                "--cluster",
                "nats://x:1",
                "--cluster-replicas",
                "0",
            ],
            &[
                "relay",
                "--cluster",
                "nats://x:1",
                "--cluster-replicas",
                "6",
            ],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn tls_flags_make_a_files_config_and_need_each_other() {
        let args = Args::try_parse_from([
            "relay",
            "--tls-cert",
            "c.pem",
            "--tls-key",
            "k.pem",
            "--domain",
            "a.example",
            "--domain",
            "B.example",
        ])
        .unwrap();
        let tls = args.config().unwrap().tls.expect("TLS");
        assert!(matches!(
            &tls.certificates,
            crate::config::Certificates::Files { cert, key }
                if cert.as_os_str() == "c.pem" && key.as_os_str() == "k.pem"
        ));
        assert_eq!(tls.domains, ["a.example", "B.example"]);
        assert!(
            Args::try_parse_from(["relay"])
                .unwrap()
                .config()
                .unwrap()
                .tls
                .is_none()
        );
        for bad in [
            &["relay", "--tls-cert", "c.pem"][..],
            &["relay", "--tls-key", "k.pem"],
            &["relay", "--domain", "a.example"],
        ] {
            assert!(Args::try_parse_from(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn acme_flags_make_an_acme_config_with_http_01_on_port_80_by_default() {
        let args = Args::try_parse_from([
            "relay",
            "--acme-domain",
            "relay.example.com",
            "--acme-cache",
            "/var/lib/relay/acme",
            "--acme-contact",
            "mailto:ops@example.com",
        ])
        .unwrap();
        let tls = args.config().unwrap().tls.expect("TLS");
        assert_eq!(tls.domains, ["relay.example.com"]);
        let crate::config::Certificates::Acme(acme) = tls.certificates else {
            panic!("ACME");
        };
        assert_eq!(acme.directory, LETS_ENCRYPT);
        assert_eq!(acme.http_listen, Some("0.0.0.0:80".parse().unwrap()));
        assert_eq!(acme.contact, ["mailto:ops@example.com"]);
        let off = Args::try_parse_from([
            "relay",
            "--acme-domain",
            "a.example",
            "--acme-cache",
            "c",
            "--http-listen",
            "off",
        ])
        .unwrap();
        let Some(crate::config::Certificates::Acme(acme)) =
            off.config().unwrap().tls.map(|t| t.certificates)
        else {
            panic!("ACME");
        };
        assert_eq!(acme.http_listen, None);
        for bad in [
            &["relay", "--acme-domain", "a.example"][..],
            &["relay", "--acme-cache", "c"],
            &["relay", "--http-listen", "0.0.0.0:80"],
            &[
                "relay",
                "--acme-domain",
                "a.example",
                "--acme-cache",
                "c",
                "--tls-cert",
                "c.pem",
                "--tls-key",
                "k.pem",
            ],
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
