//! The registry's semantics as a plain sequential model (issue 2, "Semantics").
//!
//! Conns are serial numbers; a claim is known by its binary's serial (every claim attempt gets a
//! fresh conn), a ticket by its phone's serial. Time is in ticks of one millisecond since the start.
//! Nothing here is clever: a `BTreeMap` from server-id to its holder, a `Vec` of phones per id.

use relay_registry::{CloseReason, Counts, RegistryError};
use std::collections::BTreeMap;

/// A grace window's deadline: a tick, or "never" (a `release_after(Duration::MAX)`, which
/// saturates at the latest instant; the model's clock never gets there).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Deadline {
    At(u64),
    Never,
}

/// How long a `release_after` waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, arbitrary::Arbitrary)]
pub enum Grace {
    Ticks(u8),
    Max,
}

impl Grace {
    pub fn duration(self) -> std::time::Duration {
        match self {
            Grace::Ticks(t) => std::time::Duration::from_millis(t.into()),
            Grace::Max => std::time::Duration::MAX,
        }
    }
}

/// One held server-id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// The binary's serial: also the identity of the claim that installed it.
    pub binary: u32,
    /// `Some` while in a grace window.
    pub grace: Option<Deadline>,
    /// `(phone serial, conn-id)`, in registration order.
    pub phones: Vec<(u32, String)>,
}

/// The whole registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    pub now: u64,
    pub cap: usize,
    pub max_id_len: usize,
    pub servers: BTreeMap<String, Server>,
}

/// One call on the registry or on a guard, with everything concrete (serials, not picks).
/// Guard calls carry their server-id so that histories can be partitioned per id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Call {
    Claim {
        id: String,
        conn: u32,
    },
    Takeover {
        id: String,
        incumbent: Option<u32>,
        conn: u32,
    },
    Release {
        id: String,
        claim: u32,
    },
    DropClaim {
        id: String,
        claim: u32,
    },
    ReleaseAfter {
        id: String,
        claim: u32,
        grace: Grace,
    },
    Register {
        id: String,
        phone: u32,
        name: String,
    },
    Unregister {
        id: String,
        phone: u32,
    },
    DropTicket {
        id: String,
        phone: u32,
    },
    BinaryFor {
        id: String,
    },
    PhoneFor {
        id: String,
        name: String,
    },
    PhonesFor {
        id: String,
    },
    ClaimPhone {
        id: String,
        claim: u32,
        name: String,
    },
    ClaimPhones {
        id: String,
        claim: u32,
    },
    IsCurrent {
        id: String,
        claim: u32,
    },
    IsRegistered {
        id: String,
        phone: u32,
    },
    TicketBinary {
        id: String,
        phone: u32,
    },
    Advance {
        ticks: u64,
    },
    ExpireDue,
    Snapshot,
    Counts,
    NextDeadline,
}

impl Call {
    /// The one server-id this call reads or writes, or `None` for a call that spans every id
    /// (`expire_due`, `snapshot`, `counts`, `next_deadline`, the clock).
    pub fn server_id(&self) -> Option<&str> {
        use Call::*;
        match self {
            Claim { id, .. }
            | Takeover { id, .. }
            | Release { id, .. }
            | DropClaim { id, .. }
            | ReleaseAfter { id, .. }
            | Register { id, .. }
            | Unregister { id, .. }
            | DropTicket { id, .. }
            | BinaryFor { id }
            | PhoneFor { id, .. }
            | PhonesFor { id }
            | ClaimPhone { id, .. }
            | ClaimPhones { id, .. }
            | IsCurrent { id, .. }
            | IsRegistered { id, .. }
            | TicketBinary { id, .. } => Some(id),
            Advance { .. } | ExpireDue | Snapshot | Counts | NextDeadline => None,
        }
    }
}

/// What a call returned. Lists of conns are sorted serials (multisets).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Unit,
    Res(Result<(), RegistryError>),
    Bool(bool),
    Count(usize),
    Conn(Option<u32>),
    Conns(Vec<u32>),
    /// Expected only: `phone_for` returns one of these (`None` iff empty); which one is not part
    /// of the contract when two phones share a conn-id.
    OneOf(Vec<u32>),
    Counts(Counts),
    Deadline(Option<Deadline>),
}

/// A call's full effect as seen from outside: its value and the closes it ran on its thread.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Outcome {
    pub value: Value,
    pub closes: Vec<(u32, CloseReason)>,
}

impl Outcome {
    fn of(value: Value) -> Self {
        Outcome {
            value,
            closes: Vec::new(),
        }
    }
}

/// Orders closes so that two multisets compare equal with `==`.
pub fn sort_closes(closes: &mut [(u32, CloseReason)]) {
    closes.sort_by_key(|(serial, reason)| (*serial, reason.code(), reason.reason()));
}

