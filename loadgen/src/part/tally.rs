//! What a part tells its connection tasks ([`Order`]) and what they count into ([`Tally`],
//! one [`Dir`] per direction).

use crate::frames::Probe;
use crate::hist::Hist;
use crate::plan::DirReport;
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;
use tokio::time::Instant;

/// Latency histograms per direction are sharded by connection to keep their locks cold.
pub(super) const SHARDS: usize = 8;
/// What every connection task is doing.
#[derive(Debug, Clone, Copy)]
pub(super) enum Order {
    /// Hold the connection; answer only what arrives.
    Hold,
    /// Send probes of `step` every `period` from `start` until `until`.
    Send {
        step: u32,
        period: Duration,
        start: Instant,
        until: Instant,
    },
    /// Phones: send one echo probe (round `round`), each at its own moment in
    /// `start .. start + spread`.
    Echo {
        round: u32,
        start: Instant,
        spread: Duration,
    },
    /// Close and end.
    Quit,
}

/// One direction's counters.
pub(super) struct Dir {
    pub(super) sent: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) late: AtomicU64,
    pub(super) latency: Vec<Mutex<Hist>>,
}

impl Dir {
    pub(super) fn new() -> Dir {
        Dir {
            sent: AtomicU64::new(0),
            received: AtomicU64::new(0),
            late: AtomicU64::new(0),
            latency: (0..SHARDS).map(|_| Mutex::new(Hist::default())).collect(),
        }
    }

    /// Counts a received probe of `step` (sent at `sent_us` on `base`'s clock) while `current`
    /// is the step being measured.
    pub(super) fn received(&self, probe: &Probe, current: u32, base: Instant, shard: usize) {
        if probe.s != current {
            self.late.fetch_add(1, Relaxed);
            return;
        }
        let now = base.elapsed();
        let latency = now.saturating_sub(Duration::from_micros(probe.t));
        self.received.fetch_add(1, Relaxed);
        self.latency[shard % SHARDS].lock().record(latency);
    }

    pub(super) fn take(&self) -> DirReport {
        let mut latency = Hist::default();
        for shard in &self.latency {
            latency.merge(&shard.lock().take());
        }
        DirReport {
            sent: self.sent.swap(0, Relaxed),
            received: self.received.swap(0, Relaxed),
            late: self.late.swap(0, Relaxed),
            latency,
        }
    }
}

/// What the connection tasks count into.
pub(super) struct Tally {
    /// The clock every probe's send time is measured on.
    pub(super) base: Instant,
    /// True while an open command runs: closes then are refusals.
    pub(super) opening: AtomicBool,
    /// Connection attempts finished (progress).
    pub(super) attempts: AtomicU64,
    /// Connections whose task is running, and how many of them are phones.
    pub(super) live: AtomicU64,
    pub(super) phones_live: AtomicU64,
    /// Phones a binary of this part has seen say hello.
    pub(super) hellos: AtomicU64,
    /// Closes during setup (by code), and after it.
    pub(super) refused: Mutex<BTreeMap<String, u64>>,
    pub(super) closed: Mutex<BTreeMap<String, u64>>,
    /// When the last close arrived (for the quiet wait).
    pub(super) last_close: Mutex<Option<Instant>>,
    /// The step being measured.
    pub(super) step: AtomicU32,
    /// Connections still sending in the current step.
    pub(super) active: AtomicU64,
    pub(super) up: Dir,
    pub(super) down: Dir,
    /// Phones that tried to send their echo probe, sent it, and got it back.
    pub(super) echo_tried: AtomicU64,
    pub(super) echo_sent: AtomicU64,
    pub(super) echo_received: AtomicU64,
    pub(super) echo_latency: Mutex<Hist>,
}

impl Tally {
    pub(super) fn ended(&self, code: u16) {
        let key = format!("close {code}");
        let map = if self.opening.load(Relaxed) {
            &self.refused
        } else {
            &self.closed
        };
        *map.lock().entry(key).or_default() += 1;
        *self.last_close.lock() = Some(Instant::now());
    }
}
