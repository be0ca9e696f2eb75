//! A loopback TCP forwarder that injects network faults between one instance and NATS (or any
//! two peers): a *black hole* ([`cut`](Partition::cut): sockets stay open, no byte moves, so
//! nobody sees a disconnect) and a *reset* ([`reset`](Partition::reset): every connection is
//! aborted with a TCP RST and new ones are reset at once), as opposed to NATS stopping.

use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the forwarder does with bytes and connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards both ways.
    Pass,
    /// Holds every socket open and moves no byte (a black hole).
    Cut,
    /// Resets every connection (RST) and every new one at once.
    Reset,
}

/// Forwards every connection to `target` until a fault is injected; [`heal`](Self::heal) ends
/// the fault. Stops accepting on drop (connections already forwarded are ended by the runtime).
pub struct Partition {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    accept: JoinHandle<()>,
}

impl Partition {
    /// Starts forwarding from a free loopback port to `target`.
    ///
    /// # Panics
    ///
    /// If no loopback port can be bound.
    pub async fn start(target: SocketAddr) -> Partition {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        let (mode, _) = watch::channel(Mode::Pass);
        let modes = mode.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                if *modes.borrow() == Mode::Reset {
                    abort(&client);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target).await else {
                    abort(&client);
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, modes.subscribe()));
                tokio::spawn(forward(server_read, client_write, modes.subscribe()));
            }
        });
        Partition { addr, mode, accept }
    }

    /// `nats://<forwarder>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// The forwarder's loopback address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops moving bytes (sockets stay open, so nobody sees a disconnect): a black hole.
    pub fn cut(&self) {
        self.mode.send_replace(Mode::Cut);
    }

    /// Aborts every forwarded connection with a TCP RST, both ways, and resets every new one
    /// at once, until [`heal`](Self::heal).
    pub fn reset(&self) {
        self.mode.send_replace(Mode::Reset);
    }

    /// Ends the fault: bytes move again (after a cut, what was held back is delivered late;
    /// after a reset, new connections are forwarded).
    pub fn heal(&self) {
        self.mode.send_replace(Mode::Pass);
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// Closes `stream` with a RST instead of a FIN (SO_LINGER 0).
fn abort(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Waits while the mode is `Cut`; returns false once it is `Reset`.
async fn passes(mode: &mut watch::Receiver<Mode>) -> bool {
    loop {
        let now = *mode.borrow_and_update();
        match now {
            Mode::Pass => return true,
            Mode::Reset => return false,
            Mode::Cut => {
                if mode.changed().await.is_err() {
                    return false;
                }
            }
        }
    }
}

async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        if !passes(&mut mode).await {
            break;
        }
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            changed = mode.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
        };
        let n = match read {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as a cut came are held back too.
        if !passes(&mut mode).await {
            break;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
    // Reset (or the forwarder went away): RST on the socket this direction reads from; the
    // other direction's task does the same for its own.
    abort(from.as_ref());
}
