//! In-process cluster instances on a test's NATS server, and a recording link sink.

use crate::PATIENCE;
use crate::nats::NatsServer;
use bytes::Bytes;
use relay_cluster::{
    connection::ConnectSettings, connection::Nats, directory::Directory, instance::InstanceId,
    link::Inbound, link::Incoming, link::Link, link::LinkSettings, liveness::Liveness,
    metrics::ClusterMetrics,
};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

/// The lease the tests use: short, so expiry is seen quickly (refresh 500 ms, margin 400 ms).
pub const TEST_LEASE: Duration = Duration::from_secs(2);

/// One cluster instance: its connection, lease, directory and link.
pub struct Instance {
    pub nats: Nats,
    pub liveness: Arc<Liveness>,
    pub directory: Directory,
    pub link: Link,
    pub incoming: mpsc::Receiver<Incoming>,
    pub metrics: Arc<ClusterMetrics>,
}

/// Starts instance `name` on `server` with `lease` and the default link settings.
pub async fn instance(server: &NatsServer, name: &str, lease: Duration) -> Instance {
    instance_with(
        &server.url(),
        name,
        lease,
        ConnectSettings::default(),
        LinkSettings::default(),
    )
    .await
}

/// Starts instance `name` connected to `url` with these settings (request timeout: 1 s unless
/// set).
pub async fn instance_with(
    url: &str,
    name: &str,
    lease: Duration,
    connect: ConnectSettings,
    mut link: LinkSettings,
) -> Instance {
    if link.request_timeout == LinkSettings::default().request_timeout {
        link.request_timeout = Duration::from_secs(1);
    }
    let id = InstanceId::new(name).expect("a legal instance id");
    let nats = Nats::connect(url, &id, Duration::from_secs(2), connect)
        .await
        .expect("connect to the test's nats-server");
    let metrics = Arc::new(ClusterMetrics::default());
    let liveness = Arc::new(
        Liveness::start(&nats, id, lease)
            .await
            .expect("liveness starts"),
    );
    let directory = Directory::open(
        &nats,
        liveness.clone(),
        Duration::from_secs(2),
        metrics.clone(),
    )
    .await
    .expect("directory opens");
    let (link, incoming) = Link::start(&nats, liveness.clone(), link, metrics.clone())
        .await
        .expect("link starts");
    Instance {
        nats,
        liveness,
        directory,
        link,
        incoming,
        metrics,
    }
}

/// What a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    Frame(String),
    Ended(u16, String),
    Lost,
}

/// A link sink that records everything in order.
pub struct Recorder(mpsc::UnboundedSender<Seen>);

impl Inbound for Recorder {
    fn frame(&self, frame: Bytes) {
        let _ = self
            .0
            .send(Seen::Frame(String::from_utf8_lossy(&frame).into_owned()));
    }
    fn ended(&self, code: u16, reason: &str) {
        let _ = self.0.send(Seen::Ended(code, reason.to_owned()));
    }
    fn lost(&self) {
        let _ = self.0.send(Seen::Lost);
    }
}

/// A recorder and what it sees.
pub fn recorder() -> (Arc<Recorder>, mpsc::UnboundedReceiver<Seen>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (Arc::new(Recorder(tx)), rx)
}

/// The next thing `seen` records, within [`PATIENCE`].
pub async fn next(seen: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    tokio::time::timeout(PATIENCE, seen.recv())
        .await
        .expect("the sink was told something in time")
        .expect("the recorder is alive")
}

/// The next request `instance` receives, within [`PATIENCE`].
pub async fn next_request(instance: &mut Instance) -> Incoming {
    tokio::time::timeout(PATIENCE, instance.incoming.recv())
        .await
        .expect("a request arrived in time")
        .expect("the link is running")
}
