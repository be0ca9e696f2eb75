//! The chaos run's checker: the relay's invariants judged from the clients' side only, from what
//! each client connection sent and saw, stamped with the test's one monotonic clock.
//!
//! # What a client records
//!
//! Every WebSocket connection a test client opens is a [`ConnRecord`] with a label unique in the
//! run (`b1#4`: the 4th connection of id 1's binary; `p1.0#7`: the 7th connection of id 1's
//! first phone). A phone numbers its frames 0, 1, 2, … per connection and puts its label in each
//! (`{"p":"p1.0#7","s":12}`); a binary numbers its frames per destination phone connection, 0,
//! 1, 2, … from the first one it sends there (`{"b":"b1#4","s":12}`). So each *stream* — one
//! sender connection to one receiver connection — has its own sequence, and a receiver knows
//! exactly which frames of a stream it missed.
//!
//! # The invariants
//!
//! - **One delivering holder per id at a time** ([`Class::TwoHolders`]). A binary connection is
//!   *delivering* from the moment the clients know it holds the id to the last frame it
//!   receives. Its `101` proves nothing (in cluster mode a claim may still be refused 4409 after
//!   it); what proves it is the first frame it receives, or earlier, the `101` of a phone whose
//!   frames it received (a phone is registered with the id's binary of the moment before its
//!   `101`, and no registration survives a change of binary). For each id, the delivering
//!   intervals of its binary connections must not overlap: a binary receives no frame at a
//!   moment after another binary of its id was known to hold it, unless it became the holder
//!   later. The report says whether the late frame was even *sent*
//!   after the other binary's first frame (a delivery no honest order of events explains).
//! - **Per-link order** ([`Class::Order`]). Within each stream the received sequence numbers
//!   strictly increase: no frame twice, none overtaken.
//! - **Every gap announced by a close** ([`Class::Gap`], [`Class::SilentLoss`],
//!   [`Class::Close`]). Within a stream the received numbers are contiguous from the first frame
//!   sent (0): a frame may be missing only from the end of a stream, and only when the sender's
//!   or the receiver's connection ended — with a close code the protocol defines for what
//!   happened ([`allowed_close`]), or without a close frame only because its instance was killed.
//!   At the end of the run every client stops sending, waits a drain period while still reading,
//!   and then every stream whose two ends are both still open must have delivered every frame.
//!
//! Connections a binary *abandoned* (its relay went silent, so it claimed again elsewhere while
//! still reading the old socket, as a second binary of the id would) count as binaries for the
//! first invariant, and their streams are checked for order and gaps, but their missing tails
//! are not (the client stopped waiting for them).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

/// Which side of the relay a connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A binary (`/v1/server`).
    Binary,
    /// A phone (`/v1/client`).
    Phone,
}

/// How a connection ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// The relay sent a close frame with this code and reason.
    Close(u16, String),
    /// The connection ended without a close frame (reset, EOF, a failed write).
    Abrupt,
}

/// One frame a connection received: the sender's label and sequence number, when it arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The sending connection's label.
    pub from: String,
    /// The sender's sequence number on this stream.
    pub seq: u64,
    /// When the client read it.
    pub at: Duration,
}

/// One frame a connection sent: to whom (a phone sends to its id's binary: `None`), its number,
/// when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// The destination phone connection's label (binaries only).
    pub to: Option<String>,
    /// Its sequence number on that stream.
    pub seq: u64,
    /// When the client handed it to its socket.
    pub at: Duration,
}

/// Everything one client connection did and saw.
#[derive(Debug, Clone)]
pub struct ConnRecord {
    /// Unique in the run (`b1#4`, `p1.0#7`).
    pub label: String,
    /// Binary or phone.
    pub role: Role,
    /// The server-id.
    pub id: String,
    /// The index of the instance it connected to.
    pub instance: usize,
    /// When its upgrade was answered 101.
    pub opened: Duration,
    /// The frames it received, in arrival order.
    pub received: Vec<Received>,
    /// The frames it sent, in order.
    pub sent: Vec<Sent>,
    /// When its binary stopped waiting for it (see the module docs).
    pub abandoned: Option<Duration>,
    /// How and when it ended; `None`: still open when the run ended.
    pub end: Option<(Duration, End)>,
}

impl ConnRecord {
    /// A record of a connection just opened.
    pub fn new(label: String, role: Role, id: &str, instance: usize, opened: Duration) -> Self {
        ConnRecord {
            label,
            role,
            id: id.to_owned(),
            instance,
            opened,
            received: Vec::new(),
            sent: Vec::new(),
            abandoned: None,
            end: None,
        }
    }

