//! End-to-end tests of the relay (`relay-server`) over real WebSockets on 127.0.0.1:
//! each test starts the relay in-process on an ephemeral port and talks to it with
//! tokio-tungstenite clients, as a binary and its phones would.

mod support;
use relay_server as server;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_flow_both_ways_wrapped_as_specified_in_order_and_none_lost() {
    const N: usize = 1_000;
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-flow").await;
    let (mut a, a_id) = join(addr, "srv-flow", &mut binary).await;
    let (mut b, b_id) = join(addr, "srv-flow", &mut binary).await;
    assert!(a_id.starts_with("client-srv-flow-") && a_id.len() == "client-srv-flow-".len() + 8);
    assert_ne!(a_id, b_id);

    // Phones → binary: each frame wrapped verbatim (inner whitespace kept), as text, in order.
    for i in 0..N {
        a.feed(format!("{{\"i\": {i}}}")).await;
        b.feed(format!("[{i}, \"b\"]")).await;
    }
    a.flush().await;
    b.flush().await;
    let (mut next_a, mut next_b) = (0, 0);
    for _ in 0..2 * N {
        let Message::Text(text) = binary.next().await else {
            panic!("the relay sends text frames only");
        };
        if next_a < N && text == format!("{{\"conn_id\":\"{a_id}\",\"frame\":{{\"i\": {next_a}}}}}")
        {
            next_a += 1;
        } else {
            assert_eq!(
                text,
                format!("{{\"conn_id\":\"{b_id}\",\"frame\":[{next_b}, \"b\"]}}")
            );
            next_b += 1;
        }
    }
    assert_eq!((next_a, next_b), (N, N));

    // Binary → phones: each frame delivered verbatim, unwrapped, as text, in order.
    for i in 0..N {
        binary
            .feed(format!(
                "{{\"conn_id\":\"{a_id}\",\"frame\":{{\"to\":\"a\",\"i\":{i}}}}}"
            ))
            .await;
        binary
            .feed(format!("{{\"conn_id\":\"{b_id}\",\"frame\":\"b{i}\"}}"))
            .await;
    }
    binary.flush().await;
    for i in 0..N {
        assert_eq!(
            a.next().await,
            Message::text(format!("{{\"to\":\"a\",\"i\":{i}}}"))
        );
        assert_eq!(b.next().await, Message::text(format!("\"b{i}\"")));
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_binary_is_refused_by_a_live_holder_and_takes_over_a_silent_one() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();

    // A live holder answers the probe's ping: the newcomer is refused 4409.
    let mut holder = Peer::binary(addr, "srv-live").await;
    let (mut phone, _) = join(addr, "srv-live", &mut holder).await;
    let mut newcomer = Peer::binary(addr, "srv-live").await;
    assert_eq!(
        newcomer.closed().await,
        (4409, "server-id already claimed".into())
    );
    phone.send("\"still here\"").await;
    assert_eq!(holder.json().await["frame"], "still here");

    // A silent holder (never reads, so answers no ping) is taken over.
    let mut silent = raw_binary(addr, "srv-silent").await;
    let mut orphan = Peer::phone(addr, "srv-silent").await;
    await_health(addr, 2, 2).await;
    let mut successor = Peer::binary(addr, "srv-silent").await;
    assert_eq!(
        orphan.closed().await,
        (4404, "binary reclaimed server-id".into())
    );
    let mut silent_saw_close = None;
    while let Some(Ok(message)) = silent.next().await {
        if let Message::Close(frame) = message {
            let frame = frame.expect("a close code");
            silent_saw_close = Some((u16::from(frame.code), frame.reason.to_string()));
        }
    }
    assert_eq!(silent_saw_close, Some((1011, "heartbeat timeout".into())));
    // The successor works.
    let (mut fresh, fresh_id) = join(addr, "srv-silent", &mut successor).await;
    successor
        .send(json!({"conn_id": fresh_id, "frame": "welcome"}).to_string())
        .await;
    assert_eq!(fresh.text().await, "\"welcome\"");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn phones_are_refused_without_a_binary_past_the_cap_and_bad_headers_get_400() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();

    let mut lost = Peer::phone(addr, "srv-nobody").await;
    assert_eq!(lost.closed().await, (4404, "no server with that id".into()));

    let mut binary = Peer::binary(addr, "srv-cap").await;
    let mut phones = Vec::new();
    for _ in 0..16 {
        phones.push(join(addr, "srv-cap", &mut binary).await.0);
    }
    let mut seventeenth = Peer::phone(addr, "srv-cap").await;
    assert_eq!(
        seventeenth.closed().await,
        (4429, "too many phones for server-id".into())
    );
    await_health(addr, 1, 16).await;

    // Missing or empty required headers, or an invalid id: HTTP 400, no upgrade.
    let long_id = "x".repeat(257);
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        (
            "/v1/server",
            without(binary_headers("srv-h"), "X-Pyrycode-Server"),
        ),
        (
            "/v1/server",
            without(binary_headers("srv-h"), "X-Pyrycode-Version"),
        ),
        ("/v1/server", without(binary_headers("srv-h"), "User-Agent")),
        ("/v1/server", binary_headers("")),
        ("/v1/server", binary_headers(&long_id)),
        (
            "/v1/client",
            without(phone_headers("srv-cap"), "X-Pyrycode-Token"),
        ),
        (
            "/v1/client",
            with_empty(phone_headers("srv-cap"), "X-Pyrycode-Token"),
        ),
        (
            "/v1/client",
            with_empty(phone_headers("srv-cap"), "User-Agent"),
        ),
        (
            "/v1/client",
            without(phone_headers("srv-cap"), "X-Pyrycode-Server"),
        ),
    ];
    for (path, headers) in cases {
        match connect(addr, path, &headers).await {
            Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                assert_eq!(response.status(), 400, "{path} {headers:?}");
            }
            other => panic!("{path} {headers:?}: expected HTTP 400, got {other:?}"),
        }
    }
    let raw = http(addr, "GET /v1/client HTTP/1.1\r\nHost: relay\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nUser-Agent: raw\r\nX-Pyrycode-Server: srv-cap\r\nX-Pyrycode-Token:\r\n\r\n").await;
    assert!(raw.starts_with("HTTP/1.1 400 "), "{raw}");
    assert!(!raw.contains("101"), "no upgrade: {raw}");
    await_health(addr, 1, 16).await;
    drop(phones);
    relay.shutdown().await;
}

