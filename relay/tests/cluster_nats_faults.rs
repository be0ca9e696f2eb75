//! Cluster mode under NATS faults, with real `nats-server`s and real WebSocket clients:
//!
//! - a three-node NATS cluster with `--cluster-replicas 3` and three relay instances under
//!   traffic (a binary on each instance, a phone of each binary on every instance, sequence
//!   numbers both ways), where one NATS node at a time is killed with SIGKILL: the node leading
//!   both KV streams, the JetStream meta leader, and a node leading nothing, each found through
//!   the JetStream API and the nodes' monitoring endpoints (and placed there by leader
//!   step-downs), so the test provably covers each. Nothing is ever closed 1012, every binary
//!   keeps its id, every link's frames arrive in order without a gap; a phone closed 1011 is
//!   allowed only when its link ran through an instance whose NATS connection was on the dead
//!   node (its in-flight link messages died with the node) — each such close is counted and
//!   printed with its reason.
//! - a partition between one instance and its (single) NATS server by a fault proxy, as a black
//!   hole and as connection resets: the instance closes everything 1012 within its bound, no
//!   other instance delivers for its id before that, and it serves again after healing.
//!
//! The kills use the default lease (30 s: these tests check that it tolerates the elections);
//! the partitions a 4 s lease (no election happens there; fence 3.2 s after the last
//! acknowledged refresh). Skipped loudly without `nats-server` (failed instead with
//! `RELAY_CLUSTER_TESTS=required`).

use relay_cluster_testkit as cluster_support;
mod support;

use cluster_support::nats::{NatsCluster, NatsServer};
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use relay_cluster::connection::Nats;
use relay_cluster::instance::InstanceId;
use relay_server::{ClusterConfig, Relay, RelayConfig};
use serde_json::{Value, json};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

/// The KV streams of the directory and liveness buckets.
const STREAMS: [&str; 2] = ["KV_relay_directory", "KV_relay_liveness"];
/// How often each client sends a numbered frame.
const TICK: Duration = Duration::from_millis(50);
/// The bound of one step that waits on JetStream (an election, a node catching up).
const ELECTION_PATIENCE: Duration = Duration::from_secs(45);

/// Prints progress past the test harness's capture.
fn progress(line: &str) {
    let _ = std::io::Write::write_all(
        &mut std::io::stderr().lock(),
        format!("{line}\n").as_bytes(),
    );
}

/// One phone's link as both ends saw it.
#[derive(Default)]
struct LinkLog {
    /// Numbers the phone received (sent by its binary, counting from 0).
    down: Vec<u64>,
    /// Numbers its binary received from it (sent by the phone, counting from 0).
    up: Vec<u64>,
    /// The phone's close, if any.
    closed: Option<(u16, String)>,
}

/// Every client's log, shared by the client tasks and the test.
#[derive(Default)]
struct Logs {
    /// By the phone's conn-id (learnt from its first frame at the binary) or its label.
    links: HashMap<String, LinkLog>,
    /// Binary label → its close, if any (none may close).
    binary_closed: HashMap<String, (u16, String)>,
}

type Shared = Arc<Mutex<Logs>>;

/// A phone of `id` on `addr` sending numbers up every tick; what it receives goes in the log
/// under `label`. The first frame it sends is `"<label>"` so its binary can map its conn-id.
async fn spawn_phone(addr: SocketAddr, id: &str, label: String, logs: Shared) -> Option<()> {
    let ws = connect(addr, "/v1/client", &phone_headers(id)).await.ok()?;
    let (mut tx, mut rx) = ws.split();
    logs.lock().links.entry(label.clone()).or_default();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        let mut next = 0u64;
        let _ = tx
            .send(Message::Text(json!({ "label": label }).to_string().into()))
            .await;
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if tx.send(Message::Text(next.to_string().into())).await.is_err() {
                        return;
                    }
                    next += 1;
                }
                message = rx.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        if let Ok(n) = text.parse::<u64>() {
                            logs.lock().links.entry(label.clone()).or_default().down.push(n);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let close = frame.map_or((1005, String::new()), |frame| {
                            (u16::from(frame.code), frame.reason.to_string())
                        });
                        logs.lock().links.entry(label.clone()).or_default().closed = Some(close);
                        return;
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        logs.lock().links.entry(label.clone()).or_default().closed =
                            Some((1006, "no close frame".into()));
                        return;
                    }
                },
            }
        }
    });
    Some(())
}

