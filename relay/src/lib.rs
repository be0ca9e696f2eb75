//! The relay: WebSocket endpoints for binaries (`/v1/server`) and phones (`/v1/client`), plus
//! `/healthz` and `/readyz`, routing through a [`relay_registry::Registry`]; Prometheus metrics
//! on a listener of their own. It speaks `relay/PROTOCOL.md` in full.
//!
//! [`start`] runs it in-process (the `relay` binary, the load generator and the end-to-end tests
//! all call it) and returns a [`Relay`] handle with the bound addresses and a graceful shutdown.
//!
//! # How a connection flows (one folder per layer, top to bottom)
//!
//! Imports point one way, down this list: `lib → http → roles → cluster → conn → protocol`;
//! any module may use `hub` (the shared context), `config`, `metrics` and `logging`.
//!
//! 1. `http/` — `listen`: the accept loop; the PROXY header first (`proxy`) if
//!    `--client-ip proxy-protocol`; hyper serves HTTP/1.1 with its own head deadline and size
//!    limit. `routes`: `/healthz`, `/readyz`, 404; for an upgrade: readiness, then `gates`
//!    (per-IP rate limit → 429, connection cap → 503; the client IP from `client_ip`), then the
//!    header checks (→ 400). `scrape`: `/metrics` on a listener of its own.
//! 2. `roles/` — `admission`: the pre-upgrade decision, the binary's claim or the phone's
//!    registration, made before the `101` (in cluster mode through the directory too). After the
//!    upgrade `binary` (conflicts: probe the holder, take over a silent one; envelopes to its
//!    phones; the grace window) and `phone` (frames checked, wrapped and sent to the binary here
//!    or up a link; the phone-left notice) drive the connection; `grace` expires grace windows
//!    in a task of the runtime.
//! 3. `cluster/` — cluster mode (below); without `--cluster` none of it runs.
//! 4. `conn/` — one WebSocket: `session` (after `hyper::upgrade::on`, the upgraded stream,
//!    wrapped by `message_timer` to time slow messages, handed to tokio-tungstenite; one task
//!    reads, writes the outbox, heartbeats and bounds it, and does the close handshake);
//!    `outbox` (what it still has to write, bounded in bytes) behind `local`'s shared half;
//!    `endpoint`, the registry's connection type (its own `send` fills an
//!    outbox), an enum: a local WebSocket, or a phone on another instance.
//! 5. `protocol/` — the protocol as code: `conn_ids`, `envelope` (the binary's envelope, the
//!    phone wrapper, the notices), `frame_check` (JSON and depth of every phone frame).
//!
//! # Cluster mode (`RelayConfig::cluster`, `--cluster URL`)
//!
//! Several instances act as one relay through NATS: the [`relay_cluster`] building blocks
//! (directory, liveness, links, remote phones), wired in by `cluster/`. The instance where a
//! binary's claim succeeded owns its id: the binary, its grace window and every phone's
//! registration live in that instance's registry, a phone connected elsewhere as a `Remote`
//! endpoint (`conn::endpoint::Endpoint::Remote`, a [`RemotePhone`](relay_cluster::remote::RemotePhone))
//! whose `send` and `close` publish down its link. Without `--cluster` none of it runs: no
//! NATS, the pipeline above unchanged. An instance that cannot reach NATS at start serves
//! anyway — `/readyz` and every upgrade 503 — and joins once it can (`cluster/join`).
//! `--cluster` may list several NATS nodes, and `--cluster-replicas` replicates the buckets.
//!
//! Around them: `hub` (the context every task holds, the registry claim and the conflict
//! policy every path shares), `push` (push wakes through FCM, asked for by binaries), `tls` (the
//! public listener's certificates, from files or ACME), `metrics` (every family in one place,
//! served by `http::scrape`), `logging` (text or JSON; ids only as short hashes at info; see
//! [`init_logging`]), `config` and [`cli`] (one clap struct, `env` on every flag).
//!
//! # Shutdown
//!
//! [`Relay::shutdown`] (the binary calls it on SIGINT/SIGTERM): `/readyz` turns 503 and new
//! upgrades get 503; every connection is closed `1001 shutting down` (everyone in the registry
//! first, before any binary's release could close its phones with another code); the relay waits
//! for the sessions, at most the drain time; then it stops listening and ends the remaining HTTP
//! connections. In cluster mode the phones served for owners elsewhere are closed 1001 with
//! everyone else, and at the end the instance deletes its directory entries and its liveness
//! entry, so every id it held is free at once.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(unreachable_pub)]

pub mod cli;
mod cluster;
mod config;
mod conn;
mod error;
mod http;
mod hub;
mod logging;
mod metrics;
mod protocol;
mod push;
mod roles;

