//! The relay at its file-descriptor limit, as a real child process started under a low limit
//! (`ulimit -n` in a shell that then `exec`s the relay): new connections are refused promptly
//! (accepted on the reserve descriptor and closed), counted, logged once, without a busy accept
//! loop, and service resumes when connections close.
#![cfg(target_os = "linux")]

mod support;

use serde_json::json;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// The descriptor limit the relay runs under: small, so the test fills it with a few dozen
/// connections.
const LIMIT: u32 = 64;

/// A `relay` child under `ulimit -n LIMIT`, its address, its metrics address and its stderr.
struct LimitedRelay {
    child: Child,
    addr: SocketAddr,
    metrics: SocketAddr,
    stderr: Option<std::thread::JoinHandle<String>>,
}

impl LimitedRelay {
    fn start() -> LimitedRelay {
        // `exec`: the relay replaces the shell, so its pid is the child's.
        let script = format!(
            "ulimit -n {LIMIT} && exec \"$0\" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
             --max-phones 0 --rate-burst 0 --max-connections 0"
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, env!("CARGO_BIN_EXE_relay")])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start relay under ulimit -n");
        let stderr = collect_stderr(&mut child);
        let printed = printed_lines(&mut child, 2);
        LimitedRelay {
            addr: printed_address(&printed[0], "ws://"),
            metrics: printed_address(&printed[1], "http://"),
            child,
            stderr: Some(stderr),
        }
    }

    /// User plus system CPU time the relay has used so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .expect("/proc/PID/stat");
        // Fields after the command name (which is in parentheses): state is field 3, utime 14,
        // stime 15.
        let after = stat.rsplit_once(')').expect("(comm)").1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let field = |n: usize| fields[n - 3].parse::<u64>().expect("a tick count");
        field(14) + field(15)
    }

    /// Kills the relay and returns what it wrote to stderr.
    fn stop(mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr.take().unwrap().join().unwrap()
    }
}

/// A phone upgrade that may be refused: `Ok` if upgraded, `Err` if the relay closed the
/// connection. A relay that left the connection hanging fails the test (`connect`'s patience).
async fn try_phone(addr: SocketAddr, id: &str) -> Result<Peer, ()> {
    match connect(addr, "/v1/client", &phone_headers(id)).await {
        Ok(ws) => Ok(Peer::new(ws)),
        Err(_) => Err(()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_descriptor_limit_new_connections_are_closed_counted_and_logged_and_service_resumes()
{
    let relay = LimitedRelay::start();
    let addr = relay.addr;
    let mut binary = Peer::binary(addr, "srv-full").await;

    // Fill the relay: phones until one is refused.
    let mut phones = Vec::new();
    let refused_filling = loop {
        match try_phone(addr, "srv-full").await {
            Ok(phone) => phones.push(phone),
            Err(()) => break 1,
        }
        assert!(
            phones.len() < LIMIT as usize,
            "{} phones connected under a limit of {LIMIT} descriptors",
            phones.len()
        );
    };
    assert!(
        phones.len() > LIMIT as usize / 2,
        "only {} phones before the first refusal",
        phones.len()
    );
    // The held phones still work: each frame reaches the binary.
    for phone in phones.iter_mut().take(3) {
        phone.send(r#""still here""#).await;
        assert_eq!(binary.json().await["frame"], "still here");
    }

    // At the limit: every further connection is closed (not left hanging), and the relay does
    // not spin meanwhile.
    const MORE: u64 = 5;
    let cpu_before = relay.cpu_ticks();
    for _ in 0..MORE {
        assert!(
            try_phone(addr, "srv-full").await.is_err(),
            "refused at the limit"
        );
    }
    // A window in which a busy accept loop would burn a core (one tick is 10 ms on Linux).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_used = relay.cpu_ticks() - cpu_before;
    assert!(
        cpu_used < 100,
        "{cpu_used} ticks of CPU at the limit in about 2 s: a busy accept loop"
    );

    // Closing connections frees descriptors: service resumes.
    phones.truncate(phones.len() / 2);
    let mut after = None;
    for _ in 0..100 {
        if let Ok(ws) = connect(addr, "/v1/server", &binary_headers("srv-after")).await {
            after = Some(Peer::new(ws));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut after = after.expect("a new binary connects once connections closed");
    let (mut phone, phone_id) = join(addr, "srv-after", &mut after).await;
    after
        .send(json!({"conn_id": phone_id, "frame": "welcome"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"welcome\"");

    // Every refusal was counted (the retries above while descriptors were freed may add more).
    let answer = http(
        relay.metrics,
        "GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    let body = answer.split_once("\r\n\r\n").expect("a response").1;
    let counted = series(
        body,
        "relay_requests_refused_total{reason=\"no_descriptors\"}",
    );
    assert!(
        counted >= refused_filling + MORE,
        "{counted} counted, at least {} refused",
        refused_filling + MORE
    );

    drop((phones, phone, after, binary));
    let stderr = relay.stop();
    let warnings = stderr
        .lines()
        .filter(|line| line.contains("out of file descriptors"))
        .count();
    // Rate-limited: one line per 10 s, and this test refuses within a few seconds (the line may
    // repeat once if the test is slow).
    assert!(
        (1..=2).contains(&warnings),
        "{warnings} warnings about descriptors in:\n{stderr}"
    );
}
