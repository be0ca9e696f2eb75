//! The owner's side: the requests other instances address to this one, and the frames of the
//! remote phones registered here.
//!
//! - **Register** (a phone on another instance joins an id): the phone becomes a
//!   [`RemotePhone`] in this registry, which decides exactly as for a local phone (4404 without
//!   a binary, 4429 for the 17th phone wherever the others are). Its up frames go to an
//!   [`UpSink`].
//! - **Probe** (a binary on another instance claims an id whose entry names us): decided as a
//!   local conflicting claim would be — no holder, or a gracing one: the tenure ends (phones
//!   4404), the entry is deleted, [`Reply::Released`]; a live holder is pinged: it answers →
//!   [`Reply::Alive`] (the claimant gets 4409); it does not → takeover: the holder 1011
//!   `heartbeat timeout`, its phones 4404, the entry deleted, [`Reply::Released`].
//!
//! # When the binary's outbox is full (the `binary_full` decision)
//!
//! A local phone whose binary's outbox is full waits, unread (backpressure). The link's
//! dispatcher, which delivers every link's frames, must not wait. So a frame that meets a full
//! outbox is **parked** in its link's queue, and a task hands the parked frames on, in order,
//! as room appears; frames arriving meanwhile queue behind them. Nothing is dropped and nothing
//! is closed: the owner grants the phone's instance credit only for frames handed on
//! ([`Outbound::grant`](relay_cluster::link::Outbound::grant)), so after one window (1 MiB) the
//! phone's instance stops reading the phone — the backpressure a local phone gets. A parked
//! queue is thus bounded by the window plus one frame. The phone-left notice queues behind the
//! parked frames, and waits for room as they do (one that meets a full outbox is parked): as on
//! one instance, a notice is never dropped for a full outbox.

use super::{Cluster, end_tenure};
use crate::conn::endpoint::Endpoint;
use crate::hub::{Contest, Hub};
use crate::metrics::{Direction, DropReason};
use parking_lot::Mutex;
use relay_cluster::{
    directory::Revision, link::Inbound, link::Incoming, remote::RemotePhone, wire::Reply,
    wire::Request,
};
use relay_protocol::{CloseReason, SendError};
use relay_registry::{Conn, PhoneTicket};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::{Arc, Weak};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::{Bytes, Utf8Bytes};

/// Serves the requests addressed to this instance until the relay stops.
pub(crate) async fn serve(hub: Arc<Hub>, mut incoming: mpsc::Receiver<Incoming>) {
    while let Some(request) = incoming.recv().await {
        match &request.request {
            Request::Register { .. } => register(&hub, request).await,
            Request::Probe { .. } => {
                // A probe may wait for a ping: never hold up the next request for it.
                tokio::spawn(probe(hub.clone(), request));
            }
        }
    }
}

async fn register(hub: &Arc<Hub>, incoming: Incoming) {
    let Some(cluster) = hub.cluster.joined() else {
        return;
    };
    let epoch = hub.lease_epoch();
    let Request::Register {
        server_id,
        conn_id,
        from,
        link,
    } = &incoming.request
    else {
        return;
    };
    let Ok((accepting, outbound)) = cluster.link.accept(from, *link) else {
        tracing::warn!("malformed register request dropped");
        return;
    };
    let remote = Arc::new(Endpoint::Remote(RemotePhone::new(
        conn_id.clone(),
        outbound,
        cluster.metrics.clone(),
    )));
    let ticket = match hub.registry.register_phone(server_id, remote.clone()) {
        Ok(ticket) => ticket,
        Err(error) => {
            // The unactivated outbound ends without a word when `remote` drops.
            drop(remote);
            incoming
                .respond(Reply::Refused {
                    code: CloseReason::from(error).code(),
                })
                .await;
            return;
        }
    };
    let sink = Arc::new_cyclic(|me| UpSink {
        me: me.clone(),
        hub: hub.clone(),
        remote: remote.clone(),
        state: Mutex::new(UpState {
            ticket: Some(ticket),
            parked: VecDeque::new(),
            draining: false,
        }),
    });
    let id = accepting.id();
    if accepting.activate(sink.clone()).is_err() {
        // The phone's instance gave up on this registration already.
        sink.state.lock().ticket.take();
        return;
    }
    // Past the lease's deadline: fenced at once; the registration is undone and not answered
    // (the asker times out).
    if !hub.may_deliver(epoch) {
        sink.state.lock().ticket.take();
        return;
    }
    tracing::info!(conn = %hub.logs.conn(conn_id), "remote phone joined");
    if hub.shutdown.is_draining() {
        remote.close(CloseReason::ShuttingDown);
    }
    incoming.respond(Reply::Registered { link: id }).await;
}

