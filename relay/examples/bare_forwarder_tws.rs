//! The bare forwarder on **tokio-websockets** instead of tokio-tungstenite: the experiment issue
//! 12 asks for ("try `tokio-websockets` against `tokio-tungstenite` in the same harness"). It is
//! `bare_forwarder.rs` line for line except for the WebSocket crate, so that an interleaved search
//! (`relay-loadgen --search --url BARE --versus BARE_TWS`) compares the two stacks and nothing
//! else. A benchmark baseline, not a feature. What it does, like the original:
//! - `/v1/server` with `X-Pyrycode-Server: ID` makes the connection the binary of ID (a later
//!   one replaces it); any other path is a phone of the id in its `X-Pyrycode-Server` header.
//! - A phone's text frame goes to its binary as `{"conn_id":"client-ID-N","frame":<frame>}`
//!   (string concatenation: the frame is not parsed).
//! - A binary's text frame is read as `{"conn_id":"…","frame":…}` *in that field order* (what
//!   `relay-loadgen` sends): the conn-id is the text between the first `"conn_id":"` and the
//!   next `"`, the frame is everything after `,"frame":` up to the final `}`; it goes verbatim
//!   to that phone.
//! - Frames are written straight into the peer's WebSocket under its lock (no queue of its own):
//!   the sender waits while the peer's socket is full. Frames a reader finds already arrived
//!   are forwarded together and each peer is flushed once per such batch.
//!
//! What it skips, on purpose: header checks (missing headers, `User-Agent`, tokens, id
//! validation) and every HTTP status but 101; the registry's rules (first claim wins, the
//! 4409/4404/4429 refusals, the phone cap, the grace window, takeover); envelope validation
//! (JSON, `close_code`, nesting depth) and the phone-left notice; outboxes and their bounds;
//! heartbeats, slow-loris and size limits beyond the WebSocket crate's defaults; `/healthz`, metrics,
//! logging and a graceful drain. Frames it cannot route are dropped.
//!
//! ```text
//! cargo run --release -p relay-server --example bare_forwarder_tws -- --listen 127.0.0.1:9000
//! ```
//! It prints `bare forwarder listening on ws://ADDR` (with the real port when given port 0) and
//! runs until killed.

use clap::Parser;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::net::{TcpListener, TcpStream};
use tokio_websockets::{Config, Limits, Message, ServerBuilder, WebSocketStream};

/// Copy frames between binaries and their phones, nothing else (a benchmark baseline).
#[derive(Debug, Parser)]
#[command(name = "bare_forwarder_tws", version)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
}

/// The sending half of a connection, shared with whoever forwards to it.
type Peer = Arc<tokio::sync::Mutex<SplitSink<WebSocketStream<TcpStream>, Message>>>;

/// Who is connected: binaries by server-id, phones by conn-id.
#[derive(Default)]
struct Hub {
    binaries: Mutex<HashMap<String, Peer>>,
    phones: Mutex<HashMap<String, Peer>>,
    next_phone: AtomicU64,
}

/// Frames of up to 64 KiB in one piece, messages up to 1 MiB (tokio-websockets has no read or
/// write buffer sizes to set: its codec's buffers grow with what passes).
fn builder() -> ServerBuilder {
    ServerBuilder::new()
        .config(Config::default().frame_size(64 * 1024))
        .limits(Limits::default().max_payload_len(Some(1024 * 1024)))
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(args.listen).await?;
    println!(
        "bare forwarder (tokio-websockets) listening on ws://{}",
        listener.local_addr()?
    );
    serve(listener).await;
    Ok(())
}

/// Accepts connections forever (an accept error, e.g. out of descriptors, pauses it briefly).
async fn serve(listener: TcpListener) {
    let hub = Arc::new(Hub::default());
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::spawn(connection(hub.clone(), stream));
            }
            Err(_) => tokio::time::sleep(std::time::Duration::from_millis(50)).await,
        }
    }
}

