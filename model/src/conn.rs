//! `RecConn`: a conn known by a serial number, whose closes are recorded on the closing thread,
//! and which may panic in `close` or in `Drop`.

use crate::spec::Trap;
use relay_registry::{CloseReason, Conn};
use std::cell::{Cell, RefCell};
use std::sync::Arc;

thread_local! {
    /// Closes run on the thread whose call caused them, before that call returns (the registry's
    /// contract), so a per-thread log attributes each close to the operation that made it.
    static CLOSED: RefCell<Vec<(u32, CloseReason)>> = const { RefCell::new(Vec::new()) };
    /// Whether traps fire on this thread: only while an actor performs a call, so that tearing a
    /// harness down never panics.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// Set right before a trap panics, for the panic hook of [`spare_traps_from_the_panic_hook`].
    static FIRING: Cell<bool> = const { Cell::new(false) };
}

/// A mock connection: `serial` is its identity in the model, `name` its conn-id, `trap` where it
/// panics.
#[derive(Debug)]
pub struct RecConn {
    pub serial: u32,
    pub name: String,
    pub trap: Trap,
}

impl RecConn {
    pub fn new(serial: u32, name: &str) -> Arc<Self> {
        Self::trapped(serial, name, Trap::None)
    }

    pub fn trapped(serial: u32, name: &str, trap: Trap) -> Arc<Self> {
        Arc::new(RecConn {
            serial,
            name: name.to_owned(),
            trap,
        })
    }

    fn fire(&self, trap: Trap) {
        if self.trap == trap && ARMED.get() && !std::thread::panicking() {
            FIRING.set(true);
            panic!("{trap:?} of conn {} panicked", self.serial);
        }
    }
}

impl Drop for RecConn {
    fn drop(&mut self) {
        self.fire(Trap::Drop);
    }
}

/// Wraps the current panic hook so that a trap's deliberate panic does not reach it; every other
/// panic does. The fuzz targets need this: libFuzzer's hook aborts the process on any panic, even
/// one that the registry or the actor catches as the model predicts.
pub fn spare_traps_from_the_panic_hook() {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !FIRING.replace(false) {
            hook(info);
        }
    }));
}

/// Runs `f` with this thread's traps armed.
pub fn armed<R>(f: impl FnOnce() -> R) -> R {
    struct Disarm;
    impl Drop for Disarm {
        fn drop(&mut self) {
            ARMED.set(false);
        }
    }
    ARMED.set(true);
    let _disarm = Disarm;
    f()
}

impl Conn for RecConn {
    fn conn_id(&self) -> &str {
        &self.name
    }

    fn close(&self, reason: CloseReason) {
        CLOSED.with(|log| log.borrow_mut().push((self.serial, reason)));
        self.fire(Trap::Close);
    }
}

/// The closes this thread made since the last call, sorted (a multiset).
pub fn take_closes() -> Vec<(u32, CloseReason)> {
    let mut closes = CLOSED.with(|log| std::mem::take(&mut *log.borrow_mut()));
    crate::spec::sort_closes(&mut closes);
    closes
}
