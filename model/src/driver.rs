//! Replays [`Op`]s on a real `Registry` (with a `ManualClock`) and on the [`Model`], and after
//! every operation compares everything observable:
//! the value returned, the conns closed on this thread with their reasons, `counts`, `snapshot`,
//! `binary_for` and `phones_for` (in position order) of every id, `next_deadline`, every live guard's `is_current` /
//! `is_registered` / `binary()`, and `check_invariants()`.

use crate::actor::{Actor, in_order, serials};
use crate::conn::RecConn;
use crate::op::{ChurnStep, DropOrder, IDS, Incumbent, MAX_ID_LEN, Op, Scenario};
use crate::spec::{Call, Model, Value, accepts};
use arbitrary::{Arbitrary, Unstructured};
use relay_registry::{Clock, Config, ManualClock, Registry};
use std::sync::Arc;

/// The `ops` fuzz target: any bytes are a cap and a list of [`Op`]s.
pub fn run(data: &[u8]) {
    run_scenario(&scenario(data));
}

/// The scenario the `ops` target makes of `data`.
pub fn scenario(data: &[u8]) -> Scenario {
    let mut u = Unstructured::new(data);
    let cap = u8::arbitrary(&mut u).unwrap_or(0);
    let ops = decode_all(u);
    Scenario { cap, ops }
}

/// The `churn` fuzz target: any bytes are a cap and a list of [`ChurnStep`]s.
pub fn run_churn(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let cap = u8::arbitrary(&mut u).unwrap_or(0);
    let mut ops = Vec::new();
    for step in decode_all::<ChurnStep>(u) {
        step.expand(&mut ops);
    }
    ops.push(Op::DropAll {
        order: DropOrder::OldestFirst,
    });
    run_scenario(&Scenario { cap, ops });
}

/// Decodes elements until the bytes run out. (Not `Vec::arbitrary_take_rest`: since arbitrary
/// 1.5 it spends a "keep going" byte before each element, so random bytes decode to one or two
/// operations and every mutation of such a byte cuts the sequence short.)
pub fn decode_all<'a, T: Arbitrary<'a>>(mut u: Unstructured<'a>) -> Vec<T> {
    let mut all = Vec::new();
    while !u.is_empty() {
        match T::arbitrary(&mut u) {
            Ok(item) => all.push(item),
            Err(_) => break,
        }
    }
    all
}

/// What a replayed scenario did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Calls performed (each checked).
    pub calls: usize,
    /// Calls that panicked because a phone's `close` or `Drop` did (as the model predicted).
    pub panicked: usize,
}

/// Replays `scenario`, then drops every guard left (newest first) and expires every finite grace
/// window, checking after every step.
///
/// # Panics
///
/// On the first difference between the registry and the model, with the calls so far.
pub fn run_scenario(scenario: &Scenario) -> Summary {
    let mut harness = Harness::new(usize::from(scenario.cap % 4));
    for op in &scenario.ops {
        harness.op(op);
    }
    for op in [
        Op::DropAll {
            order: DropOrder::NewestFirst,
        },
        Op::Advance { ticks: u8::MAX },
        Op::ExpireDue,
    ] {
        harness.op(&op);
    }
    // Only `release_after(Duration::MAX)` windows can be left.
    let counts = harness.actor.registry.counts();
    assert_eq!(counts.binaries, 0, "no binary without a guard: {counts:?}");
    harness.summary
}

pub struct Harness {
    pub actor: Actor,
    pub model: Model,
    next_serial: u32,
    /// Every call so far, printed when the registry and the model disagree.
    trace: Vec<Call>,
    pub summary: Summary,
}

impl Harness {
    pub fn new(cap: usize) -> Self {
        let clock = ManualClock::new();
        let registry = Registry::with_config(
            Config::default()
                .with_max_phones_per_server(cap)
                .with_max_server_id_len(MAX_ID_LEN)
                .with_clock(Arc::new(clock.clone())),
        );
        let start = clock.now();
        Harness {
            actor: Actor::new(registry, clock, start),
            model: Model::new(cap, MAX_ID_LEN),
            next_serial: 0,
            trace: Vec::new(),
            summary: Summary::default(),
        }
    }

