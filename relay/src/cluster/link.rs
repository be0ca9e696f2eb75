//! [`Link`]: this instance's end of the core NATS links to the other instances — one link per
//! remote phone, ordered streams in both directions, and the requests that decide outcomes.
//!
//! # Links
//!
//! A phone connected to instance P whose server-id is owned by instance O has one link between
//! P and O. Up (P → O) carries the phone's frames, then at most one `End` (the phone left, with
//! its code); down (O → P) carries the binary's frames for the phone, then at most one `End`
//! (close the phone with this code and text). Each end names the link by its own [`LinkId`];
//! every frame and `End` carries the next number of its direction, from 1.
//!
//! # No silent loss, no reordering
//!
//! NATS keeps the order of one connection's messages to one subscriber but may drop them: for a
//! connection that is down, for a slow consumer. So a link is **lost** — its receiving end's
//! [`Inbound::lost`] is called (the relay closes the phone `1011 relay link lost`, or
//! unregisters it), the other end is told with a `Lost` message, and
//! [`ClusterMetrics::link_losses`](super::ClusterMetrics::link_losses) counts it — when:
//!
//! - a message arrives whose number is not the next one (a gap: something was dropped);
//! - this instance's NATS connection drops, or a subscription overflows ([`Trouble`]); then
//!   every link is lost, since anything addressed to us meanwhile may be gone;
//! - the peer instance's lease ends ([`PeerEvent::Lost`]);
//! - the sending end drops its [`Outbound`] without ending it.
//!
//! Nothing after a gap is delivered, so what a sink receives is always a prefix of what was
//! sent, in order.
//!
//! # Sending never blocks
//!
//! [`Outbound::try_frame`] is what a connection's `send` may call: it
//! enqueues into one FIFO drained by this instance's publisher task, or refuses at once. Each
//! link's queued bytes are bounded (each frame costs its length + 64, like a phone's outbox);
//! over the bound it returns [`SendError::Full`]. [`Outbound::frame`] instead waits for room
//! (backpressure onto the phone's socket, for P's phone task). One publisher task for all links
//! keeps every link's messages in the order they were numbered.
//!
//! # Flow control up to the owner
//!
//! The owner hands a remote phone's frames to the binary's outbox, which may be full; the
//! dispatcher must not wait for it (it serves every link), and dropping the frame would be a
//! silent loss. So the up direction is flow-controlled by credit, as a local phone is by the
//! binary's outbox: the phone's instance may have at most [`LinkSettings::window`] bytes sent
//! that the owner has not yet reported handed on ([`Outbound::grant`], reported in batches of a
//! quarter window by an unnumbered `Credit` message carrying the running total); past it,
//! [`Outbound::try_frame`] refuses with [`SendError::Full`] and the phone's task stops reading
//! the phone until credit returns ([`Outbound::poll_space`]). The owner thus never holds more
//! than one window (plus one frame) of a link's frames that it could not hand on yet. A lost
//! `Credit` can only be lost with everything else ([`Trouble`]), which loses the link anyway.
//!
//! # Requests
//!
//! [`Link::request`] sends a [`Request`] to the instance that must decide and waits at most
//! the request timeout: [`RequestError::TimedOut`] and [`RequestError::NoResponders`] are
//! answers, never a hang. [`Link::register`] wraps the register request: on a timeout it tells
//! the owner to drop a registration it may have made, so none is left half-made.

use super::connection::{Nats, Trouble};
use super::error::ClusterError;
use super::instance::{InstanceId, Owner, random_u64};
use super::liveness::{Liveness, PeerEvent};
use super::metrics::{ClusterMetrics, RequestKind, RequestOutcome};
use super::wire::{self, LinkId, LinkMessage, Reply, Request};
use crate::FRAME_OVERHEAD;
use crate::send_error::SendError;
use async_nats::{RequestErrorKind, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::task::AtomicWaker;
use parking_lot::Mutex;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::{Notify, broadcast, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Utf8Bytes;

/// What a link's receiving end does with what arrives, in order.
///
/// Called only from the link's dispatcher task, one call at a time, for every link of this
/// instance, so a sink sees its link's frames, then at most one of `ended` or `lost`, in that
/// order and never anything after. Implementations must not block (enqueue, close,
/// unregister — as a [`Conn`](relay_registry::Conn) would): a blocked sink stalls every link
/// of the instance, and NATS then drops messages (a slow consumer: every link is lost).
pub trait Inbound: Send + Sync + 'static {
    /// The next frame of this link.
    fn frame(&self, frame: Utf8Bytes);
    /// The link's last message: the other end ended it with `code` and `reason` (towards a
    /// phone's instance: close the phone with this, see
    /// [`close_from_wire`](super::wire::close_from_wire); towards the owner: the phone left
    /// with `code`). Nothing follows.
    fn ended(&self, code: u16, reason: &str);
    /// The link is lost: close the phone `1011 relay link lost` (or unregister it). Nothing
    /// follows.
    fn lost(&self);
}

/// The link's settings.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// Bytes a link may have queued for publishing (each frame costs its length + 64) before
    /// [`Outbound::try_frame`] refuses (default 4 MiB, a phone's outbox).
    pub outbox_bytes: usize,
    /// How long a request waits for its reply.
    pub request_timeout: Duration,
    /// Bytes of up frames (each costing its length + 64) a phone's instance may have sent that
    /// the owner has not yet handed on to the binary (default 1 MiB); past it the phone waits.
    /// Every instance of a cluster must use the same window.
    pub window: usize,
}

