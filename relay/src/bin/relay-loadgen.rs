//! A load generator for the relay (a benchmark, not a test): B binaries × P phones each, frames
//! both ways at a fixed rate for T seconds, a progress bar, then a table of throughput, latency,
//! lost frames and refused connections.
//!
//! ```text
//! cargo run --release -p relay-server --bin relay &
//! cargo run --release -p relay-server --bin relay-loadgen -- --binaries 8 --phones 4 --duration 10s --rate 100
//! cargo run --release -p relay-server --bin relay-loadgen -- --in-process   # starts its own relay on port 0
//! ```
//! Every frame carries its send time; the receiver records the latency. After the sending phase it
//! waits (up to 5 s) for frames in flight, then counts what never arrived as lost. It exits with
//! status 1 if any frame was lost, so a script can run it as a smoke check.

use relay_server as server;

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Load a relay with binaries and phones sending frames both ways.
#[derive(Debug, Parser)]
struct Args {
    /// The relay to load.
    #[arg(long, default_value = "ws://127.0.0.1:8080")]
    url: String,
    /// Start a relay in this process (on a free port) instead of using --url.
    #[arg(long)]
    in_process: bool,
    /// Number of binaries (server-ids).
    #[arg(long, default_value_t = 4)]
    binaries: usize,
    /// Phones per binary.
    #[arg(long, default_value_t = 4)]
    phones: usize,
    /// How long to send, e.g. 10s or 500ms.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Frames per second per phone, in each direction.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Padding bytes per frame.
    #[arg(long, default_value_t = 64)]
    pad: usize,
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| format!("`{text}` has no unit: write e.g. 10s or 500ms"))?;
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| format!("bad number in `{text}`"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("`{text}`: unit must be ms, s or m")),
    }
}

/// Counters and latency samples for one direction.
#[derive(Default)]
struct Direction {
    sent: AtomicU64,
    received: AtomicU64,
    /// Latencies in microseconds.
    latencies: Mutex<Vec<u64>>,
}

impl Direction {
    fn record(&self, sent_at_us: u64, base: Instant) {
        let now = base.elapsed().as_micros() as u64;
        self.received.fetch_add(1, Ordering::Relaxed);
        self.latencies.lock().push(now.saturating_sub(sent_at_us));
    }
}

/// Everything the connection tasks share.
struct Stats {
    base: Instant,
    up: Direction,
    down: Direction,
    refused: AtomicU64,
    opened: AtomicU64,
}

/// What the connection tasks should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Connected; phones say hello.
    Warmup,
    /// Send measured frames.
    Send,
    /// Stop sending; keep receiving what is in flight.
    Drain,
    /// Close.
    Quit,
}

/// The payload of every measured frame.
#[derive(Deserialize)]
struct Probe {
    t: u64,
}

/// What a binary receives: a phone's frame wrapped, or a phone-left notice.
#[derive(Deserialize)]
struct Wrapped {
    conn_id: String,
    frame: Option<serde_json::Value>,
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let mut relay = None;
    let url = if args.in_process {
        let config = server::RelayConfig {
            listen: ([127, 0, 0, 1], 0).into(),
            max_phones: args.phones.max(16),
            // Every load connection comes from 127.0.0.1: no per-IP limit, no connection cap.
            rate_burst: 0,
            max_connections: 0,
            ..server::RelayConfig::default()
        };
        let started = server::start(config)
            .await
            .expect("start the in-process relay");
        let url = format!("ws://{}", started.local_addr());
        relay = Some(started);
        url
    } else {
        args.url.trim_end_matches('/').to_owned()
    };
    let stats = Arc::new(Stats {
        base: Instant::now(),
        up: Direction::default(),
        down: Direction::default(),
        refused: AtomicU64::new(0),
        opened: AtomicU64::new(0),
    });
    let run_id = format!("{:08x}", getrandom::u32().unwrap_or(0));
    let (phase_tx, phase) = watch::channel(Phase::Warmup);
    let pad = "p".repeat(args.pad);
    let period = Duration::from_secs(1) / args.rate.max(1);

