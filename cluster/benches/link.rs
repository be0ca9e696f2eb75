//! Round trips over a cluster link through a real `nats-server` on loopback, against the
//! baseline of a bare core-NATS publish echo between the same two connections in the same run.
//!
//! `cargo bench -p relay-cluster --bench link` (needs `nats-server` on `PATH` or in
//! `NATS_SERVER`; it starts its own on a free port and stops it). Prints, for 1,000 frames sent
//! one at a time (phone's instance → owner → echoed back down), the median, 90th and 99th
//! percentile round trip, then the same for the baseline; and the time for 1,000 frames
//! pipelined each way.

use bytes::Bytes;
use relay_cluster::{
    connection::ConnectSettings, connection::Nats, instance::InstanceId, link::Inbound, link::Link,
    link::LinkSettings, link::Outbound, link::Registration, liveness::Liveness,
    metrics::ClusterMetrics, wire::Reply, wire::Request,
};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const FRAMES: usize = 1000;

/// The nats-server this run uses, killed on drop (its store directory with it).
struct Server {
    child: Child,
    _store: tempfile::TempDir,
    port: u16,
}

impl Server {
    fn start() -> Option<Server> {
        let binary = std::env::var_os("NATS_SERVER")
            .map(std::path::PathBuf::from)
            .or_else(|| {
                std::env::split_paths(&std::env::var_os("PATH")?)
                    .map(|dir| dir.join("nats-server"))
                    .find(|path| path.is_file())
            })?;
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let dir = tempfile::tempdir().ok()?;
        let child = Command::new(binary)
            .args(["-js", "-a", "127.0.0.1", "-p", &port.to_string(), "-sd"])
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let server = Server {
            child,
            _store: dir,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "nats-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Set if a link was lost before the measurements were done (the run is then void).
static LOST: AtomicBool = AtomicBool::new(false);

/// Connection trouble (disconnects, slow consumers) either instance saw during the run.
static TROUBLE: AtomicUsize = AtomicUsize::new(0);

/// The owner's sink: echoes every frame back down the same link.
struct Echo(OnceLock<Outbound>);

impl Inbound for Echo {
    fn frame(&self, frame: Bytes) {
        if let Some(down) = self.0.get() {
            let _ = down.try_frame(&frame);
        }
    }
    fn ended(&self, _: u16, _: &str) {}
    fn lost(&self) {
        LOST.store(true, Ordering::SeqCst);
    }
}

/// The phone's instance's sink: hands each frame to the benchmark.
struct Deliver(mpsc::UnboundedSender<Bytes>);

impl Inbound for Deliver {
    fn frame(&self, frame: Bytes) {
        let _ = self.0.send(frame);
    }
    fn ended(&self, _: u16, _: &str) {}
    fn lost(&self) {
        LOST.store(true, Ordering::SeqCst);
    }
}

async fn node(
    url: &str,
    name: &str,
) -> (
    Nats,
    Arc<Liveness>,
    Link,
    mpsc::Receiver<relay_cluster::link::Incoming>,
) {
    let id = InstanceId::new(name).unwrap();
    let nats = Nats::connect(url, &id, Duration::from_secs(2), ConnectSettings::default())
        .await
        .unwrap();
    let liveness = Arc::new(
        Liveness::start(&nats, id, Duration::from_secs(10))
            .await
            .unwrap(),
    );
    let metrics = Arc::new(ClusterMetrics::default());
    let (link, incoming) = Link::start(&nats, liveness.clone(), LinkSettings::default(), metrics)
        .await
        .unwrap();
    (nats, liveness, link, incoming)
}

/// How long any one frame may take before the run is declared broken.
const PATIENCE: Duration = Duration::from_secs(10);

/// The next echoed frame; panics (the run is broken) if none comes within [`PATIENCE`].
async fn received(delivered: &mut mpsc::UnboundedReceiver<Bytes>) {
    match tokio::time::timeout(PATIENCE, delivered.recv()).await {
        Ok(Some(_)) => {}
        _ => panic!(
            "no echo within {PATIENCE:?} (link lost: {}, connection trouble: {})",
            LOST.load(Ordering::SeqCst),
            TROUBLE.load(Ordering::SeqCst)
        ),
    }
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    println!(
        "{what:<44} median {:>7.1} µs   p90 {:>7.1} µs   p99 {:>7.1} µs",
        at(0.5).as_secs_f64() * 1e6,
        at(0.9).as_secs_f64() * 1e6,
        at(0.99).as_secs_f64() * 1e6,
    );
}

#[tokio::main]
async fn main() {
    let Some(server) = Server::start() else {
        eprintln!("cluster_link bench skipped: nats-server not found (PATH or NATS_SERVER)");
        return;
    };
    let url = server.url();
    let (nats_a, liveness_a, link_a, mut incoming_a) = node(&url, "bench-owner").await;
    let (nats_b, _liveness_b, link_b, _incoming_b) = node(&url, "bench-phone").await;

    for nats in [&nats_a, &nats_b] {
        let mut trouble = nats.trouble();
        tokio::spawn(async move {
            while trouble.recv().await.is_ok() {
                TROUBLE.fetch_add(1, Ordering::SeqCst);
            }
        });
    }

    // Register a phone at b with owner a; a echoes.
    let echo = Arc::new(Echo(OnceLock::new()));
    let (to_bench, mut delivered) = mpsc::unbounded_channel();
    let owner = liveness_a.owner().unwrap();
    let register = link_b.register(
        &owner,
        "bench",
        "client-bench-00000001",
        Arc::new(Deliver(to_bench)),
    );
    let serve = async {
        let incoming = incoming_a.recv().await.unwrap();
        let Request::Register { from, link, .. } = incoming.request.clone() else {
            panic!()
        };
        let (accepting, down) = link_a.accept(&from, link).unwrap();
        let id = accepting.id();
        let _ = echo.0.set(down);
        accepting.activate(echo.clone()).unwrap();
        incoming.respond(Reply::Registered { link: id }).await;
    };
    let (registration, ()) = tokio::join!(register, serve);
    let Ok(Registration::Registered(up)) = registration else {
        panic!("registered")
    };

    let frame = Bytes::from_static(
        br#"{"type":"message","body":"a typical small frame of about 80 bytes..."}"#,
    );
    // Warm up.
    for _ in 0..200 {
        up.frame(&frame).await.unwrap();
        received(&mut delivered).await;
    }
    let mut link_rtt = Vec::with_capacity(FRAMES);
    for _ in 0..FRAMES {
        let start = Instant::now();
        up.frame(&frame).await.unwrap();
        received(&mut delivered).await;
        link_rtt.push(start.elapsed());
    }

    // Baseline: the same trip over bare core NATS — a publishes, b's subscriber publishes the
    // payload back, a's subscriber receives it — without the link's numbering and dispatch.
    use futures_util::StreamExt;
    let mut pings = nats_b.client().subscribe("bench.ping").await.unwrap();
    let responder = nats_b.client().clone();
    tokio::spawn(async move {
        while let Some(message) = pings.next().await {
            let _ = responder.publish("bench.pong", message.payload).await;
        }
    });
    let client_a = nats_a.client().clone();
    let mut pongs = client_a.subscribe("bench.pong").await.unwrap();
    nats_b.sync(PATIENCE).await.unwrap();
    nats_a.sync(PATIENCE).await.unwrap();
    let payload = frame.clone();
    let mut bare_rtt = Vec::with_capacity(FRAMES);
    for round in 0..FRAMES + 200 {
        let start = Instant::now();
        client_a
            .publish("bench.ping", payload.clone())
            .await
            .unwrap();
        if tokio::time::timeout(PATIENCE, pongs.next()).await.is_err() {
            panic!(
                "bare echo {round} was lost (connection trouble: {})",
                TROUBLE.load(Ordering::SeqCst)
            );
        }
        if round >= 200 {
            bare_rtt.push(start.elapsed());
        }
    }

    // Pipelined: 1,000 frames up and their 1,000 echoes down.
    let start = Instant::now();
    for _ in 0..FRAMES {
        up.frame(&frame).await.unwrap();
    }
    for _ in 0..FRAMES {
        received(&mut delivered).await;
    }
    let pipelined = start.elapsed();

    println!(
        "cluster link round trips through nats-server on loopback ({FRAMES} frames, {} bytes each)",
        frame.len()
    );
    report("link: up to the owner and echoed down", link_rtt);
    report("baseline: bare core NATS publish echo", bare_rtt);
    println!(
        "{:<44} {:>7.1} ms for {FRAMES} frames each way ({:.0} frames/s each way)",
        "link, pipelined",
        pipelined.as_secs_f64() * 1e3,
        FRAMES as f64 / pipelined.as_secs_f64()
    );
    assert!(
        !LOST.load(Ordering::SeqCst),
        "a link was lost during the run: figures void"
    );
    up.end(1000, "");
    drop(server);
}