    fn serial(&mut self) -> u32 {
        self.next_serial += 1;
        self.next_serial
    }

    /// Translates `op` into calls (picks become serials) and performs each, checked.
    pub fn op(&mut self, op: &Op) {
        for call in self.calls(op) {
            self.call(&call);
        }
    }

    fn claim_at(&self, pick: crate::op::Pick) -> Option<(String, u32)> {
        let claims = &self.actor.claims;
        pick.index(claims.len())
            .map(|i| (claims[i].server_id().to_owned(), claims[i].conn().serial))
    }

    fn ticket_at(&self, pick: crate::op::Pick) -> Option<(String, u32)> {
        let tickets = &self.actor.tickets;
        pick.index(tickets.len())
            .map(|i| (tickets[i].server_id().to_owned(), tickets[i].conn().serial))
    }

    fn calls(&mut self, op: &Op) -> Vec<Call> {
        let call = match *op {
            Op::Claim { id } => Call::Claim {
                id: id.name().into(),
                conn: self.serial(),
            },
            Op::Takeover { id, incumbent } => {
                let incumbent = match incumbent {
                    Incumbent::Current => self.model.binary_for(id.name()),
                    Incumbent::Stale(k) => {
                        let all = &self.actor.binaries;
                        (!all.is_empty()).then(|| all[usize::from(k) % all.len()].serial)
                    }
                    Incumbent::Nobody => None,
                };
                Call::Takeover {
                    id: id.name().into(),
                    incumbent,
                    conn: self.serial(),
                }
            }
            Op::Release { claim } => match self.claim_at(claim) {
                Some((id, claim)) => Call::Release { id, claim },
                None => return Vec::new(),
            },
            Op::DropClaim { claim } => match self.claim_at(claim) {
                Some((id, claim)) => Call::DropClaim { id, claim },
                None => return Vec::new(),
            },
            Op::ReleaseAfter { claim, grace } => match self.claim_at(claim) {
                Some((id, claim)) => Call::ReleaseAfter { id, claim, grace },
                None => return Vec::new(),
            },
            Op::Advance { ticks } => Call::Advance {
                ticks: ticks.into(),
            },
            Op::ExpireDue => Call::ExpireDue,
            Op::Register { id, name, trap } => Call::Register {
                id: id.name().into(),
                phone: self.serial(),
                name: name.name().into(),
                trap: trap.trap(),
            },
            Op::Unregister { ticket } => match self.ticket_at(ticket) {
                Some((id, phone)) => Call::Unregister { id, phone },
                None => return Vec::new(),
            },
            Op::DropTicket { ticket } => match self.ticket_at(ticket) {
                Some((id, phone)) => Call::DropTicket { id, phone },
                None => return Vec::new(),
            },
            Op::BinaryFor { id } => Call::BinaryFor {
                id: id.name().into(),
            },
            Op::PhoneFor { id, name } => Call::PhoneFor {
                id: id.name().into(),
                name: name.name().into(),
            },
            Op::PhonesFor { id } => Call::PhonesFor {
                id: id.name().into(),
            },
            Op::ClaimPhone { claim, name } => match self.claim_at(claim) {
                Some((id, claim)) => Call::ClaimPhone {
                    id,
                    claim,
                    name: name.name().into(),
                },
                None => return Vec::new(),
            },
            Op::ClaimPhones { claim } => match self.claim_at(claim) {
                Some((id, claim)) => Call::ClaimPhones { id, claim },
                None => return Vec::new(),
            },
            Op::Snapshot => Call::Snapshot,
            Op::Counts => Call::Counts,
            Op::NextDeadline => Call::NextDeadline,
            Op::DropAll { order } => return self.drop_all(order),
        };
        vec![call]
    }