    /// Open at the end of the run, and still waited for by its client.
    fn open_at_end(&self) -> bool {
        self.end.is_none() && self.abandoned.is_none()
    }
}

/// A fault the run injected (what the checker needs of it: kills explain abrupt ends).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Injected {
    /// `kill`, `pause`, `cut`, `reset` (an instance) or `nats` (a NATS node).
    pub kind: &'static str,
    /// The instance's or NATS node's index.
    pub target: usize,
    /// When it began.
    pub at: Duration,
    /// When it was healed (restart, SIGCONT, heal); `None`: never.
    pub healed: Option<Duration>,
}

/// The kinds of violation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// Two binaries of one id delivering at once.
    TwoHolders,
    /// A stream's frames out of order or duplicated.
    Order,
    /// Frames missing from the middle (or start) of a stream.
    Gap,
    /// Frames missing from the end of a stream whose two ends both stayed open.
    SilentLoss,
    /// A close the protocol gives no reason for here, or an abrupt end without a kill.
    Close,
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Class::TwoHolders => "two delivering holders",
            Class::Order => "out of order",
            Class::Gap => "gap without a close",
            Class::SilentLoss => "lost while both ends open",
            Class::Close => "unexplained close",
        })
    }
}

/// One broken invariant, with the seed that reproduces the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub class: Class,
    /// The server-id.
    pub id: String,
    /// What happened, with labels, instances and times.
    pub detail: String,
}

impl Violation {
    /// The line the test prints for it.
    pub fn line(&self, seed: u64) -> String {
        format!(
            "seed {seed}: {}: id {}: {}",
            self.class, self.id, self.detail
        )
    }
}

/// Whether `code` is one the protocol closes a `role` connection with in a run of kills,
/// pauses, partitions and NATS node losses: a refused claim (4409), a takeover or lost link
/// (1011), a fence (1012), no or a reclaimed binary (4404), a full id (4429).
pub fn allowed_close(role: Role, code: u16) -> bool {
    match role {
        Role::Binary => matches!(code, 1011 | 1012 | 4409),
        Role::Phone => matches!(code, 1011 | 1012 | 4404 | 4429),
    }
}

/// Seconds, for reports.
fn s(at: Duration) -> String {
    format!("{:.3}s", at.as_secs_f64())
}

/// Checks every invariant over `records` (all connections of the run) given the faults
/// injected, where every client stopped sending at `stopped`; returns every violation.
pub fn check(records: &[ConnRecord], faults: &[Injected], stopped: Duration) -> Vec<Violation> {
    let mut found = Vec::new();
    let by_label: HashMap<&str, &ConnRecord> =
        records.iter().map(|r| (r.label.as_str(), r)).collect();
    holders(records, &by_label, &mut found);
    for record in records {
        streams(record, &by_label, &mut found);
        closes(record, faults, &mut found);
    }
    tails(records, &by_label, stopped, &mut found);
    found.sort_by(|a, b| (a.class, &a.id).cmp(&(b.class, &b.id)));
    found
}

/// When `from` sent its frame `seq` (to `to`, for a binary's frames).
fn sent_at(sender: &ConnRecord, to: &str, seq: u64) -> Option<Duration> {
    sender
        .sent
        .iter()
        .find(|sent| sent.seq == seq && sent.to.as_deref().is_none_or(|dest| dest == to))
        .map(|sent| sent.at)
}

/// The earliest moment the clients know `binary` held its id: its first frame, or the `101` of
/// a phone whose frames it received, if earlier (a phone is registered with its id's binary of
/// the moment before its `101`, and no registration outlives a change of binary: reclaims and
/// takeovers close the phones 4404, a lost owner 1011).
fn holding_since(binary: &ConnRecord, by_label: &HashMap<&str, &ConnRecord>) -> Option<Duration> {
    let first = binary.received.first()?.at;
    let joined = binary
        .received
        .iter()
        .filter_map(|frame| by_label.get(frame.from.as_str()))
        .map(|phone| phone.opened)
        .min();
    Some(joined.map_or(first, |joined| joined.min(first)))
}