/// A binary of `id` on `addr`: records every phone's numbers under the phone's label, and
/// sends each phone it has heard from a number every tick until the phone left.
async fn spawn_binary(addr: SocketAddr, id: &str, label: String, logs: Shared) {
    let ws = raw_binary(addr, id).await;
    let (mut tx, mut rx) = ws.split();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        // conn-id → (phone label, next number down), for phones still connected.
        let mut phones: HashMap<String, (String, u64)> = HashMap::new();
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    for (conn_id, (_, next)) in phones.iter_mut() {
                        let envelope = json!({ "conn_id": conn_id, "frame": *next }).to_string();
                        if tx.feed(Message::Text(envelope.into())).await.is_err() {
                            return;
                        }
                        *next += 1;
                    }
                    if tx.flush().await.is_err() {
                        return;
                    }
                }
                message = rx.next() => match message {
                    Some(Ok(Message::Text(text))) => {
                        let Ok(envelope) = serde_json::from_str::<Value>(&text) else { continue };
                        let Some(conn_id) = envelope["conn_id"].as_str() else { continue };
                        if envelope.get("close_code").is_some() {
                            phones.remove(conn_id);
                            continue;
                        }
                        let frame = &envelope["frame"];
                        if let Some(phone) = frame["label"].as_str() {
                            phones.insert(conn_id.to_owned(), (phone.to_owned(), 0));
                        } else if let (Some(n), Some((phone, _))) = (frame.as_u64(), phones.get(conn_id)) {
                            logs.lock().links.entry(phone.clone()).or_default().up.push(n);
                        }
                    }
                    Some(Ok(Message::Close(frame))) => {
                        let close = frame.map_or((1005, String::new()), |frame| {
                            (u16::from(frame.code), frame.reason.to_string())
                        });
                        logs.lock().binary_closed.insert(label, close);
                        return;
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        logs.lock().binary_closed.insert(label, (1006, "no close frame".into()));
                        return;
                    }
                },
            }
        }
    });
}

/// Whether `numbers` is 0, 1, 2, … without a gap, a repeat or a reordering.
fn in_order(numbers: &[u64]) -> bool {
    numbers.iter().enumerate().all(|(i, &n)| n == i as u64)
}

/// A GET on a node's monitoring endpoint, as JSON (HTTP/1.0: never chunked).
async fn monitor(node: &NatsServer, path: &str) -> Option<Value> {
    let request = format!("GET {path} HTTP/1.0\r\nHost: nats\r\n\r\n");
    let answer = tokio::time::timeout(PATIENCE, async {
        let mut stream = tokio::net::TcpStream::connect(node.monitor_addr())
            .await
            .ok()?;
        tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
            .await
            .ok()?;
        let mut answer = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer)
            .await
            .ok()?;
        String::from_utf8(answer).ok()
    })
    .await
    .ok()??;
    serde_json::from_str(answer.split("\r\n\r\n").nth(1)?).ok()
}

/// The JetStream meta leader's server name, as the running nodes report it (all agreeing).
async fn meta_leader(nats: &mut NatsCluster) -> Option<String> {
    let mut seen = None;
    for i in 0..3 {
        let node = nats.node(i);
        if !node.is_running() {
            continue;
        }
        let jsz = monitor(node, "/jsz").await?;
        let leader = jsz["meta_cluster"]["leader"].as_str()?.to_owned();
        if leader.is_empty() || seen.as_ref().is_some_and(|seen| *seen != leader) {
            return None;
        }
        seen = Some(leader);
    }
    seen
}

/// The names of the clients connected to a node (relay instances connect under their id).
async fn connected_to(node: &NatsServer) -> Vec<String> {
    let Some(connz) = monitor(node, "/connz?limit=1000").await else {
        return Vec::new();
    };
    connz["connections"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|connection| connection["name"].as_str().map(str::to_owned))
        .collect()
}