/// Whether `observed` is an outcome the model allows where it `expected` this.
pub fn accepts(expected: &Outcome, observed: &Outcome) -> bool {
    if expected.closes != observed.closes {
        return false;
    }
    match (&expected.value, &observed.value) {
        (Value::OneOf(allowed), Value::Conn(got)) => match got {
            None => allowed.is_empty(),
            Some(serial) => allowed.contains(serial),
        },
        (e, o) => e == o,
    }
}

impl Model {
    pub fn new(cap: usize, max_id_len: usize) -> Self {
        Model {
            now: 0,
            cap,
            max_id_len,
            servers: BTreeMap::new(),
        }
    }

    fn valid(&self, id: &str) -> bool {
        !id.is_empty() && id.len() <= self.max_id_len
    }

    /// Applies `call`; returns what the registry must return and close.
    pub fn apply(&mut self, call: &Call) -> Outcome {
        use Call::*;
        let mut out = match call {
            Claim { id, conn } => self.claim(id, None, *conn),
            Takeover {
                id,
                incumbent,
                conn,
            } => self.claim(id, Some(*incumbent), *conn),
            Release { claim, .. } => self.release(*claim, Value::Bool),
            DropClaim { claim, .. } => self.release(*claim, |_| Value::Unit),
            ReleaseAfter { claim, grace, .. } => {
                Outcome::of(Value::Bool(self.release_after(*claim, *grace)))
            }
            Register { id, phone, name } => {
                Outcome::of(Value::Res(self.register(id, *phone, name)))
            }
            Unregister { phone, .. } => Outcome::of(Value::Bool(self.unregister(*phone))),
            DropTicket { phone, .. } => {
                self.unregister(*phone);
                Outcome::of(Value::Unit)
            }
            BinaryFor { id } => Outcome::of(Value::Conn(self.servers.get(id).map(|s| s.binary))),
            PhoneFor { id, name } => Outcome::of(Value::OneOf(self.named(id, name))),
            PhonesFor { id } => Outcome::of(Value::Conns(self.phones_of(id))),
            ClaimPhone { id, claim, name } => Outcome::of(Value::OneOf(if self.holds(*claim) {
                self.named(id, name)
            } else {
                Vec::new()
            })),
            ClaimPhones { id, claim } => Outcome::of(Value::Conns(if self.holds(*claim) {
                self.phones_of(id)
            } else {
                Vec::new()
            })),
            IsCurrent { claim, .. } => Outcome::of(Value::Bool(self.holds(*claim))),
            IsRegistered { phone, .. } => {
                Outcome::of(Value::Bool(self.server_of_phone(*phone).is_some()))
            }
            TicketBinary { phone, .. } => {
                Outcome::of(Value::Conn(self.server_of_phone(*phone).map(|s| s.binary)))
            }
            Advance { ticks } => {
                self.now += ticks;
                Outcome::of(Value::Unit)
            }
            ExpireDue => self.expire_due(),
            Snapshot => Outcome::of(Value::Conns(self.snapshot())),
            Counts => Outcome::of(Value::Counts(self.counts())),
            NextDeadline => Outcome::of(Value::Deadline(self.next_deadline())),
        };
        sort_closes(&mut out.closes);
        out
    }

    /// `claim_server` (`incumbent: None`) or `takeover_server` (`Some(incumbent)`).
    fn claim(&mut self, id: &str, takeover: Option<Option<u32>>, conn: u32) -> Outcome {
        if !self.valid(id) {
            return Outcome::of(Value::Res(Err(RegistryError::InvalidServerId)));
        }
        let allowed = match (self.servers.get(id), takeover) {
            (None, None | Some(None)) => true,
            (None, Some(Some(_))) => false,
            // A first claim may only reclaim a gracing id.
            (Some(held), None) => held.grace.is_some(),
            // A takeover needs exactly the holder, live or gracing.
            (Some(held), Some(incumbent)) => incumbent == Some(held.binary),
        };
        if !allowed {
            return Outcome::of(Value::Res(Err(RegistryError::ServerIdConflict)));
        }
        let new = Server {
            binary: conn,
            grace: None,
            phones: Vec::new(),
        };
        let closes = match self.servers.insert(id.to_owned(), new) {
            Some(old) => evict(old, CloseReason::Reclaimed),
            None => Vec::new(),
        };
        Outcome {
            value: Value::Res(Ok(())),
            closes,
        }
    }

    /// The id whose live (not gracing) tenure `claim` installed.
    fn live_id_of(&self, claim: u32) -> Option<String> {
        self.servers
            .iter()
            .find(|(_, s)| s.binary == claim && s.grace.is_none())
            .map(|(id, _)| id.clone())
    }

