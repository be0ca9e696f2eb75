//! `relay`: the relay-registry WebSocket relay between binaries and their phones. It speaks
//! `relay/PROTOCOL.md`; `relay --help` lists every flag with its default and environment
//! variable, and `relay/README.md` is the operator's guide.
//!
//! ```text
//! cargo run -p relay-server --release -- --listen 0.0.0.0:8080 --log-format json
//! ```
//! SIGINT or SIGTERM drains it: `/readyz` 503, everyone closed `1001 shutting down`, exit 0
//! within the drain time.

use clap::Parser;
use relay_server::cli::Args;
use relay_server::{RelayConfig, init_logging};
use std::io::Write;

// The allocator is the system's (glibc malloc), chosen by measurement: with mimalloc 0.1.52 as the
// global allocator, `relay-loadgen --idle 10000 --binaries 1 --idle-frame` measured 4.08 / 3.71 KiB
// per idle phone and 6.19 / 6.14 KiB after one frame each way, a base RSS of 15 MiB instead of
// 7 MiB, and 14,000–15,400 setups/s; the system allocator in the same hour 3.48 / 3.53 KiB, 5.66
// KiB and 20,000–24,000 setups/s (2026-12-02 06:08–06:13 UTC, load 2.2–2.8, 2 cores).

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    init_logging(args.log_format);
    // Installed first, so that a signal during start-up drains instead of killing the process.
    let signal = shutdown_signal()?;
    let relay = relay_server::start(args.config()).await?;
    let addr = relay.local_addr();
    let (ws, http) = match relay.is_tls() {
        true => ("wss", "https"),
        false => ("ws", "http"),
    };
    // The first line is the address (a script or test that started the relay on port 0 reads
    // it). Printing is best-effort: a closed stdout must not stop the relay.
    let mut out = std::io::stdout().lock();
    let _ = writeln!(
        out,
        "relay listening on {ws}://{addr} (health: {http}://{addr}/healthz)"
    );
    if let Some(metrics) = relay.metrics_addr() {
        let _ = writeln!(out, "metrics on http://{metrics}/metrics");
    }
    let url = if addr == RelayConfig::default().listen {
        String::new()
    } else {
        format!("--url {ws}://{addr} ")
    };
    let _ = writeln!(out, "try it, in two more terminals:");
    let _ = writeln!(
        out,
        "  cargo run -p relay-server --bin relay-client -- {url}--as binary --server demo"
    );
    let _ = writeln!(
        out,
        "  cargo run -p relay-server --bin relay-client -- {url}--as phone --server demo"
    );
    let _ = out.flush();
    drop(out);
    signal.await?;
    tracing::info!("signal received: draining");
    relay.shutdown().await;
    Ok(())
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM; the handlers are installed when this is called.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = std::io::Result<()>>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        Ok(async move {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
            Ok(())
        })
    }
    #[cfg(not(unix))]
    {
        Ok(tokio::signal::ctrl_c())
    }
}
