//! The load generator through a real `haproxy` in plain round-robin in front of three relay
//! instances in cluster mode on a real `nats-server -js` (the instances run in this test's
//! process, the load generator is the real binary). Every process is started by the test on
//! loopback and stopped by it. Skipped loudly without `nats-server` / `haproxy` (failed instead
//! with `RELAY_CLUSTER_TESTS=required`).

use relay_cluster_testkit as cluster_support;

use cluster_support::haproxy::Haproxy;
use cluster_support::nats::NatsServer;
use relay_cluster::instance::InstanceId;
use relay_server::{ClusterConfig, Relay, RelayConfig};
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

/// The lease the instances run with (refresh 500 ms).
const LEASE: Duration = Duration::from_secs(2);

/// A relay in cluster mode on `server` as `name`, on a free loopback port, with no per-IP limit
/// and no connection cap (every load connection comes from loopback).
async fn instance(server: &NatsServer, name: &str) -> Relay {
    let config = RelayConfig {
        listen: SocketAddr::from(([127, 0, 0, 1], 0)),
        metrics_listen: None,
        rate_burst: 0,
        max_connections: 0,
        probe_timeout: Duration::from_millis(300),
        cluster: Some(ClusterConfig {
            lease: LEASE,
            ..ClusterConfig::new(server.url(), InstanceId::new(name).unwrap())
        }),
        ..RelayConfig::default()
    };
    relay_server::start(config)
        .await
        .expect("start a relay instance")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_round_robin_over_three_instances_serves_the_load_generator_without_loss() {
    let Some(server) = NatsServer::start("haproxy_round_robin_over_three_instances") else {
        return;
    };
    let mut instances = Vec::new();
    for name in ["relay-lb-a", "relay-lb-b", "relay-lb-c"] {
        instances.push(instance(&server, name).await);
    }
    let backends: Vec<SocketAddr> = instances.iter().map(Relay::local_addr).collect();
    let Some(haproxy) = Haproxy::round_robin("haproxy_round_robin_over_three_instances", &backends)
    else {
        return;
    };
    let url = format!("ws://{}", haproxy.addr());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_relay-loadgen"))
            .args(["--url", &url, "--binaries", "8", "--phones", "4"])
            .args(["--rate", "400", "--duration", "10s", "--json", "--strict"])
            .output()
            .expect("run relay-loadgen")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "relay-loadgen failed: {stderr}");
    let report: Value = serde_json::from_slice(&output.stdout).expect("a JSON report");
    let step = &report["step"];
    assert_eq!(step["up"]["lost"], 0, "{report}");
    assert_eq!(step["down"]["lost"], 0, "{report}");
    assert!(step["up"]["sent"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["phones_setup"]["accepted"], 32, "{report}");
    for relay in instances {
        relay.shutdown().await;
    }
}
