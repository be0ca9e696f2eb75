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
//! - a frame reaches the publisher after this instance's own fence deadline, or after a fence
//!   since the link was made (it was queued before, and the process was stopped or its runtime
//!   starved meanwhile): it is not sent
//!   ([`Liveness::within_lease_since`](super::liveness::Liveness::within_lease_since));
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

// The module docs name these as the code does.
#[cfg(doc)]
use {super::connection::Trouble, super::liveness::PeerEvent, relay_protocol::SendError};

mod inbound;
mod outbound;
mod request;
mod settings;
mod shared;
mod state;

pub use inbound::Inbound;
pub use outbound::{Accepting, Outbound};
pub use request::{Incoming, RequestError};
pub use settings::{FRAME_OVERHEAD, LinkSettings};

use shared::{Outgoing, Shared};
use state::{Abandoned, LinkState};

use super::connection::Nats;
use super::error::ClusterError;
use super::instance::{InstanceId, Owner, random_u64};
use super::liveness::Liveness;
use super::metrics::ClusterMetrics;
use super::wire::{self, LinkId, LinkMessage, Reply, Request};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

/// What [`Link::register`] decided.
pub enum Registration {
    /// Registered with the owner: send the phone's frames up with this.
    Registered(Outbound),
    /// The owner refused, with this close code (4404 no server, 4429 phone cap).
    Refused(u16),
}

/// This instance's end of every link, and its requests. Stopping it (drop) ends its tasks.
pub struct Link {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
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
