//! The routing core of a WebSocket relay: which *binary* holds each server-id, and which *phones*
//! have joined it.
//!
//! A relay sits between desktop daemons (binaries) and the mobile apps that talk to them (phones).
//! Every part of a relay — the WebSocket endpoints, frame forwarding, heartbeats, the grace period
//! after a binary drops, the health endpoint — reads or writes through a [`Registry`].
//!
//! # The model
//!
//! - A **server-id** is an opaque UTF-8 string (from an HTTP header), non-empty and at most
//!   [`max_server_id_len`](Config::max_server_id_len) bytes.
//! - Each id is held by **at most one binary** (1:1). [`Registry::claim_server`] is first claim
//!   wins; it returns a [`ServerClaim`], an RAII guard: dropping it releases the id.
//! - Each held id has **any number of phones** (1:N, optionally capped). A phone may join only
//!   while a binary holds the id; [`Registry::register_phone`] returns a [`PhoneTicket`], an RAII
//!   guard: dropping it unregisters that phone, in O(1), without closing it.
//! - A binary's **tenure** runs from the claim that installed it to the release, reclaim, takeover
//!   or expiry that ends it. Every way a tenure ends **evicts all its phones** (they are removed at
//!   once and closed with a [`CloseReason`]); no phone is ever registered under an id no binary
//!   holds.
//! - **Grace**: a binary whose socket ended calls [`ServerClaim::release_after`]. Until the
//!   deadline the id behaves as held (phones stay and may join, it counts as `gracing`). A new
//!   claim in the window is a *reclaim* (phones evicted with [`CloseReason::Reclaimed`]); when
//!   [`Registry::expire_due`] runs past the deadline the id is freed (phones closed with
//!   [`CloseReason::GraceExpired`]), and it reports each expired id. A [`Reaper`] thread calls
//!   `expire_due` at each deadline, or a task of an async runtime does, woken by
//!   [`Registry::deadline_changes`] (see [Using it with tokio](#using-it-with-tokio-and-axum));
//!   tests use a [`ManualClock`] instead.
//! - **Takeover**: when the holder stops answering heartbeats, [`Registry::takeover_server`]
//!   replaces exactly that holder (compared by `Arc` identity), and fails if it changed meanwhile.
//!   [`Registry::end_tenure`] ends exactly that holder's tenure with no successor (its phones
//!   evicted as on a takeover), for a relay that learns another way that the tenure is over.
//! - **Stale guards are inert.** A claim holds a typed generational slotmap key *and* a
//!   registry-wide `u64` epoch of its tenure; a ticket holds its tenure itself (an `Arc`, so no
//!   other tenure can ever be at that address while the ticket lives), its position in that
//!   tenure's phone table and the registry-wide epoch of its registration. A claim that was taken
//!   over or whose tenure was ended (the only ways a held claim goes stale), and a ticket whose
//!   phone was evicted, match neither any more, so dropping them can never touch what now
//!   occupies the id, the slot or the position. (slotmap versions alone wrap after 2^31 reuses of
//!   a slot, and its LIFO free list makes one churning client reuse one slot; the epoch never
//!   repeats.)
//!
//! ```
//! use relay_registry::{CloseReason, Config, Conn, Counts, ManualClock, Registry};
//! use std::sync::{Arc, Mutex};
//! use std::time::Duration;
//!
//! // The relay's connection type; here a mock that records its close.
//! struct Ws { id: String, closed: Mutex<Option<CloseReason>> }
//! impl Ws {
//!     fn new(id: &str) -> Arc<Ws> { Arc::new(Ws { id: id.into(), closed: Mutex::new(None) }) }
//! }
//! impl Conn for Ws {
//!     fn conn_id(&self) -> &str { &self.id }
//!     fn close(&self, reason: CloseReason) { *self.closed.lock().unwrap() = Some(reason); }
//! }
//!
//! let clock = ManualClock::new();
//! let registry = Registry::with_config(Config::default().with_clock(Arc::new(clock.clone())));
//!
//! // The binary's task: claim the id and hold the claim for as long as the socket lives.
//! let claim = registry.claim_server("srv-1", Ws::new("server-srv-1-0001"))?;
//!
//! // A phone's task: register, then route each frame through the ticket.
//! let phone = Ws::new("client-srv-1-0001");
//! let ticket = registry.register_phone("srv-1", phone.clone())?;
//! let binary = ticket.binary().expect("registered");
//! assert_eq!(binary.conn_id(), "server-srv-1-0001");
//! // ... and the binary routes back to the phone through its claim.
//! assert!(claim.phone("client-srv-1-0001").is_some());
//!
//! // The binary's socket ends: keep the id for 30 s in case it comes back.
//! claim.release_after(Duration::from_secs(30));
//! assert_eq!(registry.counts(), Counts { binaries: 0, gracing: 1, phones: 1 });
//!
//! // It does not come back in time: the phone is evicted and closed 1011.
//! clock.advance(Duration::from_secs(30));
//! assert_eq!(registry.expire_due().len(), 1);
//! assert_eq!(*phone.closed.lock().unwrap(), Some(CloseReason::GraceExpired));
//! assert!(!ticket.is_registered());
//! drop(ticket); // stale: does nothing
//! assert_eq!(registry.counts(), Counts::default());
//! # Ok::<(), relay_registry::RegistryError>(())
//! ```
//!
//! # Locking and re-entrancy
//!
//! A registry has one internal lock. Every operation takes it once (but the per-frame routes, see
//! below and [Trade-offs](#trade-offs)), for a short critical section
//! that only reads and relinks the registry's own data (hashing the id, slotmap indexing, moving
//! `Arc`s). **No user code runs while the lock is held**: no [`Conn`] method, no [`Clock::now`],
//! no `Drop` of an `Arc<C>` the registry removed, no [`Waker`](std::task::Waker). Conn-ids and
//! the clock are read before the lock; removed conns are moved out and closed or dropped after
//! it; wakers are woken after it. In debug builds the lock enforces this: a registry called from
//! a thread that already holds a registry's lock panics at once instead of deadlocking.
//!
//! Below it, each tenure has a lock of its own over its phone table: registrations and evictions
//! take it inside the registry's critical section; a ticket's unregistration
//! ([`PhoneTicket::unregister`], its drop) and the binary→phone route ([`ServerClaim::phone`],
//! [`ServerClaim::phones`]) take it alone, never the registry's. (A phone that leaves is counted
//! in a registry-wide atomic tally in the same critical section, which [`Registry::counts`]
//! reads under the registry's lock: the counts stay one moment's and O(1).) Nothing
//! runs under it either but reading and relinking the table.
//!
//! So a [`Conn`] may call back into the registry from `conn_id`, `close` or its `Drop`,
//! and a guard may be dropped from inside `close`: nothing deadlocks. Evicted phones are closed on
//! the thread whose call (or guard drop) evicted them, after the registry's state is final and
//! before that call returns; the [`Reaper`]'s expiries close on the reaper's thread.
//!
//! ## When user code panics
//!
//! Whatever panics — a `close`, a `conn_id`, the clock's `now`, a conn's `Drop` — no server-id is
//! ever left held by no one: every tenure, registration and grace window is owned by a guard or
//! ended by a deadline. The other closes of the same call still run (each is caught), and then,
//! per operation:
//!
//! | operation | rule |
//! | --- | --- |
//! | [`claim_server`](Registry::claim_server), [`takeover_server`](Registry::takeover_server) | The first panic propagates once the new claim exists, so unwinding drops it: a refused call changed nothing; a reclaim or takeover stays done (old tenure ended, its phones evicted and closed) and the new claim is released at once — the id is free. |
//! | [`register_phone`](Registry::register_phone) | A panicking `conn_id` propagates before anything happened; a refused conn's panicking `Drop` propagates with nothing changed. |
//! | guard drops, [`release`](ServerClaim::release), [`unregister`](PhoneTicket::unregister) | The release or unregistration completes, then the first panic propagates. |
//! | [`release_after`](ServerClaim::release_after) | The clock is read while the claim is still armed: if `now` panics, unwinding drops the claim, which releases the id at once; the panic propagates. |
//! | [`expire_due`](Registry::expire_due) | Never panics because of user code: every expiry completes, and the panics (of closes, or of the clock — then nothing expires) are returned in [`Expiries::panics`]. |
//! | [`Reaper`] | Never stops because of user code: `expire_due`'s panics go to its handler (stderr by default); a panicking clock is retried shortly, a panicking handler or drop is printed to stderr. |
//!
//! A panic that would be resumed while the thread is already unwinding (a guard dropped during a
//! panic) is printed to stderr instead, so the process does not abort. The registry is
//! consistent and usable afterwards in every case (`tests/panics.rs` checks each operation with
//! each callback).
//!
//! [`ServerClaim::is_current`], [`PhoneTicket::is_registered`] and [`PhoneTicket::binary`] take no
//! lock at all: each is one atomic load (acquire), written (release) inside the critical section
//! that ends the tenure, so they agree with every locked operation that completed before them.
//!
#![cfg_attr(not(doctest), doc = include_str!("../docs/tokio-recipe.md"))]
//!
//! # Differences from the Go registry
//!
//! The Go registry this crate replaces kept one `RWMutex` over `map[string]Conn`,
//! `map[string][]Conn` and a timer map. What was care at every call site there is a type here:
//!
//! - **Double release** cannot compile: [`ServerClaim::release`] consumes the claim, and guards
//!   are not `Clone`.
//! - **Stale grace timer tearing down a new claimant**: a window is identified by its tenure's
//!   epoch; a reclaim changes the epoch, so the old deadline matches nothing when it comes due.
//! - **Displaced binary's late release deleting its successor**: a taken-over claim's key and
//!   epoch no longer match its slot, so its drop is a no-op.
//! - **Orphan phones** under a dead or replaced binary: every end of a tenure evicts all its
//!   phones in the same critical section, and [`Registry::register_phone`] checks the holder and
//!   inserts in one step.
//! - **Lost close codes**: [`Conn::close`] takes a [`CloseReason`] with a code and a text; it is
//!   a required method, not an optional capability.
//! - **O(n) unregister by scanning conn-id strings**: a ticket names its registration by key;
//!   unregister vacates that position in O(1). **O(n) counts**: [`Counts`] are kept up to date
//!   and read in O(1).
//! - **`ConnID()` called under the lock**: a conn-id is read before the lock at registration
//!   (the registry keeps its fingerprint), and on a lookup's find after every lock is released.
//!
//! # Security
//!
//! Server-ids come from HTTP headers, chosen by whoever connects. The id index uses std's
//! `RandomState` (SipHash-1-3 with a per-process random key), so colliding ids cannot be
//! precomputed to degrade lookups. Ids are length-checked before any hashing or locking (default
//! 256 bytes), and lookups with an invalid id return nothing without taking the lock. A refused
//! claim or registration changes nothing and keeps nothing. Phone tokens are not the registry's
//! concern: it never sees them.
//!
//! # Trade-offs
//!
//! - One registry lock, not one per id: every operation is linearizable with one short critical
//!   section, and [`Counts`] are exact. The per-frame routes avoid it: phone→binary
//!   ([`PhoneTicket::binary`]) is one atomic load, binary→phone ([`ServerClaim::phone`]) takes
//!   only its own tenure's phone-table lock, which no other binary's route touches, so many
//!   binaries routing at once do not serialise on one lock. That lock costs 16 bytes per held
//!   id (in the tenure) and one more lock acquisition (uncontended: an atomic compare-and-swap)
//!   in each change to an id's phones.
//! - [`Registry::phone_for`] scans the phones of one id (comparing stored conn-ids), which beats
//!   hashing for the handful of phones an id has; unregister is O(1) regardless. A phone keeps
//!   its position in the list while registered and a vacated position is reused by the next
//!   registration, so the list does not shrink until its last phone leaves.
//! - [`Phones`] snapshots are shared, immutable lists rebuilt lazily after a change: repeated
//!   snapshots of an unchanged set cost one reference count; the first after a change allocates.
//! - Cancelled grace windows stay in the deadline heap until they surface or the heap is
//!   compacted (once it holds more than twice the open windows plus 32 entries), keeping
//!   reclaims O(log n) and the heap bounded.
//! - Ids are stored as plain `Box<str>` copies, one per held id and one per phone: simpler than
//!   inline small strings, at 8 more bytes per id and 24 more per phone than the earlier inline
//!   layout — small next to what a relay connection costs in memory of its own (the relay in
//!   this repository measures about 3.5 KiB per idle phone).
//!
//! # Memory per entry
//!
//! A held id costs a 16-byte server slot (the tenure's pointer and the slot's generation), an
//! 8-byte index entry (the tenure, whose id it hashes) and two allocations: the tenure (the
//! binary, the id's pointer and length, the locked pointer to its phone list, its epoch and phase
//! in one word, its slot's key: 72 bytes with the reference counts) and the id's bytes. The
//! tenure knows its epoch and slot so that neither the slot nor the index keeps them: a lookup by
//! id reaches the tenure straight from the index. An id's phones share one list allocation
//! (counters, cached snapshot, and the first four phones inline). A phone costs a 24-byte entry
//! (its conn, its epoch, its conn-id's 8-byte fingerprint) and nothing else: no copy of its
//! conn-id (a lookup confirms the fingerprint's match on the conn itself). There is no
//! registry-wide phone map: a ticket names its phone by its tenure and position. A phone list
//! also points at the registry's tally of phones that left through their tickets (8 bytes per id
//! with phones), and stays allocated when its phones leave while its entries fit inline.
//! `cargo run --release -p relay-registry-benches --bin footprint` measures this against a port
//! of the Go registry (the README has the figures).
#![forbid(unsafe_code)]
#![deny(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]
#![doc(test(attr(deny(warnings))))]