impl Default for LinkSettings {
    fn default() -> Self {
        LinkSettings {
            outbox_bytes: 4 * 1024 * 1024,
            request_timeout: Duration::from_secs(5),
            window: 1024 * 1024,
        }
    }
}

/// Why a request got no reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// No reply within the request timeout.
    #[error("cluster request timed out")]
    TimedOut,
    /// Nobody listens on the instance's subject: it is gone.
    #[error("no instance answers on that subject")]
    NoResponders,
    /// This instance does not hold its lease; it must not ask anything.
    #[error("this instance does not hold its cluster lease")]
    NotLeased,
    /// NATS failed the request, or the reply was not one.
    #[error("cluster request failed: {0}")]
    Failed(String),
}

/// What [`Link::register`] decided.
pub enum Registration {
    /// Registered with the owner: send the phone's frames up with this.
    Registered(Outbound),
    /// The owner refused, with this close code (4404 no server, 4429 phone cap).
    Refused(u16),
}

/// A request that arrived for this instance, to be answered with [`respond`](Self::respond).
pub struct Incoming {
    /// What is asked.
    pub request: Request,
    reply_to: Option<Subject>,
    client: async_nats::Client,
}

impl Incoming {
    /// Sends `reply` to the asker (if it still waits; a reply after its timeout is dropped by
    /// NATS). Not answering at all lets the asker time out.
    pub async fn respond(self, reply: Reply) {
        if let Some(to) = self.reply_to {
            let _ = self.client.publish(to, wire::encode_reply(&reply)).await;
        }
    }
}

/// This instance's end of every link, and its requests. Stopping it (drop) ends its tasks.
pub struct Link {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

struct Shared {
    nats: Nats,
    me: InstanceId,
    liveness: Arc<Liveness>,
    settings: LinkSettings,
    metrics: Arc<ClusterMetrics>,
    links: Mutex<HashMap<LinkId, Arc<LinkState>>>,
    /// Register requests the asker gave up on before we activated them: `(asker, its id)`.
    abandoned: Mutex<Abandoned>,
    next_id: AtomicU64,
    publisher: mpsc::UnboundedSender<Outgoing>,
    /// Lost links whose sinks the dispatcher must tell (it alone calls sinks, so a sink sees
    /// its link's messages and its loss in one order).
    lost: mpsc::UnboundedSender<Arc<LinkState>>,
    /// Peers whose lease ended, for the dispatcher to lose their links once it has delivered
    /// every message already received from them (a peer that leaves gracefully ends its links
    /// before its lease: those ends must not be overtaken by the loss).
    peer_lost: mpsc::UnboundedSender<Owner>,
}

#[derive(Default)]
struct Abandoned {
    set: HashSet<(InstanceId, LinkId)>,
    order: VecDeque<(InstanceId, LinkId)>,
}

/// How many abandoned registrations are remembered (oldest forgotten first).
const ABANDONED_MEMORY: usize = 4096;

/// One link, as both its ends at this instance see it.
struct LinkState {
    id: LinkId,
    peer: Owner,
    /// The peer's id for the link, once known.
    remote: OnceLock<LinkId>,
    subject: Subject,
    /// Taken (dropped) once the link is over at this end: a sink may own what owns this
    /// state (the owner's sink owns the registry ticket of the remote phone whose `Conn` owns
    /// the outbound), so keeping it would be a reference cycle.
    sink: Mutex<Option<Arc<dyn Inbound>>>,
    /// A sink was given (an owner's outbound without one was never activated).
    activated: AtomicBool,
    /// Next expected number of the receiving direction.
    recv_next: AtomicU64,
    send: Mutex<SendState>,
    queued: AtomicUsize,
    space: Notify,
    /// The one task that polls for space ([`Outbound::poll_space`]).
    space_waker: AtomicWaker,
    /// The credit window of the sending direction (at a phone's instance), if any.
    window: Option<u64>,
    /// Cost of the frames sent in this direction so far.
    sent_cost: AtomicU64,
    /// Cost of those the peer reported handed on.
    acked_cost: AtomicU64,
    /// Receiving direction: cost handed on so far, and the part of it already reported.
    granted: Mutex<(u64, u64)>,
    /// Torn down (ended, lost): nothing more is sent or delivered.
    over: AtomicBool,
}

impl LinkState {
    fn sink(&self) -> Option<Arc<dyn Inbound>> {
        self.sink.lock().clone()
    }

