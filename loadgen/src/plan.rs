//! The conversation between the coordinator and its parts (in this process, or worker processes
//! speaking JSON lines on stdin/stdout): the commands, the replies, and the reports they carry,
//! each of which merges with the same report from another part.

use super::hist::Hist;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Where and how every part connects.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Target {
    /// The address to connect to (always loopback).
    pub addr: SocketAddr,
    /// The URL without a path, e.g. `ws://127.0.0.1:8080` (the request's host).
    pub url: String,
    /// For `wss://` targets: a PEM file of CA certificates trusted besides the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// How many loopback source addresses (127.0.0.1 and up) to spread client sockets over.
    pub sources: u8,
    /// Bytes of each probe frame.
    pub frame_size: usize,
    /// How long one connection attempt (TCP + upgrade) may take.
    pub connect_timeout_ms: u64,
    /// Connection attempts in flight at once in one part.
    pub concurrency: usize,
}

/// What a part is told to do; each has exactly one [`Reply`] (besides progress).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    /// Sets the part up; the first command a worker gets. `first_conn` numbers its sockets (for
    /// the source address) after those of the parts before it.
    Init {
        /// Where to connect.
        target: Target,
        /// The global index of this part's first connection.
        first_conn: u64,
    },
    /// Opens one binary per id. Replies [`Reply::Setup`].
    OpenBinaries {
        /// The server-ids to claim.
        ids: Vec<String>,
    },
    /// Opens `count` phones on each id. Replies [`Reply::Setup`].
    OpenPhones {
        /// (server-id, phones on it).
        phones: Vec<(String, u64)>,
        /// Whether each phone says hello (so its binary, in the same part, learns its conn-id).
        hello: bool,
    },
    /// Sends probes both ways for a while, then waits for those in flight. Replies [`Reply::Step`].
    Run {
        /// The step number the probes carry (frames of other steps count as late).
        step: u32,
        /// Probes per second each phone sends, and each binary sends to each phone it knows.
        per_phone_hz: f64,
        /// How long to send.
        duration_ms: u64,
        /// How long to wait afterwards for frames in flight.
        drain_ms: u64,
    },
    /// Every phone sends one probe that its binary sends back. Replies [`Reply::Echo`].
    Echo {
        /// The phones send at moments spread over this long.
        spread_ms: u64,
        /// How long to wait for the echoes after the last was due.
        timeout_ms: u64,
    },
    /// Closes every connection (close 1000). Replies [`Reply::Closed`].
    CloseAll,
}

/// A part's answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    /// Connection attempts finished so far (sent by workers while opening; not an answer).
    Progress(u64),
    /// How an open command went.
    Setup(SetupReport),
    /// How a run went.
    Step(StepReport),
    /// How an echo went.
    Echo(EchoReport),
    /// Everything is closed.
    Closed,
    /// The command could not be carried out.
    Error(String),
}

/// Adds `other`'s counts into `into`, key by key.
pub fn add_counts(into: &mut BTreeMap<String, u64>, other: &BTreeMap<String, u64>) {
    for (key, n) in other {
        *into.entry(key.clone()).or_default() += n;
    }
}

/// The sum of a count map.
pub fn total(counts: &BTreeMap<String, u64>) -> u64 {
    counts.values().sum()
}

/// How connection attempts ended.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SetupReport {
    /// Attempts made.
    pub attempted: u64,
    /// Upgraded to a WebSocket (refused ones later closed with a code are counted here too).
    pub opened: u64,
    /// Refusals by what the target said: `"http 503"`, or `"close 4429"` for a connection closed
    /// while being set up.
    pub refused: BTreeMap<String, u64>,
    /// Attempts that got no answer, by error (connection refused, timed out, ...).
    pub failed: BTreeMap<String, u64>,
    /// From the command to the last attempt's end, in ms (the wait for refusals afterwards is
    /// not counted).
    pub open_ms: u64,
}