    /// Whether `claim`'s tenure is still going (live or gracing): its guard's `is_current`.
    pub fn holds(&self, claim: u32) -> bool {
        self.servers.values().any(|s| s.binary == claim)
    }

    fn release(&mut self, claim: u32, value: impl FnOnce(bool) -> Value) -> Outcome {
        match self.live_id_of(claim) {
            Some(id) => {
                let old = self.servers.remove(&id).expect("held");
                Outcome {
                    value: value(true),
                    closes: evict(old, CloseReason::Released),
                }
            }
            None => Outcome::of(value(false)),
        }
    }

    fn release_after(&mut self, claim: u32, grace: Grace) -> bool {
        let Some(id) = self.live_id_of(claim) else {
            return false;
        };
        let deadline = match grace {
            Grace::Ticks(t) => Deadline::At(self.now + u64::from(t)),
            Grace::Max => Deadline::Never,
        };
        self.servers.get_mut(&id).expect("held").grace = Some(deadline);
        true
    }

    fn expire_due(&mut self) -> Outcome {
        let now = Deadline::At(self.now);
        let due: Vec<String> = self
            .servers
            .iter()
            .filter(|(_, s)| s.grace.is_some_and(|d| d <= now))
            .map(|(id, _)| id.clone())
            .collect();
        let mut closes = Vec::new();
        for id in &due {
            let old = self.servers.remove(id).expect("due");
            closes.extend(evict(old, CloseReason::GraceExpired));
        }
        Outcome {
            value: Value::Count(due.len()),
            closes,
        }
    }

    fn register(&mut self, id: &str, phone: u32, name: &str) -> Result<(), RegistryError> {
        if !self.valid(id) {
            return Err(RegistryError::InvalidServerId);
        }
        let cap = self.cap;
        let server = self.servers.get_mut(id).ok_or(RegistryError::NoServer)?;
        if cap != 0 && server.phones.len() >= cap {
            return Err(RegistryError::PhonesAtCap);
        }
        server.phones.push((phone, name.to_owned()));
        Ok(())
    }

    fn unregister(&mut self, phone: u32) -> bool {
        for server in self.servers.values_mut() {
            if let Some(pos) = server.phones.iter().position(|(p, _)| *p == phone) {
                server.phones.remove(pos);
                return true;
            }
        }
        false
    }

    fn server_of_phone(&self, phone: u32) -> Option<&Server> {
        self.servers
            .values()
            .find(|s| s.phones.iter().any(|(p, _)| *p == phone))
    }

    /// Whether `phone`'s ticket is registered: its `is_registered`.
    pub fn registered(&self, phone: u32) -> bool {
        self.server_of_phone(phone).is_some()
    }

    /// The binary `phone` joined, while it is registered: its ticket's `binary()`.
    pub fn binary_of_phone(&self, phone: u32) -> Option<u32> {
        self.server_of_phone(phone).map(|s| s.binary)
    }

    fn named(&self, id: &str, name: &str) -> Vec<u32> {
        self.servers.get(id).map_or_else(Vec::new, |s| {
            s.phones
                .iter()
                .filter(|(_, n)| n == name)
                .map(|(p, _)| *p)
                .collect()
        })
    }

    pub fn phones_of(&self, id: &str) -> Vec<u32> {
        let mut phones: Vec<u32> = self
            .servers
            .get(id)
            .map_or_else(Vec::new, |s| s.phones.iter().map(|(p, _)| *p).collect());
        phones.sort_unstable();
        phones
    }

    pub fn binary_for(&self, id: &str) -> Option<u32> {
        self.servers.get(id).map(|s| s.binary)
    }

    pub fn snapshot(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .servers
            .values()
            .flat_map(|s| std::iter::once(s.binary).chain(s.phones.iter().map(|(p, _)| *p)))
            .collect();
        all.sort_unstable();
        all
    }

    /// The earliest open grace window's deadline.
    pub fn next_deadline(&self) -> Option<Deadline> {
        self.servers.values().filter_map(|s| s.grace).min()
    }

    /// Every registered phone's serial with its binary's serial.
    pub fn phone_owners(&self) -> std::collections::HashMap<u32, u32> {
        self.servers
            .values()
            .flat_map(|s| s.phones.iter().map(move |(p, _)| (*p, s.binary)))
            .collect()
    }

    pub fn counts(&self) -> Counts {
        let gracing = self.servers.values().filter(|s| s.grace.is_some()).count();
        Counts {
            binaries: self.servers.len() - gracing,
            gracing,
            phones: self.servers.values().map(|s| s.phones.len()).sum(),
        }
    }
}

/// Every phone of an ended tenure, to be closed with `reason`.
fn evict(old: Server, reason: CloseReason) -> Vec<(u32, CloseReason)> {
    old.phones.into_iter().map(|(p, _)| (p, reason)).collect()
}
