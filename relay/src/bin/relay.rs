//! `relay`: the relay-registry WebSocket relay between binaries and their phones. It speaks
//! `shared/protocol.md`; `relay --help` lists every flag with its default and environment
//! variable, and `relay/README.md` is the operator's guide.
//!
//! ```text
//! cargo run -p relay-server --release -- --listen 0.0.0.0:8080 --log-format json
//! ```
//! SIGINT or SIGTERM drains it: `/readyz` 503, everyone closed `1001 shutting down`, exit 0
//! within the drain time.

use clap::Parser;
use relay_server::cli::Args;
use relay_server::{RelayConfig, logging};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    logging::init(args.log_format);
    let relay = relay_server::start(args.config()).await?;
    let addr = relay.local_addr();
    // The first line is the address (a script or test that started the relay on port 0 reads it).
    println!("relay listening on ws://{addr} (health: http://{addr}/healthz)");
    if let Some(metrics) = relay.metrics_addr() {
        println!("metrics on http://{metrics}/metrics");
    }
    let url = if addr == RelayConfig::default().listen {
        String::new()
    } else {
        format!("--url ws://{addr} ")
    };
    println!("try it, in two more terminals:");
    println!("  cargo run -p relay-server --bin relay-client -- {url}--as binary --server demo");
    println!("  cargo run -p relay-server --bin relay-client -- {url}--as phone --server demo");
    shutdown_signal().await?;
    tracing::info!("signal received: draining");
    relay.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}