impl SetupReport {
    /// Adds another part's report.
    pub fn merge(&mut self, other: &SetupReport) {
        self.attempted += other.attempted;
        self.opened += other.opened;
        add_counts(&mut self.refused, &other.refused);
        add_counts(&mut self.failed, &other.failed);
        self.open_ms = self.open_ms.max(other.open_ms);
    }

    /// Connections that were opened and not refused.
    pub fn accepted(&self) -> u64 {
        let closed_in_setup: u64 = self
            .refused
            .iter()
            .filter(|(key, _)| key.starts_with("close"))
            .map(|(_, n)| n)
            .sum();
        self.opened.saturating_sub(closed_in_setup)
    }
}

/// One direction of a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct DirReport {
    /// Probes sent.
    pub sent: u64,
    /// Probes of this step received.
    pub received: u64,
    /// Probes of an earlier step received during this one (not counted as received).
    pub late: u64,
    /// Latency of the received probes, from their scheduled send time.
    pub latency: Hist,
}

impl DirReport {
    /// Adds another part's report.
    pub fn merge(&mut self, other: &DirReport) {
        self.sent += other.sent;
        self.received += other.received;
        self.late += other.late;
        self.latency.merge(&other.latency);
    }

    /// Probes sent and not received by the end of the drain.
    pub fn lost(&self) -> u64 {
        self.sent.saturating_sub(self.received)
    }
}

/// How a run went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StepReport {
    /// Connections open when it started.
    pub connections: u64,
    /// Phone → binary.
    pub up: DirReport,
    /// Binary → phone.
    pub down: DirReport,
    /// Connections the target closed since the last report, by close code (`"close 1011"`).
    pub closed: BTreeMap<String, u64>,
}

impl StepReport {
    /// Adds another part's report.
    pub fn merge(&mut self, other: &StepReport) {
        self.connections += other.connections;
        self.up.merge(&other.up);
        self.down.merge(&other.down);
        add_counts(&mut self.closed, &other.closed);
    }
}

/// How an echo round went.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct EchoReport {
    /// Phones that sent their frame.
    pub sent: u64,
    /// Phones that got it back.
    pub received: u64,
    /// Round-trip time of the echoes.
    pub latency: Hist,
    /// Connections the target closed since the last report, by close code.
    pub closed: BTreeMap<String, u64>,
}

impl EchoReport {
    /// Adds another part's report.
    pub fn merge(&mut self, other: &EchoReport) {
        self.sent += other.sent;
        self.received += other.received;
        self.latency.merge(&other.latency);
        add_counts(&mut self.closed, &other.closed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepted_leaves_out_connections_closed_during_setup_but_not_http_refusals() {
        let mut report = SetupReport {
            attempted: 12,
            opened: 10,
            ..SetupReport::default()
        };
        report.refused.insert("close 4429".into(), 4);
        report.refused.insert("http 503".into(), 2);
        assert_eq!(report.accepted(), 6);
    }

    #[test]
    fn reports_merge_by_adding_counts_and_samples() {
        let mut a = StepReport::default();
        a.up.sent = 5;
        a.up.received = 5;
        a.closed.insert("close 1011".into(), 1);
        let mut b = a.clone();
        b.up.received = 3;
        b.up.latency.record(std::time::Duration::from_millis(2));
        a.merge(&b);
        assert_eq!((a.up.sent, a.up.received, a.up.lost()), (10, 8, 2));
        assert_eq!(a.closed["close 1011"], 2);
        assert_eq!(a.up.latency.count(), 1);
    }

    #[test]
    fn commands_and_replies_survive_a_json_line() {
        let command = Command::OpenPhones {
            phones: vec![("id".into(), 3)],
            hello: true,
        };
        let line = serde_json::to_string(&command).unwrap();
        assert!(!line.contains('\n'));
        match serde_json::from_str(&line).unwrap() {
            Command::OpenPhones { phones, hello } => {
                assert_eq!(phones, vec![("id".to_owned(), 3)]);
                assert!(hello);
            }
            other => panic!("{other:?}"),
        }
    }
}