    fn set_sink(&self, sink: Arc<dyn Inbound>) {
        *self.sink.lock() = Some(sink);
        self.activated.store(true, Ordering::Release);
    }

    fn take_sink(&self) -> Option<Arc<dyn Inbound>> {
        self.sink.lock().take()
    }

    /// Wakes whoever waits for room to send.
    fn wake_senders(&self) {
        self.space.notify_waiters();
        self.space_waker.wake();
    }

    /// Whether a frame costing `cost` may be sent now (queue bound and credit window).
    fn fits(&self, cost: usize, bound: usize) -> bool {
        let queued = self.queued.load(Ordering::Acquire);
        if queued > 0 && queued + cost > bound {
            return false;
        }
        match self.window {
            Some(window) => {
                let sent = self.sent_cost.load(Ordering::Acquire);
                let acked = self.acked_cost.load(Ordering::Acquire);
                sent.saturating_sub(acked) < window
            }
            None => true,
        }
    }
}

struct SendState {
    next: u64,
    ended: bool,
}

enum Outgoing {
    Message {
        subject: Subject,
        body: Bytes,
        /// The link whose budget the message uses, and its cost.
        charge: Option<(Arc<LinkState>, usize)>,
    },
    /// Everything queued before it was handed to the client.
    Marker(oneshot::Sender<()>),
}

impl Link {
    /// Starts this instance's link: subscribes to its link and request subjects, and watches
    /// its connection's [`Trouble`] and its peers' liveness. Returns the link and the stream of
    /// requests addressed to this instance (answer each with [`Incoming::respond`]; at most
    /// 1,024 wait, further ones are dropped and their askers time out).
    ///
    /// Returns once the server has both subscriptions in place ([`Nats::sync`]).
    ///
    /// # Errors
    ///
    /// A NATS error if a subscription fails; [`ClusterError::TimedOut`] if the server does not
    /// confirm them within the request timeout.
    pub async fn start(
        nats: &Nats,
        liveness: Arc<Liveness>,
        settings: LinkSettings,
        metrics: Arc<ClusterMetrics>,
    ) -> Result<(Link, mpsc::Receiver<Incoming>), ClusterError> {
        let me = liveness.instance().clone();
        let client = nats.client();
        let links = client
            .subscribe(wire::link_subject(me.as_str()))
            .await
            .map_err(ClusterError::nats)?;
        let requests = client
            .subscribe(wire::rpc_subject(me.as_str()))
            .await
            .map_err(ClusterError::nats)?;
        // Nobody may be told where to send before the server has these subscriptions.
        nats.sync(settings.request_timeout).await?;
        let (publisher, outgoing) = mpsc::unbounded_channel();
        let (lost, lost_rx) = mpsc::unbounded_channel();
        let (peer_lost, peer_lost_rx) = mpsc::unbounded_channel();
        let (incoming_tx, incoming) = mpsc::channel(1024);
        let trouble = nats.trouble();
        let peers = liveness.peers();
        let shared = Arc::new(Shared {
            nats: nats.clone(),
            me,
            liveness,
            settings,
            metrics,
            links: Mutex::new(HashMap::new()),
            abandoned: Mutex::new(Abandoned::default()),
            // Random start: a restarted instance's ids do not meet late messages for the old.
            next_id: AtomicU64::new(random_u64() >> 1),
            publisher,
            lost,
            peer_lost,
        });
        let tasks = vec![
            tokio::spawn(shared.clone().dispatch(links, lost_rx, peer_lost_rx)),
            tokio::spawn(shared.clone().serve_requests(requests, incoming_tx)),
            tokio::spawn(shared.clone().publish(outgoing)),
            tokio::spawn(shared.clone().watch_trouble(trouble, peers)),
        ];
        Ok((Link { shared, tasks }, incoming))
    }

