//! What a [`Link`](super::Link) and its [`Outbound`](super::Outbound)s share, and its four
//! background tasks: the dispatcher (link messages in, in order, to the sinks), the request
//! server, the publisher (one FIFO for every link's messages) and the trouble watcher (losses on
//! connection trouble and on a peer's lost lease).

use super::request::{Incoming, RequestError};
use super::settings::LinkSettings;
use super::state::{Abandoned, LinkState};
use crate::connection::{Nats, Trouble};
use crate::instance::{InstanceId, Owner};
use crate::liveness::{Liveness, PeerEvent};
use crate::metrics::{ClusterMetrics, RequestKind, RequestOutcome};
use crate::wire::{self, LinkId, LinkMessage, Reply, Request};
use async_nats::{RequestErrorKind, Subject};
use bytes::Bytes;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{broadcast, mpsc, oneshot};

/// What the [`Link`](super::Link), its [`Outbound`](super::Outbound)s and its background tasks
/// share: the connection, every live link's state, and the publisher's queue.
pub(super) struct Shared {
    pub(super) nats: Nats,
    pub(super) me: InstanceId,
    pub(super) liveness: Arc<Liveness>,
    pub(super) settings: LinkSettings,
    pub(super) metrics: Arc<ClusterMetrics>,
    pub(super) links: Mutex<HashMap<LinkId, Arc<LinkState>>>,
    /// Register requests the asker gave up on before we activated them: `(asker, its id)`.
    pub(super) abandoned: Mutex<Abandoned>,
    pub(super) next_id: AtomicU64,
    pub(super) publisher: mpsc::UnboundedSender<Outgoing>,
    /// Lost links whose sinks the dispatcher must tell (it alone calls sinks, so a sink sees
    /// its link's messages and its loss in one order).
    pub(super) lost: mpsc::UnboundedSender<Arc<LinkState>>,
    /// Peers whose lease ended, for the dispatcher to lose their links once it has delivered
    /// every message already received from them (a peer that leaves gracefully ends its links
    /// before its lease: those ends must not be overtaken by the loss).
    pub(super) peer_lost: mpsc::UnboundedSender<Owner>,
}

/// What the publisher task sends, in order.
pub(super) enum Outgoing {
    Message {
        subject: Subject,
        body: Bytes,
        /// The link whose budget the message uses, and its cost.
        charge: Option<(Arc<LinkState>, usize)>,
    },
    /// Everything queued before it was handed to the client.
    Marker(oneshot::Sender<()>),
}

impl Shared {
    pub(super) fn new_state(&self, peer: Owner, window: Option<u64>) -> Arc<LinkState> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Arc::new(LinkState {
            epoch: self.liveness.lease_epoch(),
            ..LinkState::new(id, peer, window)
        })
    }

    pub(super) fn enqueue(
        &self,
        subject: Subject,
        body: Bytes,
        charge: Option<(Arc<LinkState>, usize)>,
    ) {
        // The publisher task lives as long as `Shared`; a send error means we are stopping.
        let _ = self.publisher.send(Outgoing::Message {
            subject,
            body,
            charge,
        });
    }

    pub(super) async fn request(
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
    pub(super) fn lose(&self, state: &Arc<LinkState>, tell: bool) {
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

    pub(super) fn lose_where(&self, mut affected: impl FnMut(&LinkState) -> bool) {
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
    pub(super) async fn dispatch(
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
                    match (state.in_order(seq), std::str::from_utf8(&frame)) {
                        (true, Ok(_)) => {
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
                    if !state.in_order(seq) {
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

    pub(super) fn live(&self, link: LinkId) -> Option<Arc<LinkState>> {
        let state = self.links.lock().get(&link).cloned();
        if state.is_none() {
            tracing::debug!(link, "message for a link that is over");
        }
        state
    }

    pub(super) fn abandoned(&self, from: &str, link: LinkId) {
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
            None => abandoned.remember((from, link)),
        }
    }

    pub(super) async fn serve_requests(
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
    pub(super) async fn publish(self: Arc<Self>, mut outgoing: mpsc::UnboundedReceiver<Outgoing>) {
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
            // A frame (the only charged message) queued before this instance's fence deadline
            // but reaching here after it (the process was stopped, the runtime starved; a new
            // lease since does not count) is not sent: its link is lost instead (the peer is
            // told, and the relay fences).
            let stale = |(state, _): &&(Arc<LinkState>, usize)| {
                !self.liveness.within_lease_since(state.epoch)
            };
            if let Some((state, cost)) = charge.as_ref().filter(stale) {
                state.queued.fetch_sub(*cost, Ordering::AcqRel);
                self.lose(state, true);
                continue;
            }
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
    pub(super) async fn watch_trouble(
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
