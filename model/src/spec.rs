//! The registry's semantics as a plain sequential model (issue 2, "Semantics").
//!
//! Conns are serial numbers; a claim is known by its binary's serial (every claim attempt gets a
//! fresh conn), a ticket by its phone's serial. Time is in ticks of one millisecond since the start.
//! Nothing here is clever: a `BTreeMap` from server-id to its holder, a `Vec` of phone positions per
//! id (the order `Phones` documents: a new phone takes the most recently vacated position, and an
//! id whose phones all left starts afresh).

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

/// Where a phone's conn panics (only phones: the model's binaries are always kept by the caller,
/// so the registry never drops one, and never closes one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Trap {
    #[default]
    None,
    /// `Conn::close` panics (after recording the close).
    Close,
    /// The conn's `Drop` panics: when the registry drops a refused conn, or when its ticket (which
    /// owns the last reference) is dropped.
    Drop,
}

/// One held server-id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Server {
    /// The binary's serial: also the identity of the claim that installed it.
    pub binary: u32,
    /// `Some` while in a grace window.
    pub grace: Option<Deadline>,
    /// `(phone serial, conn-id)` by position; `None` for a vacated position.
    pub phones: Vec<Option<(u32, String)>>,
    /// Vacated positions, the most recent last.
    pub vacated: Vec<usize>,
}

impl Server {
    /// The registered phones, by position.
    pub fn registered(&self) -> impl Iterator<Item = &(u32, String)> {
        self.phones.iter().flatten()
    }

    fn count(&self) -> usize {
        self.registered().count()
    }
}

