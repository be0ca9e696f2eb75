//! The chaos run's clients: binaries and phones over real WebSockets to the `relay` instances,
//! sending numbered frames both ways and reconnecting after every close the way pyry and its
//! apps do (a binary claims its id again; a phone joins again), each recording what it sent and
//! saw in a [`ConnRecord`] for the checker.
//!
//! - A **binary** connects to a random instance and claims its id. Every 100 ms it sends one
//!   frame to each phone connection it knows (learned from their frames, forgotten on a
//!   phone-left notice), and every second a ping. A relay that says nothing (no frame, no pong)
//!   for [`Ctx::watchdog`] — or, before it said anything at all, for [`Ctx::first_word`] (a
//!   claim another instance must decide is held unanswered after its `101` for up to a
//!   lease) — is given up: the binary claims again elsewhere but
//!   keeps *reading* the old socket for a while without sending (as a second binary of the id
//!   whose relay froze would), so a frozen instance that wakes and delivers to it is seen.
//! - A **phone** connects to a random instance, joins its id and sends a frame every 100 ms.
//!
//! Both back off 200–600 ms before connecting again. Nothing here judges: the checker does.

use super::checker::{ConnRecord, End, Received, Role, Sent};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A client socket.
type Ws = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

/// How often a client sends a frame on each of its streams.
const FRAME_EVERY: Duration = Duration::from_millis(100);

/// How long an upgrade may take before the client tries another instance.
const HANDSHAKE: Duration = Duration::from_secs(3);

/// What the clients are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Send, and reconnect after every end.
    Run,
    /// Send nothing more, connect no more, keep reading.
    Drain,
    /// Stop; connections still open stay recorded as open.
    Done,
}

/// What every client shares: the clock, the instances, the phase, the records.
pub struct Ctx {
    /// Time zero of the run (every timestamp is measured from it).
    pub start: Instant,
    /// The instances' addresses (fixed: a restarted instance listens on its old port).
    pub addrs: Vec<SocketAddr>,
    /// The phase.
    pub phase: watch::Receiver<Phase>,
    /// A binary gives its relay up after this long without hearing from it.
    pub watchdog: Duration,
    /// … or after this long if it never heard from it.
    pub first_word: Duration,
    /// How long a binary keeps reading a socket it gave up.
    pub zombie_life: Duration,
    records: Mutex<Vec<Arc<Mutex<ConnRecord>>>>,
    refused: Mutex<BTreeMap<String, u64>>,
}

impl Ctx {
    /// The shared state of a run's clients, whose relays run with lease `lease`: a binary gives
    /// its relay up after 3 s of silence (a lease and 2 s before it first heard from it), and
    /// reads the old socket for two leases and 5 s more (past the end of any pause).
    pub fn new(
        start: Instant,
        addrs: Vec<SocketAddr>,
        phase: watch::Receiver<Phase>,
        lease: Duration,
    ) -> Ctx {
        Ctx {
            start,
            addrs,
            phase,
            watchdog: Duration::from_secs(3),
            first_word: lease + Duration::from_secs(2),
            zombie_life: lease * 2 + Duration::from_secs(5),
            records: Mutex::new(Vec::new()),
            refused: Mutex::new(BTreeMap::new()),
        }
    }

    /// Now, on the run's clock.
    pub fn now(&self) -> Duration {
        self.start.elapsed()
    }

    /// A copy of every connection's record.
    pub fn records(&self) -> Vec<ConnRecord> {
        self.records
            .lock()
            .iter()
            .map(|r| r.lock().clone())
            .collect()
    }

    /// Upgrades that failed, counted by role and reason.
    pub fn refused(&self) -> BTreeMap<String, u64> {
        self.refused.lock().clone()
    }

    fn track(&self, record: ConnRecord) -> Arc<Mutex<ConnRecord>> {
        let record = Arc::new(Mutex::new(record));
        self.records.lock().push(record.clone());
        record
    }

    fn running(&self) -> bool {
        *self.phase.borrow() == Phase::Run
    }
}

/// Opens `path` on instance `instance` as a client of `id`.
async fn open(ctx: &Ctx, instance: usize, role: Role, id: &str) -> Result<Ws, String> {
    let (path, headers) = match role {
        Role::Binary => ("/v1/server", crate::support::binary_headers(id)),
        Role::Phone => ("/v1/client", crate::support::phone_headers(id)),
    };
    let mut request = format!("ws://{}{path}", ctx.addrs[instance])
        .into_client_request()
        .map_err(|e| e.to_string())?;
    for (name, value) in headers {
        let value = HeaderValue::from_str(&value).map_err(|e| e.to_string())?;
        request.headers_mut().insert(name, value);
    }
    match tokio::time::timeout(HANDSHAKE, tokio_tungstenite::connect_async(request)).await {
        Err(_) => Err("handshake timed out".to_owned()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(WsError::Http(response))) => Err(format!("HTTP {}", response.status().as_u16())),
        Ok(Err(WsError::Io(error))) => Err(format!("{:?}", error.kind())),
        Ok(Err(other)) => Err(other.to_string()),
    }
}

