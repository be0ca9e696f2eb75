//! The relay: WebSocket endpoints for binaries (`/v1/server`) and phones (`/v1/client`), plus
//! `/healthz` and `/readyz`, routing through a [`relay_registry::Registry`]; Prometheus metrics
//! on a listener of their own. It speaks `relay/PROTOCOL.md` in full.
//!
//! [`start`] runs it in-process (the `relay` binary, the load generator and the end-to-end tests
//! all call it) and returns a [`Relay`] handle with the bound addresses and a graceful shutdown.
//!
//! # How a connection flows (one module per stage, in this order)
//!
//! 1. `listen` — the accept loop; the PROXY header first if `--client-ip proxy-protocol`; hyper
//!    serves HTTP/1.1 with its own head deadline and size limit.
//! 2. `routes` — `/healthz`, `/readyz`, 404; for an upgrade: readiness, then `gates` (per-IP
//!    rate limit → 429, connection cap → 503), then the header checks (→ 400).
//! 3. `join` — the pre-upgrade decision: the binary's claim or the phone's registration, made
//!    before the `101` (in cluster mode through the directory too; see below).
//! 4. `session` — after `hyper::upgrade::on`, the upgraded stream (wrapped by `loris` to time
//!    slow messages) is handed to tokio-tungstenite, and one task drives the WebSocket: reads,
//!    the outbox's writes, heartbeat, slow-loris, bounds, the close handshake. `binary` and
//!    `phone` hold the role logic (probe and takeover, envelopes, wrapping, notices).
//! 5. `outbox` / `local` — what a connection still has to write, bounded in bytes, filled by other
//!    connections through `Endpoint::send` on the registry's connection type
//!    `endpoint::Endpoint` (an enum: local WebSockets today, other kinds later).
//!
//! # Cluster mode (`RelayConfig::cluster`, `--cluster URL`)
//!
//! Several instances act as one relay through NATS: the [`cluster`] building blocks (directory,
//! liveness, links, remote phones), wired in by `clustered`. The instance where a binary's claim
//! succeeded owns its id: the binary, its grace window and every phone's registration live in
//! that instance's registry, a phone connected elsewhere as a `Remote` endpoint
//! (`endpoint::Endpoint::Remote`, a [`cluster::RemotePhone`]) whose `send` and `close` publish
//! down its link. Without `--cluster` none of it runs: no NATS, the pipeline above unchanged.
//!
//! Around them: `expiry` (grace windows expire in a task of the runtime), `metrics` (every
//! family in one place, served on its own listener), `logging` (text or JSON; ids only as short
//! hashes at info; see [`init_logging`]), `config` and [`cli`] (one clap struct, `env` on every
//! flag).
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

mod binary;
pub mod cli;
mod client_ip;
mod close;
pub mod cluster;
mod clustered;
mod config;
mod endpoint;
mod envelope;
mod expiry;
mod frame_check;
mod gates;
mod ids;
mod join;
mod listen;
mod local;
mod logging;
mod loris;
mod metrics;
mod outbox;
mod phone;
mod proxy;
mod routes;
mod send_error;
mod session;

pub use close::CloseReason;
pub use config::{ClientIpSource, ClusterConfig, FRAME_OVERHEAD, RelayConfig};
pub use logging::{LogFormat, init as init_logging};
pub use send_error::SendError;

use endpoint::Endpoint;
use relay_registry::{Config, Counts, Registry};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::{AbortOnDropHandle, TaskTracker};

/// What every connection task shares.
struct Hub {
    registry: Registry<Endpoint>,
    config: RelayConfig,
    started: Instant,
    metrics: metrics::Metrics,
    gates: gates::Gates,
    logs: logging::LogIds,
    refusals: logging::RefusalLog,
    shutdown: Shutdown,
    /// Every WebSocket session's task (the drain waits for them).
    sessions: TaskTracker,
    /// Cluster mode's state (`None`: a single instance).
    cluster: Option<clustered::Cluster>,
}

impl Hub {
    /// This instance's own connections: the registry's counts, less (in cluster mode) the
    /// phones of other instances registered here, plus this instance's phones registered
    /// elsewhere.
    fn own_counts(&self) -> Counts {
        let counts = self.registry.counts();
        match &self.cluster {
            Some(cluster) => cluster.own_counts(counts),
            None => counts,
        }
    }
}

/// The two stages of shutdown, as cancellation tokens cloned into the tasks that watch them.
struct Shutdown {
    /// Shutdown began: `/readyz` 503, upgrades 503, everyone closed 1001.
    draining: CancellationToken,
    /// The drain is over: stop listening, end the HTTP connections and background tasks, cut
    /// close handshakes short.
    stopped: CancellationToken,
}

impl Shutdown {
    fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
}

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
/// cluster mode it first joins the cluster (connects to NATS, takes its lease, opens the
/// directory, starts its link).
///
/// # Errors
///
/// If an address cannot be bound, or (cluster mode) the cluster cannot be joined.
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
pub async fn start(config: RelayConfig) -> io::Result<Relay> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(at) => Some(TcpListener::bind(at).await?),
        None => None,
    };
    let metrics_addr = match &metrics_listener {
        Some(listener) => Some(listener.local_addr()?),
        None => None,
    };
    let registry =
        Registry::with_config(Config::default().with_max_phones_per_server(config.max_phones));
    let gates = gates::Gates::new(
        config.rate_burst,
        config.rate_refill,
        config.max_connections,
    );
    let cluster = match &config.cluster {
        Some(settings) => Some(
            clustered::Cluster::start(settings.clone())
                .await
                .map_err(|error| io::Error::other(format!("cannot join the cluster: {error}")))?,
        ),
        None => None,
    };
    let mut metrics = metrics::Metrics::new();
    if let Some(cluster) = &cluster {
        metrics.add_cluster(cluster.metrics.clone());
        tracing::info!(instance = %cluster.config.instance, "joined the cluster");
    }
    let hub = Arc::new(Hub {
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
    });
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
    let _expiry = AbortOnDropHandle::new(tokio::spawn(expiry::run(hub.clone())));
    let _pruning = AbortOnDropHandle::new(tokio::spawn(prune(hub.clone())));
    let _metrics = metrics_listener.map(|listener| {
        AbortOnDropHandle::new(tokio::spawn(metrics::serve(listener, hub.clone())))
    });
    let _cluster = hub.cluster.as_ref().map(|cluster| {
        let requests = cluster
            .take_incoming()
            .map(|incoming| tokio::spawn(clustered::owner::serve(hub.clone(), incoming)));
        let fence = tokio::spawn(clustered::fence::watch(hub.clone()));
        (
            requests.map(AbortOnDropHandle::new),
            AbortOnDropHandle::new(fence),
        )
    });
    let accepting = AbortOnDropHandle::new(tokio::spawn(listen::serve(listener, hub.clone())));

    hub.shutdown.draining.cancelled().await;
    let deadline = tokio::time::Instant::now() + hub.config.drain;
    let sessions = hub.gates.live();
    tracing::info!(sessions, "shutting down");
    // Everyone the registry holds gets 1001 first; connections outside it (a binary still probing
    // a holder) see the draining token.
    for conn in hub.registry.snapshot() {
        conn.close(CloseReason::ShuttingDown);
    }
    if let Some(cluster) = &hub.cluster {
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
    clustered::fence::stop(&hub).await;
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