    /// Sends `request` to `to` and waits for its reply, at most the request timeout.
    ///
    /// # Errors
    ///
    /// [`RequestError::TimedOut`], [`RequestError::NoResponders`] (nobody listens: the instance
    /// is gone), [`RequestError::Failed`].
    pub async fn request(&self, to: &InstanceId, request: &Request) -> Result<Reply, RequestError> {
        let timeout = self.shared.settings.request_timeout;
        self.shared.request(to, request, timeout).await
    }

    /// As [`request`](Self::request), but waiting at most `timeout` (a probe, which waits for
    /// the owner's own ping of its binary, needs longer than the request timeout).
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request).
    pub async fn request_within(
        &self,
        to: &InstanceId,
        request: &Request,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        self.shared.request(to, request, timeout).await
    }

    /// Waits until every message queued so far (frames, ends, losses) was handed to NATS and
    /// the server processed it ([`Nats::sync`]): what graceful shutdown does before it lets
    /// go of the connection.
    ///
    /// # Errors
    ///
    /// [`ClusterError::TimedOut`] after `limit`, or a NATS error.
    pub async fn flush(&self, limit: Duration) -> Result<(), ClusterError> {
        let (done, handed) = oneshot::channel();
        let _ = self.shared.publisher.send(Outgoing::Marker(done));
        let started = tokio::time::Instant::now();
        tokio::time::timeout(limit, handed)
            .await
            .map_err(|_| ClusterError::TimedOut)?
            .map_err(|_| ClusterError::Nats("the link stopped".into()))?;
        let left = limit.saturating_sub(started.elapsed());
        self.shared.nats.sync(left).await
    }

    /// Registers a phone connected here (conn-id `conn_id`, joining `server_id`) with `owner`,
    /// the instance whose directory entry holds the id. `sink` receives what the owner sends
    /// down (frames from the binary, then its close), from before the request is sent.
    ///
    /// # Errors
    ///
    /// As [`request`](Self::request). On any failure but [`RequestError::NoResponders`] — and
    /// when this future is dropped before it completes — the owner is told to drop whatever it
    /// registered for this request.
    pub async fn register(
        &self,
        owner: &Owner,
        server_id: &str,
        conn_id: &str,
        sink: Arc<dyn Inbound>,
    ) -> Result<Registration, RequestError> {
        let from = self
            .shared
            .liveness
            .owner()
            .ok_or(RequestError::NotLeased)?;
        let state = self
            .shared
            .new_state(owner.clone(), Some(self.shared.settings.window as u64));
        state.set_sink(sink);
        self.shared.links.lock().insert(state.id, state.clone());
        // Undoes the registration unless it completes, also when this future is dropped
        // half-way (the caller was cancelled).
        let mut pending = Pending {
            shared: &self.shared,
            state: &state,
            abandon: true,
        };
        let request = Request::Register {
            server_id: server_id.to_owned(),
            conn_id: conn_id.to_owned(),
            from: from.encode(),
            link: state.id,
        };
        let timeout = self.shared.settings.request_timeout;
        let reply = self
            .shared
            .request(&owner.instance, &request, timeout)
            .await;
        match reply {
            Ok(Reply::Registered { link }) => {
                state.remote.set(link).ok();
                drop(pending);
                Ok(Registration::Registered(Outbound {
                    shared: self.shared.clone(),
                    state,
                }))
            }
            // A clear answer, or nobody there: the owner registered nothing.
            Ok(Reply::Refused { code }) => {
                pending.abandon = false;
                Ok(Registration::Refused(code))
            }
            Err(RequestError::NoResponders) => {
                pending.abandon = false;
                Err(RequestError::NoResponders)
            }
            // Anything else: the owner may have registered the phone; `pending` tells it to
            // drop that registration.
            Ok(reply) => Err(RequestError::Failed(format!("unexpected reply {reply:?}"))),
            Err(error) => Err(error),
        }
    }

    /// The owner's side of a register request from `peer` (the request's `from`), which named
    /// the link `remote`: allocates this end's id and returns the down direction's
    /// [`Outbound`] (for the registry's remote-phone `Conn`). Nothing reaches a sink until
    /// [`Accepting::activate`]; reply [`Reply::Registered`] with [`Accepting::id`] after it.
    ///
    /// # Errors
    ///
    /// [`RequestError::Failed`] if `peer` is not an owner's encoding (a malformed request).
    pub fn accept(
        &self,
        peer: &str,
        remote: LinkId,
    ) -> Result<(Accepting, Outbound), RequestError> {
        let peer = Owner::decode(peer.as_bytes())
            .ok_or_else(|| RequestError::Failed("malformed peer".into()))?;
        let state = self.shared.new_state(peer, None);
        state.remote.set(remote).ok();
        let outbound = Outbound {
            shared: self.shared.clone(),
            state: state.clone(),
        };
        let accepting = Accepting {
            shared: self.shared.clone(),
            state,
        };
        Ok((accepting, outbound))
    }