// Inside, imports point one way, down these layers (none back up, no cycle):
// - guards and handles: `registry` (Registry), `claim` (ServerClaim), `ticket` (PhoneTicket),
//   `reaper` (Reaper), `changes` (DeadlineChanges);
// - shared state: `shared` (the one registry lock, the config, the expiry signal) over `state`
//   (every operation, run under that lock);
// - storage: `tenure` (a binary's tenure and its locked phone table), `phone_list`, `deadlines`,
//   `expiry`, `aftermath` (what runs after the lock), `phones`, `keys`;
// - vocabulary: `conn`, `error`, `config`, `clock`, `counts`, `signal`, `sync`.
mod aftermath;
mod changes;
mod claim;
mod clock;
mod config;
mod conn;
mod counts;
mod deadlines;
mod error;
mod expiry;
mod keys;
mod phone_list;
mod phones;
mod reaper;
mod registry;
mod shared;
mod signal;
mod state;
mod sync;
mod tenure;
#[cfg(test)]
mod test_conn;
mod ticket;

pub use changes::{Changed, DeadlineChanges};
pub use claim::ServerClaim;
pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Config;
pub use conn::{CloseReason, Conn, CustomClose, InvalidCloseReason, Refusal};
pub use counts::Counts;
pub use error::RegistryError;
pub use expiry::{Expired, Expiries};
pub use phones::Phones;
pub use reaper::Reaper;
pub use registry::Registry;
pub use ticket::PhoneTicket;

