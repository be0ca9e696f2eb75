//! Issue 17, item 5: under churn every phone whose connection ends on its own is announced to its
//! binary exactly once (`{"conn_id":…,"close_code":N}`), whichever way it ends — and a phone
//! refused at the 16-phone cap, which gets its `101` and then a 4429 close, is never announced
//! (it never joined: the binary saw nothing of it).
//!
//! The independent client's shortfall (19,997 notices for 20,000 phones "that all got their
//! 101") was exactly this: with 15 phones in flight and a phone that had just sent a TCP reset
//! still registered (the relay had not read the reset yet), the next phone was the 17th of its
//! id and was refused 4429 after its `101`. These tests count refusals with notices.
//!
//! A notice is not dropped either when it meets a binary's full outbox: it waits for room (the
//! cluster case is here; one instance's is in `operations` and `phone::tests`).
//!
//! Real sockets against an in-process relay: phones of one server-id connect and leave a few at
//! a time, a third closing with 1000, a third with a TCP reset, a third sending one frame and then
//! a FIN without a close frame. `RELAY_CHURN_PHONES` sets how many (default 2,000).

use relay_cluster_testkit as cluster_support;
mod support;

use cluster_support::instance::TEST_LEASE;
use cluster_support::nats::NatsServer;
use futures_util::{SinkExt, StreamExt, stream};
use relay_server::InstanceId;
use relay_server::{ClusterConfig, Relay, RelayConfig};
use serde_json::Value;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// The relay's count of phones refused at the cap.
const PHONE_CAP: &str = "relay_ws_upgrades_total{endpoint=\"client\",outcome=\"phone_cap\"}";

/// How a churned phone ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Way {
    /// A close frame with 1000, then it reads until the end of the stream.
    Close1000,
    /// A TCP reset (`SO_LINGER` 0, then the socket is dropped), no close frame.
    Reset,
    /// One frame (`{"phone":i}`), then a FIN (write side shut down) without a close frame, then
    /// it reads until the end of the stream.
    FrameThenFin,
}

impl Way {
    fn of(phone: usize) -> Way {
        match phone % 3 {
            0 => Way::Close1000,
            1 => Way::Reset,
            _ => Way::FrameThenFin,
        }
    }

    /// The close code the relay reports for this ending: the phone's own, or 1001 for a drop
    /// without a close frame (a reset, and a FIN alike).
    fn code(self) -> u64 {
        match self {
            Way::Close1000 => 1000,
            Way::Reset | Way::FrameThenFin => 1001,
        }
    }
}

fn tcp(ws: &mut Ws) -> &mut tokio::net::TcpStream {
    match ws.get_mut() {
        MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("the tests speak plain ws://"),
    }
}

/// Reads `ws` until the end of its stream; the code of the relay's close frame, if one came.
async fn drain(ws: &mut Ws) -> Option<u16> {
    let mut code = None;
    let reading = async {
        while let Some(Ok(message)) = ws.next().await {
            if let Message::Close(Some(frame)) = message {
                code = Some(u16::from(frame.code));
            }
        }
    };
    tokio::time::timeout(PATIENCE, reading)
        .await
        .expect("the relay ends the connection");
    code
}