/// A connection's writer: sends what is queued, in order, until the queue or the socket ends.
fn writer(ws_tx: futures_util::stream::SplitSink<Ws, Message>) -> mpsc::UnboundedSender<Message> {
    let (queue, mut queued) = mpsc::unbounded_channel::<Message>();
    tokio::spawn(async move {
        let mut ws_tx = ws_tx;
        while let Some(message) = queued.recv().await {
            if ws_tx.send(message).await.is_err() {
                return;
            }
        }
    });
    queue
}

/// Waits 200–600 ms (less if the run is stopping).
async fn back_off(ctx: &Ctx, rng: &mut fastrand::Rng) {
    let mut phase = ctx.phase.clone();
    let wait = Duration::from_millis(rng.u64(200..600));
    tokio::select! {
        () = tokio::time::sleep(wait) => {}
        _ = phase.wait_for(|p| *p != Phase::Run) => {}
    }
}

/// One client's life: connect, serve, back off, again, while the run lasts.
pub async fn client(ctx: Arc<Ctx>, role: Role, id: String, name: String, seed: u64) {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut n = 0;
    while ctx.running() {
        let instance = rng.usize(..ctx.addrs.len());
        match open(&ctx, instance, role, &id).await {
            Ok(ws) => {
                n += 1;
                let label = format!("{name}#{n}");
                let record = ctx.track(ConnRecord::new(label, role, &id, instance, ctx.now()));
                match role {
                    Role::Binary => serve_binary(&ctx, ws, record).await,
                    Role::Phone => serve_phone(&ctx, ws, record).await,
                }
            }
            Err(reason) => {
                let key = format!("{role:?} {reason}").to_lowercase();
                *ctx.refused.lock().entry(key).or_default() += 1;
            }
        }
        back_off(&ctx, &mut rng).await;
    }
}

/// What reading a socket gave.
enum Read {
    /// A text frame.
    Text(String),
    /// A pong or anything else that shows the relay is there.
    Alive,
    /// The end (recorded).
    Ended,
}

/// Reads the next message; records the end of the connection when it comes.
async fn read(ctx: &Ctx, rx: &mut SplitStream<Ws>, record: &Mutex<ConnRecord>) -> Read {
    let end = match rx.next().await {
        Some(Ok(Message::Text(text))) => return Read::Text(text.to_string()),
        Some(Ok(Message::Close(Some(frame)))) => {
            End::Close(u16::from(frame.code), frame.reason.to_string())
        }
        Some(Ok(Message::Close(None))) => End::Close(1005, String::new()),
        Some(Ok(_)) => return Read::Alive,
        Some(Err(_)) | None => End::Abrupt,
    };
    record.lock().end = Some((ctx.now(), end));
    Read::Ended
}

/// A binary connection: reads envelopes and notices, sends to each known phone, pings, and
/// gives the relay up after the watchdog's silence.
async fn serve_binary(ctx: &Ctx, ws: Ws, record: Arc<Mutex<ConnRecord>>) {
    let (ws_tx, mut rx) = ws.split();
    let queue = writer(ws_tx);
    let label = record.lock().label.clone();
    // conn-id → (the phone connection's label, the next sequence number to it).
    let mut phones: HashMap<String, (String, u64)> = HashMap::new();
    let mut frames = tokio::time::interval(FRAME_EVERY);
    let mut pings = tokio::time::interval(Duration::from_secs(1));
    let opened = Instant::now();
    let mut heard: Option<Instant> = None;
    let mut phase = ctx.phase.clone();
    loop {
        tokio::select! {
            read = read(ctx, &mut rx, &record) => match read {
                Read::Ended => return,
                Read::Alive => heard = Some(Instant::now()),
                Read::Text(text) => {
                    heard = Some(Instant::now());
                    binary_received(ctx, &record, &mut phones, &text);
                }
            },
            _ = frames.tick(), if ctx.running() => {
                let mut record = record.lock();
                for (conn_id, (phone, seq)) in &mut phones {
                    let frame = json!({"conn_id": conn_id, "frame": {"b": label, "s": *seq}});
                    let at = ctx.now();
                    if queue.send(Message::Text(frame.to_string().into())).is_ok() {
                        record.sent.push(Sent { to: Some(phone.clone()), seq: *seq, at });
                    }
                    *seq += 1;
                }
            },
            _ = pings.tick() => {
                let silence = heard.map_or(opened.elapsed(), |at| at.elapsed());
                let limit = if heard.is_some() { ctx.watchdog } else { ctx.first_word };
                if silence > limit && ctx.running() {
                    record.lock().abandoned = Some(ctx.now());
                    tokio::spawn(zombie(ctx.zombie_life, ctx.start, rx, record, queue));
                    return;
                }
                let _ = queue.send(Message::Ping(Vec::new().into()));
            },
            _ = phase.wait_for(|p| *p == Phase::Done) => return,
        }
    }
}

