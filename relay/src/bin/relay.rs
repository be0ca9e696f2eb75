//! `cargo run -p relay-server --bin relay`: a WebSocket relay between binaries and their phones, built on
//! `relay_registry`. It speaks `relay/PROTOCOL.md`; see the `relay_server` crate docs for the design.
//!
//! ```text
//! cargo run -p relay-server --bin relay -- --listen 127.0.0.1:8080 --grace 30s --max-phones 16 \
//!     --heartbeat 30s --probe-timeout 10s --max-frame 262144
//! ```
//! Logs go to stderr (`RUST_LOG=debug` for more). SIGINT or SIGTERM shuts it down gracefully.

use relay_server as server;

use clap::Parser;
use server::RelayConfig;
use std::net::SocketAddr;
use std::time::Duration;

/// A WebSocket relay: one binary per server-id, up to --max-phones phones each.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// How long a disconnected binary's server-id and phones wait for it to reconnect.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    grace: Duration,
    /// Maximum phones per server-id (0 = unlimited).
    #[arg(long, default_value_t = 16)]
    max_phones: usize,
    /// Ping interval; a peer that sends no pong within one interval of a ping is closed 1011.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    heartbeat: Duration,
    /// How long the holder of a server-id has to answer a ping when another binary claims it.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    probe_timeout: Duration,
    /// Largest incoming frame in bytes; larger ones close the connection with 1009.
    #[arg(long, default_value_t = 256 * 1024)]
    max_frame: usize,
}

/// Parses `30s`, `500ms`, `2m`, `1h` (a whole number and a unit).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 30s or 500ms"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` does not start with a whole number"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        "h" => Ok(Duration::from_secs(n * 3600)),
        _ => Err(format!("`{text}`: unit must be ms, s, m or h")),
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let config = RelayConfig {
        listen: args.listen,
        grace: args.grace,
        max_phones: args.max_phones,
        heartbeat: args.heartbeat,
        probe_timeout: args.probe_timeout,
        max_frame: args.max_frame,
        ..RelayConfig::default()
    };
    let relay = server::start(config).await?;
    let addr = relay.local_addr();
    println!("relay listening on ws://{addr} (health: http://{addr}/healthz)");
    let url = if addr == RelayConfig::default().listen {
        String::new()
    } else {
        format!("--url ws://{addr} ")
    };
    println!("try it, in two more terminals:");
    println!("  cargo run -p relay-server --bin relay-client -- {url}--as binary --server demo");
    println!("  cargo run -p relay-server --bin relay-client -- {url}--as phone --server demo");
    shutdown_signal().await?;
    tracing::info!("signal received: shutting down");
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_reject_bare_numbers() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3 days").is_err());
    }
}