/// Compile-time guarantees: what is shareable across threads, and what can never be copied.
mod assertions {
    use super::*;
    use crate::keys::{PhoneKey, ServerKey};
    use static_assertions::{assert_impl_all, assert_not_impl_any, assert_type_ne_all};

    struct AnyConn;
    impl Conn for AnyConn {
        fn conn_id(&self) -> &str {
            ""
        }
        fn close(&self, _: CloseReason) {}
    }

    assert_impl_all!(Registry<AnyConn>: Send, Sync, Clone);
    assert_impl_all!(ServerClaim<AnyConn>: Send, Sync);
    assert_impl_all!(PhoneTicket<AnyConn>: Send, Sync);
    assert_impl_all!(Phones<AnyConn>: Send, Sync);
    assert_impl_all!(Reaper: Send, Sync);
    assert_not_impl_any!(ServerClaim<AnyConn>: Clone, Copy);
    assert_not_impl_any!(PhoneTicket<AnyConn>: Clone, Copy);
    assert_type_ne_all!(ServerKey, PhoneKey);
    assert_not_impl_any!(ServerKey: From<PhoneKey>, PartialEq<PhoneKey>);
    assert_not_impl_any!(PhoneKey: From<ServerKey>, PartialEq<ServerKey>);
}

/// The README's examples compile and run as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
