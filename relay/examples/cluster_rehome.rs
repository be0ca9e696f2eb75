//! Re-homing after an instance dies (issue 20's cluster row), measured from the binaries' side:
//! a benchmark client, not a feature (an example, so it is never installed with the product).
//! `relay/benches/cluster_rehome.sh` starts NATS and three relay instances and runs it.
//!
//! 1. **Fresh claims.** `--binaries N` binaries, ids `<prefix>-0..N`, binary `i` on instance
//!    `i mod 3`, at most `--concurrency` upgrades in flight (the kernel's accept backlog would
//!    otherwise drop SYNs and add its 1 s retransmission to the figure): claims per second =
//!    N / (time until every binary has its `101`). Each `101` is a directory claim decided
//!    (an atomic create in the directory bucket) before the upgrade was answered.
//! 2. **Re-homing.** Every binary then reads its socket (answering pings). `kill -9` of
//!    `--victim-pid` (the instance at `--victim`); each binary whose socket ends reconnects at
//!    once, to the surviving instances in turn (spread evenly). A claim waits, before its `101`, until the dead
//!    instance's lease has ended (its ids are not free before: the protocol's "no two instances
//!    ever deliver for one id"); a `503` is retried after its `Retry-After`. Printed: the time
//!    from the kill to the first and to the last binary holding its id again, and the rate of
//!    the burst in between (the claims of ids whose owner's lease ended, by compare-and-set).
//!
//! ```text
//! cargo run --release -p relay-server --example cluster_rehome -- \
//!     --instances 127.0.0.1:8081,127.0.0.1:8082,127.0.0.1:8083 --victim 2 --victim-pid PID
//! ```
//! Progress on stderr; the result as one JSON object on stdout.

use clap::Parser;
use futures_util::StreamExt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};

/// The command line.
#[derive(Parser, Debug)]
struct Args {
    /// The relay instances, comma-separated `host:port`.
    #[arg(long, value_delimiter = ',', required = true)]
    instances: Vec<SocketAddr>,
    /// Which instance (0-based, in `--instances`) is killed.
    #[arg(long)]
    victim: usize,
    /// Its process id (sent SIGKILL with `kill -9`).
    #[arg(long)]
    victim_pid: u32,
    /// Binaries in all.
    #[arg(long, default_value_t = 5000)]
    binaries: usize,
    /// Upgrades in flight at once during the fresh claims.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// The ids' prefix.
    #[arg(long, default_value = "srv-rehome")]
    prefix: String,
    /// Give up waiting for the binaries to hold their ids again after this long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "90s")]
    limit: Duration,
}

/// What one binary's task reports.
enum Event {
    /// Holds its id (its `101`), on this instance, at this instant.
    Holds(usize, Instant),
    /// Its upgrade was refused 503 (to be retried after `Retry-After`).
    Unavailable,
    /// Upgraded, then closed right away by the relay (a refused claim: 4409).
    Refused(u16),
}

/// One upgrade of a binary for `id` at `addr`: the socket, or why not.
async fn upgrade(
    addr: SocketAddr,
    id: &str,
) -> Result<tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, Option<Duration>> {
    let mut request = format!("ws://{addr}/v1/server")
        .into_client_request()
        .map_err(|_| None)?;
    let headers = request.headers_mut();
    for (name, value) in [
        ("X-Pyrycode-Server", id),
        ("X-Pyrycode-Version", "1.0.0"),
        ("User-Agent", "cluster-rehome"),
    ] {
        headers.insert(name, HeaderValue::from_str(value).map_err(|_| None)?);
    }
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|_| None)?;
    match tokio_tungstenite::client_async(request, stream).await {
        Ok((ws, _)) => Ok(ws),
        Err(WsError::Http(response)) if response.status() == 503 => {
            let retry = response
                .headers()
                .get("retry-after")
                .and_then(|value| value.to_str().ok()?.parse().ok())
                .unwrap_or(1);
            Err(Some(Duration::from_secs(retry)))
        }
        Err(_) => Err(None),
    }
}