/// One connection: upgrade, remember the path and id, then forward until it ends.
async fn connection(hub: Arc<Hub>, stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok((request, ws)) = builder().accept(stream).await else {
        return;
    };
    let id = request
        .headers()
        .get("X-Pyrycode-Server")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let seen = (request.uri().path() == "/v1/server", id);
    let (is_binary, id) = seen;
    let (tx, rx) = ws.split();
    let me: Peer = Arc::new(tokio::sync::Mutex::new(tx));
    if is_binary {
        let binaries = &hub.binaries;
        binaries
            .lock()
            .expect("not poisoned")
            .insert(id.clone(), me.clone());
        forward_all(&hub, &Side::Binary, rx).await;
        let mut binaries = binaries.lock().expect("not poisoned");
        if binaries.get(&id).is_some_and(|b| Arc::ptr_eq(b, &me)) {
            binaries.remove(&id);
        }
    } else {
        let n = hub.next_phone.fetch_add(1, Ordering::Relaxed);
        let conn_id = format!("client-{id}-{n:08x}");
        let prefix = format!("{{\"conn_id\":\"{conn_id}\",\"frame\":");
        let phones = &hub.phones;
        phones
            .lock()
            .expect("not poisoned")
            .insert(conn_id.clone(), me);
        forward_all(&hub, &Side::Phone { id, prefix }, rx).await;
        phones.lock().expect("not poisoned").remove(&conn_id);
    }
}

/// Which end a connection is, and what routing its frames needs.
enum Side {
    /// A binary: its frames go to the phone named in them.
    Binary,
    /// A phone of server-id `id`: its frames go to that id's binary, after `prefix`.
    Phone { id: String, prefix: String },
}

/// Most frames read back to back before the peers they went to are flushed.
const MAX_BATCH: usize = 64;

/// Forwards every frame `rx` reads until it ends; frames already read when one arrives are
/// forwarded with it, and each peer written to is flushed once per such batch (not per frame).
async fn forward_all(hub: &Hub, side: &Side, mut rx: SplitStream<WebSocketStream<TcpStream>>) {
    let mut dirty: Vec<Peer> = Vec::new();
    while let Some(Ok(message)) = rx.next().await {
        forward(hub, side, message, &mut dirty).await;
        for _ in 1..MAX_BATCH {
            match rx.next().now_or_never() {
                Some(Some(Ok(message))) => forward(hub, side, message, &mut dirty).await,
                _ => break,
            }
        }
        for peer in dirty.drain(..) {
            let _ = peer.lock().await.flush().await;
        }
    }
}

/// Routes one frame and queues it in its peer's write buffer (unflushed; see [`forward_all`]).
async fn forward(hub: &Hub, side: &Side, message: Message, dirty: &mut Vec<Peer>) {
    let Some(text) = message.as_text() else {
        return;
    };
    let routed = match side {
        Side::Binary => split_envelope(text).and_then(|(conn_id, frame)| {
            let phone = hub
                .phones
                .lock()
                .expect("not poisoned")
                .get(&conn_id)
                .cloned();
            phone.map(|phone| (phone, Message::text(frame)))
        }),
        Side::Phone { id, prefix } => {
            let binary = hub.binaries.lock().expect("not poisoned").get(id).cloned();
            binary.map(|binary| {
                let mut wrapped = String::with_capacity(prefix.len() + text.len() + 1);
                wrapped.push_str(prefix);
                wrapped.push_str(text);
                wrapped.push('}');
                (binary, Message::text(wrapped))
            })
        }
    };
    let Some((peer, out)) = routed else {
        return;
    };
    if peer.lock().await.feed(out).await.is_ok() && !dirty.iter().any(|p| Arc::ptr_eq(p, &peer)) {
        dirty.push(peer);
    }
}

/// Splits `{"conn_id":"ID","frame":FRAME}` (fields in this order) into ID and FRAME;
/// `None` for anything else. (The frame is copied: this version's `Message::text` takes a
/// `String`.)
fn split_envelope(s: &str) -> Option<(String, String)> {
    const ID: &str = "\"conn_id\":\"";
    const FRAME: &str = ",\"frame\":";
    let id_start = s.find(ID)? + ID.len();
    let id_end = id_start + s[id_start..].find('"')?;
    let frame_start = id_end + 1 + s[id_end + 1..].strip_prefix(FRAME).map(|_| FRAME.len())?;
    let frame_end = s.rfind('}')?;
    if frame_end <= frame_start {
        return None;
    }
    Some((
        s[id_start..id_end].to_owned(),
        s[frame_start..frame_end].to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_envelope_splits_into_its_conn_id_and_frame() {
        let (id, frame) =
            split_envelope(r#"{"conn_id":"client-a-1","frame":{"x":[1,2]}}"#).unwrap();
        assert_eq!(
            (id.as_str(), frame.as_str()),
            ("client-a-1", r#"{"x":[1,2]}"#)
        );
        assert!(split_envelope(r#"{"conn_id":"c","x":1}"#).is_none());
    }
}
