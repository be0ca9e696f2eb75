//! `Actor`: executes [`Call`]s on a real `Registry`, holding the guards they return, and reports
//! each call's [`Outcome`] in the model's terms. One per thread in concurrent tests.

use crate::conn::{RecConn, armed, take_closes};
use crate::spec::{Call, Deadline, Outcome, Value};
use relay_registry::{ManualClock, PhoneTicket, Registry, RegistryError, ServerClaim};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Deadlines further than this from the start are `release_after(Duration::MAX)` windows.
const NEVER_MS: u128 = 1 << 40;

pub struct Actor {
    pub registry: Registry<RecConn>,
    pub clock: ManualClock,
    /// The clock's reading at tick 0.
    pub start: Instant,
    /// Live claims, oldest first.
    pub claims: Vec<ServerClaim<RecConn>>,
    /// Live tickets, oldest first.
    pub tickets: Vec<PhoneTicket<RecConn>>,
    /// Every binary conn this actor made or was shown (candidates for takeover incumbents).
    pub binaries: Vec<Arc<RecConn>>,
}

impl Actor {
    pub fn new(registry: Registry<RecConn>, clock: ManualClock, start: Instant) -> Self {
        Actor {
            registry,
            clock,
            start,
            claims: Vec::new(),
            tickets: Vec::new(),
            binaries: Vec::new(),
        }
    }