/// The whole registry.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Model {
    pub now: u64,
    pub cap: usize,
    pub max_id_len: usize,
    pub servers: BTreeMap<String, Server>,
    /// The phones that panic somewhere, and where.
    pub traps: BTreeMap<u32, Trap>,
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
    /// `Registry::end_tenure(id, holder)`.
    EndTenure {
        id: String,
        holder: u32,
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
        trap: Trap,
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
            | EndTenure { id, .. }
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

/// What a call returned. Lists of conns are serials: the phones of one id in position order, every
/// other list sorted (a multiset).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    Unit,
    Res(Result<(), RegistryError>),
    Bool(bool),
    Conn(Option<u32>),
    Conns(Vec<u32>),
    Counts(Counts),
    Deadline(Option<Deadline>),
    /// `expire_due`'s report: each expired id with its number of phones (sorted), and how many
    /// panics it caught.
    Expired(Vec<(String, usize)>, usize),
    /// The call panicked (user code's panic propagated out of it).
    Panicked,
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

/// Whether `observed` is the outcome the model `expected`: the same value and the same closes.
pub fn accepts(expected: &Outcome, observed: &Outcome) -> bool {
    expected == observed
}

impl Model {
    pub fn new(cap: usize, max_id_len: usize) -> Self {
        Model {
            now: 0,
            cap,
            max_id_len,
            servers: BTreeMap::new(),
            traps: BTreeMap::new(),
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
            EndTenure { id, holder } => self.end_tenure(id, *holder),
            Release { claim, .. } => self.release(*claim, Value::Bool),
            DropClaim { claim, .. } => self.release(*claim, |_| Value::Unit),
            ReleaseAfter { claim, grace, .. } => {
                Outcome::of(Value::Bool(self.release_after(*claim, *grace)))
            }
            Register {
                id,
                phone,
                name,
                trap,
            } => {
                let result = self.register(id, *phone, name);
                if *trap != Trap::None {
                    self.traps.insert(*phone, *trap);
                }
                // A refused conn is dropped by the registry: a `Drop` trap fires.
                Outcome::of(match result {
                    Err(_) if *trap == Trap::Drop => Value::Panicked,
                    result => Value::Res(result),
                })
            }
            Unregister { phone, .. } => {
                let removed = self.unregister(*phone);
                // The ticket owns the last reference to its phone, registered or not.
                Outcome::of(self.unless_drop_panics(*phone, Value::Bool(removed)))
            }
            DropTicket { phone, .. } => {
                self.unregister(*phone);
                Outcome::of(self.unless_drop_panics(*phone, Value::Unit))
            }
            BinaryFor { id } => Outcome::of(Value::Conn(self.servers.get(id).map(|s| s.binary))),
            PhoneFor { id, name } => Outcome::of(Value::Conn(self.named(id, name))),
            PhonesFor { id } => Outcome::of(Value::Conns(self.phones_of(id))),
            ClaimPhone { id, claim, name } => Outcome::of(Value::Conn(if self.holds(*claim) {
                self.named(id, name)
            } else {
                None
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

    /// `value`, or `Panicked` if dropping `phone`'s ticket panics.
    fn unless_drop_panics(&self, phone: u32, value: Value) -> Value {
        if self.traps.get(&phone) == Some(&Trap::Drop) {
            Value::Panicked
        } else {
            value
        }
    }

    /// How many of `closes` panic.
    fn panicking(&self, closes: &[(u32, CloseReason)]) -> usize {
        closes
            .iter()
            .filter(|(p, _)| self.traps.get(p) == Some(&Trap::Close))
            .count()
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
            vacated: Vec::new(),
        };
        let closes = match self.servers.insert(id.to_owned(), new) {
            Some(old) => evict(old, CloseReason::Reclaimed),
            None => Vec::new(),
        };
        if self.panicking(&closes) > 0 {
            // Every close ran, then the first panic propagated: unwinding dropped the new claim,
            // which released the id (it had no phones yet).
            self.servers.remove(id);
            return Outcome {
                value: Value::Panicked,
                closes,
            };
        }
        Outcome {
            value: Value::Res(Ok(())),
            closes,
        }
    }

    /// `end_tenure`: ends `holder`'s tenure (live or gracing) over `id`, evicting its phones as a
    /// takeover does; false if `holder` does not hold `id`.
    fn end_tenure(&mut self, id: &str, holder: u32) -> Outcome {
        if self.servers.get(id).is_none_or(|s| s.binary != holder) {
            return Outcome::of(Value::Bool(false));
        }
        let old = self.servers.remove(id).expect("held");
        let closes = evict(old, CloseReason::Reclaimed);
        Outcome {
            // Every close ran and the tenure is over; then the first panic propagated.
            value: if self.panicking(&closes) > 0 {
                Value::Panicked
            } else {
                Value::Bool(true)
            },
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
                let closes = evict(old, CloseReason::Released);
                Outcome {
                    value: if self.panicking(&closes) > 0 {
                        Value::Panicked
                    } else {
                        value(true)
                    },
                    closes,
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
        let mut expired = Vec::new();
        for id in due {
            let old = self.servers.remove(&id).expect("due");
            expired.push((id, old.count()));
            closes.extend(evict(old, CloseReason::GraceExpired));
        }
        // Never panics: the closes' panics are caught and counted in the report.
        let panics = self.panicking(&closes);
        Outcome {
            value: Value::Expired(expired, panics),
            closes,
        }
    }

    fn register(&mut self, id: &str, phone: u32, name: &str) -> Result<(), RegistryError> {
        if !self.valid(id) {
            return Err(RegistryError::InvalidServerId);
        }
        let cap = self.cap;
        let server = self.servers.get_mut(id).ok_or(RegistryError::NoServer)?;
        if cap != 0 && server.count() >= cap {
            return Err(RegistryError::PhonesAtCap);
        }
        let entry = Some((phone, name.to_owned()));
        match server.vacated.pop() {
            Some(pos) => server.phones[pos] = entry,
            None => server.phones.push(entry),
        }
        Ok(())
    }

    fn unregister(&mut self, phone: u32) -> bool {
        for server in self.servers.values_mut() {
            let at = |e: &Option<(u32, String)>| e.as_ref().is_some_and(|(p, _)| *p == phone);
            if let Some(pos) = server.phones.iter().position(at) {
                server.phones[pos] = None;
                server.vacated.push(pos);
                if server.count() == 0 {
                    // The id's last phone left: the next one starts the order afresh.
                    server.phones.clear();
                    server.vacated.clear();
                }
                return true;
            }
        }
        false
    }

    fn server_of_phone(&self, phone: u32) -> Option<&Server> {
        self.servers
            .values()
            .find(|s| s.registered().any(|(p, _)| *p == phone))
    }

    /// Whether `phone`'s ticket is registered: its `is_registered`.
    pub fn registered(&self, phone: u32) -> bool {
        self.server_of_phone(phone).is_some()
    }

    /// The binary `phone` joined, while it is registered: its ticket's `binary()`.
    pub fn binary_of_phone(&self, phone: u32) -> Option<u32> {
        self.server_of_phone(phone).map(|s| s.binary)
    }

    /// The first phone (by position) of `id` named `name`.
    fn named(&self, id: &str, name: &str) -> Option<u32> {
        let server = self.servers.get(id)?;
        server
            .registered()
            .find(|(_, n)| n == name)
            .map(|(p, _)| *p)
    }

    /// The phones of `id`, by position.
    pub fn phones_of(&self, id: &str) -> Vec<u32> {
        self.servers
            .get(id)
            .map_or_else(Vec::new, |s| s.registered().map(|(p, _)| *p).collect())
    }

    pub fn binary_for(&self, id: &str) -> Option<u32> {
        self.servers.get(id).map(|s| s.binary)
    }

    pub fn snapshot(&self) -> Vec<u32> {
        let mut all: Vec<u32> = self
            .servers
            .values()
            .flat_map(|s| std::iter::once(s.binary).chain(s.registered().map(|(p, _)| *p)))
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
            .flat_map(|s| s.registered().map(move |(p, _)| (*p, s.binary)))
            .collect()
    }

    pub fn counts(&self) -> Counts {
        let gracing = self.servers.values().filter(|s| s.grace.is_some()).count();
        Counts {
            binaries: self.servers.len() - gracing,
            gracing,
            phones: self.servers.values().map(Server::count).sum(),
        }
    }
}

/// Every phone of an ended tenure, to be closed with `reason`.
fn evict(old: Server, reason: CloseReason) -> Vec<(u32, CloseReason)> {
    old.phones
        .into_iter()
        .flatten()
        .map(|(p, _)| (p, reason))
        .collect()
}
