//! Cluster mode end to end: a real `nats-server -js` and three relay instances in this process,
//! each on its own loopback port, with real WebSocket clients connected to chosen instances —
//! the binary on one, its phones on the other two — checking that every rule of the protocol
//! holds across instances as on one. Skipped loudly without `nats-server` (failed instead with
//! `RELAY_CLUSTER_TESTS=required`).

use relay_cluster_testkit as cluster_support;
mod support;

use cluster_support::PATIENCE;
use cluster_support::instance::TEST_LEASE;
use cluster_support::nats::{NatsCluster, NatsServer};
use relay_cluster::instance::InstanceId;
use relay_server::{ClusterConfig, Relay, RelayConfig};
use serde_json::{Value, json};
use std::net::SocketAddr;
use std::time::Duration;
use support::*;
use tokio_tungstenite::tungstenite::Message;

/// The e2e defaults plus cluster mode on `server` as `name` (lease 2 s, requests 1 s).
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

/// Three instances `relay-a`, `relay-b`, `relay-c` on `server`, each with `tweak` applied.
async fn trio(server: &NatsServer, tweak: impl Fn(&mut RelayConfig)) -> [Relay; 3] {
    let mut relays = Vec::new();
    for name in ["relay-a", "relay-b", "relay-c"] {
        let mut config = clustered(server, name);
        tweak(&mut config);
        relays.push(relay(config).await);
    }
    relays.try_into().ok().expect("three relays")
}

async fn stop(relays: impl IntoIterator<Item = Relay>) {
    for relay in relays {
        relay.shutdown().await;
    }
}

/// `/healthz` as JSON.
async fn health_json(addr: SocketAddr) -> Value {
    let raw = healthz_raw(addr).await;
    serde_json::from_str(raw.split("\r\n\r\n").nth(1).expect("a body")).expect("JSON")
}

