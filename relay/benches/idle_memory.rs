//! Memory per connection (issue 9, section 4): starts the `relay` binary (this build's) on a free
//! loopback port, connects one binary and N idle phones (default 10,000) from this process, and
//! reads the relay's RSS from `/proc/PID/status`: after the binary alone, after the idle phones,
//! after each phone sent one 1 KiB frame (all received by the binary), and after the binary sent
//! one 1 KiB frame to each phone (all received). Prints the deltas per phone.
//!
//! ```text
//! cargo bench -p relay-server --bench idle_memory            # 10,000 phones
//! IDLE_PHONES=2000 cargo bench -p relay-server --bench idle_memory
//! ```
//! It needs 2 × N + a few file descriptors in this process and N + a few in the relay.

use futures_util::{SinkExt, StreamExt};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("VmRSS")
}

async fn open(
    url: &str,
    path: &str,
    headers: &[(&'static str, &str)],
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let mut request = format!("{url}{path}").into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(*name, HeaderValue::from_str(value).unwrap());
    }
    tokio_tungstenite::connect_async(request)
        .await
        .expect("upgrade")
        .0
}

/// Waits until the relay's RSS stops moving (allocator and kernel settle), then reads it.
async fn settled_rss(pid: u32) -> u64 {
    let mut last = rss_kib(pid);
    for _ in 0..20 {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = rss_kib(pid);
        if now.abs_diff(last) < 64 {
            return now;
        }
        last = now;
    }
    last
}

#[tokio::main]
async fn main() {
    let phones: usize = std::env::var("IDLE_PHONES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let mut relay = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "off",
            "--max-phones",
            "0",
            "--max-connections",
            "0",
            "--rate-burst",
            "0",
        ])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start relay");
    let pid = relay.id();
    let mut stdout = BufReader::new(relay.stdout.take().unwrap());
    let mut first = String::new();
    stdout.read_line(&mut first).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stdout, &mut std::io::sink()));
    let addr = first
        .split("ws://")
        .nth(1)
        .unwrap()
        .split(' ')
        .next()
        .unwrap();
    let url = format!("ws://{addr}");

    let start_rss = settled_rss(pid).await;
    let binary_headers = [
        ("X-Pyrycode-Server", "mem"),
        ("X-Pyrycode-Version", "1"),
        ("User-Agent", "idle_memory"),
    ];
    let (mut binary_tx, mut binary_rx) = open(&url, "/v1/server", &binary_headers).await.split();
    let base = settled_rss(pid).await;

    let phone_headers = [
        ("X-Pyrycode-Server", "mem"),
        ("X-Pyrycode-Token", "t"),
        ("User-Agent", "idle_memory"),
    ];
    let opening = Instant::now();
    let mut sockets = Vec::with_capacity(phones);
    for _ in 0..phones {
        sockets.push(open(&url, "/v1/client", &phone_headers).await);
    }
    let setup = opening.elapsed();
    let idle = settled_rss(pid).await;

    // Each phone sends one 1 KiB frame; the binary reads them all (and learns the conn-ids).
    let pad = "p".repeat(1024 - 10);
    let frame = format!("{{\"p\":\"{pad}\"}}");
    let mut txs = Vec::with_capacity(phones);
    let mut rxs = Vec::with_capacity(phones);
    for socket in sockets {
        let (tx, rx) = socket.split();
        txs.push(tx);
        rxs.push(rx);
    }
    for tx in &mut txs {
        tx.send(Message::text(frame.clone())).await.unwrap();
    }
    let mut ids = Vec::with_capacity(phones);
    while ids.len() < phones {
        match binary_rx.next().await {
            Some(Ok(Message::Text(text))) => {
                let value: serde_json::Value = serde_json::from_str(&text).unwrap();
                ids.push(value["conn_id"].as_str().unwrap().to_owned());
            }
            Some(Ok(_)) => {}
            other => panic!("binary: {other:?}"),
        }
    }
    let sent = settled_rss(pid).await;

    // The binary sends one 1 KiB frame to each phone; each phone reads it.
    for id in &ids {
        let envelope = format!("{{\"conn_id\":\"{id}\",\"frame\":{frame}}}");
        binary_tx.feed(Message::text(envelope)).await.unwrap();
    }
    binary_tx.flush().await.unwrap();
    for rx in &mut rxs {
        loop {
            match rx.next().await {
                Some(Ok(Message::Text(_))) => break,
                Some(Ok(_)) => {}
                other => panic!("phone: {other:?}"),
            }
        }
    }
    let both = settled_rss(pid).await;

    let per = |kib: u64| kib as f64 * 1024.0 / phones as f64 / 1024.0;
    println!("relay RSS, {phones} phones on one binary (KiB):");
    println!("  started                 {start_rss}");
    println!("  one binary              {base}");
    println!(
        "  + {phones} idle phones   {idle}  ({:.1} KiB per phone; set up in {:.2} s, {:.0}/s)",
        per(idle.saturating_sub(base)),
        setup.as_secs_f64(),
        phones as f64 / setup.as_secs_f64()
    );
    println!(
        "  each sent 1 KiB         {sent}  ({:.1} KiB per phone over the binary alone)",
        per(sent.saturating_sub(base))
    );
    println!(
        "  each also received 1 KiB {both}  ({:.1} KiB per phone over the binary alone)",
        per(both.saturating_sub(base))
    );
    drop(txs);
    drop(rxs);
    let _ = relay.kill();
    let _ = relay.wait();
}
