//! The relay: WebSocket endpoints for binaries (`/v1/server`) and phones (`/v1/client`)
//! and `/healthz`, routing through a [`relay_registry::Registry`]. See `shared/protocol.md`.
//!
//! Built on tokio + tokio-tungstenite rather than axum: the protocol needs the pre-upgrade phase
//! in hand (a 5 s deadline for the request head, HTTP 400 before any upgrade, `/healthz` on the
//! same port) and the raw byte stream under the WebSocket (to time a slow-loris message from its
//! first byte). With tokio-tungstenite the relay reads the head itself and hands the socket to
//! `WebSocketStream`; axum hides both behind hyper.
//!
//! [`start`] runs it in-process (the example's `main`, the load generator and the end-to-end tests
//! all call it) and returns a [`Relay`] handle with the bound address and a shutdown.

mod binary;
mod config;
mod conn;
mod endpoint;
mod envelope;
mod http;
mod ids;
mod phone;
mod session;
mod stream;

pub use config::{FRAME_OVERHEAD, RelayConfig};

use conn::WsConn;
use relay_registry::{Config, Counts, Reaper, Registry};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::{JoinError, JoinHandle, JoinSet};
use tracing::{error, info, warn};

/// What every connection task shares.
pub struct Hub {
    registry: Registry<WsConn>,
    config: RelayConfig,
    started: Instant,
    /// Becomes true when the relay starts shutting down.
    shutdown: watch::Receiver<bool>,
}

/// A running relay: its address, and the way to stop it.
pub struct Relay {
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Relay {
    /// The address the relay listens on (with the real port when started on port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Shuts down: stops accepting, closes every connection `1001 shutting down`, and returns once
    /// all are closed or the drain time has passed (the rest are then dropped).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        let _ = self.task.await;
    }
}

/// Binds `config.listen` and starts serving in the background.
///
/// # Errors
///
/// If the address cannot be bound.
pub async fn start(config: RelayConfig) -> io::Result<Relay> {
    let listener = TcpListener::bind(config.listen).await?;
    let addr = listener.local_addr()?;
    let registry =
        Registry::with_config(Config::default().with_max_phones_per_server(config.max_phones));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let hub = Arc::new(Hub {
        registry,
        config,
        started: Instant::now(),
        shutdown: shutdown_rx,
    });
    let task = tokio::spawn(serve(listener, hub));
    Ok(Relay {
        addr,
        shutdown,
        task,
    })
}

/// Accepts connections until shutdown, then drains them.
async fn serve(listener: TcpListener, hub: Arc<Hub>) {
    // Grace expiries run on the reaper's thread, at each deadline, without polling.
    let reaper = Reaper::spawn(&hub.registry);
    let mut tasks = JoinSet::new();
    let mut shutdown = hub.shutdown.clone();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    tasks.spawn(endpoint::connection(hub.clone(), stream, peer));
                }
                Err(error) => {
                    // E.g. out of file descriptors: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
            },
            Some(joined) = tasks.join_next(), if !tasks.is_empty() => report(joined),
            _ = stopping(&mut shutdown) => break,
        }
    }
    drop(listener);
    info!(connections = tasks.len(), "shutting down");
    // Everyone the registry knows gets 1001 first, before any binary's claim ends and would
    // close its phones with another code; connections outside it see the shutdown signal.
    for conn in hub.registry.snapshot() {
        conn.close_as(
            relay_registry::CloseReason::ShuttingDown,
            conn::Origin::Shutdown,
        );
    }
    let drain = async {
        while let Some(joined) = tasks.join_next().await {
            report(joined);
        }
    };
    if tokio::time::timeout(hub.config.drain, drain).await.is_err() {
        warn!(
            left = tasks.len(),
            "drain time over: dropping the remaining connections"
        );
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    // Dropping the reaper joins its thread; do it off the async workers.
    let _ = tokio::task::spawn_blocking(move || drop(reaper)).await;
    info!("stopped");
}

fn report(joined: Result<(), JoinError>) {
    if let Err(error) = joined {
        if error.is_panic() {
            error!("a connection task panicked; its guards were dropped with it");
        }
    }
}

/// Resolves once the relay is shutting down (the value is dropped at once: it is a lock guard).
async fn stopping(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|down| *down).await;
}

/// The `/healthz` body: gracing binaries are not connected; no per-id detail.
fn health(counts: Counts, started: Instant) -> String {
    format!(
        "{{\"status\":\"ok\",\"version\":\"{}\",\"connected_binaries\":{},\"connected_phones\":{},\"uptime_seconds\":{}}}",
        env!("CARGO_PKG_VERSION"),
        counts.binaries,
        counts.phones,
        started.elapsed().as_secs()
    )
}

/// The library's "Using it with tokio (and axum)" recipe (`docs/tokio-recipe.md`), run as a doc
/// test of this crate: the library's own doc tests must not need tokio.
#[cfg(doctest)]
#[doc = include_str!("../../docs/tokio-recipe.md")]
pub struct TokioRecipe;
