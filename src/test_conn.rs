//! A minimal `Conn` for the crate's unit tests.

use crate::conn::{CloseReason, Conn};
use std::sync::{Arc, Mutex};

pub(crate) struct TestConn {
    id: String,
    pub(crate) closed: Mutex<Vec<CloseReason>>,
}

impl TestConn {
    pub(crate) fn new(id: &str) -> Arc<Self> {
        Arc::new(TestConn {
            id: id.to_owned(),
            closed: Mutex::new(Vec::new()),
        })
    }
}

impl Conn for TestConn {
    fn conn_id(&self) -> &str {
        &self.id
    }

    fn close(&self, reason: CloseReason) {
        self.closed.lock().unwrap().push(reason);
    }
}