pub use config::{
    AcmeConfig, Certificates, ClientIpSource, ClusterConfig, FIRST_RETRY, ForwardToken, LAST_RETRY,
    LETS_ENCRYPT, PushConfig, RelayConfig, TlsConfig,
};
pub use error::StartError;
pub use http::tls::stream as tls_stream;
pub use http::tls::{ClientTlsError, TlsError, client_tls};
pub use logging::{LogFormat, init as init_logging};
pub use push::PushConfigError;
/// The instance name [`ClusterConfig`] takes (from the cluster building blocks, `relay-cluster`).
pub use relay_cluster::{instance::InstanceId, instance::InvalidInstanceId};

use hub::{Hub, Shutdown};
use relay_protocol::CloseReason;
use relay_registry::{Config, Registry};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

/// A running relay: its addresses, and the way to stop it.
///
/// Dropping it without [`shutdown`](Relay::shutdown) aborts the relay's main task (its
/// connections' tasks end when their sockets do).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use relay_server::RelayConfig;
///
/// let relay = relay_server::start(RelayConfig {
///     listen: ([127, 0, 0, 1], 0).into(),
///     metrics_listen: Some(([127, 0, 0, 1], 0).into()),
///     ..RelayConfig::default()
/// })
/// .await?;
/// assert_ne!(relay.local_addr().port(), 0);
/// assert!(relay.metrics_addr().is_some());
/// relay.shutdown().await; // nobody connected: returns at once
/// # Ok(())
/// # }
/// ```
pub struct Relay {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    hub: Arc<Hub>,
    task: AbortOnDropHandle<()>,
}

impl Relay {
    /// The address the relay listens on (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Whether the public listener speaks TLS (`wss://`, `https://`).
    pub fn is_tls(&self) -> bool {
        self.hub.tls.is_some()
    }

    /// The address ACME's http-01 challenges are answered on (ACME with `--http-listen`).
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.hub.tls.as_ref().and_then(|tls| tls.http_addr())
    }

    /// The address `/metrics` is served on, if metrics are on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Shuts down (see the crate docs) and returns once every connection is closed, or once the
    /// drain time has passed (the rest are then cut off).
    pub async fn shutdown(self) {
        self.hub.shutdown.draining.cancel();
        let _ = self.task.await;
    }
}

/// Binds `config.listen` (and `config.metrics_listen`) and starts serving in the background; in
/// cluster mode it joins the cluster in the background (connects to NATS, takes its lease, opens
/// the directory, starts its link), retrying with backoff for as long as NATS is unreachable:
/// until it has joined, `/readyz` and every upgrade get 503.
///
/// # Errors
///
/// [`StartError`]: the push, TLS or cluster configuration is refused ([`StartError::Config`],
/// with the [`PushConfigError`]'s or [`TlsError`]'s message — a certificate that does not load,
/// say — or a NATS URL that cannot be parsed), or an address cannot be bound. NATS being
/// unreachable is not an error.
///
/// # Examples
///
/// ```no_run
/// # async fn demo() -> std::io::Result<()> {
/// use relay_server::RelayConfig;
///
/// let relay = relay_server::start(RelayConfig {
///     listen: ([127, 0, 0, 1], 0).into(),
///     ..RelayConfig::default()
/// })
/// .await?;
/// println!("listening on ws://{}", relay.local_addr());
/// relay.shutdown().await;
/// # Ok(())
/// # }
/// ```
pub async fn start(config: RelayConfig) -> Result<Relay, StartError> {
    let push_loaded = match &config.push {
        Some(push) => Some(
            push.load()
                .map_err(|error| StartError::Config(error.to_string()))?,
        ),
        None => None,
    };
    let listen = |addr: SocketAddr, source: io::Error| StartError::Listen { addr, source };
    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|error| listen(config.listen, error))?;
    let addr = listener
        .local_addr()
        .map_err(|error| listen(config.listen, error))?;
    let (metrics_listener, metrics_addr) = match config.metrics_listen {
        Some(at) => {
            let metrics = |source| StartError::MetricsListen { addr: at, source };
            let listener = TcpListener::bind(at).await.map_err(metrics)?;
            let bound = listener.local_addr().map_err(metrics)?;
            (Some(listener), Some(bound))
        }
        None => (None, None),
    };
    let registry =
        Registry::with_config(Config::default().with_max_phones_per_server(config.max_phones));
    let gates = http::gates::Gates::new(
        config.rate_burst,
        config.rate_refill,
        config.max_connections,
    );
    // TLS before the cluster: a certificate that does not load stops the relay before it joins.
    let tls =
        match &config.tls {
            Some(settings) => Some(http::tls::Tls::new(&config, settings).await.map_err(
                |error| match error {
                    http::tls::TlsError::HttpListen { addr, source } => {
                        StartError::Listen { addr, source }
                    }
                    other => StartError::Config(other.to_string()),
                },
            )?),
            None => None,
        };
    // Joined in the background (`run`): an instance that cannot reach NATS serves 503 meanwhile.
    let cluster = cluster::join::ClusterSlot::new(config.cluster.clone())
        .map_err(|error| StartError::Config(error.to_string()))?;
    let mut metrics = metrics::Metrics::new();
    if let Some(tls) = &tls {
        metrics.add_tls(tls.metrics());
    }
    if cluster.config().is_some() {
        metrics.add_cluster(cluster.metrics());
    }
    let cluster_first_try = cluster.config().is_some();
    let push = push::Push::new(config.push.as_ref().zip(push_loaded), metrics.wakes());
    let hub = Arc::new(Hub {
        push: Arc::new(push),
        registry,
        gates,
        config,
        started: Instant::now(),
        metrics,
        logs: logging::LogIds::new(),
        refusals: logging::RefusalLog::new(),
        shutdown: Shutdown {
            draining: CancellationToken::new(),
            stopped: CancellationToken::new(),
        },
        sessions: TaskTracker::new(),
        cluster,
        tls,
    });
    // The first attempt to join, here: an instance that can join serves joined from the start;
    // one that cannot reach NATS starts anyway and keeps trying (`run`).
    if cluster_first_try {
        if let Err(error @ relay_cluster::ClusterError::Config(_)) =
            cluster::join::attempt(&hub, cluster::join::FIRST_RETRY).await
        {
            return Err(StartError::Config(format!("cluster: {error}")));
        }
    }
    let task = AbortOnDropHandle::new(tokio::spawn(run(listener, metrics_listener, hub.clone())));
    Ok(Relay {
        addr,
        metrics_addr,
        hub,
        task,
    })
}

