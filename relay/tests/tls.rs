//! TLS on the public listener, from certificate files: what a client sees (TLS 1.2/1.3 only, ALPN
//! `http/1.1`, the Host check, a binary–phone exchange over `wss://`), live reload (on change and
//! on `SIGHUP`, a bad pair refused with the old one kept, open connections untouched) and
//! bounded handshakes (a silent client closed at the deadline, half-open handshakes bounded by
//! the connection cap). Certificates are made by each test (rcgen, ECDSA P-256, one test CA);
//! every relay listens on loopback and is stopped by its test.

mod support;
mod tls_support;

use relay_server::{RelayConfig, TlsConfig};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::Duration;
use support::*;
use tls_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn a_binary_and_a_phone_exchange_frames_over_wss_with_alpn_http_1_1() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(tls_config(&files)).await;
    let stream = tls_connect(relay.local_addr(), ca.client()).await.unwrap();
    assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    let (mut binary, mut phone, conn_id) = pair_over_wss(&relay, &ca, "tls-pair").await;
    exchange(&mut binary, &mut phone, &conn_id, 1).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn the_tls_families_are_exported_from_the_start_with_the_certificates_expiry() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(tls_config(&files)).await;
    let text = scrape(&relay).await;
    assert_prometheus_text(&text);
    for reason in [
        "timeout",
        "rate_limited",
        "over_capacity",
        "no_certificate",
        "incompatible",
        "closed",
        "other",
    ] {
        let name = format!("relay_tls_handshake_failures_total{{reason=\"{reason}\"}}");
        assert_eq!(series(&text, &name), 0, "{name}");
    }
    assert_eq!(
        series(
            &text,
            "relay_tls_certificate_loads_total{outcome=\"loaded\"}"
        ),
        1
    );
    assert_eq!(
        series(
            &text,
            "relay_tls_certificate_loads_total{outcome=\"refused\"}"
        ),
        0
    );
    for outcome in ["issued", "failed"] {
        let name = format!("relay_acme_orders_total{{outcome=\"{outcome}\"}}");
        assert_eq!(series(&text, &name), 0, "{name}");
    }
    // rcgen's default validity ends on 4096-01-01.
    let expiry = series(
        &text,
        "relay_tls_certificate_expiry_timestamp_seconds{name=\"localhost\"}",
    );
    assert_eq!(expiry, 67_090_118_400, "{text}");
    relay.shutdown().await;
}

