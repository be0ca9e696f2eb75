//! `relay`: the relay-registry WebSocket relay between binaries and their phones. It speaks
//! `relay/PROTOCOL.md`; `relay --help` lists every flag with its default and environment
//! variable, and `relay/README.md` is the operator's guide.
//!
//! ```text
//! cargo run -p relay-server --release -- --listen 0.0.0.0:8080 --log-format json
//! ```
//! SIGINT or SIGTERM drains it: `/readyz` 503, everyone closed `1001 shutting down`, exit 0
//! within the drain time.
//!
//! Errors are one line on stderr, `relay: error: …`, never a `Debug` dump: an invalid
//! configuration (a flag, a value, a file, a NATS URL that cannot be parsed) exits 2 before
//! anything starts, a failure at run time (an address in use) exits 1. NATS unreachable is
//! not a failure: the relay serves 503 until it has joined the cluster.

use clap::Parser;
use clap::error::ErrorKind;
use relay_server::cli::Args;
use relay_server::{RelayConfig, init_logging};
use std::io::Write;
use std::process::ExitCode;

// The allocator is the system's (glibc malloc), chosen by measurement: with mimalloc 0.1.52 as the
// global allocator, `relay-loadgen --idle 10000 --binaries 1 --idle-frame` measured 4.08 / 3.71 KiB
// per idle phone and 6.19 / 6.14 KiB after one frame each way, a base RSS of 15 MiB instead of
// 7 MiB, and 14,000–15,400 setups/s; the system allocator in the same hour 3.48 / 3.53 KiB, 5.66
// KiB and 20,000–24,000 setups/s (2026-12-02 06:08–06:13 UTC, load 2.2–2.8, 2 cores).

/// Exit status of an invalid configuration (as clap's own usage errors).
const CONFIG_ERROR: u8 = 2;
/// Exit status of a failure at run time.
const RUN_ERROR: u8 = 1;

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(args) => args,
        Err(error)
            if matches!(
                error.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = error.print();
            return ExitCode::SUCCESS;
        }
        Err(error) => return fail(CONFIG_ERROR, &clap_line(&error)),
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => return fail(RUN_ERROR, &format!("cannot start the runtime: {error}")),
    };
    match runtime.block_on(serve(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, line)) => fail(code, &line),
    }
}

/// Prints `relay: error: <line>` and returns `code`.
fn fail(code: u8, line: &str) -> ExitCode {
    eprintln!("relay: error: {line}");
    ExitCode::from(code)
}

/// clap's message on one line: its first line, without its own `error: ` prefix (the usage and
/// tips that follow are for `--help`).
fn clap_line(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered
        .lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("invalid arguments");
    first.trim().trim_start_matches("error: ").to_owned()
}

/// Runs the relay until a signal has drained it; an error is its exit status and line.
async fn serve(args: Args) -> Result<(), (u8, String)> {
    init_logging(args.log_format);
    let run_error = |what: &str, error: std::io::Error| (RUN_ERROR, format!("{what}: {error}"));
    // Installed first, so that a signal during start-up drains instead of killing the process.
    let signal = shutdown_signal().map_err(|error| run_error("cannot watch for signals", error))?;
    // An invalid configuration (a bad file): one line, exit 2, before anything starts.
    let config = args
        .config()
        .map_err(|error| (CONFIG_ERROR, error.to_string()))?;
    let relay = relay_server::start(config).await.map_err(|error| {
        let code = if error.is_config() {
            CONFIG_ERROR
        } else {
            RUN_ERROR
        };
        (code, error.to_string())
    })?;
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
    signal
        .await
        .map_err(|error| run_error("cannot watch for signals", error))?;
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
