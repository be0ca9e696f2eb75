//! A real `nats-server -js` on a free loopback port with a temporary store directory.

use crate::{PATIENCE, find_tool, free_port, skip};
use std::fs::File;
use std::io::Read;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `nats-server` (JetStream on), stopped and reaped on drop.
pub struct NatsServer {
    binary: PathBuf,
    port: u16,
    /// The HTTP monitoring port (`/jsz`, `/connz`, ...).
    monitor_port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
    /// How many times it was started (each start logs "Server is ready" once).
    starts: usize,
    /// Arguments after the usual ones (a cluster node's name, cluster port and routes).
    extra: Vec<String>,
}

impl NatsServer {
    /// Starts a server for `test`; `None` (after a loud notice) if `nats-server` is missing and
    /// the cluster tests are not required.
    ///
    /// # Panics
    ///
    /// If the server is required but missing, or does not come up within [`PATIENCE`].
    pub fn start(test: &str) -> Option<NatsServer> {
        let mut server = NatsServer::unstarted(test)?;
        server.spawn();
        Some(server)
    }

    /// A server for `test` on a free port that is not running yet (nothing listens there):
    /// [`start_again`](Self::start_again) starts it. `None` as for [`start`](Self::start).
    pub fn unstarted(test: &str) -> Option<NatsServer> {
        let Some(binary) = find_tool("NATS_SERVER", "nats-server") else {
            skip(test, "nats-server", "NATS_SERVER");
            return None;
        };
        Some(NatsServer {
            binary,
            port: free_port(),
            monitor_port: free_port(),
            dir: tempfile::tempdir().expect("a temporary directory"),
            child: None,
            starts: 0,
            extra: Vec::new(),
        })
    }

    /// `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The loopback address of its client port (what [`url`](Self::url) names), e.g. for a
    /// [`Partition`](crate::proxy::Partition) in front of it.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The loopback address of its HTTP monitoring endpoint (`/jsz` names the JetStream meta
    /// leader, `/connz` the clients connected to this node, by connection name).
    pub fn monitor_addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.monitor_port))
    }

    /// Stops the server (SIGTERM, then SIGKILL if it has not exited within [`PATIENCE`]) and
    /// reaps it. Its store directory stays, for [`start_again`](Self::start_again).
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kills the server with SIGKILL (no goodbye to clients or routes, as a crashed or
    /// powered-off node) and reaps it. Its store directory stays, for
    /// [`start_again`](Self::start_again).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Whether the server process is running (started and neither stopped nor killed).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts the server again on the same port with the same store (after [`stop`](Self::stop)),
    /// or for the first time (after [`unstarted`](Self::unstarted)).
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "stop the server first");
        self.spawn();
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("nats-server.log")
    }

    fn spawn(&mut self) {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open the server log");
        let store = self.dir.path().join("store");
        let child = Command::new(&self.binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-m",
                &self.monitor_port.to_string(),
                "-sd",
            ])
            .arg(&store)
            .args(&self.extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", self.binary.display()));
        self.child = Some(child);
        self.starts += 1;
        self.wait_ready();
    }

    /// Waits for the client port to answer with its INFO line and the log to say ready.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                panic!(
                    "nats-server exited with {status}: see {}",
                    self.log_path().display()
                );
            }
            let ready = std::fs::read_to_string(self.log_path())
                .is_ok_and(|log| log.matches("Server is ready").count() >= self.starts);
            if ready && self.answers() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server not ready within {PATIENCE:?}: see {}",
                self.log_path().display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn answers(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut info = [0u8; 4];
        stream.read_exact(&mut info).is_ok() && &info == b"INFO"
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A NATS cluster of three `nats-server -js` nodes (`n1`, `n2`, `n3`, cluster `relay-test`) on
/// free loopback ports, routed to each other, each with its own store; stopped on drop.
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
}

impl NatsCluster {
    /// Starts the three nodes for `test` (each answers when this returns; JetStream elects its
    /// meta leader shortly after). `None` as for [`NatsServer::start`].
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`].
    pub fn start(test: &str) -> Option<NatsCluster> {
        NatsCluster::start_with(test, &[])
    }

    /// As [`start`](Self::start), each node also given `extra` arguments. With
    /// `["--no_advertise=true"]` the nodes do not tell clients about each other, so a client
    /// given proxies (a [`Partition`](crate::proxy::Partition) per node) cannot reconnect around
    /// them to the nodes' real addresses, as async-nats otherwise does.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::start`].
    pub fn start_with(test: &str, extra: &[&str]) -> Option<NatsCluster> {
        let mut nodes = (0..3)
            .map(|_| NatsServer::unstarted(test))
            .collect::<Option<Vec<_>>>()?;
        let cluster_ports: Vec<u16> = nodes.iter().map(|_| free_port()).collect();
        let routes = cluster_ports
            .iter()
            .map(|port| format!("nats://127.0.0.1:{port}"))
            .collect::<Vec<_>>()
            .join(",");
        for (i, node) in nodes.iter_mut().enumerate() {
            node.extra = vec![
                "--server_name".into(),
                format!("n{}", i + 1),
                "--cluster_name".into(),
                "relay-test".into(),
                "--cluster".into(),
                format!("nats://127.0.0.1:{}", cluster_ports[i]),
                "--routes".into(),
                routes.clone(),
            ];
            node.extra.extend(extra.iter().map(|arg| (*arg).to_owned()));
        }
        // Started together: a node waits for its routes before JetStream is up.
        for node in &mut nodes {
            node.start_again();
        }
        Some(NatsCluster { nodes })
    }

    /// Every node's URL, comma-separated (as `--cluster` takes them).
    pub fn urls(&self) -> String {
        self.nodes
            .iter()
            .map(NatsServer::url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i` (0, 1 or 2).
    pub fn node(&mut self, i: usize) -> &mut NatsServer {
        &mut self.nodes[i]
    }
}
