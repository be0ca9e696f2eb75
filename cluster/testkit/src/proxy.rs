//! A loopback TCP forwarder that can be cut without closing anything: a network partition
//! between one instance and NATS, as opposed to NATS stopping.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// Forwards every connection to `target` until [`cut`](Self::cut); then holds every socket open
/// and moves no byte either way until [`heal`](Self::heal).
pub struct Partition {
    addr: SocketAddr,
    state: Arc<State>,
    accept: JoinHandle<()>,
}

struct State {
    cut: AtomicBool,
    healed: Notify,
}

impl Partition {
    /// Starts forwarding from a free loopback port to `target`.
    pub async fn start(target: SocketAddr) -> Partition {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .expect("bind the forwarder");
        let addr = listener.local_addr().expect("forwarder address");
        let state = Arc::new(State {
            cut: AtomicBool::new(false),
            healed: Notify::new(),
        });
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(target).await else {
                    continue;
                };
                let (client_read, client_write) = client.into_split();
                let (server_read, server_write) = server.into_split();
                tokio::spawn(forward(client_read, server_write, shared.clone()));
                tokio::spawn(forward(server_read, client_write, shared.clone()));
            }
        });
        Partition {
            addr,
            state,
            accept,
        }
    }

    /// `nats://<forwarder>`.
    pub fn url(&self) -> String {
        format!("nats://{}", self.addr)
    }

    /// Stops moving bytes (sockets stay open, so nobody sees a disconnect).
    pub fn cut(&self) {
        self.state.cut.store(true, Ordering::SeqCst);
    }

    /// Moves bytes again (what was held back is delivered late).
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
        self.state.healed.notify_waiters();
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn forward(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, state: Arc<State>) {
    let mut buffer = vec![0u8; 64 * 1024];
    loop {
        while state.cut.load(Ordering::SeqCst) {
            let healed = state.healed.notified();
            if !state.cut.load(Ordering::SeqCst) {
                break;
            }
            healed.await;
        }
        let n = match from.read(&mut buffer).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just as the cut came are held back too.
        while state.cut.load(Ordering::SeqCst) {
            let healed = state.healed.notified();
            if !state.cut.load(Ordering::SeqCst) {
                break;
            }
            healed.await;
        }
        if to.write_all(&buffer[..n]).await.is_err() {
            return;
        }
    }
}