async fn probe(hub: Arc<Hub>, incoming: Incoming) {
    let Request::Probe {
        server_id,
        revision,
    } = &incoming.request
    else {
        return;
    };
    let epoch = hub.lease_epoch();
    let reply = decide(&hub, server_id, Revision(*revision)).await;
    // Past the lease's deadline (or a fence since the decision began): fenced at once; no
    // answer (the claimant waits for our lease to end, which it has).
    if !hub.may_deliver(epoch) {
        return;
    }
    incoming.respond(reply).await;
}

/// Decides another instance's claim of `server_id`, as for a local conflicting claim.
async fn decide(hub: &Hub, server_id: &str, revision: Revision) -> Reply {
    let Some(cluster) = hub.cluster.joined() else {
        return Reply::Alive;
    };
    for _ in 0..3 {
        let holder = {
            let _lock = cluster.locks.lock(server_id).await;
            match hub.registry.binary_for(server_id) {
                None => {
                    release(cluster, server_id, revision).await;
                    return Reply::Released;
                }
                Some(holder) if holder.as_local().is_none_or(|l| l.ending().is_some()) => {
                    // Gracing: a reclaim from elsewhere (its phones 4404).
                    if end_tenure(&hub.registry, server_id, &holder) {
                        hub.metrics.reclaimed();
                        tracing::info!(server = %hub.logs.server(server_id), "reclaimed from another instance");
                        release(cluster, server_id, revision).await;
                        return Reply::Released;
                    }
                    continue;
                }
                Some(holder) => holder,
            }
        };
        let take_over = async {
            let lock = cluster.locks.lock(server_id).await;
            end_tenure(&hub.registry, server_id, &holder).then_some(lock)
        };
        match hub.contest(&holder, take_over).await {
            Contest::Alive => return Reply::Alive,
            Contest::TookOver(_lock) => {
                tracing::info!(server = %hub.logs.server(server_id), "taken over for another instance");
                release(cluster, server_id, revision).await;
                return Reply::Released;
            }
            Contest::Changed => {}
        }
    }
    Reply::Alive
}

/// Deletes our entry for `server_id` (at our own revision if we know it, else the one the
/// claimant read) and forgets it. Called under the id's lock with the tenure ended.
async fn release(cluster: &Cluster, server_id: &str, read: Revision) {
    let revision = cluster.owned_revision(server_id).unwrap_or(read);
    if let Err(error) = cluster.directory.release(server_id, revision).await {
        tracing::info!(%error, "directory entry not released for a claimant: it retries");
    }
    cluster.disown(server_id, None);
}

/// The owner's sink of one remote phone's link: its frames to the binary, then the notice.
/// See the module docs.
pub(crate) struct UpSink {
    /// Itself, for the task that drains what is parked.
    me: Weak<UpSink>,
    hub: Arc<Hub>,
    remote: Arc<Endpoint>,
    state: Mutex<UpState>,
}

struct UpState {
    /// The phone's registration, until it left.
    ticket: Option<PhoneTicket<Endpoint>>,
    parked: VecDeque<Parked>,
    /// A task hands the parked items on.
    draining: bool,
}

enum Parked {
    Frame(Utf8Bytes),
    /// The phone left with this code.
    Left(u16),
}

impl UpSink {
    fn grant(&self, frame: &Utf8Bytes) {
        if let Some(remote) = self.remote.as_remote() {
            remote.outbound().grant(frame.as_bytes());
        }
    }