/// One delivering holder per id at a time.
fn holders(
    records: &[ConnRecord],
    by_label: &HashMap<&str, &ConnRecord>,
    found: &mut Vec<Violation>,
) {
    let mut per_id: BTreeMap<&str, Vec<(Duration, &ConnRecord)>> = BTreeMap::new();
    for record in records.iter().filter(|r| r.role == Role::Binary) {
        if let Some(since) = holding_since(record, by_label) {
            per_id.entry(&record.id).or_default().push((since, record));
        }
    }
    for (id, mut binaries) in per_id {
        binaries.sort_by_key(|(since, _)| *since);
        for (i, (_, earlier)) in binaries.iter().enumerate() {
            for (since, later) in &binaries[i + 1..] {
                let since = *since;
                let Some(late) = earlier.received.iter().find(|r| r.at > since) else {
                    continue;
                };
                let count = earlier.received.iter().filter(|r| r.at > since).count();
                let sent = by_label
                    .get(late.from.as_str())
                    .and_then(|phone| sent_at(phone, &earlier.label, late.seq));
                let when_sent = match sent {
                    Some(at) if at > since => format!("sent at {} (after it)", s(at)),
                    Some(at) => format!("sent at {} (before it)", s(at)),
                    None => "never sent".to_owned(),
                };
                found.push(Violation {
                    class: Class::TwoHolders,
                    id: id.to_owned(),
                    detail: format!(
                        "{} (instance {}) held the id from {} (first frame at {}), yet {} \
                         (instance {}) then received {count} more, the first at {}: {}#{} \
                         {when_sent}",
                        later.label,
                        later.instance,
                        s(since),
                        s(later.received[0].at),
                        earlier.label,
                        earlier.instance,
                        s(late.at),
                        late.from,
                        late.seq,
                    ),
                });
            }
        }
    }
}

/// Per-link order and gaps from the middle or start of each stream into `record`.
fn streams(record: &ConnRecord, by_label: &HashMap<&str, &ConnRecord>, found: &mut Vec<Violation>) {
    let mut last: HashMap<&str, &Received> = HashMap::new();
    for frame in &record.received {
        let expected = match last.get(frame.from.as_str()) {
            Some(previous) if frame.seq <= previous.seq => {
                found.push(Violation {
                    class: Class::Order,
                    id: record.id.clone(),
                    detail: format!(
                        "{} (instance {}) received {}#{} at {} after #{} at {}",
                        record.label,
                        record.instance,
                        frame.from,
                        frame.seq,
                        s(frame.at),
                        previous.seq,
                        s(previous.at),
                    ),
                });
                last.insert(&frame.from, frame);
                continue;
            }
            Some(previous) => previous.seq + 1,
            None => 0,
        };
        if frame.seq > expected {
            let sender = by_label.get(frame.from.as_str());
            let instance = sender.map_or("?".to_owned(), |r| r.instance.to_string());
            found.push(Violation {
                class: Class::Gap,
                id: record.id.clone(),
                detail: format!(
                    "{} (instance {}) received {}#{} (instance {instance}) at {}, but never \
                     #{expected}..#{}, and neither connection had ended",
                    record.label,
                    record.instance,
                    frame.from,
                    frame.seq,
                    s(frame.at),
                    frame.seq - 1,
                ),
            });
        }
        last.insert(&frame.from, frame);
    }
}

/// Every close one the protocol allows, and every abrupt end explained by a kill.
fn closes(record: &ConnRecord, faults: &[Injected], found: &mut Vec<Violation>) {
    let Some((at, end)) = &record.end else {
        return;
    };
    let problem = match end {
        End::Close(code, _) if allowed_close(record.role, *code) => return,
        End::Close(code, reason) => format!("closed {code} `{reason}`"),
        End::Abrupt => {
            let killed = faults.iter().any(|fault| {
                fault.kind == "kill"
                    && fault.target == record.instance
                    && fault.at <= *at
                    && fault.healed.is_none_or(|healed| healed >= record.opened)
            });
            if killed {
                return;
            }
            "ended without a close frame, and its instance was not killed".to_owned()
        }
    };
    found.push(Violation {
        class: Class::Close,
        id: record.id.clone(),
        detail: format!(
            "{} (instance {}, opened at {}) {problem} at {}",
            record.label,
            record.instance,
            s(record.opened),
            s(*at)
        ),
    });
}

