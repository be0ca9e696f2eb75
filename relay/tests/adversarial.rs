//! What an adversarial run of the old relay found (issue 9, section 5), each pinned by a test
//! that failed on it: real sockets to an in-process relay, raw frames written by hand where a
//! well-behaved client library would not send them.

mod support;
use relay_server::RelayConfig;

use serde_json::json;
use std::time::Duration;
use support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Floods `stream` with 125-byte pings, never reading, until `count` were sent or the relay
/// stopped taking them; returns how many were sent.
async fn ping_flood(stream: &mut tokio::net::TcpStream, count: usize) -> usize {
    let chunk: Vec<u8> = (0..1_000)
        .flat_map(|_| client_frame(FIN | PING, &[b'p'; 125]))
        .collect();
    let mut sent = 0;
    while sent < count {
        let write = tokio::time::timeout(PATIENCE, stream.write_all(&chunk)).await;
        match write {
            Ok(Ok(())) => sent += 1_000,
            Ok(Err(_)) => break, // the relay closed the connection
            Err(_) => panic!("the relay stopped reading the flood without closing"),
        }
    }
    sent
}

fn flood_config() -> RelayConfig {
    RelayConfig {
        // Keep the socket open while waiting for the flooder's close reply, so that the test can
        // read the close frame after the flood.
        close_timeout: PATIENCE,
        ..config()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ping_flood_that_never_reads_its_pongs_is_closed_1008_with_bounded_memory() {
    let relay = relay(flood_config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-flood").await;
    // A phone (needs a binary holding the id) and a binary on a fresh id: neither needs more than
    // an upgrade to flood.
    let phone = raw_upgrade(addr, "/v1/client", &phone_headers("srv-flood")).await;
    let fresh = raw_upgrade(addr, "/v1/server", &binary_headers("srv-flood-fresh")).await;
    for (mut flooder, endpoint) in [(phone, "client"), (fresh, "server")] {
        let before = rss_bytes();
        // 100,000 pings: 13 MB of pongs if each were queued.
        ping_flood(&mut flooder, 100_000).await;
        let grown = rss_bytes().saturating_sub(before);
        assert!(
            grown < 4 * 1024 * 1024,
            "{endpoint}: RSS grew by {grown} bytes during the flood"
        );
        assert_eq!(
            raw_close(&mut flooder).await,
            (1008, "policy violation".into()),
            "{endpoint}"
        );
        drop(flooder);
        let series =
            format!("relay_connections_closed_total{{endpoint=\"{endpoint}\",code=\"1008\"}}");
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while metric(&relay, &series).await != 1 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{series} not counted"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    // The binary of the flooding phone heard that it left, with 1008.
    assert_eq!(binary.json().await["close_code"], 1008);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_frames_between_fragments_do_not_restart_the_slow_loris_clock() {
    let relay = relay(RelayConfig {
        slow_message: Duration::from_millis(300),
        heartbeat: Duration::from_millis(100),
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-trickle").await;
    let stream = raw_upgrade(addr, "/v1/client", &phone_headers("srv-trickle")).await;
    let (mut rx, mut tx) = stream.into_split();
    // A fragmented message trickled one byte per fragment, with a ping and a pong (the answer a
    // client gives the relay's heartbeat) between every two fragments, never completed.
    let trickle = tokio::spawn(async move {
        tx.write_all(&client_frame(TEXT, b"\"")).await.unwrap();
        loop {
            tokio::time::sleep(Duration::from_millis(40)).await;
            let mut burst = client_frame(FIN | PING, b"ping");
            burst.extend(client_frame(FIN | PONG, b""));
            burst.extend(client_frame(CONTINUATION, b"x"));
            if tx.write_all(&burst).await.is_err() {
                return;
            }
        }
    });
    let close = read_close_from(&mut rx).await;
    trickle.abort();
    assert_eq!(close, (1008, "message too slow".into()));
    assert_eq!(binary.json().await["close_code"], 1008);
    relay.shutdown().await;
}

/// Like [`raw_close`], on a read half.
async fn read_close_from(rx: &mut tokio::net::tcp::OwnedReadHalf) -> (u16, String) {
    loop {
        let mut header = [0u8; 2];
        tokio::time::timeout(PATIENCE, rx.read_exact(&mut header))
            .await
            .expect("a frame within PATIENCE")
            .expect("read");
        let len = match header[1] & 0x7f {
            126 => {
                let mut ext = [0u8; 2];
                rx.read_exact(&mut ext).await.unwrap();
                u16::from_be_bytes(ext) as usize
            }
            127 => {
                let mut ext = [0u8; 8];
                rx.read_exact(&mut ext).await.unwrap();
                u64::from_be_bytes(ext) as usize
            }
            n => n as usize,
        };
        let mut payload = vec![0u8; len];
        rx.read_exact(&mut payload).await.unwrap();
        if header[0] & 0x0f == 0x8 {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            return (code, String::from_utf8(payload[2..].to_vec()).unwrap());
        }
    }
}

const UPGRADE_HEADERS: &str = "Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nUser-Agent: raw\r\nX-Pyrycode-Token: t\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_1_0_upgrades_are_refused_400() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let _binary = Peer::binary(addr, "srv-old").await;
    let answer = http(
        addr,
        &format!(
            "GET /v1/client HTTP/1.0\r\nHost: relay\r\n{UPGRADE_HEADERS}Sec-WebSocket-Version: 13\r\nX-Pyrycode-Server: srv-old\r\n\r\n"
        ),
    )
    .await;
    let status = answer.lines().next().unwrap_or_default();
    assert!(status.ends_with(" 400 Bad Request"), "{answer}");
    assert!(
        answer.ends_with("WebSocket upgrades need HTTP/1.1"),
        "{answer}"
    );
    await_health(addr, 1, 0).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unsupported_websocket_version_gets_400_naming_the_supported_one() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let answer = http(
        addr,
        &format!(
            "GET /v1/server HTTP/1.1\r\nHost: relay\r\n{UPGRADE_HEADERS}Sec-WebSocket-Version: 8\r\nX-Pyrycode-Server: srv-v8\r\nX-Pyrycode-Version: 1\r\n\r\n"
        ),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.contains("\r\nSec-Websocket-Version: 13\r\n")
            || answer.contains("\r\nSec-WebSocket-Version: 13\r\n"),
        "{answer}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_non_utf8_server_id_gets_400_saying_so() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut request = format!(
        "GET /v1/server HTTP/1.1\r\nHost: relay\r\n{UPGRADE_HEADERS}Sec-WebSocket-Version: 13\r\nX-Pyrycode-Version: 1\r\nX-Pyrycode-Server: "
    )
    .into_bytes();
    request.extend_from_slice(b"desk-\xff\xfe\r\n\r\n");
    stream.write_all(&request).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    let answer = String::from_utf8(answer).unwrap();
    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");
    assert!(
        answer.ends_with("X-Pyrycode-Server is not valid UTF-8"),
        "{answer}"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_nested_deeper_than_128_closes_the_phone_1007_and_128_levels_pass() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-deep").await;
    let (mut phone, phone_id) = join(addr, "srv-deep", &mut binary).await;
    let nested = |depth: usize| format!("{}{}", "[".repeat(depth), "]".repeat(depth));

    phone.send(nested(128)).await;
    assert_eq!(
        binary.text().await,
        format!("{{\"conn_id\":\"{phone_id}\",\"frame\":{}}}", nested(128))
    );

    phone.send(nested(100_000)).await;
    assert_eq!(phone.closed().await, (1007, "JSON nested too deep".into()));
    assert_eq!(
        binary.json().await,
        json!({"conn_id": phone_id, "close_code": 1007})
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_heads_over_16_kib_get_431_and_are_counted() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let filler = "a".repeat(17 * 1024);
    let answer = http(
        addr,
        &format!("GET /healthz HTTP/1.1\r\nHost: relay\r\nX-Filler: {filler}\r\n\r\n"),
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 431 "), "{answer}");
    assert_eq!(
        metric(
            &relay,
            "relay_requests_refused_total{reason=\"head_too_large\"}"
        )
        .await,
        1
    );
    relay.shutdown().await;
}
