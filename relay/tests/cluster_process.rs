//! Cluster mode with the `relay` binary as child processes on a real `nats-server -js`: an
//! instance SIGKILLed while its binary's phones on other instances are mid-stream (the load
//! generator through `haproxy` in front of three instances is `loadgen/tests/cluster.rs`). Each
//! child is started by its test on loopback and stopped by it (kill and reap on drop). Skipped
//! loudly without `nats-server` (failed instead with `RELAY_CLUSTER_TESTS=required`).

use relay_cluster_testkit as cluster_support;
mod support;

use cluster_support::nats::NatsServer;
use serde_json::json;
use std::time::{Duration, Instant};
use support::*;

/// The lease the instances run with (refresh 500 ms).
const LEASE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_killed_mid_stream_ends_its_phones_elsewhere_1011_within_the_bound_and_frees_its_ids()
 {
    let Some(server) = NatsServer::start("an_instance_killed_mid_stream") else {
        return;
    };
    let mut doomed = ClusterProcess::start(&server.url(), "relay-doomed", LEASE);
    let b = ClusterProcess::start(&server.url(), "relay-b", LEASE);
    let c = ClusterProcess::start(&server.url(), "relay-c", LEASE);
    let mut binary = Peer::binary(doomed.addr, "srv-k").await;
    let (mut on_b, b_id) = join(b.addr, "srv-k", &mut binary).await;
    let (mut on_c, c_id) = join(c.addr, "srv-k", &mut binary).await;
    // Mid-stream: frames are flowing both ways when the owner dies.
    for i in 0..50 {
        binary
            .send(json!({"conn_id": b_id, "frame": i}).to_string())
            .await;
        binary
            .send(json!({"conn_id": c_id, "frame": i}).to_string())
            .await;
        on_b.send(format!("{i}")).await;
        on_c.send(format!("{i}")).await;
    }
    doomed.kill();
    let killed = Instant::now();
    drop(binary);
    for phone in [&mut on_b, &mut on_c] {
        // Whatever was delivered before the kill, in order; then 1011.
        let mut next = 0;
        let close = loop {
            match phone.next().await {
                tokio_tungstenite::tungstenite::Message::Text(text) => {
                    assert_eq!(text.as_str(), next.to_string(), "a prefix, in order");
                    next += 1;
                }
                other => break other,
            }
        };
        match close {
            tokio_tungstenite::tungstenite::Message::Close(Some(frame)) => {
                assert_eq!(
                    (u16::from(frame.code), frame.reason.as_str()),
                    (1011, "relay link lost")
                );
            }
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    // Within the lease plus one refresh (slack for a loaded machine's scheduling).
    let took = killed.elapsed();
    assert!(
        took < LEASE + LEASE / 4 + Duration::from_secs(2),
        "{took:?}"
    );
    // The id is claimable again, on any instance, and works across instances.
    let mut again = Peer::binary(b.addr, "srv-k").await;
    let (mut phone, phone_id) = join(c.addr, "srv-k", &mut again).await;
    again
        .send(json!({"conn_id": phone_id, "frame": "after"}).to_string())
        .await;
    assert_eq!(phone.text().await, "\"after\"");
}
