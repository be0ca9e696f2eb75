//! Shared test fixtures: a recording mock `Conn` and registries on a manual clock.
#![allow(dead_code)]

use relay_registry::{CloseReason, Config, Conn, Counts, ManualClock, Registry};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;

/// A conn that records every close (with the thread it ran on) and counts `conn_id` calls.
#[derive(Debug)]
pub struct Mock {
    id: String,
    closes: Mutex<Vec<(CloseReason, ThreadId)>>,
    conn_id_calls: AtomicUsize,
}

pub fn mock(id: &str) -> Arc<Mock> {
    Arc::new(Mock {
        id: id.to_owned(),
        closes: Mutex::new(Vec::new()),
        conn_id_calls: AtomicUsize::new(0),
    })
}

impl Mock {
    /// Every close reason received, in order.
    pub fn closes(&self) -> Vec<CloseReason> {
        self.closes
            .lock()
            .unwrap()
            .iter()
            .map(|(r, _)| *r)
            .collect()
    }

    /// The threads the closes ran on.
    pub fn close_threads(&self) -> Vec<ThreadId> {
        self.closes
            .lock()
            .unwrap()
            .iter()
            .map(|(_, t)| *t)
            .collect()
    }

    pub fn is_closed(&self) -> bool {
        !self.closes.lock().unwrap().is_empty()
    }

    pub fn conn_id_calls(&self) -> usize {
        self.conn_id_calls.load(Ordering::SeqCst)
    }
}

impl Conn for Mock {
    fn conn_id(&self) -> &str {
        self.conn_id_calls.fetch_add(1, Ordering::SeqCst);
        &self.id
    }

    fn close(&self, reason: CloseReason) {
        self.closes
            .lock()
            .unwrap()
            .push((reason, std::thread::current().id()));
    }
}

/// A registry on a manual clock, with `cap` phones per id (0 = unlimited).
pub fn registry_with_cap(cap: usize) -> (Registry<Mock>, ManualClock) {
    let clock = ManualClock::new();
    let config = Config::default()
        .with_max_phones_per_server(cap)
        .with_clock(Arc::new(clock.clone()));
    (Registry::with_config(config), clock)
}

/// A registry on a manual clock with no phone cap.
pub fn registry() -> (Registry<Mock>, ManualClock) {
    registry_with_cap(0)
}

/// Asserts the registry's internal invariants hold.
#[track_caller]
pub fn check<C: Conn>(registry: &Registry<C>) {
    if let Err(e) = registry.check_invariants() {
        panic!("invariant broken: {e}");
    }
}

/// The conn-ids of `conns`, sorted (a multiset).
pub fn ids<C: Conn>(conns: &[Arc<C>]) -> Vec<String> {
    let mut ids: Vec<String> = conns.iter().map(|c| c.conn_id().to_owned()).collect();
    ids.sort();
    ids
}

/// The `Counts` of `binaries` live binaries, `gracing` gracing ones and `phones` phones.
pub fn tally(binaries: usize, gracing: usize, phones: usize) -> Counts {
    Counts {
        binaries,
        gracing,
        phones,
    }
}
