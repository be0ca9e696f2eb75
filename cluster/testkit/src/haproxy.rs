//! A real `haproxy` in plain round-robin in front of a set of backends.

use crate::{PATIENCE, find_tool, free_port, skip};
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running `haproxy` (foreground, `-db`), stopped and reaped on drop.
pub struct Haproxy {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Haproxy {
    /// Starts haproxy for `test` on a free loopback port, balancing HTTP (and upgraded
    /// WebSocket) connections over `backends` in plain round-robin; `None` (after a loud
    /// notice) if `haproxy` is missing and the cluster tests are not required.
    ///
    /// # Panics
    ///
    /// If haproxy is required but missing, or does not listen within [`PATIENCE`].
    pub fn round_robin(test: &str, backends: &[SocketAddr]) -> Option<Haproxy> {
        let Some(binary) = find_tool("HAPROXY", "haproxy") else {
            skip(test, "haproxy", "HAPROXY");
            return None;
        };
        let port = free_port();
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = dir.path().join("haproxy.cfg");
        std::fs::write(&config, config_text(port, backends)).expect("write the haproxy config");
        let log = File::create(dir.path().join("haproxy.log")).expect("create the haproxy log");
        let child = Command::new(&binary)
            .arg("-db")
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|error| panic!("cannot start {}: {error}", binary.display()));
        let mut haproxy = Haproxy { child, port, dir };
        haproxy.wait_ready();
        Some(haproxy)
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("haproxy.log")
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + PATIENCE;
        while TcpStream::connect(self.addr()).is_err() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "haproxy exited with {status}: see {}",
                    self.log_path().display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "haproxy not listening within {PATIENCE:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The configuration: one frontend on `port`, one round-robin backend of `backends`, tunnel
/// timeout long enough for idle WebSockets.
pub fn config_text(port: u16, backends: &[SocketAddr]) -> String {
    let mut text = format!(
        "global\n    maxconn 4000\n\n\
         defaults\n    mode http\n    timeout connect 5s\n    timeout client 60s\n    \
         timeout server 60s\n    timeout tunnel 1h\n\n\
         frontend relay\n    bind 127.0.0.1:{port}\n    default_backend relays\n\n\
         backend relays\n    balance roundrobin\n"
    );
    for (n, backend) in backends.iter().enumerate() {
        text.push_str(&format!("    server relay{n} {backend}\n"));
    }
    text
}
