//! `RecConn`: a conn known by a serial number, whose closes are recorded on the closing thread.

use relay_registry::{CloseReason, Conn, SendError};
use std::cell::RefCell;
use std::sync::Arc;

thread_local! {
    /// Closes run on the thread whose call caused them, before that call returns (the registry's
    /// contract), so a per-thread log attributes each close to the operation that made it.
    static CLOSED: RefCell<Vec<(u32, CloseReason)>> = const { RefCell::new(Vec::new()) };
}

/// A mock connection: `serial` is its identity in the model, `name` its conn-id.
#[derive(Debug)]
pub struct RecConn {
    pub serial: u32,
    pub name: String,
}

impl RecConn {
    pub fn new(serial: u32, name: &str) -> Arc<Self> {
        Arc::new(RecConn {
            serial,
            name: name.to_owned(),
        })
    }
}

impl Conn for RecConn {
    fn conn_id(&self) -> &str {
        &self.name
    }

    type Frame = String;
    fn send(&self, _frame: String) -> Result<(), SendError> {
        Ok(())
    }

    fn close(&self, reason: CloseReason) {
        CLOSED.with(|log| log.borrow_mut().push((self.serial, reason)));
    }
}

/// The closes this thread made since the last call, sorted (a multiset).
pub fn take_closes() -> Vec<(u32, CloseReason)> {
    let mut closes = CLOSED.with(|log| std::mem::take(&mut *log.borrow_mut()));
    crate::spec::sort_closes(&mut closes);
    closes
}