    /// Loses every link (the relay calls it when this instance fenced itself, after closing
    /// its own connections 1012).
    pub fn lose_all(&self) {
        self.shared.lose_where(|_| true);
    }

    /// Links currently open at this instance (both ends' kinds).
    pub fn open_links(&self) -> usize {
        self.shared.links.lock().len()
    }

    /// Stops the link's tasks (as dropping it does): nothing more is received or published.
    pub fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// A register request in flight: unless it completed (the link knows its remote id), removes
/// its link and, if `abandon`, tells the owner to drop whatever it registered.
struct Pending<'a> {
    shared: &'a Arc<Shared>,
    state: &'a Arc<LinkState>,
    abandon: bool,
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if self.state.remote.get().is_some() {
            return;
        }
        self.shared.links.lock().remove(&self.state.id);
        self.state.over.store(true, Ordering::Release);
        self.state.send.lock().ended = true;
        if self.abandon {
            let message = LinkMessage::Abandoned {
                from: self.shared.me.as_str(),
                link: self.state.id,
            };
            let body = wire::encode_link(&message, b"");
            self.shared.enqueue(self.state.subject.clone(), body, None);
        }
    }
}

/// An accepted register request, before the registration is made ([`Link::accept`]).
pub struct Accepting {
    shared: Arc<Shared>,
    state: Arc<LinkState>,
}

impl Accepting {
    /// This end's id for the link: what [`Reply::Registered`] must carry.
    pub fn id(&self) -> LinkId {
        self.state.id
    }

    /// Starts delivering up messages to `sink` (unless the down direction was already ended:
    /// then there is nothing to deliver).
    ///
    /// # Errors
    ///
    /// [`RequestError::TimedOut`] if the asker already gave up on this registration (its
    /// `Abandoned` arrived first): undo the registration and do not reply.
    pub fn activate(self, sink: Arc<dyn Inbound>) -> Result<(), RequestError> {
        let key = (
            self.state.peer.instance.clone(),
            *self.state.remote.get().expect("set at accept"),
        );
        {
            // Lock order: `abandoned`, then `links` (as in `Shared::abandoned`).
            let mut abandoned = self.shared.abandoned.lock();
            if abandoned.set.remove(&key) {
                self.state.over.store(true, Ordering::Release);
                return Err(RequestError::TimedOut);
            }
            self.state.set_sink(sink);
            if self.state.over.load(Ordering::Acquire) {
                drop(self.state.take_sink());
                // Ended before it began (the registry evicted the phone already; its close is
                // on its way to the asker): nothing will arrive for it.
                return Ok(());
            }
            self.shared
                .links
                .lock()
                .insert(self.state.id, self.state.clone());
        }
        Ok(())
    }
}

/// One direction of a link, from this end: frames, then at most one end. Not `Clone`: its
/// owner is the one sender of the direction.
///
/// Dropping it without [`end`](Self::end) loses the link (the other end is told) — except an
/// owner's outbound from [`Link::accept`] that was never activated (a refused registration),
/// which ends silently: the asker learns the refusal from the reply.
pub struct Outbound {
    shared: Arc<Shared>,
    state: Arc<LinkState>,
}

impl Outbound {
    /// Enqueues `frame` as the next message of this direction. Never blocks.
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the link is ended or lost; [`SendError::Full`] when the link
    /// has more than its bound queued (the frame is not sent, and nothing is numbered for it).
    pub fn try_frame(&self, frame: &Utf8Bytes) -> Result<(), SendError> {
        let cost = frame.len() + FRAME_OVERHEAD;
        let mut send = self.state.send.lock();
        if send.ended || self.state.over.load(Ordering::Acquire) {
            return Err(SendError::Closed);
        }
        if !self.state.fits(cost, self.shared.settings.outbox_bytes) {
            return Err(SendError::Full);
        }
        self.state
            .sent_cost
            .fetch_add(cost as u64, Ordering::AcqRel);
        let remote = *self
            .state
            .remote
            .get()
            .expect("an outbound knows its remote id");
        let message = LinkMessage::Frame {
            link: remote,
            seq: send.next,
        };
        send.next += 1;
        self.state.queued.fetch_add(cost, Ordering::AcqRel);
        let body = wire::encode_link(&message, frame.as_bytes());
        self.shared.enqueue(
            self.state.subject.clone(),
            body,
            Some((self.state.clone(), cost)),
        );
        Ok(())
    }