/// Binary `index`: claims its id on its own instance, holds it until its socket ends, then
/// claims it again on the surviving instances in turn, and so on; reports every step.
async fn binary(
    index: usize,
    args: Arc<Args>,
    first: Arc<Semaphore>,
    events: mpsc::UnboundedSender<Event>,
) {
    let id = format!("{}-{index}", args.prefix);
    let count = args.instances.len();
    let mut at = index % count;
    // Reconnections go to the surviving instances in turn, starting at a different one for
    // every other binary, so the re-homed binaries spread evenly.
    let survivors: Vec<usize> = (0..count).filter(|&i| i != args.victim).collect();
    let mut tries = index / count;
    let mut next = move || {
        tries += 1;
        survivors[tries % survivors.len()]
    };
    let mut permit = Some(first.acquire_owned().await);
    loop {
        let ws = match upgrade(args.instances[at], &id).await {
            Ok(ws) => ws,
            Err(retry) => {
                if retry.is_some() {
                    let _ = events.send(Event::Unavailable);
                }
                at = next();
                tokio::time::sleep(retry.unwrap_or(Duration::from_millis(50))).await;
                continue;
            }
        };
        let _ = events.send(Event::Holds(at, Instant::now()));
        drop(permit.take());
        let (_write, mut read) = ws.split();
        let mut messages = 0usize;
        while let Some(message) = read.next().await {
            match message {
                Ok(Message::Close(frame)) => {
                    if messages == 0 {
                        let code = frame.map_or(1005, |frame| u16::from(frame.code));
                        let _ = events.send(Event::Refused(code));
                    }
                    break;
                }
                Ok(_) => messages += 1,
                Err(_) => break,
            }
        }
        at = next();
    }
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    if args.instances.len() < 2 || args.victim >= args.instances.len() {
        eprintln!("cluster_rehome: give two instances or more, and a victim among them");
        std::process::exit(2);
    }
    let n = args.binaries;
    let on_victim = (0..n)
        .filter(|i| i % args.instances.len() == args.victim)
        .count();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let first = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    for index in 0..n {
        tokio::spawn(binary(index, args.clone(), first.clone(), tx.clone()));
    }
    let (mut held, mut unavailable, mut refused) = (0usize, 0usize, 0usize);
    while held < n {
        match tokio::time::timeout(args.limit, rx.recv()).await {
            Ok(Some(Event::Holds(..))) => held += 1,
            Ok(Some(Event::Unavailable)) => unavailable += 1,
            Ok(Some(Event::Refused(_))) => refused += 1,
            _ => {
                eprintln!("fresh claims: only {held} of {n} binaries hold their ids; giving up");
                std::process::exit(1);
            }
        }
        if held % 1000 == 0 {
            eprintln!("fresh claims: {held}/{n}");
        }
    }
    let fresh = started.elapsed();
    eprintln!(
        "fresh claims: {n} in {:.3} s; killing instance {} (pid {}) in 2 s",
        fresh.as_secs_f64(),
        args.victim,
        args.victim_pid
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let killed = Instant::now();
    let status = std::process::Command::new("kill")
        .args(["-9", &args.victim_pid.to_string()])
        .status();
    if !status.is_ok_and(|status| status.success()) {
        eprintln!("kill -9 {} failed", args.victim_pid);
        std::process::exit(1);
    }
    let (mut rehomed, mut first_at, mut last_at) = (0usize, None, killed);
    let mut rehomed_on = vec![0usize; args.instances.len()];
    let mut refusals = Vec::new();
    let deadline = killed + args.limit;
    while rehomed < on_victim {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Event::Holds(on, at))) => {
                rehomed += 1;
                rehomed_on[on] += 1;
                first_at.get_or_insert(at);
                last_at = last_at.max(at);
                if rehomed % 500 == 0 {
                    eprintln!("re-homed: {rehomed}/{on_victim}");
                }
            }
            Ok(Some(Event::Unavailable)) => unavailable += 1,
            Ok(Some(Event::Refused(code))) => {
                refused += 1;
                refusals.push(code);
            }
            _ => break,
        }
    }
    let first_s = first_at.map_or(f64::NAN, |at| (at - killed).as_secs_f64());
    let last_s = (last_at - killed).as_secs_f64();
    let burst = first_at.map_or(0.0, |at| (last_at - at).as_secs_f64());
    let rate = if burst > 0.0 {
        rehomed as f64 / burst
    } else {
        f64::NAN
    };
    eprintln!(
        "re-homed {rehomed}/{on_victim}: first {first_s:.3} s, last {last_s:.3} s after the kill \
         ({rate:.0} claims/s in the burst); 503s {unavailable}, refused {refused}"
    );
    let result = serde_json::json!({
        "binaries": n,
        "concurrency": args.concurrency,
        "fresh_claims_s": fresh.as_secs_f64(),
        "fresh_claims_per_s": n as f64 / fresh.as_secs_f64(),
        "on_victim": on_victim,
        "rehomed": rehomed,
        "rehomed_per_instance": rehomed_on,
        "refusal_codes": refusals,
        "kill_to_first_s": first_s,
        "kill_to_all_s": last_s,
        "burst_s": burst,
        "burst_claims_per_s": rate,
        "unavailable_503": unavailable,
        "refused": refused,
    });
    println!("{result}");
    if rehomed < on_victim {
        std::process::exit(1);
    }
}