    /// Hands `frame` to `binary`; false (nothing done) if its outbox is full.
    fn hand_on(&self, binary: &Endpoint, frame: &Utf8Bytes) -> bool {
        // Past the lease's deadline: fenced at once (the binary is closing 1012, every link is
        // lost); the frame is dropped.
        if !self.hub.may_deliver_for(binary) {
            return true;
        }
        match binary.send(frame.clone()) {
            Ok(()) => self
                .hub
                .metrics
                .forwarded(Direction::PhoneToBinary, frame.len()),
            Err(SendError::Full) => return false,
            // The binary is gone (grace window): nothing more to do with the frame.
            Err(_) => {}
        }
        self.grant(frame);
        true
    }

    /// The notice that the phone left with `code`, if the binary it joined still holds the id;
    /// then the registration ends. `Err` with the notice's length (nothing done) if the
    /// binary's outbox is full.
    fn left(&self, state: &mut UpState, code: u16) -> Result<(), usize> {
        let Some(ticket) = state.ticket.take() else {
            return Ok(());
        };
        if let Some(binary) = ticket
            .binary()
            .filter(|binary| self.hub.may_deliver_for(binary))
        {
            let notice =
                crate::protocol::envelope::Wrapper::new(ticket.conn().conn_id(), None).left(code);
            let len = notice.len();
            if binary.send(Utf8Bytes::from(notice)) == Err(SendError::Full) {
                state.ticket = Some(ticket);
                return Err(len);
            }
        }
        drop(ticket);
        Ok(())
    }

    fn park(&self, state: &mut UpState, item: Parked) {
        state.parked.push_back(item);
        if state.draining {
            return;
        }
        let binary = state.ticket.as_ref().and_then(PhoneTicket::binary);
        let (Some(binary), Some(me)) = (binary, self.me.upgrade()) else {
            // Nothing to wait for: what is parked goes (and is granted) now.
            self.flush_without_binary(state);
            return;
        };
        state.draining = true;
        tokio::spawn(me.drain(binary));
    }

    fn flush_without_binary(&self, state: &mut UpState) {
        while let Some(item) = state.parked.pop_front() {
            match item {
                Parked::Frame(frame) => self.grant(&frame),
                Parked::Left(code) => {
                    // Only when the sink is going away with the binary still there and full.
                    if self.left(state, code).is_err() {
                        self.hub.metrics.dropped(DropReason::BinaryFull);
                        state.ticket.take();
                    }
                }
            }
        }
    }

    /// Hands the parked items on, in order, as room appears in `binary`'s outbox.
    async fn drain(self: Arc<Self>, binary: Arc<Endpoint>) {
        let Some(local) = binary.as_local() else {
            return;
        };
        loop {
            let len = {
                let mut state = self.state.lock();
                loop {
                    match state.parked.front() {
                        None => {
                            state.draining = false;
                            return;
                        }
                        Some(Parked::Left(code)) => {
                            let code = *code;
                            if let Err(len) = self.left(&mut state, code) {
                                break len;
                            }
                            state.parked.pop_front();
                        }
                        Some(Parked::Frame(frame)) => {
                            if !self.hand_on(&binary, frame) {
                                break frame.len();
                            }
                            state.parked.pop_front();
                        }
                    }
                }
            };
            // Ready once the frame fits or the binary is closing (then it is dropped above).
            poll_fn(|cx| local.poll_space(len, cx)).await;
        }
    }
}

impl Inbound for UpSink {
    fn frame(&self, frame: Bytes) {
        // The link checked the UTF-8 already: this never fails.
        let Ok(frame) = Utf8Bytes::try_from(frame) else {
            return self.lost();
        };
        let mut state = self.state.lock();
        if !state.parked.is_empty() || state.draining {
            self.park(&mut state, Parked::Frame(frame));
            return;
        }
        let Some(binary) = state.ticket.as_ref().and_then(PhoneTicket::binary) else {
            self.grant(&frame);
            return;
        };
        if !self.hand_on(&binary, &frame) {
            self.park(&mut state, Parked::Frame(frame));
        }
    }

    fn ended(&self, code: u16, _reason: &str) {
        let mut state = self.state.lock();
        if state.parked.is_empty() && !state.draining && self.left(&mut state, code).is_ok() {
            return;
        }
        self.park(&mut state, Parked::Left(code));
    }

    /// Lost like an abrupt drop: the binary is told the phone left with 1001.
    fn lost(&self) {
        self.ended(1001, "");
    }
}