    /// Ready once a frame of `len` bytes may be sent ([`try_frame`](Self::try_frame) would not
    /// refuse it as full), or once the link is over; otherwise the task is woken when that may
    /// have changed. One task at a time may poll (the phone's own).
    pub fn poll_space(&self, len: usize, cx: &mut Context<'_>) -> Poll<()> {
        self.state.space_waker.register(cx.waker());
        let over = self.state.over.load(Ordering::Acquire) || self.state.send.lock().ended;
        if over
            || self
                .state
                .fits(len + FRAME_OVERHEAD, self.shared.settings.outbox_bytes)
        {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }

    /// Tells the other end that `frame`, one it sent on this link, was handed on (the owner
    /// calls it once the binary's outbox took the frame), giving back its window credit.
    /// Reported in batches of a quarter window. Never blocks.
    pub fn grant(&self, frame: &Utf8Bytes) {
        let cost = (frame.len() + FRAME_OVERHEAD) as u64;
        let batch = (self.shared.settings.window as u64 / 4).max(1);
        let report = {
            let mut granted = self.state.granted.lock();
            granted.0 += cost;
            (granted.0 - granted.1 >= batch).then(|| {
                granted.1 = granted.0;
                granted.0
            })
        };
        let (Some(consumed), Some(&remote)) = (report, self.state.remote.get()) else {
            return;
        };
        if self.state.over.load(Ordering::Acquire) {
            return;
        }
        let message = LinkMessage::Credit {
            link: remote,
            consumed,
        };
        self.shared.enqueue(
            self.state.subject.clone(),
            wire::encode_link(&message, b""),
            None,
        );
    }

    /// Sends `frame`, waiting while the link's queue is over its bound (backpressure).
    ///
    /// # Errors
    ///
    /// [`SendError::Closed`] once the link is ended or lost.
    pub async fn frame(&self, frame: &Utf8Bytes) -> Result<(), SendError> {
        loop {
            let space = self.state.space.notified();
            match self.try_frame(frame) {
                Err(SendError::Full) => space.await,
                other => return other,
            }
        }
    }

    /// Ends this direction with `code` and `reason`, after every frame already enqueued. The
    /// link is over at this end. Idempotent.
    pub fn end(&self, code: u16, reason: &str) {
        let mut send = self.state.send.lock();
        if send.ended || self.state.over.swap(true, Ordering::AcqRel) {
            send.ended = true;
            return;
        }
        send.ended = true;
        let message = LinkMessage::End {
            link: *self
                .state
                .remote
                .get()
                .expect("an outbound knows its remote id"),
            seq: send.next,
            code,
            reason,
        };
        send.next += 1;
        self.shared.enqueue(
            self.state.subject.clone(),
            wire::encode_link(&message, b""),
            None,
        );
        drop(send);
        self.shared.links.lock().remove(&self.state.id);
        self.state.wake_senders();
        // Over at this end: nothing will reach the sink any more.
        drop(self.state.take_sink());
    }

    /// Whether the link is still open at this end.
    pub fn is_open(&self) -> bool {
        !self.state.over.load(Ordering::Acquire)
    }

    /// The instance at the other end.
    pub fn peer(&self) -> &Owner {
        &self.state.peer
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        let mut send = self.state.send.lock();
        if send.ended {
            return;
        }
        if !self.state.activated.load(Ordering::Acquire) {
            // An owner's outbound whose registration was refused and never activated: the
            // asker learns the refusal from the reply, so the link ends without a word.
            send.ended = true;
            self.state.over.store(true, Ordering::Release);
            return;
        }
        drop(send);
        self.shared.lose(&self.state, true);
    }
}

impl Shared {
    fn new_state(&self, peer: Owner, window: Option<u64>) -> Arc<LinkState> {
        let subject = Subject::from(wire::link_subject(peer.instance.as_str()));
        Arc::new(LinkState {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            peer,
            remote: OnceLock::new(),
            subject,
            sink: Mutex::new(None),
            activated: AtomicBool::new(false),
            recv_next: AtomicU64::new(1),
            send: Mutex::new(SendState {
                next: 1,
                ended: false,
            }),
            queued: AtomicUsize::new(0),
            space: Notify::new(),
            space_waker: AtomicWaker::new(),
            window,
            sent_cost: AtomicU64::new(0),
            acked_cost: AtomicU64::new(0),
            granted: Mutex::new((0, 0)),
            over: AtomicBool::new(false),
        })
    }

    fn enqueue(&self, subject: Subject, body: Bytes, charge: Option<(Arc<LinkState>, usize)>) {
        // The publisher task lives as long as `Shared`; a send error means we are stopping.
        let _ = self.publisher.send(Outgoing::Message {
            subject,
            body,
            charge,
        });
    }

