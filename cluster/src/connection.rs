//! [`Nats`]: this instance's one connection to NATS, and what it tells about its own health.
//!
//! Core NATS is at-most-once: while a connection is down, messages addressed to it are dropped
//! by the server, and a subscription whose buffer overflows drops messages on the client. Both
//! are told here as [`Trouble`], so the [`Link`](super::link::Link) can close every affected phone
//! `1011 relay link lost` instead of losing a frame silently.

use super::error::ClusterError;
use super::instance::InstanceId;
use async_nats::{Client, ConnectOptions, Event, ServerAddr, jetstream};
use futures_util::StreamExt;
use std::time::Duration;
use tokio::sync::{broadcast, watch};

/// Whether this instance is connected to NATS right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionState {
    /// Connected: cluster operations can be answered.
    Connected,
    /// Disconnected (the client reconnects on its own): refuse new upgrades with 503.
    Disconnected,
}

/// Something that may have lost core NATS messages addressed to this instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trouble {
    /// The connection dropped: anything published to this instance meanwhile is gone.
    Disconnected,
    /// A subscription's buffer overflowed and the client dropped messages (`SlowConsumer`).
    SlowConsumer,
}

/// How to connect.
#[derive(Debug, Clone)]
pub struct ConnectSettings {
    /// How long the first connection attempt may take.
    pub connect_timeout: Duration,
    /// How often the client pings the server; a dead TCP connection is noticed after two
    /// unanswered pings (default 2 s).
    pub ping_interval: Duration,
    /// Messages buffered per subscription before the client drops them as a slow consumer
    /// (default 65,536, async-nats's own default).
    pub subscription_capacity: usize,
    /// How many replicas every JetStream bucket opened through this connection has (the
    /// directory's and the liveness's; default 1). With a NATS cluster of three or more nodes,
    /// 3 keeps the buckets writable when any one node is lost. An existing bucket with other
    /// settings is updated to these where JetStream allows it (replicas can change), else
    /// opening it fails saying what differs.
    pub bucket_replicas: usize,
}

impl Default for ConnectSettings {
    fn default() -> Self {
        ConnectSettings {
            connect_timeout: Duration::from_secs(5),
            ping_interval: Duration::from_secs(2),
            subscription_capacity: 65_536,
            bucket_replicas: 1,
        }
    }
}

/// This instance's NATS connection: the client, its JetStream context, its state and its
/// [`Trouble`] events.
///
/// Cloning is cheap and shares the connection. After the first connection the client
/// reconnects by itself for ever (100 ms, 200 ms, … up to 1 s between attempts);
/// [`state`](Self::state) follows.
#[derive(Clone)]
pub struct Nats {
    client: Client,
    jetstream: jetstream::Context,
    state: watch::Receiver<ConnectionState>,
    trouble: broadcast::Sender<Trouble>,
    bucket_replicas: usize,
}

