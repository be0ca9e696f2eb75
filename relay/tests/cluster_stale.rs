//! No stale delivery after a pause (issue 19, item 3): an instance whose runtime stalls past
//! its lease — every task of it, timers and sockets alike, as a stopped process's — while
//! another instance takes its id and the phones keep sending, must, once it runs again, deliver
//! nothing: not the frames its phones sent during the stall to its old binary, not the frames
//! its old binary sent to the phones, not the frames that came up a link from a phone elsewhere.
//! Its connections are closed `1012 cluster connection lost`.
//!
//! Also the writer's side: frames already queued for the old binary before the stall (its
//! socket full) are not written after it — only what the WebSocket layer had taken before the
//! stall (one frame here) still goes out, as the relay's `cluster` docs bound it.
//!
//! The stall is made with tokio's own machinery, deterministically: instance A runs on a
//! current-thread runtime of its own, and the test spawns onto it a task that blocks that one
//! thread until the test releases it — after the new holder's claim is in place. The process
//! version stops the `relay` binary itself (`SIGSTOP`, then `SIGCONT`), several times in a row;
//! it waits until every thread of the process is stopped before the phones send (a `SIGSTOP`
//! stops the threads one after another, and a frame served meanwhile is served before the
//! stop: legitimately).
//!
//! Real `nats-server`, real sockets, loopback only; skipped loudly without `nats-server`
//! (failed instead with `RELAY_CLUSTER_TESTS=required`).

use relay_cluster_testkit as cluster_support;
mod support;

use cluster_support::PATIENCE;
use cluster_support::instance::TEST_LEASE;
use cluster_support::nats::NatsServer;
use futures_util::{SinkExt, StreamExt};
use relay_cluster::instance::InstanceId;
use relay_server::{ClusterConfig, RelayConfig};
use serde_json::json;
use std::net::SocketAddr;
use std::sync::mpsc as std_mpsc;
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

/// A relay instance on a current-thread runtime of its own (its own OS thread), so that the
/// test can stall every task of it at once.
struct Isolated {
    addr: SocketAddr,
    metrics: SocketAddr,
    runtime: tokio::runtime::Handle,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Isolated {
    fn start(config: RelayConfig) -> Isolated {
        let (started, addr) = std_mpsc::channel();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            let handle = runtime.handle().clone();
            runtime.block_on(async move {
                let relay = relay(config).await;
                let addrs = (
                    relay.local_addr(),
                    relay.metrics_addr().expect("metrics on"),
                );
                started.send((addrs, handle)).expect("the test waits");
                let _ = stopped.await;
                relay.shutdown().await;
            });
        });
        let ((addr, metrics), runtime) = addr.recv_timeout(PATIENCE).expect("the instance started");
        Isolated {
            addr,
            metrics,
            runtime,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    /// Blocks the instance's only thread — every task of it stops, as in a stopped process —
    /// until the returned sender is used or dropped. Returns once the stall has begun.
    fn stall(&self) -> std_mpsc::Sender<()> {
        let (began, begun) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel::<()>();
        self.runtime.spawn(async move {
            began.send(()).expect("the test waits");
            // Blocking the runtime's thread on purpose: this is the stall.
            let _ = released.recv();
        });
        begun.recv_timeout(PATIENCE).expect("the stall began");
        release
    }
}

impl Isolated {
    /// The frames this instance has handed on from phones to binaries so far.
    async fn forwarded_up(&self) -> u64 {
        let answer = http(
            self.metrics,
            "GET /metrics HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
        )
        .await;
        let (_, body) = answer.split_once("\r\n\r\n").expect("a response");
        series(
            body,
            "relay_frames_forwarded_total{direction=\"phone_to_binary\"}",
        )
    }
}

impl Drop for Isolated {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A binary on `addr` claims `id` and holds it: retried until a phone joining there reaches
/// it — whether the claim is decided before its `101` or after. Returns the binary, that phone
/// and the phone's conn-id.
async fn claim_held(addr: SocketAddr, id: &str) -> (Peer, Peer, String) {
    let deadline = tokio::time::Instant::now() + 3 * PATIENCE;
    let pause = || tokio::time::sleep(Duration::from_millis(100));
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no binary could hold {id} on {addr}"
        );
        let Ok(ws) = connect(addr, "/v1/server", &binary_headers(id)).await else {
            pause().await; // refused before the upgrade (503): try again
            continue;
        };
        let mut binary = Peer::new(ws);
        // Until the binary holds the id, a phone is refused (503, 4404) and its hello goes
        // nowhere; a binary that is refused (closed) claims again.
        loop {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no binary could hold {id} on {addr}"
            );
            if let Ok(message) = tokio::time::timeout(Duration::ZERO, binary.rx_recv()).await {
                assert!(
                    !matches!(message, Some(Message::Text(_))),
                    "a frame before any phone joined"
                );
                break;
            }
            let Ok(mut ws) = connect(addr, "/v1/client", &phone_headers(id)).await else {
                pause().await;
                continue;
            };
            // A phone refused after its 101 (4404) may be closed before its hello is sent.
            if ws.send(Message::text(r#""hello""#)).await.is_err() {
                pause().await;
                continue;
            }
            let phone = Peer::new(ws);
            match tokio::time::timeout(Duration::from_millis(500), binary.rx_recv()).await {
                Ok(Some(Message::Text(text))) => {
                    let wrapped: serde_json::Value = serde_json::from_str(&text).expect("JSON");
                    assert_eq!(wrapped["frame"], "hello");
                    let conn_id = wrapped["conn_id"].as_str().expect("conn_id").to_owned();
                    return (binary, phone, conn_id);
                }
                Ok(_) => break, // the binary was refused: claim again
                Err(_) => pause().await,
            }
        }
    }
}