/// A stream's cluster information (its leader and replicas), if JetStream answers.
async fn stream_cluster(
    checker: &Nats,
    stream: &str,
) -> Option<async_nats::jetstream::stream::ClusterInfo> {
    let info = async {
        let mut stream = checker.jetstream().get_stream(stream).await.ok()?;
        stream.info().await.ok().cloned()
    };
    tokio::time::timeout(Duration::from_secs(2), info)
        .await
        .ok()??
        .cluster
}

/// A stream's leader, if its group has one whose replicas are all current.
async fn settled_leader(checker: &Nats, stream: &str) -> Option<String> {
    let cluster = stream_cluster(checker, stream).await?;
    let current = cluster.replicas.len() == 2
        && cluster
            .replicas
            .iter()
            .all(|peer| peer.current && !peer.offline);
    cluster.leader.filter(|_| current)
}

/// Waits until both streams have a leader with both replicas current and the meta leader is
/// agreed on; returns (meta leader, directory leader, liveness leader).
async fn settled(checker: &Nats, nats: &mut NatsCluster) -> (String, String, String) {
    let deadline = Instant::now() + ELECTION_PATIENCE;
    loop {
        let meta = meta_leader(nats).await;
        let directory = settled_leader(checker, STREAMS[0]).await;
        let liveness = settled_leader(checker, STREAMS[1]).await;
        if let (Some(meta), Some(directory), Some(liveness)) = (meta, directory, liveness) {
            return (meta, directory, liveness);
        }
        assert!(Instant::now() < deadline, "JetStream settles");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Moves `stream`'s leader to the node named `to` (leader step-downs naming it as preferred).
async fn move_leader(checker: &Nats, stream: &str, to: &str) {
    let deadline = Instant::now() + ELECTION_PATIENCE;
    loop {
        if settled_leader(checker, stream).await.as_deref() == Some(to) {
            return;
        }
        let request = json!({ "placement": { "preferred": to } }).to_string();
        let _ = checker
            .client()
            .request(
                format!("$JS.API.STREAM.LEADER.STEPDOWN.{stream}"),
                request.into(),
            )
            .await;
        assert!(Instant::now() < deadline, "{stream}'s leader moves to {to}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The server name of node `i`.
fn name(i: usize) -> String {
    format!("n{}", i + 1)
}

fn index(name: &str) -> usize {
    name[1..].parse::<usize>().expect("a node name") - 1
}

/// Every link's number of frames each way, by label.
fn progress_of(logs: &Shared) -> HashMap<String, (usize, usize)> {
    logs.lock()
        .links
        .iter()
        .filter(|(_, link)| link.closed.is_none())
        .map(|(label, link)| (label.clone(), (link.down.len(), link.up.len())))
        .collect()
}

/// Waits until every open link has moved at least 10 frames each way past `before`.
async fn flowing(logs: &Shared, before: &HashMap<String, (usize, usize)>) {
    let deadline = Instant::now() + ELECTION_PATIENCE;
    loop {
        let now = progress_of(logs);
        let stuck: Vec<&String> = now
            .iter()
            .filter(|(label, (down, up))| {
                let (down0, up0) = before.get(*label).copied().unwrap_or((0, 0));
                *down < down0 + 10 || *up < up0 + 10
            })
            .map(|(label, _)| label)
            .collect();
        if stuck.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "frames flow on every link: stuck {stuck:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A phone's label: `p<phone instance>-<binary instance>-<generation>`.
fn label(phone_at: usize, binary_at: usize, generation: usize) -> String {
    format!("p{phone_at}-{binary_at}-{generation}")
}

fn ends(label: &str) -> (usize, usize) {
    let parts: Vec<&str> = label[1..].split('-').collect();
    (parts[0].parse().unwrap(), parts[1].parse().unwrap())
}

/// Connects a phone, retrying while upgrades are refused (an election in progress).
async fn phone_until_joined(addr: SocketAddr, id: &str, label: String, logs: &Shared) {
    let deadline = Instant::now() + ELECTION_PATIENCE;
    while spawn_phone(addr, id, label.clone(), logs.clone())
        .await
        .is_none()
    {
        assert!(Instant::now() < deadline, "phone {label} joins");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_any_one_nats_node_of_three_closes_nothing_1012_and_keeps_ids_and_order() {
    let Some(mut nats) = NatsCluster::start("losing_any_one_nats_node") else {
        return;
    };
    let urls: Vec<String> = nats.urls().split(',').map(str::to_owned).collect();
    // Each instance lists every node, its own first (the client may still pick any).
    let mut relays: Vec<Relay> = Vec::new();
    for i in 0..3 {
        let rotated: Vec<String> = (0..3).map(|k| urls[(i + k) % 3].clone()).collect();
        relays.push(
            relay(RelayConfig {
                cluster: Some(ClusterConfig {
                    replicas: 3,
                    ..ClusterConfig::new(
                        rotated.join(","),
                        InstanceId::new(format!("relay-{i}")).unwrap(),
                    )
                }),
                ..config()
            })
            .await,
        );
    }
    let addrs: Vec<SocketAddr> = relays.iter().map(Relay::local_addr).collect();
    for addr in &addrs {
        let deadline = Instant::now() + ELECTION_PATIENCE;
        while !healthz_raw(*addr).await.contains("\"cluster\":true") {
            assert!(Instant::now() < deadline, "{addr} joins");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let checker = Nats::connect(
        &nats.urls(),
        &InstanceId::new("checker").unwrap(),
        Duration::from_secs(2),
        Default::default(),
    )
    .await
    .expect("connect to the NATS cluster");
    let logs: Shared = Arc::default();
    for (b, addr) in addrs.iter().enumerate() {
        spawn_binary(*addr, &format!("srv-k{b}"), format!("b{b}"), logs.clone()).await;
    }
    for b in 0..3 {
        for (p, addr) in addrs.iter().enumerate() {
            phone_until_joined(*addr, &format!("srv-k{b}"), label(p, b, 0), &logs).await;
        }
    }
    flowing(&logs, &HashMap::new()).await;
    let mut explained_1011 = Vec::new();
    let mut covered = Vec::new();
    for (round, case) in ["leads both KV streams", "meta leader", "leads nothing"]
        .into_iter()
        .enumerate()
    {
        // Place the leaders so that the node to kill has exactly the role of this round.
        let (meta, _, _) = settled(&checker, &mut nats).await;
        let other = (0..3).map(name).find(|n| *n != meta).unwrap();
        let third = (0..3)
            .map(name)
            .find(|n| *n != meta && *n != other)
            .unwrap();
        let (streams_to, victim) = match round {
            0 => (other.clone(), other.clone()),
            1 => (other.clone(), meta.clone()),
            _ => (other.clone(), third.clone()),
        };
        for stream in STREAMS {
            move_leader(&checker, stream, &streams_to).await;
        }
        let (meta, directory, liveness) = settled(&checker, &mut nats).await;
        let roles = (
            meta == victim,
            directory == victim && liveness == victim,
            directory == victim || liveness == victim,
        );
        match round {
            0 => assert_eq!(roles, (false, true, true), "{case}"),
            1 => assert_eq!(roles, (true, false, false), "{case}"),
            _ => assert_eq!(roles, (false, false, false), "{case}"),
        }
        let v = index(&victim);
        let on_victim: Vec<usize> = connected_to(nats.node(v))
            .await
            .iter()
            .filter_map(|client| client.strip_prefix("relay-")?.parse().ok())
            .collect();
        let before = progress_of(&logs);
        progress(&format!(
            "round {round}: kill -9 {victim} ({case}; meta {meta}, directory {directory}, \
             liveness {liveness}); instances connected to it: {on_victim:?}"
        ));
        let killed = Instant::now();
        nats.node(v).kill();
        // The election (if any) ends, then a while for every lease to be refreshed after it
        // (a refresh attempt is retried every 500 ms): a lease the election outlasted would
        // fence its instance by then.
        let deadline = Instant::now() + ELECTION_PATIENCE;
        loop {
            let directory = stream_cluster(&checker, STREAMS[0])
                .await
                .and_then(|c| c.leader);
            let liveness = stream_cluster(&checker, STREAMS[1])
                .await
                .and_then(|c| c.leader);
            let meta = meta_leader(&mut nats).await;
            if let (Some(d), Some(l), Some(m)) = (directory, liveness, meta) {
                if d != victim && l != victim && m != victim {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "JetStream elects new leaders");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let elected = killed.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        flowing(&logs, &before).await;
        // Every close so far: only 1011 on a link through an instance that was on the node.
        {
            let logs = logs.lock();
            assert!(logs.binary_closed.is_empty(), "{:?}", logs.binary_closed);
            for (label, link) in &logs.links {
                let Some((code, reason)) = &link.closed else {
                    continue;
                };
                if explained_1011
                    .iter()
                    .any(|(l, _): &(String, String)| l == label)
                {
                    continue;
                }
                let (phone_at, binary_at) = ends(label);
                let through_victim =
                    on_victim.contains(&phone_at) || on_victim.contains(&binary_at);
                assert!(
                    *code == 1011
                        && reason == "relay link lost"
                        && phone_at != binary_at
                        && through_victim,
                    "{label} closed {code} {reason:?} when {victim} died (instances on it: \
                     {on_victim:?})"
                );
                explained_1011.push((
                    label.clone(),
                    format!(
                        "round {round}: {label} (phone on relay-{phone_at}, binary on \
                         relay-{binary_at}) 1011: {} was on {victim}, its link messages in \
                         flight died with it",
                        if on_victim.contains(&phone_at) {
                            format!("relay-{phone_at}")
                        } else {
                            format!("relay-{binary_at}")
                        }
                    ),
                ));
            }
        }
        progress(&format!(
            "round {round}: JetStream leaders re-elected {elected:?} after the kill; no 1012, \
             {} phones closed 1011 so far",
            explained_1011.len()
        ));
        covered.push(case);
        tokio::task::block_in_place(|| nats.node(v).start_again());
        settled(&checker, &mut nats).await;
        // The phones closed 1011 come back, to keep every pair of instances linked.
        let closed: Vec<String> = logs
            .lock()
            .links
            .iter()
            .filter(|(_, link)| link.closed.is_some())
            .map(|(label, _)| label.clone())
            .collect();
        for old in closed {
            let (phone_at, binary_at) = ends(&old);
            let fresh = label(phone_at, binary_at, round + 1);
            if logs.lock().links.contains_key(&fresh) {
                continue;
            }
            phone_until_joined(addrs[phone_at], &format!("srv-k{binary_at}"), fresh, &logs).await;
        }
    }
    flowing(&logs, &progress_of(&logs)).await;
    // Frames in order on every link, both ways, closed ones included (a prefix, no gap).
    {
        let logs = logs.lock();
        assert!(logs.binary_closed.is_empty(), "{:?}", logs.binary_closed);
        for (label, link) in &logs.links {
            assert!(in_order(&link.down), "{label} down: {:?}", link.down);
            assert!(in_order(&link.up), "{label} up: {:?}", link.up);
        }
    }
    // The binaries kept their ids: a second binary claiming one is refused as a conflict.
    for (b, addr) in addrs.iter().enumerate() {
        let mut second = Peer::binary(addrs[(b + 1) % 3], &format!("srv-k{b}")).await;
        assert_eq!(
            second.closed().await.0,
            4409,
            "srv-k{b} still held at {addr}"
        );
    }
    assert_eq!(covered.len(), 3);
    for line in &explained_1011 {
        progress(&line.1);
    }
    progress(&format!(
        "{} of {} phones closed 1011 over three kills; none 1012",
        explained_1011.len(),
        logs.lock().links.len()
    ));
    for relay in relays {
        relay.shutdown().await;
    }
}

/// The partition test: `fault` applied to the proxy between instance `cut` and NATS.
async fn partitioned(test: &str, fault: fn(&cluster_support::proxy::Partition)) {
    let Some(server) = NatsServer::start(test) else {
        return;
    };
    let proxy = cluster_support::proxy::Partition::start(server.addr()).await;
    let lease = Duration::from_secs(4);
    let clustered = |url: String, name: &str| RelayConfig {
        cluster: Some(ClusterConfig {
            lease,
            request_timeout: Duration::from_secs(1),
            ..ClusterConfig::new(url, InstanceId::new(name).unwrap())
        }),
        ..config()
    };
    let cut = relay(clustered(proxy.url(), "relay-cut")).await;
    let other = relay(clustered(server.url(), "relay-ok")).await;
    let logs: Shared = Arc::default();
    spawn_binary(cut.local_addr(), "srv-q", "old".into(), logs.clone()).await;
    phone_until_joined(cut.local_addr(), "srv-q", "local".into(), &logs).await;
    phone_until_joined(other.local_addr(), "srv-q", "remote".into(), &logs).await;
    flowing(&logs, &HashMap::new()).await;
    fault(&proxy);
    let faulted = Instant::now();
    // A binary claims the id at the other instance over and over, and a phone there joins it:
    // when does the other instance first deliver for the id?
    let taken: Arc<Mutex<Option<Instant>>> = Arc::default();
    let claimant = {
        let taken = taken.clone();
        let addr = other.local_addr();
        tokio::spawn(async move {
            loop {
                let Ok(ws) = connect(addr, "/v1/server", &binary_headers("srv-q")).await else {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let mut binary = Peer::new(ws);
                loop {
                    if let Ok(mut phone) =
                        connect(addr, "/v1/client", &phone_headers("srv-q")).await
                    {
                        let _ = phone.send(Message::Text("\"new\"".into())).await;
                        match tokio::time::timeout(Duration::from_secs(1), binary.rx_recv()).await {
                            Ok(Some(Message::Text(text))) if text.contains("\"new\"") => {
                                *taken.lock() = Some(Instant::now());
                                return binary;
                            }
                            Ok(Some(Message::Close(_)) | None) => break,
                            _ => {}
                        }
                    }
                    if matches!(binary.try_next(), Some(Message::Close(_))) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        })
    };
    let deadline = Instant::now() + PATIENCE;
    let fenced = loop {
        if let Some(close) = logs.lock().binary_closed.get("old") {
            assert_eq!(close, &(1012, "cluster connection lost".into()));
            break faulted.elapsed();
        }
        assert!(Instant::now() < deadline, "the cut instance fences");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    let mut binary = tokio::time::timeout(PATIENCE, claimant)
        .await
        .expect("the id is taken at the other instance")
        .unwrap();
    let taken_after = taken.lock().expect("taken") - faulted;
    assert!(
        taken_after > fenced,
        "the other instance delivered for the id {taken_after:?} after the fault, before the \
         cut one fenced ({fenced:?})"
    );
    {
        let logs = logs.lock();
        assert_eq!(
            logs.links["local"].closed,
            Some((1012, "cluster connection lost".into()))
        );
        assert_eq!(
            logs.links["remote"].closed,
            Some((1011, "relay link lost".into()))
        );
    }
    progress(&format!(
        "{test}: fenced (1012) {fenced:?} after the fault (bound: lease - margin = 3.2 s after \
         the last acknowledged refresh); the other instance delivered for the id {taken_after:?} \
         after it"
    ));
    proxy.heal();
    let deadline = Instant::now() + PATIENCE;
    while !healthz_raw(cut.local_addr())
        .await
        .contains("\"cluster\":true")
    {
        assert!(Instant::now() < deadline, "serves again after healing");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // It serves again: its phones reach the id's new owner, a binary claims a new id there.
    reaches(cut.local_addr(), "srv-q", &mut binary).await;
    let mut fresh = Peer::binary(cut.local_addr(), "srv-q2").await;
    reaches(other.local_addr(), "srv-q2", &mut fresh).await;
    cut.shutdown().await;
    other.shutdown().await;
}

/// A phone on `addr` says hello to `binary` (whatever else the binary was told before).
async fn reaches(addr: SocketAddr, id: &str, binary: &mut Peer) {
    let mut phone = Peer::phone(addr, id).await;
    phone.send("\"hello again\"").await;
    loop {
        if binary.text().await.contains("\"hello again\"") {
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_between_an_instance_and_nats_fences_it_before_anyone_takes_its_ids() {
    partitioned("a_black_hole_partition", |proxy| proxy.cut()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_connections_between_an_instance_and_nats_fence_it_before_anyone_takes_its_ids() {
    partitioned("a_reset_partition", |proxy| proxy.reset()).await;
}