/// Every frame sent before `stopped` on a stream whose two ends are still open has arrived.
fn tails(
    records: &[ConnRecord],
    by_label: &HashMap<&str, &ConnRecord>,
    stopped: Duration,
    found: &mut Vec<Violation>,
) {
    for receiver in records.iter().filter(|r| r.open_at_end()) {
        // The last frame received per sender.
        let mut got: HashMap<&str, u64> = HashMap::new();
        for frame in &receiver.received {
            got.insert(&frame.from, frame.seq);
        }
        for (from, last) in got {
            let Some(sender) = by_label.get(from).filter(|r| r.open_at_end()) else {
                continue;
            };
            let to = (receiver.role == Role::Phone).then_some(receiver.label.as_str());
            let unsent_after = sender
                .sent
                .iter()
                .filter(|sent| sent.at < stopped && sent.to.as_deref() == to)
                .filter(|sent| sent.seq > last)
                .collect::<Vec<_>>();
            if let (Some(first), Some(final_)) = (unsent_after.first(), unsent_after.last()) {
                found.push(Violation {
                    class: Class::SilentLoss,
                    id: receiver.id.clone(),
                    detail: format!(
                        "{from} (instance {}) sent #{}..#{} from {} to {}, and {} (instance {}) \
                         received none of them; both were still open at the end",
                        sender.instance,
                        first.seq,
                        final_.seq,
                        s(first.at),
                        s(final_.at),
                        receiver.label,
                        receiver.instance,
                    ),
                });
            }
        }
    }
}