/// The servers of a comma-separated list of NATS URLs (`nats://a:4222,nats://b:4222`; spaces
/// around each are ignored): the nodes of one NATS cluster, any of which the client may use.
///
/// # Errors
///
/// [`ClusterError::Config`] for an empty list or a URL that cannot be parsed (naming it).
///
/// # Examples
///
/// ```
/// use relay_cluster::connection::servers;
///
/// assert_eq!(servers("nats://a:4222, nats://b:4222")?.len(), 2);
/// assert!(servers("nats://a:4222,nats://b:x").is_err());
/// assert!(servers(" ").is_err());
/// # Ok::<(), relay_cluster::ClusterError>(())
/// ```
pub fn servers(urls: &str) -> Result<Vec<ServerAddr>, ClusterError> {
    let servers = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>()
                .map_err(|error| ClusterError::Config(format!("NATS URL `{url}`: {error}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if servers.is_empty() {
        return Err(ClusterError::Config("no NATS URL given".into()));
    }
    Ok(servers)
}

impl Nats {
    /// Connects to `urls` (one NATS URL, e.g. `nats://127.0.0.1:4222`, or a comma-separated
    /// list of a NATS cluster's nodes: see [`servers`]) as `instance` (the connection name the
    /// server shows). The first connection tries every listed server; later the client
    /// reconnects across them (and the nodes the servers announce). JetStream requests are
    /// bounded by `request_timeout`.
    ///
    /// # Errors
    ///
    /// [`ClusterError::Config`] if `urls` cannot be parsed; [`ClusterError::TimedOut`] or
    /// [`ClusterError::Nats`] if the first connection fails.
    pub async fn connect(
        urls: &str,
        instance: &InstanceId,
        request_timeout: Duration,
        settings: ConnectSettings,
    ) -> Result<Nats, ClusterError> {
        let servers = servers(urls)?;
        let bucket_replicas = settings.bucket_replicas;
        let (state_tx, state) = watch::channel(ConnectionState::Connected);
        let (trouble, _) = broadcast::channel(64);
        let events = trouble.clone();
        let options = ConnectOptions::new()
            .name(instance.as_str())
            .connection_timeout(settings.connect_timeout)
            .ping_interval(settings.ping_interval)
            .subscription_capacity(settings.subscription_capacity)
            .request_timeout(Some(request_timeout))
            .max_reconnects(None)
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis(100 * attempts.clamp(1, 10) as u64)
            })
            .event_callback(move |event| {
                let (state_tx, events) = (state_tx.clone(), events.clone());
                async move {
                    match event {
                        Event::Connected => {
                            state_tx.send_replace(ConnectionState::Connected);
                        }
                        Event::Disconnected => {
                            state_tx.send_replace(ConnectionState::Disconnected);
                            let _ = events.send(Trouble::Disconnected);
                        }
                        Event::SlowConsumer(_) => {
                            let _ = events.send(Trouble::SlowConsumer);
                        }
                        _ => {}
                    }
                }
            });
        let connecting = async_nats::connect_with_options(servers, options);
        let client = tokio::time::timeout(settings.connect_timeout, connecting)
            .await
            .map_err(|_| ClusterError::TimedOut)?
            .map_err(ClusterError::nats)?;
        let mut jetstream = jetstream::new(client.clone());
        jetstream.set_timeout(request_timeout);
        Ok(Nats {
            client,
            jetstream,
            state,
            trouble,
            bucket_replicas,
        })
    }

    /// The replicas of every bucket opened through this connection
    /// ([`ConnectSettings::bucket_replicas`]).
    pub fn bucket_replicas(&self) -> usize {
        self.bucket_replicas
    }

    /// The core NATS client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The JetStream context (its requests bounded by the connect's `request_timeout`).
    pub fn jetstream(&self) -> &jetstream::Context {
        &self.jetstream
    }

    /// The connection state, as a watch (every change is seen; the value is always current).
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.state.clone()
    }

    /// Whether the client is connected right now.
    pub fn is_connected(&self) -> bool {
        *self.state.borrow() == ConnectionState::Connected
    }

    /// Waits until the server has processed everything this connection sent before, its
    /// subscriptions included, by a round trip through the server (async-nats's `flush` only
    /// writes to the socket). After it, another connection's messages reach those
    /// subscriptions.
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] after `limit`, or a NATS error.
    pub async fn sync(&self, limit: Duration) -> Result<(), ClusterError> {
        let round_trip = async {
            // A connection's messages are handled in order: our own message on a fresh inbox
            // comes back only once everything before it was handled.
            let inbox = self.client.new_inbox();
            let mut echo = self
                .client
                .subscribe(inbox.clone())
                .await
                .map_err(ClusterError::nats)?;
            self.client
                .publish(inbox, bytes::Bytes::new())
                .await
                .map_err(ClusterError::nats)?;
            match echo.next().await {
                Some(_) => Ok(()),
                None => Err(ClusterError::Nats("the connection closed".into())),
            }
        };
        super::error::bounded(limit, round_trip).await
    }

    /// [`Trouble`] from now on. A receiver that lags behind (more than 64 unread events) gets
    /// `RecvError::Lagged`, which must be treated as trouble too.
    pub fn trouble(&self) -> broadcast::Receiver<Trouble> {
        self.trouble.subscribe()
    }
}