/// Serves until shutdown begins, then drains and stops.
async fn run(listener: TcpListener, metrics_listener: Option<TcpListener>, hub: Arc<Hub>) {
    let _expiry = AbortOnDropHandle::new(tokio::spawn(roles::grace::run(hub.clone())));
    let _pruning = AbortOnDropHandle::new(tokio::spawn(prune(hub.clone())));
    let _push_pruning = AbortOnDropHandle::new(tokio::spawn(hub.push.clone().prune()));
    let _metrics = metrics_listener.map(|listener| {
        AbortOnDropHandle::new(tokio::spawn(http::scrape::serve(listener, hub.clone())))
    });
    let _cluster = AbortOnDropHandle::new(tokio::spawn(cluster::join::run(hub.clone())));
    let _tls = http::tls::Tls::spawn(&hub);
    let accepting =
        AbortOnDropHandle::new(tokio::spawn(http::listen::serve(listener, hub.clone())));

    hub.shutdown.draining.cancelled().await;
    let deadline = tokio::time::Instant::now() + hub.config.drain;
    let sessions = hub.gates.live();
    tracing::info!(sessions, "shutting down");
    // Everyone the registry holds gets 1001 first; connections outside it (a binary still probing
    // a holder) see the draining token.
    for conn in hub.registry.snapshot() {
        conn.close(CloseReason::ShuttingDown);
    }
    if let Some(cluster) = hub.cluster.joined() {
        for phone in cluster.away_phones() {
            phone.close(CloseReason::ShuttingDown);
        }
    }
    hub.sessions.close();
    if tokio::time::timeout_at(deadline, hub.sessions.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            left = hub.sessions.len(),
            "drain time over: cutting off the remaining connections"
        );
    }
    hub.shutdown.stopped.cancel();
    let slack = std::time::Duration::from_millis(500);
    let _ =
        tokio::time::timeout_at(deadline.max(tokio::time::Instant::now()) + slack, accepting).await;
    let _ = tokio::time::timeout(slack, hub.sessions.wait()).await;
    cluster::fence::stop(&hub).await;
    tracing::info!("stopped");
}

/// Prunes the rate limiter's client table once per refill period.
async fn prune(hub: Arc<Hub>) {
    let mut every = tokio::time::interval(hub.gates.prune_every());
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        hub.gates.prune();
    }
}

/// The library's "Using it with tokio (and axum)" recipe (`docs/tokio-recipe.md`), run as a doc
/// test of this crate: the library's own doc tests must not need tokio.
#[cfg(doctest)]
#[doc = include_str!("../../docs/tokio-recipe.md")]
pub struct TokioRecipe;
