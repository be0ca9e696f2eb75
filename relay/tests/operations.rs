//! What operators rely on (issue 9, sections 3 and 7), end to end over real sockets: every
//! metric family moves when its event happens, the connection cap, the per-IP rate limit, where
//! the client IP comes from, and `/readyz` during the drain.

mod support;
use relay_server::{ClientIpSource, RelayConfig};

use serde_json::json;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;

/// Waits until `series` on `relay` reads `want` (counters move right after the event that a
/// client sees, from another task).
async fn await_metric(relay: &relay_server::Relay, series: &str, want: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let got = metric(relay, series).await;
        if got == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{series} stuck at {got}, want {want}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_are_not_on_the_public_listener() {
    let relay = relay(config()).await;
    let text = scrape(&relay).await;
    assert_prometheus_text(&text);
    for family in [
        "relay_binaries_connected",
        "relay_binaries_gracing",
        "relay_phones_connected",
        "relay_ws_upgrades_total",
        "relay_frames_forwarded_total",
        "relay_frame_bytes_forwarded_total",
        "relay_frames_dropped_total",
        "relay_grace_expiries_total",
        "relay_reclaims_total",
        "relay_takeovers_total",
        "relay_connections_closed_total",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(family)),
            "{family} missing"
        );
    }
    let public = http(
        relay.local_addr(),
        "GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(public.starts_with("HTTP/1.1 404 "), "{public}");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_gauges_follow_binaries_gracing_ids_and_phones() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-gauge").await;
    let (_phone, _) = join(addr, "srv-gauge", &mut binary).await;
    await_metric(&relay, "relay_binaries_connected", 1).await;
    await_metric(&relay, "relay_phones_connected", 1).await;
    await_metric(&relay, "relay_binaries_gracing", 0).await;
    binary.close(1000).await;
    binary.ended().await;
    await_metric(&relay, "relay_binaries_connected", 0).await;
    await_metric(&relay, "relay_binaries_gracing", 1).await;
    await_metric(&relay, "relay_phones_connected", 1).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_upgrades_are_counted_by_endpoint_and_outcome() {
    let relay = relay(RelayConfig {
        max_phones: 1,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let s = |endpoint: &str, outcome: &str| {
        format!("relay_ws_upgrades_total{{endpoint=\"{endpoint}\",outcome=\"{outcome}\"}}")
    };
    let mut lost = Peer::phone(addr, "srv-up-none").await;
    assert_eq!(lost.closed().await.0, 4404);
    await_metric(&relay, &s("client", "no_server"), 1).await;

    let mut holder = Peer::binary(addr, "srv-up").await;
    await_metric(&relay, &s("server", "ok"), 1).await;
    let (_phone, _) = join(addr, "srv-up", &mut holder).await;
    await_metric(&relay, &s("client", "ok"), 1).await;
    let mut second = Peer::phone(addr, "srv-up").await;
    assert_eq!(second.closed().await.0, 4429);
    await_metric(&relay, &s("client", "phone_cap"), 1).await;
    let mut rival = Peer::binary(addr, "srv-up").await;
    assert_eq!(rival.closed().await.0, 4409);
    await_metric(&relay, &s("server", "conflict"), 1).await;

    let bad = connect(addr, "/v1/server", &binary_headers("")).await;
    assert_eq!(refusal_status(&bad), Some(400));
    await_metric(&relay, &s("server", "bad_request"), 1).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_bytes_forwarded_are_counted_by_direction() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-fwd").await;
    let (mut phone, id) = join(addr, "srv-fwd", &mut binary).await;
    // The phone's first envelope carries its token (protocol "Frames").
    let hello = format!("{{\"conn_id\":\"{id}\",\"token\":\"secret-token\",\"frame\":\"hello\"}}");
    let up = "relay_frames_forwarded_total{direction=\"phone_to_binary\"}";
    let up_bytes = "relay_frame_bytes_forwarded_total{direction=\"phone_to_binary\"}";
    let down = "relay_frames_forwarded_total{direction=\"binary_to_phone\"}";
    let down_bytes = "relay_frame_bytes_forwarded_total{direction=\"binary_to_phone\"}";
    await_metric(&relay, up, 1).await;
    await_metric(&relay, up_bytes, hello.len() as u64).await;
    binary
        .send(json!({"conn_id": id, "frame": [1, 2, 3]}).to_string())
        .await;
    assert_eq!(phone.text().await, "[1,2,3]");
    await_metric(&relay, down, 1).await;
    await_metric(&relay, down_bytes, "[1,2,3]".len() as u64).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_frames_are_counted_by_reason() {
    let relay = relay(RelayConfig {
        phone_outbox: 64 * 1024,
        close_timeout: PATIENCE,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let s = |reason: &str| format!("relay_frames_dropped_total{{reason=\"{reason}\"}}");
    let mut binary = Peer::binary(addr, "srv-drop").await;
    let mut stuck = raw_phone(addr, "srv-drop").await;
    futures_util::SinkExt::send(
        &mut stuck,
        tokio_tungstenite::tungstenite::Message::text("\"me\""),
    )
    .await
    .unwrap();
    let stuck_id = binary.json().await["conn_id"].as_str().unwrap().to_owned();

    binary.send("not an envelope").await;
    await_metric(&relay, &s("bad_envelope"), 1).await;
    binary
        .send(json!({"conn_id": "client-srv-drop-00000000", "frame": 1}).to_string())
        .await;
    await_metric(&relay, &s("unknown_conn"), 1).await;
    // The stuck phone never reads: once its outbox overflows, a frame for it is dropped.
    let chunk = "z".repeat(32 * 1024);
    let mut overflowed = false;
    for _ in 0..2_000 {
        binary
            .send(json!({"conn_id": stuck_id, "frame": chunk}).to_string())
            .await;
        if metric(&relay, &s("backlog_full")).await >= 1 {
            overflowed = true;
            break;
        }
    }
    assert!(overflowed, "the stuck phone's outbox overflowed");
    relay.shutdown().await;
}

/// A phone-left notice is never dropped for a full binary outbox (the binary keeps the phone's
/// state until it): it waits for room as the phones' frames do, and the leaving phone's close
/// handshake does not wait for it. (The deterministic case, a notice that meets a full outbox,
/// is `phone::tests`; here phones leave while a filler keeps the outbox full.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_left_notice_for_a_full_binary_waits_for_room_and_arrives() {
    // Smaller than one of the filler's frames: an outbox holding one has no room for a notice.
    let relay = relay(RelayConfig {
        binary_outbox: 16 * 1024,
        close_timeout: PATIENCE,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    // A binary that does not read for now: its outbox fills with the filler's frames.
    let mut binary = raw_binary(addr, "srv-full").await;
    // 32 MiB: more than the binary's outbox and the sockets' buffers together.
    const FILL: usize = 1_000;
    let fill = fill_binary_outbox(&relay, addr, "srv-full", FILL).await;
    // Phones join and leave on their own meanwhile: each one's close handshake completes while
    // its notice waits.
    const LEAVERS: usize = 10;
    for _ in 0..LEAVERS {
        let mut leaver = Peer::phone(addr, "srv-full").await;
        leaver.close(4000).await;
        leaver.ended().await;
    }
    // The binary reads again: every frame, and every leaver's notice.
    read_frames_and_notices(&mut binary, FILL, LEAVERS, 4000).await;
    let s = "relay_frames_dropped_total{reason=\"binary_full\"}";
    assert_eq!(metric(&relay, s).await, 0);
    drop(fill.await.expect("the filler's frames all went"));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_expiries_reclaims_and_takeovers_are_counted() {
    let relay = relay(RelayConfig {
        grace: Duration::from_millis(100),
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    // Expiry: the binary leaves and does not come back.
    let binary = Peer::binary(addr, "srv-expire").await;
    drop(binary);
    await_metric(&relay, "relay_grace_expiries_total", 1).await;

    // Takeover: a silent holder (never reads, so answers no probe).
    let _silent = raw_binary(addr, "srv-take").await;
    let _successor = Peer::binary(addr, "srv-take").await;
    await_metric(&relay, "relay_takeovers_total", 1).await;
    assert_eq!(metric(&relay, "relay_reclaims_total").await, 0);
    relay.shutdown().await;

    // Reclaim: back within a long grace window.
    let relay = relay_server::start(config()).await.unwrap();
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-reclaim").await;
    binary.close(1000).await;
    binary.ended().await;
    await_health(addr, 0, 0).await;
    let _back = Peer::binary(addr, "srv-reclaim").await;
    await_metric(&relay, "relay_reclaims_total", 1).await;
    assert_eq!(metric(&relay, "relay_grace_expiries_total").await, 0);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_connections_are_counted_by_endpoint_and_code() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let s = |endpoint: &str, code: &str| {
        format!("relay_connections_closed_total{{endpoint=\"{endpoint}\",code=\"{code}\"}}")
    };
    let mut binary = Peer::binary(addr, "srv-closed").await;
    let (mut phone, id) = join(addr, "srv-closed", &mut binary).await;
    binary
        .send(json!({"conn_id": id, "close_code": 4000}).to_string())
        .await;
    assert_eq!(phone.closed().await.0, 4000);
    await_metric(&relay, &s("client", "other"), 1).await;
    let mut liar = Peer::phone(addr, "srv-closed").await;
    liar.send("{not json").await;
    assert_eq!(liar.closed().await.0, 1007);
    await_metric(&relay, &s("client", "1007"), 1).await;
    binary.close(1000).await;
    binary.ended().await;
    await_metric(&relay, &s("server", "1000"), 1).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upgrades_over_max_connections_get_503_before_any_registry_call() {
    let relay = relay(RelayConfig {
        max_connections: 2,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-cap2").await;
    let (phone, _) = join(addr, "srv-cap2", &mut binary).await;
    // Over the cap: 503, not an upgrade (a phone of an id nobody holds would otherwise get 4404).
    let third = connect(addr, "/v1/client", &phone_headers("srv-nobody")).await;
    assert_eq!(refusal_status(&third), Some(503));
    await_metric(
        &relay,
        "relay_ws_upgrades_total{endpoint=\"client\",outcome=\"over_capacity\"}",
        1,
    )
    .await;
    assert_eq!(healthz(addr).await, health(1, 1), "health is never gated");
    drop(phone);
    assert_eq!(binary.json().await["close_code"], 1001);
    await_health(addr, 1, 0).await;
    let (_again, _) = join(addr, "srv-cap2", &mut binary).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ip_gets_429_after_its_burst_while_another_ip_still_gets_through() {
    let relay = relay(RelayConfig {
        rate_burst: 3,
        rate_refill: Duration::from_secs(3600),
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let headers = phone_headers("srv-rate-nobody");
    for _ in 0..3 {
        let stream = tcp_from([127, 0, 0, 1], addr).await;
        let ws = connect_on(stream, addr, "/v1/client", &headers).await;
        assert_eq!(
            refusal_status(&ws),
            None,
            "within the burst: upgraded (then 4404)"
        );
    }
    let stream = tcp_from([127, 0, 0, 1], addr).await;
    match connect_on(stream, addr, "/v1/client", &headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            let retry: u64 = response.headers()["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!(retry > 3000, "Retry-After {retry}");
        }
        other => panic!("expected 429, got {other:?}"),
    }
    let other_ip = tcp_from([127, 0, 0, 2], addr).await;
    let ws = connect_on(other_ip, addr, "/v1/client", &headers).await;
    assert_eq!(refusal_status(&ws), None, "another IP passes");
    assert_eq!(healthz(addr).await, health(0, 0), "health is never gated");
    await_metric(
        &relay,
        "relay_ws_upgrades_total{endpoint=\"client\",outcome=\"rate_limited\"}",
        1,
    )
    .await;
    relay.shutdown().await;
}

/// Two upgrades from the same TCP peer carrying `first` and `second` as the extra headers; the
/// second's status (`None` if upgraded), with a burst of 1.
async fn second_status_with_headers(
    client_ip: ClientIpSource,
    first: &str,
    second: &str,
) -> Option<u16> {
    let relay = relay(RelayConfig {
        rate_burst: 1,
        rate_refill: Duration::from_secs(3600),
        client_ip,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let mut statuses = Vec::new();
    for xff in [first, second] {
        let mut headers = phone_headers("srv-xff-nobody");
        headers.push(("X-Forwarded-For", xff.to_owned()));
        let ws = connect(addr, "/v1/client", &headers).await;
        statuses.push(refusal_status(&ws));
    }
    relay.shutdown().await;
    assert_eq!(statuses[0], None, "the first is within the burst");
    statuses[1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_decides_the_ip_only_when_configured() {
    use ClientIpSource::{Peer as PeerIp, XForwardedFor};
    // Configured: the right-most entry is the client; two clients, two buckets.
    assert_eq!(
        second_status_with_headers(
            XForwardedFor,
            "6.6.6.6, 203.0.113.1",
            "6.6.6.6, 203.0.113.2"
        )
        .await,
        None
    );
    assert_eq!(
        second_status_with_headers(XForwardedFor, "198.51.100.1, 203.0.113.1", "203.0.113.1").await,
        Some(429),
        "entries left of the right-most one are the client's own and prove nothing"
    );
    // Not configured: the header is ignored, the peer (127.0.0.1) counts.
    assert_eq!(
        second_status_with_headers(PeerIp, "203.0.113.1", "203.0.113.2").await,
        Some(429)
    );
}

/// A PROXY protocol v2 header for a TCP/IPv4 connection from `source`.
fn proxy_v2(source: [u8; 4]) -> Vec<u8> {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    header.push(0x11); // TCP over IPv4
    header.extend_from_slice(&12u16.to_be_bytes());
    header.extend_from_slice(&source);
    header.extend_from_slice(&[127, 0, 0, 1]);
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&8080u16.to_be_bytes());
    header
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_v2_header_decides_the_ip_when_configured_and_is_required_then() {
    let relay = relay(RelayConfig {
        rate_burst: 1,
        rate_refill: Duration::from_secs(3600),
        client_ip: ClientIpSource::ProxyProtocol,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let headers = phone_headers("srv-proxy-nobody");
    let mut statuses = Vec::new();
    for source in [[203, 0, 113, 1], [203, 0, 113, 2], [203, 0, 113, 1]] {
        let mut stream = tcp_from([127, 0, 0, 1], addr).await;
        stream.write_all(&proxy_v2(source)).await.unwrap();
        statuses.push(refusal_status(
            &connect_on(stream, addr, "/v1/client", &headers).await,
        ));
    }
    assert_eq!(statuses, [None, None, Some(429)]);
    // Without a PROXY header the connection is dropped unanswered, and counted.
    let answer = http(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(answer, "");
    assert_eq!(
        metric(
            &relay,
            "relay_requests_refused_total{reason=\"proxy_header\"}"
        )
        .await,
        1
    );
    relay.shutdown().await;

    // Not configured: a PROXY header is not interpreted (it is not HTTP): 400, no upgrade.
    let relay = relay_server::start(config()).await.unwrap();
    let addr = relay.local_addr();
    let mut stream = tcp_from([127, 0, 0, 1], addr).await;
    stream.write_all(&proxy_v2([203, 0, 113, 1])).await.unwrap();
    let result = connect_on(stream, addr, "/v1/client", &headers).await;
    assert!(
        matches!(refusal_status(&result), Some(400)),
        "{:?}",
        result.map(|_| ())
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_turns_503_during_the_drain_and_new_upgrades_get_503() {
    let relay = relay(RelayConfig {
        // A peer that does not answer the close keeps the drain going until the test reads it.
        close_timeout: PATIENCE,
        drain: 2 * PATIENCE,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let ready = |addr| async move {
        http(
            addr,
            "GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
        )
        .await
    };
    assert!(ready(addr).await.starts_with("HTTP/1.1 200 "));
    let mut silent = raw_upgrade(addr, "/v1/server", &binary_headers("srv-drain")).await;
    let shutdown = tokio::spawn(relay.shutdown());
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = ready(addr).await;
        if answer.starts_with("HTTP/1.1 503 ") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{answer}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let late = connect(addr, "/v1/server", &binary_headers("srv-late")).await;
    assert_eq!(refusal_status(&late), Some(503));
    assert_eq!(healthz(addr).await, health(1, 0), "health still answers");
    assert_eq!(raw_close(&mut silent).await, (1001, "shutting down".into()));
    drop(silent);
    tokio::time::timeout(PATIENCE, shutdown)
        .await
        .expect("the drain ends once the last connection closed")
        .unwrap();
}