/// A binary's frame or notice.
fn binary_received(
    ctx: &Ctx,
    record: &Mutex<ConnRecord>,
    phones: &mut HashMap<String, (String, u64)>,
    text: &str,
) {
    let Ok(envelope) = serde_json::from_str::<Value>(text) else {
        return;
    };
    let Some(conn_id) = envelope["conn_id"].as_str() else {
        return;
    };
    let frame = &envelope["frame"];
    match (frame["p"].as_str(), frame["s"].as_u64()) {
        (Some(phone), Some(seq)) => {
            record.lock().received.push(Received {
                from: phone.to_owned(),
                seq,
                at: ctx.now(),
            });
            phones
                .entry(conn_id.to_owned())
                .or_insert_with(|| (phone.to_owned(), 0));
        }
        // A phone-left notice: that phone gets nothing more.
        _ if envelope.get("close_code").is_some() => {
            phones.remove(conn_id);
        }
        _ => {}
    }
}

/// A given-up binary socket, still read (frames recorded) until the relay ends it or `life`
/// passes; sends nothing (its writer stays, for the pongs the reads queue).
async fn zombie(
    life: Duration,
    start: Instant,
    mut rx: SplitStream<Ws>,
    record: Arc<Mutex<ConnRecord>>,
    _queue: mpsc::UnboundedSender<Message>,
) {
    let deadline = tokio::time::Instant::now() + life;
    loop {
        let next = tokio::time::timeout_at(deadline, rx.next()).await;
        let end = match next {
            Err(_) => return,
            Ok(Some(Ok(Message::Text(text)))) => {
                let envelope: Value = serde_json::from_str(&text).unwrap_or_default();
                let frame = &envelope["frame"];
                if let (Some(phone), Some(seq)) = (frame["p"].as_str(), frame["s"].as_u64()) {
                    record.lock().received.push(Received {
                        from: phone.to_owned(),
                        seq,
                        at: start.elapsed(),
                    });
                }
                continue;
            }
            Ok(Some(Ok(Message::Close(Some(frame))))) => {
                End::Close(u16::from(frame.code), frame.reason.to_string())
            }
            Ok(Some(Ok(Message::Close(None)))) => End::Close(1005, String::new()),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(_)) | None) => End::Abrupt,
        };
        record.lock().end = Some((start.elapsed(), end));
        return;
    }
}

/// A phone connection: sends a numbered frame every 100 ms, records the binary's frames.
async fn serve_phone(ctx: &Ctx, ws: Ws, record: Arc<Mutex<ConnRecord>>) {
    let (ws_tx, mut rx) = ws.split();
    let queue = writer(ws_tx);
    let label = record.lock().label.clone();
    let mut frames = tokio::time::interval(FRAME_EVERY);
    let mut seq = 0;
    let mut phase = ctx.phase.clone();
    loop {
        tokio::select! {
            read = read(ctx, &mut rx, &record) => match read {
                Read::Ended => return,
                Read::Alive => {}
                Read::Text(text) => {
                    let frame: Value = serde_json::from_str(&text).unwrap_or_default();
                    if let (Some(binary), Some(n)) = (frame["b"].as_str(), frame["s"].as_u64()) {
                        let at = ctx.now();
                        record.lock().received.push(Received { from: binary.to_owned(), seq: n, at });
                    }
                }
            },
            _ = frames.tick(), if ctx.running() => {
                let frame = json!({"p": label, "s": seq});
                let at = ctx.now();
                if queue.send(Message::Text(frame.to_string().into())).is_ok() {
                    record.lock().sent.push(Sent { to: None, seq, at });
                }
                seq += 1;
            },
            _ = phase.wait_for(|p| *p == Phase::Done) => return,
        }
    }
}