    eprintln!(
        "loadgen: {} binaries x {} phones against {url}, {} frames/s per phone each way, {:?}",
        args.binaries, args.phones, args.rate, args.duration
    );
    let mut tasks = Vec::new();
    for b in 0..args.binaries {
        let id = format!("load-{run_id}-{b}");
        let Some(binary) = open(&url, "/v1/server", &id, &stats).await else {
            continue;
        };
        let mut phones = Vec::new();
        for _ in 0..args.phones {
            if let Some(phone) = open(&url, "/v1/client", &id, &stats).await {
                phones.push(phone);
            }
        }
        for phone in phones {
            let (stats, phase, pad) = (stats.clone(), phase.clone(), pad.clone());
            tasks.push(tokio::spawn(run_phone(phone, stats, phase, pad, period)));
        }
        let (stats, phase, pad) = (stats.clone(), phase.clone(), pad.clone());
        tasks.push(tokio::spawn(run_binary(binary, stats, phase, pad, period)));
    }

    // Let the phones say hello, then send for the duration with a progress bar.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = phase_tx.send(Phase::Send);
    let started = Instant::now();
    let bar = ProgressBar::new(args.duration.as_millis() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {wide_bar} {msg}")
            .expect("valid template"),
    );
    while started.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        bar.set_position(started.elapsed().as_millis() as u64);
        bar.set_message(format!(
            "up {} / down {} frames",
            stats.up.received.load(Ordering::Relaxed),
            stats.down.received.load(Ordering::Relaxed)
        ));
    }
    let elapsed = started.elapsed();
    let _ = phase_tx.send(Phase::Drain);
    bar.finish_with_message("sending done; waiting for frames in flight");

    // Drain: wait for everything sent to arrive (or 5 s). A sender whose tick fired as the phase
    // changed may still send one frame: give every sender a few periods to see the change first,
    // or the check below can pass before that frame is counted, and the quit then loses it.
    tokio::time::sleep((period * 3).max(Duration::from_millis(50))).await;
    let drain_until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < drain_until && !drained(&stats) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = phase_tx.send(Phase::Quit);
    for task in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    }
    report(&stats, elapsed);
    if let Some(relay) = relay {
        relay.shutdown().await;
    }
    if !drained(&stats) {
        eprintln!("loadgen: frames were lost");
        std::process::exit(1);
    }
}

fn drained(stats: &Stats) -> bool {
    let done = |d: &Direction| d.received.load(Ordering::Relaxed) >= d.sent.load(Ordering::Relaxed);
    done(&stats.up) && done(&stats.down)
}

