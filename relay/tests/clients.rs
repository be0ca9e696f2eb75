//! What pyrycode's real clients need of the relay's wire (issue 17, items 1, 2 and 5), over real
//! sockets on 127.0.0.1: the phone's token on its first envelope only, the `/v2` endpoints as
//! the same endpoints as `/v1` (with `/v2/client`'s token optional), and request targets with a
//! fragment refused.

mod support;
use relay_server::{ForwardToken, RelayConfig};

use serde_json::Value;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use support::*;

/// Phone headers with `token` as `X-Pyrycode-Token`, or without the header.
fn phone_with(id: &str, token: Option<&str>) -> Vec<(&'static str, String)> {
    let mut headers: Vec<_> = phone_headers(id)
        .into_iter()
        .filter(|(name, _)| *name != "X-Pyrycode-Token")
        .collect();
    if let Some(token) = token {
        headers.push(("X-Pyrycode-Token", token.to_owned()));
    }
    headers
}

/// A phone on `path` with `headers` sends `"one"` then `"two"`; the two envelopes its binary gets.
async fn first_two_envelopes(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
    binary: &mut Peer,
) -> (Value, Value) {
    let mut phone = Peer::new(connect(addr, path, headers).await.expect("phone upgrade"));
    phone.send(r#""one""#).await;
    phone.send(r#""two""#).await;
    let first = frame_envelope(binary).await;
    let second = frame_envelope(binary).await;
    assert_eq!(
        (&first["frame"], &second["frame"]),
        (&"one".into(), &"two".into())
    );
    (first, second)
}

/// The next envelope that carries a frame (skipping the notices of phones that left before).
async fn frame_envelope(binary: &mut Peer) -> Value {
    loop {
        let envelope = binary.json().await;
        if envelope.get("close_code").is_none() {
            return envelope;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_on_the_first_envelope_of_each_phone_and_on_no_later_one() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-token").await;
    for (n, token) in ["tok-1", r#"tok "2" \ 3"#].into_iter().enumerate() {
        let headers = phone_with("srv-token", Some(token));
        let (first, second) = first_two_envelopes(addr, "/v1/client", &headers, &mut binary).await;
        // The exact shape of protocol.md: conn_id, token, frame, in that order.
        let text = first.to_string();
        let conn_id = first["conn_id"].as_str().unwrap();
        assert_eq!(
            text,
            format!(
                "{{\"conn_id\":\"{conn_id}\",\"token\":{},\"frame\":\"one\"}}",
                serde_json::to_string(token).unwrap()
            ),
            "phone {n}"
        );
        assert_eq!(
            second.get("token"),
            None,
            "phone {n}: only the first envelope"
        );
        assert_eq!(second["conn_id"], conn_id);
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_phone_without_a_token_is_admitted_and_its_envelopes_have_no_token_key() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-v2").await;
    for headers in [phone_with("srv-v2", None), phone_with("srv-v2", Some("  "))] {
        let (first, second) = first_two_envelopes(addr, "/v2/client", &headers, &mut binary).await;
        assert_eq!(first.get("token"), None, "{first}");
        assert_eq!(second.get("token"), None, "{second}");
    }
    // With a token, a v2 phone's first envelope carries it as a v1 phone's does.
    let headers = phone_with("srv-v2", Some("v2-token"));
    let (first, _) = first_two_envelopes(addr, "/v2/client", &headers, &mut binary).await;
    assert_eq!(first["token"], "v2-token");
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_forward_token_never_no_envelope_carries_the_token() {
    let relay = relay(RelayConfig {
        forward_token: ForwardToken::Never,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let mut binary = Peer::binary(addr, "srv-never").await;
    let headers = phone_with("srv-never", Some("secret"));
    let (first, second) = first_two_envelopes(addr, "/v1/client", &headers, &mut binary).await;
    assert_eq!((first.get("token"), second.get("token")), (None, None));
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_and_v2_labels_are_one_endpoint_each_way_round() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    for (server, client) in [("/v2/server", "/v1/client"), ("/v1/server", "/v2/client")] {
        let id = format!("srv{}", server.replace('/', "-"));
        let ws = connect(addr, server, &binary_headers(&id)).await;
        let mut binary = Peer::new(ws.expect("binary upgrade"));
        let headers = phone_with(&id, Some("t"));
        let mut phone = Peer::new(connect(addr, client, &headers).await.expect("phone"));
        phone.send(r#"{"hi":1}"#).await;
        let envelope = binary.json().await;
        assert_eq!(
            envelope["frame"],
            serde_json::json!({"hi": 1}),
            "{server} {client}"
        );
        let conn_id = envelope["conn_id"].as_str().unwrap().to_owned();
        binary
            .send(serde_json::json!({"conn_id": conn_id, "frame": "back"}).to_string())
            .await;
        assert_eq!(phone.text().await, "\"back\"", "{server} {client}");
        // One id, one holder, whatever the label: a second binary on the other label is refused.
        let other = if server == "/v1/server" {
            "/v2/server"
        } else {
            "/v1/server"
        };
        let mut second = Peer::new(connect(addr, other, &binary_headers(&id)).await.unwrap());
        assert_eq!(second.closed().await.0, 4409, "{other} after {server}");
    }
    relay.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_client_without_a_token_gets_400_and_v2_client_does_not() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let _binary = Peer::binary(addr, "srv-hdr").await;
    let v1 = connect(addr, "/v1/client", &phone_with("srv-hdr", None)).await;
    assert_eq!(refusal_status(&v1), Some(400));
    let v1_empty = connect(addr, "/v1/client", &phone_with("srv-hdr", Some(" "))).await;
    assert_eq!(refusal_status(&v1_empty), Some(400));
    let v2 = connect(addr, "/v2/client", &phone_with("srv-hdr", None)).await;
    assert!(v2.is_ok(), "v2 without a token: {:?}", refusal_status(&v2));
    // Other paths stay 404.
    let v3 = connect(addr, "/v3/client", &phone_with("srv-hdr", Some("t"))).await;
    assert_eq!(refusal_status(&v3), Some(404));
    relay.shutdown().await;
}

/// A raw upgrade request for `target`.
fn upgrade_request(target: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: relay\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         X-Pyrycode-Server: srv-frag\r\nX-Pyrycode-Version: 1\r\nX-Pyrycode-Token: t\r\n\
         User-Agent: test\r\n\r\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_target_with_a_fragment_is_answered_400() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    for target in ["/v1/server#x", "/v2/server#", "/v1/client#frag?x=1"] {
        let answer = http(addr, &upgrade_request(target)).await;
        assert!(answer.starts_with("HTTP/1.1 400 "), "{target}: {answer}");
    }
    let health = http(addr, "GET /healthz#top HTTP/1.1\r\nHost: relay\r\n\r\n").await;
    assert!(health.starts_with("HTTP/1.1 400 "), "{health}");
    // The same request without the fragment upgrades, and a %23 in a target is no fragment.
    raw_upgrade(addr, "/v1/server", &binary_headers("srv-frag")).await;
    let encoded = http(
        addr,
        "GET /healthz?x=%23 HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(encoded.starts_with("HTTP/1.1 200 "), "{encoded}");
    // A good request before a bad one on the same connection is answered as usual.
    let both = http(
        addr,
        "GET /healthz HTTP/1.1\r\nHost: relay\r\n\r\nGET /readyz#x HTTP/1.1\r\nHost: relay\r\n\r\n",
    )
    .await;
    let statuses: Vec<_> = both
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &both[at + 9..at + 12])
        .collect();
    assert_eq!(statuses, ["200", "400"], "{both}");
    assert!(metric(&relay, "relay_requests_refused_total{reason=\"malformed\"}").await >= 5);
    relay.shutdown().await;
}

#[test]
fn the_token_never_appears_in_any_log_line_at_any_level() {
    const TOKEN: &str = "tok-never-logged-7f3a9c";
    let mut child = Command::new(env!("CARGO_BIN_EXE_relay"))
        .args(["--listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start relay");
    let stderr = collect_stderr(&mut child);
    let addr = printed_address(&printed_lines(&mut child, 1)[0], "ws://");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut binary = Peer::binary(addr, "srv-log").await;
        for path in ["/v1/client", "/v2/client"] {
            let headers = phone_with("srv-log", Some(TOKEN));
            let (first, _) = first_two_envelopes(addr, path, &headers, &mut binary).await;
            assert_eq!(first["token"], TOKEN, "the token was forwarded");
        }
        // A refused phone (no binary for its id) and a malformed frame are logged too.
        let refused = connect(addr, "/v1/client", &phone_with("srv-none", Some(TOKEN))).await;
        let mut refused = Peer::new(refused.expect("upgrade"));
        assert_eq!(refused.closed().await.0, 4404);
        binary.send("not an envelope").await;
    });
    // SIGTERM drains it; its whole log is then on stderr.
    let status = Command::new("sh")
        .args(["-c", &format!("kill -TERM {}", child.id())])
        .status()
        .unwrap();
    assert!(status.success());
    assert!(child.wait().unwrap().success());
    let log = stderr.join().unwrap();
    assert!(
        log.contains("phone joined"),
        "the trace log was captured: {log}"
    );
    assert!(!log.contains(TOKEN), "the token is in the log:\n{log}");
}