/// What `peer` receives from now on: no text frame, then a close with `code` (and the stream's
/// end). Panics naming the first frame that arrived.
async fn nothing_then_closed(peer: &mut Peer, who: &str, code: u16) {
    match peer.next().await {
        Message::Close(Some(frame)) => assert_eq!(
            u16::from(frame.code),
            code,
            "{who} closed with {} {:?}",
            u16::from(frame.code),
            frame.reason.as_str()
        ),
        Message::Text(text) => {
            panic!("{who} received a frame after its instance's lease ended: {text}")
        }
        other => panic!("{who}: expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_instance_delivers_nothing_after_another_took_its_id_and_closes_1012() {
    let Some(server) = NatsServer::start("a_stalled_instance_delivers_nothing") else {
        return;
    };
    let a = Isolated::start(clustered(&server, "relay-a"));
    let b = relay(clustered(&server, "relay-b")).await;
    let id = "srv-stale";

    // Before the stall: the binary on A, a phone on A, a phone on B (registered with A over a
    // link); frames flow both ways and every one of them has arrived.
    let mut old = Peer::binary(a.addr, id).await;
    let (mut on_a, a_id) = join(a.addr, id, &mut old).await;
    let (mut on_b, b_id) = join(b.local_addr(), id, &mut old).await;
    for (phone, conn_id) in [(&mut on_a, &a_id), (&mut on_b, &b_id)] {
        old.send(json!({"conn_id": conn_id, "frame": "before"}).to_string())
            .await;
        assert_eq!(phone.text().await, r#""before""#);
    }

    // A stalls. Its phones and its binary keep sending: the frames wait in A's sockets (the
    // phone on B's go up the link into A's NATS socket, until B sees A's lease end).
    let release = a.stall();
    for i in 0..50 {
        on_a.send(format!("{{\"during\":{i}}}")).await;
        on_b.send(format!("{{\"during\":{i}}}")).await;
        for conn_id in [&a_id, &b_id] {
            old.send(json!({"conn_id": conn_id, "frame": {"during": i}}).to_string())
                .await;
        }
    }

    // A's lease ends; a new binary on B takes the id and a phone there reaches it.
    let (mut new, mut new_phone, new_id) = claim_held(b.local_addr(), id).await;
    // The phone on A keeps sending after the new holder's claim.
    for i in 50..100 {
        on_a.send(format!("{{\"during\":{i}}}")).await;
    }

    // A runs again: whatever its tasks find ready first, nothing of the above is delivered.
    drop(release);
    nothing_then_closed(&mut old, "the old binary", 1012).await;
    nothing_then_closed(&mut on_a, "the phone on A", 1012).await;
    // The phone on B lost its owner while A was stalled (1011 relay link lost): nothing from
    // the old binary reached it either.
    nothing_then_closed(&mut on_b, "the phone on B", 1011).await;

    // The new holder is untouched: frames flow both ways.
    new_phone.send(r#""after""#).await;
    assert_eq!(new.json().await["frame"], "after");
    new.send(json!({"conn_id": new_id, "frame": "to you"}).to_string())
        .await;
    assert_eq!(new_phone.text().await, r#""to you""#);

    b.shutdown().await;
    drop(a);
}

/// Frames of 32 KiB, the frame size of the writer test.
const CHUNK: usize = 32 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_queued_for_a_binary_before_a_stall_are_not_written_after_it() {
    let Some(server) = NatsServer::start("frames_queued_before_a_stall") else {
        return;
    };
    // A small binary outbox: 16 frames of 32 KiB.
    let a = Isolated::start(RelayConfig {
        binary_outbox: 16 * (CHUNK + 64),
        ..clustered(&server, "relay-a")
    });
    let b = relay(clustered(&server, "relay-b")).await;
    let id = "srv-queued";

    // The old binary does not read: its socket fills, then its outbox, then the phone waits.
    let mut old = raw_binary(a.addr, id).await;
    let mut filler = raw_phone(a.addr, id).await;
    let chunk = format!("\"{}\"", "f".repeat(CHUNK - 2));
    let fill = tokio::spawn(async move {
        for _ in 0..1_000 {
            if filler.feed(Message::text(chunk.clone())).await.is_err() {
                return;
            }
        }
        let _ = filler.flush().await;
    });
    let deadline = tokio::time::Instant::now() + PATIENCE;
    let mut queued = a.forwarded_up().await;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = a.forwarded_up().await;
        if now == queued {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the outbox never filled"
        );
        queued = now;
    }

    // A stalls with frames in the binary's outbox (and its task's batch). The binary now reads
    // everything that was written before the stall, until nothing more comes.
    let release = a.stall();
    let mut before = 0;
    while let Ok(message) = tokio::time::timeout(Duration::from_millis(500), old.next()).await {
        match message {
            Some(Ok(Message::Text(_))) => before += 1,
            other => panic!("the old binary, during the stall: {other:?}"),
        }
    }
    assert!(before > 0, "frames were written before the stall");

    // A's lease ends; a binary on B takes the id.
    let (_new, _new_phone, _) = claim_held(b.local_addr(), id).await;

    // A runs again. What its WebSocket layer had already taken before the stall (it could not
    // write it: the socket was full) is at most one write batch and one frame; what was still
    // queued — the outbox, the writer's batch: up to 16 frames — is not written.
    drop(release);
    let mut after = 0;
    let close = loop {
        let message = tokio::time::timeout(PATIENCE, old.next())
            .await
            .expect("a message within PATIENCE");
        match message {
            Some(Ok(Message::Text(_))) => after += 1,
            Some(Ok(Message::Close(Some(frame)))) => break u16::from(frame.code),
            other => panic!("the old binary, after the stall: {other:?}"),
        }
    };
    assert!(
        after <= 2,
        "the old binary received {after} frames written after its instance's lease ended"
    );
    assert_eq!(close, 1012);
    fill.abort();
    b.shutdown().await;
    drop(a);
}

/// Waits until `addr` answers `/readyz` 200 (an instance that fenced itself takes a new lease).
async fn await_ready(addr: SocketAddr) {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let answer = http(
            addr,
            "GET /readyz HTTP/1.1\r\nHost: relay\r\nConnection: close\r\n\r\n",
        )
        .await;
        if answer.starts_with("HTTP/1.1 200") {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{addr} not ready: {answer}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_relay_process_delivers_nothing_after_another_took_its_id_every_time() {
    /// Pauses in a row (each a lease and a claim long: about 3 s).
    const PAUSES: usize = 5;
    let Some(server) = NatsServer::start("a_stopped_relay_process_delivers_nothing") else {
        return;
    };
    let a = ClusterProcess::start(&server.url(), "relay-a", TEST_LEASE);
    let b = ClusterProcess::start(&server.url(), "relay-b", TEST_LEASE);
    for pause in 0..PAUSES {
        let id = format!("srv-pause-{pause}");
        await_ready(a.addr).await;
        let mut old = Peer::binary(a.addr, &id).await;
        let (mut on_a, a_id) = join(a.addr, &id, &mut old).await;
        old.send(json!({"conn_id": a_id, "frame": "before"}).to_string())
            .await;
        assert_eq!(on_a.text().await, r#""before""#);

        // A stops; its phone and its binary keep sending (into A's sockets).
        a.stop();
        for i in 0..20 {
            on_a.send(format!("{{\"during\":{i}}}")).await;
            old.send(json!({"conn_id": a_id, "frame": {"during": i}}).to_string())
                .await;
        }
        // A's lease ends; a binary on B takes the id; A's phone keeps sending.
        let (mut new, mut new_phone, _) = claim_held(b.addr, &id).await;
        for i in 20..40 {
            on_a.send(format!("{{\"during\":{i}}}")).await;
        }

        a.signal("CONT");
        let pause = format!("pause {}", pause + 1);
        nothing_then_closed(&mut old, &format!("{pause}: the old binary"), 1012).await;
        nothing_then_closed(&mut on_a, &format!("{pause}: the phone on A"), 1012).await;
        new_phone.send(r#""after""#).await;
        assert_eq!(new.json().await["frame"], "after", "{pause}");
    }
}