fn without(mut headers: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    headers.retain(|(n, _)| *n != name);
    headers
}

fn with_empty(mut headers: Vec<(&'static str, String)>, name: &str) -> Vec<(&'static str, String)> {
    for (n, value) in &mut headers {
        if *n == name {
            value.clear();
        }
    }
    headers
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnect_within_grace_evicts_phones_4404_and_no_reconnect_closes_them_1011() {
    // Within the grace window: the returning binary reclaims; its old phones are closed 4404 and
    // may rejoin.
    let relay_a = relay(config()).await;
    let addr = relay_a.local_addr();
    let mut binary = Peer::binary(addr, "srv-back").await;
    let (mut p1, _) = join(addr, "srv-back", &mut binary).await;
    let (mut p2, _) = join(addr, "srv-back", &mut binary).await;
    binary.close(1000).await;
    binary.ended().await;
    await_health(addr, 0, 2).await; // gracing: not connected, phones kept
    let mut back = Peer::binary(addr, "srv-back").await;
    assert_eq!(
        p1.closed().await,
        (4404, "binary reclaimed server-id".into())
    );
    assert_eq!(
        p2.closed().await,
        (4404, "binary reclaimed server-id".into())
    );
    let (mut rejoined, id) = join(addr, "srv-back", &mut back).await;
    back.send(json!({"conn_id": id, "frame": 1}).to_string())
        .await;
    assert_eq!(rejoined.text().await, "1");
    relay_a.shutdown().await;

    // The binary stays away past the (shortened) grace: phones are closed 1011 by the reaper.
    let relay_b = relay(server::RelayConfig {
        grace: Duration::from_millis(200),
        ..config()
    })
    .await;
    let addr = relay_b.local_addr();
    let mut binary = Peer::binary(addr, "srv-gone").await;
    let (mut p1, _) = join(addr, "srv-gone", &mut binary).await;
    let (mut p2, _) = join(addr, "srv-gone", &mut binary).await;
    drop(binary); // abrupt: no close frame
    assert_eq!(p1.closed().await, (1011, "binary did not reconnect".into()));
    assert_eq!(p2.closed().await, (1011, "binary did not reconnect".into()));
    await_health(addr, 0, 0).await;
    relay_b.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_directives_and_phone_left_notices_reach_only_the_current_binary() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-bye").await;
    let (mut asked, asked_id) = join(addr, "srv-bye", &mut binary).await;
    let (mut leaver, leaver_id) = join(addr, "srv-bye", &mut binary).await;
    let (dropper, dropper_id) = join(addr, "srv-bye", &mut binary).await;
    let (mut marker, _) = join(addr, "srv-bye", &mut binary).await;

    // Close directive: the frame, then the code; no notice back for a requested close.
    binary
        .send(json!({"conn_id": asked_id, "frame": {"bye": true}, "close_code": 4000}).to_string())
        .await;
    assert_eq!(asked.text().await, r#"{"bye":true}"#);
    assert_eq!(asked.closed().await.0, 4000);
    asked.ended().await;

    // A phone closing on its own: exactly one notice, with its code and no frame key.
    leaver.close(4321).await;
    assert_eq!(
        binary.text().await,
        format!("{{\"conn_id\":\"{leaver_id}\",\"close_code\":4321}}")
    );
    // An abrupt drop: 1001.
    drop(dropper);
    assert_eq!(
        binary.text().await,
        format!("{{\"conn_id\":\"{dropper_id}\",\"close_code\":1001}}")
    );
    // Nothing else arrived in between: the next frame is the marker's.
    marker.send("\"marker\"").await;
    assert_eq!(binary.json().await["frame"], "marker");

    // Binary replaced before the phone leaves: the phone is evicted (4404), no notice to anyone.
    binary.close(1000).await;
    binary.ended().await;
    let mut successor = Peer::binary(addr, "srv-bye").await;
    assert_eq!(marker.closed().await.0, 4404);
    let mut fresh = Peer::phone(addr, "srv-bye").await;
    fresh.send("\"first\"").await;
    assert_eq!(
        successor.json().await["frame"],
        "first",
        "no notice came before"
    );
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_frames_close_only_their_sender_and_bad_envelopes_are_dropped() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-bad").await;
    let (mut liar, liar_id) = join(addr, "srv-bad", &mut binary).await;
    let (mut good, good_id) = join(addr, "srv-bad", &mut binary).await;

    // Invalid JSON from a phone: that phone is closed 1007; the binary hears it left.
    liar.send("{not json").await;
    assert_eq!(liar.closed().await.0, 1007);
    assert_eq!(
        binary.json().await,
        json!({"conn_id": liar_id, "close_code": 1007})
    );
    good.send("\"fine\"").await;
    assert_eq!(binary.json().await["frame"], "fine");

    // Malformed envelopes from the binary are dropped; the binary stays up.
    for junk in [
        "not json",
        "[1,2]",
        r#"{"frame":"no conn_id"}"#,
        r#"{"conn_id":5,"frame":"x"}"#,
        r#"{"conn_id":"client-srv-bad-00000000","frame":"unknown"}"#,
        &format!(r#"{{"conn_id":"{good_id}","frame":"x","close_code":1005}}"#),
    ] {
        binary.send(junk).await;
    }
    binary
        .send(json!({"conn_id": good_id, "frame": "after junk"}).to_string())
        .await;
    assert_eq!(good.text().await, "\"after junk\"");

    // Oversize frames: 1009, from a phone and from a binary.
    let big = format!("\"{}\"", "x".repeat(256 * 1024));
    good.send(big.clone()).await;
    assert_eq!(good.closed().await.0, 1009);
    assert_eq!(
        binary.json().await,
        json!({"conn_id": good_id, "close_code": 1009})
    );
    binary.send(big).await;
    assert_eq!(binary.closed().await.0, 1009);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_that_never_reads_is_closed_backlog_full_while_its_sibling_keeps_flowing() {
    // The stuck phone reads only at the end: the relay must keep its socket (and the close frame
    // it queued) until then, instead of dropping it after the usual short close timeout.
    let relay = relay(server::RelayConfig {
        close_timeout: PATIENCE,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-slow").await;
    let mut stuck = raw_phone(addr, "srv-slow").await; // never read until the end
    let (mut sibling, sibling_id) = join(addr, "srv-slow", &mut binary).await;
    await_health(addr, 1, 2).await;
    // The stuck phone's conn-id: the only other phone of the id.
    stuck.send(Message::text("\"me\"")).await.unwrap();
    let stuck_id = binary.json().await["conn_id"].as_str().unwrap().to_owned();
    assert_ne!(stuck_id, sibling_id);

    let chunk = "y".repeat(200 * 1024);
    let sibling_reader = tokio::spawn(async move {
        let mut count = 0usize;
        loop {
            match sibling.next().await {
                Message::Text(text) if text.starts_with("{\"n\":") => {
                    let frame: serde_json::Value = serde_json::from_str(&text).unwrap();
                    assert_eq!(frame["n"], count, "in order, none lost");
                    count += 1;
                }
                Message::Text(text) if text == "\"done\"" => return count,
                other => panic!("unexpected {other:?}"),
            }
        }
    });
    let mut sent_to_sibling = 0usize;
    let mut notice = None;
    for _ in 0..2_000 {
        binary
            .send(format!(r#"{{"conn_id":"{stuck_id}","frame":"{chunk}"}}"#))
            .await;
        binary
            .send(format!(
                r#"{{"conn_id":"{sibling_id}","frame":{{"n":{sent_to_sibling},"pad":"{}"}}}}"#,
                &chunk[..1024]
            ))
            .await;
        sent_to_sibling += 1;
        if let Some(message) = binary.try_next() {
            notice = Some(message);
            // Keep flowing a little past the overflow.
            for _ in 0..50 {
                binary
                    .send(format!(
                        r#"{{"conn_id":"{sibling_id}","frame":{{"n":{sent_to_sibling}}}}}"#
                    ))
                    .await;
                sent_to_sibling += 1;
            }
            break;
        }
    }
    let notice = notice.expect("the stuck phone overflowed");
    assert_eq!(
        notice,
        Message::text(format!(
            "{{\"conn_id\":\"{stuck_id}\",\"close_code\":1011}}"
        ))
    );
    binary
        .send(json!({"conn_id": sibling_id, "frame": "done"}).to_string())
        .await;
    assert_eq!(sibling_reader.await.unwrap(), sent_to_sibling);

    // The stuck phone, read at last: whatever was in flight, then 1011 `phone backlog full`.
    let mut close = None;
    while let Some(Ok(message)) = stuck.next().await {
        if let Message::Close(frame) = message {
            let frame = frame.unwrap();
            close = Some((u16::from(frame.code), frame.reason.to_string()));
        }
    }
    assert_eq!(close, Some((1011, "phone backlog full".into())));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_task_that_panics_leaves_exact_counts_and_a_reclaimable_id() {
    let relay = relay(server::RelayConfig {
        // Not JSON and not an envelope: fault injection sits on the refusal paths only.
        panic_on_frame: Some("__panic__".into()),
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-boom").await;
    let (mut doomed, _) = join(addr, "srv-boom", &mut binary).await;
    let (mut survivor, survivor_id) = join(addr, "srv-boom", &mut binary).await;
    await_health(addr, 1, 2).await;

    // A phone's task panics mid-stream: its ticket is dropped in the unwind.
    doomed.send("__panic__").await;
    doomed.ended().await;
    await_health(addr, 1, 1).await;
    binary
        .send(json!({"conn_id": survivor_id, "frame": "ok"}).to_string())
        .await;
    assert_eq!(survivor.text().await, "\"ok\"");

    // The binary's task panics mid-stream: its claim is dropped in the unwind, releasing the id.
    binary.send("__panic__").await;
    binary.ended().await;
    assert_eq!(
        survivor.closed().await,
        (4404, "binary released server-id".into())
    );
    await_health(addr, 0, 0).await;

    // The id can be claimed again, and works.
    let mut again = Peer::binary(addr, "srv-boom").await;
    let (mut phone, id) = join(addr, "srv-boom", &mut again).await;
    again
        .send(json!({"conn_id": id, "frame": "again"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"again\"");
    await_health(addr, 1, 1).await;
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_is_exact_at_each_stage_and_shutdown_closes_everyone_1001_within_the_drain() {
    let config = config();
    let drain = config.drain;
    let relay = relay(config).await;
    let addr = relay.local_addr();

    let raw = healthz_raw(addr).await;
    let (head, _) = raw.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(
        head.contains("\r\nContent-Type: application/json\r\n"),
        "{head}"
    );
    assert!(head.contains("\r\nCache-Control: no-store\r\n"), "{head}");
    assert_eq!(healthz(addr).await, health(0, 0));

    let mut binary = Peer::binary(addr, "srv-health").await;
    await_health(addr, 1, 0).await;
    let (mut p1, _) = join(addr, "srv-health", &mut binary).await;
    let (mut p2, _) = join(addr, "srv-health", &mut binary).await;
    assert_eq!(healthz(addr).await, health(1, 2));
    let mut other = Peer::binary(addr, "srv-other").await;
    await_health(addr, 2, 2).await;

    // A gracing binary is not connected; its phones still are.
    binary.close(1000).await;
    binary.ended().await;
    await_health(addr, 1, 2).await;
    let mut back = Peer::binary(addr, "srv-health").await;
    assert_eq!(p1.closed().await.0, 4404);
    assert_eq!(p2.closed().await.0, 4404);
    await_health(addr, 2, 0).await;
    let (mut p3, _) = join(addr, "srv-health", &mut back).await;
    assert_eq!(healthz(addr).await, health(2, 1));

    // A client stuck before its upgrade is dropped too.
    let mut idle = tokio::net::TcpStream::connect(addr).await.unwrap();
    // The relay bounds its own drain by `drain`; the slack only absorbs scheduling on a loaded
    // machine, so a relay that ignored its drain time would still fail here.
    tokio::time::timeout(drain + Duration::from_secs(2), relay.shutdown())
        .await
        .expect("shutdown completes within the drain time");
    for peer in [&mut back, &mut other, &mut p3] {
        assert_eq!(
            peer.closed_after_texts().await,
            (1001, "shutting down".into())
        );
        peer.ended().await;
    }
    let mut buf = [0u8; 16];
    let n = tokio::io::AsyncReadExt::read(&mut idle, &mut buf)
        .await
        .unwrap_or(0);
    assert_eq!(n, 0, "the idle connection was closed");
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "no longer listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_request_heads_and_slow_messages_are_cut_off() {
    let relay = relay(server::RelayConfig {
        header_timeout: Duration::from_millis(200),
        slow_message: Duration::from_millis(200),
        ..config()
    })
    .await;
    let addr = relay.local_addr();

    // A request head that never completes: closed after the header timeout, unanswered (hyper's
    // `header_read_timeout` drops the connection), and counted.
    let answer = http(addr, "GET /healthz HTTP/1.1\r\nHost: relay\r\n").await;
    assert_eq!(answer, "", "closed without an answer");
    assert_eq!(
        metric(
            &relay,
            "relay_requests_refused_total{reason=\"header_timeout\"}"
        )
        .await,
        1
    );

    // A message whose first bytes came but which never completes: 1008.
    let mut binary = Peer::binary(addr, "srv-loris").await;
    let mut dribbler = raw_upgrade(addr, "/v1/client", &phone_headers("srv-loris")).await;
    // A masked text frame announcing 1000 bytes, of which 10 are sent.
    let mut frame = vec![0x81, 0x80 | 126, 0x03, 0xe8, 1, 2, 3, 4];
    frame.extend_from_slice(b"0123456789");
    tokio::io::AsyncWriteExt::write_all(&mut dribbler, &frame)
        .await
        .unwrap();
    assert_eq!(
        raw_close(&mut dribbler).await,
        (1008, "message too slow".into())
    );
    assert_eq!(binary.json().await["close_code"], 1008);
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_answers_no_ping_is_closed_heartbeat_timeout() {
    let relay = relay(server::RelayConfig {
        heartbeat: Duration::from_millis(200),
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    // The binary is read in the background, so it answers every ping and stays.
    let mut binary = Peer::binary(addr, "srv-hb").await;
    let mut silent = raw_phone(addr, "srv-hb").await;
    // The binary hears that the silent phone left, with 1011.
    let notice = binary.json().await;
    assert_eq!(notice["close_code"], 1011);
    let mut close = None;
    while let Some(Ok(message)) = silent.next().await {
        if let Message::Close(frame) = message {
            close = frame.map(|f| (u16::from(f.code), f.reason.to_string()));
        }
    }
    assert_eq!(close, Some((1011, "heartbeat timeout".into())));
    let (mut phone, id) = join(addr, "srv-hb", &mut binary).await;
    binary
        .send(json!({"conn_id": id, "frame": "alive"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"alive\"");
    relay.shutdown().await;
}

/// Regression (found by loadgen): the relay answered a binary's upgrade before claiming its id, so
/// a phone that connected as soon as the binary saw `101` could be refused 4404.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_connecting_right_after_its_binary_upgrade_finds_the_id_held() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    for i in 0..50 {
        let id = format!("srv-race-{i}");
        let mut binary = Peer::binary(addr, &id).await;
        // No wait of any kind between the binary's 101 and the phone's connect.
        let (_phone, conn_id) = join(addr, &id, &mut binary).await;
        assert!(conn_id.starts_with(&format!("client-{id}-")));
    }
    relay.shutdown().await;
}
