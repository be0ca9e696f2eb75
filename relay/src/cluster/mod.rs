//! Cluster mode's building blocks: several relay instances act as one through NATS.
//!
//! A relay instance keeps its registry in memory; in cluster mode a binary and its phones may
//! be connected to different instances. The design (issue 10):
//!
//! - **One owner per held id.** The instance where a binary's claim succeeded owns the id: the
//!   binary, its grace window and *all* its phones' registrations live in that instance's
//!   `Registry`. A phone connected elsewhere is registered there as a [`RemotePhone`], a second
//!   [`Conn`](relay_registry::Conn) implementation whose `send` and `close` publish to the
//!   phone's instance.
//! - **The [`Directory`]** (a JetStream KV bucket) maps each held id to its owner: a fresh
//!   claim is an atomic create, a takeover or reclaim a compare-and-set on the revision, a
//!   release a delete only if still ours ([`keys`] encodes any id into a legal key).
//! - **[`Liveness`]**: one entry per instance with a TTL (the lease), refreshed well inside it;
//!   an entry whose owner's lease ended counts as free. Every instance learns at once when
//!   another's lease ends; an instance that cannot refresh fences itself off *before* anyone
//!   may take its ids (the argument, with numbers, is in [`liveness`]).
//! - **The [`Link`]** carries frames and control messages on core NATS subjects addressed to the
//!   instance that must act ([`wire`] has the subjects and the format), numbered per phone and
//!   direction: a gap, a slow consumer, a lost connection or a lost peer closes the affected
//!   phones `1011 relay link lost`, counted in [`ClusterMetrics`], never a silent loss.
//!
//! This module knows nothing of HTTP or WebSockets; the relay wires it in.
//!
//! # Wiring it into the relay
//!
//! ```no_run
//! use relay_server::cluster::*;
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # async fn example() -> Result<(), ClusterError> {
//! let me = InstanceId::generate("web-1");
//! let timeout = Duration::from_secs(2);
//! let nats = Nats::connect("nats://127.0.0.1:4222", &me, timeout, ConnectSettings::default())
//!     .await?;
//! let metrics = Arc::new(ClusterMetrics::default());
//! let liveness = Arc::new(Liveness::start(&nats, me, DEFAULT_LEASE).await?);
//! let directory = Directory::open(&nats, liveness.clone(), timeout, metrics.clone()).await?;
//! let (link, mut incoming) =
//!     Link::start(&nats, liveness.clone(), LinkSettings::default(), metrics.clone()).await?;
//!
//! // A binary claims "srv-1" here, before its 101:
//! match directory.claim("srv-1").await? {
//!     Claim::Claimed(_revision) => { /* claim in the local registry; keep the revision */ }
//!     Claim::Ours(_revision) => { /* the local registry decides, as on one instance */ }
//!     Claim::HeldBy { owner, revision } => {
//!         let probe = Request::Probe { server_id: "srv-1".into() };
//!         match link.request(&owner.instance, &probe).await {
//!             Ok(Reply::Alive) => { /* 4409 */ }
//!             Ok(_) => { /* handover, then directory.move_to_me("srv-1", revision) */ }
//!             Err(_) => { /* 503: no answer is an answer */ }
//!         }
//!     }
//! }
//! // ... and serves the requests addressed to it.
//! while let Some(request) = incoming.recv().await {
//!     request.respond(Reply::NotHeld).await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Start-up (`--cluster URL`): [`Nats::connect`], [`Liveness::start`], [`Directory::open`],
//! [`Link::start`]; serve the [`Incoming`] requests in a task.
//!
//! - **A binary's claim on instance A, before the 101.** [`Directory::claim`]:
//!   [`Claim::Claimed`] → claim in the local registry (the id is ours; keep the revision for the
//!   release); [`Claim::Ours`] → the local registry decides (conflict, reclaim, takeover) as on
//!   one instance; [`Claim::HeldBy`] → [`Request::Probe`] to the owner: [`Reply::Alive`] → 4409;
//!   [`Reply::NotHeld`] or a dead holder → [`Request::Handover`], then on [`Reply::Released`]
//!   or [`Reply::NotHeld`] [`Directory::move_to_me`] with the revision read ([`Move::Stale`] →
//!   claim again). [`RequestError::NoResponders`] means the owner is gone: its lease is about to
//!   end, answer 503 (or retry the claim once it has). A [`ClusterError`] answers 503.
//! - **The owner answering.** [`Request::Probe`]: ping the holder as for a local conflict.
//!   [`Request::Handover`]: end the tenure (takeover: holder 1011, phones 4404; reclaim during
//!   grace: phones 4404), then reply [`Reply::Released`] — it no longer delivers anything for the
//!   id before the claimant's move can succeed. [`Request::Register`]: [`Link::accept`], wrap
//!   the outbound in a [`RemotePhone`], `register_phone` it; on success
//!   [`Accepting::activate`] with a sink that forwards up frames to the ticket's binary (and on
//!   [`Inbound::ended`] / [`Inbound::lost`] drops the ticket and sends the binary the
//!   phone-left notice), then reply [`Reply::Registered`]; on a refusal reply
//!   [`Reply::Refused`] with the error's code.
//! - **A phone on instance P.** [`Directory::lookup`]: [`Lookup::Free`] → 4404;
//!   [`Lookup::Ours`] → the local registry; [`Lookup::Owner`] → [`Link::register`] with a sink
//!   that pushes down frames into the phone's outbox and closes it on
//!   [`Inbound::ended`] (with [`wire::close_from_wire`]) or [`Inbound::lost`] (1011). Up: the
//!   phone task wraps each frame as on one instance and sends it with [`Outbound::frame`]
//!   (waiting for room is backpressure onto the phone); when the phone's socket ends it calls
//!   [`Outbound::end`] with the phone's code (1001 for an abrupt drop).
//! - **A release on the owner** (release, grace expiry): [`Directory::release`] with the
//!   revision of the claim.
//! - **Fencing.** When [`Liveness::state`] turns [`LeaseState::Fenced`] (or the held
//!   incarnation changes), close every connection this instance holds 1012, then
//!   [`Link::lose_all`]; while not [`Liveness::holds_lease`], refuse upgrades with 503 and
//!   deliver nothing. While [`Nats::is_connected`] is false, refuse new upgrades with 503.
//! - **Graceful shutdown.** After the 1001 closes: [`Directory::release`] each owned id (best
//!   effort), then [`Liveness::shutdown`] — deleting the liveness entry alone already makes every
//!   id it owned free at once.

pub mod connection;
pub mod directory;
mod error;
pub mod instance;
pub mod keys;
pub mod link;
pub mod liveness;
pub mod metrics;
pub mod remote;
pub mod wire;

pub use connection::{ConnectSettings, ConnectionState, Nats, Trouble};
pub use directory::{Claim, DIRECTORY_BUCKET, Directory, Lookup, Move, Release, Revision};
pub use error::ClusterError;
pub use instance::{Incarnation, InstanceId, InvalidInstanceId, Owner};
pub use link::{
    Accepting, Inbound, Incoming, Link, LinkSettings, Outbound, Registration, RequestError,
};
pub use liveness::{DEFAULT_LEASE, LIVENESS_BUCKET, LeaseState, LeaseTiming, Liveness, PeerEvent};
pub use metrics::{ClusterMetrics, RequestKind, RequestOutcome};
pub use remote::RemotePhone;
pub use wire::{Reply, Request};