#[tokio::test]
async fn tls_1_1_is_refused_with_a_protocol_version_alert() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(tls_config(&files)).await;
    let mut tcp = TcpStream::connect(relay.local_addr()).await.unwrap();
    // A TLS 1.1 ClientHello (no supported_versions extension) offering what the relay has
    // (TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, P-256, ecdsa_secp256r1_sha256), so that only the
    // version is wrong.
    let mut body = vec![0x03, 0x02];
    body.extend([7u8; 32]);
    body.extend([0x00, 0x00, 0x02, 0xc0, 0x2b, 0x01, 0x00]);
    body.extend([0x00, 0x16]); // extensions
    body.extend([0x00, 0x0d, 0x00, 0x04, 0x00, 0x02, 0x04, 0x03]); // signature_algorithms
    body.extend([0x00, 0x0a, 0x00, 0x04, 0x00, 0x02, 0x00, 0x17]); // supported_groups
    body.extend([0x00, 0x0b, 0x00, 0x02, 0x01, 0x00]); // ec_point_formats
    let mut handshake = vec![0x01, 0x00, 0x00, body.len() as u8];
    handshake.extend(&body);
    let mut record = vec![0x16, 0x03, 0x01, 0x00, handshake.len() as u8];
    record.extend(&handshake);
    tcp.write_all(&record).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("the relay answers and closes")
        .unwrap();
    // One alert record: fatal (2), protocol_version (70).
    assert_eq!(answer.first(), Some(&0x15), "{answer:?}");
    assert_eq!(&answer[answer.len() - 2..], &[2, 70], "{answer:?}");
    let failures = "relay_tls_handshake_failures_total{reason=\"incompatible\"}";
    assert_eq!(metric(&relay, failures).await, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn with_domains_a_wrong_host_gets_421_with_an_empty_body() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let tls = TlsConfig::files(files.cert(), files.key()).with_domains(["LocalHost"]);
    let relay = relay(RelayConfig {
        tls: Some(tls),
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let wrong = https(
        addr,
        &ca,
        "GET /healthz HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    )
    .await;
    assert!(wrong.starts_with("HTTP/1.1 421 "), "{wrong}");
    let (_, body) = wrong.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, "");
    assert!(
        wrong.to_ascii_lowercase().contains("content-length: 0"),
        "{wrong}"
    );
    let right = https(
        addr,
        &ca,
        "GET /readyz HTTP/1.1\r\nHost: localhost:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(right.starts_with("HTTP/1.1 200 "), "{right}");
    // The upgrade path is checked too: a wss:// client naming the host passes.
    let (mut binary, mut phone, conn_id) = pair_over_wss(&relay, &ca, "tls-host").await;
    exchange(&mut binary, &mut phone, &conn_id, 1).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn changed_files_are_served_to_new_connections_while_open_ones_keep_exchanging() {
    let ca = Ca::new();
    let first = ca.leaf();
    let files = Files::new(&first);
    let relay = relay(tls_config(&files)).await;
    let addr = relay.local_addr();
    assert_eq!(served(addr, &ca).await, first.der);
    let (mut binary, mut phone, conn_id) = pair_over_wss(&relay, &ca, "tls-reload").await;

    let second = ca.leaf();
    files.write(&second.cert, &second.key);
    await_served(addr, &ca, &second.der).await;
    exchange(&mut binary, &mut phone, &conn_id, 2).await;
    let loaded = "relay_tls_certificate_loads_total{outcome=\"loaded\"}";
    assert_eq!(metric(&relay, loaded).await, 2);
    relay.shutdown().await;
}

#[tokio::test]
async fn a_pair_whose_key_does_not_match_is_refused_and_the_old_certificate_stays() {
    let ca = Ca::new();
    let first = ca.leaf();
    let files = Files::new(&first);
    let relay = relay(tls_config(&files)).await;
    let addr = relay.local_addr();
    let other = ca.leaf();
    files.write(&other.cert, &first.key);
    let refused = "relay_tls_certificate_loads_total{outcome=\"refused\"}";
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while metric(&relay, refused).await == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never refused");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(served(addr, &ca).await, first.der);
    // Once the key is written too, the pair loads.
    files.write(&other.cert, &other.key);
    await_served(addr, &ca, &other.der).await;
    relay.shutdown().await;
}

#[tokio::test]
async fn a_relay_does_not_start_with_a_mismatched_pair() {
    let ca = Ca::new();
    let (first, second) = (ca.leaf(), ca.leaf());
    let files = Files::new(&first);
    files.write(&first.cert, &second.key);
    let error = match relay_server::start(tls_config(&files)).await {
        Ok(_) => panic!("started with a mismatched pair"),
        Err(error) => error,
    };
    assert!(error.is_config(), "a configuration error: {error}");
    assert!(
        error.to_string().contains("does not match the certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn a_client_that_never_finishes_its_handshake_is_closed_at_the_deadline() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(RelayConfig {
        header_timeout: Duration::from_millis(300),
        ..tls_config(&files)
    })
    .await;
    let mut silent = TcpStream::connect(relay.local_addr()).await.unwrap();
    // Half a ClientHello record header, then nothing.
    silent.write_all(&[0x16, 0x03]).await.unwrap();
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(PATIENCE, silent.read(&mut buf))
        .await
        .expect("closed by the relay");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    let timeouts = "relay_tls_handshake_failures_total{reason=\"timeout\"}";
    assert_eq!(metric(&relay, timeouts).await, 1);
    relay.shutdown().await;
}

#[tokio::test]
async fn half_open_handshakes_beyond_the_connection_cap_are_closed_at_once() {
    const CAP: usize = 4;
    const OPENED: usize = 200;
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(RelayConfig {
        max_connections: CAP,
        header_timeout: Duration::from_secs(60),
        ..tls_config(&files)
    })
    .await;
    let mut sockets = Vec::new();
    for _ in 0..OPENED {
        sockets.push(TcpStream::connect(relay.local_addr()).await.unwrap());
    }
    let mut open = 0;
    for socket in &mut sockets {
        let mut buf = [0u8; 8];
        match tokio::time::timeout(Duration::from_millis(200), socket.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => {}
            Ok(Ok(_)) => panic!("data before any ClientHello"),
            Err(_) => open += 1,
        }
    }
    // The first CAP hold their places for the whole deadline; every other one was closed.
    assert_eq!(open, CAP);
    let over = "relay_tls_handshake_failures_total{reason=\"over_capacity\"}";
    assert_eq!(metric(&relay, over).await, (OPENED - CAP) as u64);
    // A well-behaved client gets a place once the half-open ones are gone.
    drop(sockets);
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while tls_connect(relay.local_addr(), ca.client()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "no place freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    relay.shutdown().await;
}

#[tokio::test]
async fn a_handshake_takes_the_rate_limit_token_of_its_connections_first_upgrade() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(RelayConfig {
        rate_burst: 2,
        rate_refill: Duration::from_secs(3600),
        ..tls_config(&files)
    })
    .await;
    // Two connections, each one handshake and one upgrade: within a burst of two.
    let _binary = wss(
        relay.local_addr(),
        "/v1/server",
        &binary_headers("tls-rate"),
        ca.client(),
    )
    .await;
    let _phone = wss(
        relay.local_addr(),
        "/v1/client",
        &phone_headers("tls-rate"),
        ca.client(),
    )
    .await;
    // The third handshake is over the limit: closed before any TLS.
    assert!(tls_connect(relay.local_addr(), ca.client()).await.is_err());
    let limited = "relay_tls_handshake_failures_total{reason=\"rate_limited\"}";
    assert_eq!(metric(&relay, limited).await, 1);
    relay.shutdown().await;
}

/// `relay` as a child process with certificate files.
fn relay_process(files: &Files) -> (std::process::Child, SocketAddr) {
    relay_process_with(files, &[])
}

/// `relay` as a child process with certificate files and `extra` flags.
fn relay_process_with(files: &Files, extra: &[&str]) -> (std::process::Child, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .args(extra)
        .arg("--tls-cert")
        .arg(files.cert())
        .arg("--tls-key")
        .arg(files.key())
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay");
    let addr = printed_address(&printed_lines(&mut child, 1)[0], "wss://");
    (child, addr)
}

#[tokio::test]
async fn the_relay_binary_reloads_its_certificate_on_sighup() {
    let ca = Ca::new();
    let first = ca.leaf();
    let files = Files::new(&first);
    let (mut child, addr) = relay_process(&files);
    let stderr = collect_stderr(&mut child);
    assert_eq!(served(addr, &ca).await, first.der);
    // The pair unchanged: SIGHUP reloads it anyway (and says so).
    signal(&child, "HUP");
    let second = ca.leaf();
    files.write(&second.cert, &second.key);
    signal(&child, "HUP");
    await_served(addr, &ca, &second.der).await;
    // A pair that does not match, then SIGHUP: refused, the second one stays, the relay lives.
    files.write(&ca.leaf().cert, &second.key);
    signal(&child, "HUP");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(served(addr, &ca).await, second.der);
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
    let log = stderr.join().unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("TLS certificate reloaded") && l.contains("SIGHUP")),
        "{log}"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("TLS certificate not reloaded") && l.contains("does not match")),
        "{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_client_speaks_wss_trusting_its_ca_file() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let relay = relay(tls_config(&files)).await;
    let ca_file = files.dir.path().join("ca.pem");
    std::fs::write(&ca_file, &ca.pem).unwrap();
    let url = format!("wss://localhost:{}", relay.local_addr().port());
    let mut binary = Command::new(env!("CARGO_BIN_EXE_relay-client"))
        .args(["--url", &url, "--as", "binary", "--server", "tls-cli"])
        .arg("--ca-file")
        .arg(&ca_file)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("relay-client");
    let stdout = lines_of(binary.stdout.take().unwrap());
    let stderr = lines_of(binary.stderr.take().unwrap());
    line_with(&stderr, "upgraded as binary");
    let addr = relay.local_addr();
    let mut phone =
        Peer::new(wss(addr, "/v1/client", &phone_headers("tls-cli"), ca.client()).await);
    phone.send(r#"{"hi":"over wss"}"#).await;
    let line = tokio::task::spawn_blocking(move || line_with(&stdout, "over wss"))
        .await
        .unwrap();
    assert!(line.starts_with("< "), "{line}");
    drop(binary.stdin.take());
    assert!(wait_exit(&mut binary).success());
    relay.shutdown().await;
}

/// The relay's open descriptors and resident set (KiB).
fn fds_and_rss(pid: u32) -> (usize, u64) {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let rss = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    (fds, rss)
}

#[test]
#[cfg(target_os = "linux")]
fn ten_thousand_half_open_handshakes_leave_descriptors_and_memory_bounded() {
    const CAP: usize = 100;
    // 10,000, or as many as this process may open beside the other tests (a low `ulimit -n`).
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap();
    let soft: usize = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok())
        .unwrap_or(1024);
    let flood = 10_000.min(soft.saturating_sub(512));
    assert!(
        flood > 4 * CAP,
        "`ulimit -n` is {soft}: too low for this test (it needs about 1,000)"
    );
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let (mut child, addr) =
        relay_process_with(&files, &["--max-connections", "100", "--rate-burst", "0"]);
    let (base_fds, base_rss) = fds_and_rss(child.id());
    let (mut most_fds, mut most_rss) = (base_fds, base_rss);
    let mut sockets = Vec::with_capacity(flood);
    for n in 0..flood {
        use std::io::Write;
        let mut socket = std::net::TcpStream::connect(addr).expect("connect");
        // Half a TLS record header, then nothing: the handshake never finishes.
        let _ = socket.write_all(&[0x16, 0x03]);
        sockets.push(socket);
        if n % 500 == 499 {
            let (fds, rss) = fds_and_rss(child.id());
            most_fds = most_fds.max(fds);
            most_rss = most_rss.max(rss);
        }
    }
    // Every connection past the cap was closed at once: the relay never held more than the cap
    // plus the connections accepted but not yet through the gate (the accept loop takes up to
    // tokio's cooperative budget, 128, per turn before the tasks it spawned run; 234 at most seen
    // on 2 busy cores), and its memory stayed flat. Without the cap it held 3,881 at once (the
    // flood's connections of the last 5 s) and 73 MiB.
    assert!(
        most_fds <= base_fds + CAP + 2 * 128 + 16,
        "{most_fds} descriptors (from {base_fds}) with a cap of {CAP}; RSS {most_rss} KiB from \
         {base_rss} KiB"
    );
    assert!(
        most_rss < base_rss + 16 * 1024,
        "RSS {most_rss} KiB from {base_rss} KiB"
    );
    eprintln!(
        "{flood} half-open handshakes, cap {CAP}: at most {most_fds} descriptors (from {base_fds}), \
         RSS at most {most_rss} KiB (from {base_rss} KiB)"
    );
    // And it still serves a real handshake once the half-open ones are gone.
    drop(sockets);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while tls_connect(addr, ca.client()).await.is_err() {
            assert!(tokio::time::Instant::now() < deadline, "no place freed");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    signal(&child, "TERM");
    assert!(wait_exit(&mut child).success());
}

#[tokio::test]
async fn tls_with_x_forwarded_for_is_refused_at_start() {
    let ca = Ca::new();
    let files = Files::new(&ca.leaf());
    let config = RelayConfig {
        client_ip: relay_server::ClientIpSource::XForwardedFor,
        ..tls_config(&files)
    };
    let error = match relay_server::start(config).await {
        Ok(_) => panic!("started TLS with x-forwarded-for"),
        Err(error) => error,
    };
    assert!(error.is_config(), "a configuration error: {error}");
    assert!(error.to_string().contains("proxy-protocol"), "{error}");
}
