//! Cluster mode's building blocks: several relay instances act as one through NATS.
//!
//! A relay instance keeps its registry in memory; in cluster mode a binary and its phones may
//! be connected to different instances. The design (issue 10):
//!
//! - **One owner per held id.** The instance where a binary's claim succeeded owns the id: the
//!   binary, its grace window and *all* its phones' registrations live in that instance's
//!   `Registry`. A phone connected elsewhere is registered there as a [`RemotePhone`] (the
//!   second kind of the relay's connection type), whose `send` and `close` publish to the
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
//! use relay_cluster::ClusterError;
//! use relay_cluster::connection::{ConnectSettings, Nats};
//! use relay_cluster::directory::{Claim, Directory};
//! use relay_cluster::instance::InstanceId;
//! use relay_cluster::link::{Link, LinkSettings};
//! use relay_cluster::liveness::{DEFAULT_LEASE, Liveness};
//! use relay_cluster::metrics::ClusterMetrics;
//! use relay_cluster::wire::{Reply, Request};
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
//!         let probe = Request::Probe { server_id: "srv-1".into(), revision: revision.0 };
//!         match link.request(&owner.instance, &probe).await {
//!             Ok(Reply::Alive) => { /* 4409 */ }
//!             Ok(_) => { /* the owner let go and deleted its entry: claim again */ }
//!             Err(_) => { /* no answer is an answer: wait for its lease to end */ }
//!         }
//!     }
//! }
//! // ... and serves the requests addressed to it.
//! while let Some(request) = incoming.recv().await {
//!     request.respond(Reply::Released).await;
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Start-up (`--cluster URL[,URL…]`): [`Nats::connect`] (with
//! [`ConnectSettings::bucket_replicas`] for `--cluster-replicas`), [`Liveness::start`],
//! [`Directory::open`], [`Link::start`]; serve the [`Incoming`] requests in a task. Any step
//! may fail while NATS is unreachable or JetStream has no leader yet: the relay tries again
//! with backoff, serving 503 meanwhile. The relay's wiring (its
//! `cluster` module) does the rest:
//!
//! - **A binary's claim on instance A, before the 101.** [`Directory::claim`]:
//!   [`Claim::Claimed`] → claim in the local registry (keep the revision for the release);
//!   [`Claim::Ours`] → the local registry decides (conflict, reclaim, takeover) as on one
//!   instance; [`Claim::HeldBy`] → still before the upgrade, [`Request::Probe`] to the owner
//!   (all of it within the probe timeout plus the request timeout): [`Reply::Alive`] → 4409
//!   once upgraded; [`Reply::Released`] → claim again (the owner deleted its entry: the create
//!   wins or meets a newer owner). An owner that does not answer is waited for until its lease
//!   ends, within that bound; past it the upgrade is refused 503 with `Retry-After`.
//! - **The owner answering a probe**: as for a local conflicting claim — no holder or a gracing
//!   one: end the tenure (phones 4404), delete the entry, [`Reply::Released`]; a live holder:
//!   ping it; it answers → [`Reply::Alive`]; it does not → takeover (holder 1011, phones 4404),
//!   delete the entry, [`Reply::Released`]. [`Request::Register`]: [`Link::accept`], wrap the
//!   outbound in a [`RemotePhone`], `register_phone` it; on success [`Accepting::activate`]
//!   with a sink that hands the up frames to the binary (granting credit,
//!   [`Outbound::grant`]), then reply [`Reply::Registered`]; on a refusal [`Reply::Refused`].
//! - **A phone on instance P.** [`Directory::lookup`]: [`Lookup::Free`] → 4404;
//!   [`Lookup::Ours`] → the local registry; [`Lookup::Owner`] → [`Link::register`] with a sink
//!   that pushes down frames into the phone's outbox and closes it on [`Inbound::ended`] (with
//!   [`wire::close_from_wire`]) or [`Inbound::lost`] (1011). Up: [`Outbound::try_frame`], and
//!   while it is full [`Outbound::poll_space`] (backpressure onto the phone); when the phone's
//!   socket ends, [`Outbound::end`] with the phone's code.
//! - **Fencing.** When [`Liveness::state`] turns [`LeaseState::Fenced`] (or the held
//!   incarnation changes), close every connection this instance holds 1012, then
//!   [`Link::lose_all`]; while not [`Liveness::holds_lease`] or not [`Nats::is_connected`],
//!   refuse upgrades with 503. And before every frame delivered (to a binary, to a phone, up
//!   or down a link) and every claim or registration answered, [`Liveness::within_lease`]
//!   (one atomic load and one clock read): when it is false, fence at once, whatever the
//!   timers did ([`deadline`] says why).
//! - **Graceful shutdown.** After the 1001 closes: [`Link::flush`], [`Directory::release_all`],
//!   then [`Liveness::shutdown`] — deleting the liveness entry alone already makes every id it
//!   owned free at once.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(unreachable_pub)]

mod bucket;
pub mod connection;
pub mod deadline;
pub mod directory;
mod error;
pub mod instance;
pub mod keys;
pub mod link;
pub mod liveness;
pub mod metrics;
pub mod remote;
pub mod wire;

pub use error::ClusterError;

// The crate docs name the items by their own names, as the wiring does.
#[cfg(doc)]
use {connection::*, directory::*, link::*, liveness::*, metrics::*, remote::*, wire::*};