/// Connects to `path` for `server_id`; `None` (counted as refused) if the relay said no.
async fn open(url: &str, path: &str, server_id: &str, stats: &Stats) -> Option<Ws> {
    let mut request = format!("{url}{path}").into_client_request().ok()?;
    let headers = request.headers_mut();
    headers.insert("X-Pyrycode-Server", HeaderValue::from_str(server_id).ok()?);
    headers.insert("User-Agent", HeaderValue::from_static("relay-loadgen"));
    headers.insert("X-Pyrycode-Version", HeaderValue::from_static("loadgen"));
    headers.insert(
        "X-Pyrycode-Token",
        HeaderValue::from_static("loadgen-token"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((ws, _)) => {
            stats.opened.fetch_add(1, Ordering::Relaxed);
            Some(ws)
        }
        Err(_) => {
            stats.refused.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

fn probe(stats: &Stats, pad: &str) -> String {
    let t = stats.base.elapsed().as_micros() as u64;
    format!("{{\"t\":{t},\"pad\":\"{pad}\"}}")
}

async fn close(tx: &mut SplitSink<Ws, Message>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "done".into(),
    };
    let _ = tx.send(Message::Close(Some(frame))).await;
}

/// The next message from the relay.
async fn read_next(rx: &mut SplitStream<Ws>) -> Option<Result<Message, WsError>> {
    rx.next().await
}

/// The phase after the next change (`Quit` if the sender is gone).
async fn next_phase(phase: &mut watch::Receiver<Phase>) -> Phase {
    match phase.changed().await {
        Ok(()) => *phase.borrow_and_update(),
        Err(_) => Phase::Quit,
    }
}

async fn run_phone(
    ws: Ws,
    stats: Arc<Stats>,
    mut phase: watch::Receiver<Phase>,
    pad: String,
    period: Duration,
) {
    let (mut tx, mut rx) = ws.split();
    let mut current = *phase.borrow_and_update();
    if tx.send(Message::text("\"hello\"")).await.is_err() {
        return;
    }
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            message = read_next(&mut rx) => match message {
                Some(Ok(Message::Text(text))) => {
                    if let Ok(p) = serde_json::from_str::<Probe>(&text) {
                        stats.down.record(p.t, stats.base);
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    if current == Phase::Warmup {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = ticker.tick(), if current == Phase::Send => {
                // Counted before it is written, so that the drain waits for a frame already on
                // its way (counting after the write let the drain end with it in flight).
                stats.up.sent.fetch_add(1, Ordering::Relaxed);
                if tx.send(Message::text(probe(&stats, &pad))).await.is_err() {
                    return;
                }
            }
            next = next_phase(&mut phase), if current != Phase::Quit => {
                current = next;
                if current == Phase::Send {
                    ticker.reset(); // no burst for the ticks missed while warming up
                }
                if current == Phase::Quit {
                    close(&mut tx).await;
                }
            }
        }
    }
}

async fn run_binary(
    ws: Ws,
    stats: Arc<Stats>,
    mut phase: watch::Receiver<Phase>,
    pad: String,
    period: Duration,
) {
    let (mut tx, mut rx) = ws.split();
    let mut current = *phase.borrow_and_update();
    let mut known: HashMap<String, String> = HashMap::new();
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            message = read_next(&mut rx) => match message {
                Some(Ok(Message::Text(text))) => {
                    let Ok(wrapped) = serde_json::from_str::<Wrapped>(&text) else { continue };
                    match wrapped.frame {
                        Some(serde_json::Value::String(_)) => {
                            let prefix = format!("{{\"conn_id\":{},\"frame\":", serde_json::Value::from(wrapped.conn_id.as_str()));
                            known.insert(wrapped.conn_id, prefix);
                        }
                        Some(frame) => {
                            if let Some(t) = frame.get("t").and_then(|t| t.as_u64()) {
                                stats.up.record(t, stats.base);
                            }
                        }
                        None => { known.remove(&wrapped.conn_id); }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => {
                    if current == Phase::Warmup {
                        stats.refused.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                Some(Ok(_)) => {}
            },
            _ = ticker.tick(), if current == Phase::Send => {
                for prefix in known.values() {
                    let frame = format!("{prefix}{}}}", probe(&stats, &pad));
                    stats.down.sent.fetch_add(1, Ordering::Relaxed);
                    if tx.feed(Message::text(frame)).await.is_err() {
                        return;
                    }
                }
                if tx.flush().await.is_err() {
                    return;
                }
            }
            next = next_phase(&mut phase), if current != Phase::Quit => {
                current = next;
                if current == Phase::Send {
                    ticker.reset(); // no burst for the ticks missed while warming up
                }
                if current == Phase::Quit {
                    close(&mut tx).await;
                }
            }
        }
    }
}

fn percentile(sorted: &[u64], p: usize) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}

fn report(stats: &Stats, elapsed: Duration) {
    let ms = |us: u64| format!("{:.2} ms", us as f64 / 1000.0);
    println!();
    println!(
        "| direction      | sent     | received | frames/s  | p50       | p99       | max       | lost |"
    );
    println!(
        "|----------------|----------|----------|-----------|-----------|-----------|-----------|------|"
    );
    for (name, d) in [
        ("phone → binary", &stats.up),
        ("binary → phone", &stats.down),
    ] {
        let mut lat = d.latencies.lock().clone();
        lat.sort_unstable();
        let sent = d.sent.load(Ordering::Relaxed);
        let received = d.received.load(Ordering::Relaxed);
        println!(
            "| {name} | {sent:>8} | {received:>8} | {:>9.0} | {:>9} | {:>9} | {:>9} | {:>4} |",
            received as f64 / elapsed.as_secs_f64(),
            ms(percentile(&lat, 50)),
            ms(percentile(&lat, 99)),
            ms(lat.last().copied().unwrap_or(0)),
            sent.saturating_sub(received),
        );
    }
    println!();
    println!(
        "connections opened: {}, refused: {}",
        stats.opened.load(Ordering::Relaxed),
        stats.refused.load(Ordering::Relaxed)
    );
}