    /// One drop call per live guard, in `order`.
    fn drop_all(&self, order: DropOrder) -> Vec<Call> {
        let claims: Vec<Call> = self
            .actor
            .claims
            .iter()
            .map(|c| Call::DropClaim {
                id: c.server_id().into(),
                claim: c.conn().serial,
            })
            .collect();
        let tickets: Vec<Call> = self
            .actor
            .tickets
            .iter()
            .map(|t| Call::DropTicket {
                id: t.server_id().into(),
                phone: t.conn().serial,
            })
            .collect();
        match order {
            DropOrder::OldestFirst => {
                // Oldest by serial: serials grow with creation.
                let mut all: Vec<Call> = claims.into_iter().chain(tickets).collect();
                all.sort_by_key(guard_serial);
                all
            }
            DropOrder::NewestFirst => {
                let mut all: Vec<Call> = claims.into_iter().chain(tickets).collect();
                all.sort_by_key(|c| std::cmp::Reverse(guard_serial(c)));
                all
            }
            DropOrder::TicketsFirst => tickets.into_iter().chain(claims).collect(),
            DropOrder::ClaimsFirst => claims.into_iter().chain(tickets).collect(),
            DropOrder::Interleaved => {
                let (mut c, mut t) = (claims, tickets);
                let mut all = Vec::new();
                while !c.is_empty() || !t.is_empty() {
                    all.extend(c.pop());
                    all.extend(t.pop());
                }
                all
            }
        }
    }

    /// Performs `call` on both sides and compares everything.
    pub fn call(&mut self, call: &Call) {
        self.trace.push(call.clone());
        let observed = self.actor.execute(call);
        let expected = self.model.apply(call);
        self.summary.calls += 1;
        if observed.value == Value::Panicked {
            self.summary.panicked += 1;
        }
        if !accepts(&expected, &observed) {
            self.fail(&format!(
                "{call:?}\n  expected {expected:?}\n  observed {observed:?}"
            ));
        }
        self.compare_state();
    }

    fn compare_state(&self) {
        let (registry, model) = (&self.actor.registry, &self.model);
        if let Err(broken) = registry.check_invariants() {
            self.fail(&format!("check_invariants: {broken}"));
        }
        self.same("counts", model.counts(), registry.counts());
        self.same(
            "snapshot",
            model.snapshot(),
            serials(registry.snapshot().iter()),
        );
        for id in IDS {
            self.same(
                &format!("binary_for({id:?})"),
                model.binary_for(id),
                registry.binary_for(id).map(|b| b.serial),
            );
            self.same(
                &format!("phones_for({id:?})"),
                model.phones_of(id),
                in_order(registry.phones_for(id).iter()),
            );
        }
        self.same(
            "next_deadline",
            model.next_deadline(),
            registry.next_deadline().map(|d| self.actor.deadline(d)),
        );
        for claim in &self.actor.claims {
            let serial = claim.conn().serial;
            if model.holds(serial) != claim.is_current() {
                self.fail(&format!(
                    "is_current of claim {serial}: expected {}",
                    model.holds(serial)
                ));
            }
        }
        let owners = model.phone_owners();
        for ticket in &self.actor.tickets {
            let serial = ticket.conn().serial;
            let owner = owners.get(&serial).copied();
            if owner.is_some() != ticket.is_registered() {
                self.fail(&format!(
                    "is_registered of ticket {serial}: expected {}",
                    owner.is_some()
                ));
            }
            let binary = ticket.binary().map(|b: Arc<RecConn>| b.serial);
            self.same(&format!("binary() of ticket {serial}"), owner, binary);
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(&self, what: &str, expected: T, observed: T) {
        if expected != observed {
            self.fail(&format!(
                "{what}\n  expected {expected:?}\n  observed {observed:?}"
            ));
        }
    }

    fn fail(&self, what: &str) -> ! {
        let calls: Vec<String> = self.trace.iter().map(|c| format!("{c:?}")).collect();
        panic!(
            "registry and model disagree after call #{}: {what}\ncalls:\n  {}\nmodel: {:?}",
            self.trace.len(),
            calls.join("\n  "),
            self.model
        );
    }
}

fn guard_serial(call: &Call) -> u32 {
    match call {
        Call::DropClaim { claim, .. } => *claim,
        Call::DropTicket { phone, .. } => *phone,
        _ => 0,
    }
}