    /// Runs `call` (with the conns' traps armed) and returns what it returned — or that it
    /// panicked — plus the closes it ran on this thread.
    ///
    /// # Panics
    ///
    /// If `call` names a guard this actor does not hold.
    pub fn execute(&mut self, call: &Call) -> Outcome {
        self.check_guard(call);
        let run =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| armed(|| self.run(call))));
        Outcome {
            value: run.unwrap_or(Value::Panicked),
            closes: take_closes(),
        }
    }

    /// Panics (unarmed, outside any catch) if `call` names a guard this actor does not hold: a
    /// bug of the harness, not an outcome.
    fn check_guard(&self, call: &Call) {
        use Call::*;
        match call {
            Release { claim, .. }
            | DropClaim { claim, .. }
            | ReleaseAfter { claim, .. }
            | ClaimPhone { claim, .. }
            | ClaimPhones { claim, .. }
            | IsCurrent { claim, .. } => {
                self.claim_pos(*claim);
            }
            Unregister { phone, .. }
            | DropTicket { phone, .. }
            | IsRegistered { phone, .. }
            | TicketBinary { phone, .. } => {
                self.ticket_pos(*phone);
            }
            _ => {}
        }
    }

    fn run(&mut self, call: &Call) -> Value {
        use Call::*;
        match call {
            Claim { id, conn } => {
                let conn = self.binary(*conn);
                let result = self.registry.claim_server(id, conn);
                Value::Res(self.keep_claim(result))
            }
            Takeover {
                id,
                incumbent,
                conn,
            } => {
                let incumbent = incumbent.map(|serial| self.known_binary(serial));
                let conn = self.binary(*conn);
                let result = self.registry.takeover_server(id, incumbent.as_ref(), conn);
                Value::Res(self.keep_claim(result))
            }
            EndTenure { id, holder } => {
                let holder = self.known_binary(*holder);
                Value::Bool(self.registry.end_tenure(id, &holder))
            }
            Release { claim, .. } => Value::Bool(self.take_claim(*claim).release()),
            DropClaim { claim, .. } => {
                drop(self.take_claim(*claim));
                Value::Unit
            }
            ReleaseAfter { claim, grace, .. } => {
                Value::Bool(self.take_claim(*claim).release_after(grace.duration()))
            }
            Register {
                id,
                phone,
                name,
                trap,
            } => {
                let phone = RecConn::trapped(*phone, name, *trap);
                let result = self.registry.register_phone(id, phone);
                Value::Res(result.map(|ticket| self.tickets.push(ticket)))
            }
            Unregister { phone, .. } => Value::Bool(self.take_ticket(*phone).unregister()),
            DropTicket { phone, .. } => {
                drop(self.take_ticket(*phone));
                Value::Unit
            }
            BinaryFor { id } => {
                let binary = self.registry.binary_for(id);
                Value::Conn(binary.map(|b| self.saw(b)))
            }
            PhoneFor { id, name } => {
                Value::Conn(self.registry.phone_for(id, name).map(|p| p.serial))
            }
            PhonesFor { id } => Value::Conns(in_order(self.registry.phones_for(id).iter())),
            ClaimPhone { claim, name, .. } => {
                Value::Conn(self.claim(*claim).phone(name).map(|p| p.serial))
            }
            ClaimPhones { claim, .. } => Value::Conns(in_order(self.claim(*claim).phones().iter())),
            IsCurrent { claim, .. } => Value::Bool(self.claim(*claim).is_current()),
            IsRegistered { phone, .. } => Value::Bool(self.ticket(*phone).is_registered()),
            TicketBinary { phone, .. } => {
                let binary = self.ticket(*phone).binary();
                Value::Conn(binary.map(|b| self.saw(b)))
            }
            Advance { ticks } => {
                self.clock.advance(Duration::from_millis(*ticks));
                Value::Unit
            }
            ExpireDue => {
                let report = self.registry.expire_due();
                let mut expired: Vec<(String, usize)> = report
                    .iter()
                    .map(|e| (e.server_id().to_owned(), e.phones()))
                    .collect();
                expired.sort();
                Value::Expired(expired, report.panics().len())
            }
            Snapshot => Value::Conns(serials(self.registry.snapshot().iter())),
            Counts => Value::Counts(self.registry.counts()),
            NextDeadline => {
                Value::Deadline(self.registry.next_deadline().map(|d| self.deadline(d)))
            }
        }
    }

    /// The model's name for the instant `at`.
    pub fn deadline(&self, at: Instant) -> Deadline {
        let ms = at.duration_since(self.start).as_millis();
        if ms >= NEVER_MS {
            Deadline::Never
        } else {
            Deadline::At(u64::try_from(ms).expect("below NEVER_MS"))
        }
    }

    fn binary(&mut self, serial: u32) -> Arc<RecConn> {
        let conn = RecConn::new(serial, &format!("bin-{serial}"));
        self.binaries.push(conn.clone());
        conn
    }

    fn known_binary(&self, serial: u32) -> Arc<RecConn> {
        self.binaries
            .iter()
            .find(|b| b.serial == serial)
            .cloned()
            .unwrap_or_else(|| panic!("incumbent {serial} was never seen by this actor"))
    }

    fn saw(&mut self, binary: Arc<RecConn>) -> u32 {
        let serial = binary.serial;
        if !self.binaries.iter().any(|b| b.serial == serial) {
            self.binaries.push(binary);
        }
        serial
    }

    fn keep_claim(
        &mut self,
        result: Result<ServerClaim<RecConn>, RegistryError>,
    ) -> Result<(), RegistryError> {
        result.map(|claim| self.claims.push(claim))
    }

    fn claim_pos(&self, serial: u32) -> usize {
        self.claims
            .iter()
            .position(|c| c.conn().serial == serial)
            .unwrap_or_else(|| panic!("no live claim of binary {serial}"))
    }

    pub fn claim(&self, serial: u32) -> &ServerClaim<RecConn> {
        &self.claims[self.claim_pos(serial)]
    }

    fn take_claim(&mut self, serial: u32) -> ServerClaim<RecConn> {
        let pos = self.claim_pos(serial);
        self.claims.remove(pos)
    }

    fn ticket_pos(&self, serial: u32) -> usize {
        self.tickets
            .iter()
            .position(|t| t.conn().serial == serial)
            .unwrap_or_else(|| panic!("no live ticket of phone {serial}"))
    }

    pub fn ticket(&self, serial: u32) -> &PhoneTicket<RecConn> {
        &self.tickets[self.ticket_pos(serial)]
    }

    fn take_ticket(&mut self, serial: u32) -> PhoneTicket<RecConn> {
        let pos = self.ticket_pos(serial);
        self.tickets.remove(pos)
    }
}

/// The serials of `conns`, in their order (one id's phones: by position).
pub fn in_order<'a>(conns: impl Iterator<Item = &'a Arc<RecConn>>) -> Vec<u32> {
    conns.map(|c| c.serial).collect()
}

/// The serials of `conns`, sorted (a multiset).
pub fn serials<'a>(conns: impl Iterator<Item = &'a Arc<RecConn>>) -> Vec<u32> {
    let mut serials: Vec<u32> = conns.map(|c| c.serial).collect();
    serials.sort_unstable();
    serials
}
