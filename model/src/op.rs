//! The operation language of the fuzz targets and the proptest twin.
//!
//! Ids come from eight names (two of them invalid), guards are picked by index modulo the live
//! ones, conn-ids from four names: conflicts, takeovers, reclaims, caps and duplicate conn-ids
//! happen constantly.

use crate::spec::{Grace, Trap};
use arbitrary::Arbitrary;

/// The registry's `max_server_id_len` in these runs.
pub const MAX_ID_LEN: usize = 8;

/// The server-ids: six valid ones (one multi-byte), the empty id and one too long.
pub const IDS: [&str; 8] = ["a", "b", "c", "srv-0001", "é", "d", "", "too-long-9"];

/// Phone conn-ids: few, so that two phones of one id often share one.
pub const NAMES: [&str; 4] = ["p0", "p1", "p2", "p3"];

/// A server-id, by index into [`IDS`] (modulo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct Id(pub u8);

impl Id {
    pub fn name(self) -> &'static str {
        IDS[usize::from(self.0) % IDS.len()]
    }
}

/// A phone conn-id, by index into [`NAMES`] (modulo).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct Name(pub u8);

impl Name {
    pub fn name(self) -> &'static str {
        NAMES[usize::from(self.0) % NAMES.len()]
    }
}

/// Whether a phone panics, and where: one phone in eight panics in `close`, one in eight in `Drop`
/// (by the byte modulo 8), the rest never.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct TrapPick(pub u8);

impl TrapPick {
    /// A phone that never panics.
    pub const NONE: TrapPick = TrapPick(2);

    pub fn trap(self) -> Trap {
        match self.0 % 8 {
            0 => Trap::Close,
            1 => Trap::Drop,
            _ => Trap::None,
        }
    }
}

/// A live guard, by index modulo the live ones: below 128 counting from the newest (so `Pick(0)`
/// is the guard made last), from 128 counting from the oldest (so old, often stale, guards are
/// reached too). `None` if there are no live guards of that kind (the op is then skipped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub struct Pick(pub u8);

impl Pick {
    pub fn index(self, live: usize) -> Option<usize> {
        if live == 0 {
            return None;
        }
        let k = usize::from(self.0 & 0x7f) % live;
        Some(if self.0 < 128 { live - 1 - k } else { k })
    }
}

/// Whom a takeover names as the incumbent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum Incumbent {
    /// The id's current holder (live or gracing); `None` if the id is free.
    Current,
    /// Some binary that ever claimed (by index modulo all of them): usually a stale one.
    Stale(u8),
    /// `None`: "I expect the id to be free".
    Nobody,
}

/// In which order [`Op::DropAll`] drops every live guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum DropOrder {
    OldestFirst,
    NewestFirst,
    TicketsFirst,
    ClaimsFirst,
    /// Alternating claim and ticket, newest first.
    Interleaved,
}

/// One operation of a fuzzed run.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub enum Op {
    Claim { id: Id },
    Takeover { id: Id, incumbent: Incumbent },
    Release { claim: Pick },
    DropClaim { claim: Pick },
    ReleaseAfter { claim: Pick, grace: Grace },
    Advance { ticks: u8 },
    ExpireDue,
    Register { id: Id, name: Name, trap: TrapPick },
    Unregister { ticket: Pick },
    DropTicket { ticket: Pick },
    BinaryFor { id: Id },
    PhoneFor { id: Id, name: Name },
    PhonesFor { id: Id },
    ClaimPhone { claim: Pick, name: Name },
    ClaimPhones { claim: Pick },
    Snapshot,
    Counts,
    NextDeadline,
    DropAll { order: DropOrder },
}

/// A fuzzed run: the phone cap (`cap % 4`, 0 = unlimited) and the ops.
#[derive(Debug, Clone, PartialEq, Eq, Arbitrary)]
pub struct Scenario {
    pub cap: u8,
    pub ops: Vec<Op>,
}

/// How a churn cycle ends its claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum CycleEnd {
    Drop,
    Release,
    /// `release_after` and let the window expire.
    GraceExpire(u8),
    /// `release_after` and reclaim within the window.
    GraceReclaim,
    /// Another binary takes the id over from the current holder.
    Takeover,
    /// Keep holding (the next cycle on this id conflicts or reclaims).
    Keep,
}

/// One step of the churn target: whole claim/register/end cycles on one or two ids, so slots are
/// reused many times; tickets (and taken-over claims) of early cycles are kept alive, stale, and
/// dropped late.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Arbitrary)]
pub enum ChurnStep {
    Cycle {
        second_id: bool,
        phones: u8,
        end: CycleEnd,
        keep_tickets: bool,
    },
    /// Drop an old guard (counted from the oldest).
    DropOld { ticket: bool, pick: u8 },
    /// Let time pass and expire what is due.
    Tick { ticks: u8 },
}

impl ChurnStep {
    /// The plain ops this step stands for.
    pub fn expand(self, ops: &mut Vec<Op>) {
        match self {
            ChurnStep::Cycle {
                second_id,
                phones,
                end,
                keep_tickets,
            } => {
                let id = Id(u8::from(second_id));
                ops.push(Op::Claim { id });
                let phones = phones % 4;
                for n in 0..phones {
                    ops.push(Op::Register {
                        id,
                        name: Name(n),
                        trap: TrapPick::NONE,
                    });
                }
                ops.push(Op::PhonesFor { id });
                let newest = Pick(0);
                match end {
                    CycleEnd::Drop => ops.push(Op::DropClaim { claim: newest }),
                    CycleEnd::Release => ops.push(Op::Release { claim: newest }),
                    CycleEnd::GraceExpire(t) => ops.extend([
                        Op::ReleaseAfter {
                            claim: newest,
                            grace: Grace::Ticks(t % 8),
                        },
                        Op::Advance { ticks: t % 8 },
                        Op::ExpireDue,
                    ]),
                    CycleEnd::GraceReclaim => ops.extend([
                        Op::ReleaseAfter {
                            claim: newest,
                            grace: Grace::Ticks(200),
                        },
                        Op::Claim { id },
                    ]),
                    CycleEnd::Takeover => ops.push(Op::Takeover {
                        id,
                        incumbent: Incumbent::Current,
                    }),
                    CycleEnd::Keep => {}
                }
                if !keep_tickets {
                    for _ in 0..phones {
                        ops.push(Op::DropTicket { ticket: newest });
                    }
                }
                ops.push(Op::Counts);
            }
            ChurnStep::DropOld { ticket, pick } => {
                let old = Pick(0x80 | (pick & 0x7f));
                ops.push(if ticket {
                    Op::DropTicket { ticket: old }
                } else {
                    Op::DropClaim { claim: old }
                });
            }
            ChurnStep::Tick { ticks } => {
                ops.extend([Op::Advance { ticks }, Op::ExpireDue]);
            }
        }
    }
}