/// Ends an upgraded phone `ws` (phone number `index`) as `Way::of(index)`. Returns the close code
/// the relay sent it other than the echo of its own 1000 (a refusal: 4429), if it could see one
/// (a phone that resets reads nothing).
async fn end_phone(mut ws: Ws, index: usize) -> Option<u16> {
    match Way::of(index) {
        Way::Close1000 => {
            let frame = CloseFrame {
                code: CloseCode::Normal,
                reason: "".into(),
            };
            // A refused phone may find the relay's close under way: its send may fail.
            let _ = ws.send(Message::Close(Some(frame))).await;
            drain(&mut ws).await.filter(|&code| code != 1000)
        }
        Way::Reset => {
            tcp(&mut ws).set_zero_linger().expect("SO_LINGER");
            drop(ws);
            None
        }
        Way::FrameThenFin => {
            let frame = format!(r#"{{"phone":{index}}}"#);
            let _ = ws.send(Message::Text(frame.into())).await;
            let _ = tcp(&mut ws).shutdown().await;
            drain(&mut ws).await
        }
    }
}

/// What the binary saw: each conn-id's notices (close codes) and the `{"phone":i}` frames each
/// conn-id carried.
///
/// A conn-id has 32 random bits: among 20,000 phones one run in twenty has two (never at the
/// same time, for the same id) that share one, so the checks count notices, not conn-ids.
#[derive(Default)]
struct Seen {
    notices: HashMap<String, Vec<u64>>,
    phones: HashMap<String, Vec<usize>>,
}

impl Seen {
    /// How many notices came with each code.
    fn by_code(&self) -> HashMap<u64, usize> {
        let mut by_code = HashMap::new();
        for code in self.notices.values().flatten() {
            *by_code.entry(*code).or_default() += 1;
        }
        by_code
    }

    /// How many notices came.
    fn total(&self) -> usize {
        self.notices.values().map(Vec::len).sum()
    }
}

/// Once every phone before it has left (each phone's notice is queued, or on its way up its
/// link, before it stops counting), joins a sentinel phone at `addr` that leaves at once, and
/// reads `binary` until the sentinel's notice: every notice before it was queued ahead of it.
async fn read_all_notices(addr: SocketAddr, id: &str, binary: &mut Peer) -> Seen {
    let mut sentinel = Peer::phone(addr, id).await;
    sentinel.send(r#""sentinel""#).await;
    sentinel.close(4000).await;
    let mut seen = Seen::default();
    let mut sentinel = None;
    loop {
        let message = binary.json().await;
        let conn_id = message["conn_id"].as_str().expect("conn_id").to_owned();
        if let Some(frame) = message.get("frame") {
            if let Some(phone) = frame.get("phone").and_then(Value::as_u64) {
                seen.phones.entry(conn_id).or_default().push(phone as usize);
            } else if frame == "sentinel" {
                sentinel = Some(conn_id);
            }
            continue;
        }
        if sentinel.as_ref() == Some(&conn_id) {
            return seen;
        }
        let code = message["close_code"].as_u64().expect("close_code");
        seen.notices.entry(conn_id).or_default().push(code);
    }
}

/// How many phones a churn test runs: `variable`, else `default`.
fn phones(variable: &str, default: usize) -> usize {
    std::env::var(variable)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_churn_every_phone_that_joined_is_announced_exactly_once_with_its_code() {
    // The relay's defaults, the 16-phone cap included, as the independent client ran it.
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let id = "srv-churn";
    let mut binary = Peer::binary(addr, id).await;
    let phones = phones("RELAY_CHURN_PHONES", 2_000);
    let settled = async { await_health(addr, 1, 0).await };
    churn(&mut binary, &relay, id, phones, settled).await;
    relay.shutdown().await;
}

/// Runs `phones` phones of `id` through `phone_relay`, 15 at a time, each ending its way; once
/// `settled` (every phone gone), checks that `binary` was told of each one that joined exactly
/// once with its code, and of no refused one.
async fn churn(
    binary: &mut Peer,
    phone_relay: &Relay,
    id: &str,
    phones: usize,
    settled: impl Future<Output = ()>,
) {
    let addr = phone_relay.local_addr();
    let ends: Vec<(usize, Option<u16>)> = stream::iter(0..phones)
        .map(|index| async move { (index, end_phone(raw_phone(addr, id).await, index).await) })
        .buffer_unordered(15)
        .collect()
        .await;
    settled.await;
    let seen = read_all_notices(addr, id, binary).await;

    // Refusals: each one 4429; those of resetting phones are known only by the relay's count.
    let refused_total = metric(phone_relay, PHONE_CAP).await as usize;
    let mut refused: HashMap<Way, usize> = HashMap::new();
    for (index, code) in &ends {
        if let Some(code) = code {
            assert_eq!(*code, 4429, "phone {index} ({:?})", Way::of(*index));
            *refused.entry(Way::of(*index)).or_default() += 1;
        }
    }
    let seen_refused: usize = refused.values().sum();
    assert!(
        seen_refused <= refused_total,
        "{refused:?} > {refused_total}"
    );
    refused.insert(Way::Reset, refused_total - seen_refused);
    let count = |way: Way| (0..phones).filter(|&i| Way::of(i) == way).count();
    let joined = |way: Way| count(way) - refused.get(&way).copied().unwrap_or(0);
    let shared = seen
        .notices
        .values()
        .filter(|codes| codes.len() > 1)
        .count();
    eprintln!(
        "churn: {phones} phones, {} notices {:?}, {refused_total} refused 4429 {refused:?}, \
         {shared} conn-ids shared by two phones",
        seen.total(),
        seen.by_code()
    );

    // Exactly one notice per phone that joined, with its code: a lost notice or a second one
    // for the same phone changes a count.
    let want = HashMap::from([
        (1000, joined(Way::Close1000)),
        (1001, joined(Way::Reset) + joined(Way::FrameThenFin)),
    ]);
    let want: HashMap<u64, usize> = want.into_iter().filter(|(_, n)| *n > 0).collect();
    assert_eq!(seen.by_code(), want, "{refused:?}");
    assert_eq!(seen.total(), phones - refused_total);
    // Each frame-then-FIN phone that joined (known by its frame) was announced with 1001, once;
    // a refused one's frame was never forwarded.
    let frames: usize = seen.phones.values().map(Vec::len).sum();
    assert_eq!(frames, joined(Way::FrameThenFin));
    for (conn_id, phones) in &seen.phones {
        let codes = seen.notices.get(conn_id).cloned().unwrap_or_default();
        assert!(
            phones
                .iter()
                .all(|&phone| Way::of(phone) == Way::FrameThenFin)
                && codes.iter().filter(|&&code| code == 1001).count() >= phones.len(),
            "phones {phones:?} sent their frames as {conn_id}, announced {codes:?}"
        );
    }
}

/// The interleaving behind the independent client's count, forced: 16 phones have joined (the
/// cap), so the 17th is refused 4429 after its `101`, exactly as when one of the 16 has already
/// reset its socket but the relay has not read the reset yet. The refused phone's frame is not
/// forwarded and it is never announced; each of the 16, ending each of the three ways, is
/// announced once with its code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_refused_at_the_cap_after_its_101_is_never_announced_and_the_joined_ones_once() {
    let relay = relay(config()).await;
    let addr = relay.local_addr();
    let id = "srv-cap-churn";
    let mut binary = Peer::binary(addr, id).await;
    let mut joined = Vec::new();
    for index in 0..16 {
        let mut ws = raw_phone(addr, id).await;
        ws.send(Message::Text(format!(r#"{{"phone":{index}}}"#).into()))
            .await
            .expect("frame");
        let wrapped = binary.json().await;
        assert_eq!(wrapped["frame"]["phone"], index);
        let conn_id = wrapped["conn_id"].as_str().expect("conn_id").to_owned();
        joined.push((index, conn_id, ws));
    }
    // The 17th: its upgrade is answered, then it is closed 4429; its frame goes nowhere.
    let mut seventeenth = raw_phone(addr, id).await;
    let _ = seventeenth
        .send(Message::Text(r#"{"phone":16}"#.into()))
        .await;
    assert_eq!(drain(&mut seventeenth).await, Some(4429));
    assert_eq!(metric(&relay, PHONE_CAP).await, 1);

    let mut want = HashMap::new();
    for (index, conn_id, ws) in joined {
        assert_eq!(end_phone(ws, index).await, None, "phone {index}");
        want.insert(conn_id, vec![Way::of(index).code()]);
    }
    await_health(addr, 1, 0).await;
    let seen = read_all_notices(addr, id, &mut binary).await;
    assert_eq!(seen.notices, want);
    // Only the frame-then-FIN phones' second frames: none from the refused phone.
    assert!(
        seen.phones.values().flatten().all(|&phone| phone < 16),
        "{:?}",
        seen.phones
    );
    relay.shutdown().await;
}

/// The relay's answer to that interleaving: a phone over the cap waits (up to `cap_wait`) for one
/// of its id's phones to leave, and is admitted when one does, instead of being refused for the
/// moment between a client's reset and the relay reading it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_over_the_cap_is_admitted_when_a_phone_leaves_while_it_waits() {
    let relay = relay(RelayConfig {
        cap_wait: PATIENCE,
        ..config()
    })
    .await;
    let addr = relay.local_addr();
    let id = "srv-cap-wait";
    let mut binary = Peer::binary(addr, id).await;
    let mut joined = Vec::new();
    for index in 0..16 {
        let mut phone = Peer::phone(addr, id).await;
        phone.send(format!(r#"{{"phone":{index}}}"#)).await;
        assert_eq!(binary.json().await["frame"]["phone"], index);
        joined.push(phone);
    }
    // The 17th waits at the cap (its upgrade unanswered) ...
    let seventeenth = tokio::spawn(async move { raw_phone(addr, id).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !seventeenth.is_finished(),
        "the 17th waits while 16 are joined"
    );
    // ... until one of the 16 leaves: then it joins, and its frame reaches the binary.
    joined.remove(0).close(1000).await;
    let mut seventeenth = Peer::new(seventeenth.await.expect("the 17th's task"));
    seventeenth.send(r#"{"phone":16}"#).await;
    let mut got = Vec::new();
    while got.len() < 2 {
        got.push(binary.json().await);
    }
    assert!(got.iter().any(|e| e["close_code"] == 1000), "{got:?}");
    assert!(got.iter().any(|e| e["frame"]["phone"] == 16), "{got:?}");
    assert_eq!(metric(&relay, PHONE_CAP).await, 0);
    relay.shutdown().await;
}

/// Cluster mode: the binary on one instance, the phones on another, so each phone's notice comes
/// to the binary's instance over its link (the owner's [`UpSink`]); a real `nats-server`.
/// `RELAY_CHURN_CLUSTER_PHONES` sets how many (default 600).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_churn_across_instances_every_phone_that_joined_is_announced_exactly_once() {
    let Some(server) = NatsServer::start("under_churn_across_instances") else {
        return;
    };
    let owner = relay(clustered(&server, "relay-a")).await;
    let away = relay(clustered(&server, "relay-b")).await;
    let id = "srv-churn-away";
    let mut binary = Peer::binary(owner.local_addr(), id).await;
    let phones = phones("RELAY_CHURN_CLUSTER_PHONES", 600);
    // Every phone's end has gone up its link (one subject per instance, in order) once the
    // phones' instance counts none of its own; the sentinel's comes after them.
    let settled = await_own_phones(away.local_addr(), 0);
    churn(&mut binary, &away, id, phones, settled).await;
    away.shutdown().await;
    owner.shutdown().await;
}

/// Waits until `addr`'s `/healthz` counts `phones` phones of its own.
async fn await_own_phones(addr: SocketAddr, phones: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let raw = healthz_raw(addr).await;
        let body: Value =
            serde_json::from_str(raw.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON");
        if body["connected_phones"] == phones {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz of {addr} stuck at {body}, want {phones} phones"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The test defaults plus cluster mode on `server` as `name` (lease 2 s, requests 1 s).
fn clustered(server: &NatsServer, name: &str) -> RelayConfig {
    RelayConfig {
        cluster: Some(ClusterConfig {
            lease: TEST_LEASE,
            request_timeout: Duration::from_secs(1),
            ..ClusterConfig::new(server.url(), InstanceId::new(name).unwrap())
        }),
        ..config()
    }
}

/// Cluster mode: a phone-left notice that reaches the owner while its binary's outbox is full
/// waits for room (parked behind the phone's frames) instead of being dropped, and arrives once
/// the binary reads again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_phones_notice_for_a_full_binary_waits_for_room_and_arrives() {
    let Some(server) = NatsServer::start("a_remote_phones_notice_for_a_full_binary") else {
        return;
    };
    // Smaller than one of the filler's frames: an outbox holding one has no room for a notice.
    let owner = relay(RelayConfig {
        binary_outbox: 16 * 1024,
        ..clustered(&server, "relay-a")
    })
    .await;
    let away = relay(clustered(&server, "relay-b")).await;
    let id = "srv-full-away";
    // A binary that does not read for now; a filler on the other instance fills its outbox.
    let mut binary = raw_binary(owner.local_addr(), id).await;
    const FILL: usize = 200;
    let fill = fill_binary_outbox(&owner, away.local_addr(), id, FILL).await;
    const LEAVERS: usize = 5;
    for _ in 0..LEAVERS {
        let mut leaver = Peer::phone(away.local_addr(), id).await;
        leaver.close(4000).await;
        leaver.ended().await;
    }
    // The binary reads again: every frame, and every leaver's notice.
    read_frames_and_notices(&mut binary, FILL, LEAVERS, 4000).await;
    let dropped = "relay_frames_dropped_total{reason=\"binary_full\"}";
    assert_eq!(metric(&owner, dropped).await, 0);
    drop(fill.await.expect("the filler's frames all went"));
    away.shutdown().await;
    owner.shutdown().await;
}