    async fn request(
        &self,
        to: &InstanceId,
        request: &Request,
        timeout: Duration,
    ) -> Result<Reply, RequestError> {
        let kind = match request {
            Request::Register { .. } => RequestKind::Register,
            Request::Probe { .. } => RequestKind::Probe,
        };
        let asking = self.nats.client().send_request(
            wire::rpc_subject(to.as_str()),
            async_nats::Request::new()
                .payload(wire::encode_request(request))
                .timeout(Some(timeout)),
        );
        // The client's own timeout starts once the request is written; this one bounds the
        // whole call, including waiting for a disconnected client.
        let result = match tokio::time::timeout(timeout, asking).await {
            Err(_) => Err(RequestError::TimedOut),
            Ok(Err(error)) => Err(match error.kind() {
                RequestErrorKind::TimedOut => RequestError::TimedOut,
                RequestErrorKind::NoResponders => RequestError::NoResponders,
                _ => RequestError::Failed(error.to_string()),
            }),
            Ok(Ok(message)) => wire::decode_reply(&message.payload)
                .map_err(|error| RequestError::Failed(error.to_string())),
        };
        let outcome = match &result {
            Ok(_) => RequestOutcome::Answered,
            Err(RequestError::TimedOut) => RequestOutcome::TimedOut,
            Err(RequestError::NoResponders) => RequestOutcome::NoResponders,
            Err(_) => RequestOutcome::Failed,
        };
        self.metrics.request(kind, outcome);
        result
    }

    /// Tears `state` down as lost (once): tells the peer if `tell` and the peer's id is known,
    /// and has the dispatcher tell the sink (after whatever it is delivering now; nothing of
    /// the link is delivered after that).
    fn lose(&self, state: &Arc<LinkState>, tell: bool) {
        if state.over.swap(true, Ordering::AcqRel) {
            return;
        }
        self.links.lock().remove(&state.id);
        state.send.lock().ended = true;
        state.wake_senders();
        self.metrics.link_lost();
        if let (true, Some(&remote)) = (tell, state.remote.get()) {
            let message = LinkMessage::Lost { link: remote };
            self.enqueue(
                state.subject.clone(),
                wire::encode_link(&message, b""),
                None,
            );
        }
        if state.activated.load(Ordering::Acquire) {
            let _ = self.lost.send(state.clone());
        }
    }

    fn lose_where(&self, mut affected: impl FnMut(&LinkState) -> bool) {
        let lost: Vec<Arc<LinkState>> = self
            .links
            .lock()
            .values()
            .filter(|state| affected(state))
            .cloned()
            .collect();
        for state in lost {
            self.lose(&state, true);
        }
    }

    /// Delivers every message of `relay.<me>.link` to its link, checking numbers, and tells
    /// sinks of lost links. The only caller of sinks.
    async fn dispatch(
        self: Arc<Self>,
        mut messages: async_nats::Subscriber,
        mut lost: mpsc::UnboundedReceiver<Arc<LinkState>>,
        mut peer_lost: mpsc::UnboundedReceiver<Owner>,
    ) {
        loop {
            // Messages before a peer's loss: what it sent before its lease ended (its
            // graceful ends) was read from the socket before the lease's end was, so it is
            // already queued here when the loss arrives.
            let message = tokio::select! {
                biased;
                Some(state) = lost.recv() => {
                    if let Some(sink) = state.take_sink() {
                        sink.lost();
                    }
                    continue;
                }
                message = messages.next() => match message {
                    Some(message) => message,
                    None => return,
                },
                Some(owner) = peer_lost.recv() => {
                    self.lose_where(|state| state.peer == owner);
                    continue;
                }
            };
            let Ok((header, frame)) = wire::decode_link(&message.payload) else {
                tracing::warn!("malformed link message dropped");
                continue;
            };
            match header {
                LinkMessage::Frame { link, seq } => {
                    let Some(state) = self.live(link) else {
                        continue;
                    };
                    match (self.in_order(&state, seq), Utf8Bytes::try_from(frame)) {
                        (true, Ok(frame)) => {
                            // Lost meanwhile (another task): its sink hears of it next.
                            if state.over.load(Ordering::Acquire) {
                                continue;
                            }
                            if let Some(sink) = state.sink() {
                                sink.frame(frame);
                            }
                        }
                        _ => self.lose(&state, true),
                    }
                }
                LinkMessage::End {
                    link,
                    seq,
                    code,
                    reason,
                } => {
                    let Some(state) = self.live(link) else {
                        continue;
                    };
                    if !self.in_order(&state, seq) {
                        self.lose(&state, true);
                        continue;
                    }
                    if state.over.swap(true, Ordering::AcqRel) {
                        continue;
                    }
                    self.links.lock().remove(&state.id);
                    state.send.lock().ended = true;
                    state.wake_senders();
                    if let Some(sink) = state.take_sink() {
                        sink.ended(code, reason);
                    }
                }
                LinkMessage::Lost { link } => {
                    if let Some(state) = self.live(link) {
                        self.lose(&state, false);
                    }
                }
                LinkMessage::Abandoned { from, link } => self.abandoned(from, link),
                LinkMessage::Credit { link, consumed } => {
                    if let Some(state) = self.live(link) {
                        state.acked_cost.fetch_max(consumed, Ordering::AcqRel);
                        state.wake_senders();
                    }
                }
            }
        }
    }