/// The checker on hand-made histories: each invariant broken once is found, and a clean
/// history passes.
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A phone that sent `frames` frames, one every 100 ms from 1 s.
    fn phone(label: &str, instance: usize, frames: u64) -> ConnRecord {
        let mut record = ConnRecord::new(label.into(), Role::Phone, "id", instance, ms(900));
        record.sent = (0..frames)
            .map(|seq| Sent {
                to: None,
                seq,
                at: ms(1000 + 100 * seq),
            })
            .collect();
        record
    }

    /// A binary that received `seqs` of `from`, each 10 ms after it was sent.
    fn binary(label: &str, instance: usize, from: &str, seqs: &[u64]) -> ConnRecord {
        let mut record = ConnRecord::new(label.into(), Role::Binary, "id", instance, ms(500));
        record.received = seqs
            .iter()
            .map(|&seq| Received {
                from: from.into(),
                seq,
                at: ms(1010 + 100 * seq),
            })
            .collect();
        record
    }

    fn classes(records: &[ConnRecord], faults: &[Injected]) -> Vec<Class> {
        check(records, faults, ms(10_000))
            .into_iter()
            .map(|v| v.class)
            .collect()
    }

    #[test]
    fn a_clean_history_has_no_violation() {
        let records = [
            phone("p#1", 0, 5),
            binary("b#1", 1, "p#1", &[0, 1, 2, 3, 4]),
        ];
        assert_eq!(classes(&records, &[]), []);
    }

    #[test]
    fn a_binary_receiving_after_another_one_received_its_first_frame_is_two_holders() {
        let closed = |mut record: ConnRecord| {
            record.end = Some((ms(2000), End::Close(1012, "cluster connection lost".into())));
            record
        };
        // b#1 receives p#1's #0..#3 at 1.01, 1.11, 1.21 and 1.31 s; b#2 its first at 1.25 s.
        let old = closed(binary("b#1", 0, "p#1", &[0, 1, 2, 3]));
        let mut new = closed(binary("b#2", 1, "p#2", &[0, 1]));
        new.received[0].at = ms(1250);
        let mut phone_2 = closed(phone("p#2", 1, 2));
        phone_2.opened = ms(1240);
        let records = [
            closed(phone("p#1", 0, 4)),
            phone_2.clone(),
            old.clone(),
            new.clone(),
        ];
        let found = check(&records, &[], ms(10_000));
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].class, Class::TwoHolders);
        let detail = &found[0].detail;
        assert!(detail.contains("then received 1 more"), "{detail}");
        assert!(
            detail.contains("p#1#3 sent at 1.300s (after it)"),
            "{detail}"
        );
        // b#2's first frame came after b#1's last, but its phone had joined it before.
        new.received.iter_mut().for_each(|r| r.at += ms(500));
        phone_2.opened = ms(1290);
        let records = [closed(phone("p#1", 0, 4)), phone_2, old, new];
        let found = check(&records, &[], ms(10_000));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(
            found[0].detail.contains("held the id from 1.290s"),
            "{found:?}"
        );
    }

    #[test]
    fn holders_one_after_the_other_are_not_two_holders() {
        let mut old = binary("b#1", 0, "p#1", &[0, 1]);
        old.end = Some((ms(1200), End::Close(1011, "heartbeat timeout".into())));
        let mut phone_1 = phone("p#1", 0, 3);
        phone_1.end = Some((
            ms(1250),
            End::Close(4404, "binary reclaimed server-id".into()),
        ));
        let mut new = binary("b#2", 1, "p#2", &[0, 1]);
        new.received.iter_mut().for_each(|r| r.at += ms(1000));
        let mut phone_2 = phone("p#2", 1, 2);
        phone_2.opened = ms(1900);
        let records = [old, phone_1, phone_2, new];
        assert_eq!(classes(&records, &[]), []);
    }

    #[test]
    fn a_frame_twice_or_overtaken_is_out_of_order() {
        let mut twice = binary("b#1", 0, "p#1", &[0, 1, 1, 2]);
        twice.end = Some((ms(3000), End::Close(1012, "".into())));
        let found = classes(&[phone("p#1", 0, 3), twice], &[]);
        assert_eq!(found, [Class::Order]);
        let mut overtaken = binary("b#1", 0, "p#1", &[0, 2, 1]);
        overtaken.end = Some((ms(3000), End::Close(1012, "".into())));
        let found = classes(&[phone("p#1", 0, 3), overtaken], &[]);
        assert_eq!(found, [Class::Order, Class::Gap]);
    }

    #[test]
    fn a_frame_missing_from_the_middle_or_the_start_is_a_gap_whatever_closed_later() {
        let mut middle = binary("b#1", 0, "p#1", &[0, 1, 3, 4]);
        middle.end = Some((ms(3000), End::Close(1012, "".into())));
        assert_eq!(classes(&[phone("p#1", 0, 5), middle], &[]), [Class::Gap]);
        let mut start = binary("b#1", 0, "p#1", &[2, 3, 4]);
        start.end = Some((ms(3000), End::Close(1012, "".into())));
        assert_eq!(classes(&[phone("p#1", 0, 5), start], &[]), [Class::Gap]);
    }

    #[test]
    fn a_tail_lost_while_both_ends_stay_open_is_a_silent_loss_and_a_close_announces_it() {
        let records = [phone("p#1", 0, 6), binary("b#1", 1, "p#1", &[0, 1, 2])];
        assert_eq!(classes(&records, &[]), [Class::SilentLoss]);
        let [mut phone_1, binary_1] = records;
        phone_1.end = Some((ms(1700), End::Close(1011, "relay link lost".into())));
        assert_eq!(classes(&[phone_1, binary_1], &[]), []);
        // Frames sent after the clients stopped are not waited for.
        let records = [phone("p#1", 0, 6), binary("b#1", 1, "p#1", &[0, 1, 2])];
        assert_eq!(check(&records, &[], ms(1250)), []);
    }

    #[test]
    fn a_binary_to_phone_tail_lost_while_both_stay_open_is_a_silent_loss() {
        let mut binary_1 = ConnRecord::new("b#1".into(), Role::Binary, "id", 0, ms(500));
        binary_1.sent = (0..4)
            .map(|seq| Sent {
                to: Some("p#1".into()),
                seq,
                at: ms(1000 + 100 * seq),
            })
            .collect();
        let mut phone_1 = ConnRecord::new("p#1".into(), Role::Phone, "id", 1, ms(900));
        phone_1.received = vec![Received {
            from: "b#1".into(),
            seq: 0,
            at: ms(1010),
        }];
        assert_eq!(classes(&[binary_1, phone_1], &[]), [Class::SilentLoss]);
    }

    #[test]
    fn a_close_the_protocol_has_no_reason_for_or_an_abrupt_end_without_a_kill_is_unexplained() {
        let mut phone_1 = phone("p#1", 0, 0);
        phone_1.end = Some((ms(2000), End::Close(1008, "policy violation".into())));
        assert_eq!(classes(&[phone_1], &[]), [Class::Close]);
        let mut binary_1 = binary("b#1", 2, "p#1", &[]);
        binary_1.end = Some((ms(2000), End::Abrupt));
        assert_eq!(classes(&[binary_1.clone()], &[]), [Class::Close]);
        let kill = |target| Injected {
            kind: "kill",
            target,
            at: ms(1900),
            healed: Some(ms(2500)),
        };
        assert_eq!(classes(&[binary_1.clone()], &[kill(1)]), [Class::Close]);
        assert_eq!(classes(&[binary_1], &[kill(2)]), []);
    }
}