/// Waits until `addr`'s `/healthz` counts these connections of its own.
async fn await_own(addr: SocketAddr, binaries: u64, phones: u64) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let body = health_json(addr).await;
        if body["connected_binaries"] == binaries && body["connected_phones"] == phones {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "healthz of {addr} stuck at {body}, want {binaries} binaries and {phones} phones"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_notices_and_directives_cross_instances_exactly_as_on_one() {
    const N: usize = 1_000;
    let Some(server) = NatsServer::start("frames_notices_and_directives_cross_instances") else {
        return;
    };
    let [a, b, c] = trio(&server, |_| {}).await;
    let mut binary = Peer::binary(a.local_addr(), "srv-x").await;
    let (mut on_b, b_id) = join(b.local_addr(), "srv-x", &mut binary).await;
    let (mut on_c, c_id) = join(c.local_addr(), "srv-x", &mut binary).await;
    assert!(b_id.starts_with("client-srv-x-") && b_id != c_id);

    // 1,000 frames each way, each phone's in order, wrapped verbatim, none lost.
    for i in 0..N {
        on_b.feed(format!("{{\"i\": {i}}}")).await;
        on_c.feed(format!("[{i}, \"c\"]")).await;
    }
    on_b.flush().await;
    on_c.flush().await;
    let (mut next_b, mut next_c) = (0, 0);
    for _ in 0..2 * N {
        let text = binary.text().await;
        if next_b < N && text == format!("{{\"conn_id\":\"{b_id}\",\"frame\":{{\"i\": {next_b}}}}}")
        {
            next_b += 1;
        } else {
            assert_eq!(
                text,
                format!("{{\"conn_id\":\"{c_id}\",\"frame\":[{next_c}, \"c\"]}}")
            );
            next_c += 1;
        }
    }
    assert_eq!((next_b, next_c), (N, N));
    for i in 0..N {
        binary
            .feed(format!(
                "{{\"conn_id\":\"{b_id}\",\"frame\":{{\"to\":\"b\",\"i\":{i}}}}}"
            ))
            .await;
        binary
            .feed(format!("{{\"conn_id\":\"{c_id}\",\"frame\":\"c{i}\"}}"))
            .await;
    }
    binary.flush().await;
    for i in 0..N {
        assert_eq!(on_b.text().await, format!("{{\"to\":\"b\",\"i\":{i}}}"));
        assert_eq!(on_c.text().await, format!("\"c{i}\""));
    }

    // Each instance counts its own connections, names itself, and says it is in the cluster.
    await_own(a.local_addr(), 1, 0).await;
    await_own(b.local_addr(), 0, 1).await;
    let health = health_json(c.local_addr()).await;
    assert_eq!(health["connected_phones"], 1);
    assert_eq!(health["instance"], "relay-c");
    assert_eq!(health["cluster"], true);

    // A binary reaches only its own phones: another id's binary on b cannot address on_c.
    let mut stranger = Peer::binary(b.local_addr(), "srv-y").await;
    stranger
        .send(json!({"conn_id": c_id, "frame": "not yours"}).to_string())
        .await;
    // A close directive: the frame, then the close with that code; no notice for it.
    binary
        .send(json!({"conn_id": c_id, "frame": {"bye": true}, "close_code": 4000}).to_string())
        .await;
    assert_eq!(on_c.text().await, r#"{"bye":true}"#);
    assert_eq!(on_c.closed().await.0, 4000);
    // A phone that leaves on its own: its binary is told, with the phone's code.
    on_b.close(4321).await;
    assert_eq!(
        binary.json().await,
        json!({"conn_id": b_id, "close_code": 4321})
    );
    await_own(b.local_addr(), 1, 0).await;
    await_own(c.local_addr(), 0, 0).await;

    // A bad frame closes only its sender (1007); the binary hears it left with 1007.
    let (mut bad, bad_id) = join(c.local_addr(), "srv-x", &mut binary).await;
    bad.send("{not json").await;
    assert_eq!(bad.closed().await.0, 1007);
    assert_eq!(
        binary.json().await,
        json!({"conn_id": bad_id, "close_code": 1007})
    );

    // The cluster families are exported, and counted what happened.
    let text = scrape(&a).await;
    assert!(
        series(
            &text,
            "relay_cluster_requests_total{kind=\"claim\",outcome=\"answered\"}"
        ) >= 1
    );
    assert!(
        series(
            &text,
            "relay_cluster_requests_total{kind=\"register\",outcome=\"answered\"}"
        ) == 0
    );
    assert_eq!(series(&text, "relay_cluster_remote_phones"), 0);
    assert_eq!(series(&text, "relay_cluster_link_losses_total"), 0);
    let text = scrape(&c).await;
    assert!(
        series(
            &text,
            "relay_cluster_requests_total{kind=\"register\",outcome=\"answered\"}"
        ) >= 2
    );
    drop(stranger);
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owners_binary_gets_a_remote_phones_token_on_its_first_envelope_only() {
    let Some(server) = NatsServer::start("the_owners_binary_gets_a_remote_phones_token") else {
        return;
    };
    let [a, b, c] = trio(&server, |_| {}).await;
    let mut binary = Peer::binary(a.local_addr(), "srv-tok").await;
    // A v1 phone on b (token "secret-token", the e2e phone headers) and a v2 phone on c with none.
    let mut on_b = Peer::phone(b.local_addr(), "srv-tok").await;
    let v2_headers: Vec<_> = phone_headers("srv-tok")
        .into_iter()
        .filter(|(name, _)| *name != "X-Pyrycode-Token")
        .collect();
    let on_c = connect(c.local_addr(), "/v2/client", &v2_headers).await;
    let mut on_c = Peer::new(on_c.expect("v2 phone upgrade"));
    for (phone, token) in [(&mut on_b, Some("secret-token")), (&mut on_c, None)] {
        phone.send(r#""one""#).await;
        phone.send(r#""two""#).await;
        let first = binary.json().await;
        let second = binary.json().await;
        assert_eq!(
            (&first["frame"], &second["frame"]),
            (&"one".into(), &"two".into())
        );
        assert_eq!(first.get("token").and_then(Value::as_str), token, "{first}");
        assert_eq!(second.get("token"), None, "{second}");
    }
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicts_takeovers_refusals_and_the_cap_span_instances() {
    let Some(server) = NatsServer::start("conflicts_takeovers_refusals_and_the_cap") else {
        return;
    };
    let [a, b, c] = trio(&server, |config| config.max_phones = 3).await;
    // No binary anywhere: 4404 on every instance.
    for relay in [&a, &b, &c] {
        let mut phone = Peer::phone(relay.local_addr(), "srv-none").await;
        assert_eq!(
            phone.closed().await,
            (4404, "no server with that id".into())
        );
    }
    // The cap counts phones on every instance: the 4th, wherever it connects, gets 4429.
    let mut holder = Peer::binary(a.local_addr(), "srv-cap").await;
    let (_p1, _) = join(a.local_addr(), "srv-cap", &mut holder).await;
    let (mut p2, _) = join(b.local_addr(), "srv-cap", &mut holder).await;
    let (mut p3, _) = join(c.local_addr(), "srv-cap", &mut holder).await;
    for relay in [&a, &b, &c] {
        let mut extra = Peer::phone(relay.local_addr(), "srv-cap").await;
        assert_eq!(
            extra.closed().await,
            (4429, "too many phones for server-id".into())
        );
    }
    // A live holder (it answers pings) keeps its id against a claim from another instance.
    let mut newcomer = Peer::binary(c.local_addr(), "srv-cap").await;
    assert_eq!(
        newcomer.closed().await,
        (4409, "server-id already claimed".into())
    );
    assert_eq!(p2.try_next(), None, "the holder's phones stay");

    // A holder that answers no ping is taken over from another instance: it gets 1011, its
    // phones everywhere 4404, and the new binary holds the id.
    let silent = raw_binary(a.local_addr(), "srv-silent").await; // never read: no pong
    let mut silent_phone = Peer::phone(b.local_addr(), "srv-silent").await;
    await_own(b.local_addr(), 0, 2).await;
    let mut taker = Peer::binary(c.local_addr(), "srv-silent").await;
    assert_eq!(
        silent_phone.closed().await,
        (4404, "binary reclaimed server-id".into())
    );
    let mut silent = Peer::new(silent);
    assert_eq!(
        silent.closed_after_texts().await,
        (1011, "heartbeat timeout".into())
    );
    // Once the new binary's claim is in place (c: the taker and p3), a phone anywhere reaches it.
    await_own(c.local_addr(), 1, 1).await;
    let (mut fresh, fresh_id) = join(a.local_addr(), "srv-silent", &mut taker).await;
    taker
        .send(json!({"conn_id": fresh_id, "frame": 7}).to_string())
        .await;
    assert_eq!(fresh.text().await, "7");
    assert_eq!(metric(&a, "relay_takeovers_total").await, 1);
    drop((p3.close(1000).await, holder));
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grace_keeps_phones_everywhere_a_reclaim_elsewhere_evicts_them_and_expiry_closes_them() {
    let Some(server) = NatsServer::start("grace_across_instances") else {
        return;
    };
    let [a, b, c] = trio(&server, |config| config.grace = Duration::from_secs(2)).await;
    // Reclaim on another instance during grace: phones on b and c get 4404; the id moves.
    let mut first = Peer::binary(a.local_addr(), "srv-g").await;
    let (mut on_b, _) = join(b.local_addr(), "srv-g", &mut first).await;
    let (mut on_c, _) = join(c.local_addr(), "srv-g", &mut first).await;
    first.close(1000).await;
    first.ended().await;
    await_own(a.local_addr(), 0, 0).await;
    // Still gracing: a new phone may join, on any instance.
    let mut late = Peer::phone(a.local_addr(), "srv-g").await;
    late.send("\"late\"").await;
    let mut again = Peer::binary(b.local_addr(), "srv-g").await;
    for phone in [&mut on_b, &mut on_c, &mut late] {
        assert_eq!(
            phone.closed().await,
            (4404, "binary reclaimed server-id".into())
        );
    }
    // The claim was decided (by a, the owner) before b answered the upgrade: b holds the id.
    await_own(b.local_addr(), 1, 0).await;
    let (mut joined, joined_id) = join(c.local_addr(), "srv-g", &mut again).await;
    again
        .send(json!({"conn_id": joined_id, "frame": "ok"}).to_string())
        .await;
    assert_eq!(joined.text().await, "\"ok\"");

    // No reclaim: at the end of the grace window every phone, wherever, gets 1011.
    again.close(1000).await;
    again.ended().await;
    assert_eq!(
        joined.closed().await,
        (1011, "binary did not reconnect".into())
    );
    // And the id is free everywhere: a phone gets 4404, a binary elsewhere claims it at once.
    let mut nobody = Peer::phone(a.local_addr(), "srv-g").await;
    assert_eq!(nobody.closed().await.0, 4404);
    let mut third = Peer::binary(c.local_addr(), "srv-g").await;
    let (_p, _) = join(a.local_addr(), "srv-g", &mut third).await;
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_binaries_claiming_one_id_on_two_instances_at_once_one_wins_each_of_200_rounds() {
    let Some(server) = NatsServer::start("two_binaries_claiming_one_id") else {
        return;
    };
    let [a, b, c] = trio(&server, |_| {}).await;
    for round in 0..200 {
        let id = format!("srv-race-{round}");
        let (first, second) = tokio::join!(
            Peer::binary(a.local_addr(), &id),
            Peer::binary(b.local_addr(), &id)
        );
        let (mut first, mut second) = (first, second);
        // The loser is closed 4409 once the winner's instance has pinged the winner.
        let (loser_close, winner) = tokio::select! {
            message = first.next() => (message, &mut second),
            message = second.next() => (message, &mut first),
        };
        assert!(
            matches!(&loser_close, Message::Close(Some(frame)) if u16::from(frame.code) == 4409),
            "round {round}: {loser_close:?}"
        );
        // The other one really holds the id (it was not refused too): a phone on the third
        // instance reaches it.
        let (_phone, _) = join(c.local_addr(), &id, winner).await;
    }
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_binary_outbox_holds_remote_phones_back_without_loss_or_close() {
    let Some(server) = NatsServer::start("a_full_binary_outbox_holds_remote_phones_back") else {
        return;
    };
    // A small binary outbox, so that a binary that stops reading fills it quickly.
    let [a, b, c] = trio(&server, |config| config.binary_outbox = 64 * 1024).await;
    let mut binary = raw_binary(a.local_addr(), "srv-full").await;
    let mut phone = Peer::phone(b.local_addr(), "srv-full").await;
    await_own(b.local_addr(), 0, 1).await;
    // 4 MiB from the phone while the binary reads nothing: more than the binary's outbox,
    // the link's window and the sockets' buffers together.
    const N: usize = 4096;
    let payload = "x".repeat(1000);
    let writer = tokio::spawn(async move {
        for i in 0..N {
            phone.feed(format!("[{i},\"{payload}\"]")).await;
        }
        phone.flush().await;
        phone
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Now read: every frame arrives, in order, and the phone was never closed.
    use futures_util::StreamExt;
    for i in 0..N {
        let message = tokio::time::timeout(PATIENCE, binary.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a message");
        let Message::Text(text) = message else {
            panic!("expected a frame, got {message:?}");
        };
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["frame"][0], i, "in order");
    }
    let mut phone = writer.await.unwrap();
    assert_eq!(phone.try_next(), None, "the phone was not closed");
    assert_eq!(
        metric(&a, "relay_frames_dropped_total{reason=\"binary_full\"}").await,
        0
    );
    binary.close(None).await.ok();
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_closes_1001_and_frees_every_id_at_once() {
    let Some(server) = NatsServer::start("graceful_shutdown_frees_every_id") else {
        return;
    };
    // A long lease: only the deletion at shutdown can free the ids within the test's patience.
    let [a, b, c] = trio(&server, |config| {
        if let Some(cluster) = &mut config.cluster {
            cluster.lease = Duration::from_secs(60);
        }
    })
    .await;
    let mut binary = Peer::binary(a.local_addr(), "srv-leave").await;
    let (mut remote, remote_id) = join(b.local_addr(), "srv-leave", &mut binary).await;
    // a's own phone of an id c owns.
    let mut owner_c = Peer::binary(c.local_addr(), "srv-other").await;
    let (mut away, away_id) = join(a.local_addr(), "srv-other", &mut owner_c).await;
    a.shutdown().await;
    assert_eq!(binary.closed().await, (1001, "shutting down".into()));
    assert_eq!(remote.closed().await, (1001, "shutting down".into()));
    assert_eq!(away.closed().await, (1001, "shutting down".into()));
    // c's binary hears its phone on a left (1001) and keeps its id.
    assert_eq!(
        owner_c.json().await,
        json!({"conn_id": away_id, "close_code": 1001})
    );
    // srv-leave is free at once: a binary on b claims it (no 4409, no wait for the lease).
    let mut next = Peer::binary(b.local_addr(), "srv-leave").await;
    let (_phone, _) = join(c.local_addr(), "srv-leave", &mut next).await;
    assert_ne!(remote_id, "");
    stop([b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_ends_cross_instance_links_and_the_cluster_serves_again() {
    let Some(mut server) = NatsServer::start("nats_stopped_and_restarted") else {
        return;
    };
    let [a, b, c] = trio(&server, |_| {}).await;
    let mut binary = Peer::binary(a.local_addr(), "srv-n").await;
    let (mut remote, _) = join(b.local_addr(), "srv-n", &mut binary).await;
    server.stop();
    // The link is lost: the remote phone is closed 1011 (or 1012 once b fenced itself).
    let (code, _) = remote.closed().await;
    assert!(code == 1011 || code == 1012, "{code}");
    // Cut off: readiness and upgrades are 503 at once.
    let readyz = http(
        b.local_addr(),
        "GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
    let refused = connect(c.local_addr(), "/v1/client", &phone_headers("srv-n")).await;
    assert!(refused.is_err(), "an upgrade while NATS is down is refused");
    // After a whole lease without NATS, a's binary is closed 1012 (after the notice that its
    // phone on b left, 1001, as for an abrupt drop).
    assert_eq!(
        binary.closed_after_texts().await,
        (1012, "cluster connection lost".into())
    );
    server.start_again();
    for relay in [&a, &b, &c] {
        let addr = relay.local_addr();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while health_json(addr).await["cluster"] != true {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} back in the cluster"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Nothing half-registered: the id is free, and the cluster works as before.
    let mut binary = Peer::binary(c.local_addr(), "srv-n").await;
    let (mut phone, phone_id) = join(a.local_addr(), "srv-n", &mut binary).await;
    binary
        .send(json!({"conn_id": phone_id, "frame": "back"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"back\"");
    stop([a, b, c]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_cut_off_from_nats_closes_everything_1012_before_others_take_its_ids() {
    let Some(server) = NatsServer::start("an_instance_cut_off_from_nats") else {
        return;
    };
    let forwarder = cluster_support::proxy::Partition::start(server.addr()).await;
    let mut cut_config = clustered(&server, "relay-cut");
    if let Some(cluster) = &mut cut_config.cluster {
        cluster.url = forwarder.url();
    }
    let cut = relay(cut_config).await;
    let other = relay(clustered(&server, "relay-ok")).await;
    let mut binary = Peer::binary(cut.local_addr(), "srv-p").await;
    let (mut local_phone, _) = join(cut.local_addr(), "srv-p", &mut binary).await;
    let (mut remote_phone, _) = join(other.local_addr(), "srv-p", &mut binary).await;
    forwarder.cut();
    let started = tokio::time::Instant::now();
    // cut's own connections: 1012 once it cannot renew its lease.
    assert_eq!(
        binary.closed().await,
        (1012, "cluster connection lost".into())
    );
    assert_eq!(
        local_phone.closed().await,
        (1012, "cluster connection lost".into())
    );
    let fenced_after = started.elapsed();
    // The other instance's phone: its owner is lost, 1011, within the lease plus a refresh.
    assert_eq!(
        remote_phone.closed().await,
        (1011, "relay link lost".into())
    );
    // Only once cut's lease has ended may the id be claimed elsewhere.
    let mut taker = Peer::binary(other.local_addr(), "srv-p").await;
    let (_p, _) = join(other.local_addr(), "srv-p", &mut taker).await;
    // The bound of the issue (a lease plus a refresh), with slack for a loaded machine.
    assert!(
        fenced_after < TEST_LEASE + TEST_LEASE / 4 + Duration::from_secs(2),
        "{fenced_after:?}"
    );
    forwarder.heal();
    let addr = cut.local_addr();
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health_json(addr).await["cluster"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "serves again once reconnected"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The id stays with its new owner: cut refers its phones there.
    let (mut phone, _) = join(cut.local_addr(), "srv-p", &mut taker).await;
    phone.send("1").await;
    stop([cut, other]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_the_owner_elsewhere_decides_is_decided_before_the_101() {
    let Some(server) = NatsServer::start("a_claim_the_owner_elsewhere_decides") else {
        return;
    };
    let [a, b, c] = trio(&server, |_| {}).await;
    // The owner's binary answers its ping: the claimant on another instance is refused 4409
    // after its upgrade (the protocol's "Lifecycle and close codes": a refused claim is a close
    // code), and the first thing it gets is that close.
    let mut holder = Peer::binary(a.local_addr(), "srv-kept").await;
    let mut refused = Peer::binary(c.local_addr(), "srv-kept").await;
    assert_eq!(
        refused.closed().await,
        (4409, "server-id already claimed".into())
    );
    let (_kept, _) = join(b.local_addr(), "srv-kept", &mut holder).await;

    // The owner's binary is silent: the owner ends its tenure and releases the id before the
    // claimant's 101, so a phone joining right after that 101 (nothing awaited in between),
    // on the third instance, reaches the new binary — not the old one about to be evicted.
    let silent = raw_binary(a.local_addr(), "srv-moved").await; // never read: no pong
    let mut taker = Peer::binary(c.local_addr(), "srv-moved").await;
    let (mut phone, phone_id) = join(b.local_addr(), "srv-moved", &mut taker).await;
    taker
        .send(json!({"conn_id": phone_id, "frame": "here"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"here\"");
    let mut silent = Peer::new(silent);
    assert_eq!(
        silent.closed_after_texts().await,
        (1011, "heartbeat timeout".into())
    );
    assert_eq!(phone.try_next(), None, "the phone of the new binary stays");
    drop(holder);
    stop([a, b, c]).await;
}

/// Expects `path`'s upgrade to be refused with HTTP 503 and a `Retry-After`; its seconds.
async fn refused_503_retry_after(
    addr: SocketAddr,
    path: &str,
    headers: &[(&'static str, String)],
) -> u64 {
    match connect(addr, path, headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503, "{path}");
            let retry = response.headers().get("retry-after");
            let retry = retry.and_then(|value| value.to_str().ok()?.parse().ok());
            retry.unwrap_or_else(|| panic!("{path}: 503 without a Retry-After in seconds"))
        }
        Err(other) => panic!("{path}: expected HTTP 503, got {other}"),
        Ok(_) => panic!("{path}: expected HTTP 503, got an upgrade"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_owners_id_is_claimed_before_the_101_once_its_lease_ends_or_refused_503_retry_after()
 {
    let Some(server) = NatsServer::start("a_silent_owners_id") else {
        return;
    };
    let forwarder = cluster_support::proxy::Partition::start(server.addr()).await;
    // The owner's lease (6 s) outlasts the quick instance's bound (probe 300 ms + request 1 s)
    // and not the patient one's (probe 8 s + request 1 s).
    let owner_lease = Duration::from_secs(6);
    let mut owner_config = clustered(&server, "relay-owner");
    if let Some(cluster) = &mut owner_config.cluster {
        cluster.url = forwarder.url();
        cluster.lease = owner_lease;
    }
    let owner = relay(owner_config).await;
    let quick = relay(clustered(&server, "relay-quick")).await;
    let patient = relay(RelayConfig {
        probe_timeout: Duration::from_secs(8),
        ..clustered(&server, "relay-patient")
    })
    .await;
    let mut old = Peer::binary(owner.local_addr(), "srv-silent-owner").await;
    let (_old_phone, _) = join(quick.local_addr(), "srv-silent-owner", &mut old).await;
    // Every connection of the owner to NATS is reset: nobody answers on its subject any more,
    // and its lease runs out within 6 s.
    forwarder.reset();
    let cut_at = tokio::time::Instant::now();
    // Within the window, a claimant whose bound ends first is refused 503 with Retry-After, no
    // upgrade; so is a phone joining the id, on any instance (not 4404: the id is about to be
    // held again).
    let binary_retry = refused_503_retry_after(
        quick.local_addr(),
        "/v1/server",
        &binary_headers("srv-silent-owner"),
    )
    .await;
    assert!((1..=6).contains(&binary_retry), "{binary_retry}");
    for relay in [&quick, &patient] {
        let phone_retry = refused_503_retry_after(
            relay.local_addr(),
            "/v1/client",
            &phone_headers("srv-silent-owner"),
        )
        .await;
        assert!((1..=6).contains(&phone_retry), "{phone_retry}");
    }
    assert!(
        cut_at.elapsed() < owner_lease - owner_lease / 4,
        "the window was over before the checks ran: {:?}",
        cut_at.elapsed()
    );
    // A claimant whose bound outlasts the lease waits for it and gets its 101 holding the id:
    // a phone joining right after it, on another instance, reaches it.
    let mut new = Peer::binary(patient.local_addr(), "srv-silent-owner").await;
    let (mut phone, phone_id) = join(quick.local_addr(), "srv-silent-owner", &mut new).await;
    new.send(json!({"conn_id": phone_id, "frame": 1}).to_string())
        .await;
    assert_eq!(phone.text().await, "1");
    // The old binary was closed by its own instance's fence, before the new one held the id.
    assert_eq!(
        old.closed_after_texts().await,
        (1012, "cluster connection lost".into())
    );
    forwarder.heal();
    stop([owner, quick, patient]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_whose_owner_is_cut_off_is_decided_when_its_lease_ends_not_when_the_probe_gives_up()
{
    let Some(server) = NatsServer::start("a_claim_whose_owner_is_cut_off") else {
        return;
    };
    let forwarder = cluster_support::proxy::Partition::start(server.addr()).await;
    let mut owner_config = clustered(&server, "relay-cut-owner");
    if let Some(cluster) = &mut owner_config.cluster {
        cluster.url = forwarder.url();
        cluster.lease = Duration::from_secs(4);
    }
    let owner = relay(owner_config).await;
    // The claimant's probe may take a minute: far longer than the test waits for an upgrade.
    let claimant = relay(RelayConfig {
        probe_timeout: Duration::from_secs(60),
        ..clustered(&server, "relay-claimant")
    })
    .await;
    let mut old = Peer::binary(owner.local_addr(), "srv-cut-owner").await;
    // A black hole: NATS still routes the probe to the owner's connection, nothing comes back.
    forwarder.cut();
    // A phone meanwhile: the owner does not answer its registration, its lease holds: 503 with
    // Retry-After.
    let retry = refused_503_retry_after(
        claimant.local_addr(),
        "/v1/client",
        &phone_headers("srv-cut-owner"),
    )
    .await;
    assert!(retry >= 1, "{retry}");
    // The unanswered probe is settled by the owner's lease ending (within 4 s), not by its own
    // minute: the upgrade comes within the test's patience, holding the id.
    let mut new = Peer::binary(claimant.local_addr(), "srv-cut-owner").await;
    let (mut phone, phone_id) = join(claimant.local_addr(), "srv-cut-owner", &mut new).await;
    new.send(json!({"conn_id": phone_id, "frame": 2}).to_string())
        .await;
    assert_eq!(phone.text().await, "2");
    assert_eq!(
        old.closed_after_texts().await,
        (1012, "cluster connection lost".into())
    );
    forwarder.heal();
    stop([owner, claimant]).await;
}

/// Expects `path`'s upgrade to be refused with HTTP 503.
async fn refused_503(addr: SocketAddr, path: &str, headers: &[(&'static str, String)]) {
    match connect(addr, path, headers).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503, "{path}");
        }
        Err(other) => panic!("{path}: expected HTTP 503, got {other}"),
        Ok(_) => panic!("{path}: expected HTTP 503, got an upgrade"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_started_before_nats_answer_503_until_it_is_up_then_serve() {
    let Some(mut server) = NatsServer::unstarted("instances_started_before_nats") else {
        return;
    };
    // Nothing listens on the server's port yet: both instances start anyway.
    let a = relay(clustered(&server, "relay-early-a")).await;
    let b = relay(clustered(&server, "relay-early-b")).await;
    for relay in [&a, &b] {
        let addr = relay.local_addr();
        let readyz = http(
            addr,
            "GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(readyz.starts_with("HTTP/1.1 503"), "{readyz}");
        assert!(readyz.contains("cluster unavailable"), "{readyz}");
        // Never served as a single instance meanwhile: both sides refused 503.
        refused_503(addr, "/v1/server", &binary_headers("srv-e")).await;
        refused_503(addr, "/v1/client", &phone_headers("srv-e")).await;
        let health = health_json(addr).await;
        assert_eq!(
            (&health["status"], &health["cluster"]),
            (&json!("ok"), &json!(false))
        );
    }
    server.start_again();
    for relay in [&a, &b] {
        let addr = relay.local_addr();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while health_json(addr).await["cluster"] != true {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{addr} joins once NATS is up"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let readyz = http(
        a.local_addr(),
        "GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert!(readyz.starts_with("HTTP/1.1 200"), "{readyz}");
    // A binary on one instance and a phone on the other exchange frames.
    let mut binary = Peer::binary(a.local_addr(), "srv-e").await;
    let (mut phone, phone_id) = join(b.local_addr(), "srv-e", &mut binary).await;
    binary
        .send(json!({"conn_id": phone_id, "frame": "down"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"down\"");
    phone.send("{\"up\":1}").await;
    assert_eq!(
        binary.text().await,
        format!("{{\"conn_id\":\"{phone_id}\",\"frame\":{{\"up\":1}}}}")
    );
    stop([a, b]).await;
}

/// Waits until `addr`'s `/healthz` says it is part of the cluster.
async fn await_joined(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    while health_json(addr).await["cluster"] != true {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} joins the cluster"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_three_node_nats_cluster_the_buckets_have_three_replicas_and_instances_relay() {
    let Some(nats) = NatsCluster::start("three_node_nats_cluster") else {
        return;
    };
    let with_replicas = |name: &str, urls: String, replicas: usize| RelayConfig {
        cluster: Some(ClusterConfig {
            lease: TEST_LEASE,
            request_timeout: Duration::from_secs(1),
            replicas,
            ..ClusterConfig::new(urls, InstanceId::new(name).unwrap())
        }),
        ..config()
    };
    let replicated = |name: &str, urls: String| with_replicas(name, urls, 3);
    let nats_client = relay_cluster::connection::Nats::connect(
        &nats.urls(),
        &InstanceId::new("checker").unwrap(),
        Duration::from_secs(2),
        Default::default(),
    )
    .await
    .expect("connect to the NATS cluster");
    let replicas = |bucket: &'static str| {
        let jetstream = nats_client.jetstream().clone();
        async move {
            let mut stream = jetstream
                .get_stream(format!("KV_{bucket}"))
                .await
                .expect("the bucket's stream");
            stream
                .info()
                .await
                .expect("stream info")
                .config
                .num_replicas
        }
    };
    let buckets = [
        relay_cluster::directory::DIRECTORY_BUCKET,
        relay_cluster::liveness::LIVENESS_BUCKET,
    ];
    // An earlier deployment made the buckets with one replica.
    let early = relay(with_replicas("relay-r0", nats.urls(), 1)).await;
    await_joined(early.local_addr()).await;
    for bucket in buckets {
        assert_eq!(replicas(bucket).await, 1, "{bucket}");
    }
    early.shutdown().await;
    // One instance given all three nodes; one given a list whose first URL is dead (nothing
    // listens there) and one live node.
    let a = relay(replicated("relay-r1", nats.urls())).await;
    let dead = format!("nats://127.0.0.1:{}", cluster_support::free_port());
    let live = nats.urls().split(',').nth(1).unwrap().to_owned();
    let b = relay(replicated("relay-r2", format!("{dead},{live}"))).await;
    // Right after the nodes start, JetStream may not have elected its leaders yet: the
    // instances join once it has.
    await_joined(a.local_addr()).await;
    await_joined(b.local_addr()).await;
    // Both buckets are now replicated on the three nodes (updated by the first of them).
    for bucket in buckets {
        assert_eq!(replicas(bucket).await, 3, "{bucket}");
    }
    // A binary on one instance and a phone on the other exchange frames.
    let mut binary = Peer::binary(a.local_addr(), "srv-r").await;
    let (mut phone, phone_id) = join(b.local_addr(), "srv-r", &mut binary).await;
    binary
        .send(json!({"conn_id": phone_id, "frame": "down"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"down\"");
    phone.send("[1]").await;
    assert_eq!(
        binary.text().await,
        format!("{{\"conn_id\":\"{phone_id}\",\"frame\":[1]}}")
    );
    stop([a, b]).await;
    drop(nats);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bucket_whose_settings_jetstream_cannot_change_stops_the_relay_at_start_saying_what_differs()
 {
    let Some(server) = NatsServer::start("a_bucket_jetstream_cannot_change") else {
        return;
    };
    // The liveness bucket made by someone else, in memory: JetStream cannot move it to a file.
    let nats = relay_cluster::connection::Nats::connect(
        &server.url(),
        &InstanceId::new("operator").unwrap(),
        Duration::from_secs(2),
        Default::default(),
    )
    .await
    .expect("connect");
    nats.jetstream()
        .create_key_value(async_nats::jetstream::kv::Config {
            bucket: relay_cluster::liveness::LIVENESS_BUCKET.to_owned(),
            storage: async_nats::jetstream::stream::StorageType::Memory,
            ..Default::default()
        })
        .await
        .expect("create the bucket");
    let refused = relay_server::start(clustered(&server, "relay-a")).await;
    let Err(error) = refused else {
        panic!("the relay started on a bucket it cannot use");
    };
    assert!(error.is_config(), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("storage: has memory, want file"),
        "{message}"
    );
}