    fn live(&self, link: LinkId) -> Option<Arc<LinkState>> {
        let state = self.links.lock().get(&link).cloned();
        if state.is_none() {
            tracing::debug!(link, "message for a link that is over");
        }
        state
    }

    /// Whether `seq` is the next number of `state`'s receiving direction (then moves it on).
    fn in_order(&self, state: &LinkState, seq: u64) -> bool {
        let expected = state.recv_next.load(Ordering::Acquire);
        if seq != expected {
            tracing::warn!(
                link = state.id,
                expected,
                got = seq,
                "cluster link gap: link lost"
            );
            return false;
        }
        state.recv_next.store(expected + 1, Ordering::Release);
        true
    }

    fn abandoned(&self, from: &str, link: LinkId) {
        let Ok(from) = InstanceId::new(from) else {
            return;
        };
        // Lock order: `abandoned`, then `links` (as in `Accepting::activate`), so an activation
        // either sees this record or is seen by this search.
        let mut abandoned = self.abandoned.lock();
        let found = self
            .links
            .lock()
            .values()
            .find(|state| state.peer.instance == from && state.remote.get() == Some(&link))
            .cloned();
        match found {
            Some(state) => {
                drop(abandoned);
                self.lose(&state, false);
            }
            None => {
                if abandoned.set.insert((from.clone(), link)) {
                    abandoned.order.push_back((from, link));
                    if abandoned.order.len() > ABANDONED_MEMORY {
                        if let Some(old) = abandoned.order.pop_front() {
                            abandoned.set.remove(&old);
                        }
                    }
                }
            }
        }
    }

    async fn serve_requests(
        self: Arc<Self>,
        mut requests: async_nats::Subscriber,
        incoming: mpsc::Sender<Incoming>,
    ) {
        while let Some(message) = requests.next().await {
            let Ok(request) = wire::decode_request(&message.payload) else {
                tracing::warn!("malformed cluster request dropped");
                continue;
            };
            let incoming_request = Incoming {
                request,
                reply_to: message.reply,
                client: self.nats.client().clone(),
            };
            if incoming.try_send(incoming_request).is_err() {
                tracing::warn!("cluster request queue full: request dropped, its asker times out");
            }
        }
    }

    /// Publishes every queued message in order, releasing each link's budget as it goes.
    async fn publish(self: Arc<Self>, mut outgoing: mpsc::UnboundedReceiver<Outgoing>) {
        let client = self.nats.client().clone();
        while let Some(message) = outgoing.recv().await {
            let (subject, body, charge) = match message {
                Outgoing::Message {
                    subject,
                    body,
                    charge,
                } => (subject, body, charge),
                Outgoing::Marker(done) => {
                    let _ = done.send(());
                    continue;
                }
            };
            let published = client.publish(subject, body).await;
            if let Some((state, cost)) = charge {
                state.queued.fetch_sub(cost, Ordering::AcqRel);
                state.wake_senders();
                if published.is_err() {
                    self.lose(&state, false);
                }
            }
        }
    }

    /// Loses links on connection trouble (all of them) and on a peer's lost lease (its own).
    async fn watch_trouble(
        self: Arc<Self>,
        mut trouble: broadcast::Receiver<Trouble>,
        mut peers: broadcast::Receiver<PeerEvent>,
    ) {
        loop {
            tokio::select! {
                event = trouble.recv() => match event {
                    Ok(trouble) => {
                        tracing::warn!(?trouble, "cluster messages may have been lost: every link is lost");
                        self.lose_where(|_| true);
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.lose_where(|_| true),
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                event = peers.recv() => match event {
                    Ok(PeerEvent::Lost(owner)) => {
                        let _ = self.peer_lost.send(owner);
                    }
                    Ok(PeerEvent::Alive(_)) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let alive = self.liveness.live_peers();
                        self.lose_where(|state| !alive.contains(&state.peer));
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }
}
